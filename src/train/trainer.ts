// The training loop: declarative stages (warm-up → search → fix by default), AdamW with a
// schedule, gradient accumulation and clipping, α with its own Adam (joint or alternate), periodic
// evaluation, atomic checkpoints and exact resume.
//
// Determinism: libtorch is re-seeded from (seed, step) before every step, and batches are a pure
// function of (seed, epoch, position), so a resumed run repeats the uninterrupted run's losses.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { Adam, AdamW, F, clipGradNorm, manualSeed, memory, tensor, tidy, type Device, type Module, type Tensor } from '../engine/index.js';
import { ConvLoraLayer, auxLoss, crossReplica, countByPart, loadAdapterState, nasCells, partOf, saveAdapter, setTrainable, type AdapterClasses, type AdapterConfig, type InjectedLayer, type Part } from '../adapters/index.js';
import type { ClassSpec } from '../data/classes.js';
import { meanOfRows, type ImageMetrics, type MetricRow } from '../eval/metrics.js';
import { classSummary, isClassSummary, type ClassRow } from '../eval/multiclass.js';
import { evaluateAtLabelSize, evaluateOriginal, type EvalReport, type Resolution } from '../eval/evaluate.js';
import { pickExamples, saveExamples, type ExamplesFile } from '../eval/examples.js';
import { METRIC_FIELDS, classSpecOf, type RunConfig, type StageConfig } from './config.js';
import { SampleCache, batchCount, batchPrompts, iterateBatches, shardRange, type Batch, type BatchPrompts, type SampleSource } from '../data/loader.js';
import type { DataParallel } from './dist.js';
import { hashSeed } from '../data/dataset.js';
import { lossByName, multiclassLoss, type LossFn, type LossName } from './losses.js';
import { learningRate } from './lr.js';
import { RunDir } from './run_dir.js';
import { loadOptimizers, saveOptimizers, type SavedOptimizers } from './state.js';
import type { Progress } from './progress.js';
import { NasSearch, planStages, type SearchState, type StagePlan } from './search.js';

export { planStages, type StagePlan };

/** A segmentation model as the trainer sees it. */
export interface SegModel {
  module: Module;
  /** Normalized images (B, 3, S, S), optional prompts → low-res mask logits (B, 1, h, w); multi-class: (B, K, h, w). */
  forward(images: Tensor, prompts: BatchPrompts | null): Tensor;
}

/** What an adapter file records of the run's classes (null: binary). */
export function adapterClasses(spec: ClassSpec | null): AdapterClasses | null {
  return spec ? { names: [...spec.names], colours: spec.colours, ignore_index: spec.ignoreIndex } : null;
}

/** The run's task loss on (logits, targets as toTensors makes them). */
export function taskLoss(cfg: RunConfig): LossFn {
  const spec = classSpecOf(cfg);
  if (!spec) return lossByName(cfg.loss as LossName);
  const o = { weight: cfg.data.classes!.loss_weights, ignoreIndex: spec.ignoreIndex, diceWeight: cfg.loss === 'ce-dice' ? 1 : 0 };
  return (logits, target) => multiclassLoss(logits, target, o);
}

export interface TrainInputs {
  cfg: RunConfig;
  model: SegModel;
  layers: InjectedLayer[];
  train: SampleSource[];
  val: SampleSource[];
  arch: SampleSource[];
  runDir: string;
  baseSha256: string | null;
  progress: Progress;
  resume?: boolean;
  /** Data-parallel: this process's rank in the group (null: one process). */
  dist?: DataParallel | null;
}

export interface TrainResult { steps: number; losses: number[]; best: { step: number; dice: number } | null; seconds: number; final: ImageMetrics | null }

interface TrainerState {
  step: number;
  stage: string;
  best: { step: number; dice: number } | null;
  losses: number[];
  seconds: number;
  search?: SearchState;
}


function partsOf(stage: StageConfig): Part[] {
  return [...stage.train, ...(stage.optimize_alpha ? ['alpha' as const] : [])];
}

export function totalSteps(cfg: RunConfig, nTrain: number): { total: number; perEpoch: number } {
  const perEpoch = batchCount(nTrain, cfg.data.batch_size, false);
  const micro = cfg.train.steps !== null ? cfg.train.steps * cfg.optim.grad_accum : (cfg.train.epochs ?? 1) * perEpoch;
  return { total: Math.max(1, Math.ceil(micro / cfg.optim.grad_accum)), perEpoch };
}

