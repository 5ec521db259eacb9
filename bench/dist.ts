// `naslora bench dist`: data-parallel training throughput on this machine's cores, naslora's
// `train --nproc` against PyTorch's DistributedDataParallel, both on Gloo over loopback.
//
// Configuration: bench train's small grid (img 128, patch 16 → 8×8 tokens, embed 192, depth 4,
// 3 heads, window 4, global blocks 1 and 3, decoder dim 64), its main method row step_lora (LoRA
// rank 3 / lora_alpha 32 on every encoder qkv, LoRA + decoder trained, structure loss, AdamW, clip
// 1.0), global batch 4. Two ways to spend the C cores (C = os.availableParallelism()):
//  (a) 1 process with C intra-op threads, the whole batch of 4 per step;
//  (b) 2 processes with ⌊C/2⌋ intra-op threads each (what `train --nproc 2` gives each worker; 1 on
//      2 cores), 2 samples each of every global batch of 4, gradients averaged over Gloo.
// naslora: the real CLI path, `naslora train -c lora` (b: with `--nproc 2`; the launcher, c10d
// TCPStore + ProcessGroupGloo, the sharded loader and the bucketed allreduce of src/train/dist.ts)
// on synthetic data (data.synthetic target, 40 images, cached, no flip) for WARMUP + STEPS steps,
// evaluating and checkpointing only after the last one. The step clock is the `t` of the step
// events in the run folder's events.jsonl (rank 0's clock, ms resolution). Its step includes
// fetching the next batch from the loader's cache.
// PyTorch twin (bench/torch_dist.py): the same model (test/py/sam_ref.py + bench/torch_adapter_layers.py's
// LoRA, as bench/torch_train.py's step_lora), batch, loss, clipping and optimizer, the same thread
// counts; (b) = 2 worker processes, init_process_group('gloo') on 127.0.0.1 and
// DistributedDataParallel (25 MB buckets, naslora's default too), each rank its half of the same
// fixed global batch. Both sides run with GLOO_SOCKET_IFNAME=lo (unless set) and, as every bench
// suite, OPENBLAS_NUM_THREADS=1.
// Every configuration runs REPEATS times, interleaved (naslora 1 proc, PyTorch 1 proc, naslora
// 2 procs, PyTorch 2 procs; reversed on odd repeats), each run in fresh processes; rows report
// medians over the repeats.
//
// Rows:
//  - dist_1proc_step / dist_2proc_step: naslora_ms / torch_ms = ms per training step of (a) / (b)
//    = (end of the last step − end of the last warm-up step) ÷ STEPS, i.e. the inverse of the
//    throughput (it counts every stall, unlike a median); ratio = naslora_ms ÷ torch_ms.
//    *_steps_s = 1000 ÷ ms (steps per second), *_samples_s = global batch × steps per second;
//    *_median_ms = the median of the per-step clock differences (for how much of the mean is stalls).
//  - dist_scaling_efficiency: throughput of (b) ÷ throughput of (a) = ms(a) ÷ ms(b), per side. Not a
//    time: naslora_ms = naslora's (b) step, baseline_ms = naslora's (a) step, ratio = naslora's
//    efficiency (NOT naslora ÷ PyTorch), torch_ms null; naslora_efficiency / torch_efficiency = each
//    side's efficiency. Both configurations use all C cores, so the ideal is not 2: on 2 cores
//    1.0 = no gain from data parallelism, > 1 = two single-threaded ranks (plus the allreduce) beat
//    one process with 2 intra-op threads, < 1 = the allreduce and the halved per-rank batch cost
//    more than intra-op threading loses.
// STEPS / WARMUP / REPEATS: NASLORA_BENCH_DIST_STEPS (default 40), NASLORA_BENCH_DIST_WARMUP (8: one
// epoch of the 32 training images, so the cache is filled), NASLORA_BENCH_DIST_REPEATS (3): about
// 70 s on 2 idle cores. On a loaded machine the 2-thread runs are hit hardest (at load 3–6 from
// other work, naslora's and PyTorch's alike went from 60–70 to 300–1600 ms per step, while the
// 2-process runs stayed near 100–190) and a repeat can take minutes: no
// new repeat starts once the next one
// would likely end past NASLORA_BENCH_DIST_BUDGET_S (default 150 s) after the start; the rows then
// say how many repeats ran (at least one always does).
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { median, round, runTorch, type BenchRow } from './common.js';
import { SMALL_SAM } from './train.js';

const RANK = 3;         // as bench train
const LORA_ALPHA = 32;  // as bench train
const BATCH = 4;        // global batch, as bench train
const STEPS = Number(process.env.NASLORA_BENCH_DIST_STEPS ?? 40);
const WARMUP = Number(process.env.NASLORA_BENCH_DIST_WARMUP ?? 8);
const REPEATS = Number(process.env.NASLORA_BENCH_DIST_REPEATS ?? 3);
const BUDGET_S = Number(process.env.NASLORA_BENCH_DIST_BUDGET_S ?? 150);
if (!(BUDGET_S > 0)) throw new Error(`NASLORA_BENCH_DIST_BUDGET_S must be a positive number of seconds (got ${process.env.NASLORA_BENCH_DIST_BUDGET_S})`);
for (const [k, v, min] of [['STEPS', STEPS, 2], ['WARMUP', WARMUP, 1], ['REPEATS', REPEATS, 1]] as const) {
  if (!(Number.isInteger(v) && v >= min)) throw new Error(`NASLORA_BENCH_DIST_${k} must be an integer ≥ ${min} (got ${v})`);
}

