// The main job end to end through the CLI (demo --quick), then eval and export on its outputs:
// merged export equals the adapted model, NAS cells that keep a spatial branch are refused by
// name, PEFT export has PEFT's names, and a merged .pth loads with torch.load(weights_only=True).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { manualSeed, noGrad, randn, tidy } from '../src/engine/index.js';
import { loadSamFile } from '../src/model/sam/build.js';
import { segmentLogits } from '../src/model/sam/segment.js';
import { injectAdapters, loadAdapter, nasCells, saveAdapter, sha256File, setTrainable, DEFAULT_OPS, type AdapterConfig } from '../src/adapters/index.js';
import { openCheckpoint } from '../src/io/pth.js';
import { readSafetensors } from '../src/io/safetensors.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(here, '../..');
const CLI = path.join(ROOT, 'dist/src/cli/main.js');
const KVASIR = path.resolve(ROOT, '../shared/data/kvasir-seg');
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-cli-'));
process.on('exit', () => fs.rmSync(work, { recursive: true, force: true }));

test('naslora demo --quick runs the main job and prints the comparison table', () => {
  const out = path.join(work, 'demo');
  const r = run('demo', '--quick', '--out', out);
  assert.equal(r.status, 0, r.stderr);
  for (const m of ['source model (no adaptation)', 'nas-lora', 'lora', 'conv-lora']) assert.match(r.stdout, new RegExp(`\\| ${m.replace(/[()]/g, '\\$&')} \\| \\d\\.\\d{4} \\| \\d\\.\\d{4} \\|`));
  assert.match(r.stdout, /NAS-LoRA derived op per layer:\n {2}image_encoder\.blocks\.0\.attn\.qkv: \w+/);
  for (const f of ['pretrain/sam.safetensors', 'demo_results.json', 'nas-lora/seed0/checkpoints/best/adapter_config.json']) assert.ok(fs.existsSync(path.join(out, f)), f);
});

function kvasirCsv(n: number): string {
  const ids = fs.readdirSync(path.join(KVASIR, 'images')).sort().slice(0, n);
  const csv = path.join(work, `kvasir${n}.csv`);
  fs.writeFileSync(csv, ['image,mask', ...ids.map((f) => `${path.join(KVASIR, 'images', f)},${path.join(KVASIR, 'masks', f)}`)].join('\n') + '\n');
  return csv;
}

test('naslora eval writes summary.json and per_image.csv at original resolution', () => {
  const demo = path.join(work, 'demo');
  const out = path.join(work, 'eval');
  const r = run('eval', '--checkpoint', path.join(demo, 'pretrain/sam.safetensors'), '--model-config', path.join(demo, 'demo_sam_config.json'),
    '--adapter', path.join(demo, 'nas-lora/seed0/checkpoints/last'), '--data', kvasirCsv(12), '--split', 'all', '-o', out);
  assert.equal(r.status, 0, r.stderr);
  const s = JSON.parse(fs.readFileSync(path.join(out, 'summary.json'), 'utf8')) as Record<string, number>;
  assert.equal(s.count, 12);
  for (const k of ['dice', 'iou', 'sMeasure', 'meanEMeasure', 'weightedF', 'mae', 'ber']) assert.ok(s[k] >= 0 && s[k] <= 1.5, k);
  const csv = fs.readFileSync(path.join(out, 'per_image.csv'), 'utf8').trim().split('\n');
  assert.equal(csv.length, 13);
  assert.match(csv[0], /^id,dice,iou/);
  const bad = run('eval', '--checkpoint', path.join(demo, 'pretrain/sam.safetensors'), '--data', path.join(work, 'nope'), '-o', out);
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /naslora: .*nope/);
});

