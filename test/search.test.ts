// The architecture search: a planted answer it must find under the preset's budget, and each
// search option doing what it claims (Gumbel sampling with its straight-through α gradient,
// shrinking, β-Decay, early discretisation, dirac init, the folded fix stage, α's travel).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { Linear, Module, manualSeed, noGrad, rand, randn, tensor, tidy, type Tensor } from '../src/engine/index.js';
import { DEFAULT_OPS, MixedCell, NasLoraLayer, injectAdapters, loadAdapter, nasCells, saveAdapter, type AdapterConfig, type NasBranch } from '../src/adapters/index.js';
import { ConfigError, loadConfig, type RunConfig } from '../src/train/config.js';
import { NasSearch, planStages } from '../src/train/search.js';
import { runPlanted } from './helpers/planted.js';

const vec = (a: number[]): Tensor => tensor(Float32Array.from(a));

/** One Linear called on (B, H, W, C) token grids, named 'qkv'. */
class One extends Module {
  qkv = this.child('qkv', new Linear(12, 12));
  forward(x: Tensor): Tensor { return (this.getChild('qkv') as Linear).forward(x); }
}

function adapterCfg(name: string, o: Partial<AdapterConfig>): AdapterConfig {
  return { name, rank: 4, lora_alpha: 8, dropout: 0, targets: '^qkv$', qv_only: false, ops: [...DEFAULT_OPS], alpha_init: 0, pc_k: 2, experts: 4, moe_loss_weight: 0.01, gate_noise: true, ...o };
}

const preset = (sets: string[] = []): RunConfig => loadConfig('nas-lora', ['data.dir=unused', ...sets]);
const SPATIAL = new Set(['conv_3x3', 'conv_5x5', 'dil_conv_3x3', 'dil_conv_5x5', 'avg_pool_3x3', 'max_pool_3x3']);

test('planted answer: a 5×5-blur residual makes conv_5x5 win every cell with a clear margin under the preset budget', () => {
  for (const seed of [0, 1]) {
    const r = runPlanted(preset(), { target: 'blur5', steps: 300, seed });
    assert.deepEqual(r.derived, ['conv_5x5', 'conv_5x5', 'conv_5x5', 'conv_5x5'], `seed ${seed}: ${JSON.stringify(r.cells)}`);
    for (const m of r.margins) assert.ok(m >= 0.15, `seed ${seed}: margin ${m} (weights ${JSON.stringify(r.cells)})`);
  }
});

test('planted answer: a per-token residual picks no spatial op', () => {
  for (const seed of [0, 1]) {
    const r = runPlanted(preset(), { target: 'per-token', steps: 300, seed });
    for (const op of r.derived) assert.ok(!SPATIAL.has(op), `seed ${seed}: derived ${r.derived}`);
  }
});

test('without travel (α lr 3e-3 for the 120 search steps) the same search cannot decide: margins stay small', () => {
  const r = runPlanted(preset(['schedule.alpha_optim.travel=null']), { target: 'blur5', steps: 300 });
  for (const m of r.margins) assert.ok(m < 0.1, `margin ${m}`);
});

test('travel sets α\'s learning rate to travel ÷ search steps; τ runs linearly over the search; shrink points land in it', () => {
  const c = preset(['schedule.alpha_optim.travel=12', 'schedule.search.tau=[4, 1]', 'schedule.search.shrink=[{at: 0.5, keep: 3}]']);
  const plan = planStages(c.schedule.stages, 100);  // warm-up 0–20, search 20–60, fix 60–100
  const s = new NasSearch(c, plan, []);
  assert.equal(s.steps, 40);
  assert.equal(s.alphaLr, 12 / 40);
  assert.deepEqual([s.tau(0), s.tau(20), s.tau(40), s.tau(60), s.tau(90)], [4, 4, 2.5, 1, 1]);
  assert.deepEqual(s.shrinks, [{ step: 40, keep: 3 }]);
  assert.equal(new NasSearch(preset(['schedule.alpha_optim.travel=null']), plan, []).alphaLr, 3e-3);
});