const here = path.dirname(fileURLToPath(import.meta.url));
/** The compiled CLI (this file runs as dist/bench/dist.js). */
const CLI = path.resolve(here, '../src/cli/main.js');

interface Timing { ms: number; medianMs: number }
interface Config { procs: 1 | 2; threads: number }

function log(msg: string): void {
  process.stderr.write(`bench dist: ${msg}\n`);
}

function trainArgs(modelConfig: string, outDir: string, procs: number): string[] {
  const steps = WARMUP + STEPS;
  const set = (kv: string) => ['--set', kv];
  return [
    'train', '-c', 'lora',
    ...set(`model.config=${modelConfig}`), ...set('model.checkpoint=null'), ...set('model.pretrained=none'),
    ...set('data.dir=null'), ...set(`data.synthetic={kind: target, n: 40, size: ${SMALL_SAM.img_size}, seed: 0}`),
    ...set(`data.image_size=${SMALL_SAM.img_size}`), ...set(`data.batch_size=${BATCH}`), ...set('data.cache=true'),
    ...set('data.augment.hflip=false'), ...set('data.splits.fractions=[0.8, 0.1, 0.1]'),
    ...set(`method.rank=${RANK}`), ...set(`method.lora_alpha=${LORA_ALPHA}`),
    // Evaluation and checkpoints only after the last step (outside the timed window).
    ...set('train.epochs=null'), ...set(`train.steps=${steps}`), ...set(`train.eval_every=${steps}`), ...set(`train.log_every=${steps}`),
    ...set(`train.out_dir=${outDir}`),
    ...(procs > 1 ? ['--nproc', String(procs)] : []),
  ];
}

/** One `naslora train` run (1 process, or --nproc 2); the step clock from its events.jsonl. */
function naslora(c: Config, work: string, k: number): Timing {
  const modelConfig = path.join(work, 'small_sam.json');
  if (!fs.existsSync(modelConfig)) fs.writeFileSync(modelConfig, JSON.stringify({ config: SMALL_SAM }));
  const out = path.join(work, `naslora-${c.procs}proc-${k}`);
  const r = spawnSync(process.execPath, [CLI, ...trainArgs(modelConfig, out, c.procs)], {
    encoding: 'utf8', maxBuffer: 64 * 1024 * 1024,
    env: { ...process.env, NASLORA_THREADS: String(c.threads), GLOO_SOCKET_IFNAME: process.env.GLOO_SOCKET_IFNAME ?? 'lo' },
  });
  const said = `${r.stdout ?? ''}${r.stderr ?? ''}`;
  if (r.status !== 0) {
    const lines = said.trim().split('\n');
    const first = lines.find((l) => /error/i.test(l));
    throw new Error(`bench dist: naslora train (${c.procs} proc) failed with status ${r.status}: ${[...(first ? [first] : []), ...lines.slice(-3)].join(' | ')}`);
  }
  if (c.procs > 1 && !said.includes(`data-parallel: ${c.procs} ranks`)) throw new Error(`bench dist: naslora train --nproc ${c.procs} did not report ${c.procs} ranks`);
  const t = fs.readFileSync(path.join(out, 'events.jsonl'), 'utf8').trim().split('\n')
    .map((l) => JSON.parse(l) as { type: string; t?: number })
    .filter((e) => e.type === 'step').map((e) => e.t!);
  if (t.length !== WARMUP + STEPS) throw new Error(`bench dist: expected ${WARMUP + STEPS} step events in ${out}, found ${t.length}`);
  fs.rmSync(out, { recursive: true, force: true });
  return timing(t.slice(WARMUP - 1).map((s) => s * 1000));
}

/** ms per step over the window (from the end of the last warm-up step), and the median step. */
function timing(ends: number[]): Timing {
  const diffs = ends.slice(1).map((e, i) => e - ends[i]!);
  return { ms: (ends[ends.length - 1]! - ends[0]!) / (ends.length - 1), medianMs: median(diffs) };
}

function torch(c: Config): Timing | null {
  const name = `dist_${c.procs}proc_step`;
  const r = runTorch('torch_dist.py', [
    '--threads', String(c.threads), '--procs', String(c.procs), '--name', name, '--config', JSON.stringify(SMALL_SAM),
    '--rank', String(RANK), '--lora-alpha', String(LORA_ALPHA), '--batch', String(BATCH), '--steps', String(STEPS), '--warmup', String(WARMUP),
  ]);
  return r ? { ms: r[name]!, medianMs: r[`${name}:median_ms`]! } : null;
}