function adaptedBase(method: AdapterConfig['name'], dir: string, discretizeTo?: string): { ckpt: string; cfgFile: string; adapter: string } {
  const demo = path.join(work, 'demo');
  const ckpt = path.join(demo, 'pretrain/sam.safetensors');
  const cfgFile = path.join(demo, 'demo_sam_config.json');
  const { model } = loadSamFile(ckpt, { config: JSON.parse(fs.readFileSync(cfgFile, 'utf8')).config });
  const c: AdapterConfig = { name: method, rank: 4, lora_alpha: 8, dropout: 0, targets: '^image_encoder\\.blocks\\.\\d+\\.attn\\.qkv$', qv_only: false, ops: [...DEFAULT_OPS], alpha_init: 0, pc_k: 2, experts: 4, moe_loss_weight: 0.01, gate_noise: true };
  const layers = injectAdapters(model, c);
  manualSeed(5);
  noGrad(() => { for (const [n, p] of model.namedParameters()) if (/lora_|cell\.|moe\./.test(n)) p.copy_(tidy(() => randn(p.shape).mul(0.2))); });
  if (discretizeTo) {
    for (const { cell } of nasCells(layers)) {
      noGrad(() => { cell.alpha.zero_(); cell.alpha.narrow(0, cell.candidates.findIndex((o) => o.name === discretizeTo), 1).fill_(3); });
      cell.discretize();
    }
  }
  setTrainable(model, ['lora', 'ops', 'alpha']);
  const adapter = path.join(work, dir);
  saveAdapter(adapter, model, c, { baseFile: ckpt });
  model.dispose();
  return { ckpt, cfgFile, adapter };
}

test('export --format merged: a plain checkpoint with the same outputs (LoRA; NAS discretized to conv_1x1); .pth loads in torch', (t) => {
  for (const [method, op] of [['lora', undefined], ['nas-lora', 'conv_1x1']] as const) {
    const { ckpt, cfgFile, adapter } = adaptedBase(method, `${method}-merge`, op);
    const outFile = path.join(work, `${method}-merged.pth`);
    const r = run('export', '--checkpoint', ckpt, '--model-config', cfgFile, '--adapter', adapter, '--format', 'merged', '-o', outFile);
    assert.equal(r.status, 0, r.stderr);
    tidy(() => {
      const base = loadSamFile(ckpt, { config: JSON.parse(fs.readFileSync(cfgFile, 'utf8')).config }).model;
      loadAdapter(adapter, base, { baseSha256: sha256File(ckpt) });
      base.eval();
      const merged = loadSamFile(outFile, { config: JSON.parse(fs.readFileSync(cfgFile, 'utf8')).config }).model;
      merged.eval();
      manualSeed(1);
      const x = randn([2, 3, 64, 64]);
      const a = noGrad(() => segmentLogits(base, x));
      const b = noGrad(() => segmentLogits(merged, x));
      const err = a.sub(b).abs().max().item() / a.abs().max().item();
      assert.ok(err <= 1e-5, `${method}: merged model differs by ${err} (relative)`);
      base.dispose(); merged.dispose();
    });
    const src = openCheckpoint(outFile);
    assert.ok(src.keys().every((k) => !/lora_|cell|moe/.test(k)), 'adapter tensors leaked into the merged checkpoint');
    src.close();
    // It carries its SAM configuration: it loads without --model-config, as the same model.
    const conf = JSON.parse(fs.readFileSync(cfgFile, 'utf8')).config;
    const alone = loadSamFile(outFile);
    assert.deepEqual(alone.config, conf);
    alone.model.dispose();
    const py = spawnSync('/usr/bin/python3', ['-c', `import json, torch; sd = torch.load(${JSON.stringify(outFile)}, weights_only=True); print(len(sd), json.loads(sd.naslora_sam_config)['decoder_heads'])`], { encoding: 'utf8' });
    if (py.status === 0) {
      const [n, heads] = py.stdout.trim().split(' ').map(Number);
      assert.ok(n > 50);
      assert.equal(heads, conf.decoder_heads);
    } else t.diagnostic(`torch.load check skipped: ${py.stderr.trim().split('\n').pop()}`);
  }
});