test('gumbel sampling computes exactly one op per cell, and α gets the straight-through gradient', () => {
  manualSeed(3);
  const cell = new MixedCell(3, [...DEFAULT_OPS]);
  noGrad(() => cell.alpha.copy_(randn([DEFAULT_OPS.length])));
  cell.sampling = 'gumbel';
  cell.tau = 0.7;
  const z = randn([2, 3, 6, 6]).keep();
  const R = randn([2, 3, 6, 6]).keep();
  for (const seed of [11, 12, 13, 14]) {
    for (const p of cell.parameters()) p.grad = null;
    manualSeed(seed);
    const out = cell.forward(z);
    tidy(() => out.mul(R).sum().backward());
    // The same Gumbel draw, recomputed: y = softmax((α + g) / τ), k = argmax y.
    manualSeed(seed);
    const { y, k } = tidy(() => {
      const u = rand([DEFAULT_OPS.length]).clamp(1e-10, 1 - 1e-7);
      const yy = cell.alpha.detach().add(u.log().neg().log().neg()).div(0.7).softmax(0);
      return { y: [...yy.toArray()], k: yy.argmax().item() };
    });
    const name = DEFAULT_OPS[k];
    assert.equal(cell.lastSampled, name);
    const opOut = tidy(() => cell.candidates[k].apply(z, cell.ops.get(name)!).detach().keep());
    assert.ok(tidy(() => out.sub(opOut).abs().max().item()) < 1e-6, 'the output is the sampled op alone (value ×1)');
    // ∂L/∂α_j = ⟨R, O_k(z)⟩ · y_k (δ_kj − y_j) / τ
    const dot = tidy(() => R.mul(opOut).sum().item());
    const want = y.map((yj, j) => (dot * y[k] * ((j === k ? 1 : 0) - yj)) / 0.7);
    const got = [...cell.alpha.grad!.toArray()];
    got.forEach((g, j) => assert.ok(Math.abs(g - want[j]) <= 1e-4 * Math.max(1, Math.abs(want[j])), `α grad ${j}: ${g} vs ${want[j]}`));
    // Only the sampled op was in the graph: every other op's weights have no gradient.
    for (const [n, p] of cell.ops.namedParameters()) if (!n.startsWith(`${name}.`)) assert.equal(p.grad, null, n);
    out.dispose();
    opOut.dispose();
  }
  cell.eval();
  const w = cell.weights();
  tidy(() => cell.forward(z));
  assert.equal(cell.lastSampled, DEFAULT_OPS[w.indexOf(Math.max(...w))], 'eval mode computes the arg-max op');
  z.dispose(); R.dispose(); cell.dispose();
});

test('shrinking keeps the top ops: dropped ops weigh exactly 0, are not computed, get no gradient', () => {
  manualSeed(4);
  const cell = new MixedCell(2, [...DEFAULT_OPS]);
  const a = [0.5, -1, 2, 0.1, 1.5, -0.3, 0.7, -2];
  noGrad(() => cell.alpha.copy_(vec(a)));
  const dropped = cell.shrink(3);
  assert.deepEqual(dropped.sort(), ['conv_1x1', 'conv_5x5', 'dil_conv_5x5', 'max_pool_3x3', 'skip'].sort());
  const w = cell.weights();
  const keep = [2, 4, 6];  // conv_3x3, dil_conv_3x3, avg_pool_3x3
  const e = keep.map((i) => Math.exp(a[i]));
  const sum = e.reduce((x, y) => x + y, 0);
  w.forEach((wi, i) => assert.ok(keep.includes(i) ? Math.abs(wi - e[keep.indexOf(i)] / sum) < 1e-6 : wi === 0, `w[${i}] = ${wi}`));
  const z = randn([1, 2, 5, 5]).keep();
  cell.fuseConvs = false;
  const out = cell.forward(z);
  const ref = tidy(() => keep.map((i, j) => cell.candidates[i].apply(z, cell.ops.get(DEFAULT_OPS[i])!).mul(e[j] / sum)).reduce((x, y) => x.add(y)).detach().keep());
  assert.ok(tidy(() => out.sub(ref).abs().max().item()) < 1e-5);
  tidy(() => out.sum().backward());
  for (const [n, p] of cell.ops.namedParameters()) {
    const kept = keep.some((i) => n.startsWith(`${DEFAULT_OPS[i]}.`));
    assert.equal(p.grad !== null, kept, n);
  }
  const ga = [...cell.alpha.grad!.toArray()];
  ga.forEach((g, i) => { if (!keep.includes(i)) assert.equal(g, 0, `α grad of dropped op ${i}`); });
  cell.fuseConvs = true;
  const fused = cell.forward(z);
  assert.ok(tidy(() => fused.sub(ref).abs().max().item()) < 1e-5, 'the fused-conv path skips dropped ops too');
  for (const t of [z, out, ref, fused]) t.dispose();
  cell.dispose();
});

