// Segmentation metrics: hand-derived small cases, then a numpy/scipy port of py_sod_metrics
// (as used by Conv-LoRA's evaluation) on random and real masks.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import {
  ber, computeMetrics, dice, distanceTransformEdt, EPS, iou, mae, matlabGauss2D, meanEMeasure, METRIC_NAMES,
  MetricsAggregator, sMeasure, weightedFMeasure, type ImageMetrics,
} from '../src/eval/metrics.js';
import { decodeMask } from '../src/io/image.js';

// Compiled to dist/test/: the repo root is two levels up, the shared folder next to it.
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SHARED = path.resolve(ROOT, '../shared');
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-metrics-'));
process.on('exit', () => fs.rmSync(TMP, { recursive: true, force: true }));

const PY = '/usr/bin/python3';
const haveScipy = spawnSync(PY, ['-c', 'import numpy, scipy.ndimage'], { encoding: 'utf8' }).status === 0;
const NO_SCIPY = `${PY} with numpy and scipy is not available (apt-get install -y python3-numpy python3-scipy)`;

const close = (a: number, b: number, tol = 1e-12, what = ''): void =>
  assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);

const f32 = (xs: number[]): Float32Array => new Float32Array(xs);
const u8 = (xs: number[]): Uint8Array => new Uint8Array(xs);

test('Dice and IoU: p > 0.5 is foreground; both empty → emptyScore', () => {
  // pred → [1, 0, 1, 0]; gt [1, 1, 0, 0]: tp 1, fp 1, fn 1.
  const p = f32([0.9, 0.2, 0.6, 0.4]), g = u8([1, 1, 0, 0]);
  assert.equal(dice(p, g, 2, 2), 2 / 4);
  assert.equal(iou(p, g, 2, 2), 1 / 3);
  // 0.5 itself is background (torchmetrics: preds > threshold).
  assert.equal(dice(f32([0.5, 0.5]), u8([1, 0]), 1, 2), 0);
  assert.equal(dice(u8([0, 0]), u8([0, 0]), 1, 2), 1);
  assert.equal(iou(u8([0, 0]), u8([0, 0]), 1, 2, { emptyScore: 0 }), 0);
  assert.equal(dice(u8([1, 1, 0]), u8([1, 1, 0]), 1, 3), 1);
});

test('BER = 1 − mean per-class recall, a class absent everywhere is ignored', () => {
  // recall_fg = 1/2, recall_bg = 1/2.
  assert.equal(ber(u8([1, 0, 1, 0]), u8([1, 1, 0, 0]), 2, 2), 0.5);
  // Conv-LoRA binarises at 255·p > 125: 0.49 → 124.95 is background, 0.4903 → 125.03 foreground.
  assert.equal(ber(f32([0.49, 0.4903]), u8([0, 1]), 1, 2), 0);
  // Empty gt, empty prediction: only the background class counts → 0.
  assert.equal(ber(u8([0, 0, 0]), u8([0, 0, 0]), 1, 3), 0);
  // Empty gt, one false positive: fg recall 0/0 → 0 with weight 1 (it was predicted), bg 2/3.
  close(ber(u8([1, 0, 0]), u8([0, 0, 0]), 1, 3), 1 - (0 + 2 / 3) / 2);
});

test('MAE uses the min-max normalised prediction unless it is constant', () => {
  assert.equal(mae(f32([0, 0.5, 1, 0.25]), u8([0, 1, 1, 0]), 2, 2), (0 + 0.5 + 0 + 0.25) / 4);
  assert.equal(mae(f32([0.2, 0.6]), u8([0, 1]), 1, 2), 0); // normalised to [0, 1]
  close(mae(f32([0.3, 0.3]), u8([0, 1]), 1, 2), (0.3 + 0.7) / 2, 1e-7); // constant: kept (float32 0.3)
});

