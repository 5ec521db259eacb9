// One training run from a validated config: data splits, the model (a SAM checkpoint or fresh
// weights), adapters, the stage-wise training, and a final test evaluation.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { autocast, manualSeed, resolveDevice, type Device, type Module, type Precision } from '../engine/index.js';
import { countByPart, formatCounts, injectAdapters, setTrainable, sha256File, type AdapterConfig, type InjectedLayer, type Part } from '../adapters/index.js';
import { Sam, SAM_PRESETS, type SamConfig, type SamPresetName } from '../model/sam/sam.js';
import { loadSamFile } from '../model/sam/build.js';
import { segmentClassLogits, segmentLogits } from '../model/sam/segment.js';
import { attentionImpl } from '../model/sam/image_encoder.js';
import { classSpecOf, effectiveArchFrac, type RunConfig } from './config.js';
import { hashSeed, loadDataset, makeSplits } from '../data/dataset.js';
import type { SampleSource } from '../data/loader.js';
import { makeSyntheticDomain } from '../data/synthetic.js';
import { evaluateShards, formatScores, saveTestExamples, train, type SegModel, type TrainResult } from './trainer.js';
import { distEnvFromProcess, processDist } from './dist.js';
import { makeProgress, silentProgress, type Progress } from './progress.js';
import { writeFileAtomic } from '../io/atomic.js';
import type { ImageMetrics, MetricRow } from '../eval/metrics.js';

export interface Splits { train: SampleSource[]; val: SampleSource[]; test: SampleSource[]; arch: SampleSource[] }

/** The run's data: a folder/CSV with its splits, or a synthetic domain split by fractions. */
export function loadSplits(cfg: RunConfig, archFrac: number): Splits {
  const opts = { seed: cfg.data.splits.seed, fractions: cfg.data.splits.fractions, archFrac };
  if (cfg.data.synthetic) {
    const s = cfg.data.synthetic;
    return makeSplits({ samples: makeSyntheticDomain(s.kind, s.n, s.size, s.seed).samples, givenSplits: null }, opts);
  }
  const { splits } = loadDataset(cfg.data.dir!, { ...opts, maskSuffix: cfg.data.mask_suffix });
  return splits;
}

/** A SAM configuration by preset name or JSON file (a config object, or a file with a `config` field). */
export function resolveSamConfig(nameOrFile: string): SamConfig {
  if (nameOrFile in SAM_PRESETS) return SAM_PRESETS[nameOrFile as SamPresetName];
  if (!fs.existsSync(nameOrFile)) throw new Error(`model config '${nameOrFile}' is neither a preset (${Object.keys(SAM_PRESETS).join(', ')}) nor a JSON file`);
  const j = JSON.parse(fs.readFileSync(nameOrFile, 'utf8')) as SamConfig | { config: SamConfig };
  return 'config' in j ? j.config : j;
}

/** Where a run computes and in which precision, resolved (runtime.device 'auto' → cpu or cuda:N). */
export interface Runtime { device: Device; precision: Precision }

/**
 * The run's runtime: runtime.device resolved for this process (data-parallel: cuda:LOCAL_RANK, one
 * GPU per process). 'cuda' on a libtorch without CUDA throws here, before anything is loaded.
 */
export function runtimeOf(cfg: RunConfig): Runtime {
  const env = distEnvFromProcess();
  const device = resolveDevice(cfg.runtime.device, { localRank: env?.localRank, localWorldSize: env?.localWorldSize, what: 'runtime.device' });
  return { device, precision: cfg.runtime.precision };
}

/** What metrics.json records about where the run computed. */
export function runtimeRecord(rt: Runtime): { device: string; precision: Precision; attention: 'sdpa' | 'explicit' } {
  return { device: rt.device, precision: rt.precision, attention: attentionImpl() };
}

export interface BuiltModel { sam: Sam; seg: SegModel; layers: InjectedLayer[]; baseSha256: string | null; config: SamConfig; runtime: Runtime }

/**
 * SAM (from the checkpoint, or fresh weights) with the run's adapters in it, moved once to the
 * run's device; its forward runs in the run's precision and returns fp32 logits.
 */