export function benchDist(): BenchRow[] {
  if (process.env.GLOO_SOCKET_IFNAME === undefined) process.env.GLOO_SOCKET_IFNAME = 'lo';  // the twin inherits it
  const cores = os.availableParallelism();
  const configs: Config[] = [{ procs: 1, threads: cores }, { procs: 2, threads: Math.max(1, Math.floor(cores / 2)) }];
  const work = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-bench-dist-'));
  const res = { naslora: [[], []] as Timing[][], torch: [[], []] as Array<Array<Timing | null>> };
  const t0 = Date.now();
  try {
    log(`LoRA on bench train's small grid, global batch ${BATCH}, ${WARMUP} warm-up + ${STEPS} timed steps, ${REPEATS} repeats; ` +
      `1 proc × ${configs[0]!.threads} threads vs 2 procs × ${configs[1]!.threads} thread(s), ${cores} cores`);
    let n = 0;
    const total = REPEATS * 4;
    let lastRepeatS = 0;
    for (let k = 0; k < REPEATS; k++) {
      const elapsedS = (Date.now() - t0) / 1000;
      if (k > 0 && elapsedS + lastRepeatS > BUDGET_S) {
        log(`stopping after ${k} repeat(s): ${elapsedS.toFixed(0)} s so far, the last repeat took ${lastRepeatS.toFixed(0)} s, budget ${BUDGET_S} s (NASLORA_BENCH_DIST_BUDGET_S); the machine is busy`);
        break;
      }
      const r0 = Date.now();
      const order: Array<['naslora' | 'torch', 0 | 1]> = [['naslora', 0], ['torch', 0], ['naslora', 1], ['torch', 1]];
      if (k % 2) order.reverse();
      for (const [side, i] of order) {
        const c = configs[i]!;
        const s = Date.now();
        const r = side === 'naslora' ? naslora(c, work, k) : torch(c);
        if (side === 'naslora') res.naslora[i]!.push(r!);
        else res.torch[i]!.push(r);
        log(`[${++n}/${total}] ${side === 'naslora' ? 'naslora' : 'PyTorch'} ${c.procs} proc × ${c.threads} thread(s), repeat ${k + 1}: ` +
          `${r ? `${r.ms.toFixed(1)} ms/step (median ${r.medianMs.toFixed(1)})` : 'unavailable'}, ${((Date.now() - s) / 1000).toFixed(1)} s`);
      }
      lastRepeatS = (Date.now() - r0) / 1000;
    }
  } finally {
    fs.rmSync(work, { recursive: true, force: true });
  }
  log(`done in ${((Date.now() - t0) / 1000).toFixed(0)} s`);

  const med = (xs: Array<Timing | null>, f: (t: Timing) => number): number | null =>
    xs.some((x) => x === null) ? null : median(xs.map((x) => f(x!)));
  const per = (ms: number | null) => (ms === null ? null : round(1000 / ms, 3));
  const rows: BenchRow[] = configs.map((c, i) => {
    const nm = med(res.naslora[i]!, (t) => t.ms)!;
    const tm = med(res.torch[i]!, (t) => t.ms);
    return {
      name: `dist_${c.procs}proc_step`, naslora_ms: round(nm, 2), torch_ms: tm === null ? null : round(tm, 2), ratio: tm ? round(nm / tm, 3) : null,
      procs: c.procs, threads_per_proc: c.threads,
      naslora_steps_s: per(nm), naslora_samples_s: round(BATCH * 1000 / nm, 2),
      torch_steps_s: per(tm), torch_samples_s: tm === null ? null : round(BATCH * 1000 / tm, 2),
      naslora_median_ms: round(med(res.naslora[i]!, (t) => t.medianMs)!, 2),
      torch_median_ms: (() => { const m = med(res.torch[i]!, (t) => t.medianMs); return m === null ? null : round(m, 2); })(),
      note: `${res.naslora[i]!.length} of ${REPEATS} repeats; runs ms/step naslora ${res.naslora[i]!.map((t) => t.ms.toFixed(1)).join('/')}; PyTorch ${res.torch[i]!.map((t) => t?.ms.toFixed(1) ?? '-').join('/')}`,
    };
  });
  const n1 = rows[0]!.naslora_ms, n2 = rows[1]!.naslora_ms;
  const t1 = rows[0]!.torch_ms, t2 = rows[1]!.torch_ms;
  const nEff = round(n1 / n2, 3);
  rows.push({
    name: 'dist_scaling_efficiency', naslora_ms: n2, torch_ms: null, ratio: nEff, baseline_ms: n1,
    naslora_efficiency: nEff, torch_efficiency: typeof t1 === 'number' && typeof t2 === 'number' ? round(t1 / t2, 3) : null,
    note: `throughput(2 procs) ÷ throughput(1 proc) = ms(1 proc) ÷ ms(2 procs); ratio = naslora's (not naslora ÷ PyTorch); ${cores} cores in both: 1.0 = no gain`,
  });
  return rows;
}
