// `naslora compare`: a fair multi-seed comparison. Every (method, seed) runs with the same base
// config (data, splits, model, optimizer, training budget, evaluation), one after another, each in
// its own run folder <out_dir>/<method>/seed<k>; then per-run and per-method (mean ± sample sd over
// seeds) test metrics, training time and parameter counts go to <out_dir>/compare.{json,md}.
//
// A compare file is validated as a whole, with every run config it implies, before anything runs.
// Re-running is cheap and safe: a run folder with metrics.json is finished and read back; one with a
// checkpoint in checkpoints/last (a killed run) resumes exactly; one with neither is removed and
// started afresh. A run folder whose config.resolved.json holds another value for a key of the planned
// config is an error (the comparison would otherwise mix configurations); keys on one side only (a
// folder made by an older or newer naslora) are a warning.
//
// Each run's config: the method's preset, deep-merged with `base`, then the method's `set`, then
// `--set` overrides, then method.name = the preset, train.seed = the seed, train.out_dir = its folder.
// `zero-shot` evaluates the base checkpoint on the test split without training (decoder-only config,
// no adapters; 0 s, 0 parameters); it is evaluated once per seed (cheap; the result is the same).
import * as fs from 'node:fs';
import * as path from 'node:path';
import { isDeepStrictEqual } from 'node:util';
import YAML from 'yaml';
import { z } from 'zod';
import {
  applyOverride, ConfigError, deepMerge, isPresetName, NAS_METHODS, parseConfig, PRESET_NAMES, PRESETS,
  type PresetName, type RunConfig,
} from '../train/config.js';
import { buildModel, loadSplits, runTraining, runtimeOf, scoringOf, writeTestDetails, type Scoring } from '../train/run.js';
import { processDist } from '../train/dist.js';
import { evaluateShards } from '../train/trainer.js';
import { makeProgress, type Progress } from '../train/progress.js';
import { writeFileAtomic } from '../io/atomic.js';
import type { ImageMetrics } from '../eval/metrics.js';
import type { ClassTable } from '../eval/multiclass.js';
import { mean, sampleSd } from '../eval/stats.js';

export { mean, sampleSd };

type Json = Parameters<typeof deepMerge>[0];
type JsonObject = Parameters<typeof applyOverride>[0];

export const ZERO_SHOT = 'zero-shot';
export type ComparePreset = PresetName | typeof ZERO_SHOT;

/** Keys compare sets itself; a `set` or `--set` on them is an error. */
const OWNED: Readonly<Record<string, string>> = {
  'method.name': 'the method entry picks it (preset)',
  'train.seed': 'compare sets it from seeds',
  'train.out_dir': 'compare sets it to <out_dir>/<method>/seed<k>',
};

/** Test metrics in output order: output key → ImageMetrics key. */
export const COMPARE_METRICS = [
  ['dice', 'dice'], ['iou', 'iou'], ['s_measure', 'sMeasure'], ['e_measure', 'meanEMeasure'],
  ['wf_measure', 'weightedF'], ['mae', 'mae'], ['ber', 'ber'],
] as const satisfies ReadonlyArray<readonly [string, keyof ImageMetrics]>;
export type CompareMetric = (typeof COMPARE_METRICS)[number][0];

// ---------------------------------------------------------------- the plan

export interface MethodEntry {
  name: string;
  preset: ComparePreset;
  /** Dotted run-config keys → values (YAML values, already parsed). */
  set: Array<[string, unknown]>;
}

export type RunState = 'finished' | 'resumable' | 'partial' | 'absent';

export interface PlannedRun {
  method: string;
  preset: ComparePreset;
  seed: number;
  cfg: RunConfig;
  runDir: string;
  /** What the run folder held when the plan was made. */
  state: RunState;
}

export interface ComparePlan {
  file: string;
  outDir: string;
  methods: MethodEntry[];
  seeds: number[];
  runs: PlannedRun[];
  /** Not errors, but worth saying (a method's `set` that changes data, budget or evaluation). */
  warnings: string[];
}

const NAME_RE = /^[A-Za-z0-9][A-Za-z0-9._-]*$/;
const KEY_RE = /^[A-Za-z0-9_]+(\.[A-Za-z0-9_]+)*$/;
const isObj = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v);

function fmtPath(p: ReadonlyArray<PropertyKey>): string {
  return p.reduce<string>((s, k) => (typeof k === 'number' ? `${s}[${k}]` : s ? `${s}.${String(k)}` : String(k)), '') || '(top level)';
}

