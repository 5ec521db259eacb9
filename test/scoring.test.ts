// Scoring resolution is a choice, recorded everywhere: `train` scores its test split at label size
// or at original resolution (eval.resolution), `naslora eval` does either (--resolution), and the two
// agree on the same model; metrics.json, summary.json and compare say which one they used. And
// `eval --adapter <run>/checkpoints/best` of a run without a val split (no best) uses `last`.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { toRaw } from '../src/adapters/io.js';
import { manualSeed } from '../src/engine/index.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { samConfigMetadata } from '../src/model/sam/build.js';
import { Sam, type SamConfig } from '../src/model/sam/sam.js';
import { binarize, decodeGray } from '../src/data/loader.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = path.join(ROOT, 'dist/src/cli/main.js');
const KVASIR = path.resolve(ROOT, '../shared/data/kvasir-seg');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-scoring-'));
process.on('exit', () => fs.rmSync(work, { recursive: true, force: true }));
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', maxBuffer: 1 << 26 });
function ok(...args: string[]): { stdout: string; stderr: string } {
  const r = run(...args);
  assert.equal(r.status, 0, `naslora ${args.join(' ')}: ${r.stderr}`);
  return r;
}
const readJson = (f: string) => JSON.parse(fs.readFileSync(f, 'utf8'));

const SMALL: SamConfig = {
  img_size: 64, patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2, mlp_ratio: 2, window_size: 4, global_attn_indexes: [1],
  prompt_embed_dim: 32, mask_in_chans: 8, decoder_depth: 1, decoder_mlp_dim: 64, decoder_heads: 2, iou_head_hidden_dim: 16,
};

// A small SAM checkpoint (with its configuration) and 12 Kvasir images: 8 train, 4 test, no val.
const ckpt = path.join(work, 'sam.safetensors');
manualSeed(3);
const sam = Sam.fromConfig(SMALL);
writeSafetensors(ckpt, [...sam.stateDict()].map(([n, t]) => [n, toRaw(t)]), { format: 'pt', ...samConfigMetadata(SMALL) });
sam.dispose();
const csv = path.join(work, 'data.csv');
const ids = fs.readdirSync(path.join(KVASIR, 'images')).sort().slice(0, 12);
fs.writeFileSync(csv, ['image,mask,split', ...ids.map((f, i) => `${path.join(KVASIR, 'images', f)},${path.join(KVASIR, 'masks', f)},${i < 8 ? 'train' : 'test'}`)].join('\n') + '\n');

const trainArgs = (out: string, ...more: string[]) => [
  'train', '-c', 'lora', '--set', `data.dir=${csv}`, '--set', `model.checkpoint=${ckpt}`, '--set', 'data.image_size=64', '--set', 'data.label_size=32',
  '--set', 'data.batch_size=4', '--set', 'data.num_workers=1', '--set', 'train.epochs=null', '--set', 'train.steps=2', '--set', 'optim.lr=0.01',
  '--set', `train.out_dir=${out}`, ...more,
];
const evalArgs = (adapter: string, out: string, ...more: string[]) =>
  ['eval', '--checkpoint', ckpt, '--adapter', adapter, '--data', csv, '--split', 'test', '-o', out, ...more];

test('train scores at label size by default; eval --resolution label --label-size gives the same numbers; both record it', () => {
  const runDir = path.join(work, 'label-run');
  ok(...trainArgs(runDir));
  const m = readJson(path.join(runDir, 'metrics.json'));
  assert.equal(m.scoring.test_resolution, 'label');
  assert.equal(m.scoring.label_size, 32);
  const out = path.join(work, 'eval-label');
  const r = ok(...evalArgs(path.join(runDir, 'checkpoints/last'), out, '--resolution', 'label', '--label-size', '32'));
  assert.match(r.stdout, /at label size 32/);
  const s = readJson(path.join(out, 'summary.json'));
  assert.equal(s.resolution, 'label');
  assert.equal(s.label_size, 32);
  assert.equal(s.count, 4);
  for (const k of ['dice', 'iou', 'mae', 'sMeasure']) assert.ok(Math.abs(s[k] - m.test[k]) < 1e-5, `${k}: eval ${s[k]} vs train ${m.test[k]}`);
  // The original resolution differs (Kvasir images are ~600×500, not 32×32), and is recorded as such.
  const out2 = path.join(work, 'eval-original');
  ok(...evalArgs(path.join(runDir, 'checkpoints/last'), out2));
  const o = readJson(path.join(out2, 'summary.json'));
  assert.equal(o.resolution, 'original');
  assert.notEqual(o.dice, s.dice);
  const bad = run(...evalArgs(path.join(runDir, 'checkpoints/last'), path.join(work, 'x'), '--resolution', 'full'));
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /--resolution must be original or label/);
});

