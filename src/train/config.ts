// The run config: one strict zod schema (unknown keys are errors, reported with their key path),
// presets for each method, YAML loading and `a.b=v` overrides.
//
// Loading: loadConfig(x, overrides) starts from a preset — x itself when it names one, else the YAML's
// `preset:` key, else the preset of the YAML's `method.name`, else nas-lora — deep-merges the YAML over it
// (mappings merge, lists and scalars replace), applies the overrides, then validates the whole.
import * as fs from 'node:fs';
import YAML from 'yaml';
import { z } from 'zod';
import { writeFileAtomic } from '../io/atomic.js';
import type { ImageMetrics } from '../eval/metrics.js';
import { numberedClasses, readClassSpec, type ClassSpec } from '../data/classes.js';

export const METHOD_NAMES = ['nas-lora', 'nas-pc-lora', 'lora', 'conv-lora', 'decoder-only'] as const;
export type MethodName = (typeof METHOD_NAMES)[number];
export const NAS_METHODS: readonly MethodName[] = ['nas-lora', 'nas-pc-lora'];

/** Candidate ops of a NAS cell (method.md); `zero` exists but is not in the default set. */
export const NAS_OPS = ['skip', 'zero', 'conv_1x1', 'conv_3x3', 'conv_5x5', 'dil_conv_3x3', 'dil_conv_5x5', 'avg_pool_3x3', 'max_pool_3x3'] as const;
export type NasOp = (typeof NAS_OPS)[number];
export const DEFAULT_OPS: NasOp[] = NAS_OPS.filter((o) => o !== 'zero');

/** Parameter groups a stage can train: `lora` = A/B, `ops` = NAS op weights or Conv-LoRA experts+gate,
 *  `decoder` = mask decoder without the IoU head, `encoder` = the image encoder's own weights (full fine-tuning,
 *  pretraining). The arch weights α are governed by optimize_alpha. */
export const TRAIN_PARTS = ['lora', 'ops', 'decoder', 'iou_head', 'prompt_encoder', 'encoder'] as const;
export type TrainPart = (typeof TRAIN_PARTS)[number];

export const METRICS = ['dice', 'iou', 's_measure', 'e_measure', 'wf_measure', 'mae', 'ber'] as const;
export type Metric = (typeof METRICS)[number];
/** eval.metrics names → the metric keys of reports (metrics.json, events.jsonl, summary.json). */
export const METRIC_FIELDS: Readonly<Record<Metric, keyof ImageMetrics>> = {
  dice: 'dice', iou: 'iou', s_measure: 'sMeasure', e_measure: 'meanEMeasure', wf_measure: 'weightedF', mae: 'mae', ber: 'ber',
};

export const PRESET_NAMES = METHOD_NAMES;
export type PresetName = MethodName;

const PosInt = z.number().int().positive();
const NonNegInt = z.number().int().nonnegative();
const Frac = z.number().min(0).max(1);
const Beta = z.number().min(0).lt(1);

const ModelSchema = z.strictObject({
  /**
   * SAM configuration: 'vit_b' | 'vit_l' | 'vit_h' or a JSON file (e.g. the model_config.json that
   * `naslora pretrain` writes). null: the checkpoint's own (its metadata; the official values only for
   * an exact ViT-B/L/H architecture; anything else is refused). Required when pretrained = 'none'.
   * When set with a checkpoint, every value must agree with it (the input size is data.image_size).
   */
  config: z.string().min(1).nullable(),
  /** SAM weights (safetensors); required unless pretrained = 'none'. */
  checkpoint: z.string().min(1).nullable(),
  pretrained: z.enum(['sam', 'none']),
});

