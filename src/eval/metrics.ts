// Per-image binary segmentation metrics, as the Conv-LoRA evaluation computes them (autogluon's
// semantic_seg_metrics.py, itself a copy of py_sod_metrics): Dice, IoU, MAE, BER, S-measure,
// mean E-measure and weighted F-measure. Everything is plain float64 arithmetic on typed arrays,
// following the numpy code line by line (same edge cases, same order of operations where it matters)
// so that values agree with the Python reference to ~1e-12.
//
// Conventions
// - prediction: probabilities in [0, 1] (Float32Array/Float64Array) or a binary map (Uint8Array 0/1);
// - gt: Uint8Array of 0/1; both row-major h×w.
// - Dice/IoU binarize the prediction with `p > threshold` (0.5; torchmetrics' binary rule).
// - BER binarizes both maps with `255·x > 125`, as Conv-LoRA's Balanced_Error_Rate does.
// - MAE, S, E, wF use py_sod_metrics' `prepare_data`: the prediction is min-max normalised to [0, 1]
//   when it is not constant. (Conv-LoRA feeds `prob·255` as float32 and divides by 255 in float32;
//   we skip that round trip, which can only move a value sitting exactly on an E-measure bin edge.)

/** np.spacing(1): numpy/MATLAB `eps`, added to denominators exactly where py_sod_metrics does. */
export const EPS = 2.220446049250313e-16;

export type Prediction = Float32Array | Float64Array | Uint8Array;

export interface MetricOptions {
  /** Dice/IoU foreground rule `p > threshold` (default 0.5). */
  threshold?: number;
  /** Dice and IoU when prediction and ground truth are both empty (default 1: a perfect "nothing"). */
  emptyScore?: number;
  /** S-measure balance between object and region score (default 0.5). */
  alpha?: number;
  /** Weighted F-measure β² (default 0.3, as in Conv-LoRA's WeightedFmeasure). */
  beta2?: number;
}

export interface ImageMetrics {
  dice: number;
  iou: number;
  mae: number;
  ber: number;
  sMeasure: number;
  meanEMeasure: number;
  weightedF: number;
}

export const METRIC_NAMES: readonly (keyof ImageMetrics)[] = ['dice', 'iou', 'mae', 'ber', 'sMeasure', 'meanEMeasure', 'weightedF'];

function check(pred: Prediction, gt: Uint8Array, h: number, w: number): void {
  const n = h * w;
  if (!(Number.isInteger(h) && Number.isInteger(w) && h > 0 && w > 0)) throw new Error(`metrics: invalid size ${h}x${w}`);
  if (pred.length !== n || gt.length !== n) throw new Error(`metrics: prediction has ${pred.length} values and gt ${gt.length}, ${h}x${w} needs ${n}`);
  for (let i = 0; i < n; i++) if (gt[i] > 1) throw new Error(`metrics: gt must be 0/1, found ${gt[i]} at ${i}`);
  if (pred instanceof Uint8Array) {
    for (let i = 0; i < n; i++) if (pred[i] > 1) throw new Error(`metrics: a Uint8Array prediction must be a 0/1 map, found ${pred[i]} at ${i}`);
  } else {
    for (let i = 0; i < n; i++) {
      const p = pred[i];
      if (!(p >= 0 && p <= 1)) throw new Error(`metrics: prediction values must be probabilities in [0, 1], found ${p} at ${i}`);
    }
  }
}

/** py_sod_metrics `prepare_data` for the prediction: min-max normalisation unless constant. */
export function normalizePrediction(pred: Prediction): Float64Array {
  const out = Float64Array.from(pred);
  let lo = Infinity, hi = -Infinity;
  for (const v of out) { if (v < lo) lo = v; if (v > hi) hi = v; }
  if (hi !== lo) for (let i = 0; i < out.length; i++) out[i] = (out[i] - lo) / (hi - lo);
  return out;
}

// ---- thresholded overlap metrics ----

function confusion(pred: Prediction, gt: Uint8Array, fg: (p: number) => boolean): { tp: number; fp: number; fn: number; tn: number } {
  let tp = 0, fp = 0, fn = 0, tn = 0;
  for (let i = 0; i < gt.length; i++) {
    const p = fg(pred[i]);
    if (gt[i]) { if (p) tp++; else fn++; } else if (p) fp++; else tn++;
  }
  return { tp, fp, fn, tn };
}