test('eval.resolution=original: train\'s test metrics equal naslora eval\'s default; --save-predictions writes what was scored', async () => {
  const runDir = path.join(work, 'orig-run');
  ok(...trainArgs(runDir, '--set', 'eval.resolution=original'));
  const m = readJson(path.join(runDir, 'metrics.json'));
  assert.equal(m.scoring.test_resolution, 'original');
  const out = path.join(work, 'eval-orig2');
  ok(...evalArgs(path.join(runDir, 'checkpoints/last'), out, '--save-predictions', path.join(work, 'eval-orig2-pred')));
  const s = readJson(path.join(out, 'summary.json'));
  for (const k of ['dice', 'iou', 'weightedF']) assert.ok(Math.abs(s[k] - m.test[k]) < 1e-5, `${k}: eval ${s[k]} vs train ${m.test[k]}`);
  // --save-predictions: each scored mask at the image's size; Dice from those files = per_image.csv
  const rows = fs.readFileSync(path.join(out, 'per_image.csv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split(','));
  assert.equal(rows.length, 4);
  for (const [id, dice] of rows) {
    const pred = await decodeGray(path.join(work, 'eval-orig2-pred', `${id}.png`));
    const gt = await decodeGray(path.join(KVASIR, 'masks', `${id}.jpg`));
    assert.deepEqual([pred.width, pred.height], [gt.width, gt.height], `${id}: at the original size`);
    const p = binarize(pred.data), g = binarize(gt.data);
    let inter = 0, sp = 0, sg = 0;
    for (let i = 0; i < p.length; i++) { inter += p[i]! & g[i]!; sp += p[i]!; sg += g[i]!; }
    const d = sp + sg ? (2 * inter) / (sp + sg) : 1;
    assert.ok(Math.abs(d - Number(dice)) < 1e-4, `${id}: Dice of the saved mask ${d} vs per_image.csv ${dice}`);
  }
  const bad = run(...evalArgs(path.join(runDir, 'checkpoints/last'), path.join(work, 'y'), '--resolution', 'label', '--save-predictions', path.join(work, 'z')));
  assert.match(bad.stderr, /--save-predictions .* needs --resolution original/);
  assert.ok(!fs.existsSync(path.join(work, 'z')));
});

test('compare scores at the resolution its runs choose and says so (compare.json, compare.md)', () => {
  const dir = path.join(work, 'cmp');
  fs.mkdirSync(dir);
  const f = path.join(dir, 'compare.yaml');
  fs.writeFileSync(f, [
    'base:',
    `  model: { checkpoint: ${ckpt} }`,
    `  data: { dir: ${csv}, image_size: 64, label_size: 32, batch_size: 4, num_workers: 1 }`,
    '  train: { epochs: null, steps: 1 }',
    '  eval: { resolution: original }',
    'methods: [zero-shot]',
    'seeds: [0]',
    `out_dir: ${path.join(dir, 'runs')}`,
    '',
  ].join('\n'));
  const r = ok('compare', '-c', f);
  const j = readJson(path.join(dir, 'runs', 'compare.json'));
  assert.equal(j.runs[0].resolution, 'original');
  assert.match(r.stdout, /scored at original resolution/);
  // The same as naslora eval of the bare checkpoint at original resolution.
  const out = path.join(work, 'eval-zero');
  ok('eval', '--checkpoint', ckpt, '--data', csv, '--split', 'test', '-o', out);
  assert.ok(Math.abs(readJson(path.join(out, 'summary.json')).dice - j.runs[0].dice) < 1e-6);
});

test('eval --adapter <run>/checkpoints/best of a run without a val split falls back to last, with a note', () => {
  const runDir = path.join(work, 'label-run');
  assert.ok(!fs.existsSync(path.join(runDir, 'checkpoints/best')), 'no val split: no best checkpoint');
  const out = path.join(work, 'eval-best');
  const r = ok(...evalArgs(path.join(runDir, 'checkpoints/best'), out));
  assert.match(r.stderr, /note: .*checkpoints\/best does not exist .*using .*checkpoints\/last/);
  const s = readJson(path.join(out, 'summary.json'));
  assert.equal(s.adapter, path.join(runDir, 'checkpoints', 'last'));
  const direct = readJson(path.join(work, 'eval-original', 'summary.json'));
  assert.equal(s.dice, direct.dice);
  // Any other missing folder is still an error.
  const bad = run(...evalArgs(path.join(runDir, 'checkpoints/nope'), path.join(work, 'x2')));
  assert.notEqual(bad.status, 0);
});
