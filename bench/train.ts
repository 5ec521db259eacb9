// `naslora bench train`: training cost per method on one small prompt-free SAM configuration
// (img 128, patch 16 → 8×8 tokens, embed 192, depth 4, 3 heads, window 4, global blocks 1 and 3,
// decoder dim 64; rank 3 / lora_alpha 32 as the presets; batch 4, structure loss, AdamW, clip 1.0).
//
//  - step_*: ms per training step (median of the timed steps after warm-up steps), peak RSS and the
//    engine's peak tensor bytes. Each method runs in its own child process (maxRSS is monotone per
//    process); its PyTorch twin (bench/torch_train.py, test/py/sam_ref.py + the layers of
//    bench/torch_adapter_layers.py) runs right after it, also in its own process. Conv-LoRA routing
//    is cycled identically in both (bench/adapters.ts, cycledRouting). As bench adapters, the suite
//    runs with OPENBLAS_NUM_THREADS=1 (re-run in a child unless set; see bench/adapters.ts);
//    naslora_default_blas_ms is the same step with OpenBLAS's default thread pool, for reference.
//  - schedule_*: NAS-LoRA's full stage-wise schedule (warm-up 20 % / search 40 % with α, joint mode /
//    fix 40 % discretized to the arg-max ops) against Conv-LoRA for the same synthetic data and number
//    of steps, both through runTraining (pretrained 'none', a JSON model config in a temp dir).
//    Training time = the trainer's clock at the last step (data, steps, logging and checkpoints; the
//    final evaluation excluded); per-stage step times are medians of the per-step clock differences.
//    LoRA runs the same way (one stage 'train'). Each method runs SCHEDULE_REPEATS times in child
//    processes, alternating; medians are reported.
//  - schedule_nas-lora_vs_conv-lora / schedule_nas-lora_vs_lora: method against method, both naslora.
//    In these rows naslora_ms = NAS-LoRA's schedule time, baseline_ms = the other method's schedule
//    time (Conv-LoRA / LoRA), ratio = naslora_ms ÷ baseline_ms (< 1: NAS-LoRA's schedule is cheaper);
//    torch_ms is null (no PyTorch run; the ratio is NOT naslora ÷ PyTorch there).
//
// Grids: `--grid all` (default; or NASLORA_BENCH_GRID) runs the rows above and the large_* rows below,
// `--grid small` only the rows above (~2 min on 2 cores), `--grid large` only the large_* rows (~3 min):
//  - large_step_*: the step rows at a token grid where Conv-LoRA's upsampled experts cost what they
//    cost at real resolution: ViT-B width (embed 768, 12 heads, window 14, rel-pos, ViT-B's decoder)
//    at img 512, patch 16 → 32×32 tokens (windowed blocks pad to 42×42 = 3×3 windows of 14×14), but
//    only NASLORA_BENCH_LARGE_DEPTH blocks (default 2: block 0 windowed, the last one global; at
//    depth ≥ 4 every 4th block is global as in ViT-B), batch NASLORA_BENCH_LARGE_BATCH (default 2),
//    NASLORA_BENCH_LARGE_STEPS timed steps (default 3) after 1 warm-up step; the same PyTorch twins
//    (ratio = naslora ÷ PyTorch), no default-BLAS rerun (steps take seconds).
//  - large_schedule_estimate_nas-lora_vs_conv-lora / _vs_lora: NOT a measured schedule (a large-grid
//    schedule would take many minutes) but an ESTIMATE from the step times above: naslora_ms = Σ over
//    the nas-lora preset's stages of share × that stage's step time (warm-up → the warm-up step,
//    α-optimizing stages → the search step, stages at/after a discretize → the conv_3x3 fix step),
//    baseline_ms = Conv-LoRA's / LoRA's step time, ratio = naslora_ms ÷ baseline_ms. It leaves out
//    everything but steps (data, evaluation, checkpoints) and assumes the fix stage derives conv_3x3.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Adam, AdamW, clipGradNorm, manualSeed, memory, noGrad, randn, resetPeakMemory, tensor, tidy } from '../src/engine/index.js';
import { auxLoss, countByPart, injectAdapters, nasCells, partOf, setTrainable, type Part } from '../src/adapters/index.js';
import { Sam, SAM_PRESETS, type SamConfig } from '../src/model/sam/sam.js';
import { segmentLogits } from '../src/model/sam/segment.js';
import { parseConfig, PRESETS, type MethodName } from '../src/train/config.js';
import { runTraining } from '../src/train/run.js';
import { silentProgress } from '../src/train/progress.js';
import { structureLoss } from '../src/train/losses.js';
import { upsampleLogits } from '../src/train/trainer.js';
import { adapterConfig, cycledRouting, rowsFromOneBlasChild } from './adapters.js';
import { median, round, runTorch, type BenchRow } from './common.js';