export function dice(pred: Prediction, gt: Uint8Array, h: number, w: number, opts: MetricOptions = {}): number {
  check(pred, gt, h, w);
  const t = opts.threshold ?? 0.5;
  const { tp, fp, fn } = confusion(pred, gt, (p) => p > t);
  return tp + fp + fn === 0 ? (opts.emptyScore ?? 1) : (2 * tp) / (2 * tp + fp + fn);
}

export function iou(pred: Prediction, gt: Uint8Array, h: number, w: number, opts: MetricOptions = {}): number {
  check(pred, gt, h, w);
  const t = opts.threshold ?? 0.5;
  const { tp, fp, fn } = confusion(pred, gt, (p) => p > t);
  return tp + fp + fn === 0 ? (opts.emptyScore ?? 1) : tp / (tp + fp + fn);
}

/**
 * Balanced error rate = 1 − macro-averaged per-class recall (torchmetrics multiclass Accuracy,
 * average='macro', samplewise), with Conv-LoRA's binarisation `255·x > 125`. A class absent from
 * both maps is left out of the average (torchmetrics' weights), e.g. an empty gt predicted empty → 0.
 */
export function ber(pred: Prediction, gt: Uint8Array, h: number, w: number): number {
  check(pred, gt, h, w);
  const { tp, fp, fn, tn } = confusion(pred, gt, (p) => p * 255 > 125);
  // class 1 = foreground (tp, fn, fp), class 0 = background (its tp is tn, fn is fp, fp is fn).
  const recall1 = tp + fn > 0 ? tp / (tp + fn) : 0;
  const recall0 = tn + fp > 0 ? tn / (tn + fp) : 0;
  const w1 = tp + fp + fn === 0 ? 0 : 1;
  const w0 = tn + fn + fp === 0 ? 0 : 1;
  return 1 - (w1 * recall1 + w0 * recall0) / (w1 + w0);
}

// ---- MAE ----

function maeN(p: Float64Array, gt: Uint8Array): number {
  let s = 0;
  for (let i = 0; i < p.length; i++) s += Math.abs(p[i] - gt[i]);
  return s / p.length;
}

export function mae(pred: Prediction, gt: Uint8Array, h: number, w: number): number {
  check(pred, gt, h, w);
  return maeN(normalizePrediction(pred), gt);
}

// ---- S-measure (Fan et al., ICCV 2017) ----

// np.round: round half to even.
function roundHalfEven(x: number): number {
  const f = Math.floor(x);
  const d = x - f;
  if (d > 0.5) return f + 1;
  if (d < 0.5) return f;
  return f % 2 === 0 ? f : f + 1;
}

// 2·mean / (mean² + 1 + std + eps), std with ddof=1 (NaN for a single value, as numpy).
function sObject(vals: Float64Array, n: number): number {
  let s = 0;
  for (let i = 0; i < n; i++) s += vals[i];
  const mean = s / n;
  let ss = 0;
  for (let i = 0; i < n; i++) ss += (vals[i] - mean) ** 2;
  const std = Math.sqrt(ss / (n - 1));
  return (2 * mean) / (mean ** 2 + 1 + std + EPS);
}

// SSIM-like score of one quadrant [y0,y1)×[x0,x1). An empty quadrant gives NaN, as numpy's mean of
// an empty array, and NaN·0 = NaN reaches the final max(0, ·), which turns it into 0 like Python.
function ssim(p: Float64Array, gt: Uint8Array, w: number, y0: number, y1: number, x0: number, x1: number): number {
  const N = (y1 - y0) * (x1 - x0);
  let sx = 0, sy = 0;
  for (let y = y0; y < y1; y++) for (let x = x0; x < x1; x++) { sx += p[y * w + x]; sy += gt[y * w + x]; }
  const mx = sx / N, my = sy / N;
  let vx = 0, vy = 0, vxy = 0;
  for (let y = y0; y < y1; y++) {
    for (let x = x0; x < x1; x++) {
      const dx = p[y * w + x] - mx, dy = gt[y * w + x] - my;
      vx += dx ** 2; vy += dy ** 2; vxy += dx * dy;
    }
  }
  const sigmaX = vx / (N - 1), sigmaY = vy / (N - 1), sigmaXY = vxy / (N - 1);
  const alpha = 4 * mx * my * sigmaXY;
  const beta = (mx ** 2 + my ** 2) * (sigmaX + sigmaY);
  if (alpha !== 0) return alpha / (beta + EPS);
  return beta === 0 ? 1 : 0;
}

