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
//    Each method runs SCHEDULE_REPEATS times in child processes, alternating; medians are reported.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Adam, AdamW, clipGradNorm, manualSeed, memory, noGrad, randn, resetPeakMemory, tensor, tidy } from '../src/engine/index.js';
import { auxLoss, countByPart, injectAdapters, nasCells, partOf, setTrainable, type Part } from '../src/adapters/index.js';
import { Sam, type SamConfig } from '../src/model/sam/sam.js';
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

type Variant = 'train' | 'warmup' | 'search' | 'fix';
interface StepSpec { mode: 'step'; name: string; method: MethodName; variant: Variant }
interface ScheduleSpec { mode: 'schedule'; method: MethodName; dir: string }
type ChildSpec = StepSpec | ScheduleSpec;

interface StepResult { ms: number; maxRssMb: number; enginePeakMb: number; trainable: number }
interface ScheduleResult { totalMs: number; steps: number; stageMs: Record<string, number>; stageSteps: Record<string, number>; derived: string | null; finalDice: number | null }

const STEP_CASES: StepSpec[] = [
  { mode: 'step', name: 'step_decoder-only', method: 'decoder-only', variant: 'train' },
  { mode: 'step', name: 'step_lora', method: 'lora', variant: 'train' },
  { mode: 'step', name: 'step_conv-lora', method: 'conv-lora', variant: 'train' },
  { mode: 'step', name: 'step_nas-lora_warmup', method: 'nas-lora', variant: 'warmup' },
  { mode: 'step', name: 'step_nas-lora_search', method: 'nas-lora', variant: 'search' },
  { mode: 'step', name: `step_nas-lora_fix_${FIX_OP}`, method: 'nas-lora', variant: 'fix' },
  { mode: 'step', name: 'step_nas-pc-lora_search', method: 'nas-pc-lora', variant: 'search' },
];
/** Rows with a PyTorch twin. */
const TORCH_TWINS = new Set(['step_decoder-only', 'step_lora', 'step_conv-lora', 'step_nas-lora_search', `step_nas-lora_fix_${FIX_OP}`]);

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
  return variant === 'search' ? [...base, 'alpha'] : base;
}

