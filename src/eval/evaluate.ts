// Scoring a model on a list of samples, at one of two resolutions (recorded in every report):
//  - 'original': each image's original resolution: the prediction is mapped back (undo the padding
//    or squash, bilinear on the logits) and compared with the original ground-truth mask, so the
//    numbers do not depend on the model's input size (`naslora eval`'s default);
//  - 'label': the label size L of training (the mask resized to L×L, nearest; the logits bilinear to
//    L×L), batched, as the trainer scores its validation and test splits (eval.resolution's default).
import * as path from 'node:path';
import { F, noGrad, tensor, tidy, type Device, type Tensor } from '../engine/index.js';
import { writeFileAtomic } from '../io/atomic.js';
import {
  decodeSample, iterateBatches, loadSample, validRegion, type Batch, type BatchPrompts, type LoaderOptions, type SampleCache, type SampleSource,
} from '../data/loader.js';
import { MetricsAggregator, METRIC_NAMES, type ImageMetrics, type MetricRow } from './metrics.js';
import { classRow, classSummary, isClassSummary, type ClassRow } from './multiclass.js';
import type { ClassSpec } from '../data/classes.js';

export type Resolution = 'original' | 'label';
export const RESOLUTIONS: readonly Resolution[] = ['original', 'label'];

export interface EvalModel { forward(images: Tensor, prompts?: BatchPrompts | null): Tensor }

/** Low-res logits (1,1,h,w) of an S×S input → logits at the original H0×W0. */
export function logitsToOriginal(lowRes: Tensor, S: number, h0: number, w0: number, resize: LoaderOptions['resize']): Tensor {
  let x = F.interpolate(lowRes, { size: [S, S], mode: 'bilinear' });
  if (resize === 'longest-pad') {
    const [vh, vw] = validRegion(h0, w0, S);
    x = x.narrow(2, 0, vh).narrow(3, 0, vw);
  }
  return F.interpolate(x, { size: [h0, w0], mode: 'bilinear' });
}

export interface EvalReport { summary: ImageMetrics & { count: number }; rows: MetricRow[] }

export interface EvalOptions {
  imageSize: number;
  resize: LoaderOptions['resize'];
  /** Mask foreground: gray > threshold. */
  threshold: number;
  /** Prediction foreground: probability > probThreshold (default 0.5). */
  probThreshold?: number;
  /** Metrics to compute (default all); the report holds only these. */
  metrics?: ReadonlyArray<keyof ImageMetrics>;
  cache?: SampleCache | null;
  onImage?: (i: number, n: number) => void;
  /** The model's device: each image (batch) is made there; the probabilities come back to the CPU for the metrics. Default 'cpu'. */
  device?: Device;
  /**
   * Multi-class: the model gives K logit maps, the prediction is their argmax, and the report is
   * per-class IoU/Dice with mIoU/mDice over the classes present and pixel accuracy (ClassRow rows,
   * ClassSummary summary); threshold, probThreshold and metrics do not apply.
   */
  classes?: ClassSpec | null;
  /**
   * Original resolution only: each image's prediction as it is scored, at its original size — the
   * class map (multi-class) or the binary mask (0/1). Awaited before the next image.
   */
  onPrediction?: (id: string, pred: Uint8Array, width: number, height: number) => Promise<void> | void;
}

/**
 * How model outputs become scores: binary (sigmoid; the saliency metrics of MetricsAggregator at
 * probThreshold) or multi-class (argmax over the K maps; per-class counts, ClassRow / ClassSummary).
 */
interface Scorer {
  /** Logits (B, C, H, W) → what `add` scores: probabilities (B, 1, H, W) or class indices (B, H, W). */
  post(logits: Tensor): Tensor;
  add(id: string, out: Float32Array, gt: ArrayLike<number>, h: number, w: number): void;
  /** The prediction as onPrediction gives it: the 0/1 mask or the class map. */
  mask(out: Float32Array): Uint8Array;
  report(): EvalReport;
}

function scorerFor(o: EvalOptions): Scorer {
  const spec = o.classes;
  if (spec) {
    const rows: ClassRow[] = [];
    return {
      post: (logits) => logits.argmax(1),
      add: (id, out, gt) => void rows.push(classRow(id, out, gt, spec.names.length, spec.ignoreIndex)),
      mask: (out) => Uint8Array.from(out),
      report: () => ({ summary: classSummary(rows, spec.names), rows }),
    };
  }
  const threshold = o.probThreshold ?? 0.5;
  const agg = new MetricsAggregator({ threshold, metrics: o.metrics });
  return {
    post: (logits) => logits.sigmoid(),
    add: (id, out, gt, h, w) => void agg.add(id, out, gt instanceof Uint8Array ? gt : Uint8Array.from(gt), h, w),
    mask: (out) => Uint8Array.from(out, (p) => (p > threshold ? 1 : 0)),
    report: () => ({ summary: agg.mean(), rows: agg.rows }),
  };
}