function zodProblems(err: z.ZodError, prefix: Array<string | number> = []): string[] {
  return err.issues.flatMap((i) =>
    i.code === 'unrecognized_keys'
      ? i.keys.map((k) => `${fmtPath([...prefix, ...i.path, k])}: unknown key`)
      : [`${fmtPath([...prefix, ...i.path])}: ${i.message}`],
  );
}

/** Parses YAML text; duplicate mapping keys are reported by path (the yaml library would only give a line). */
function parseYaml(text: string, where: string, keyPrefix = ''): { value: unknown; problems: string[]; syntax: boolean } {
  const doc = YAML.parseDocument(text, { uniqueKeys: false });
  if (doc.errors.length) return { value: null, problems: [`${where}: YAML syntax: ${doc.errors[0]!.message.split('\n')[0]}`], syntax: true };
  const problems: string[] = [];
  const walk = (node: unknown, at: string): void => {
    if (YAML.isMap(node)) {
      const seen = new Set<string>();
      for (const pair of node.items) {
        const key = String(YAML.isScalar(pair.key) ? pair.key.value : pair.key);
        const here = at ? `${at}.${key}` : key;
        if (seen.has(key)) problems.push(`${here}: given twice`);
        seen.add(key);
        walk(pair.value, here);
      }
    } else if (YAML.isSeq(node)) node.items.forEach((item, i) => walk(item, `${at}[${i}]`));
  };
  walk(doc.contents, keyPrefix);
  return { value: doc.toJS() as unknown, problems, syntax: false };
}

const CompareFileSchema = z.strictObject({
  base: z.unknown(),
  methods: z.array(z.unknown()).min(1, 'empty: list at least one method'),
  seeds: z.array(z.number().int()).min(1, 'empty: list at least one seed'),
  out_dir: z.string().min(1),
});

const MethodObjectSchema = z.strictObject({
  name: z.string().regex(NAME_RE, 'a folder-safe name: letters, digits, . _ - (not starting with . _ -)'),
  preset: z.string().optional(),
  set: z.record(z.string(), z.unknown()).optional(),
});

const KNOWN = [...PRESET_NAMES, ZERO_SHOT].join(', ');
const isComparePreset = (s: string): s is ComparePreset => s === ZERO_SHOT || isPresetName(s);
/** a and b name the same key or one lies under the other. */
const overlaps = (a: string, b: string): boolean => a === b || a.startsWith(`${b}.`) || b.startsWith(`${a}.`);
const ownedBy = (key: string): string | undefined => Object.keys(OWNED).find((k) => key === k || key.startsWith(`${k}.`));

/** Applies one dotted key=value to a raw config; problems are reported as `<label>: ...`. */
function applySet(raw: JsonObject, key: string, value: unknown, label: string, problems: string[]): void {
  const text = `${key}=${JSON.stringify(value) ?? 'null'}`;
  try {
    applyOverride(raw, text);
  } catch (e) {
    if (!(e instanceof ConfigError)) throw e;
    const prefix = `override '${text}': `;
    problems.push(...e.problems.map((p) => `${label}: ${p.startsWith(prefix) ? p.slice(prefix.length) : p}`));
  }
}

function runStateOf(dir: string): RunState {
  if (fs.existsSync(path.join(dir, 'metrics.json'))) return 'finished';
  const ck = path.join(dir, 'checkpoints');
  if (fs.existsSync(path.join(ck, 'last', 'trainer_state.json'))) return 'resumable';
  // A kill between the two renames of a checkpoint swap leaves it as last.old-<pid> (RunDir.findCheckpoint).
  if (fs.existsSync(ck) && fs.readdirSync(ck).some((f) => f.startsWith('last.old-') && fs.existsSync(path.join(ck, f, 'trainer_state.json')))) return 'resumable';
  return fs.existsSync(dir) ? 'partial' : 'absent';
}

/**
 * Dotted paths where two JSON values differ (at most `max`), and separately the keys present on one
 * side only (a run folder made before a config key existed, or after one was removed).
 */
function diffPaths(a: unknown, b: unknown, at = '', out = { differ: [] as string[], oneSided: [] as string[] }, max = 4): { differ: string[]; oneSided: string[] } {
  if (out.differ.length >= max || isDeepStrictEqual(a, b)) return out;
  if (isObj(a) && isObj(b)) {
    for (const k of new Set([...Object.keys(a), ...Object.keys(b)])) {
      const here = at ? `${at}.${k}` : k;
      if (!(k in a) || !(k in b)) out.oneSided.push(`${here} (${k in a ? 'only in the run folder' : 'not in the run folder'})`);
      else diffPaths(a[k], b[k], here, out, max);
    }
  } else out.differ.push(`${at || '(top level)'}: ${JSON.stringify(a) ?? '(absent)'} → ${JSON.stringify(b) ?? '(absent)'}`);
  return out;
}