test('S-measure hand cases', () => {
  const p02 = new Float64Array(4).fill(0.2);
  close(sMeasure(p02, u8([0, 0, 0, 0]), 2, 2), 0.8); // empty gt: 1 − mean(p)
  close(sMeasure(p02, u8([1, 1, 1, 1]), 2, 2), 0.2); // full gt: mean(p)
  // 6×6, gt = top-left 3×3 block, constant prediction 0.5.
  // Object: fg and bg values are all 0.5 → 2·0.5/(0.25 + 1 + 0) = 0.8 each → 0.8·(9/36) + 0.8·(27/36) = 0.8.
  // Region: centroid (1, 1) → cut at (2, 2) (MATLAB's +1): quadrants LT 2×2 (all gt), RT 2×4, LB 4×2
  // and RB 4×4, the last three mixed (RB holds gt pixel (2, 2)). Constant pred → σx = σxy = 0 → α = 0;
  // LT has σy = 0 → β = 0 → score 1; the mixed ones have β > 0 → 0.
  // Region = 1·(2·2/36) = 1/9; S = 0.5·0.8 + 0.5·1/9 = 41/90.
  const gt = new Uint8Array(36);
  for (let y = 0; y < 3; y++) for (let x = 0; x < 3; x++) gt[y * 6 + x] = 1;
  close(sMeasure(new Float64Array(36).fill(0.5), gt, 6, 6), 41 / 90);
  // A perfect binary prediction scores 1 (up to eps).
  close(sMeasure(gt, gt, 6, 6), 1);
  // One foreground pixel: std with ddof=1 of a single value is NaN in numpy, and max(0, NaN) is 0.
  assert.equal(sMeasure(f32([1, 0.5, 0, 0]), u8([1, 0, 0, 0]), 2, 2), 0);
});

test('mean E-measure hand cases', () => {
  // Perfect binary prediction, n = 4 pixels, gt fg 2: for thresholds 255..1 pred ≥ t equals gt and
  // every pixel's enhanced alignment is 1 → n/(n−1); at t = 0 everything is predicted foreground,
  // demeaned pred is 0 on all pixels → alignment 0 → (0+1)²/4 = 1/4 each → (n/4)/(n−1).
  const g = u8([1, 0, 0, 1]);
  close(meanEMeasure(g, g, 2, 2), (255 * (4 / 3) + 1 / 3) / 256);
  // Empty gt, all-zero prediction: the sum is the predicted-background count: n for t ≥ 1, 0 at t = 0.
  close(meanEMeasure(u8([0, 0, 0, 0, 0]), u8([0, 0, 0, 0, 0]), 1, 5), (255 / 256) * (5 / 4));
  // Full gt, all-one prediction (constant, not normalised): the predicted-foreground count n at every t.
  close(meanEMeasure(u8([1, 1, 1]), u8([1, 1, 1]), 1, 3), 3 / 2);
});

test('Gaussian kernel and distance transform hand cases', () => {
  const K = matlabGauss2D(7, 5);
  close(K.reduce((a, b) => a + b, 0), 1);
  close(K[3 * 7 + 3] / K[0], Math.exp(18 / 50)); // centre vs corner (dx = dy = 3)
  assert.equal(K[1 * 7 + 2], K[2 * 7 + 1]);
  // 1×5 [0 1 1 1 0]: distances to the nearest zero; the middle pixel is equidistant and takes the first.
  const r = distanceTransformEdt(u8([0, 1, 1, 1, 0]), 1, 5);
  assert.deepEqual([...r.distance], [0, 1, 2, 1, 0]);
  assert.deepEqual([...r.nearest], [0, 0, 0, 4, 4]);
  // 3×3 with a single zero at the centre: corners at √2.
  const c = distanceTransformEdt(u8([1, 1, 1, 1, 0, 1, 1, 1, 1]), 3, 3);
  assert.deepEqual([...c.distance], [Math.SQRT2, 1, Math.SQRT2, 1, 0, 1, Math.SQRT2, 1, Math.SQRT2]);
  assert.deepEqual([...c.nearest], new Array(9).fill(4));
  const none = distanceTransformEdt(u8([1, 1]), 1, 2);
  assert.deepEqual([...none.nearest], [-1, -1]);
});