export function buildModel(cfg: RunConfig, log: (m: string) => void, rt: Runtime = runtimeOf(cfg)): BuiltModel {
  let sam: Sam;
  let baseSha256: string | null = null;
  let config: SamConfig;
  if (cfg.model.pretrained === 'sam') {
    const file = cfg.model.checkpoint!;
    if (!fs.existsSync(file)) throw new Error(`model.checkpoint ${file} does not exist`);
    // model.config, when set, is checked against the checkpoint (its shapes and its own configuration)
    // in full; the input size is data.image_size's to choose.
    let given: Partial<SamConfig> | undefined;
    if (cfg.model.config !== null) {
      const { img_size: _inputSize, ...rest } = resolveSamConfig(cfg.model.config);
      given = rest;
    }
    let loaded;
    try {
      loaded = loadSamFile(file, { config: given, imgSize: cfg.data.image_size });
    } catch (e) {
      throw new Error(`model.checkpoint ${file}${given ? ` with model.config ${cfg.model.config}` : ''}: ${(e as Error).message}`);
    }
    sam = loaded.model;
    config = loaded.config;
    baseSha256 = sha256File(file);
    if (loaded.resized.length) log(`input size ${cfg.data.image_size}: interpolated ${loaded.resized.join(', ')}`);
  } else {
    manualSeed(cfg.train.seed);
    if (cfg.model.config === null) throw new Error('model.config: required when model.pretrained=none (a preset name or a SAM config JSON)');
    config = { ...resolveSamConfig(cfg.model.config), img_size: cfg.data.image_size };
    sam = Sam.fromConfig(config);
  }
  // The adapters' initial values (A, NAS ops, Conv-LoRA experts) come from train.seed, not from
  // whatever the process drew before (an earlier run of a compare, a loaded checkpoint).
  manualSeed(hashSeed(cfg.train.seed, 'adapters'));
  const layers = injectAdapters(sam, cfg.method as AdapterConfig);
  // Multi-class: one output token and hypernetwork per class, copies of SAM's mask token (SAMed).
  const spec = classSpecOf(cfg);
  if (spec) sam.mask_decoder.addClassHeads(spec.names.length);
  // Everything the model holds (SAM, adapters, NAS α, Conv-LoRA experts) moves once, here.
  sam.to(rt.device);
  const segment: SegModel['forward'] = spec ? (images) => segmentClassLogits(sam, images) : (images, prompts) => segmentLogits(sam, images, prompts);
  const seg: SegModel = { module: sam, forward: (images, prompts) => autocast(rt, () => segment(images, prompts)) };
  return { sam, seg, layers, baseSha256, config, runtime: rt };
}

export interface RunOutcome extends TrainResult {
  test: (ImageMetrics & { count: number }) | null;
  /** Scores on the training data (scoreTrainWhenNothingHeldOut), else null. */
  trainScore: (ImageMetrics & { count: number }) | null;
  /** Parameters trained over the schedule (adapter + e.g. decoder), and the encoder adapter's alone. */
  trainable: number;
  adapterParams: number;
  runDir: string;
}

/** How a run's scores were made (metrics.json `scoring`, compare.json): split, resolution, label size. */
export interface Scoring { periodic_split: 'val' | 'test'; test_resolution: 'label' | 'original'; label_size: number; metrics: string[] }

export function scoringOf(cfg: RunConfig): Scoring {
  return { periodic_split: cfg.eval.split, test_resolution: cfg.eval.resolution, label_size: cfg.data.label_size ?? cfg.data.image_size, metrics: [...cfg.eval.metrics] };
}

export interface RunOptions {
  resume?: boolean;
  progress?: Progress;
  runDir?: string;
  afterTrain?: (b: BuiltModel) => void;
  /** What the run is called in progress lines and metrics.json `method` (default: method.name). */
  label?: string;
  /** With neither a val nor a test split, score the training split (no augmentation), as metrics.json `train`. */
  scoreTrainWhenNothingHeldOut?: boolean;
}