/**
 * Reads and validates a compare file and every run config it implies; throws ConfigError listing all
 * problems (each naming its key) before anything is run or written.
 */
export function planCompare(file: string, overrides: readonly string[] = []): ComparePlan {
  const context = `invalid compare file (${file})`;
  if (!fs.existsSync(file)) throw new ConfigError([`${file}: no such file`], context);
  const parsed = parseYaml(fs.readFileSync(file, 'utf8'), file);
  if (parsed.syntax) throw new ConfigError(parsed.problems, context);
  // Every problem is collected before failing, as far as one does not hide the others.
  const problems: string[] = [...parsed.problems];
  const warnings: string[] = [];
  const rawDoc = isObj(parsed.value) ? parsed.value : {};
  if (!isObj(parsed.value) && parsed.value !== null) problems.push('(top level): expected a mapping with base, methods, seeds, out_dir');
  const top = CompareFileSchema.safeParse(rawDoc);
  if (!top.success) problems.push(...zodProblems(top.error));
  const doc = {
    base: rawDoc['base'],
    methods: Array.isArray(rawDoc['methods']) ? (rawDoc['methods'] as unknown[]) : [],
    seeds: Array.isArray(rawDoc['seeds']) ? (rawDoc['seeds'] as unknown[]).filter((x): x is number => Number.isInteger(x)) : [],
    out_dir: typeof rawDoc['out_dir'] === 'string' && rawDoc['out_dir'] ? rawDoc['out_dir'] : '.',
  };

  // base: a path relative to the compare file's folder, or an inline mapping.
  let base: Record<string, unknown> = {};
  if (typeof doc.base === 'string') {
    const bf = path.resolve(path.dirname(file), doc.base);
    if (!fs.existsSync(bf)) problems.push(`base: ${bf} does not exist (a path is relative to the compare file's folder)`);
    else {
      const b = parseYaml(fs.readFileSync(bf, 'utf8'), `base (${bf})`, 'base');
      problems.push(...b.problems);
      if (isObj(b.value)) base = b.value;
      else if (b.value !== null) problems.push(`base: ${bf} must hold a mapping of run-config sections (model, data, ...)`);
    }
  } else if (isObj(doc.base)) base = doc.base;
  else if (doc.base === undefined) problems.push('base: required: a run config (path relative to the compare file, or an inline mapping) shared by every run');
  else problems.push('base: expected a file path or a mapping of run-config sections');
  if ('preset' in base) problems.push("base.preset: not allowed: each entry of methods picks its preset");
  for (const [sec, key] of [['method', 'name'], ['train', 'seed'], ['train', 'out_dir']] as const) {
    const s = base[sec];
    if (isObj(s) && key in s) problems.push(`base.${sec}.${key}: not allowed: ${OWNED[`${sec}.${key}`]}`);
  }

  // methods
  const methods: MethodEntry[] = [];
  doc.methods.forEach((m, i) => {
    const at = `methods[${i}]`;
    if (typeof m === 'string') {
      if (!isComparePreset(m)) problems.push(`${at}: unknown method '${m}' (known: ${KNOWN})`);
      else methods.push({ name: m, preset: m, set: [] });
      return;
    }
    if (!isObj(m)) { problems.push(`${at}: expected a method name or {name, preset, set}`); return; }
    const r = MethodObjectSchema.safeParse(m);
    if (!r.success) { problems.push(...zodProblems(r.error, ['methods', i])); return; }
    const preset = r.data.preset ?? r.data.name;
    if (!isComparePreset(preset)) {
      problems.push(r.data.preset === undefined
        ? `${at}.preset: required: '${r.data.name}' is not a method name (known: ${KNOWN})`
        : `${at}.preset: unknown preset '${preset}' (known: ${KNOWN})`);
      return;
    }
    const set = Object.entries(r.data.set ?? {});
    set.forEach(([k], j) => {
      const label = `${at}.set.${k}`;
      if (!KEY_RE.test(k)) problems.push(`${label}: not a dotted key path (e.g. method.rank)`);
      const owned = ownedBy(k);
      if (owned) problems.push(`${label}: not allowed: ${OWNED[owned]}`);
      for (const [k2] of set.slice(0, j)) if (overlaps(k, k2)) problems.push(`${label}: conflicts with ${at}.set.${k2} (the same setting given twice)`);
      if (/^(data|train|eval)\./.test(k) || ['data', 'train', 'eval'].includes(k))
        warnings.push(`${label} changes the data, training budget or evaluation of '${r.data.name}' only: its runs are then not on equal terms with the others`);
    });
    methods.push({ name: r.data.name, preset, set });
  });
  const seenNames = new Map<string, number>();
  doc.methods.forEach((m, i) => {
    const name = typeof m === 'string' ? m : isObj(m) && typeof m['name'] === 'string' ? m['name'] : null;
    if (name === null) return;
    if (seenNames.has(name)) problems.push(`methods[${i}].name: duplicate method name '${name}' (also methods[${seenNames.get(name)}]); give variants their own name`);
    else seenNames.set(name, i);
  });

  // seeds
  const seeds = doc.seeds;
  seeds.forEach((s, i) => { if (seeds.indexOf(s) !== i) problems.push(`seeds[${i}]: seed ${s} listed twice`); });

  // --set overrides, applied to every run
  const sets: Array<{ key: string; value: string }> = [];
  for (const o of overrides) {
    const eq = o.indexOf('=');
    const key = eq > 0 ? o.slice(0, eq).trim() : '';
    if (!key) { problems.push(`--set ${o}: expected key.path=value`); continue; }
    const owned = ownedBy(key);
    if (owned) problems.push(`--set ${key}: not allowed: ${OWNED[owned]}`);
    for (const prev of sets) if (overlaps(key, prev.key)) problems.push(`--set ${key}: conflicts with --set ${prev.key} (the same setting given twice)`);
    methods.forEach((m, i) => {
      for (const [k] of m.set) if (overlaps(key, k)) problems.push(`--set ${key}: conflicts with methods[${i}].set.${k} (method '${m.name}' sets it)`);
    });
    sets.push({ key, value: o.slice(eq + 1) });
  }

  // Every run config, validated.
  const outDir = doc.out_dir;
  const runs: PlannedRun[] = [];
  const runProblems = new Set<string>();
  methods.forEach((m, i) => {
    const at = `methods[${i}]`;
    for (const seed of seeds) {
      const local: string[] = [];
      const presetName: PresetName = m.preset === ZERO_SHOT ? 'decoder-only' : m.preset;
      const raw = deepMerge(PRESETS[presetName]() as unknown as Json, base as Json) as JsonObject;
      for (const [k, v] of m.set) applySet(raw, k, v, `${at}.set.${k}`, local);
      for (const s of sets) {
        try {
          applyOverride(raw, `${s.key}=${s.value}`);
        } catch (e) {
          if (!(e instanceof ConfigError)) throw e;
          const prefix = `override '${s.key}=${s.value}': `;
          local.push(...e.problems.map((p) => `--set ${s.key}: ${p.startsWith(prefix) ? p.slice(prefix.length) : p}`));
        }
      }
      const runDir = path.join(outDir, m.name, `seed${seed}`);
      if (isObj(raw['method'])) (raw['method'] as JsonObject)['name'] = presetName;
      if (isObj(raw['train'])) Object.assign(raw['train'] as JsonObject, { seed, out_dir: runDir });
      if (local.length) { local.forEach((p) => runProblems.add(p)); continue; }
      try {
        const cfg = parseConfig(raw);
        if (m.preset === ZERO_SHOT && cfg.model.pretrained !== 'sam')
          runProblems.add(`${at} (${m.name}): zero-shot evaluates a pretrained checkpoint: set model.pretrained=sam and model.checkpoint in base`);
        if (m.preset === ZERO_SHOT && cfg.data.classes)
          runProblems.add(`${at} (${m.name}): zero-shot has nothing to score multi-class data with (SAM has no class heads until they are trained); leave it out`);
        runs.push({ method: m.name, preset: m.preset, seed, cfg, runDir, state: 'absent' });
      } catch (e) {
        if (!(e instanceof ConfigError)) throw e;
        for (const p of e.problems) runProblems.add(`${at} (${m.name}) run config: ${p}`);
      }
    }
  });
  problems.push(...runProblems);
  if (problems.length) throw new ConfigError(problems, context);

  // The test split every run is scored on must exist.
  const checked = new Set<string>();
  for (const r of runs) {
    const key = JSON.stringify(r.cfg.data);
    if (checked.has(key)) continue;
    checked.add(key);
    try {
      const splits = loadSplits(r.cfg, 0);
      if (!splits.test.length)
        problems.push(`data: ${r.method} has no test split to compare on (give splits/test.txt, a split column, or data.splits.fractions with a test share > 0)`);
    } catch (e) {
      problems.push(`data (${r.method}): ${(e as Error).message}`);
    }
  }

  // What the run folders already hold, and whether it was made with the same config.
  for (const r of runs) {
    r.state = runStateOf(r.runDir);
    if (r.state !== 'finished' && r.state !== 'resumable') continue;
    const saved = path.join(r.runDir, 'config.resolved.json');
    if (!fs.existsSync(saved)) { problems.push(`${r.runDir}: has results but no config.resolved.json; remove the folder to rerun it`); continue; }
    const diff = diffPaths(JSON.parse(fs.readFileSync(saved, 'utf8')), JSON.parse(JSON.stringify(r.cfg)));
    // Where a run computes is not what it computes: a run folder made on another device is reused
    // (a killed CPU run may resume on a GPU), with a note, since its time is then not comparable.
    const moved = diff.differ.filter((d) => d.startsWith('runtime.device:'));
    diff.differ = diff.differ.filter((d) => !d.startsWith('runtime.device:'));
    if (moved.length) warnings.push(`${r.runDir}: was run with another device (${moved.join('; ')}): reused; its seconds are not comparable with the others'`);
    if (diff.differ.length) problems.push(`${r.runDir}: was run with another config (${diff.differ.join('; ')}); remove the folder or choose another out_dir`);
    else if (diff.oneSided.length) warnings.push(`${r.runDir}: reused although its config lacks or has extra keys (${diff.oneSided.join('; ')}): it was made by another naslora version`);
    if (r.state === 'finished') {
      const m = JSON.parse(fs.readFileSync(path.join(r.runDir, 'metrics.json'), 'utf8')) as { test?: unknown };
      if (!isObj(m.test)) problems.push(`${r.runDir}/metrics.json: has no test metrics; remove the folder to rerun it`);
    }
  }
  if (problems.length) throw new ConfigError(problems, context);
  return { file, outDir, methods, seeds, runs, warnings };
}