const DataSchema = z.strictObject({
  /** Dataset folder (images/ + masks/) or CSV file; exclusive with `synthetic`. */
  dir: z.string().min(1).nullable(),
  /** Suffix stripped from mask base names before pairing (e.g. '_segmentation'). */
  mask_suffix: z.string(),
  /** Synthetic demo domain instead of files. */
  synthetic: z.strictObject({ kind: z.enum(['source', 'target']), n: PosInt, size: PosInt, seed: z.number().int() }).nullable(),
  splits: z.strictObject({
    seed: z.number().int(),
    /** train/val/test when the dataset gives no splits. */
    fractions: z.tuple([Frac, Frac, Frac]),
    /** Share of train held out as the arch split; only carved when a stage uses alpha_split 'arch'. */
    arch_frac: Frac,
  }),
  image_size: PosInt,
  /** Label size for the loss; null = image_size. */
  label_size: PosInt.nullable(),
  resize: z.enum(['squash', 'longest-pad']),
  /** Mask foreground: gray > threshold (binary data; multi-class masks hold class indices instead). */
  threshold: z.number().int().min(0).max(254),
  /**
   * Multi-class semantic segmentation (prompt-free); null = binary. Masks are class-index PNGs
   * (0 = background, 1..K−1) with `num_classes` = K, or colour/palette PNGs described by `file`, a
   * classes.json (names, indices, colours, optional ignore_index). The mask decoder gets one output
   * token and hypernetwork per class (initialised from SAM's mask token).
   */
  classes: z.strictObject({
    file: z.string().min(1).nullable().default(null),
    num_classes: z.number().int().min(2).max(255).nullable().default(null),
    /** Mask value that counts nowhere (loss, metrics), e.g. 255; with `file`, classes.json says it. */
    ignore_index: z.number().int().min(0).max(255).nullable().default(null),
    /** Per-class weights of the cross-entropy (K values), or null = equal. */
    loss_weights: z.array(z.number().nonnegative()).min(2).nullable().default(null),
  }).nullable(),
  augment: z.strictObject({ hflip: z.boolean(), crop_scale: z.tuple([Frac, Frac]).nullable() }),
  mode: z.enum(['prompt-free', 'prompted']),
  /** Prompted mode: prompts drawn from the ground truth while training. */
  prompts: z.strictObject({ box: z.boolean(), box_jitter: Frac, n_pos: NonNegInt, n_neg: NonNegInt }),
  batch_size: PosInt,
  /** Samples decoded at once. */
  num_workers: PosInt,
  /** Batches decoded ahead. */
  prefetch: NonNegInt,
  /** Keep decoded samples in memory (small sets). */
  cache: z.boolean(),
});

const MethodSchema = z.strictObject({
  name: z.enum(METHOD_NAMES),
  rank: PosInt,
  lora_alpha: z.number().positive(),
  dropout: z.number().min(0).lt(1),
  /** Regex over parameter-owning module names; default: the fused qkv of every encoder block. */
  targets: z.string().min(1),
  /** Adapt only the q and v thirds of the fused qkv output. */
  qv_only: z.boolean(),
  ops: z.array(z.enum(NAS_OPS)).min(1),
  /** Initial value of every α entry (0 = uniform mix). */
  alpha_init: z.number(),
  /** NAS cells' convolutions: 'default' Kaiming-uniform, or 'dirac' = identity plus small noise (the cell starts as skip). */
  ops_init: z.enum(['default', 'dirac']),
  /** NAS-PC-LoRA: ⌈r/K⌉ channels go through the mixed op. */
  pc_k: PosInt,
  /** Conv-LoRA */
  experts: PosInt,
  moe_loss_weight: z.number().nonnegative(),
  gate_noise: z.boolean(),
});

const OptimSchema = z.strictObject({
  name: z.literal('adamw'),
  lr: z.number().positive(),
  weight_decay: z.number().nonnegative(),
  betas: z.tuple([Beta, Beta]),
  eps: z.number().positive(),
  /** Global grad-norm clip; null = off. */
  grad_clip: z.number().positive().nullable(),
  /** Effective batch = data.batch_size × grad_accum. */
  grad_accum: PosInt,
  schedule: z.enum(['poly', 'cosine', 'constant']),
  poly_power: z.number().positive(),
  /** Linear LR warm-up share of all steps (not the same thing as the 'warmup' stage). */
  warmup_frac: Frac,
  min_lr: z.number().nonnegative(),
});

const StageSchema = z.strictObject({
  name: z.string().min(1),
  /** Share of all training steps. Shares sum to 1. */
  share: z.number().positive().max(1),
  train: z.array(z.enum(TRAIN_PARTS)),
  optimize_alpha: z.boolean().default(false),
  /** Batches α is trained on; default 'train' in joint mode, 'arch' in alternate mode. */
  alpha_split: z.enum(['train', 'arch']).optional(),
  /** Replace every NAS cell by its arg-max op when the stage starts. */
  discretize_at_entry: z.boolean().default(false),
});