function sMeasureN(p: Float64Array, gt: Uint8Array, h: number, w: number, alpha: number): number {
  const n = h * w;
  let fgN = 0, sumP = 0, sumY = 0, sumX = 0;
  for (let i = 0; i < n; i++) {
    sumP += p[i];
    if (gt[i]) { fgN++; sumY += Math.floor(i / w); sumX += i % w; }
  }
  const y = fgN / n;
  if (y === 0) return 1 - sumP / n;
  if (y === 1) return sumP / n;
  // Object score: foreground similarity of p on gt, background similarity of 1−p on ~gt.
  const fgVals = new Float64Array(fgN), bgVals = new Float64Array(n - fgN);
  for (let i = 0, a = 0, b = 0; i < n; i++) { if (gt[i]) fgVals[a++] = p[i]; else bgVals[b++] = 1 - p[i]; }
  const objectScore = sObject(fgVals, fgN) * y + sObject(bgVals, n - fgN) * (1 - y);
  // Region score: split at the gt centroid (+1 to mimic MATLAB's inclusive 1:X ranges).
  const cy = roundHalfEven(sumY / fgN) + 1, cx = roundHalfEven(sumX / fgN) + 1;
  const area = h * w;
  const wLT = (cx * cy) / area, wRT = (cy * (w - cx)) / area, wLB = ((h - cy) * cx) / area;
  const wRB = 1 - wLT - wRT - wLB;
  const regionScore =
    ssim(p, gt, w, 0, cy, 0, cx) * wLT + ssim(p, gt, w, 0, cy, cx, w) * wRT +
    ssim(p, gt, w, cy, h, 0, cx) * wLB + ssim(p, gt, w, cy, h, cx, w) * wRB;
  const sm = objectScore * alpha + regionScore * (1 - alpha);
  return sm > 0 ? sm : 0; // Python max(0, sm): NaN → 0
}

export function sMeasure(pred: Prediction, gt: Uint8Array, h: number, w: number, alpha = 0.5): number {
  check(pred, gt, h, w);
  return sMeasureN(normalizePrediction(pred), gt, h, w, alpha);
}

// ---- mean E-measure (Fan et al., IJCAI 2018) ----

// The E-measure curve over the 256 thresholds t = 255..0 of the uint8 prediction (pred ≥ t), computed
// from cumulative histograms exactly like py_sod_metrics' cal_em_with_cumsumhistogram; returns its mean.
function meanEMeasureN(p: Float64Array, gt: Uint8Array): number {
  const n = p.length;
  const fgHist = new Float64Array(256), bgHist = new Float64Array(256);
  let gtFg = 0;
  for (let i = 0; i < n; i++) {
    const q = Math.trunc(p[i] * 255); // (pred * 255).astype(np.uint8)
    if (gt[i]) { fgHist[q]++; gtFg++; } else bgHist[q]++;
  }
  let fgFg = 0, fgBg = 0, total = 0;
  for (let t = 255; t >= 0; t--) {
    fgFg += fgHist[t];
    fgBg += bgHist[t];
    const predFg = fgFg + fgBg, predBg = n - predFg;
    let enhancedSum: number;
    if (gtFg === 0) enhancedSum = predBg;
    else if (gtFg === n) enhancedSum = predFg;
    else {
      const bgFg = gtFg - fgFg, bgBg = predBg - bgFg;
      const meanPred = predFg / n, meanGt = gtFg / n;
      const pf = 1 - meanPred, pb = 0 - meanPred, gf = 1 - meanGt, gb = 0 - meanGt;
      const part = (numel: number, a: number, b: number): number => {
        const align = (2 * (a * b)) / (a ** 2 + b ** 2 + EPS);
        return ((align + 1) ** 2 / 4) * numel;
      };
      enhancedSum = part(fgFg, pf, gf) + part(fgBg, pf, gb) + part(bgFg, pb, gf) + part(bgBg, pb, gb);
    }
    total += enhancedSum / (n - 1 + EPS);
  }
  return total / 256;
}

export function meanEMeasure(pred: Prediction, gt: Uint8Array, h: number, w: number): number {
  check(pred, gt, h, w);
  return meanEMeasureN(normalizePrediction(pred), gt);
}

// ---- weighted F-measure (Margolin et al., CVPR 2014) ----

/**
 * Exact Euclidean distance transform with nearest-pixel indices, a port of scipy.ndimage's
 * `distance_transform_edt(input, return_indices=True)` (Maurer et al. 2003, scipy's _VoronoiFT, so
 * ties between equidistant pixels are broken the same way). For every nonzero input pixel: distance
 * to the nearest zero pixel and that pixel's flat index; zero pixels map to themselves. Without any
 * zero pixel, distance is Infinity and nearest −1.
 */