// ---------------------------------------------------------------- running

export type RunStatus = 'trained' | 'resumed' | 'skipped' | 'evaluated';

export type RunMetrics = { [K in CompareMetric]: number };

export interface CompareRunRecord extends RunMetrics {
  method: string;
  preset: ComparePreset;
  seed: number;
  /** What this invocation did: trained from scratch, resumed a killed run, skipped a finished one, or evaluated (zero-shot). */
  status: RunStatus;
  test_images: number;
  /** Training seconds on the trainer's clock (final evaluation excluded); 0 for zero-shot. */
  seconds: number;
  /** How the test split was scored (eval.resolution): 'label' at label_size, or 'original'. */
  resolution: 'label' | 'original';
  label_size: number;
  trainable_params: number;
  adapter_params: number;
  /** NAS cell path → derived op name (discretized cells only); null for methods without NAS cells. */
  derived_ops: Record<string, string> | null;
  run_dir: string;
  /** Multi-class runs (dice, iou = mDice, mIoU): pixel accuracy and IoU / Dice per class (null: class in neither map). */
  pixel_accuracy?: number;
  classes?: Pick<ClassTable, 'names' | 'iou' | 'dice'>;
}

export type MethodStats = { [K in CompareMetric as `${K}_mean`]: number } & { [K in CompareMetric as `${K}_sd`]: number };