const ScheduleSchema = z.strictObject({
  stages: z.array(StageSchema).min(1),
  alpha_optim: z.strictObject({
    lr: z.number().positive(),
    betas: z.tuple([Beta, Beta]),
    weight_decay: z.number().nonnegative(),
    /** joint: α and weights from one backward on the same batch; alternate: first-order DARTS. */
    mode: z.enum(['joint', 'alternate']),
    /**
     * How far (in logits) α may travel over the whole search: α's learning rate becomes
     * travel ÷ (number of search steps), since Adam moves a parameter by about lr per step whatever
     * the gradient's scale. null = use lr as given (then a short search cannot move α).
     */
    travel: z.number().positive().nullable(),
  }),
  /** How NAS cells search (ignored by methods without cells; non-default values are errors there). */
  search: z.strictObject({
    /** 'mixed': every op, softmax(α)-weighted (DARTS); 'gumbel': one op sampled per cell and step (GDAS). */
    sampling: z.enum(['mixed', 'gumbel']),
    /** Gumbel-softmax temperature, linear from the first to the second value over the search steps. */
    tau: z.tuple([z.number().positive(), z.number().positive()]),
    /** Progressive shrinking: when `at` of the search steps are done, keep the `keep` highest-weight ops of each cell. */
    shrink: z.array(z.strictObject({ at: Frac, keep: PosInt })),
    /** β-Decay regularisation (Ye et al., CVPR 2022) against parameter-free collapse: weight·Σ_cells logsumexp(α) added to α's loss. 0 = off. */
    beta_decay: z.number().nonnegative(),
    /** Discretise a cell early once its normalised entropy stayed below `entropy` with the same arg-max for `patience` search steps. */
    early_discretize: z.strictObject({ entropy: Frac, patience: PosInt }).nullable(),
    /** Warn when a cell is discretised with the winner's weight less than this above the runner-up's. */
    warn_margin: Frac,
    /** At discretisation, the cheapest op (skip < conv_1x1 < pools < convs by multiply-adds) within this weight of the maximum wins; 0 = plain arg-max. */
    tie_margin: Frac,
    /** Fold a cell discretised to a per-token op (skip, conv_1x1) into lora_B so that it costs what LoRA costs. */
    fold_fix: z.boolean(),
  }),
});

const TrainSchema = z.strictObject({
  /** Exactly one of epochs / steps. */
  epochs: PosInt.nullable(),
  steps: PosInt.nullable(),
  seed: z.number().int(),
  /** Periodic evaluation, in epochs when `epochs` is set, in steps otherwise. */
  eval_every: PosInt,
  log_every: PosInt,
  out_dir: z.string().min(1),
});

const EvalSchema = z.strictObject({
  /** Metrics computed and reported (events.jsonl, metrics.json); dice is required (it picks the best checkpoint). */
  metrics: z.array(z.enum(METRICS)).min(1),
  /** Split of the periodic evaluation during training, which also picks checkpoints/best ('test' makes the best checkpoint's test score optimistic). */
  split: z.enum(['val', 'test']),
  /** Probability threshold for binary predictions. */
  threshold: Frac,
  /**
   * Resolution of the final test scoring (metrics.json `test`, compare): 'label' = at data.label_size
   * (the periodic evaluation's), 'original' = each image's own size, as `naslora eval` scores by default.
   */
  resolution: z.enum(['label', 'original']),
});

/** Where and in which precision a run computes (not what it computes: a run may resume on another device). */
const RuntimeSchema = z.strictObject({
  /**
   * 'cpu'; 'cuda' (one GPU per process: cuda:LOCAL_RANK when data-parallel, which then uses NCCL);
   * 'auto' = cuda when the engine reports a CUDA device (data-parallel: one per local process), else
   * cpu. 'cuda' on a CPU build of libtorch is an error at the start of the run. `--device` sets it.
   */
  device: z.enum(['cpu', 'cuda', 'auto']),
  /**
   * 'fp32', or 'bf16': autocast (matmuls and convolutions in bfloat16; softmax, norms, reductions
   * and the loss in fp32; fp32 master weights and optimizer state). `--precision` sets it.
   */
  precision: z.enum(['fp32', 'bf16']),
});

export const RUNTIME_DEFAULTS: z.output<typeof RuntimeSchema> = { device: 'cpu', precision: 'fp32' };

const ObjectSchema = z.strictObject({
  model: ModelSchema,
  data: DataSchema,
  method: MethodSchema,
  optim: OptimSchema,
  /** Binary: 'structure' | 'bce-dice' | 'balanced-bce'; multi-class: 'ce' (cross-entropy) | 'ce-dice' (+ 1 − mean soft Dice over classes). */
  loss: z.enum(['structure', 'bce-dice', 'balanced-bce', 'ce', 'ce-dice']),
  schedule: ScheduleSchema,
  train: TrainSchema,
  eval: EvalSchema,
  /** Absent in configs written before it existed: the defaults (cpu, fp32). */
  runtime: RuntimeSchema.default({ ...RUNTIME_DEFAULTS }),
});

type ObjectConfig = z.output<typeof ObjectSchema>;

