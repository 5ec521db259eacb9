// Multi-class semantic segmentation metrics, as the common benchmarks compute them (mmsegmentation,
// the Conv-LoRA multi-class tasks): per-class intersection and union accumulated over the whole data
// set, IoU and Dice per class from those sums, mIoU / mDice as the mean over the classes present
// (union > 0: a class absent from both predictions and ground truth is left out, not counted as 1),
// and pixel accuracy = correct / valid pixels. Pixels labelled ignoreIndex count nowhere.
// Per-image rows use the same definitions on one image.
import type { ImageMetrics, MetricRow } from './metrics.js';

export interface ClassCounts {
  /** Per class: |pred ∩ gt|, |pred|, |gt| over valid pixels. */
  inter: Float64Array;
  pred: Float64Array;
  gt: Float64Array;
  correct: number;
  valid: number;
}

export function emptyCounts(k: number): ClassCounts {
  return { inter: new Float64Array(k), pred: new Float64Array(k), gt: new Float64Array(k), correct: 0, valid: 0 };
}

/** Adds one image: pred and gt are class indices (HW); gt == ignoreIndex is skipped. */
export function countClasses(pred: ArrayLike<number>, gt: ArrayLike<number>, k: number, ignoreIndex: number | null = null, into: ClassCounts = emptyCounts(k)): ClassCounts {
  if (pred.length !== gt.length) throw new Error(`countClasses: prediction has ${pred.length} pixels, ground truth ${gt.length}`);
  for (let i = 0; i < gt.length; i++) {
    const g = gt[i]!;
    if (ignoreIndex !== null && g === ignoreIndex) continue;
    const p = pred[i]!;
    if (g < 0 || g >= k || !Number.isInteger(g)) throw new Error(`countClasses: ground-truth value ${g} at pixel ${i} is not a class in 0..${k - 1}${ignoreIndex === null ? '' : ` or the ignore index ${ignoreIndex}`}`);
    if (p < 0 || p >= k || !Number.isInteger(p)) throw new Error(`countClasses: predicted value ${p} at pixel ${i} is not a class in 0..${k - 1}`);
    into.valid++;
    into.gt[g]++;
    into.pred[p]++;
    if (p === g) { into.correct++; into.inter[g]++; }
  }
  return into;
}

export function addCounts(a: ClassCounts, b: ClassCounts): ClassCounts {
  const k = a.inter.length;
  const out = emptyCounts(k);
  for (let c = 0; c < k; c++) {
    out.inter[c] = a.inter[c]! + b.inter[c]!;
    out.pred[c] = a.pred[c]! + b.pred[c]!;
    out.gt[c] = a.gt[c]! + b.gt[c]!;
  }
  out.correct = a.correct + b.correct;
  out.valid = a.valid + b.valid;
  return out;
}

export interface ClassScores {
  /** Per class; NaN where the class is absent from prediction and ground truth (union 0). */
  iou: number[];
  dice: number[];
  /** Means over the classes present (NaN entries left out). */
  mIoU: number;
  mDice: number;
  pixelAccuracy: number;
  /** Classes present (union > 0). */
  present: number[];
}

export function scores(c: ClassCounts): ClassScores {
  const k = c.inter.length;
  const iou: number[] = [], dice: number[] = [], present: number[] = [];
  for (let j = 0; j < k; j++) {
    const union = c.pred[j]! + c.gt[j]! - c.inter[j]!;
    if (union > 0) {
      present.push(j);
      iou.push(c.inter[j]! / union);
      dice.push((2 * c.inter[j]!) / (c.pred[j]! + c.gt[j]!));
    } else {
      iou.push(NaN);
      dice.push(NaN);
    }
  }
  const nanMean = (xs: number[]) => {
    const v = xs.filter((x) => !Number.isNaN(x));
    return v.length ? v.reduce((a, b) => a + b, 0) / v.length : NaN;
  };
  return { iou, dice, mIoU: nanMean(iou), mDice: nanMean(dice), pixelAccuracy: c.valid ? c.correct / c.valid : NaN, present };
}

/** Argmax over classes of logits (K, H, W) flattened class-major: the class-index map (HW). */
export function argmaxClasses(logits: ArrayLike<number>, k: number, hw: number): Uint8Array {
  const out = new Uint8Array(hw);
  for (let i = 0; i < hw; i++) {
    let best = 0, bv = logits[i]!;
    for (let c = 1; c < k; c++) {
      const v = logits[c * hw + i]!;
      if (v > bv) { bv = v; best = c; }
    }
    out[i] = best;
  }
  return out;
}

// ---------------------------------------------------------------- rows and summaries for reports

/** ClassCounts as plain arrays (JSON: per-image rows travel between ranks and into test_per_image.json). */
export interface CountsJson { inter: number[]; pred: number[]; gt: number[]; correct: number; valid: number }

/**
 * One image of a multi-class evaluation: `dice` / `iou` are the image's mDice / mIoU (over the
 * classes in its prediction or ground truth), per-class values null where a class is in neither.
 */
export interface ClassRow extends MetricRow {
  pixelAccuracy: number;
  classIou: Array<number | null>;
  classDice: Array<number | null>;
  counts: CountsJson;
}

/** The data set's multi-class scores (from the summed counts): per class, and their means. */
export interface ClassTable {
  names: string[];
  iou: Array<number | null>;
  dice: Array<number | null>;
  /** Ground-truth pixels per class (valid pixels only). */
  pixels: number[];
  present: number[];
}

/** A multi-class summary: dice = mDice, iou = mIoU over the classes present, plus pixel accuracy and the per-class table. */
export type ClassSummary = ImageMetrics & { count: number; pixelAccuracy: number; classes: ClassTable };

const nullNaN = (xs: number[]): Array<number | null> => xs.map((x) => (Number.isNaN(x) ? null : x));

function toJson(c: ClassCounts): CountsJson {
  return { inter: Array.from(c.inter), pred: Array.from(c.pred), gt: Array.from(c.gt), correct: c.correct, valid: c.valid };
}

function fromJson(j: CountsJson): ClassCounts {
  return { inter: Float64Array.from(j.inter), pred: Float64Array.from(j.pred), gt: Float64Array.from(j.gt), correct: j.correct, valid: j.valid };
}

/** One image's row: pred and gt class maps of the same size. */
export function classRow(name: string, pred: ArrayLike<number>, gt: ArrayLike<number>, k: number, ignoreIndex: number | null): ClassRow {
  const c = countClasses(pred, gt, k, ignoreIndex);
  const s = scores(c);
  return {
    name, dice: s.mDice, iou: s.mIoU, pixelAccuracy: s.pixelAccuracy, classIou: nullNaN(s.iou), classDice: nullNaN(s.dice), counts: toJson(c),
  } as ClassRow;
}

/** The data set's scores from its rows' counts (the benchmarks' definition: sums over the set, then per class). */
export function classSummary(rows: readonly ClassRow[], names: readonly string[]): ClassSummary {
  let total = emptyCounts(names.length);
  for (const r of rows) total = addCounts(total, fromJson(r.counts));
  const s = scores(total);
  return {
    count: rows.length, dice: s.mDice, iou: s.mIoU, pixelAccuracy: s.pixelAccuracy,
    classes: { names: [...names], iou: nullNaN(s.iou), dice: nullNaN(s.dice), pixels: Array.from(total.gt), present: s.present },
  } as ClassSummary;
}

export function isClassSummary(m: unknown): m is ClassSummary {
  return typeof m === 'object' && m !== null && 'classes' in m && typeof (m as { classes: unknown }).classes === 'object';
}
