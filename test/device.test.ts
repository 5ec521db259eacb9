// The GPU path, tested where it can be: on this CPU-only libtorch (Debian's 1.13) and, unchanged, on a
// GPU machine with NASLORA_TEST_DEVICE=cuda (scripts/gpu-check.sh runs it so).
//  - devices: --device resolution, and the refusal of cuda on a CPU build (at once, saying why);
//  - Module.to: every tensor of SAM + adapters moves in place (identity kept);
//  - the device audit: a whole training run (every method, prompted mode, original-resolution
//    evaluation, saved examples, resume) makes no tensor off the run's device (what would fail on a
//    GPU with "Expected all tensors to be on the same device");
//  - autocast: bf16 matmuls/convs, fp32 softmax, norms and loss; a bf16 training run's losses stay
//    close to fp32's; parameters and optimizer state stay fp32;
//  - attention: the SDPA path against the explicit one (libtorch 2.x), or the explicit path asserted (1.13);
//  - the CLI: --device cuda on a CPU build fails before anything is read; --precision bf16 runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  AdamW, F, Linear, autocast, autocastActive, cudaAvailable, cudaInfo, hasOp, manualSeed, noGrad, randn, resolveDevice, startDeviceAudit, stopDeviceAudit,
  tidy, type Device, type Precision, type Tensor,
} from '../src/engine/index.js';
import { PRESETS } from '../src/train/config.js';
import { findAdapters, injectAdapters, loadAdapter, nasCells, saveAdapter, type AdapterConfig } from '../src/adapters/index.js';
import { Sam, type SamConfig } from '../src/model/sam/sam.js';
import { LayerNorm2d } from '../src/model/sam/common.js';
import { Attention, attentionImpl, Block, setAttentionImpl } from '../src/model/sam/image_encoder.js';
import { segmentLogits } from '../src/model/sam/segment.js';
import { structureLoss } from '../src/train/losses.js';
import { loadConfig } from '../src/train/config.js';
import { runTraining } from '../src/train/run.js';
import { backendFor } from '../src/train/dist.js';
import type { Progress } from '../src/train/progress.js';
import { ScaleMoE } from '../src/adapters/conv_lora/moe.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = path.join(ROOT, 'dist/src/cli/main.js');
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-device-'));
process.on('exit', () => fs.rmSync(TMP, { recursive: true, force: true }));
const at = (...p: string[]): string => path.join(TMP, ...p);

/** The device these tests run on: cpu here; NASLORA_TEST_DEVICE=cuda on a GPU machine. */
const SPEC = (process.env.NASLORA_TEST_DEVICE ?? 'cpu') as 'cpu' | 'cuda';
const DEVICE = resolveDevice(SPEC, { what: 'NASLORA_TEST_DEVICE' });
const CUDA_BUILD = cudaInfo().build;

const TINY: SamConfig = {
  img_size: 32, patch_size: 8, embed_dim: 16, depth: 2, num_heads: 2, mlp_ratio: 2, window_size: 2, global_attn_indexes: [1],
  prompt_embed_dim: 16, mask_in_chans: 4, decoder_depth: 1, decoder_mlp_dim: 32, decoder_heads: 2, iou_head_hidden_dim: 8,
};
fs.writeFileSync(at('tiny.json'), JSON.stringify({ config: TINY }));
const quiet: Progress = { start() {}, tick() {}, stop() {}, log() {} };

function runArgs(preset: string, ...more: string[]): [string, string[]] {
  return [preset, [
    `model.config=${at('tiny.json')}`, 'model.pretrained=none', 'model.checkpoint=null', 'data.synthetic={kind: target, n: 12, size: 32, seed: 1}',
    'data.image_size=32', 'data.batch_size=2', 'data.num_workers=1', 'data.prefetch=1', 'train.epochs=null', 'train.steps=6', 'train.eval_every=3',
    'train.log_every=1', `train.out_dir=${at('run')}`, `runtime.device=${SPEC}`, ...more,
  ]];
}

