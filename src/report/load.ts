// Reading what a run, a compare or the demo left on disk, for the report. Runs may be finished,
// killed or still running: a torn last line of a JSON-lines file is what a kill mid-write leaves and
// is skipped (and said); a bad line anywhere else, or a file that is not JSON, is an error that
// names the file and the line.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { ExamplesFile } from '../eval/examples.js';
import { readJsonLines } from '../io/jsonl.js';
import { mean, sampleSd } from '../eval/stats.js';

export interface StepEvent { step: number; stage: string; loss: number; lr: number; grad_norm: number | null; t: number }
export interface StageEvent { step: number; stage: string; end?: number; total?: number }
export interface EvalEvent { step: number; split: string; metrics: Record<string, number> }
export interface DiscretizeEvent { step: number; cell: string; op: string; margin: number; early: boolean; folded: boolean }
export interface AlphaRow { step: number; stage: string; cells: Record<string, Record<string, number>> }
export interface DerivedOps {
  step: number;
  stage: string;
  derived: Record<string, string>;
  cells?: Record<string, { step: number; op: string; margin: number; weights: Record<string, number>; early: boolean; folded: boolean }>;
}
export interface MetricsSummary { count: number; [metric: string]: number }
export interface MetricsJson {
  method: string;
  trainable_parameters: number;
  adapter_parameters: number;
  seconds: number;
  scoring?: { periodic_split: string; test_resolution: string; label_size: number; metrics: string[] };
  best: { step: number; dice: number; split: string } | null;
  val: MetricsSummary | null;
  test: MetricsSummary | null;
  train?: MetricsSummary;
}
export interface PerImageFile { split: string; resolution: string; label_size: number; rows: Array<{ id: string; [metric: string]: number | string }> }

export interface RunData {
  dir: string;
  config: Record<string, unknown> | null;
  steps: StepEvent[];
  stages: StageEvent[];
  evals: EvalEvent[];
  discretize: DiscretizeEvent[];
  alpha: AlphaRow[];
  derived: DerivedOps | null;
  metrics: MetricsJson | null;
  perImage: PerImageFile | null;
  examples: (ExamplesFile & { dir: string }) | null;
  /** complete: metrics.json written (the run finished); else the run is running or was killed. */
  complete: boolean;
  /** The schedule's total steps when known (stage events carry it). */
  total: number | null;
  lastStep: number;
  /** Things a reader should know (torn lines, missing files of older runs). */
  notes: string[];
}

export function readJson<T>(file: string): T {
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch (e) {
    throw new Error(`${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  try {
    return JSON.parse(text) as T;
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message}); the file is corrupt`);
  }
}

const maybe = <T>(file: string): T | null => (fs.existsSync(file) ? readJson<T>(file) : null);

export function isRunDir(dir: string): boolean {
  return ['events.jsonl', 'metrics.json', 'config.resolved.json'].some((f) => fs.existsSync(path.join(dir, f)));
}

export function readRun(dir: string): RunData {
  if (!fs.existsSync(dir) || !fs.statSync(dir).isDirectory()) throw new Error(`${dir}: no such run folder`);
  const notes: string[] = [];
  const metrics = maybe<MetricsJson>(path.join(dir, 'metrics.json'));
  const eventsFile = path.join(dir, 'events.jsonl');
  let events: Array<{ type?: string } & Record<string, unknown>> = [];
  if (fs.existsSync(eventsFile)) events = readJsonLines(eventsFile, (n) => notes.push(n));
  else if (metrics && metrics.seconds === 0 && metrics.trainable_parameters === 0) notes.push('an evaluation-only run (no training): no events.jsonl, so no curves');
  else throw new Error(`${eventsFile}: missing; ${dir} is not a run folder written by naslora train (or its events file was deleted)`);
  const of = <T>(type: string) => events.filter((e) => e.type === type) as unknown as T[];
  const steps = of<StepEvent>('step');
  const stages = of<StageEvent>('stage');
  const alphaFile = path.join(dir, 'alpha_history.jsonl');
  const alpha = fs.existsSync(alphaFile) ? readJsonLines<AlphaRow>(alphaFile, (n) => notes.push(n)) : [];
  const examplesDir = path.join(dir, 'examples');
  const ex = maybe<ExamplesFile>(path.join(examplesDir, 'examples.json'));
  const total = stages.find((s) => typeof s.total === 'number')?.total ?? null;
  const lastStep = steps.length ? steps[steps.length - 1]!.step : 0;
  const perImage = maybe<PerImageFile>(path.join(dir, 'test_per_image.json'));
  if (metrics?.test && !perImage) notes.push('no test_per_image.json (a run from an older naslora): no per-image table');
  if (metrics?.test && !ex) notes.push('no examples/ (a run from an older naslora): no overlays');
  return {
    dir, config: maybe(path.join(dir, 'config.resolved.json')), steps, stages, evals: of<EvalEvent>('eval'), discretize: of<DiscretizeEvent>('discretize'),
    alpha, derived: maybe<DerivedOps>(path.join(dir, 'derived_ops.json')), metrics, perImage,
    examples: ex ? { ...ex, dir: examplesDir } : null, complete: metrics !== null, total, lastStep, notes,
  };
}

// ---------------------------------------------------------------- compare