test('weighted F-measure hand cases', () => {
  const gt = u8([0, 1, 1, 0, 0, 1, 0, 0, 0]);
  close(weightedFMeasure(gt, gt, 3, 3), 1); // perfect: R = 1, P = 1 (up to eps)
  assert.equal(weightedFMeasure(f32([0.3, 0.9]), u8([0, 0]), 1, 2), 0); // empty gt → 0
  // 1×1 gt = 1, pred 0: E = Et = 1, EA = centre weight k of the normalised kernel (the rest falls
  // outside the image and counts as 0), Ew = k < 1. R = 1 − k, TPw = 1 − k, FPw = 0 → P = TPw/(TPw + eps).
  const k = matlabGauss2D(7, 5)[24];
  const R = 1 - k, P = (1 - k) / (1 - k + EPS);
  close(weightedFMeasure(f32([0]), u8([1]), 1, 1), (1.3 * R * P) / (R + 0.3 * P + EPS));
  close(weightedFMeasure(f32([0]), u8([1]), 1, 1, 1), (2 * R * P) / (R + P + EPS)); // β² = 1
});

test('inputs are validated', () => {
  assert.throws(() => dice(f32([0.5]), u8([1, 0]), 1, 2), /needs 2/);
  assert.throws(() => mae(f32([1.5, 0]), u8([1, 0]), 1, 2), /\[0, 1\]/);
  assert.throws(() => mae(f32([NaN, 0]), u8([1, 0]), 1, 2), /\[0, 1\]/);
  assert.throws(() => mae(u8([255, 0]), u8([1, 0]), 1, 2), /0\/1 map/);
  assert.throws(() => mae(u8([1, 0]), u8([255, 0]), 1, 2), /gt must be 0\/1/);
});

test('MetricsAggregator keeps rows and averages them', () => {
  const agg = new MetricsAggregator();
  const a = agg.add('a', u8([1, 0, 0, 1]), u8([1, 0, 0, 1]), 2, 2);
  const b = agg.add('b', f32([0.9, 0.2, 0.6, 0.4]), u8([1, 1, 0, 0]), 2, 2);
  assert.equal(agg.rows.length, 2);
  assert.equal(agg.rows[1].name, 'b');
  assert.deepEqual(a, { name: 'a', ...computeMetrics(u8([1, 0, 0, 1]), u8([1, 0, 0, 1]), 2, 2) });
  const m = agg.mean();
  assert.equal(m.count, 2);
  for (const k of METRIC_NAMES) close(m[k], (a[k] + b[k]) / 2, 1e-15, k);
  assert.equal(m.dice, (1 + 0.5) / 2);
});

// ---- numpy/scipy reference ----

