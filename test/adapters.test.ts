// Adapter layers: exactness of merge / discretize / re-parameterize, gradient routing, and
// agreement with an independent PyTorch implementation (test/py/adapter_ref.py).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Linear, Module, ModuleList, manualSeed, noGrad, randn, tensor, tidy, type Tensor } from '../src/engine/index.js';
import {
  AdapterLayer, ConvLoraLayer, DEFAULT_OPS, NasLoraLayer, getMethod, injectAdapters, nasCells, countByPart, setTrainable,
  saveAdapter, loadAdapter, mergeAll, DEFAULT_TARGETS,
  type AdapterConfig,
} from '../src/adapters/index.js';
import { Sam, SAM_PRESETS } from '../src/model/sam/sam.js';
import type { RawTensor } from '../src/io/raw.js';
import { fromRaw, maxRelErr, raw, runPyRef } from './helpers/pyref.js';


export function cfg(name: string, o: Partial<AdapterConfig> = {}): AdapterConfig {
  return {
    name, rank: 4, lora_alpha: 8, dropout: 0, targets: '^blocks\\.\\d+\\.qkv$', qv_only: false, ops: [...DEFAULT_OPS],
    alpha_init: 0, pc_k: 2, experts: 4, moe_loss_weight: 0.01, gate_noise: true, ...o,
  };
}

/** A stand-in encoder: blocks.i.qkv Linear layers called on (B, H, W, C) grids. */
class Blocks extends Module {
  blocks: ModuleList;
  constructor(n: number, c: number) {
    super();
    this.blocks = this.child('blocks', new ModuleList(Array.from({ length: n }, () => new (class extends Module {
      qkv = this.child('qkv', new Linear(c, 3 * c));
    })())));
  }
  forward(x: Tensor): Tensor {
    let h = x;
    for (const b of this.blocks.items) h = (b.getChild('qkv') as Linear | AdapterLayer).forward(h).narrow(3, 0, h.shape[3]);
    return h;
  }
}

function randomizeAdapters(m: Module): void {
  noGrad(() => { for (const [n, p] of m.namedParameters()) if (!/qkv\.(weight|bias)$/.test(n)) p.copy_(randn(p.shape).mul(0.3)); });
}

test('trainable parameter counts on SAM ViT-B equal the arithmetic, per method', (t) => {
  for (const [name, expect] of [
    ['lora', 12 * 4 * (768 + 2304)],  // 147,456
    // NAS-LoRA r=4, default ops: A+B, α (8), conv 1×1/3×3/5×5/dil3/dil5 (r²·(1+9+25+9+25))
    ['nas-lora', 12 * (4 * (768 + 2304) + 8 + 16 * (1 + 9 + 25 + 9 + 25))],
    // NAS-PC-LoRA K=2: the cell has ⌈4/2⌉ = 2 channels
    ['nas-pc-lora', 12 * (4 * (768 + 2304) + 8 + 4 * (1 + 9 + 25 + 9 + 25))],
    // Conv-LoRA r=4, 4 experts: gate + noise (2·r·M), experts r·r·9 + r each
    ['conv-lora', 12 * (4 * (768 + 2304) + 2 * 4 * 4 + 4 * (16 * 9 + 4))],
  ] as const) {
    const sam = Sam.fromConfig(SAM_PRESETS.vit_b);
    const layers = injectAdapters(sam, cfg(name, { targets: DEFAULT_TARGETS }));
    assert.equal(layers.length, 12);
    setTrainable(sam, ['lora', 'ops', 'alpha']);
    const n = countByPart(sam).reduce((s, c) => s + c.trainable, 0);
    t.diagnostic(`${name}: ${n.toLocaleString('en-US')} trainable adapter parameters on ViT-B (r=4)`);
    assert.equal(n, expect, `${name}: ${n} trainable vs ${expect}`);
    sam.dispose();
  }
  assert.equal(getMethod('decoder-only').createLayer, undefined);
});