export interface CompareMethodSummary extends MethodStats {
  method: string;
  preset: ComparePreset;
  n: number;
  seeds: number[];
  seconds_mean: number;
  seconds_sd: number;
  /** Ratio of mean training seconds to conv-lora's / lora's; null when that method is not compared. */
  time_vs_conv_lora: number | null;
  time_vs_lora: number | null;
  trainable_params: number;
  adapter_params: number;
  /** Seed → derived ops (as in the runs), or null for methods without NAS cells. */
  derived_ops: Record<string, Record<string, string> | null> | null;
  /** Multi-class: pixel accuracy and each class's IoU, mean and sample sd over the seeds (seeds where a class is in neither map left out). */
  pixel_accuracy_mean?: number;
  pixel_accuracy_sd?: number;
  classes?: { names: string[]; iou_mean: number[]; iou_sd: number[] };
}

export interface CompareResult { runs: CompareRunRecord[]; methods: CompareMethodSummary[] }

export interface CompareOptions {
  /** One line of compare's own progress (default: stderr). */
  log?: (msg: string) => void;
  /** Progress of one run's training (default: a bar on a terminal, else JSON lines — both on stderr). */
  progress?: (label: string, cfg: RunConfig) => Progress;
}

export function formatDuration(s: number): string {
  const t = Math.max(0, Math.round(s));
  if (t < 60) return `${t}s`;
  if (t < 3600) return `${Math.floor(t / 60)}m${String(t % 60).padStart(2, '0')}s`;
  return `${Math.floor(t / 3600)}h${String(Math.floor((t % 3600) / 60)).padStart(2, '0')}m`;
}