export function distanceTransformEdt(input: Uint8Array, h: number, w: number): { distance: Float64Array; nearest: Int32Array } {
  const n = h * w;
  // Feature = (row, col) of the nearest zero pixel found so far; row −1 means none.
  const fr = new Int32Array(n), fc = new Int32Array(n);
  const len = Math.max(h, w);
  const g = new Int32Array(len), tr = new Int32Array(len), tc = new Int32Array(len);
  // One 1-D Voronoi pass along axis d (0: down a column, 1: along a row) through line pixels
  // at(ii); `other` is the fixed coordinate on the other axis.
  const voronoi = (at: (ii: number) => number, size: number, d: 0 | 1, other: number): void => {
    for (let ii = 0; ii < size; ii++) { tr[ii] = fr[at(ii)]; tc[ii] = fc[at(ii)]; }
    const fd = d === 0 ? tr : tc, fo = d === 0 ? tc : tr;
    let l = -1;
    for (let ii = 0; ii < size; ii++) {
      if (tr[ii] < 0) continue;
      const wR = (fo[ii] - other) ** 2;
      while (l >= 1) {
        const i1 = g[l], i2 = g[l - 1];
        const a = fd[i1] - fd[i2], b = fd[ii] - fd[i1], c = a + b;
        const uR = (fo[i2] - other) ** 2, vR = (fo[i1] - other) ** 2;
        if (c * vR - b * uR - a * wR - a * b * c <= 0) break;
        --l;
      }
      g[++l] = ii;
    }
    const maxl = l;
    if (maxl < 0) return;
    l = 0;
    for (let ii = 0; ii < size; ii++) {
      let d1 = (fd[g[l]] - ii) ** 2 + (fo[g[l]] - other) ** 2;
      while (l < maxl) {
        const d2 = (fd[g[l + 1]] - ii) ** 2 + (fo[g[l + 1]] - other) ** 2;
        if (d1 <= d2) break; // ties keep the earlier site
        d1 = d2;
        ++l;
      }
      fr[at(ii)] = tr[g[l]];
      fc[at(ii)] = tc[g[l]];
    }
  };
  // scipy recurses from the last axis down: first every column along axis 0, then every row along axis 1.
  for (let x = 0; x < w; x++) {
    for (let y = 0; y < h; y++) {
      const i = y * w + x;
      if (input[i]) fr[i] = -1; else { fr[i] = y; fc[i] = x; }
    }
    voronoi((ii) => ii * w + x, h, 0, x);
  }
  for (let y = 0; y < h; y++) voronoi((ii) => y * w + ii, w, 1, y);
  const distance = new Float64Array(n), nearest = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    if (fr[i] < 0) { distance[i] = Infinity; nearest[i] = -1; continue; }
    const y = Math.floor(i / w), x = i % w;
    distance[i] = Math.sqrt((fr[i] - y) ** 2 + (fc[i] - x) ** 2);
    nearest[i] = fr[i] * w + fc[i];
  }
  return { distance, nearest };
}

/** MATLAB fspecial('gaussian', [size size], sigma), row-major size×size (py_sod_metrics' matlab_style_gauss2D). */
export function matlabGauss2D(size: number, sigma: number): Float64Array {
  const m = (size - 1) / 2;
  const k = new Float64Array(size * size);
  let max = 0;
  for (let y = 0; y < size; y++) {
    for (let x = 0; x < size; x++) {
      const dy = y - m, dx = x - m;
      k[y * size + x] = Math.exp(-(dx * dx + dy * dy) / (2 * sigma * sigma));
      max = Math.max(max, k[y * size + x]);
    }
  }
  let sum = 0;
  for (let i = 0; i < k.length; i++) { if (k[i] < EPS * max) k[i] = 0; sum += k[i]; }
  if (sum !== 0) for (let i = 0; i < k.length; i++) k[i] /= sum;
  return k;
}