/** data.cache: decoded samples are kept in memory for the whole process (small sets), shared by training and evaluation. */
const sampleCache = new SampleCache();
function cacheFor(cfg: RunConfig): SampleCache | null {
  return cfg.data.cache ? sampleCache : null;
}

/** Endless deterministic micro-batch stream starting at global micro-batch index `from`. */
async function* microBatches(items: SampleSource[], cfg: RunConfig, from: number, seedTag: string, dist: DataParallel | null = null): AsyncGenerator<Batch> {
  const perEpoch = batchCount(items.length, cfg.data.batch_size, false);
  let epoch = Math.floor(from / perEpoch);
  let start = from % perEpoch;
  for (;;) {
    yield* iterateBatches(items, {
      imageSize: cfg.data.image_size, labelSize: cfg.data.label_size ?? cfg.data.image_size, resize: cfg.data.resize,
      threshold: cfg.data.threshold, classes: classSpecOf(cfg), augment: { hflip: cfg.data.augment.hflip, cropScale: cfg.data.augment.crop_scale },
      batchSize: cfg.data.batch_size, seed: hashSeed(cfg.train.seed, seedTag), epoch, shuffle: true,
      prefetch: cfg.data.prefetch, workers: cfg.data.num_workers, startBatch: start, cache: cacheFor(cfg),
      shard: dist ? { rank: dist.rank, world: dist.worldSize } : null,
    });
    epoch += 1;
    start = 0;
  }
}

/** A batch as tensors on the model's device (one host-to-device copy each): masks (B, 1, L, L) float, or class indices (B, L, L) int64. */
function toTensors(b: Batch, device: Device, multiClass: boolean): { images: Tensor; masks: Tensor } {
  return {
    images: tensor(b.images, [b.batchSize, 3, b.imageSize, b.imageSize], { device }),
    masks: multiClass
      ? tensor(b.masks, [b.batchSize, b.labelSize, b.labelSize], { device, dtype: 'int64' })
      : tensor(b.masks, [b.batchSize, 1, b.labelSize, b.labelSize], { device }),
  };
}

/** Low-res logits → label-size logits (bilinear), as the Conv-LoRA protocol computes the loss. */
export function upsampleLogits(lowRes: Tensor, size: number): Tensor {
  const [, , h, w] = lowRes.shape;
  return h === size && w === size ? lowRes : F.interpolate(lowRes, { size: [size, size], mode: 'bilinear', alignCorners: false });
}

/** Mean metrics (eval.metrics) of the model on items, at label size. */
export async function evaluate(model: SegModel, items: SampleSource[], cfg: RunConfig, threshold: number, dist: DataParallel | null = null): Promise<ImageMetrics & { count: number }> {
  return (await evaluateShards(model, items, cfg, dist, { threshold, resolution: 'label' })).summary;
}

/**
 * evaluateReport on this rank's contiguous shard of items; the per-image rows of every rank are
 * gathered in rank order (= the items' order), and the means are taken over them exactly as one
 * process would. Without dist, evaluateReport itself.
 */
export async function evaluateShards(model: SegModel, items: SampleSource[], cfg: RunConfig, dist: DataParallel | null, o: { threshold?: number; resolution?: Resolution } = {}): Promise<EvalReport> {
  if (!dist) return evaluateReport(model, items, cfg, o);
  const [a, b] = shardRange(items.length, dist.rank, dist.worldSize);
  const mine = a < b ? (await evaluateReport(model, items.slice(a, b), cfg, o)).rows : [];
  const rows = dist.gather('eval-rows', mine).flat();
  const spec = classSpecOf(cfg);
  return { rows, summary: spec ? classSummary(rows as ClassRow[], spec.names) : meanOfRows(rows, cfg.eval.metrics.map((m) => METRIC_FIELDS[m])) };
}

/**
 * The model on items as the run config says: eval.metrics, at label size (batched; prompts from the
 * ground truth in prompted mode) or at each image's original resolution (eval.resolution's choices).
 */