test('devices: cpu and auto resolve; cuda on a libtorch without CUDA fails at once, saying why', () => {
  assert.equal(resolveDevice('cpu'), 'cpu');
  assert.throws(() => resolveDevice('gpu'), /must be one of cpu, cuda, auto/);
  if (!cudaAvailable()) {
    assert.equal(resolveDevice('auto'), 'cpu');
    const want = CUDA_BUILD ? /sees no CUDA device/ : /--device cuda: this libtorch has no CUDA \(a CPU build: libtorch [\d.]+\); rebuild the addon against a CUDA libtorch/;
    assert.throws(() => resolveDevice('cuda', { what: '--device' }), want);
  } else {
    assert.equal(resolveDevice('cuda'), 'cuda:0');
    assert.equal(resolveDevice('auto'), 'cuda:0');
    const n = cudaInfo().devices;
    assert.equal(resolveDevice('cuda', { localRank: n - 1, localWorldSize: n }), `cuda:${n - 1}`);
    assert.throws(() => resolveDevice('cuda', { localRank: n, localWorldSize: n + 1 }), /local rank .* only \d+ CUDA device/);
    assert.equal(resolveDevice('auto', { localRank: 0, localWorldSize: n + 1 }), 'cpu', 'auto: more processes than GPUs on the machine stay on the CPU');
  }
  // data-parallel: Gloo on the CPU, NCCL on CUDA (one GPU per process)
  assert.equal(backendFor('cpu'), 'gloo');
  assert.equal(backendFor('cuda:1'), 'nccl');
  // an operator this libtorch lacks is a false, not a throw (the SDPA check relies on it)
  assert.equal(hasOp('aten::no_such_operator_here'), false);
  assert.equal(hasOp('aten::add.Tensor'), true);
});

test('Module.to moves SAM and its adapters in place: every parameter, buffer, pixel statistics, NAS α and re-parameterized kernels, Conv-LoRA experts', () => {
  // 'meta' (shapes only) is a second device every libtorch has; on a GPU machine, the GPU.
  const target: Device = DEVICE === 'cpu' ? 'meta' : DEVICE;
  for (const method of ['nas-lora', 'conv-lora'] as const) {
    manualSeed(0);
    const sam = Sam.fromConfig(TINY);
    const layers = injectAdapters(sam, { ...PRESETS[method]().method, rank: 2 } as AdapterConfig);
    if (method === 'nas-lora') for (const { cell } of nasCells(layers)) cell.reparameterize();
    const before = sam.namedParameters();
    const grads = before.map(([, p]) => p.requiresGrad);
    sam.to(target);
    const after = sam.namedParameters();
    assert.equal(after.length, before.length);
    after.forEach(([n, p], i) => {
      assert.equal(p, before[i][1], `${n}: the same tensor object (references held elsewhere stay valid)`);
      assert.equal(p.device, target.replace(/^cuda$/, 'cuda:0'), `${n} moved`);
      assert.equal(p.requiresGrad, grads[i], `${n}: requires_grad kept`);
      assert.equal(p.dtype, 'float32');
    });
    for (const [n, b] of sam.namedBuffers()) assert.equal(b.device, p0(target), `buffer ${n}`);
    assert.equal(sam.pixelMean.device, p0(target));
    assert.equal(sam.pixelStd.device, p0(target));
    assert.equal(sam.device, p0(target));
    if (method === 'nas-lora') for (const { cell, path: cp } of nasCells(findAdapters(sam))) assert.equal(cell.reparam!.kernel!.device, p0(target), `${cp} kernel`);
    sam.dispose();
  }
});
const p0 = (d: string): string => (d === 'cuda' ? 'cuda:0' : d);

test('device audit: training (every method, gumbel search, prompted mode), evaluation at both resolutions, examples and resume keep every tensor on the run\'s device', async () => {
  const cases: Array<[string, string[]]> = [
    runArgs('lora'), runArgs('nas-lora'), runArgs('nas-lora', 'schedule.search.sampling=gumbel'), runArgs('nas-pc-lora', 'method.rank=4'),
    runArgs('conv-lora'), runArgs('lora', 'data.mode=prompted'), runArgs('decoder-only', 'eval.resolution=original'),
  ];
  const found: string[] = [];
  for (const [preset, sets] of cases) {
    fs.rmSync(at('run'), { recursive: true, force: true });
    startDeviceAudit();
    let r;
    try {
      r = await runTraining(loadConfig(preset, sets), { progress: quiet });
    } finally {
      const v = stopDeviceAudit();
      found.push(...v.map((x) => `${preset} ${sets.slice(14).join(' ')}: ${x}`));
    }
    assert.ok(r.losses.every(Number.isFinite));
    const m = JSON.parse(fs.readFileSync(at('run', 'metrics.json'), 'utf8')) as { runtime: { device: string; precision: string } };
    assert.deepEqual(m.runtime.device, DEVICE, 'metrics.json records where the run computed');
    assert.ok(fs.existsSync(at('run', 'examples', 'examples.json')), 'examples were written (predictions back from the device)');
  }
  // Resume: adapter and optimizer state read from files (CPU) continue on the run's device.
  for (const preset of ['nas-lora', 'conv-lora']) {
    fs.rmSync(at('run'), { recursive: true, force: true });
    const [p, sets] = runArgs(preset);
    await runTraining(loadConfig(p, [...sets, 'train.steps=3']), { progress: quiet });
    startDeviceAudit();
    try {
      const r = await runTraining(loadConfig(p, sets), { progress: quiet, resume: true });
      assert.equal(r.steps, 6);
    } finally {
      found.push(...stopDeviceAudit().map((x) => `${preset} resume: ${x}`));
    }
  }
  assert.deepEqual(found, [], `tensors made off the run's device (they would fail on a GPU):\n${found.join('\n')}`);
});

