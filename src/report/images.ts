// Example panels at the image's original resolution, rendered with sharp to PNG and inlined as
// data URIs: the image, the ground truth, the prediction and an error map. Masks are drawn as flat
// colours (a few kB as PNG) so that a report's size is mostly its photographs; a byte budget caps
// how many examples a report carries.
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { colourise } from '../data/classes.js';
import { esc } from './html.js';
import type { ExampleClasses } from '../eval/examples.js';

/** Error-map colours (colour-blind-safe pair for the two kinds of error). */
export const COLOURS = {
  tp: [235, 235, 235], fp: [230, 97, 0], fn: [26, 133, 255], tn: [20, 20, 20],
  gt: [60, 200, 90], pred: [255, 200, 40],
} as const;

export interface Mask { data: Uint8Array; width: number; height: number }

export async function readMask(file: string): Promise<Mask> {
  if (!fs.existsSync(file)) throw new Error(`${file}: missing (examples/ is incomplete)`);
  const { data, info } = await sharp(file).greyscale().raw().toBuffer({ resolveWithObject: true });
  const out = new Uint8Array(info.width * info.height);
  for (let i = 0; i < out.length; i++) out[i] = data[i * info.channels]! > 127 ? 1 : 0;
  return { data: out, width: info.width, height: info.height };
}

function rgbPng(rgb: Uint8Array, width: number, height: number): Promise<Buffer> {
  return sharp(rgb, { raw: { width, height, channels: 3 } }).png({ compressionLevel: 9, palette: false }).toBuffer();
}

/** A mask as one colour on black. */
export function maskPng(m: Mask, colour: readonly number[]): Promise<Buffer> {
  const rgb = new Uint8Array(m.width * m.height * 3);
  for (let i = 0; i < m.data.length; i++) if (m.data[i]) rgb.set(colour, i * 3);
  return rgbPng(rgb, m.width, m.height);
}

/** True positives light grey, false positives orange, false negatives blue, background black. */
export function errorPng(gt: Mask, pred: Mask): Promise<Buffer> {
  if (gt.width !== pred.width || gt.height !== pred.height) throw new Error(`prediction ${pred.width}×${pred.height} does not match the ground truth ${gt.width}×${gt.height}`);
  const rgb = new Uint8Array(gt.width * gt.height * 3);
  for (let i = 0; i < gt.data.length; i++) {
    const g = gt.data[i], p = pred.data[i];
    rgb.set(g && p ? COLOURS.tp : p ? COLOURS.fp : g ? COLOURS.fn : COLOURS.tn, i * 3);
  }
  return rgbPng(rgb, gt.width, gt.height);
}

export const dataUri = (png: Buffer): string => `data:image/png;base64,${png.toString('base64')}`;

/** Counts the bytes of what goes into the page; refuses what would pass the budget. */
export class ImageBudget {
  used = 0;
  skipped = 0;
  constructor(readonly bytes: number) {}
  fits(pngs: readonly Buffer[]): boolean {
    const n = pngs.reduce((a, b) => a + Math.ceil(b.length / 3) * 4 + 22, 0);
    if (this.used + n > this.bytes) { this.skipped++; return false; }
    this.used += n;
    return true;
  }
}

export interface Panels { image: Buffer; gt: Buffer; pred: Buffer; error: Buffer; width: number; height: number }

/** A class-index PNG as written by eval/examples.ts (values kept, not thresholded). */
export async function readClassMap(file: string): Promise<Mask> {
  if (!fs.existsSync(file)) throw new Error(`${file}: missing (examples/ is incomplete)`);
  const { data, info } = await sharp(file).extractChannel(0).raw().toBuffer({ resolveWithObject: true });
  return { data: new Uint8Array(data.buffer, data.byteOffset, info.width * info.height), width: info.width, height: info.height };
}