test('LoRA (fused and q/v-only) merges exactly; unmerge restores W0', () => tidy(() => {
  for (const qv of [false, true]) {
    manualSeed(1);
    const m = new Blocks(2, 16);
    const layers = injectAdapters(m, cfg('lora', { qv_only: qv }));
    randomizeAdapters(m);
    m.eval();
    const x = randn([2, 5, 6, 16]);
    const w0 = (layers[0].layer.base.weight).clone();
    const before = m.forward(x);
    for (const { layer } of layers) layer.merge();
    const after = m.forward(x);
    assert.ok(maxRelErr(after, before) <= 1e-5, `qv_only=${qv}: merged differs by ${maxRelErr(after, before)}`);
    for (const { layer } of layers) layer.unmerge();
    assert.ok(maxRelErr(layers[0].layer.base.weight, w0) <= 1e-6);
    m.dispose();
  }
}));

test('NAS cell: discretized = arg-max op alone; re-parameterized = α-weighted sum; merge when per-token', () => tidy(() => {
  manualSeed(2);
  const m = new Blocks(1, 12);
  const [{ layer }] = injectAdapters(m, cfg('nas-lora'));
  randomizeAdapters(m);
  m.eval();
  const nas = layer as NasLoraLayer;
  const cell = nas.cells()[0];
  const z = randn([3, 4, 7, 5]);  // (B, r, H, W)
  // Re-parameterized cell equals the α-weighted sum of its ops.
  const mixed = cell.forward(z);
  cell.reparameterize();
  assert.ok(maxRelErr(cell.forward(z), mixed) <= 1e-5, 'reparameterized cell differs');
  cell.reparam = null;
  // Discretized: equals the arg-max op alone.
  const w = cell.weights();
  const best = cell.candidates[w.indexOf(Math.max(...w))];
  assert.equal(cell.discretize(), best.name);
  assert.ok(maxRelErr(cell.forward(z), best.apply(z, cell.ops.get(best.name)!)) <= 1e-6);
  assert.equal(cell.alpha.requiresGrad, false);
  m.dispose();

  // A cell discretized to conv_1x1 (or skip) merges exactly into W0.
  for (const op of ['conv_1x1', 'skip']) {
    manualSeed(3);
    const mm = new Blocks(2, 12);
    const layers = injectAdapters(mm, cfg('nas-pc-lora', { pc_k: 2 }));
    randomizeAdapters(mm);
    for (const { cell: c } of nasCells(layers)) {
      noGrad(() => c.alpha.copy_(tensor(c.candidates.map((o) => (o.name === op ? 5 : 0)))));
      c.discretize();
    }
    mm.eval();
    const x = randn([2, 4, 4, 12]);
    const before = mm.forward(x);
    for (const { layer: l } of layers) { assert.ok(l.mergeable()); l.merge(); }
    assert.ok(maxRelErr(mm.forward(x), before) <= 1e-5, `${op}: merged NAS-PC-LoRA differs`);
    mm.dispose();
  }
}));

test('NAS-PC-LoRA with K=1 equals NAS-LoRA', () => tidy(() => {
  manualSeed(4);
  const a = new Blocks(1, 8);
  const b = new Blocks(1, 8);
  injectAdapters(a, cfg('nas-lora'));
  injectAdapters(b, cfg('nas-pc-lora', { pc_k: 1 }));
  randomizeAdapters(a);
  b.loadStateDict(a.stateDict());
  const x = randn([2, 5, 5, 8]);
  assert.ok(maxRelErr(b.forward(x), a.forward(x)) === 0);
  a.dispose(); b.dispose();
}));