export async function evaluateOriginal(model: EvalModel, items: SampleSource[], o: EvalOptions): Promise<EvalReport> {
  const scorer = scorerFor(o);
  const rule = o.classes ?? o.threshold;
  for (let i = 0; i < items.length; i++) {
    const s = items[i]!;
    const d = 'rgb' in s ? s : o.cache ? await o.cache.get(s, rule) : await decodeSample(s, rule);
    const p = await loadSample(d, { imageSize: o.imageSize, resize: o.resize, threshold: o.threshold, classes: o.classes, augment: null });
    const out = noGrad(() => tidy(() => {
      const x = tensor(p.image, [1, 3, o.imageSize, o.imageSize], { device: o.device });
      return scorer.post(logitsToOriginal(model.forward(x), o.imageSize, d.height, d.width, o.resize)).toFloat32Array();
    }));
    scorer.add(d.id, out, d.mask, d.height, d.width);
    if (o.onPrediction) await o.onPrediction(d.id, scorer.mask(out), d.width, d.height);
    o.onImage?.(i + 1, items.length);
  }
  return scorer.report();
}

export interface LabelEvalOptions extends EvalOptions {
  /** Label size L: masks and predictions compared at L×L. */
  labelSize: number;
  batchSize: number;
  workers?: number;
  prefetch?: number;
  /** Prompted mode: the prompts of a batch (drawn from its ground truth). */
  prompts?: (b: Batch) => BatchPrompts | null;
}

/** Metrics at label size: batches as in training (no augmentation), logits upsampled to L×L. */
export async function evaluateAtLabelSize(model: EvalModel, items: SampleSource[], o: LabelEvalOptions): Promise<EvalReport> {
  const scorer = scorerFor(o);
  const L = o.labelSize, n = L * L;
  let done = 0;
  for await (const b of iterateBatches(items, {
    imageSize: o.imageSize, labelSize: L, resize: o.resize, threshold: o.threshold, classes: o.classes, augment: null,
    batchSize: o.batchSize, shuffle: false, prefetch: o.prefetch, workers: o.workers, cache: o.cache ?? null,
  })) {
    const out = noGrad(() => tidy(() => {
      const images = tensor(b.images, [b.batchSize, 3, b.imageSize, b.imageSize], { device: o.device });
      const low = model.forward(images, o.prompts?.(b) ?? null);
      const [, , h, w] = low.shape;
      const up = h === L && w === L ? low : F.interpolate(low, { size: [L, L], mode: 'bilinear', alignCorners: false });
      return scorer.post(up).toFloat32Array();
    }));
    b.ids.forEach((id, k) => scorer.add(id, out.subarray(k * n, (k + 1) * n), b.masks.subarray(k * n, (k + 1) * n), L, L));
    done += b.batchSize;
    o.onImage?.(done, items.length);
  }
  return scorer.report();
}

/** summary.json and per_image.csv in dir (the metrics the report holds). */
export function writeEvalReport(dir: string, r: EvalReport, extra: Record<string, unknown> = {}): void {
  writeFileAtomic(path.join(dir, 'summary.json'), JSON.stringify({ ...extra, ...r.summary }, null, 2) + '\n');
  const names = METRIC_NAMES.filter((k) => r.rows.length === 0 || k in r.rows[0]!);
  // Multi-class: the image's mDice/mIoU, pixel accuracy, then IoU and Dice per class (empty where the class is in neither map).
  const classes = isClassSummary(r.summary) ? r.summary.classes.names : null;
  const fmt = (v: number | null) => (v === null || Number.isNaN(v) ? '' : v.toFixed(6));
  const head = ['id', ...names, ...(classes ? ['pixel_accuracy', ...classes.map((c) => `iou_${c}`), ...classes.map((c) => `dice_${c}`)] : [])].map(csvField).join(',');
  const lines = r.rows.map((row) => {
    const cr = row as ClassRow;
    return [csvField(row.name), ...names.map((k) => (classes ? fmt(row[k]) : row[k].toFixed(6))), ...(classes ? [fmt(cr.pixelAccuracy), ...cr.classIou.map(fmt), ...cr.classDice.map(fmt)] : [])].join(',');
  });
  writeFileAtomic(path.join(dir, 'per_image.csv'), [head, ...lines].join('\n') + '\n');
}

function csvField(s: string): string {
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}