export const SMALL_SAM: SamConfig = {
  img_size: 128, patch_size: 16, embed_dim: 192, depth: 4, num_heads: 3, mlp_ratio: 4, window_size: 4, global_attn_indexes: [1, 3],
  prompt_embed_dim: 64, mask_in_chans: 16, decoder_depth: 2, decoder_mlp_dim: 256, decoder_heads: 8, iou_head_hidden_dim: 64,
};
const RANK = 3;
const LORA_ALPHA = 32;
const BATCH = 4;
const STEPS = Number(process.env.NASLORA_BENCH_STEPS ?? 15);
const WARMUP = 3;
const SCHEDULE_STEPS = Number(process.env.NASLORA_BENCH_SCHEDULE_STEPS ?? 60);
const SCHEDULE_REPEATS = Number(process.env.NASLORA_BENCH_SCHEDULE_REPEATS ?? 2);
const FIX_OP = 'conv_3x3';
const SCHEDULE_LR = Number(process.env.NASLORA_BENCH_SCHEDULE_LR ?? 3e-3);

type Grid = 'small' | 'large';
/** Which grids `bench train` measures: small, large, or all (default). */
const GRIDS: Grid[] = (() => {
  const g = process.env.NASLORA_BENCH_GRID ?? 'all';
  if (g === 'small' || g === 'large') return [g];
  if (g === 'all') return ['small', 'large'];
  throw new Error(`NASLORA_BENCH_GRID / --grid must be small, large or all (got '${g}')`);
})();
const LARGE_DEPTH = Number(process.env.NASLORA_BENCH_LARGE_DEPTH ?? 2);
if (!(LARGE_DEPTH >= 2)) throw new Error('NASLORA_BENCH_LARGE_DEPTH must be ≥ 2 (one windowed and one global block at least)');
/** ViT-B width at img 512 (32×32 tokens, windowed blocks padded to 3×3 windows of 14×14), few blocks:
 *  every 4th block global as in ViT-B, and always the last one. */
export const LARGE_SAM: SamConfig = {
  ...SAM_PRESETS.vit_b, img_size: 512, depth: LARGE_DEPTH,
  global_attn_indexes: Array.from({ length: LARGE_DEPTH }, (_, i) => i).filter((i) => i % 4 === 3 || i === LARGE_DEPTH - 1),
};

interface GridSetup { sam: SamConfig; batch: number; steps: number; warmup: number }
const GRID_SETUP: Record<Grid, GridSetup> = {
  small: { sam: SMALL_SAM, batch: BATCH, steps: STEPS, warmup: WARMUP },
  large: {
    sam: LARGE_SAM, batch: Number(process.env.NASLORA_BENCH_LARGE_BATCH ?? 2),
    steps: Number(process.env.NASLORA_BENCH_LARGE_STEPS ?? 3), warmup: 1,
  },
};

// Step variants timed by stepChild: 'search_gumbel' = a Gumbel-sampled search step (one op per cell),
// 'fix_folded' = the fix stage with cells discretized to skip and folded into lora_B (what the
// preset's fold_fix does for per-token ops). Add an entry to CASES for a new one
// (and a PyTorch twin only if bench/torch_train.py learns the same variant).
type Variant = 'train' | 'warmup' | 'search' | 'search_gumbel' | 'fix' | 'fix_folded';
interface StepSpec { mode: 'step'; name: string; method: MethodName; variant: Variant; grid: Grid }
interface ScheduleSpec { mode: 'schedule'; method: MethodName; dir: string }
type ChildSpec = StepSpec | ScheduleSpec;

interface StepResult { ms: number; maxRssMb: number; enginePeakMb: number; trainable: number }
interface ScheduleResult { totalMs: number; steps: number; stageMs: Record<string, number>; stageSteps: Record<string, number>; derived: string | null; finalDice: number | null }

