// Evaluation at each image's original resolution: the prediction is mapped back (undo the padding
// or squash, bilinear on the logits) and compared with the original ground-truth mask, so the
// numbers do not depend on the model's input size.
import * as path from 'node:path';
import { F, noGrad, tensor, tidy, type Tensor } from '../engine/index.js';
import { writeFileAtomic } from '../io/atomic.js';
import { decodeSample, loadSample, validRegion, type LoaderOptions, type SampleSource } from '../train/data/loader.js';
import { MetricsAggregator, METRIC_NAMES, type ImageMetrics, type MetricRow } from './metrics.js';

export interface EvalModel { forward(images: Tensor): Tensor }

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

export async function evaluateOriginal(
  model: EvalModel, items: SampleSource[], o: { imageSize: number; resize: LoaderOptions['resize']; threshold: number; probThreshold?: number; onImage?: (i: number, n: number) => void },
): Promise<EvalReport> {
  const agg = new MetricsAggregator({ threshold: o.probThreshold ?? 0.5 });
  for (let i = 0; i < items.length; i++) {
    const s = items[i];
    const d = 'rgb' in s ? s : await decodeSample(s, o.threshold);
    const p = await loadSample(d, { imageSize: o.imageSize, resize: o.resize, threshold: o.threshold, augment: null });
    const prob = noGrad(() => tidy(() => {
      const x = tensor(p.image, [1, 3, o.imageSize, o.imageSize]);
      return logitsToOriginal(model.forward(x), o.imageSize, d.height, d.width, o.resize).sigmoid().toArray() as Float32Array;
    }));
    agg.add(d.id, prob, d.mask, d.height, d.width);
    o.onImage?.(i + 1, items.length);
  }
  return { summary: agg.mean(), rows: agg.rows };
}

/** summary.json and per_image.csv in dir. */
export function writeEvalReport(dir: string, r: EvalReport, extra: Record<string, unknown> = {}): void {
  writeFileAtomic(path.join(dir, 'summary.json'), JSON.stringify({ ...extra, ...r.summary }, null, 2) + '\n');
  const head = ['id', ...METRIC_NAMES].join(',');
  const lines = r.rows.map((row) => [csvField(row.name), ...METRIC_NAMES.map((k) => row[k].toFixed(6))].join(','));
  writeFileAtomic(path.join(dir, 'per_image.csv'), [head, ...lines].join('\n') + '\n');
}

function csvField(s: string): string {
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}