/** Cross-field rules; each problem names its key path. */
function crossCheck(c: ObjectConfig, ctx: z.RefinementCtx): void {
  const bad = (path: Array<string | number>, message: string): void => ctx.addIssue({ code: 'custom', path, message });
  if (c.model.pretrained === 'none' && c.model.config === null)
    bad(['model', 'config'], 'required when model.pretrained=none: a preset (vit_b, vit_l, vit_h) or a SAM config JSON to build from');
  if (c.model.pretrained === 'sam' && c.model.checkpoint === null)
    bad(['model', 'checkpoint'], "required: path to the SAM weights (or set model.pretrained=none to start from random weights)");
  if ((c.data.dir === null) === (c.data.synthetic === null))
    bad(['data', 'dir'], c.data.dir === null ? 'required: a dataset folder or CSV file (or set data.synthetic for the demo domain)' : 'set either data.dir or data.synthetic, not both');
  const cs = c.data.augment.crop_scale;
  if (cs && !(cs[0] > 0 && cs[0] <= cs[1])) bad(['data', 'augment', 'crop_scale'], `needs 0 < min <= max <= 1, got [${cs.join(', ')}]`);
  if (c.data.splits.fractions.reduce((a, b) => a + b, 0) <= 0) bad(['data', 'splits', 'fractions'], 'must have a positive sum');
  if (c.data.mode === 'prompted' && !c.data.prompts.box && c.data.prompts.n_pos + c.data.prompts.n_neg === 0)
    bad(['data', 'prompts'], 'prompted mode needs a box or at least one point (box=true or n_pos/n_neg > 0)');
  try {
    new RegExp(c.method.targets);
  } catch (e) {
    bad(['method', 'targets'], `not a valid regular expression: ${(e as Error).message}`);
  }
  if (new Set(c.method.ops).size !== c.method.ops.length) bad(['method', 'ops'], 'lists an op twice');
  const sum = c.schedule.stages.reduce((a, s) => a + s.share, 0);
  if (Math.abs(sum - 1) > 1e-6) bad(['schedule', 'stages'], `shares sum to ${+sum.toFixed(6)}, must sum to 1`);
  const nas = NAS_METHODS.includes(c.method.name);
  const names = new Set<string>();
  c.schedule.stages.forEach((s, i) => {
    const at = (k: string): Array<string | number> => ['schedule', 'stages', i, k];
    if (names.has(s.name)) bad(at('name'), `duplicate stage name '${s.name}'`);
    names.add(s.name);
    if (!nas && s.optimize_alpha) bad(at('optimize_alpha'), `method '${c.method.name}' has no architecture weights (α); set false or use a NAS method`);
    if (!nas && s.discretize_at_entry) bad(at('discretize_at_entry'), `method '${c.method.name}' has no NAS cells to discretise`);
    if (s.alpha_split === 'arch' && c.schedule.alpha_optim.mode === 'joint')
      bad(at('alpha_split'), "joint mode updates α on the training batch; use alpha_split 'train' or schedule.alpha_optim.mode=alternate");
    for (const p of s.train) {
      if (c.method.name === 'decoder-only' && (p === 'lora' || p === 'ops')) bad(at('train'), `method 'decoder-only' has no '${p}' parameters`);
      if (c.method.name === 'lora' && p === 'ops') bad(at('train'), "method 'lora' has no 'ops' parameters");
    }
    if (s.train.length === 0 && !s.optimize_alpha) bad(at('train'), 'stage trains nothing');
  });
  const se = c.schedule.search;
  if (!nas) {
    const def = SEARCH_DEFAULTS;
    for (const k of ['sampling', 'beta_decay', 'early_discretize', 'fold_fix'] as const)
      if (JSON.stringify(se[k]) !== JSON.stringify(def[k])) bad(['schedule', 'search', k], `method '${c.method.name}' has no NAS cells; leave it at ${JSON.stringify(def[k])}`);
    if (se.shrink.length) bad(['schedule', 'search', 'shrink'], `method '${c.method.name}' has no NAS cells to shrink`);
    if (c.method.ops_init !== 'default') bad(['method', 'ops_init'], `method '${c.method.name}' has no NAS ops to initialise`);
  }
  se.shrink.forEach((r, i) => {
    if (r.keep >= c.method.ops.length) bad(['schedule', 'search', 'shrink', i, 'keep'], `keeps ${r.keep} of ${c.method.ops.length} ops: nothing to drop (with ${c.method.ops.length} ops or fewer, set schedule.search.shrink=[])`);
    if (i > 0 && !(r.at > se.shrink[i - 1].at && r.keep < se.shrink[i - 1].keep)) bad(['schedule', 'search', 'shrink', i], 'shrink points must come later and keep fewer ops than the one before');
  });
  if (nas && (se.shrink.length || se.early_discretize) && !c.schedule.stages.some((s) => s.optimize_alpha))
    bad(['schedule', 'search'], 'shrink and early_discretize act during the search; no stage has optimize_alpha');
  const usesArch = c.schedule.stages.some((s) => s.optimize_alpha && (s.alpha_split ?? (c.schedule.alpha_optim.mode === 'alternate' ? 'arch' : 'train')) === 'arch');
  if (usesArch && c.data.splits.arch_frac <= 0) bad(['data', 'splits', 'arch_frac'], "must be > 0 when a stage trains α on the 'arch' split");
  if ((c.train.epochs === null) === (c.train.steps === null)) bad(['train', 'epochs'], 'set exactly one of train.epochs and train.steps (the other null)');
  if (!c.eval.metrics.includes('dice')) bad(['eval', 'metrics'], "must include 'dice' (it picks checkpoints/best and is what compare and demo report first)");
  if (new Set(c.eval.metrics).size !== c.eval.metrics.length) bad(['eval', 'metrics'], 'lists a metric twice');
  const mc = c.data.classes;
  const ceLoss = c.loss === 'ce' || c.loss === 'ce-dice';
  if (mc) {
    const at = (k: string): string[] => ['data', 'classes', k];
    if ((mc.file === null) === (mc.num_classes === null)) bad(at('file'), 'set exactly one of data.classes.file (a classes.json) and data.classes.num_classes (class-index masks)');
    if (mc.file !== null && mc.ignore_index !== null) bad(at('ignore_index'), 'with data.classes.file the ignore index is classes.json\'s ignore_index; leave this null');
    if (mc.num_classes !== null && mc.ignore_index !== null && mc.ignore_index < mc.num_classes) bad(at('ignore_index'), `${mc.ignore_index} is also a class index (0..${mc.num_classes - 1})`);
    if (mc.num_classes !== null && mc.loss_weights && mc.loss_weights.length !== mc.num_classes) bad(at('loss_weights'), `${mc.loss_weights.length} weights for ${mc.num_classes} classes`);
    if (!ceLoss) bad(['loss'], `'${c.loss}' is a binary loss; multi-class data (data.classes) trains with 'ce' or 'ce-dice'`);
    if (c.data.mode !== 'prompt-free') bad(['data', 'mode'], "multi-class segmentation is prompt-free (one map per class for the whole image): set data.mode=prompt-free");
    if (c.data.synthetic) bad(['data', 'synthetic'], 'the synthetic demo domain is binary; multi-class needs data.dir');
    if (!c.schedule.stages.some((s) => (s.train as string[]).includes('decoder')))
      bad(['schedule', 'stages'], "multi-class: no stage trains 'decoder', where the class heads are (they start as copies of one token and must learn apart)");
    // Binary-only keys: a changed value would silently do nothing here.
    if (c.data.threshold !== 127) bad(['data', 'threshold'], 'binarizes binary masks; multi-class masks hold class indices: leave it at 127');
    if (c.eval.threshold !== 0.5) bad(['eval', 'threshold'], 'thresholds binary probabilities; a multi-class prediction is the class with the highest logit: leave it at 0.5');
    const extra = c.eval.metrics.filter((m) => m !== 'dice' && m !== 'iou');
    if (extra.length) bad(['eval', 'metrics'], `multi-class runs score per-class Dice and IoU (and pixel accuracy); ${extra.join(', ')} ${extra.length === 1 ? 'is' : 'are'} binary: set eval.metrics=[dice, iou]`);
  } else if (ceLoss) bad(['loss'], `'${c.loss}' is the multi-class loss; set data.classes, or use a binary loss (structure, bce-dice, balanced-bce)`);
  if (c.eval.resolution === 'original' && c.data.mode === 'prompted')
    bad(['eval', 'resolution'], "'original' scores prompt-free models; prompted mode draws its prompts at label size: use 'label'");
}