interface SavedMetrics {
  trainable_parameters: number; adapter_parameters: number; seconds: number; scoring?: Scoring;
  test: (ImageMetrics & { count: number; pixelAccuracy?: number; classes?: ClassTable }) | null;
}

/** A finished run's record, from its folder (metrics.json, derived_ops.json): the same for fresh and skipped runs. */
export function readRunRecord(r: PlannedRun, status: RunStatus): CompareRunRecord {
  const m = JSON.parse(fs.readFileSync(path.join(r.runDir, 'metrics.json'), 'utf8')) as SavedMetrics;
  if (!m.test) throw new Error(`${r.runDir}/metrics.json has no test metrics`);
  const test = m.test;
  const metrics = Object.fromEntries(COMPARE_METRICS.map(([k, src]) => [k, test[src]])) as RunMetrics;
  let derived: Record<string, string> | null = null;
  const df = path.join(r.runDir, 'derived_ops.json');
  if (r.preset !== ZERO_SHOT && NAS_METHODS.includes(r.cfg.method.name) && fs.existsSync(df)) {
    const d = JSON.parse(fs.readFileSync(df, 'utf8')) as { derived?: Record<string, unknown> };
    // After the schedule a cell maps to its op name when discretized, else to its op weights: names only.
    derived = Object.fromEntries(Object.entries(d.derived ?? {}).filter((e): e is [string, string] => typeof e[1] === 'string'));
  }
  // Runs made before metrics.json recorded its scoring were scored at label size.
  const scoring = m.scoring ?? { test_resolution: 'label' as const, label_size: r.cfg.data.label_size ?? r.cfg.data.image_size };
  return {
    method: r.method, preset: r.preset, seed: r.seed, status, ...metrics, test_images: test.count,
    seconds: m.seconds, resolution: scoring.test_resolution, label_size: scoring.label_size,
    trainable_params: m.trainable_parameters, adapter_params: m.adapter_parameters,
    derived_ops: derived, run_dir: r.runDir,
    ...(test.classes ? { pixel_accuracy: test.pixelAccuracy, classes: { names: test.classes.names, iou: test.classes.iou, dice: test.classes.dice } } : {}),
  };
}

/** Zero-shot: the base checkpoint on the test split, no adapters, no training. */
async function runZeroShot(r: PlannedRun, log: (m: string) => void): Promise<void> {
  const cfg = r.cfg;
  const dist = processDist();
  const main = !dist || dist.isMain;
  if (main) {
    fs.mkdirSync(r.runDir, { recursive: true });
    writeFileAtomic(path.join(r.runDir, 'config.resolved.json'), JSON.stringify(cfg, null, 2) + '\n');
  }
  const splits = loadSplits(cfg, 0);
  const b = buildModel(cfg, log);
  let test: ImageMetrics & { count: number };
  try {
    const rep = await evaluateShards(b.seg, splits.test, cfg, dist);
    test = rep.summary;
    if (main) await writeTestDetails(r.runDir, b.seg, splits.test, rep.rows, cfg);
  } finally {
    b.sam.dispose();
  }
  if (main) writeFileAtomic(path.join(r.runDir, 'metrics.json'), JSON.stringify({
    method: ZERO_SHOT, trainable_parameters: 0, adapter_parameters: 0, seconds: 0, scoring: scoringOf(cfg), best: null, val: null, test,
  }, null, 2) + '\n');
  dist?.barrier('end of zero-shot');
}