test('β-Decay adds weight·softmax(α) to α\'s gradient (Ye et al., CVPR 2022)', () => {
  const c = preset(['schedule.search.beta_decay=0.3']);
  manualSeed(5);
  const layer = new NasLoraLayer(new Linear(6, 6), { rank: 2, alpha: 4, dropout: 0, ops: [...DEFAULT_OPS], partialChannels: 1 });
  const cells = nasCells([{ path: 'l', layer }]);
  noGrad(() => cells[0].cell.alpha.copy_(vec([0.3, -0.2, 0.1, 0.9, -0.5, 0.2, 0.0, 0.4])));
  noGrad(() => (layer.branches[0] as NasBranch).B.weight.copy_(randn([6, 2])));
  const x = randn([2, 4, 4, 6]).keep();
  const grad = (withReg: boolean): number[] => {
    for (const p of layer.parameters()) p.grad = null;
    const s = new NasSearch(c, planStages(c.schedule.stages, 10), cells);
    tidy(() => {
      const l = layer.forward(x).square().mean();
      const r = withReg ? s.regularizer() : null;
      (r ? l.add(r) : l).backward();
    });
    return [...cells[0].cell.alpha.grad!.toArray()];
  };
  const g0 = grad(false);
  const g1 = grad(true);
  const sm = cells[0].cell.weights();
  g1.forEach((g, i) => assert.ok(Math.abs(g - g0[i] - 0.3 * sm[i]) < 1e-6, `op ${i}: ${g} − ${g0[i]} vs ${0.3 * sm[i]}`));
  x.dispose();
  layer.dispose();
});

test('dirac init: at uniform α a cell of skip and convs is the identity (up to the small noise)', () => {
  manualSeed(6);
  const ops = ['skip', 'conv_1x1', 'conv_3x3', 'conv_5x5', 'dil_conv_3x3', 'dil_conv_5x5'];
  const layer = new NasLoraLayer(new Linear(8, 8), { rank: 4, alpha: 4, dropout: 0, ops, partialChannels: 1, opsInit: 'dirac' });
  const cell = layer.cells()[0];
  const z = randn([2, 4, 7, 7]).keep();
  const d = tidy(() => cell.forward(z).sub(z).abs().max().item() / z.abs().max().item());
  assert.ok(d < 0.1, `relative deviation ${d}`);
  const def = new NasLoraLayer(new Linear(8, 8), { rank: 4, alpha: 4, dropout: 0, ops, partialChannels: 1 }).cells()[0];
  const d0 = tidy(() => def.forward(z).sub(z).abs().max().item() / z.abs().max().item());
  assert.ok(d0 > 0.3, `default init is far from the identity (${d0})`);
  z.dispose(); layer.dispose(); def.dispose();
});

test('folded fix stage: a cell discretized to skip or conv_1x1 (NAS and PC) folds into lora_B with the same output to 1e-5, and reloads folded', () => {
  for (const [op, k] of [['conv_1x1', 1], ['skip', 1], ['conv_1x1', 2], ['skip', 2]] as const) {
    manualSeed(7);
    const c = adapterCfg(k === 1 ? 'nas-lora' : 'nas-pc-lora', { pc_k: k });
    const model = new One();
    const [{ layer }] = injectAdapters(model, c);
    const br = (layer as NasLoraLayer).branches[0] as NasBranch;
    noGrad(() => {
      br.B.weight.copy_(randn(br.B.weight.shape));
      for (const [, p] of br.cell.ops.namedParameters()) p.copy_(randn(p.shape));
      br.cell.alpha.copy_(vec(DEFAULT_OPS.map((o) => (o === op ? 3 : 0))));
    });
    br.cell.discretize();
    const x = randn([2, 5, 5, 12]).keep();
    const before = tidy(() => model.forward(x).detach().keep());
    assert.equal(br.fold(), true);
    assert.equal(br.folded, true);
    const err = (t: Tensor) => tidy(() => t.sub(before).abs().max().item() / before.abs().max().item());
    const after = tidy(() => model.forward(x).detach().keep());
    assert.ok(err(after) < 1e-5, `${op} K=${k}: ${err(after)}`);
    for (const [, p] of br.cell.namedParameters()) assert.equal(p.requiresGrad, false);
    // Round trip through an adapter folder: the folded B and the flag come back, not folded twice.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-fold-'));
    saveAdapter(dir, model, c);
    const fresh = new One();
    noGrad(() => {
      (fresh.getChild('qkv') as Linear).weight.copy_(layer.base.weight);
      (fresh.getChild('qkv') as Linear).bias!.copy_(layer.base.bias!);
    });
    const loaded = loadAdapter(dir, fresh);
    const lb = nasCells(loaded.layers)[0];
    assert.equal(lb.branch.folded, true);
    assert.equal(lb.cell.derived, op);
    const again = tidy(() => fresh.forward(x).detach().keep());
    assert.ok(err(again) < 1e-5, `reloaded ${op} K=${k}: ${err(again)}`);
    fs.rmSync(dir, { recursive: true, force: true });
    for (const t of [x, before, after, again]) t.dispose();
    model.dispose(); fresh.dispose();
  }
});