// A port of py_sod_metrics (lartpang/PySODMetrics, as copied into autogluon's
// semantic_seg_metrics.py for Conv-LoRA), fed with the already-normalised float64 prediction
// instead of a 0..255 map; Dice/IoU/BER follow torchmetrics' binary/multiclass definitions.
const REFERENCE_PY = String.raw`
import sys, json
import numpy as np
from scipy.ndimage import convolve, distance_transform_edt as bwdist
EPS = np.spacing(1)

def prepare(pred):
    if pred.max() != pred.min():
        pred = (pred - pred.min()) / (pred.max() - pred.min())
    return pred

def s_measure(pred, gt, alpha=0.5):
    def s_object(x):
        mean = np.mean(x); std = np.std(x, ddof=1)
        return 2 * mean / (np.power(mean, 2) + 1 + std + EPS)
    def ssim(pred, gt):
        h, w = pred.shape; N = h * w
        x = np.mean(pred); y = np.mean(gt)
        sigma_x = np.sum((pred - x) ** 2) / (N - 1)
        sigma_y = np.sum((gt - y) ** 2) / (N - 1)
        sigma_xy = np.sum((pred - x) * (gt - y)) / (N - 1)
        a = 4 * x * y * sigma_xy
        b = (x ** 2 + y ** 2) * (sigma_x + sigma_y)
        if a != 0: return a / (b + EPS)
        elif a == 0 and b == 0: return 1
        return 0
    y = np.mean(gt)
    if y == 0: return 1 - np.mean(pred)
    if y == 1: return np.mean(pred)
    gm = np.mean(gt)
    obj = s_object(pred[gt]) * gm + s_object((1 - pred)[~gt]) * (1 - gm)
    h, w = gt.shape; area = h * w
    cy, cx = np.argwhere(gt).mean(axis=0).round()
    cy, cx = int(cy) + 1, int(cx) + 1
    w_lt = cx * cy / area; w_rt = cy * (w - cx) / area; w_lb = (h - cy) * cx / area
    w_rb = 1 - w_lt - w_rt - w_lb
    reg = (ssim(pred[0:cy, 0:cx], gt[0:cy, 0:cx]) * w_lt + ssim(pred[0:cy, cx:w], gt[0:cy, cx:w]) * w_rt
           + ssim(pred[cy:h, 0:cx], gt[cy:h, 0:cx]) * w_lb + ssim(pred[cy:h, cx:w], gt[cy:h, cx:w]) * w_rb)
    return max(0, obj * alpha + reg * (1 - alpha))

def e_measure_mean(pred, gt):
    gt_fg = np.count_nonzero(gt); size = gt.shape[0] * gt.shape[1]
    q = (pred * 255).astype(np.uint8)
    bins = np.linspace(0, 256, 257)
    fg_fg = np.cumsum(np.flip(np.histogram(q[gt], bins=bins)[0]), axis=0)
    fg_bg = np.cumsum(np.flip(np.histogram(q[~gt], bins=bins)[0]), axis=0)
    pfg = fg_fg + fg_bg; pbg = size - pfg
    if gt_fg == 0: s = pbg
    elif gt_fg == size: s = pfg
    else:
        bg_fg = gt_fg - fg_fg; bg_bg = pbg - bg_fg
        mp = pfg / size; mg = gt_fg / size
        parts = [fg_fg, fg_bg, bg_fg, bg_bg]
        combos = [(1 - mp, 1 - mg), (1 - mp, 0 - mg), (0 - mp, 1 - mg), (0 - mp, 0 - mg)]
        res = np.empty((4, 256), dtype=np.float64)
        for i, (n, (a, b)) in enumerate(zip(parts, combos)):
            al = 2 * (a * b) / (a ** 2 + b ** 2 + EPS)
            res[i] = (al + 1) ** 2 / 4 * n
        s = res.sum(axis=0)
    return float(np.mean(s / (size - 1 + EPS)))

def gauss2d(shape=(7, 7), sigma=5):
    m, n = [(ss - 1) / 2 for ss in shape]
    y, x = np.ogrid[-m:m + 1, -n:n + 1]
    h = np.exp(-(x * x + y * y) / (2 * sigma * sigma))
    h[h < np.finfo(h.dtype).eps * h.max()] = 0
    s = h.sum()
    return h / s if s != 0 else h

def wfm(pred, gt, beta=0.3):
    if np.all(~gt): return 0
    Dst, Idxt = bwdist(gt == 0, return_indices=True)
    E = np.abs(pred - gt)
    Et = np.copy(E)
    Et[gt == 0] = Et[Idxt[0][gt == 0], Idxt[1][gt == 0]]
    EA = convolve(Et, weights=gauss2d((7, 7), 5), mode='constant', cval=0)
    MIN_E_EA = np.where(gt & (EA < E), EA, E)
    B = np.where(gt == 0, 2 - np.exp(np.log(0.5) / 5 * Dst), np.ones_like(gt))
    Ew = MIN_E_EA * B
    TPw = np.sum(gt) - np.sum(Ew[gt == 1]); FPw = np.sum(Ew[gt == 0])
    R = 1 - np.mean(Ew[gt == 1]); P = TPw / (TPw + FPw + EPS)
    return (1 + beta) * R * P / (R + beta * P + EPS)

def overlap(raw, gt):
    p = raw > 0.5
    tp = np.count_nonzero(p & gt); fp = np.count_nonzero(p & ~gt); fn = np.count_nonzero(~p & gt)
    if tp + fp + fn == 0: return 1.0, 1.0
    return 2 * tp / (2 * tp + fp + fn), tp / (tp + fp + fn)

def ber(raw, gt):
    p = raw * 255 > 125
    acc, wsum = 0.0, 0
    for c in (False, True):
        tp = np.count_nonzero((p == c) & (gt == c)); fn = np.count_nonzero((p != c) & (gt == c))
        fp = np.count_nonzero((p == c) & (gt != c))
        if tp + fp + fn == 0: continue
        acc += tp / (tp + fn) if tp + fn else 0.0; wsum += 1
    return 1 - acc / wsum

np.seterr(all='ignore')
out = []
for c in json.load(open(sys.argv[1])):
    h, w = c['h'], c['w']
    raw = np.fromfile(c['pred'], dtype=np.float64).reshape(h, w)
    gt = np.fromfile(c['gt'], dtype=np.uint8).reshape(h, w).astype(bool)
    pred = prepare(raw)
    d, i = overlap(raw, gt)
    out.append(dict(dice=d, iou=i, mae=float(np.mean(np.abs(pred - gt))), ber=ber(raw, gt),
                    sMeasure=float(s_measure(pred, gt)), meanEMeasure=e_measure_mean(pred, gt),
                    weightedF=float(wfm(pred, gt))))
    if c.get('edt'):
        dist, idx = bwdist(gt == 0, return_indices=True)
        dist.astype(np.float64).tofile(c['gt'] + '.dist')
        (idx[0] * w + idx[1]).astype(np.int32).tofile(c['gt'] + '.idx')
json.dump(out, sys.stdout)
`;