/** Runs (or skips, or resumes) every planned run in order, then writes compare.json and compare.md. */
export async function runCompare(plan: ComparePlan, o: CompareOptions = {}): Promise<CompareResult> {
  // Data-parallel: every rank walks the same plan (each run is trained by all of them); rank 0
  // alone speaks, removes and writes.
  // Every run's device first: one this libtorch cannot give stops the compare before any run starts.
  const devices = plan.runs.map((r) => runtimeOf(r.cfg).device);
  const dist = processDist(devices.length ? { device: devices[0] } : {});
  const main = !dist || dist.isMain;
  const log = !main ? () => undefined : o.log ?? ((m: string) => process.stderr.write(m + '\n'));
  const progress = o.progress ?? ((label: string, cfg: RunConfig) => makeProgress(label, { logEvery: cfg.train.log_every, jsonStream: process.stderr }));
  for (const w of plan.warnings) log(`compare: note: ${w}`);
  const n = plan.runs.length;
  let toDo = plan.runs.filter((r) => r.state !== 'finished').length;
  const took: number[] = [];
  const records: CompareRunRecord[] = [];
  for (const [i, r] of plan.runs.entries()) {
    const head = `compare: run ${i + 1}/${n} ${r.method} seed ${r.seed}`;
    // The state is read again: the folder may have changed since the plan was made.
    const state = runStateOf(r.runDir);
    if (state === 'finished') {
      log(`${head}: finished earlier, skipped (${path.join(r.runDir, 'metrics.json')})`);
      records.push(readRunRecord(r, 'skipped'));
      if (r.state !== 'finished') toDo--;
      continue;
    }
    const eta = took.length ? formatDuration((took.reduce((a, b) => a + b, 0) / took.length) * toDo) : 'unknown';
    log(`${head} (ETA ${eta})`);
    const t0 = Date.now();
    let status: RunStatus;
    if (r.preset === ZERO_SHOT) {
      if (state !== 'absent' && main) fs.rmSync(r.runDir, { recursive: true, force: true });
      await runZeroShot(r, (m) => log(`compare: ${m}`));
      status = 'evaluated';
    } else if (state === 'resumable') {
      log(`compare: ${r.runDir} was interrupted: resuming from its last checkpoint`);
      await runTraining(r.cfg, { resume: true, progress: progress(`${r.method} seed ${r.seed}`, r.cfg) });
      status = 'resumed';
    } else {
      if (state === 'partial') {
        log(`compare: ${r.runDir} holds a partial run without a checkpoint: removing it and starting afresh`);
        if (main) fs.rmSync(r.runDir, { recursive: true, force: true });
        dist?.barrier('clearing a partial run folder');
      }
      await runTraining(r.cfg, { progress: progress(`${r.method} seed ${r.seed}`, r.cfg) });
      status = 'trained';
    }
    took.push((Date.now() - t0) / 1000);
    toDo--;
    records.push(readRunRecord(r, status));
  }
  const result: CompareResult = { runs: records, methods: summarize(plan.methods, records) };
  if (main) {
    writeFileAtomic(path.join(plan.outDir, 'compare.json'), JSON.stringify(result, null, 2) + '\n');
    writeFileAtomic(path.join(plan.outDir, 'compare.md'), formatCompareMarkdown(result));
  }
  return result;
}

// ---------------------------------------------------------------- statistics and tables

/** The method time is measured against: the entry named `name`, else the only entry with that preset. */
function reference(methods: readonly MethodEntry[], name: PresetName): string | null {
  if (methods.some((m) => m.name === name)) return name;
  const same = methods.filter((m) => m.preset === name);
  return same.length === 1 ? same[0]!.name : null;
}

export function summarize(methods: readonly MethodEntry[], runs: readonly CompareRunRecord[]): CompareMethodSummary[] {
  const base = methods.map((m) => {
    const rs = runs.filter((r) => r.method === m.name);
    const stats = {} as Record<string, number>;
    for (const [k] of COMPARE_METRICS) {
      stats[`${k}_mean`] = mean(rs.map((r) => r[k]));
      stats[`${k}_sd`] = sampleSd(rs.map((r) => r[k]));
    }
    const nas = rs.some((r) => r.derived_ops !== null);
    const mc = rs.find((r) => r.classes)?.classes;
    const perClass = (i: number) => rs.map((r) => r.classes?.iou[i]).filter((v): v is number => typeof v === 'number');
    const multi = mc ? {
      pixel_accuracy_mean: mean(rs.map((r) => r.pixel_accuracy ?? NaN)), pixel_accuracy_sd: sampleSd(rs.map((r) => r.pixel_accuracy ?? NaN)),
      classes: { names: mc.names, iou_mean: mc.names.map((_, i) => mean(perClass(i))), iou_sd: mc.names.map((_, i) => sampleSd(perClass(i))) },
    } : {};
    return {
      ...multi,
      method: m.name, preset: m.preset, n: rs.length, seeds: rs.map((r) => r.seed),
      ...(stats as MethodStats),
      seconds_mean: mean(rs.map((r) => r.seconds)), seconds_sd: sampleSd(rs.map((r) => r.seconds)),
      time_vs_conv_lora: null as number | null, time_vs_lora: null as number | null,
      trainable_params: rs[0]?.trainable_params ?? 0, adapter_params: rs[0]?.adapter_params ?? 0,
      derived_ops: nas ? Object.fromEntries(rs.map((r) => [String(r.seed), r.derived_ops])) : null,
    };
  });
  const ratio = (ref: string | null, s: number): number | null => {
    const d = base.find((b) => b.method === ref)?.seconds_mean;
    return d !== undefined && d > 0 ? s / d : null;
  };
  const conv = reference(methods, 'conv-lora');
  const lora = reference(methods, 'lora');
  for (const b of base) { b.time_vs_conv_lora = ratio(conv, b.seconds_mean); b.time_vs_lora = ratio(lora, b.seconds_mean); }
  return base;
}