export async function evaluateReport(model: SegModel, items: SampleSource[], cfg: RunConfig, o: { threshold?: number; resolution?: Resolution } = {}): Promise<EvalReport> {
  const common = {
    imageSize: cfg.data.image_size, resize: cfg.data.resize, threshold: cfg.data.threshold, probThreshold: o.threshold ?? cfg.eval.threshold,
    metrics: cfg.eval.metrics.map((m) => METRIC_FIELDS[m]), cache: cacheFor(cfg), device: model.module.device as Device, classes: classSpecOf(cfg),
  };
  model.module.eval();
  try {
    if ((o.resolution ?? cfg.eval.resolution) === 'original') return await evaluateOriginal({ forward: (x) => model.forward(x, null) }, items, common);
    return await evaluateAtLabelSize(model, items, {
      ...common, labelSize: cfg.data.label_size ?? cfg.data.image_size, batchSize: cfg.data.batch_size, workers: cfg.data.num_workers, prefetch: cfg.data.prefetch,
      prompts: cfg.data.mode === 'prompted' ? (b) => batchPrompts(b, { box: cfg.data.prompts.box, jitterFrac: 0, nPos: cfg.data.prompts.n_pos, nNeg: cfg.data.prompts.n_neg, seed: 0 }) : undefined,
    });
  } finally {
    model.module.train();
  }
}

/** The test examples (best/median/worst by Dice, and the first few) with predictions at original resolution, into dir. */
export async function saveTestExamples(model: SegModel, items: SampleSource[], rows: MetricRow[], cfg: RunConfig, dir: string, o: { fixed?: number; split?: string } = {}): Promise<ExamplesFile> {
  model.module.eval();
  try {
    return await saveExamples(dir, model, items, pickExamples(rows, items.map((s) => s.id), o.fixed ?? 3), rows, {
      imageSize: cfg.data.image_size, labelSize: cfg.data.label_size ?? cfg.data.image_size, resize: cfg.data.resize, threshold: cfg.data.threshold,
      probThreshold: cfg.eval.threshold, cache: cacheFor(cfg), split: o.split, device: model.module.device as Device, classes: classSpecOf(cfg),
      prompts: cfg.data.mode === 'prompted' ? (b) => batchPrompts(b, { box: cfg.data.prompts.box, jitterFrac: 0, nPos: cfg.data.prompts.n_pos, nNeg: cfg.data.prompts.n_neg, seed: 0 }) : undefined,
    });
  } finally {
    model.module.train();
  }
}