test('the device audit catches a tensor made without a device (it is not vacuous)', () => {
  manualSeed(0);
  const lin = new Linear(4, 4);
  lin.to(DEVICE);
  startDeviceAudit();
  let v: string[];
  try {
    tidy(() => {
      lin.to(DEVICE);  // marks its tensors as placed
      const x = randn([3, 4]);  // no device: the CPU on any machine
      lin.forward(x);
    });
  } catch {
    // On a GPU the op itself fails, which is the point; the audit has recorded it first.
  } finally {
    v = stopDeviceAudit();
  }
  assert.equal(v.length, 1, v.join('\n'));
  assert.match(v[0], /^aten::linear: a tensor \[3,4\] made without a device/);
  lin.dispose();
});

test('autocast bf16: linear/conv/matmul in bf16; softmax, log_softmax, layer norms and the loss in fp32; restored afterwards', () => {
  manualSeed(0);
  const lin = new Linear(8, 8).to(DEVICE);
  const ln2d = new LayerNorm2d(8).to(DEVICE);
  const x = randn([2, 8], { device: DEVICE });
  tidy(() => {
    assert.equal(autocastActive(), false);
    autocast({ device: DEVICE, precision: 'bf16' }, () => {
      assert.equal(autocastActive(), true);
      const y = lin.forward(x);
      assert.equal(y.dtype, 'bfloat16', 'linear runs in bf16');
      assert.equal(y.matmul(y.transpose(0, 1)).dtype, 'bfloat16', 'matmul runs in bf16');
      const c = F.conv2d(randn([1, 2, 5, 5], { device: DEVICE }), randn([3, 2, 3, 3], { device: DEVICE }));
      assert.equal(c.dtype, 'bfloat16', 'conv2d runs in bf16');
      assert.equal(y.softmax(-1).dtype, 'float32', 'softmax in fp32');
      assert.equal(y.logSoftmax(-1).dtype, 'float32', 'log_softmax in fp32');
      assert.equal(F.layerNorm(y, [8], lin.weight.select(0, 0), null).dtype, 'float32', 'layer_norm in fp32 (fp32 weight, bf16 input)');
      assert.equal(ln2d.forward(y.reshape(1, 8, 1, 2)).dtype, 'float32', 'LayerNorm2d in fp32');
      // nested regions keep it on; the inner end does not turn it off
      autocast({ device: DEVICE, precision: 'bf16' }, () => assert.equal(lin.forward(x).dtype, 'bfloat16'));
      assert.equal(lin.forward(x).dtype, 'bfloat16');
      // softmax of an fp32 input is untouched
      assert.equal(x.softmax(-1).dtype, 'float32');
    });
    assert.equal(autocastActive(), false);
    assert.equal(lin.forward(x).dtype, 'float32', 'off again after the region');
    // fp32 precision: no autocast at all
    autocast({ device: DEVICE, precision: 'fp32' }, () => assert.equal(lin.forward(x).dtype, 'float32'));
  });
  // The model's logits, and so the loss, are fp32 whatever the precision.
  manualSeed(0);
  const sam = Sam.fromConfig(TINY).to(DEVICE);
  injectAdapters(sam, { ...PRESETS['conv-lora']().method, rank: 2 } as AdapterConfig);
  sam.to(DEVICE);
  tidy(() => {
    const images = randn([2, 3, 32, 32], { device: DEVICE });
    const out = autocast({ device: DEVICE, precision: 'bf16' }, () => segmentLogits(sam, images));
    assert.equal(out.dtype, 'float32');
    const aux = (findAdapters(sam)[0].layer.children().find(([n]) => n === 'adapter')![1].getChild('moe') as ScaleMoE).auxLoss!;
    assert.equal(aux.dtype, 'float32', 'Conv-LoRA load-balancing loss in fp32');
    const loss = structureLoss(F.interpolate(out, { size: [32, 32], mode: 'bilinear' }), randn([2, 1, 32, 32], { device: DEVICE }).gt(0).float());
    assert.equal(loss.dtype, 'float32');
  });
  sam.dispose();
  lin.dispose();
  ln2d.dispose();
  x.dispose();
});

