// `naslora bench adapters`: the cost of each adapter method on a ViT-B-shaped SAM image encoder
// (embed 768, depth 12, 12 heads, window 14, global blocks 2/5/8/11, rel-pos) at reduced resolution,
// batch 1, rank 4 on every fused qkv, against PyTorch (bench/torch_adapters.py) in the same run.
// Default img 224 → 14×14 tokens = exactly one window, so windowed blocks do no padding work, as at
// SAM's 1024 (64 → 70 per side); at img 256 (NASLORA_BENCH_IMG=256) each windowed block pads 16×16
// tokens to four 14×14 windows, three times the real tokens, which dilutes every adapter overhead.
//
// Three sections:
//  - training cost: forward+backward of the adapted encoder (adapters trainable, the encoder frozen;
//    loss = sum of the embedding + Conv-LoRA's aux loss) against the plain frozen encoder's forward
//    (the decoder-only method: its encoder runs once without autograd);
//  - inference cost: eval-mode forward without autograd of merged and branch-keeping models against
//    the base encoder (goal for merged models: ≤ 1.01× base);
//  - the same per qkv layer (one 14×14 window, many runs): the precise per-layer overhead, which
//    the whole-encoder rows only show through the noise of a 2-core machine.
// Conv-LoRA's routing is made deterministic where it matters (map n of layer l → expert (l+n) mod 8,
// through the gate noise, identically in both twins), so both run the same experts on the same maps.
//
// Models of a section are timed round-robin (one run of each in turn), so drift hits all equally.
//
// OpenBLAS: libtorch runs 1 intra-op thread in both twins, but GEMMs go to OpenBLAS's own pthread
// pool, which on this 2-core machine runs a GEMM on one or two cores depending on the process's
// history (measured: the same 196×768×2304 linear at 7.4 ms / 1.0 core or 4.1 ms / 2.0 cores, in
// naslora and in PyTorch alike). Unless OPENBLAS_NUM_THREADS is set, the suite therefore re-runs
// itself in a child with OPENBLAS_NUM_THREADS=1, which the PyTorch twin inherits: one core each.
import { spawnSync } from 'node:child_process';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Linear, manualSeed, noGrad, randn, tensor, tidy, type Tensor } from '../src/engine/index.js';
import {
  ConvLoraBranch, DEFAULT_OPS, auxLoss, countByPart, getMethod, injectAdapters, mergeAll, nasCells, setTrainable,
  type AdapterConfig, type AdapterLayer, type InjectedLayer, type NasLoraLayer, type Part,
} from '../src/adapters/index.js';
import { Sam, SAM_PRESETS, type SamConfig } from '../src/model/sam/sam.js';
import { median, round, row, runTorch, type BenchRow } from './common.js';

const RANK = 4;
const LORA_ALPHA = 8;
const EXPERTS = 8;
export const ENCODER_CONFIG: SamConfig = { ...SAM_PRESETS.vit_b, img_size: Number(process.env.NASLORA_BENCH_IMG ?? 224) };
const TRAIN_RUNS = Number(process.env.NASLORA_BENCH_RUNS ?? 5);
const INFER_RUNS = Number(process.env.NASLORA_BENCH_RUNS ?? 9);
const LAYER_RUNS = Number(process.env.NASLORA_BENCH_RUNS ?? 15);
const LAYER_INNER = 20;

export function adapterConfig(name: string, o: Partial<AdapterConfig> = {}): AdapterConfig {
  return {
    name, rank: RANK, lora_alpha: LORA_ALPHA, dropout: 0, targets: '^image_encoder\\.blocks\\.\\d+\\.attn\\.qkv$', qv_only: false,
    ops: [...DEFAULT_OPS], alpha_init: 0, pc_k: 2, experts: EXPERTS, moe_loss_weight: 0.01, gate_noise: true, ...o,
  };
}

interface Built { sam: Sam; layers: InjectedLayer[] }

function build(method: string, seed = 0): Built {
  manualSeed(seed);
  const sam = Sam.fromConfig(ENCODER_CONFIG);
  const layers = injectAdapters(sam, adapterConfig(method));
  return { sam, layers };
}