/** Step cases: method, variant and row suffix; the small grid has them all, the large grid all but NAS-PC-LoRA. */
const CASES: Array<{ method: MethodName; variant: Variant; suffix: string; largeToo: boolean }> = [
  { method: 'decoder-only', variant: 'train', suffix: 'decoder-only', largeToo: true },
  { method: 'lora', variant: 'train', suffix: 'lora', largeToo: true },
  { method: 'conv-lora', variant: 'train', suffix: 'conv-lora', largeToo: true },
  { method: 'nas-lora', variant: 'warmup', suffix: 'nas-lora_warmup', largeToo: true },
  { method: 'nas-lora', variant: 'search', suffix: 'nas-lora_search', largeToo: true },
  { method: 'nas-lora', variant: 'fix', suffix: `nas-lora_fix_${FIX_OP}`, largeToo: true },
  { method: 'nas-lora', variant: 'search_gumbel', suffix: 'nas-lora_search_gumbel', largeToo: true },
  { method: 'nas-lora', variant: 'fix_folded', suffix: 'nas-lora_fix_skip_folded', largeToo: true },
  { method: 'nas-pc-lora', variant: 'search', suffix: 'nas-pc-lora_search', largeToo: false },
];
const STEP_CASES: StepSpec[] = CASES.map((c) => ({ mode: 'step', name: `step_${c.suffix}`, method: c.method, variant: c.variant, grid: 'small' }));
const LARGE_CASES: StepSpec[] = CASES.filter((c) => c.largeToo).map((c) => ({ mode: 'step', name: `large_step_${c.suffix}`, method: c.method, variant: c.variant, grid: 'large' }));
/** Rows with a PyTorch twin. */
const TORCH_TWINS = new Set(['decoder-only', 'lora', 'conv-lora', 'nas-lora_search', `nas-lora_fix_${FIX_OP}`]
  .flatMap((n) => [`step_${n}`, `large_step_${n}`]));

const thisFile = fileURLToPath(import.meta.url);
const CHILD_FLAG = '--bench-train-child';

function runChild<T>(spec: ChildSpec, env: NodeJS.ProcessEnv = process.env): T {
  const r = spawnSync(process.execPath, [thisFile, CHILD_FLAG, JSON.stringify(spec)], {
    encoding: 'utf8', stdio: ['ignore', 'pipe', 'inherit'], maxBuffer: 16 * 1024 * 1024, env,
  });
  if (r.status !== 0) throw new Error(`bench train child (${JSON.stringify(spec)}) failed with status ${r.status}`);
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as T;
}

function stageParts(method: MethodName, variant: Variant): Part[] {
  const base: Part[] = method === 'decoder-only' ? ['decoder'] : method === 'lora' ? ['lora', 'decoder'] : ['lora', 'ops', 'decoder'];
  return variant === 'search' || variant === 'search_gumbel' ? [...base, 'alpha'] : base;
}