export async function runTraining(cfg: RunConfig, o: RunOptions = {}): Promise<RunOutcome> {
  const runDir = o.runDir ?? cfg.train.out_dir;
  const label = o.label ?? cfg.method.name;
  // First: a device this libtorch cannot give ends the run before anything is read or written.
  const rt = runtimeOf(cfg);
  const dist = processDist({ device: rt.device });
  const main = !dist || dist.isMain;
  // Ranks other than 0 train silently: rank 0 speaks (and writes) for the group.
  const progress = !main ? silentProgress : o.progress ?? makeProgress(label, { logEvery: cfg.train.log_every });
  if (dist && cfg.data.batch_size % dist.worldSize !== 0)
    throw new Error(`data-parallel: data.batch_size ${cfg.data.batch_size} is the global batch and must divide evenly over the ${dist.worldSize} ranks`);
  if (dist) progress.log(`data-parallel: ${dist.worldSize} ranks, ${cfg.data.batch_size / dist.worldSize} samples each per batch (global batch ${cfg.data.batch_size})`);
  const splits = loadSplits(cfg, effectiveArchFrac(cfg));
  if (!splits.train.length) throw new Error('the training split is empty');
  progress.log(`data: ${splits.train.length} train, ${splits.val.length} val, ${splits.test.length} test, ${splits.arch.length} arch`);
  const periodic = cfg.eval.split === 'test' ? splits.test : splits.val;
  if (cfg.eval.split === 'test') progress.log('eval.split=test: the periodic evaluation runs on the test split and picks checkpoints/best there (its test score is then optimistic)');
  const built = buildModel(cfg, (m) => progress.log(m), rt);
  // The decoder predicts at 4× the embedding grid; the loss sees the logits resized to the label size.
  // Below the decoder's size, bilinear downsampling averages neighbouring logits and the loss never
  // constrains how they differ: maps at full resolution (eval.resolution=original, predict) come out worse.
  const lowRes = 4 * Math.floor(cfg.data.image_size / built.config.patch_size);
  if ((cfg.data.label_size ?? cfg.data.image_size) < lowRes)
    progress.log(`warning: data.label_size ${cfg.data.label_size} is below the decoder's output size ${lowRes}×${lowRes}: the loss constrains only a downsampled version of its maps, so predictions at full resolution (eval.resolution=original, naslora predict/eval) score lower than the label-size scores; set data.label_size ≥ ${lowRes} (or null) when those matter`);
  if (rt.device !== 'cpu' || rt.precision !== 'fp32') progress.log(`runtime: ${rt.device}, precision ${rt.precision}, encoder attention ${attentionImpl()}`);
  try {
    setTrainable(built.sam, cfg.schedule.stages[0].train as Part[]);
    const counts = countByPart(built.sam);
    progress.log(`${o.label ?? `method ${cfg.method.name}`}: ${built.layers.length} adapted layers; trainable parameters by part (first stage):\n${formatCounts(counts)}`);
    const result = await train({
      cfg, model: built.seg, layers: built.layers, train: splits.train, val: periodic, arch: splits.arch,
      runDir, baseSha256: built.baseSha256, progress, resume: o.resume, dist,
    });
    const testReport = splits.test.length ? await evaluateShards(built.seg, splits.test, cfg, dist) : null;
    const test = testReport?.summary ?? null;
    if (testReport && main) await writeTestDetails(runDir, built.seg, splits.test, testReport.rows, cfg);
    let trainScore: (ImageMetrics & { count: number }) | null = null;
    if (o.scoreTrainWhenNothingHeldOut && !splits.val.length && !splits.test.length) {
      trainScore = (await evaluateShards(built.seg, splits.train, cfg, dist)).summary;
      progress.log(`nothing held out: scored on the training data (not a held-out estimate): ${formatScores(trainScore)}`);
    }
    if (main) o.afterTrain?.(built);
    const trainable = adapterParamCount(built.sam, cfg);
    const adapterParams = countByPart(built.sam).filter((c) => ['lora', 'ops', 'alpha'].includes(c.part)).reduce((a, c) => a + c.total, 0);
    if (main) writeFileAtomic(path.join(runDir, 'metrics.json'), JSON.stringify({
      method: label, trainable_parameters: trainable, adapter_parameters: adapterParams, seconds: result.seconds, scoring: scoringOf(cfg), runtime: runtimeRecord(rt),
      best: result.best ? { ...result.best, split: cfg.eval.split } : null, val: cfg.eval.split === 'val' ? result.final : null, test,
      ...(trainScore ? { train: trainScore, train_note: 'no val or test split: scored on the training data, not held out' } : {}),
    }, null, 2) + '\n');
    // Nobody goes on (e.g. to a compare's next run, which reads this folder) before rank 0 has written.
    dist?.barrier('end of run');
    return { ...result, test, trainScore, trainable, adapterParams, runDir };
  } finally {
    built.sam.dispose();
  }
}

/** Parameters the method trains over the whole schedule (any stage), α included. */
export function adapterParamCount(model: Module, cfg: RunConfig): number {
  const parts = new Set<Part>(cfg.schedule.stages.flatMap((s) => [...(s.train as Part[]), ...(s.optimize_alpha ? ['alpha' as const] : [])]));
  setTrainable(model, [...parts]);
  return countByPart(model).reduce((s, c) => s + c.trainable, 0);
}

/**
 * The test split in detail, for the report: test_per_image.json (each image's metrics, at the
 * resolution of metrics.json's test scores) and examples/ (a few images with their prediction at
 * original resolution).
 */
export async function writeTestDetails(runDir: string, model: SegModel, items: SampleSource[], rows: MetricRow[], cfg: RunConfig): Promise<void> {
  const scoring = scoringOf(cfg);
  writeFileAtomic(path.join(runDir, 'test_per_image.json'), JSON.stringify({
    split: 'test', resolution: scoring.test_resolution, label_size: scoring.label_size, rows: rows.map(({ name, ...m }) => ({ id: name, ...m })),
  }) + '\n');
  await saveTestExamples(model, items, rows, cfg, path.join(runDir, 'examples'));
}