function weightedFN(p: Float64Array, gt: Uint8Array, h: number, w: number, beta2: number): number {
  const n = h * w;
  let gtN = 0;
  for (let i = 0; i < n; i++) gtN += gt[i];
  if (gtN === 0) return 0;
  // Dst, Idxt = bwdist(gt == 0): for background pixels, the distance to / index of the nearest gt pixel.
  const notGt = new Uint8Array(n);
  for (let i = 0; i < n; i++) notGt[i] = gt[i] ? 0 : 1;
  const { distance: dst, nearest } = distanceTransformEdt(notGt, h, w);
  // Pixel dependency: E = |p − gt|; outside gt, take the error of the nearest gt pixel (Et), then
  // smooth with a 7×7 Gaussian (σ 5), zero outside the image (scipy convolve, mode='constant').
  const E = new Float64Array(n), Et = new Float64Array(n);
  for (let i = 0; i < n; i++) E[i] = Math.abs(p[i] - gt[i]);
  for (let i = 0; i < n; i++) Et[i] = gt[i] ? E[i] : E[nearest[i]];
  const K = matlabGauss2D(7, 5);
  let tpSum = 0, ewGt = 0, fpw = 0;
  for (let y = 0; y < h; y++) {
    for (let x = 0; x < w; x++) {
      let ea = 0;
      for (let ky = 0; ky < 7; ky++) {
        const yy = y + ky - 3;
        if (yy < 0 || yy >= h) continue;
        for (let kx = 0; kx < 7; kx++) {
          const xx = x + kx - 3;
          if (xx >= 0 && xx < w) ea += Et[yy * w + xx] * K[ky * 7 + kx];
        }
      }
      const i = y * w + x;
      // MIN_E_EA inside gt; pixel importance B grows with the distance from gt outside it.
      const minE = gt[i] && ea < E[i] ? ea : E[i];
      if (gt[i]) { ewGt += minE; tpSum += 1; }
      else fpw += minE * (2 - Math.exp((Math.log(0.5) / 5) * dst[i]));
    }
  }
  const TPw = tpSum - ewGt;
  const R = 1 - ewGt / gtN;
  const P = TPw / (TPw + fpw + EPS);
  return ((1 + beta2) * R * P) / (R + beta2 * P + EPS);
}

export function weightedFMeasure(pred: Prediction, gt: Uint8Array, h: number, w: number, beta2 = 0.3): number {
  check(pred, gt, h, w);
  return weightedFN(normalizePrediction(pred), gt, h, w, beta2);
}

// ---- all at once, and the per-dataset table ----

/** Every metric, or only those in `only` (the result then holds just those keys). */
export function computeMetrics(pred: Prediction, gt: Uint8Array, h: number, w: number, opts: MetricOptions = {}, only?: ReadonlyArray<keyof ImageMetrics>): ImageMetrics {
  check(pred, gt, h, w);
  const want = (k: keyof ImageMetrics): boolean => !only || only.includes(k);
  const needP = ['mae', 'sMeasure', 'meanEMeasure', 'weightedF'].some((k) => want(k as keyof ImageMetrics));
  const p = needP ? normalizePrediction(pred) : new Float64Array(0);
  const all: Record<keyof ImageMetrics, () => number> = {
    dice: () => dice(pred, gt, h, w, opts),
    iou: () => iou(pred, gt, h, w, opts),
    mae: () => maeN(p, gt),
    ber: () => ber(pred, gt, h, w),
    sMeasure: () => sMeasureN(p, gt, h, w, opts.alpha ?? 0.5),
    meanEMeasure: () => meanEMeasureN(p, gt),
    weightedF: () => weightedFN(p, gt, h, w, opts.beta2 ?? 0.3),
  };
  const out = {} as ImageMetrics;
  for (const k of METRIC_NAMES) if (want(k)) out[k] = all[k]();
  return out;
}

export interface MetricRow extends ImageMetrics {
  name: string;
}

/**
 * Keeps one row per image; `mean()` is the dataset score (mean over images, as Conv-LoRA reports).
 * `metrics`: compute only these (rows and mean then hold just those keys); default all.
 */
export class MetricsAggregator {
  readonly rows: MetricRow[] = [];
  readonly metrics: ReadonlyArray<keyof ImageMetrics>;
  constructor(readonly options: MetricOptions & { metrics?: ReadonlyArray<keyof ImageMetrics> } = {}) {
    this.metrics = options.metrics ?? METRIC_NAMES;
  }

  add(name: string, pred: Prediction, gt: Uint8Array, h: number, w: number): MetricRow {
    const row: MetricRow = { name, ...computeMetrics(pred, gt, h, w, this.options, this.metrics) };
    this.rows.push(row);
    return row;
  }

  mean(): ImageMetrics & { count: number } {
    return meanOfRows(this.rows, this.metrics);
  }
}

/** The dataset score: each metric's mean over the rows, summed in row order. */
export function meanOfRows(rows: readonly MetricRow[], metrics: ReadonlyArray<keyof ImageMetrics> = METRIC_NAMES): ImageMetrics & { count: number } {
  const out = { count: rows.length } as ImageMetrics & { count: number };
  for (const k of METRIC_NAMES) if (metrics.includes(k)) out[k] = rows.reduce((s, r) => s + r[k], 0) / rows.length;
  return out;
}
