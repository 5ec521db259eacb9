// A few test images saved with the model's prediction at their original resolution, for people to
// look at (the report's overlays): the best, median and worst image by Dice, and the first few of
// the split ("fixed": the same images in every run, so runs can be put side by side).
// Files: <dir>/examples.json and, per image, <k>_image.png (RGB), <k>_gt.png and <k>_pred.png (0/255;
// multi-class: class indices, the ignore index kept, with the classes' names and colours in examples.json).
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { noGrad, tensor, tidy, type Device } from '../engine/index.js';
import { writeFileAtomic } from '../io/atomic.js';
import { decodeSample, iterateBatches, type Batch, type BatchPrompts, type LoaderOptions, type SampleCache, type SampleSource } from '../data/loader.js';
import { logitsToOriginal } from './evaluate.js';
import type { MetricRow } from './metrics.js';
import { classColours, type ClassSpec } from '../data/classes.js';
import type { Tensor } from '../engine/index.js';

export type ExampleRole = 'best' | 'median' | 'worst' | 'fixed';

export interface ExampleItem {
  id: string;
  roles: ExampleRole[];
  /** Per-image scores as the evaluation computed them (its resolution), when known. */
  dice: number | null;
  iou: number | null;
  width: number;
  height: number;
  /** File names relative to the examples folder. */
  image: string;
  gt: string;
  pred: string;
}

export interface ExampleClasses { names: string[]; colours: Array<[number, number, number]>; ignore_index: number | null }

export interface ExamplesFile { split: string; prob_threshold: number; items: ExampleItem[]; classes?: ExampleClasses }

/** Which images to show: best, median and worst by Dice (rows), then the first `fixed` ids. */
export function pickExamples(rows: readonly MetricRow[], ids: readonly string[], fixed = 3): Map<string, ExampleRole[]> {
  const out = new Map<string, ExampleRole[]>();
  const add = (id: string, r: ExampleRole) => out.set(id, [...(out.get(id) ?? []), r]);
  const sorted = [...rows].sort((a, b) => b.dice - a.dice || a.name.localeCompare(b.name));
  if (sorted.length) {
    add(sorted[0]!.name, 'best');
    add(sorted[Math.floor((sorted.length - 1) / 2)]!.name, 'median');
    add(sorted[sorted.length - 1]!.name, 'worst');
  }
  for (const id of ids.slice(0, fixed)) add(id, 'fixed');
  return out;
}

export interface ExampleOptions {
  imageSize: number;
  labelSize: number;
  resize: LoaderOptions['resize'];
  threshold: number;
  probThreshold: number;
  cache?: SampleCache | null;
  /** Prompted mode: the prompts of a (one-image) batch, as the evaluation draws them. */
  prompts?: (b: Batch) => BatchPrompts | null;
  split?: string;
  /** The model's device (default 'cpu'): each image is made there; the prediction comes back for the PNG. */
  device?: Device;
  /** Multi-class: predictions are the argmax of the K maps, masks are class-index PNGs. */
  classes?: ClassSpec | null;
}

export interface ExampleModel { forward(images: Tensor, prompts?: BatchPrompts | null): Tensor }

/** Predicts the chosen images (one at a time) and writes them with examples.json into dir. */
export async function saveExamples(
  dir: string, model: ExampleModel, items: readonly SampleSource[], chosen: Map<string, ExampleRole[]>, rows: readonly MetricRow[], o: ExampleOptions,
): Promise<ExamplesFile> {
  fs.rmSync(dir, { recursive: true, force: true });  // no stale images from an earlier evaluation
  const byId = new Map(rows.map((r) => [r.name, r]));
  const picked = items.filter((s) => chosen.has(s.id));
  const out: ExampleItem[] = [];
  let k = 0;
  const rule = o.classes ?? o.threshold;
  for (const s of picked) {
    const d = 'rgb' in s ? s : o.cache ? await o.cache.get(s, rule) : await decodeSample(s, rule);
    let pred: Uint8Array | null = null;
    for await (const b of iterateBatches([d], {
      imageSize: o.imageSize, labelSize: o.labelSize, resize: o.resize, threshold: o.threshold, classes: o.classes, augment: null, batchSize: 1, shuffle: false,
    })) {
      const values = noGrad(() => tidy(() => {
        const x = tensor(b.images, [1, 3, b.imageSize, b.imageSize], { device: o.device });
        const logits = logitsToOriginal(model.forward(x, o.prompts?.(b) ?? null), o.imageSize, d.height, d.width, o.resize);
        return o.classes ? logits.argmax(1).toFloat32Array() : logits.sigmoid().toFloat32Array();
      }));
      pred = o.classes ? Uint8Array.from(values) : Uint8Array.from(values, (p) => (p > o.probThreshold ? 255 : 0));
    }
    const name = (what: string) => `${k}_${what}.png`;
    const gray = (m: Uint8Array) => sharp(m, { raw: { width: d.width, height: d.height, channels: 1 } }).png().toBuffer();
    writeFileAtomic(path.join(dir, name('image')), await sharp(d.rgb, { raw: { width: d.width, height: d.height, channels: 3 } }).png().toBuffer());
    writeFileAtomic(path.join(dir, name('gt')), await gray(o.classes ? d.mask : Uint8Array.from(d.mask, (v) => (v ? 255 : 0))));
    writeFileAtomic(path.join(dir, name('pred')), await gray(pred!));
    const r = byId.get(d.id);
    out.push({ id: d.id, roles: chosen.get(d.id)!, dice: r?.dice ?? null, iou: r?.iou ?? null, width: d.width, height: d.height, image: name('image'), gt: name('gt'), pred: name('pred') });
    k++;
  }
  const file: ExamplesFile = {
    split: o.split ?? 'test', prob_threshold: o.probThreshold, items: out,
    ...(o.classes ? { classes: { names: o.classes.names, colours: classColours(o.classes), ignore_index: o.classes.ignoreIndex } } : {}),
  };
  writeFileAtomic(path.join(dir, 'examples.json'), JSON.stringify(file, null, 2) + '\n');
  return file;
}
