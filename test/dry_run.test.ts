// `--dry-run` for train, pretrain and compare: presets, overrides and paths resolved, the checkpoint
// header read (its configuration, no weights), the data listed and split, the resolved config and the
// parameter table printed; nothing written; what a run would fail on fails here.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import YAML from 'yaml';
import { toRaw } from '../src/adapters/io.js';
import { manualSeed } from '../src/engine/index.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { samConfigMetadata } from '../src/model/sam/build.js';
import { Sam, type SamConfig } from '../src/model/sam/sam.js';
import { loadConfig } from '../src/train/config.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = path.join(ROOT, 'dist/src/cli/main.js');
const KVASIR = path.resolve(ROOT, '../shared/data/kvasir-seg');
const CVC_SAM = path.resolve(ROOT, '../shared/fixtures/cvc-small-sam/sam.safetensors');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-dry-'));
process.on('exit', () => fs.rmSync(work, { recursive: true, force: true }));
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });

const SMALL: SamConfig = {
  img_size: 64, patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2, mlp_ratio: 2, window_size: 4, global_attn_indexes: [1],
  prompt_embed_dim: 32, mask_in_chans: 8, decoder_depth: 1, decoder_mlp_dim: 64, decoder_heads: 2, iou_head_hidden_dim: 16,
};
const ckpt = path.join(work, 'sam.safetensors');
manualSeed(0);
const sam = Sam.fromConfig(SMALL);
writeSafetensors(ckpt, [...sam.stateDict()].map(([n, t]) => [n, toRaw(t)]), { format: 'pt', ...samConfigMetadata(SMALL) });
sam.dispose();
const csv = path.join(work, 'data.csv');
const ids = fs.readdirSync(path.join(KVASIR, 'images')).sort().slice(0, 10);
fs.writeFileSync(csv, ['image,mask', ...ids.map((f) => `${path.join(KVASIR, 'images', f)},${path.join(KVASIR, 'masks', f)}`)].join('\n') + '\n');
const common = ['--set', `data.dir=${csv}`, '--set', `model.checkpoint=${ckpt}`, '--set', 'data.image_size=64'];

test('train --dry-run prints the resolved config, the checkpoint\'s configuration, the data and the parameter table, and writes nothing', () => {
  const out = path.join(work, 'never');
  const r = run('train', '-c', 'nas-lora', ...common, '--set', 'method.rank=2', '--set', `train.out_dir=${out}`, '--dry-run');
  assert.equal(r.status, 0, r.stderr);
  // The resolved config, as YAML: the same as the config a run would resolve.
  const yaml = r.stdout.split('# resolved config\n')[1]!.split('\n# model')[0]!;
  const cfg = loadConfig('nas-lora', [...common.filter((_, i) => i % 2 === 1), 'method.rank=2', `train.out_dir=${out}`]);
  assert.deepEqual(YAML.parse(yaml), JSON.parse(JSON.stringify(cfg)));
  assert.match(r.stdout, /carries its SAM configuration/);
  assert.match(r.stdout, /decoder_heads\s+2\s+<- metadata/);
  assert.match(r.stdout, /7 train, 1 val, 2 test, 0 arch/);
  assert.match(r.stdout, /warmup\s+steps 0–\d+: lora, ops, decoder/);
  assert.match(r.stdout, /search\s+steps \d+–\d+: lora, ops, decoder, alpha \(α on train\)/);
  assert.match(r.stdout, /# parameters\n2 adapted layers; trainable by part \(first stage\):\n\s+lora\s+\d+ trainable/);
  assert.match(r.stdout, /does not exist: a run creates it/);
  assert.ok(!fs.existsSync(out), 'a dry run wrote the run folder');
});

test('dry runs fail where the run would: missing files, a checkpoint whose configuration is unknown', () => {
  const missing = run('train', '-c', 'lora', ...common, '--set', `data.dir=${path.join(work, 'nope.csv')}`, '--dry-run');
  assert.notEqual(missing.status, 0);
  assert.match(missing.stderr, /data\.dir: .*nope\.csv.* does not exist/);
  const noCkpt = run('train', '-c', 'lora', ...common, '--set', `model.checkpoint=${path.join(work, 'none.pth')}`, '--dry-run');
  assert.match(noCkpt.stderr, /model\.checkpoint: .*none\.pth.* does not exist/);
  const unknown = run('train', '-c', 'lora', ...common, '--set', `model.checkpoint=${CVC_SAM}`, '--set', 'data.image_size=128', '--dry-run');
  assert.notEqual(unknown.status, 0);
  assert.match(unknown.stderr, /cannot tell decoder_heads[\s\S]*model\.config[\s\S]*model_config\.json/);
  const bad = run('train', '-c', 'lora', ...common, '--set', 'method.rnak=2', '--dry-run');
  assert.match(bad.stderr, /unknown key 'rnak'/);
});

test('pretrain --dry-run shows every part training; compare --dry-run shows the plan and each method', () => {
  const cfgFile = path.join(work, 'small.json');
  fs.writeFileSync(cfgFile, JSON.stringify({ config: SMALL }));
  const p = run('pretrain', '-c', 'decoder-only', '--set', `data.dir=${csv}`, '--set', `model.config=${cfgFile}`, '--set', 'data.image_size=64', '--set', `train.out_dir=${path.join(work, 'pre')}`, '--dry-run');
  assert.equal(p.status, 0, p.stderr);
  assert.match(p.stdout, /fresh weights \(model\.pretrained=none\)/);
  assert.match(p.stdout, /pretrain\s+steps 0–\d+: encoder, decoder, iou_head, prompt_encoder/);
  assert.match(p.stdout, /encoder\s+(\d+) trainable of \1/);
  assert.ok(!fs.existsSync(path.join(work, 'pre')));

  const dir = path.join(work, 'cmp');
  fs.mkdirSync(dir);
  const f = path.join(dir, 'compare.yaml');
  fs.writeFileSync(f, [
    'base:', `  model: { checkpoint: ${ckpt} }`, `  data: { dir: ${csv}, image_size: 64 }`, '  train: { epochs: null, steps: 2 }',
    'methods: [zero-shot, lora, { name: lora-r8, preset: lora, set: { method.rank: 8 } }]', 'seeds: [0, 1]', `out_dir: ${path.join(dir, 'runs')}`, '',
  ].join('\n'));
  const c = run('compare', '-c', f, '--dry-run');
  assert.equal(c.status, 0, c.stderr);
  assert.match(c.stdout, /6 run\(s\)/);
  assert.match(c.stdout, /lora-r8\s+seed 1\s+absent/);
  assert.match(c.stdout, /## lora-r8 \(preset lora; seed 0 shown\)\n# resolved config: as zero-shot's, except\n[\s\S]*method\.rank: 3 → 8/);
  assert.ok(!fs.existsSync(path.join(dir, 'runs')), 'a dry run wrote the out_dir');
});