/** Every Conv-LoRA gate of these layers routes map n of layer l to expert (l + n) mod M. */
export function cycledRouting(layers: InjectedLayer[]): void {
  layers.forEach(({ layer }, li) => {
    for (const b of layer.branches) {
      if (!(b instanceof ConvLoraBranch)) continue;
      b.moe.noise = (like: Tensor) => {
        const [n, m] = like.shape;
        const d = new Float32Array(n * m);
        for (let i = 0; i < n; i++) d[i * m + ((li + i) % m)] = 1;
        return tensor(d, [n, m]);
      };
    }
  });
}

/** Random adapter weights (B ≠ 0, α not uniform), so merges and mixes are not trivial. */
function randomizeAdapters(b: Built): void {
  noGrad(() => {
    for (const [n, p] of b.sam.namedParameters()) {
      if (/\.(adapter|q|v)\./.test(n)) p.copy_(randn(p.shape).mul(0.05));
    }
  });
}

/** α one-hot-ish on `op`, then discretize every cell (arg-max = op). */
function discretizeTo(b: Built, op: string): void {
  const cells = nasCells(b.layers);
  noGrad(() => {
    for (const { cell } of cells) {
      const i = cell.candidates.findIndex((c) => c.name === op);
      cell.alpha.fill_(0);
      cell.alpha.narrow(0, i, 1).fill_(1);
    }
  });
  for (const { cell } of cells) cell.discretize();
}

/** Trainable adapter parameters (A/B, cell ops or experts and gate, α) as the model stands. */
function adapterParams(b: Built): number {
  return countByPart(b.sam).filter((c) => c.part === 'lora' || c.part === 'ops' || c.part === 'alpha').reduce((s, c) => s + c.trainable, 0);
}

interface Case { name: string; fn: () => unknown }

/** Median ms per case, the cases run round-robin (`warmup` rounds untimed), each run its own tidy. */
function roundRobin(cases: Case[], runs: number, warmup = 1, inner = 1): Map<string, number> {
  const ts = new Map<string, number[]>(cases.map((c) => [c.name, []]));
  for (let r = 0; r < warmup + runs; r++) {
    for (const c of cases) {
      const t0 = process.hrtime.bigint();
      tidy(() => { for (let i = 0; i < inner; i++) c.fn(); });
      const ms = Number(process.hrtime.bigint() - t0) / 1e6 / inner;
      if (r >= warmup) ts.get(c.name)!.push(ms);
    }
  }
  return new Map([...ts].map(([k, v]) => [k, median(v)]));
}

const PARTS: Record<string, Part[]> = {
  lora: ['lora'], 'nas-lora': ['lora', 'ops', 'alpha'], 'nas-pc-lora': ['lora', 'ops', 'alpha'], 'conv-lora': ['lora', 'ops'],
};

/**
 * Runs a compiled bench module as `node <file> <flag>` with OPENBLAS_NUM_THREADS=1 (PyTorch twins it
 * starts inherit it) and returns the {"rows": [...]} it prints last on stdout.
 */
export function rowsFromOneBlasChild(file: string, flag: string): BenchRow[] {
  const r = spawnSync(process.execPath, [file, flag], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, OPENBLAS_NUM_THREADS: '1' },
  });
  if (r.status !== 0) throw new Error(`${path.basename(file)} ${flag} failed with status ${r.status}`);
  const lines = r.stdout.trim().split('\n');
  return (JSON.parse(lines[lines.length - 1]) as { rows: BenchRow[] }).rows;
}

const SELF = fileURLToPath(import.meta.url);
const CHILD_FLAG = '--bench-adapters-child';

export async function benchAdapters(): Promise<BenchRow[]> {
  if (process.env.OPENBLAS_NUM_THREADS === undefined) return rowsFromOneBlasChild(SELF, CHILD_FLAG);
  return measureAdapters();
}