/** Fills stage.alpha_split from the search mode so the output is explicit. */
function resolve(c: ObjectConfig) {
  const def = c.schedule.alpha_optim.mode === 'alternate' ? 'arch' : 'train';
  return {
    ...c,
    schedule: {
      ...c.schedule,
      stages: c.schedule.stages.map((s) => ({ ...s, alpha_split: s.alpha_split ?? (s.optimize_alpha ? def : 'train') })),
    },
  };
}

export const RunConfigSchema = ObjectSchema.superRefine(crossCheck).transform(resolve);
export type RunConfig = z.output<typeof RunConfigSchema>;
export type RunConfigInput = z.input<typeof RunConfigSchema>;
export type StageConfig = RunConfig['schedule']['stages'][number];
type StageInput = RunConfigInput['schedule']['stages'][number];

// ---------------------------------------------------------------- presets

/** schedule.search for methods without cells, and the starting point of the NAS presets. */
export const SEARCH_DEFAULTS: RunConfigInput['schedule']['search'] = {
  sampling: 'mixed', tau: [5, 0.5], shrink: [], beta_decay: 0, early_discretize: null, warn_margin: 0.1, tie_margin: 0.05, fold_fix: false,
};

function base(name: MethodName): RunConfigInput {
  const nas = NAS_METHODS.includes(name);
  const parts: TrainPart[] = name === 'decoder-only' ? ['decoder'] : name === 'lora' ? ['lora', 'decoder'] : ['lora', 'ops', 'decoder'];
  // alpha_split is left out: it follows schedule.alpha_optim.mode ('train' when joint, 'arch' when alternate).
  const stage = (s: string, share: number, optimize_alpha = false, discretize_at_entry = false): StageInput => ({
    name: s, share, train: parts, optimize_alpha, discretize_at_entry,
  });
  return {
    model: { config: null, checkpoint: 'checkpoints/sam_vit_b.safetensors', pretrained: 'sam' },
    data: {
      dir: null, mask_suffix: '', synthetic: null,
      splits: { seed: 0, fractions: [0.7, 0.1, 0.2], arch_frac: 0.15 },
      image_size: 1024, label_size: null, resize: 'squash', threshold: 127, classes: null,
      augment: { hflip: true, crop_scale: null },
      mode: 'prompt-free', prompts: { box: true, box_jitter: 0.1, n_pos: 1, n_neg: 0 },
      batch_size: 4, num_workers: 4, prefetch: 2, cache: false,
    },
    method: {
      // Conv-LoRA's defaults (r=3, lora_alpha=32) for every LoRA-family preset, so they compare at equal rank.
      name, rank: 3, lora_alpha: 32, dropout: 0, targets: '^image_encoder\\.blocks\\.\\d+\\.attn\\.qkv$', qv_only: false,
      ops: [...DEFAULT_OPS], alpha_init: 0, ops_init: nas ? 'dirac' : 'default', pc_k: 2, experts: 8, moe_loss_weight: 0.01, gate_noise: true,
    },
    optim: {
      name: 'adamw', lr: 1e-4, weight_decay: 1e-4, betas: [0.9, 0.999], eps: 1e-8, grad_clip: 1.0, grad_accum: 1,
      schedule: 'poly', poly_power: 0.9, warmup_frac: 0, min_lr: 0,
    },
    loss: 'structure',
    schedule: {
      stages: nas ? [stage('warmup', 0.2), stage('search', 0.4, true), stage('fix', 0.4, false, true)] : [stage('train', 1)],
      alpha_optim: { lr: 3e-3, betas: [0.5, 0.999], weight_decay: 1e-3, mode: 'joint', travel: nas ? 20 : null },
      // Chosen by `naslora compare` on Kvasir-SEG and PH2 (README, "Does NAS-LoRA earn its place?").
      search: nas ? { ...SEARCH_DEFAULTS, shrink: [{ at: 0.5, keep: 3 }], fold_fix: true } : { ...SEARCH_DEFAULTS },
    },
    train: { epochs: 20, steps: null, seed: 0, eval_every: 1, log_every: 10, out_dir: `runs/${name}` },
    eval: { metrics: [...METRICS], split: 'val', threshold: 0.5, resolution: 'label' },
    runtime: { ...RUNTIME_DEFAULTS },
  };
}