interface Case { name: string; h: number; w: number; pred: Float32Array | Float64Array | Uint8Array; gt: Uint8Array; edt?: boolean }

function makeCases(realMasks: Array<{ name: string; data: Uint8Array; width: number; height: number }>): Case[] {
  let seed = 7;
  const rand = (): number => { seed = (Math.imul(seed, 1664525) + 1013904223) >>> 0; return seed / 2 ** 32; };
  const cases: Case[] = [];
  // Random ellipses with a soft, noisy prediction around a shifted copy of them.
  for (const [k, [h, w]] of [[40, 50], [64, 64], [97, 131], [17, 9], [200, 150]].entries()) {
    const gt = new Uint8Array(h * w), pred = new Float32Array(h * w);
    const cy = h * (0.3 + 0.4 * rand()), cx = w * (0.3 + 0.4 * rand()), ry = h * (0.1 + 0.25 * rand()), rx = w * (0.1 + 0.25 * rand());
    const dy = (rand() - 0.5) * ry, dx = (rand() - 0.5) * rx;
    for (let y = 0; y < h; y++) {
      for (let x = 0; x < w; x++) {
        const r = ((y - cy) / ry) ** 2 + ((x - cx) / rx) ** 2;
        const rs = ((y - cy - dy) / ry) ** 2 + ((x - cx - dx) / rx) ** 2;
        gt[y * w + x] = r <= 1 ? 1 : 0;
        pred[y * w + x] = Math.min(1, Math.max(0, 1 / (1 + Math.exp(4 * (rs - 1))) + 0.2 * (rand() - 0.5)));
      }
    }
    cases.push({ name: `ellipse${k}`, h, w, pred, gt, edt: true });
  }
  // Pure noise against a random sparse gt (many equidistant ties in the distance transform).
  {
    const h = 31, w = 29, gt = new Uint8Array(h * w), pred = new Float64Array(h * w);
    for (let i = 0; i < h * w; i++) { gt[i] = rand() < 0.05 ? 1 : 0; pred[i] = rand(); }
    cases.push({ name: 'noise', h, w, pred, gt, edt: true });
  }
  // Edge cases: empty gt, full gt, constant prediction, binary prediction, one gt pixel, gt in the
  // last column (an empty S-measure quadrant), a prediction with 0.5-exact and bin-edge values.
  const h = 12, w = 10, n = h * w;
  const ramp = new Float32Array(n).map((_, i) => (i % 37) / 36);
  const block = new Uint8Array(n).map((_, i) => (Math.floor(i / w) > 3 && i % w > 2 && i % w < 7 ? 1 : 0));
  cases.push({ name: 'empty-gt', h, w, pred: ramp, gt: new Uint8Array(n) });
  cases.push({ name: 'empty-gt-empty-pred', h, w, pred: new Uint8Array(n), gt: new Uint8Array(n) });
  cases.push({ name: 'full-gt', h, w, pred: ramp, gt: new Uint8Array(n).fill(1) });
  cases.push({ name: 'constant-pred', h, w, pred: new Float32Array(n).fill(0.3), gt: block });
  cases.push({ name: 'binary-pred', h, w, pred: block.map((v, i) => (i % 7 === 0 ? 1 - v : v)), gt: block, edt: true });
  cases.push({ name: 'one-pixel', h, w, pred: ramp, gt: new Uint8Array(n).map((_, i) => (i === 55 ? 1 : 0)) });
  cases.push({ name: 'last-column', h, w, pred: ramp, gt: new Uint8Array(n).map((_, i) => (i % w === w - 1 && i > 30 ? 1 : 0)) });
  cases.push({ name: 'bin-edges', h, w, pred: new Float64Array(n).map((_, i) => [0, 0.5, 1, 128 / 255, 127 / 255, 1 / 255][i % 6]), gt: block });
  // Real lesion masks: gt vs a blurred, shifted, noisy version of itself.
  for (const m of realMasks) {
    const { width: w2, height: h2, data } = m;
    const pred = new Float32Array(w2 * h2);
    for (let y = 0; y < h2; y++) {
      for (let x = 0; x < w2; x++) {
        let s = 0, c = 0;
        for (let k = -6; k <= 6; k += 3) {
          const yy = Math.min(h2 - 1, Math.max(0, y + k + 9)), xx = Math.min(w2 - 1, Math.max(0, x + k - 5));
          s += data[yy * w2 + xx]; c++;
        }
        pred[y * w2 + x] = Math.min(1, Math.max(0, s / c + 0.1 * (rand() - 0.5)));
      }
    }
    cases.push({ name: m.name, h: h2, w: w2, pred, gt: data, edt: true });
    cases.push({ name: `${m.name}-binary`, h: h2, w: w2, pred: pred.map((v) => (v > 0.5 ? 1 : 0)), gt: data });
  }
  return cases;
}