/** One method's training step, timed in this (child) process. */
function stepChild(s: StepSpec): StepResult {
  const g = GRID_SETUP[s.grid];
  manualSeed(0);
  const sam = Sam.fromConfig(g.sam);
  const layers = injectAdapters(sam, adapterConfig(s.method, { rank: RANK, lora_alpha: LORA_ALPHA }));
  cycledRouting(layers);
  const cells = nasCells(layers);
  const fixing = s.variant === 'fix' || s.variant === 'fix_folded';
  if (s.variant === 'search_gumbel') for (const { cell } of cells) cell.sampling = 'gumbel';
  if (fixing) {
    noGrad(() => {
      for (const { cell } of cells) {
        const i = cell.candidates.findIndex((c) => c.name === (s.variant === 'fix' ? FIX_OP : 'skip'));
        cell.alpha.fill_(0);
        cell.alpha.narrow(0, i, 1).fill_(1);
      }
    });
  }
  const parts = stageParts(s.method, s.variant);
  setTrainable(sam, parts);
  // As the trainer: discretized cells keep α and the unused ops frozen whatever the stage says.
  if (fixing) for (const { cell } of cells) cell.discretize();
  if (s.variant === 'fix_folded') for (const { branch } of cells) if (!branch.fold()) throw new Error('fix_folded: a cell did not fold');
  const named = sam.namedParameters();
  const weights = named.filter(([n, p]) => p.requiresGrad && partOf(n) !== 'alpha').map(([, p]) => p);
  const alphas = named.filter(([n, p]) => p.requiresGrad && partOf(n) === 'alpha').map(([, p]) => p);
  const opt = new AdamW(weights, { lr: 1e-4, weightDecay: 1e-4, betas: [0.9, 0.999], eps: 1e-8 });
  const alphaOpt = alphas.length ? new Adam(alphas, { lr: 3e-3, betas: [0.5, 0.999], weightDecay: 1e-3 }) : null;
  const S = g.sam.img_size;
  const n = g.batch;
  manualSeed(1);
  const images = randn([n, 3, S, S]).keep();
  const m = new Float32Array(n * S * S);
  for (let i = 0; i < n; i++) {
    for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) {
      const dy = y - S * (0.3 + 0.1 * i), dx = x - S * 0.5;
      m[(i * S + y) * S + x] = dy * dy + dx * dx < (S * 0.25) ** 2 ? 1 : 0;
    }
  }
  const masks = tensor(m, [n, 1, S, S]).keep();
  sam.train();
  const step = () => {
    opt.zeroGrad();
    alphaOpt?.zeroGrad();
    tidy(() => {
      const out = upsampleLogits(segmentLogits(sam, images, null), S);
      const l = structureLoss(out, masks);
      const aux = auxLoss(layers);
      const loss = aux ? l.add(aux) : l;
      loss.backward();
      return loss.item();
    });
    clipGradNorm(opt.allParams(), 1.0);
    opt.step();
    alphaOpt?.step();
  };
  for (let i = 0; i < g.warmup; i++) step();
  resetPeakMemory();
  const ts: number[] = [];
  for (let i = 0; i < g.steps; i++) {
    const t0 = process.hrtime.bigint();
    step();
    ts.push(Number(process.hrtime.bigint() - t0) / 1e6);
  }
  const trainable = countByPart(sam).reduce((a, c) => a + c.trainable, 0);
  return { ms: median(ts), maxRssMb: process.resourceUsage().maxRSS / 1024, enginePeakMb: memory().peakBytes / 2 ** 20, trainable };
}