/** `conv_3x3×2, skip×2` */
export function countOps(derived: Record<string, string>): string {
  const c = new Map<string, number>();
  for (const op of Object.values(derived)) c.set(op, (c.get(op) ?? 0) + 1);
  return [...c.entries()].sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0])).map(([op, k]) => `${op}×${k}`).join(', ');
}

export function formatCompareMarkdown(r: CompareResult): string {
  const f4 = (x: number) => (Number.isFinite(x) ? x.toFixed(4) : '—');
  const pm = (m: number, s: number, d = 4) => (Number.isFinite(m) ? `${m.toFixed(d)} ± ${s.toFixed(d)}` : '—');
  const ratio = (x: number | null) => (x === null ? '—' : x.toFixed(2));
  const int = (x: number) => x.toLocaleString('en-US');
  const row = (cells: Array<string | number>) => `| ${cells.join(' | ')} |`;
  const rule = (k: number) => row(Array.from({ length: k }, () => '---'));
  const seeds = [...new Set(r.runs.map((x) => x.seed))];
  const images = [...new Set(r.runs.map((x) => x.test_images))];
  const scored = [...new Set(r.runs.map((x) => (x.resolution === 'label' ? `at label size ${x.label_size}` : 'at original resolution')))];
  const out: string[] = [
    '# naslora compare', '',
    `${r.methods.length} method(s) × ${seeds.length} seed(s) (${seeds.join(', ')}); test split, ${images.join('/')} images, scored ${scored.join(' / ')} (eval.resolution); ` +
      'same data, splits, steps, batch and evaluation for every run. Metrics: mean ± sample sd over seeds; seconds: training time (final evaluation excluded).', '',
  ];
  const head = ['method', 'n', 'Dice', 'IoU', 'S', 'E', 'wF', 'MAE', 'seconds', 'time ÷ Conv-LoRA', 'time ÷ LoRA', 'trainable params', 'encoder adapter params'];
  out.push(row(head), rule(head.length));
  for (const m of r.methods) {
    out.push(row([
      m.method, m.n, pm(m.dice_mean, m.dice_sd), pm(m.iou_mean, m.iou_sd), pm(m.s_measure_mean, m.s_measure_sd), pm(m.e_measure_mean, m.e_measure_sd),
      pm(m.wf_measure_mean, m.wf_measure_sd), pm(m.mae_mean, m.mae_sd), pm(m.seconds_mean, m.seconds_sd, 1),
      ratio(m.time_vs_conv_lora), ratio(m.time_vs_lora), int(m.trainable_params), int(m.adapter_params),
    ]));
  }
  const runHead = ['method', 'seed', 'Dice', 'IoU', 'S', 'E', 'wF', 'MAE', 'seconds', 'trainable params', 'encoder adapter params', 'this invocation', 'run folder'];
  out.push('', '## Runs', '', row(runHead), rule(runHead.length));
  for (const x of r.runs) {
    out.push(row([
      x.method, x.seed, f4(x.dice), f4(x.iou), f4(x.s_measure), f4(x.e_measure), f4(x.wf_measure), f4(x.mae), x.seconds.toFixed(1),
      int(x.trainable_params), int(x.adapter_params), x.status, `\`${x.run_dir}\``,
    ]));
  }
  const mc = r.methods.filter((m) => m.classes);
  if (mc.length) {
    const names = mc[0]!.classes!.names;
    const h = ['method', 'pixel accuracy', ...names.map((n) => `IoU ${n}`)];
    out.push('', '## Per class (multi-class)', '', 'Dice and IoU above are mDice and mIoU (per-class sums over the test split, mean over the classes present). Per-class IoU: mean ± sample sd over seeds.', '', row(h), rule(h.length));
    for (const m of mc) out.push(row([m.method, pm(m.pixel_accuracy_mean!, m.pixel_accuracy_sd!), ...m.classes!.iou_mean.map((v, i) => pm(v, m.classes!.iou_sd[i]!))]));
  }
  const nas = r.runs.filter((x) => x.derived_ops !== null);
  if (nas.length) {
    out.push('', '## NAS derived ops', '', 'Count of each derived op over the adapted layers (full map per layer in compare.json).', '', row(['method', 'seed', 'derived ops']), rule(3));
    for (const x of nas) out.push(row([x.method, x.seed, Object.keys(x.derived_ops!).length ? countOps(x.derived_ops!) : '(not discretized)']));
  }
  return out.join('\n') + '\n';
}