test('metrics match the numpy/scipy port of py_sod_metrics on random and real masks', { skip: haveScipy ? false : NO_SCIPY }, async () => {
  const dir = path.join(SHARED, 'data/ph2/masks');
  const realMasks = [];
  for (const f of fs.readdirSync(dir).sort().slice(0, 3)) realMasks.push({ name: f, ...(await decodeMask(path.join(dir, f))) });
  const cases = makeCases(realMasks);
  const spec = cases.map((c, k) => {
    const pred = path.join(TMP, `c${k}.pred`), gt = path.join(TMP, `c${k}.gt`);
    fs.writeFileSync(pred, new Uint8Array(Float64Array.from(c.pred).buffer));
    fs.writeFileSync(gt, c.gt);
    return { h: c.h, w: c.w, pred, gt, edt: c.edt ?? false };
  });
  fs.writeFileSync(path.join(TMP, 'cases.json'), JSON.stringify(spec));
  const r = spawnSync(PY, ['-c', REFERENCE_PY, path.join(TMP, 'cases.json')], { encoding: 'utf8', maxBuffer: 1 << 26 });
  assert.equal(r.status, 0, r.stderr);
  const ref = JSON.parse(r.stdout) as ImageMetrics[];
  for (const [k, c] of cases.entries()) {
    const got = computeMetrics(c.pred, c.gt, c.h, c.w);
    for (const m of METRIC_NAMES) close(got[m], ref[k][m], 1e-10, `${c.name} ${m}`);
    if (c.edt) {
      // The distance transform must pick the same nearest pixel as scipy, ties included.
      const notGt = c.gt.map((v) => (v ? 0 : 1));
      const { distance, nearest } = distanceTransformEdt(notGt, c.h, c.w);
      const idx = new Int32Array(new Uint8Array(fs.readFileSync(spec[k].gt + '.idx')).buffer);
      const dist = new Float64Array(new Uint8Array(fs.readFileSync(spec[k].gt + '.dist')).buffer);
      assert.deepEqual(nearest, idx, `${c.name} nearest indices`);
      assert.deepEqual(distance, dist, `${c.name} distances`);
    }
  }
  // Sanity: the edge cases really are edge cases.
  const byName = new Map(cases.map((c, k) => [c.name, ref[k]]));
  assert.equal(byName.get('one-pixel')!.sMeasure, 0);
  assert.equal(byName.get('empty-gt')!.weightedF, 0);
});