function measureAdapters(): BenchRow[] {
  const torch = runTorch('torch_adapters.py', ['--img', String(ENCODER_CONFIG.img_size), '--train-runs', String(TRAIN_RUNS), '--infer-runs', String(INFER_RUNS), '--layer-runs', String(LAYER_RUNS)]);
  const rows: BenchRow[] = [];
  manualSeed(1);
  const img = randn([1, 3, ENCODER_CONFIG.img_size, ENCODER_CONFIG.img_size]).keep();

  // ---- training cost: forward+backward of the adapted encoder vs the frozen encoder's forward
  {
    const frozen = build('decoder-only');
    frozen.sam.eval();
    setTrainable(frozen.sam, []);
    const cases: Case[] = [{ name: 'frozen_encoder_fwd', fn: () => noGrad(() => frozen.sam.image_encoder.forward(img)) }];
    const models = new Map<string, Built>();
    const params = new Map<string, number>([['frozen_encoder_fwd', 0]]);
    for (const m of ['lora', 'nas-lora', 'nas-pc-lora', 'conv-lora']) {
      const b = build(m);
      b.sam.train();
      cycledRouting(b.layers);
      setTrainable(b.sam, PARTS[m]);
      params.set(`${m}_fwd_bwd`, adapterParams(b));
      const trainable = b.sam.parameters().filter((p) => p.requiresGrad);
      models.set(m, b);
      cases.push({
        name: `${m}_fwd_bwd`,
        fn: () => {
          for (const p of trainable) p.grad = null;
          const y = b.sam.image_encoder.forward(img).sum();
          const aux = auxLoss(b.layers);
          (aux ? y.add(aux) : y).backward();
        },
      });
    }
    // The fix stage of NAS-LoRA: cells discretized (here to conv_3x3), α and the other ops frozen.
    const fix = build('nas-lora');
    fix.sam.train();
    discretizeTo(fix, 'conv_3x3');
    setTrainable(fix.sam, ['lora', 'ops']);
    for (const { cell } of nasCells(fix.layers)) cell.discretize();  // keeps α and unused ops frozen
    params.set('nas-lora_fix_conv_3x3_fwd_bwd', adapterParams(fix));
    const fixTrainable = fix.sam.parameters().filter((p) => p.requiresGrad);
    cases.push({
      name: 'nas-lora_fix_conv_3x3_fwd_bwd',
      fn: () => { for (const p of fixTrainable) p.grad = null; fix.sam.image_encoder.forward(img).sum().backward(); },
    });
    const ms = roundRobin(cases, TRAIN_RUNS);
    const base = ms.get('frozen_encoder_fwd')!;
    for (const c of cases) {
      rows.push(row(c.name, ms.get(c.name)!, torch, {
        vs_frozen_fwd: round(ms.get(c.name)! / base, 3),
        adapter_params: params.get(c.name)!,
        note: c.name === 'frozen_encoder_fwd' ? 'decoder-only: plain frozen SAM encoder, no autograd' : '',
      }));
    }
    for (const b of [frozen, fix, ...models.values()]) b.sam.dispose();
  }

  // ---- inference cost: eval forward without autograd vs the base encoder
  {
    const variants: Array<{ name: string; b: Built; note: string }> = [];
    const add = (name: string, b: Built, note: string) => { b.sam.eval(); variants.push({ name, b, note }); };
    add('infer_base', build('decoder-only'), 'plain SAM encoder');
    const loraUn = build('lora');
    randomizeAdapters(loraUn);
    add('infer_lora_unmerged', loraUn, 'A→B branch kept');
    const loraM = build('lora');
    randomizeAdapters(loraM);
    mergeAll(loraM.layers);
    add('infer_lora_merged', loraM, 'W0 += s·B·A');
    const nas1 = build('nas-lora');
    randomizeAdapters(nas1);
    discretizeTo(nas1, 'conv_1x1');
    mergeAll(nas1.layers);
    add('infer_nas-lora_conv_1x1_merged', nas1, 'discretized to conv_1x1, W0 += s·B·M·A');
    const nas3 = build('nas-lora');
    randomizeAdapters(nas3);
    discretizeTo(nas3, 'conv_3x3');
    add('infer_nas-lora_conv_3x3', nas3, 'discretized to conv_3x3: thin A→conv→B branch kept');
    const nasR = build('nas-lora');
    randomizeAdapters(nasR);
    for (const { cell } of nasCells(nasR.layers)) cell.reparameterize();
    add('infer_nas-lora_search_reparam', nasR, 'search cell re-parameterized: one 9×9 conv + avg + max pool');
    const nasS = build('nas-lora');
    randomizeAdapters(nasS);
    add('infer_nas-lora_search', nasS, 'search cell as trained: all 8 ops');
    const convC = build('conv-lora');
    randomizeAdapters(convC);
    cycledRouting(convC.layers);
    add('infer_conv-lora_cycled', convC, 'experts cycled 1..8 over maps (gate in train mode: +noise, +aux loss)');
    for (const { layer } of convC.layers) for (const br of layer.branches) (br as ConvLoraBranch).moe.train();

    const cases = variants.map((v) => ({ name: v.name, fn: () => noGrad(() => v.b.sam.image_encoder.forward(img)) }));
    const ms = roundRobin(cases, INFER_RUNS, 2);
    const base = ms.get('infer_base')!;
    for (const v of variants) {
      rows.push(row(v.name, ms.get(v.name)!, torch, { vs_base: round(ms.get(v.name)! / base, 4), note: v.note }));
      v.b.sam.dispose();
    }
  }
  img.dispose();

  // ---- per qkv layer: one window's worth of tokens, eval, no autograd
  {
    const T = Math.min(ENCODER_CONFIG.window_size, ENCODER_CONFIG.img_size / ENCODER_CONFIG.patch_size);
    manualSeed(2);
    const x = randn([1, T, T, ENCODER_CONFIG.embed_dim]).keep();
    const dim = ENCODER_CONFIG.embed_dim;
    const layer = (m: string, prep: (l: AdapterLayer) => void = () => {}): AdapterLayer => {
      const l = getMethod(m).createLayer!(new Linear(dim, 3 * dim), adapterConfig(m));
      noGrad(() => { for (const [, p] of l.adapterParameters()) p.copy_(randn(p.shape).mul(0.05)); });
      l.eval();
      prep(l);
      return l;
    };
    const toOp = (op: string) => (l: AdapterLayer) => {
      for (const cell of (l as NasLoraLayer).cells()) {
        noGrad(() => { cell.alpha.fill_(0); cell.alpha.narrow(0, cell.candidates.findIndex((c) => c.name === op), 1).fill_(1); });
        cell.discretize();
      }
    };
    const plain = new Linear(dim, 3 * dim);
    const mods: Array<{ name: string; m: { forward(x: Tensor): Tensor; dispose(): void } }> = [
      { name: 'qkv_base', m: plain },
      { name: 'qkv_lora_merged', m: layer('lora', (l) => l.merge()) },
      { name: 'qkv_nas-lora_conv_1x1_merged', m: layer('nas-lora', (l) => { toOp('conv_1x1')(l); l.merge(); }) },
      { name: 'qkv_lora_unmerged', m: layer('lora') },
      { name: 'qkv_nas-lora_conv_3x3', m: layer('nas-lora', toOp('conv_3x3')) },
    ];
    const ms = roundRobin(mods.map(({ name, m }) => ({ name, fn: () => noGrad(() => m.forward(x)) })), LAYER_RUNS, 2, LAYER_INNER);
    const base = ms.get('qkv_base')!;
    for (const { name, m } of mods) {
      rows.push(row(name, ms.get(name)!, torch, { vs_base: round(ms.get(name)! / base, 4), note: name === 'qkv_base' ? `qkv Linear ${dim}→${3 * dim} on ${T}×${T} tokens` : '' }));
      m.dispose();
    }
    x.dispose();
  }
  return rows;
}

if (process.argv[2] === CHILD_FLAG && path.resolve(process.argv[1] ?? '') === SELF) {
  process.stdout.write(JSON.stringify({ rows: measureAdapters() }) + '\n');
}