export async function train(inp: TrainInputs): Promise<TrainResult> {
  const { cfg, model, layers } = inp;
  const dist = inp.dist ?? null;
  // The model was moved to its device once (run.ts); batches follow it there.
  const device = model.module.device as Device;
  // Rank 0 alone writes the run folder; the others read it (resume) and compute.
  const run = new RunDir(inp.runDir, { write: !dist || dist.isMain });
  const { total } = totalSteps(cfg, inp.train.length);
  const plan = planStages(cfg.schedule.stages, total);
  const loss = taskLoss(cfg);
  const multiClass = classSpecOf(cfg) !== null;
  const accum = cfg.optim.grad_accum;
  const cells = nasCells(layers);
  const alternate = cfg.schedule.alpha_optim.mode === 'alternate';

  // One optimizer over everything any stage trains (parameters without a gradient are skipped),
  // and α's own Adam, as in DARTS.
  const named = model.module.namedParameters();
  const stageParts = new Set(cfg.schedule.stages.flatMap((s) => s.train as Part[]));
  const weightParams = named.filter(([n]) => stageParts.has(partOf(n)) && partOf(n) !== 'alpha').map(([, p]) => p);
  const alphaParams = cells.map((c) => c.cell.alpha);
  const opt = new AdamW(weightParams, { lr: cfg.optim.lr, weightDecay: cfg.optim.weight_decay, betas: cfg.optim.betas, eps: cfg.optim.eps });
  const search = new NasSearch(cfg, plan, cells, (e, msg) => {
    run.append('events.jsonl', e);
    inp.progress.log(msg);
  });
  const alphaOpt = alphaParams.length
    ? new Adam(alphaParams, { lr: search.alphaLr, betas: cfg.schedule.alpha_optim.betas, weightDecay: cfg.schedule.alpha_optim.weight_decay })
    : null;
  if (cells.length && search.steps > 0) inp.progress.log(`search: ${search.describe()}`);

  let state: TrainerState = { step: 0, stage: '', best: null, losses: [], seconds: 0 };
  if (inp.resume) {
    const dir = run.findCheckpoint('last');
    if (!dir) throw new Error(`--resume: no checkpoint in ${run.checkpointDir('last')}`);
    const saved = JSON.parse(fs.readFileSync(path.join(dir, 'trainer_state.json'), 'utf8')) as TrainerState & { optimizers: SavedOptimizers };
    loadAdapterState(dir, model.module);
    loadOptimizers(dir, saved.optimizers, { main: opt as never, alpha: alphaOpt as never });
    state = { step: saved.step, stage: saved.stage, best: saved.best, losses: saved.losses, seconds: saved.seconds };
    search.state = saved.search ?? { stable: {}, discretized: {} };
    run.truncateEvents('events.jsonl', (e) => (e.step ?? 0) <= state.step);
    run.truncateEvents('alpha_history.jsonl', (e) => (e.step ?? 0) <= state.step);
    inp.progress.log(`resumed from ${dir} at step ${state.step}/${total}`);
    // The data order is a function of (seed, epoch, position in the global batch) and each rank
    // takes a slice of the global batch, so a different world size continues the same sample order.
    const was = (saved as { world_size?: number }).world_size ?? 1;
    const now = dist?.worldSize ?? 1;
    if (was !== now) inp.progress.log(`resumed with ${now} process(es), saved with ${was}: the global batches are the same (the order does not depend on the world size); only per-rank random draws (Conv-LoRA's gate noise, prompt jitter) differ`);
  } else {
    run.writeJson('config.resolved.json', cfg);
  }

  if (dist) {
    // A rank whose slice of the last (short) batch is empty skips that forward; Conv-LoRA cannot, as
    // its forward takes part in collectives (the load-balancing sums).
    const tail = inp.train.length % cfg.data.batch_size;
    if (tail > 0 && tail < dist.worldSize && layers.some((l) => l.layer instanceof ConvLoraLayer))
      throw new Error(`data-parallel Conv-LoRA: the last batch of each epoch has ${tail} sample(s) (${inp.train.length} training samples, data.batch_size ${cfg.data.batch_size}), fewer than the ${dist.worldSize} ranks; every rank needs a sample in every batch (Conv-LoRA's load-balancing loss is summed across ranks in the forward): change data.batch_size`);
    // One source of truth for the starting weights (a resumed run has just loaded them on every rank).
    dist.broadcastModule(model.module);
    crossReplica.sum = (t) => dist.allreduceSum(t);
  }
  const trainIt = microBatches(inp.train, cfg, state.step * accum, 'train', dist);
  // Alternate mode: α steps on batches of its stage's alpha_split ('arch': the held-out arch split;
  // 'train': a second stream over the training split), one per search step, so a stream's position
  // is the number of earlier α steps on that split.
  const alphaStepsBefore = (split: string, step: number): number =>
    plan.filter((q) => q.stage.optimize_alpha && q.stage.alpha_split === split).reduce((n, q) => n + Math.max(0, Math.min(q.end, step) - q.start), 0);
  const usesSplit = (split: string): boolean => cfg.schedule.stages.some((st) => st.optimize_alpha && st.alpha_split === split);
  const archIt = alternate && inp.arch.length && usesSplit('arch') ? microBatches(inp.arch, cfg, alphaStepsBefore('arch', state.step), 'arch', dist) : null;
  const alphaTrainIt = alternate && usesSplit('train') ? microBatches(inp.train, cfg, alphaStepsBefore('train', state.step), 'alpha-train', dist) : null;
  // Data-parallel: this rank's loss is weighted by its share of the global batch (×world, as the
  // gradients are averaged), so the average is the global batch's mean loss; the load-balancing
  // loss is already global (crossReplica) and its gradient is split over the ranks: ×world too.
  const share = (b: Batch) => (dist ? (b.batchSize * dist.worldSize) / (b.globalSize ?? b.batchSize) : 1);
  const lossOf = (b: Batch, out: Tensor, masks: Tensor): { total: Tensor; reported: Tensor } => {
    const task = loss(out, masks);
    const aux = auxLoss(layers);
    if (!dist) {
      const total = aux ? task.add(aux) : task;
      return { total, reported: total };
    }
    const w = dist.worldSize;
    return {
      total: aux ? task.mul(share(b)).add(aux.mul(w)) : task.mul(share(b)),
      // what this rank adds to the global loss (summed over ranks): its task share, and the aux once
      reported: aux ? task.mul(share(b) / w).add(aux.div(w)) : task.mul(share(b) / w),
    };
  };
  let lastEval: ImageMetrics | null = null;
  const t0 = Date.now() - state.seconds * 1000;
  let current: StagePlan | null = null;


  const enterStage = (p: StagePlan, fresh: boolean) => {
    current = p;
    setTrainable(model.module, partsOf(p.stage));
    if (fresh && p.stage.discretize_at_entry) {
      search.discretizeAll(state.step);
      run.writeJson('derived_ops.json', search.record(state.step, p.stage.name));
      inp.progress.log(`stage ${p.stage.name}: cells discretized: ${summarizeOps(cells.map((c) => c.cell.derived!))}`);
    }
    search.refreeze();
    if (fresh) run.append('events.jsonl', { type: 'stage', step: state.step, stage: p.stage.name, end: p.end, total, trainable: countByPart(model.module) });
    inp.progress.log(`stage ${p.stage.name} (steps ${p.start}–${p.end}): training ${partsOf(p.stage).join(', ')}`);
  };

  model.module.train();
  inp.progress.start(total, state.step);
  for (; state.step < total; state.step++) {
    const p = plan.find((q) => state.step >= q.start && state.step < q.end)!;
    if (current !== p) enterStage(p, state.stage !== p.stage.name);
    state.stage = p.stage.name;
    manualSeed(hashSeed(cfg.train.seed, 'step', state.step));
    const lr = learningRate(state.step, total, cfg.optim);
    for (const g of opt.groups) g.hyper.lr = lr;
    const searching = p.stage.optimize_alpha && alphaOpt !== null;
    if (cells.length) search.beforeStep(state.step);

    // Alternate (first-order DARTS): α steps on a batch of its split with the weights fixed.
    const alphaIt = p.stage.alpha_split === 'arch' ? archIt : alphaTrainIt;
    if (searching && alternate && alphaIt) {
      const b = (await alphaIt.next()).value as Batch;
      setTrainable(model.module, ['alpha']);
      alphaOpt!.zeroGrad();
      if (b.batchSize > 0) tidy(() => {
        const { images, masks } = toTensors(b, device, multiClass);
        const out = upsampleLogits(model.forward(images, promptsFor(b, cfg, state.step)), b.labelSize);
        const l = lossOf(b, out, masks).total;
        const r = search.regularizer();
        (r ? l.add(r) : l).backward();
      });
      dist?.reduceGradients(alphaParams);
      alphaOpt!.step();
      setTrainable(model.module, partsOf(p.stage).filter((x) => x !== 'alpha'));
    }

    let stepLoss = 0;
    opt.zeroGrad();
    if (searching && !alternate) alphaOpt!.zeroGrad();
    for (let k = 0; k < accum; k++) {
      const b = (await trainIt.next()).value as Batch;
      if (b.batchSize === 0) continue;  // data-parallel: no sample of a short last batch for this rank
      stepLoss += tidy(() => {
        const { images, masks } = toTensors(b, device, multiClass);
        const out = upsampleLogits(model.forward(images, promptsFor(b, cfg, state.step * accum + k)), b.labelSize);
        const { total, reported } = lossOf(b, out, masks);
        const l = total.div(accum);
        const r = searching && !alternate ? search.regularizer(1 / accum) : null;
        (r ? l.add(r) : l).backward();
        return reported.item() / accum;
      });
    }
    if (dist) {
      dist.setStep(state.step);
      stepLoss = dist.reduceGradients([...opt.allParams(), ...(searching && !alternate ? alphaParams : [])], [stepLoss])[0]!;
    }
    if (!Number.isFinite(stepLoss)) throw new Error(`loss is ${stepLoss} at step ${state.step}: lower the learning rate or check the data`);
    const gradNorm = cfg.optim.grad_clip !== null ? clipGradNorm(opt.allParams(), cfg.optim.grad_clip) : null;
    opt.step();
    if (searching && !alternate) alphaOpt!.step();
    state.losses.push(stepLoss);
    if (searching && search.afterSearchStep(state.step + 1)) run.writeJson('derived_ops.json', search.record(state.step + 1, p.stage.name));

    const done = state.step + 1;
    const mem = memory();
    run.append('events.jsonl', { type: 'step', step: done, stage: p.stage.name, loss: stepLoss, lr, grad_norm: gradNorm, live_bytes: mem.liveBytes, t: (Date.now() - t0) / 1000 });
    if (cells.length && (searching || done === total) && (done % cfg.train.log_every === 0 || done === p.end)) {
      run.append('alpha_history.jsonl', { step: done, stage: p.stage.name, cells: Object.fromEntries(cells.map(({ path: cp, cell }) => [cp, cell.describe().weights])) });
    }
    inp.progress.tick(done, { loss: stepLoss, stage: p.stage.name });

    const evalNow = done === total || (cfg.train.eval_every > 0 && done % evalInterval(cfg, inp.train.length) === 0);
    let improved = false;
    if (evalNow && inp.val.length) {
      const m = await evaluate(model, inp.val, cfg, cfg.eval.threshold, dist);
      lastEval = m;
      run.append('events.jsonl', { type: 'eval', step: done, split: cfg.eval.split, metrics: m });
      inp.progress.log(`step ${done}: ${cfg.eval.split} ${formatScores(m)}`);
      if (!state.best || m.dice > state.best.dice) { state.best = { step: done, dice: m.dice }; improved = true; }
    }
    state.seconds = (Date.now() - t0) / 1000;
    if (evalNow || done === total || done % checkpointInterval(cfg, inp.train.length) === 0) {
      const write = (dir: string) => {
        saveAdapter(dir, model.module, cfg.method as AdapterConfig, { parts: [...stageParts, ...(cells.length ? ['alpha' as const] : [])], baseSha256: inp.baseSha256, classes: adapterClasses(classSpecOf(cfg)), input: { image_size: cfg.data.image_size, resize: cfg.data.resize } });
        const optimizers = saveOptimizers(dir, { main: opt as never, alpha: alphaOpt as never });
        // RNG state: libtorch is re-seeded from (seed, step) before each step and the data order is a
        // function of (seed, epoch, position), so the step number is the whole random state.
        const rng = { scheme: 'reseed-per-step', seed: cfg.train.seed, next_step: done };
        fs.writeFileSync(path.join(dir, 'trainer_state.json'), JSON.stringify({ ...state, step: done, rng, search: search.state, optimizers, world_size: dist?.worldSize ?? 1 }, null, 2));
      };
      run.writeCheckpoint('last', write);
      if (improved) run.writeCheckpoint('best', write);
    }
  }
  inp.progress.stop();
  if (cells.length) run.writeJson('derived_ops.json', search.record(total, state.stage));
  crossReplica.sum = null;
  // The last periodic evaluation (this session's, or the events' of a run resumed at its end).
  const final = inp.val.length ? (lastEval ?? run.readJsonLines<{ type: string; metrics?: ImageMetrics }>('events.jsonl').filter((e) => e.type === 'eval').pop()?.metrics ?? null) : null;
  opt.dispose();
  alphaOpt?.dispose();
  return { steps: total, losses: state.losses, best: state.best, seconds: state.seconds, final };
}