/** One method's training step, timed in this (child) process. */
function stepChild(s: StepSpec): StepResult {
  manualSeed(0);
  const sam = Sam.fromConfig(SMALL_SAM);
  const layers = injectAdapters(sam, adapterConfig(s.method, { rank: RANK, lora_alpha: LORA_ALPHA }));
  cycledRouting(layers);
  const cells = nasCells(layers);
  if (s.variant === 'fix') {
    noGrad(() => {
      for (const { cell } of cells) {
        const i = cell.candidates.findIndex((c) => c.name === FIX_OP);
        cell.alpha.fill_(0);
        cell.alpha.narrow(0, i, 1).fill_(1);
      }
    });
  }
  const parts = stageParts(s.method, s.variant);
  setTrainable(sam, parts);
  // As the trainer: discretized cells keep α and the unused ops frozen whatever the stage says.
  if (s.variant === 'fix') for (const { cell } of cells) cell.discretize();
  const named = sam.namedParameters();
  const weights = named.filter(([n, p]) => p.requiresGrad && partOf(n) !== 'alpha').map(([, p]) => p);
  const alphas = named.filter(([n, p]) => p.requiresGrad && partOf(n) === 'alpha').map(([, p]) => p);
  const opt = new AdamW(weights, { lr: 1e-4, weightDecay: 1e-4, betas: [0.9, 0.999], eps: 1e-8 });
  const alphaOpt = alphas.length ? new Adam(alphas, { lr: 3e-3, betas: [0.5, 0.999], weightDecay: 1e-3 }) : null;
  const S = SMALL_SAM.img_size;
  manualSeed(1);
  const images = randn([BATCH, 3, S, S]).keep();
  const m = new Float32Array(BATCH * S * S);
  for (let i = 0; i < BATCH; i++) {
    for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) {
      const dy = y - S * (0.3 + 0.1 * i), dx = x - S * 0.5;
      m[(i * S + y) * S + x] = dy * dy + dx * dx < (S * 0.25) ** 2 ? 1 : 0;
    }
  }
  const masks = tensor(m, [BATCH, 1, S, S]).keep();
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
  for (let i = 0; i < WARMUP; i++) step();
  resetPeakMemory();
  const ts: number[] = [];
  for (let i = 0; i < STEPS; i++) {
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
  const samJson = JSON.stringify(SMALL_SAM);
  for (const s of STEP_CASES) {
    const r = runChild<StepResult>(s);
    // The same step with OpenBLAS's default pool (what `naslora train` gets unless the variable is set).
    const { OPENBLAS_NUM_THREADS: _, ...defaultEnv } = process.env;
    const dflt = runChild<StepResult>(s, defaultEnv);
    let torch: Record<string, number> | null = null;
    if (TORCH_TWINS.has(s.name)) {
      torch = runTorch('torch_train.py', [
        '--name', s.name, '--method', s.method, '--variant', s.variant, '--fix-op', FIX_OP, '--config', samJson,
        '--rank', String(RANK), '--lora-alpha', String(LORA_ALPHA), '--batch', String(BATCH), '--steps', String(STEPS), '--warmup', String(WARMUP),
      ]);
    }
    const t = torch?.[s.name] ?? null;
    rows.push({
      name: s.name, naslora_ms: round(r.ms), torch_ms: t === null ? null : round(t), ratio: t ? round(r.ms / t, 3) : null,
      naslora_default_blas_ms: round(dflt.ms),
      peak_rss_mb: round(r.maxRssMb, 1), torch_peak_rss_mb: torch ? round(torch[`${s.name}:maxrss_mb`], 1) : null,
      engine_peak_mb: round(r.enginePeakMb, 1), trainable_params: r.trainable,
    });
  }

  // NAS-LoRA's schedule against Conv-LoRA, same data and steps, alternating repeats.
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-bench-train-'));
  try {
    const res: Record<'conv-lora' | 'nas-lora', ScheduleResult[]> = { 'conv-lora': [], 'nas-lora': [] };
    for (let k = 0; k < SCHEDULE_REPEATS; k++) {
      for (const m of ['conv-lora', 'nas-lora'] as const) res[m].push(runChild<ScheduleResult>({ mode: 'schedule', method: m, dir }));
    }
    const med = (m: 'conv-lora' | 'nas-lora', f: (r: ScheduleResult) => number) => median(res[m].map(f));
    const conv = med('conv-lora', (r) => r.totalMs);
    const nas = med('nas-lora', (r) => r.totalMs);
    const convStep = med('conv-lora', (r) => r.stageMs.train);
    const totals = (m: 'conv-lora' | 'nas-lora') => res[m].map((r) => round(r.totalMs / 1000, 2)).join('/');
    rows.push({
      name: `schedule_conv-lora_${SCHEDULE_STEPS}_steps`, naslora_ms: round(conv), torch_ms: null, ratio: null,
      step_ms: round(convStep), reduction_pct: null, note: `runs (s): ${totals('conv-lora')}; final val dice ${res['conv-lora'].map((r) => r.finalDice?.toFixed(3)).join('/')}`,
    });
    rows.push({
      name: `schedule_nas-lora_${SCHEDULE_STEPS}_steps`, naslora_ms: round(nas), torch_ms: null, ratio: null,
      step_ms: null, reduction_pct: round(100 * (1 - nas / conv), 2),
      note: `runs (s): ${totals('nas-lora')}; final val dice ${res['nas-lora'].map((r) => r.finalDice?.toFixed(3)).join('/')}; derived ${res['nas-lora'].map((r) => r.derived).join(' | ')}`,
    });
    for (const st of ['warmup', 'search', 'fix']) {
      const ms = med('nas-lora', (r) => r.stageMs[st]);
      rows.push({
        name: `schedule_nas-lora_${st}_step`, naslora_ms: round(ms), torch_ms: null, ratio: null,
        step_ms: round(ms), reduction_pct: round(100 * (1 - ms / convStep), 2),
        note: `${res['nas-lora'][0].stageSteps[st]} steps; vs Conv-LoRA step ${round(convStep, 1)} ms`,
      });
    }
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
  return rows;
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