export interface CompareRun {
  method: string; preset: string; seed: number; status: string; dice: number; iou: number; seconds: number;
  trainable_params: number; adapter_params: number; derived_ops: Record<string, string> | null; run_dir: string; [k: string]: unknown;
}
export interface CompareMethod {
  method: string; preset: string; n: number; seeds: number[]; dice_mean: number; dice_sd: number; iou_mean: number; iou_sd: number;
  seconds_mean: number; trainable_params: number; adapter_params: number; [k: string]: unknown;
}
export interface CompareData { dir: string; runs: CompareRun[]; methods: CompareMethod[]; complete: boolean; notes: string[] }

export function isCompareDir(dir: string): boolean {
  if (fs.existsSync(path.join(dir, 'compare.json'))) return true;
  return listRunDirs(dir).length > 0 && !isRunDir(dir);
}

/** <dir>/<method>/seed<k> folders. */
function listRunDirs(dir: string): Array<{ method: string; seed: number; dir: string }> {
  if (!fs.existsSync(dir)) return [];
  const out: Array<{ method: string; seed: number; dir: string }> = [];
  for (const m of fs.readdirSync(dir, { withFileTypes: true })) {
    if (!m.isDirectory()) continue;
    for (const s of fs.readdirSync(path.join(dir, m.name), { withFileTypes: true })) {
      const k = /^seed(\d+)$/.exec(s.name);
      if (s.isDirectory() && k && isRunDir(path.join(dir, m.name, s.name))) out.push({ method: m.name, seed: Number(k[1]), dir: path.join(dir, m.name, s.name) });
    }
  }
  return out.sort((a, b) => a.method.localeCompare(b.method) || a.seed - b.seed);
}

export function readCompare(dir: string): CompareData {
  const file = path.join(dir, 'compare.json');
  if (fs.existsSync(file)) {
    const j = readJson<{ runs?: CompareRun[]; methods?: CompareMethod[] }>(file);
    if (!Array.isArray(j.runs) || !Array.isArray(j.methods)) throw new Error(`${file}: expected {"runs": [...], "methods": [...]}; the file is corrupt or not a compare result`);
    // Run folders are <dir>/<method>/seed<k>: found from here, so a moved compare folder still links.
    const runs = j.runs.map((r) => ({ ...r, run_dir: path.join(dir, r.method, `seed${r.seed}`) }));
    return { dir, runs, methods: j.methods, complete: true, notes: [] };
  }
  // Still running (or killed): compare.json is written at the end; show the finished runs.
  const notes = ['no compare.json yet: the compare is still running or was stopped; the finished runs are shown'];
  const runs: CompareRun[] = [];
  for (const r of listRunDirs(dir)) {
    const m = maybe<MetricsJson>(path.join(r.dir, 'metrics.json'));
    if (!m?.test) { notes.push(`${path.relative(dir, r.dir)}: not finished`); continue; }
    const d = maybe<DerivedOps>(path.join(r.dir, 'derived_ops.json'));
    runs.push({
      method: r.method, preset: r.method, seed: r.seed, status: 'finished', dice: m.test.dice!, iou: m.test.iou!, seconds: m.seconds,
      trainable_params: m.trainable_parameters, adapter_params: m.adapter_parameters, derived_ops: d?.derived ?? null, run_dir: r.dir,
    });
  }
  const methods: CompareMethod[] = [];
  for (const name of [...new Set(runs.map((r) => r.method))]) {
    const rs = runs.filter((r) => r.method === name);
    methods.push({
      method: name, preset: name, n: rs.length, seeds: rs.map((r) => r.seed), dice_mean: mean(rs.map((r) => r.dice)), dice_sd: sampleSd(rs.map((r) => r.dice)),
      iou_mean: mean(rs.map((r) => r.iou)), iou_sd: sampleSd(rs.map((r) => r.iou)), seconds_mean: mean(rs.map((r) => r.seconds)),
      trainable_params: rs[0]!.trainable_params, adapter_params: rs[0]!.adapter_params,
    });
  }
  return { dir, runs, methods, complete: false, notes };
}

// ---------------------------------------------------------------- demo

export interface DemoRowJson { method: string; n: number; dice: number; dice_sd: number; iou: number; iou_sd: number; trainable: number; adapter: number; seconds: number }
export interface DemoData {
  dir: string;
  seeds: number[];
  rows: DemoRowJson[];
  derived: Record<string, Record<string, string>>;
  /** The source model's predictions on the fixed target images. */
  source: (ExamplesFile & { dir: string }) | null;
  /** Run folders: pretrain, and <method>/seed<k>. */
  runs: Array<{ method: string; seed: number | null; dir: string }>;
}

export function isDemoDir(dir: string): boolean {
  return fs.existsSync(path.join(dir, 'demo_results.json'));
}

export function readDemo(dir: string): DemoData {
  const j = readJson<{ seeds?: number[]; rows?: DemoRowJson[]; derived?: Record<string, Record<string, string>> }>(path.join(dir, 'demo_results.json'));
  if (!Array.isArray(j.rows) || !Array.isArray(j.seeds)) throw new Error(`${path.join(dir, 'demo_results.json')}: expected {"seeds", "rows", "derived"}; the file is corrupt`);
  const srcDir = path.join(dir, 'source_examples');
  const src = maybe<ExamplesFile>(path.join(srcDir, 'examples.json'));
  const runs: DemoData['runs'] = [];
  if (isRunDir(path.join(dir, 'pretrain'))) runs.push({ method: 'pretrain', seed: null, dir: path.join(dir, 'pretrain') });
  for (const r of listRunDirs(dir)) runs.push(r);
  return { dir, seeds: j.seeds, rows: j.rows, derived: j.derived ?? {}, source: src ? { ...src, dir: srcDir } : null, runs };
}