test('export refuses to merge cells that keep a spatial branch, naming the layers; --format adapter re-parameterizes', () => {
  const { ckpt, cfgFile, adapter } = adaptedBase('nas-lora', 'nas-spatial');
  const r = run('export', '--checkpoint', ckpt, '--model-config', cfgFile, '--adapter', adapter, '--format', 'merged', '-o', path.join(work, 'never.safetensors'));
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /cannot merge exactly: 4 layer\(s\) keep a spatial branch \(image_encoder\.blocks\.0\.attn\.qkv/);
  assert.ok(!fs.existsSync(path.join(work, 'never.safetensors')));
  const out = path.join(work, 'nas-reparam');
  const ok = run('export', '--checkpoint', ckpt, '--model-config', cfgFile, '--adapter', adapter, '--format', 'adapter', '-o', out);
  assert.equal(ok.status, 0, ok.stderr);
  assert.match(ok.stdout, /re-parameterized 4 cell\(s\)/);
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8')) as { cells: Array<{ reparameterized: boolean }> };
  assert.ok(cfg.cells.every((c) => c.reparameterized));
  // The re-parameterized adapter computes what the original adapter computes.
  tidy(() => {
    const conf = JSON.parse(fs.readFileSync(cfgFile, 'utf8')).config;
    const a = loadSamFile(ckpt, { config: conf }).model;
    loadAdapter(adapter, a);
    const b = loadSamFile(ckpt, { config: conf }).model;
    loadAdapter(out, b);
    a.eval(); b.eval();
    manualSeed(2);
    const x = randn([1, 3, 64, 64]);
    const ya = noGrad(() => segmentLogits(a, x));
    const yb = noGrad(() => segmentLogits(b, x));
    assert.ok(ya.sub(yb).abs().max().item() / ya.abs().max().item() <= 1e-5);
    a.dispose(); b.dispose();
  });
});

test('export --format peft writes PEFT LoRA names and config; refuses other methods', () => {
  const { ckpt, cfgFile, adapter } = adaptedBase('lora', 'lora-peft');
  const out = path.join(work, 'peft');
  const r = run('export', '--checkpoint', ckpt, '--model-config', cfgFile, '--adapter', adapter, '--format', 'peft', '-o', out);
  assert.equal(r.status, 0, r.stderr);
  const { tensors } = readSafetensors(path.join(out, 'adapter_model.safetensors'));
  assert.deepEqual([...tensors.keys()].sort(), [0, 1, 2, 3].flatMap((i) => ['A', 'B'].map((x) => `base_model.model.vision_encoder.layers.${i}.attn.qkv.lora_${x}.weight`)).sort());
  assert.deepEqual(tensors.get('base_model.model.vision_encoder.layers.0.attn.qkv.lora_A.weight')!.shape, [4, 64]);
  const cfg = JSON.parse(fs.readFileSync(path.join(out, 'adapter_config.json'), 'utf8')) as Record<string, unknown>;
  assert.equal(cfg.peft_type, 'LORA');
  assert.equal(cfg.r, 4);
  assert.deepEqual(cfg.target_modules, ['qkv']);
  const nas = adaptedBase('nas-lora', 'nas-peft');
  const bad = run('export', '--checkpoint', nas.ckpt, '--model-config', nas.cfgFile, '--adapter', nas.adapter, '--format', 'peft', '-o', path.join(work, 'peft2'));
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /PEFT export is for plain LoRA/);
});

test('naslora doctor --json reports libtorch, BLAS and threads', () => {
  const r = run('doctor', '--json');
  assert.equal(r.status, 0, r.stderr);
  const j = JSON.parse(r.stdout) as { libtorch: string; blas: { kind: string }; threads: number; warnings: string[] };
  assert.match(j.libtorch, /^\d+\.\d+/);
  assert.ok(j.threads >= 1);
  assert.ok(['openblas', 'mkl', 'reference', 'blis', 'unknown'].includes(j.blas.kind));
  if (j.blas.kind === 'reference') assert.ok(j.warnings.some((w) => /30x slower/.test(w)));
});