test('bf16 training: each step runs, the losses stay within 2 % of fp32\'s, parameters, gradients and optimizer state stay float32', async () => {
  // Whole runs through the trainer (AdamW, α's Adam, clipping, evaluation).
  for (const preset of ['lora', 'nas-lora', 'conv-lora']) {
    const losses: Record<Precision, number[]> = { fp32: [], bf16: [] };
    for (const p of ['fp32', 'bf16'] as const) {
      fs.rmSync(at('run'), { recursive: true, force: true });
      const [pr, sets] = runArgs(preset, `runtime.precision=${p}`);
      const r = await runTraining(loadConfig(pr, sets), { progress: quiet });
      losses[p] = r.losses;
      const m = JSON.parse(fs.readFileSync(at('run', 'metrics.json'), 'utf8')) as { runtime: { precision: string } };
      assert.equal(m.runtime.precision, p);
    }
    assert.notDeepEqual(losses.bf16, losses.fp32, `${preset}: bf16 computed something else (autocast was on)`);
    losses.bf16.forEach((l, i) => {
      const ref = losses.fp32[i];
      assert.ok(Number.isFinite(l) && Math.abs(l - ref) <= 0.02 * Math.abs(ref), `${preset} step ${i + 1}: bf16 loss ${l} vs fp32 ${ref}`);
    });
  }
  // Master weights: a hand-written loop whose forward runs under autocast.
  manualSeed(0);
  const sam = Sam.fromConfig(TINY);
  injectAdapters(sam, { ...PRESETS['nas-lora']().method, rank: 2 } as AdapterConfig);
  sam.to(DEVICE);
  const params = sam.parameters();
  const opt = new AdamW(params, { lr: 1e-3 });
  const images = randn([2, 3, 32, 32], { device: DEVICE });
  const target = randn([2, 1, 16, 16], { device: DEVICE }).gt(0).float();  // the low-res logits' size (4× the 4×4 embedding)
  for (let step = 0; step < 3; step++) {
    tidy(() => {
      opt.zeroGrad();
      const out = autocast({ device: DEVICE, precision: 'bf16' }, () => segmentLogits(sam, images));
      structureLoss(out, target).backward();
      for (const p of params) {
        const g = p.grad;
        if (g) assert.equal(g.dtype, 'float32', 'gradients reach the fp32 master weights as fp32');
      }
      opt.step();
    });
  }
  for (const [n, p] of sam.namedParameters()) assert.equal(p.dtype, 'float32', `${n} after optimizer steps`);
  const state = opt.stateDict();
  for (const s of state.params) for (const [k, t] of Object.entries(s.tensors)) { assert.equal(t.dtype, 'float32', `optimizer state ${k}`); assert.equal(t.device, DEVICE); t.dispose(); }
  opt.dispose();
  images.dispose();
  target.dispose();
  sam.dispose();
});

/** max |a − b| over two tensors (as float32 on the CPU), relative to max(1, max |b|): fused kernels sum in another order. */
function maxDiff(a: Tensor, b: Tensor): number {
  const x = a.toFloat32Array(), y = b.toFloat32Array();
  assert.equal(x.length, y.length);
  let m = 0, ref = 1;
  for (let i = 0; i < x.length; i++) { m = Math.max(m, Math.abs(x[i] - y[i])); ref = Math.max(ref, Math.abs(y[i])); }
  return m / ref;
}