test('a spatial cell does not fold', () => {
  manualSeed(8);
  const layer = new NasLoraLayer(new Linear(6, 6), { rank: 2, alpha: 4, dropout: 0, ops: [...DEFAULT_OPS], partialChannels: 1 });
  const br = layer.branches[0] as NasBranch;
  noGrad(() => br.cell.alpha.copy_(vec(DEFAULT_OPS.map((o) => (o === 'conv_3x3' ? 3 : 0)))));
  br.cell.discretize();
  assert.equal(br.fold(), false);
  assert.equal(br.folded, false);
  layer.dispose();
});

test('early discretisation: a cell that stays decided is discretised during the search and recorded as early', () => {
  const c = preset(['schedule.search.early_discretize={entropy: 0.97, patience: 5}']);
  const r = runPlanted(c, { target: 'blur5', steps: 300 });
  const early = Object.values(r.cells).filter((d) => d.early);
  assert.ok(early.length >= 1, JSON.stringify(r.cells));
  for (const d of early) {
    assert.ok(d.step > 60 && d.step < 180, `discretised at ${d.step}, inside the search (60–180)`);
    const w = Object.values(d.weights);
    const h = -w.reduce((a, x) => a + (x > 0 ? x * Math.log(x) : 0), 0) / Math.log(w.length);
    assert.ok(h < 0.97, `normalised entropy ${h} when discretised`);
  }
  // Cells that never got confident enough wait for the fix stage.
  for (const d of Object.values(r.cells).filter((x) => !x.early)) assert.equal(d.step, 180);
});

test('a narrow margin at discretisation is reported as a warning naming the cell', () => {
  const c = preset(['schedule.search.warn_margin=0.9']);
  manualSeed(9);
  const layer = new NasLoraLayer(new Linear(6, 6), { rank: 2, alpha: 4, dropout: 0, ops: [...DEFAULT_OPS], partialChannels: 1 });
  const cells = nasCells([{ path: 'blocks.0.qkv', layer }]);
  const msgs: string[] = [];
  const s = new NasSearch(c, planStages(c.schedule.stages, 10), cells, (_e, m) => msgs.push(m));
  s.discretizeAll(6);
  assert.match(msgs.join('\n'), /warning: blocks\.0\.qkv\.adapter\.cell discretized to \w+ with a margin of 0\.000/);
  assert.equal(s.state.discretized['blocks.0.qkv.adapter.cell'].margin, 0);
  layer.dispose();
});

test('search options on a method without cells are errors naming the key', () => {
  for (const [set, key] of [
    ['schedule.search.sampling=gumbel', 'schedule.search.sampling'],
    ['schedule.search.shrink=[{at: 0.5, keep: 2}]', 'schedule.search.shrink'],
    ['method.ops_init=dirac', 'method.ops_init'],
  ] as const) {
    assert.throws(() => loadConfig('lora', ['data.dir=x', set]), (e: unknown) => e instanceof ConfigError && e.message.includes(key), set);
  }
  assert.throws(() => preset(['schedule.search.shrink=[{at: 0.5, keep: 3}, {at: 0.4, keep: 2}]']), /shrink\.1: shrink points must come later/);
  assert.throws(() => preset(['schedule.search.shrink=[{at: 0.5, keep: 8}]']), /keeps 8 of 8 ops/);
});