test('gradients reach α only when unfrozen, and nothing frozen', () => tidy(() => {
  manualSeed(5);
  const m = new Blocks(2, 8);
  const layers = injectAdapters(m, cfg('nas-lora'));
  randomizeAdapters(m);
  const x = randn([1, 4, 4, 8]);
  for (const alphaOn of [false, true]) {
    setTrainable(m, alphaOn ? ['lora', 'ops', 'alpha'] : ['lora', 'ops']);
    for (const p of m.parameters()) p.grad = null;
    m.forward(x).square().sum().backward();
    for (const [n, p] of m.namedParameters()) {
      const g = p.grad;
      if (/qkv\.(weight|bias)$/.test(n) || (/alpha$/.test(n) && !alphaOn)) assert.equal(g, null, `${n} got a gradient while frozen`);
      else assert.ok(g && g.abs().sum().item() > 0, `${n} got no gradient`);
    }
  }
  assert.equal(nasCells(layers).length, 2);
  m.dispose();
}));

const pyName = (n: string) => n.replace(/^adapter\./, '').replace('lora_A', 'A').replace('lora_B', 'B').replace(/^cell\./, '').replace(/^moe\./, '');

for (const c of [
  { method: 'nas-lora', k: 1, train: true },
  { method: 'nas-pc-lora', k: 2, train: true },
  { method: 'conv-lora', k: 1, train: false },
  { method: 'conv-lora', k: 1, train: true },
]) {
  test(`${c.method}${c.k > 1 ? ` K=${c.k}` : ''}${c.method === 'conv-lora' ? (c.train ? ' (training, noisy gate)' : ' (eval)') : ''} matches the PyTorch reference: outputs and gradients within 1e-5`, (t) => tidy(() => {
    manualSeed(11);
    const C = 8, r = 4;
    const holder = new Blocks(1, C);
    const [{ layer }] = injectAdapters(holder, cfg(c.method, { rank: r, pc_k: c.k }));
    randomizeAdapters(holder);
    layer.train(c.train);
    const x = randn([6, 5, 7, C]).requiresGrad_(true);
    const g = randn([6, 5, 7, 3 * C]);
    const noise = randn([6, 4]);
    if (layer instanceof ConvLoraLayer) (layer.branches[0] as unknown as { moe: { noise: () => Tensor } }).moe.noise = () => noise;
    const ts = new Map<string, RawTensor>([['base.weight', raw(layer.base.weight)], ['base.bias', raw(layer.base.bias!)], ['x', raw(x)], ['g', raw(g)], ['noise', raw(noise)]]);
    for (const [n, p] of layer.adapterParameters()) ts.set(`m.${pyName(n)}`, raw(p));
    const ref = runPyRef('adapter_ref.py', ts, [JSON.stringify({ method: c.method, C, O: 3 * C, r, ops: DEFAULT_OPS, k: c.k, cell_ch: Math.ceil(r / c.k), alpha: 8, experts: 4, train: c.train })]);
    if (!ref) { t.skip('PyTorch (/usr/bin/python3 with torch) is not installed'); return; }
    const out = layer.forward(x);
    let loss = out.mul(g).sum();
    const aux = layer instanceof ConvLoraLayer ? layer.auxLoss() : null;
    if (aux) loss = loss.add(aux);
    loss.backward();
    const check = (name: string, mine: Tensor, refName: string) => {
      const e = maxRelErr(mine, fromRaw(ref.get(refName)!));
      assert.ok(e <= 1e-5, `${name}: relative error ${e}`);
    };
    check('output', out, 'out');
    if (aux) check('aux loss', aux.reshape(1), 'aux');
    check('grad x', x.grad!, 'grad.x');
    for (const [n, p] of layer.adapterParameters()) {
      const refG = ref.get(`grad.${pyName(n)}`);
      const mine = p.grad;
      if (!refG) { assert.ok(!mine || mine.abs().max().item() === 0, `${n}: gradient where PyTorch has none`); continue; }
      check(`grad ${n}`, mine!, `grad.${pyName(n)}`);
    }
    holder.dispose();
  }));
}