test('attention: scaled_dot_product_attention equals the explicit path (forward and gradients, windowed, padded and global blocks), or the explicit path where libtorch has no SDPA', (t) => {
  const has = F.hasScaledDotProductAttention();
  const prev = setAttentionImpl('auto');
  try {
    assert.equal(attentionImpl(), has ? 'sdpa' : 'explicit', 'auto picks SDPA exactly where this libtorch has it');
    if (!has) {
      // 1.13: the encoder runs the explicit form, and asking for SDPA says why it cannot.
      manualSeed(0);
      const blk = new Block({ dim: 16, numHeads: 2, windowSize: 3, inputSize: [7, 7] }).to(DEVICE);
      tidy(() => blk.forward(randn([1, 7, 7, 16], { device: DEVICE })));
      assert.equal(blk.attn.lastImpl, 'explicit');
      setAttentionImpl('sdpa');
      assert.throws(() => attentionImpl(), /this libtorch has no aten::scaled_dot_product_attention/);
      blk.dispose();
      t.skip(`this libtorch has no aten::scaled_dot_product_attention: the explicit path is used (asserted); the SDPA-vs-explicit comparison needs libtorch 2.x (scripts/gpu-check.sh runs it)`);
      return;
    }
    // Windowed with padding (7×7 grid, 3×3 windows), and global (whole 7×7 grid): rel-pos tables random.
    for (const [windowSize, label] of [[3, 'windowed, padded'], [0, 'global']] as const) {
      manualSeed(1);
      const blk = new Block({ dim: 32, numHeads: 4, windowSize, inputSize: [7, 7] }).to(DEVICE);
      noGrad(() => { for (const p of blk.parameters()) p.add_(randn(p.shape, { device: DEVICE }).mul(0.1)); });
      const x = randn([2, 7, 7, 32], { device: DEVICE }).requiresGrad_();
      const run = (impl: 'sdpa' | 'explicit'): { y: Tensor; grads: Tensor[] } => {
        setAttentionImpl(impl);
        for (const p of [...blk.parameters(), x]) p.grad = null;
        const y = blk.forward(x).keep();
        assert.equal(blk.attn.lastImpl, impl);
        tidy(() => y.mul(y).sum().backward());
        return { y, grads: [...blk.parameters(), x].map((p) => p.grad!.keep()) };
      };
      const a = run('explicit'), b = run('sdpa');
      const fwd = maxDiff(a.y, b.y);
      assert.ok(fwd <= 1e-5, `${label}: forward differs by ${fwd}`);
      a.grads.forEach((g, i) => {
        const d = maxDiff(g, b.grads[i]);
        assert.ok(d <= 1e-5, `${label}: gradient ${i} differs by ${d}`);
      });
      for (const z of [a.y, b.y, ...a.grads, ...b.grads, x]) z.dispose();
      blk.dispose();
    }
    assert.ok(Attention);  // (the class the paths live in)
  } finally {
    setAttentionImpl(prev);
  }
});

test('attention: the SDPA path\'s layout and relative-position mask are right on any libtorch (libtorch\'s kernel replaced by its written-out form)', () => {
  for (const [windowSize, label] of [[3, 'windowed, padded'], [0, 'global']] as const) {
    manualSeed(2);
    const blk = new Block({ dim: 32, numHeads: 4, windowSize, inputSize: [7, 7] }).to(DEVICE);
    noGrad(() => { for (const p of blk.parameters()) p.add_(randn(p.shape, { device: DEVICE }).mul(0.1)); });
    const grid = windowSize ? [8, 3, 3, 32] : [2, 7, 7, 32];  // what the block's attention sees (windows of the padded grid, or the grid)
    const x = randn(grid, { device: DEVICE }).requiresGrad_();
    const run = (f: () => Tensor): { y: Tensor; grads: Tensor[] } => {
      for (const p of [...blk.parameters(), x]) p.grad = null;
      const y = f().keep();
      tidy(() => y.mul(y).sum().backward());
      return { y, grads: [...blk.attn.parameters(), x].map((p) => p.grad!.keep()) };
    };
    const a = run(() => blk.attn.forwardExplicit(x));
    const b = run(() => blk.attn.forwardSdpa(x, F.scaledDotProductAttentionMath));
    assert.ok(maxDiff(a.y, b.y) <= 1e-5, `${label}: forward differs by ${maxDiff(a.y, b.y)}`);
    a.grads.forEach((g, i) => assert.ok(maxDiff(g, b.grads[i]) <= 1e-5, `${label}: gradient ${i} differs by ${maxDiff(g, b.grads[i])}`));
    for (const z of [a.y, b.y, ...a.grads, ...b.grads, x]) z.dispose();
    blk.dispose();
  }
});

function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8', maxBuffer: 1 << 26 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}