/** Full configs per method, in input form (data.dir still to be set; validate with parseConfig). */
export const PRESETS: Readonly<Record<PresetName, () => RunConfigInput>> = {
  'nas-lora': () => base('nas-lora'),
  'nas-pc-lora': () => base('nas-pc-lora'),
  lora: () => base('lora'),
  'conv-lora': () => base('conv-lora'),
  'decoder-only': () => base('decoder-only'),
};

export function isPresetName(s: string): s is PresetName {
  return (PRESET_NAMES as readonly string[]).includes(s);
}

const specs = new WeakMap<RunConfig, ClassSpec | null>();
/**
 * The run's classes: null for binary data; else classes.json (data.classes.file) or K numbered
 * classes (data.classes.num_classes). Read once per config object.
 */
export function classSpecOf(c: RunConfig): ClassSpec | null {
  if (specs.has(c)) return specs.get(c)!;
  const mc = c.data.classes;
  let spec: ClassSpec | null = null;
  if (mc) {
    spec = mc.file !== null ? readClassSpec(mc.file) : numberedClasses(mc.num_classes!, mc.ignore_index);
    if (mc.loss_weights && mc.loss_weights.length !== spec.names.length)
      throw new ConfigError([`data.classes.loss_weights: ${mc.loss_weights.length} weights for the ${spec.names.length} classes of ${mc.file}`]);
  }
  specs.set(c, spec);
  return spec;
}