function promptsFor(b: Batch, cfg: RunConfig, index: number): BatchPrompts | null {
  if (cfg.data.mode !== 'prompted') return null;
  return batchPrompts(b, {
    box: cfg.data.prompts.box, jitterFrac: cfg.data.prompts.box_jitter, nPos: cfg.data.prompts.n_pos, nNeg: cfg.data.prompts.n_neg,
    seed: hashSeed(cfg.train.seed, 'prompts', index),
  });
}

function evalInterval(cfg: RunConfig, nTrain: number): number {
  if (cfg.train.epochs !== null) {
    const per = Math.max(1, Math.round(batchCount(nTrain, cfg.data.batch_size) / cfg.optim.grad_accum));
    return per * cfg.train.eval_every;
  }
  return cfg.train.eval_every;
}

function checkpointInterval(cfg: RunConfig, nTrain: number): number {
  return Math.max(1, Math.min(evalInterval(cfg, nTrain), cfg.train.log_every));
}

/** 'dice 0.8123 iou 0.7012 …' (multi-class: mDice, mIoU, pixel accuracy, then IoU per class). */
export function formatScores(m: ImageMetrics & { count?: number }): string {
  if (isClassSummary(m)) {
    const c = m.classes;
    return `mDice ${m.dice.toFixed(4)} mIoU ${m.iou.toFixed(4)} pixel-acc ${m.pixelAccuracy.toFixed(4)} | IoU ${c.names.map((n, i) => `${n} ${c.iou[i] === null ? '–' : c.iou[i]!.toFixed(3)}`).join(', ')}`;
  }
  return Object.entries(m).filter(([k, v]) => k !== 'count' && typeof v === 'number').map(([k, v]) => `${k} ${(v as number).toFixed(4)}`).join(' ');
}

export function summarizeOps(ops: string[]): string {
  const c = new Map<string, number>();
  for (const o of ops) c.set(o, (c.get(o) ?? 0) + 1);
  return [...c.entries()].map(([o, n]) => `${o}×${n}`).join(', ');
}