test('CLI: --device cuda without CUDA fails at once on every computing command; --device/--precision run on eval and predict', (t) => {
  const FIX = '../shared/fixtures/sam-reference';
  if (!cudaAvailable()) {
    const missing = at('does-not-exist');
    const runs: string[][] = [
      ['train', '-c', 'lora', '--set', `data.dir=${missing}`, '--device', 'cuda'],
      ['pretrain', '-c', 'lora', '--set', 'model.config=vit_b', '--set', `data.dir=${missing}`, '--device', 'cuda'],
      ['eval', '--checkpoint', missing, '--data', missing, '-o', at('e'), '--device', 'cuda'],
      ['predict', '--checkpoint', missing, '--image', missing, '--point', '1,1,1', '-o', at('p'), '--device', 'cuda'],
      ['bench', 'sam', '--device', 'cuda'],
    ];
    for (const args of runs) {
      const r = cli(...args);
      assert.equal(r.status, 1, `${args.join(' ')}: ${r.stderr}`);
      assert.match(r.stderr, /cuda: this libtorch has no CUDA \(a CPU build|sees no CUDA device/, `${args[0]} names why, before touching its (missing) inputs: ${r.stderr}`);
    }
    assert.ok(!fs.existsSync(at('e')) && !fs.existsSync(at('p')), 'nothing written');
  }
  // bf16 on the run's device: eval and predict on the sam-tiny fixture (../shared, beside the checkout).
  if (!fs.existsSync(path.join(ROOT, FIX, 'sam-tiny.pth'))) { t.skip(`no ${FIX} beside the checkout: predict/eval --device/--precision not run`); return; }
  const image = `../shared/${(JSON.parse(fs.readFileSync(path.join(ROOT, FIX, 'sam-tiny.json'), 'utf8')) as { image: string }).image}`;
  const predict = (out: string, ...more: string[]) => cli('predict', '--checkpoint', `${FIX}/sam-tiny.pth`, '--model-config', `${FIX}/sam-tiny.json`, '--image', image, '--point', '300,200,1', '-o', out, '--device', SPEC, ...more);
  const a = predict(at('p32')), b = predict(at('p16'), '--precision', 'bf16');
  assert.equal(a.status, 0, a.stderr);
  assert.equal(b.status, 0, b.stderr);
  assert.ok(fs.existsSync(at('p16', 'prediction.safetensors')));
  const iou = (s: string) => Number(/predicted IoU ([\d.]+)/.exec(s)![1]);
  assert.ok(Math.abs(iou(a.stdout) - iou(b.stdout)) < 0.05, `bf16 IoU ${iou(b.stdout)} vs fp32 ${iou(a.stdout)}`);
  if (!fs.existsSync(path.join(ROOT, '../shared/data/kvasir-seg'))) { t.diagnostic('no Kvasir-SEG subset: eval --precision not run'); return; }
  const ev = cli('eval', '--checkpoint', `${FIX}/sam-tiny.pth`, '--model-config', `${FIX}/sam-tiny.json`, '--data', '../shared/data/kvasir-seg', '--split', 'test',
    '--resolution', 'label', '--label-size', '64', '-o', at('ev'), '--device', SPEC, '--precision', 'bf16');
  assert.equal(ev.status, 0, ev.stderr);
  assert.ok(fs.existsSync(at('ev', 'summary.json')));
});

test('the adapter of a run on the device saves (tensors come back to the CPU for writing) and reloads onto the device', () => {
  const method = { ...PRESETS['nas-lora']().method, rank: 2 } as AdapterConfig;
  manualSeed(0);
  const sam = Sam.fromConfig(TINY);
  const layers = injectAdapters(sam, method);
  noGrad(() => { for (const { cell } of nasCells(layers)) cell.alpha.add_(randn(cell.alpha.shape)); });
  for (const { cell } of nasCells(layers)) cell.reparameterize();
  sam.to(DEVICE);
  const cfg = saveAdapter(at('adapter'), sam, method);
  assert.ok(cfg.cells.length > 0 && cfg.cells.every((c) => c.reparameterized));
  // Into a fresh model already on the device (as a resumed run is): the kernels land there too.
  manualSeed(0);
  const fresh = Sam.fromConfig(TINY).to(DEVICE);
  loadAdapter(at('adapter'), fresh);
  for (const { cell, path: cp } of nasCells(findAdapters(fresh))) assert.equal(cell.reparam!.kernel!.device, DEVICE, `${cp}: kernel on the model's device`);
  fresh.to(DEVICE);
  tidy(() => {
    const images = randn([1, 3, 32, 32], { device: DEVICE });
    const d = maxDiff(segmentLogits(sam.eval(), images), segmentLogits(fresh.eval(), images));
    assert.ok(d < 1e-5, `reloaded adapter gives other logits (max diff ${d})`);
  });
  sam.dispose();
  fresh.dispose();
});