/** Share of train to carve as the arch split: arch_frac when some stage trains α on 'arch', else 0,
 *  so that methods without that split train on the whole training set. */
export function effectiveArchFrac(c: RunConfig): number {
  return c.schedule.stages.some((s) => s.optimize_alpha && s.alpha_split === 'arch') ? c.data.splits.arch_frac : 0;
}

// ---------------------------------------------------------------- errors, schema walking

export class ConfigError extends Error {
  constructor(readonly problems: string[], context = '') {
    super((context ? `${context}:\n` : '') + problems.map((p) => `  ${p}`).join('\n'));
    this.name = 'ConfigError';
  }
}

type Json = null | boolean | number | string | Json[] | { [k: string]: Json };
type JsonObject = { [k: string]: Json };

const isObj = (v: unknown): v is JsonObject => typeof v === 'object' && v !== null && !Array.isArray(v);

/** Strips optional/nullable/default/pipe wrappers. */
function unwrap(s: z.core.$ZodType): z.core.$ZodType {
  for (;;) {
    if (s instanceof z.ZodOptional || s instanceof z.ZodNullable || s instanceof z.ZodDefault) s = s.unwrap();
    else if (s instanceof z.ZodPipe) s = s.in;
    else return s;
  }
}

/** The schema at a key path, or a reason why the path does not exist there. */
function schemaAt(path: Array<string | number>): { schema: z.core.$ZodType } | { error: string } {
  let s: z.core.$ZodType = RunConfigSchema;
  for (let i = 0; i < path.length; i++) {
    const seg = path[i]!;
    const u = unwrap(s);
    const here = path.slice(0, i).join('.') || '(top level)';
    if (u instanceof z.ZodObject) {
      const shape = u.shape as Record<string, z.core.$ZodType>;
      if (!(String(seg) in shape)) return { error: `unknown key '${seg}' under ${here} (valid keys: ${Object.keys(shape).join(', ')})` };
      s = shape[String(seg)]!;
    } else if (u instanceof z.ZodArray && /^\d+$/.test(String(seg))) s = u.element;
    else if (u instanceof z.ZodTuple && /^\d+$/.test(String(seg)) && Number(seg) < u.def.items.length) s = u.def.items[Number(seg)]!;
    else return { error: `${here} is not a mapping with key '${seg}'` };
  }
  return { schema: s };
}

/**
 * Every leaf key of the run-config schema as a dotted path; list elements that are mappings appear
 * as `[]` (schedule.stages[].share), nullable mappings by their fields (data.synthetic.kind).
 * Tuples and lists of scalars are leaves (optim.betas, method.ops).
 */
export function configLeafKeys(): string[] {
  const out: string[] = [];
  const walk = (s: z.core.$ZodType, at: string): void => {
    const u = unwrap(s);
    if (u instanceof z.ZodObject) for (const [k, v] of Object.entries(u.shape as Record<string, z.core.$ZodType>)) walk(v, at ? `${at}.${k}` : k);
    else if (u instanceof z.ZodArray && unwrap(u.element) instanceof z.ZodObject) walk(u.element, `${at}[]`);
    else out.push(at);
  };
  walk(RunConfigSchema, '');
  return out;
}

function validKeysAt(path: Array<string | number>): string {
  const r = schemaAt(path);
  if ('error' in r) return '';
  const u = unwrap(r.schema);
  return u instanceof z.ZodObject ? ` (valid keys: ${Object.keys(u.shape).join(', ')})` : '';
}

function fmtPath(p: ReadonlyArray<PropertyKey>): string {
  return p.map(String).join('.') || '(top level)';
}

function zodProblems(err: z.ZodError): string[] {
  return err.issues.flatMap((i) =>
    i.code === 'unrecognized_keys'
      ? i.keys.map((k) => `${fmtPath([...i.path, k])}: unknown key${validKeysAt(i.path.map((x) => (typeof x === 'symbol' ? String(x) : x)))}`)
      : [`${fmtPath(i.path)}: ${i.message}`],
  );
}

/** Validates a plain object as a run config; throws ConfigError listing every problem with its key path. */
export function parseConfig(raw: unknown, context = 'invalid config'): RunConfig {
  const r = RunConfigSchema.safeParse(raw);
  if (!r.success) throw new ConfigError(zodProblems(r.error), context);
  return r.data;
}

// ---------------------------------------------------------------- merging, overrides, loading

/** Deep merge: mappings merge key by key; lists, scalars and null replace. */
export function deepMerge(baseObj: Json, over: Json): Json {
  if (!isObj(baseObj) || !isObj(over)) return over;
  const out: JsonObject = { ...baseObj };
  for (const [k, v] of Object.entries(over)) out[k] = k in out ? deepMerge(out[k]!, v) : v;
  return out;
}