/** A class map in the class colours (ignored or unknown values white). */
export function classPng(m: Mask, colours: ReadonlyArray<readonly [number, number, number]>): Promise<Buffer> {
  return rgbPng(colourise(m.data, colours), m.width, m.height);
}

/** Multi-class error map: correct light grey, wrong class orange, ignored pixels black. */
export function classErrorPng(gt: Mask, pred: Mask, ignoreIndex: number | null): Promise<Buffer> {
  if (gt.width !== pred.width || gt.height !== pred.height) throw new Error(`prediction ${pred.width}×${pred.height} does not match the ground truth ${gt.width}×${gt.height}`);
  const rgb = new Uint8Array(gt.width * gt.height * 3);
  for (let i = 0; i < gt.data.length; i++) rgb.set(gt.data[i] === ignoreIndex ? COLOURS.tn : gt.data[i] === pred.data[i] ? COLOURS.tp : COLOURS.fp, i * 3);
  return rgbPng(rgb, gt.width, gt.height);
}

/** The four panels of one saved example (files from eval/examples.ts); `classes` for multi-class examples. */
export async function examplePanels(dir: string, files: { image: string; gt: string; pred: string }, classes: ExampleClasses | null = null): Promise<Panels> {
  const imageFile = path.join(dir, files.image);
  if (!fs.existsSync(imageFile)) throw new Error(`${imageFile}: missing (examples/ is incomplete)`);
  const image = fs.readFileSync(imageFile);
  if (classes) {
    const gt = await readClassMap(path.join(dir, files.gt));
    const pred = await readClassMap(path.join(dir, files.pred));
    return { image, gt: await classPng(gt, classes.colours), pred: await classPng(pred, classes.colours), error: await classErrorPng(gt, pred, classes.ignore_index), width: gt.width, height: gt.height };
  }
  const gt = await readMask(path.join(dir, files.gt));
  const pred = await readMask(path.join(dir, files.pred));
  return { image, gt: await maskPng(gt, COLOURS.gt), pred: await maskPng(pred, COLOURS.pred), error: await errorPng(gt, pred), width: gt.width, height: gt.height };
}

export function classLegendHtml(c: ExampleClasses): string {
  const sw = (col: readonly number[], label: string) => `<span style="background:rgb(${col.join(',')})"></span>${esc(label)}`;
  return `<p class="legend muted" id="class-legend">classes: ${c.names.map((n, i) => sw(c.colours[i]!, n)).join('')}${c.ignore_index === null ? '' : sw([255, 255, 255], `ignored (${c.ignore_index})`)}</p>`
    + `<p class="legend muted">error map: ${sw(COLOURS.tp, 'right class')}${sw(COLOURS.fp, 'wrong class')}${c.ignore_index === null ? '' : sw(COLOURS.tn, 'ignored')}</p>`;
}

export function legendHtml(): string {
  const sw = (c: readonly number[], label: string) => `<span style="background:rgb(${c.join(',')})"></span>${label}`;
  return `<p class="legend muted">error map: ${sw(COLOURS.tp, 'true positive')}${sw(COLOURS.fp, 'false positive')}${sw(COLOURS.fn, 'false negative')}${sw(COLOURS.tn, 'true negative')}</p>`;
}

/** An inlined panel: the PNG at its own size, shown 160–280 px wide (small images scaled up, pixelated). */
export function imgTag(png: Buffer, width: number, height: number, attrs: Record<string, string>): string {
  const scale = Math.min(280 / width, Math.max(1, Math.floor(160 / width)), 280 / height);
  const a = Object.entries(attrs).map(([k, v]) => ` ${k}="${v.replace(/[&"<>]/g, (c) => ({ '&': '&amp;', '"': '&quot;', '<': '&lt;', '>': '&gt;' })[c]!)}"`).join('');
  return `<img${a} src="${dataUri(png)}" style="width:${Math.round(width * scale)}px;height:${Math.round(height * scale)}px">`;
}