/** One full run through runTraining; the step clock from its events.jsonl. */
async function scheduleChild(s: ScheduleSpec): Promise<ScheduleResult> {
  const modelConfig = path.join(s.dir, 'small_sam.json');
  if (!fs.existsSync(modelConfig)) fs.writeFileSync(modelConfig, JSON.stringify({ config: SMALL_SAM }));
  const raw = PRESETS[s.method]();
  raw.model = { config: modelConfig, checkpoint: null, pretrained: 'none' };
  raw.data = {
    ...raw.data!, dir: null, synthetic: { kind: 'target', n: 40, size: SMALL_SAM.img_size, seed: 0 },
    image_size: SMALL_SAM.img_size, batch_size: BATCH, num_workers: 2, prefetch: 2, cache: true,
  };
  raw.method = { ...raw.method!, rank: RANK, lora_alpha: LORA_ALPHA };
  // From random weights the presets' lr 1e-4 leaves Dice at 0 after 60 steps; 3e-3 (as the training
  // test) makes the runs visibly learn. Step cost does not depend on it.
  raw.optim = { ...raw.optim!, lr: SCHEDULE_LR };
  const runDir = fs.mkdtempSync(path.join(s.dir, `${s.method}-`));
  raw.train = { epochs: null, steps: SCHEDULE_STEPS, seed: 0, eval_every: SCHEDULE_STEPS, log_every: SCHEDULE_STEPS, out_dir: runDir };
  const cfg = parseConfig(raw);
  const r = await runTraining(cfg, { progress: silentProgress, runDir });
  const events = fs.readFileSync(path.join(runDir, 'events.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; stage?: string; t?: number });
  const steps = events.filter((e) => e.type === 'step');
  const byStage = new Map<string, number[]>();
  const count = new Map<string, number>();
  for (const e of steps) count.set(e.stage!, (count.get(e.stage!) ?? 0) + 1);
  steps.forEach((e, i) => {
    if (i === 0) return;  // the first step's clock includes the model's first-touch allocations
    const d = (e.t! - steps[i - 1].t!) * 1000;
    byStage.set(e.stage!, [...(byStage.get(e.stage!) ?? []), d]);
  });
  let derived: string | null = null;
  const dfile = path.join(runDir, 'derived_ops.json');
  if (fs.existsSync(dfile)) {
    const d = JSON.parse(fs.readFileSync(dfile, 'utf8')) as { derived: Record<string, unknown> };
    const c = new Map<string, number>();
    for (const v of Object.values(d.derived)) if (typeof v === 'string') c.set(v, (c.get(v) ?? 0) + 1);
    derived = [...c].map(([o, n]) => `${o}×${n}`).join(' ');
  }
  return {
    totalMs: steps[steps.length - 1].t! * 1000, steps: steps.length,
    stageMs: Object.fromEntries([...byStage].map(([k, v]) => [k, median(v)])),
    stageSteps: Object.fromEntries(count),
    derived, finalDice: r.final?.dice ?? null,
  };
}

const MAIN_FLAG = '--bench-train-main';

export async function benchTrain(): Promise<BenchRow[]> {
  if (process.env.OPENBLAS_NUM_THREADS === undefined) return rowsFromOneBlasChild(thisFile, MAIN_FLAG);
  return measureTrain();
}

function measureTrain(): BenchRow[] {
  const rows: BenchRow[] = [];
  if (GRIDS.includes('small')) {
    rows.push(...stepRows(STEP_CASES, true));
    rows.push(...scheduleRows());
  }
  if (GRIDS.includes('large')) {
    const large = stepRows(LARGE_CASES, false);
    rows.push(...large, ...largeScheduleEstimate(large));
  }
  return rows;
}

/** Step rows, each method in its own child, its PyTorch twin (if any) right after it. */
function stepRows(cases: StepSpec[], withDefaultBlas: boolean): BenchRow[] {
  const rows: BenchRow[] = [];
  for (const s of cases) {
    const g = GRID_SETUP[s.grid];
    const r = runChild<StepResult>(s);
    // The same step with OpenBLAS's default pool (what `naslora train` gets unless the variable is set).
    const { OPENBLAS_NUM_THREADS: _, ...defaultEnv } = process.env;
    const dflt = withDefaultBlas ? runChild<StepResult>(s, defaultEnv) : null;
    let torch: Record<string, number> | null = null;
    if (TORCH_TWINS.has(s.name)) {
      torch = runTorch('torch_train.py', [
        '--name', s.name, '--method', s.method, '--variant', s.variant, '--fix-op', FIX_OP, '--config', JSON.stringify(g.sam),
        '--rank', String(RANK), '--lora-alpha', String(LORA_ALPHA), '--batch', String(g.batch), '--steps', String(g.steps), '--warmup', String(g.warmup),
      ]);
    }
    const t = torch?.[s.name] ?? null;
    rows.push({
      name: s.name, naslora_ms: round(r.ms), torch_ms: t === null ? null : round(t), ratio: t ? round(r.ms / t, 3) : null,
      naslora_default_blas_ms: dflt ? round(dflt.ms) : null,
      peak_rss_mb: round(r.maxRssMb, 1), torch_peak_rss_mb: torch ? round(torch[`${s.name}:maxrss_mb`], 1) : null,
      engine_peak_mb: round(r.enginePeakMb, 1), trainable_params: r.trainable,
    });
  }
  return rows;
}

type ScheduleMethod = 'lora' | 'conv-lora' | 'nas-lora';

/** NAS-LoRA's schedule against Conv-LoRA and LoRA, same data and steps, alternating repeats. */
function scheduleRows(): BenchRow[] {
  const rows: BenchRow[] = [];
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-bench-train-'));
  try {
    const methods: ScheduleMethod[] = ['lora', 'conv-lora', 'nas-lora'];
    const res: Record<ScheduleMethod, ScheduleResult[]> = { lora: [], 'conv-lora': [], 'nas-lora': [] };
    for (let k = 0; k < SCHEDULE_REPEATS; k++) {
      for (const m of methods) res[m].push(runChild<ScheduleResult>({ mode: 'schedule', method: m, dir }));
    }
    const med = (m: ScheduleMethod, f: (r: ScheduleResult) => number) => median(res[m].map(f));
    const total = Object.fromEntries(methods.map((m) => [m, med(m, (r) => r.totalMs)])) as Record<ScheduleMethod, number>;
    const trainStep = (m: ScheduleMethod) => med(m, (r) => r.stageMs.train);
    const convStep = trainStep('conv-lora');
    const runs = (m: ScheduleMethod) => `runs (s): ${res[m].map((r) => round(r.totalMs / 1000, 2)).join('/')}; final val dice ${res[m].map((r) => r.finalDice?.toFixed(3)).join('/')}`;
    for (const m of ['conv-lora', 'lora'] as const) {
      rows.push({
        name: `schedule_${m}_${SCHEDULE_STEPS}_steps`, naslora_ms: round(total[m]), torch_ms: null, ratio: null,
        step_ms: round(trainStep(m)), reduction_pct: null, note: runs(m),
      });
    }
    const nas = total['nas-lora'];
    rows.push({
      name: `schedule_nas-lora_${SCHEDULE_STEPS}_steps`, naslora_ms: round(nas), torch_ms: null, ratio: null,
      step_ms: null, reduction_pct: round(100 * (1 - nas / total['conv-lora']), 2),
      note: `${runs('nas-lora')}; derived ${res['nas-lora'].map((r) => r.derived).join(' | ')}`,
    });
    for (const st of ['warmup', 'search', 'fix']) {
      const ms = med('nas-lora', (r) => r.stageMs[st]);
      rows.push({
        name: `schedule_nas-lora_${st}_step`, naslora_ms: round(ms), torch_ms: null, ratio: null,
        step_ms: round(ms), reduction_pct: round(100 * (1 - ms / convStep), 2),
        note: `${res['nas-lora'][0].stageSteps[st]} steps; vs Conv-LoRA step ${round(convStep, 1)} ms`,
      });
    }
    // Method against method (both naslora): ratio = NAS-LoRA ÷ baseline, torch_ms null (see the header).
    for (const m of ['conv-lora', 'lora'] as const) {
      rows.push({
        name: `schedule_nas-lora_vs_${m}`, naslora_ms: round(nas), torch_ms: null, ratio: round(nas / total[m], 3),
        baseline_ms: round(total[m]), reduction_pct: round(100 * (1 - nas / total[m]), 2),
        note: `ratio = NAS-LoRA ÷ ${m} full-schedule time (${SCHEDULE_STEPS} steps, medians of ${SCHEDULE_REPEATS}); naslora_ms = NAS-LoRA, baseline_ms = ${m}`,
      });
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return rows;
}

/**
 * Estimated (not measured) large-grid schedule cost: the nas-lora preset's stage shares weighted by
 * the large_step_nas-lora_* step times, against Conv-LoRA's and LoRA's step times.
 */
function largeScheduleEstimate(large: BenchRow[]): BenchRow[] {
  const ms = (n: string) => large.find((r) => r.name === `large_step_${n}`)?.naslora_ms ?? NaN;
  const stages = PRESETS['nas-lora']().schedule?.stages ?? [];
  let discretized = false;
  let est = 0;
  const parts: string[] = [];
  for (const st of stages) {
    discretized ||= st.discretize_at_entry ?? false;
    // The preset's sampling picks the search row; the fix stage is costed with a spatial op (FIX_OP),
    // the dearer case (a per-token op folds into lora_B and costs what step_lora costs).
    const gumbel = PRESETS['nas-lora']().schedule?.search?.sampling === 'gumbel';
    // (Gumbel cells sample one op in the warm-up too, with α still uniform.)
    const step = discretized ? `nas-lora_fix_${FIX_OP}` : gumbel ? 'nas-lora_search_gumbel' : st.optimize_alpha ? 'nas-lora_search' : 'nas-lora_warmup';
    est += st.share * ms(step);
    parts.push(`${st.share}·${step.replace('nas-lora_', '')}`);
  }
  return (['conv-lora', 'lora'] as const).map((m) => ({
    name: `large_schedule_estimate_nas-lora_vs_${m}`, naslora_ms: round(est), torch_ms: null, ratio: round(est / ms(m), 3),
    baseline_ms: ms(m), reduction_pct: round(100 * (1 - est / ms(m)), 2),
    note: `ESTIMATE from large step times, not a measured run: (${parts.join(' + ')}) ÷ ${m} step; steps only, fix op assumed ${FIX_OP}`,
  }));
}

if (path.resolve(process.argv[1] ?? '') === thisFile) {
  if (process.argv[2] === CHILD_FLAG) {
    const spec = JSON.parse(process.argv[3]) as ChildSpec;
    const out = spec.mode === 'step' ? stepChild(spec) : await scheduleChild(spec);
    process.stdout.write(JSON.stringify(out) + '\n');
  } else if (process.argv[2] === MAIN_FLAG) {
    process.stdout.write(JSON.stringify({ rows: measureTrain() }) + '\n');
  }
}