test('adapter save/load round-trips exactly (search, discretized, re-parameterized); bad files get clear errors', () => tidy(() => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-adapter-'));
  try {
    for (const state of ['search', 'discretized', 'reparameterized'] as const) {
      manualSeed(21);
      const a = new Blocks(2, 8);
      const c = cfg('nas-pc-lora', { pc_k: 2 });
      const layers = injectAdapters(a, c);
      randomizeAdapters(a);
      for (const { cell } of nasCells(layers)) {
        if (state !== 'search') cell.discretize();
        if (state === 'reparameterized') cell.reparameterize();
      }
      setTrainable(a, ['lora', 'ops', 'alpha']);
      a.eval();
      const x = randn([2, 4, 5, 8]);
      const want = a.forward(x);
      const d = path.join(dir, state);
      saveAdapter(d, a, c, { baseSha256: 'ab'.repeat(32) });
      const b = new Blocks(2, 8);
      noGrad(() => { for (const [n, p] of b.namedParameters()) p.copy_(a.stateDict().get(n)!); });  // same base weights
      const { layers: lb } = loadAdapter(d, b, { baseSha256: 'ab'.repeat(32) });
      b.eval();
      assert.equal(maxRelErr(b.forward(x), want), 0, `${state}: loaded adapter differs`);
      assert.deepEqual(nasCells(lb).map((q) => q.cell.describe().state), nasCells(layers).map((q) => q.cell.describe().state));
      // Wrong base, wrong shapes, unknown method.
      assert.throws(() => loadAdapter(d, new Blocks(2, 8), { baseSha256: 'cd'.repeat(32) }), /different base checkpoint/);
      assert.throws(() => loadAdapter(d, new Blocks(2, 16)), /does not fit this model: .*shape/);
      a.dispose(); b.dispose();
    }
    const cfgFile = path.join(dir, 'search', 'adapter_config.json');
    const j = JSON.parse(fs.readFileSync(cfgFile, 'utf8'));
    j.method.name = 'mystery';
    fs.writeFileSync(cfgFile, JSON.stringify(j));
    assert.throws(() => loadAdapter(path.join(dir, 'search'), new Blocks(2, 8)), /unknown adapter method 'mystery'/);
    fs.writeFileSync(path.join(dir, 'search', 'adapter.safetensors'), 'garbage');
    j.method.name = 'nas-pc-lora';
    fs.writeFileSync(cfgFile, JSON.stringify(j));
    assert.throws(() => loadAdapter(path.join(dir, 'search'), new Blocks(2, 8)), /not a valid safetensors file/);
    assert.throws(() => loadAdapter(path.join(dir, 'nothing'), new Blocks(2, 8)), /not a naslora adapter folder/);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}));

test('merging refuses cells that keep a spatial branch, naming them', () => tidy(() => {
  const m = new Blocks(2, 8);
  const layers = injectAdapters(m, cfg('nas-lora'));
  assert.throws(() => mergeAll(layers), /blocks\.0\.qkv, blocks\.1\.qkv/);
  const c = new Blocks(1, 8);
  assert.throws(() => mergeAll(injectAdapters(c, cfg('conv-lora'))), /keep a spatial branch/);
  m.dispose(); c.dispose();
}));

test('search-mode conv fusion computes the same cell output and gradients as op-by-op', () => tidy(() => {
  manualSeed(31);
  const m = new Blocks(1, 8);
  const [{ layer }] = injectAdapters(m, cfg('nas-lora'));
  randomizeAdapters(m);
  const cell = (layer as NasLoraLayer).cells()[0];
  const z = randn([5, 4, 9, 7]);
  const run = (fuse: boolean) => {
    cell.fuseConvs = fuse;
    for (const p of m.parameters()) p.grad = null;
    const y = cell.forward(z);
    y.square().sum().backward();
    return { y, grads: cell.namedParameters().map(([n, p]) => [n, p.grad!] as const) };
  };
  const a = run(false);
  const b = run(true);
  assert.ok(maxRelErr(b.y, a.y) <= 1e-5);
  a.grads.forEach(([n, g], i) => assert.ok(maxRelErr(b.grads[i][1], g) <= 1e-5, `${n} gradient differs`));
  m.dispose();
}));