/** Applies one `a.b.c=value` override (value parsed as YAML) to a plain config object, in place. */
export function applyOverride(cfg: JsonObject, override: string): void {
  const eq = override.indexOf('=');
  if (eq <= 0) throw new ConfigError([`override '${override}': expected key.path=value`]);
  const keyPath = override.slice(0, eq).trim();
  const text = override.slice(eq + 1);
  const path = keyPath.split('.');
  const where = schemaAt(path);
  if ('error' in where) throw new ConfigError([`override '${override}': ${where.error}`]);
  let value: Json;
  try {
    value = YAML.parse(text) as Json;
  } catch (e) {
    throw new ConfigError([`override '${override}': value is not valid YAML: ${(e as Error).message.split('\n')[0]}`]);
  }
  // Keep the text for string fields ("1e-4", "123", "true" as a path or name would otherwise change type).
  if (unwrap(where.schema) instanceof z.ZodString && value !== null && typeof value !== 'string') value = text;
  let node: Json = cfg;
  for (let i = 0; i < path.length - 1; i++) {
    const seg = path[i]!;
    const next: Json | undefined = Array.isArray(node) ? node[Number(seg)] : isObj(node) ? node[seg] : undefined;
    if (Array.isArray(node) && next === undefined)
      throw new ConfigError([`override '${override}': index ${seg} out of range (${path.slice(0, i).join('.')} has ${node.length} items)`]);
    if (next === undefined || next === null || typeof next !== 'object') {
      const at = path.slice(0, i + 1).join('.');
      throw new ConfigError([
        `override '${override}': ${at} is ${next === undefined ? 'not set' : String(next)}; set it as a whole, e.g. ${at}={...}`,
      ]);
    }
    node = next;
  }
  const last = path[path.length - 1]!;
  if (Array.isArray(node)) {
    const idx = Number(last);
    if (!(idx >= 0 && idx <= node.length)) throw new ConfigError([`override '${override}': index ${last} out of range (list has ${node.length} items)`]);
    node[idx] = value;
  } else if (isObj(node)) node[last] = value;
}

/**
 * Loads a run config from a preset name or a YAML file, applies `a.b=v` overrides and validates.
 * A YAML file may contain `preset: <name>` (not part of the config itself) to pick its base.
 */
export function loadConfig(yamlPathOrPreset: string, overrides: readonly string[] = []): RunConfig {
  let cfg: JsonObject;
  if (isPresetName(yamlPathOrPreset) && !fs.existsSync(yamlPathOrPreset)) cfg = PRESETS[yamlPathOrPreset]() as unknown as JsonObject;
  else {
    if (!fs.existsSync(yamlPathOrPreset))
      throw new ConfigError([`'${yamlPathOrPreset}' is neither a config file nor a preset (presets: ${PRESET_NAMES.join(', ')})`]);
    let doc: Json;
    try {
      doc = (YAML.parse(fs.readFileSync(yamlPathOrPreset, 'utf8')) ?? {}) as Json;
    } catch (e) {
      throw new ConfigError([`YAML syntax: ${(e as Error).message}`], yamlPathOrPreset);
    }
    if (!isObj(doc)) throw new ConfigError(['(top level): expected a mapping of sections (model, data, method, ...)'], yamlPathOrPreset);
    const { preset, ...rest } = doc;
    const methodName = isObj(rest['method']) ? rest['method']['name'] : undefined;
    const baseName = typeof preset === 'string' ? preset : typeof methodName === 'string' ? methodName : 'nas-lora';
    if (preset !== undefined && (typeof preset !== 'string' || !isPresetName(preset)))
      throw new ConfigError([`preset: unknown preset '${String(preset)}' (presets: ${PRESET_NAMES.join(', ')})`], yamlPathOrPreset);
    const b = isPresetName(baseName) ? PRESETS[baseName]() : PRESETS['nas-lora']();
    cfg = deepMerge(b as unknown as Json, rest) as JsonObject;
  }
  const problems: string[] = [];
  for (const o of overrides) {
    try {
      applyOverride(cfg, o);
    } catch (e) {
      if (e instanceof ConfigError) problems.push(...e.problems);
      else throw e;
    }
  }
  const context = `invalid config (${yamlPathOrPreset}${overrides.length ? ' + overrides' : ''})`;
  if (problems.length > 0) throw new ConfigError(problems, context);
  return parseConfig(cfg, context);
}

export function configToYaml(c: RunConfig): string {
  return YAML.stringify(c);
}

/** Saves the resolved config next to a run's outputs (atomic write). */
export function saveConfig(file: string, c: RunConfig): void {
  writeFileAtomic(file, configToYaml(c));
}
