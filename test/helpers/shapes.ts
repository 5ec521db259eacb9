// A small synthetic K=4 semantic-segmentation data set written as files: textured backgrounds
// with 1–3 shapes of 3 kinds (1 square, 2 disk, 3 cross), each kind tinted its own colour, and
// class-index mask PNGs (0 background, 1..3), optionally with an ignore band (value 255) along the
// bottom edge, or as palette masks with a classes.json.
import * as fs from 'node:fs';
import * as path from 'node:path';
import sharp from 'sharp';
import { mulberry32 } from '../../src/data/dataset.js';

export const SHAPE_CLASSES = ['background', 'square', 'disk', 'cross'];
export const SHAPE_PALETTE: Array<[number, number, number]> = [[0, 0, 0], [255, 0, 0], [0, 255, 0], [0, 0, 255]];

export interface ShapesOptions { n: number; width?: number; height?: number; seed?: number; ignoreBand?: number; palette?: boolean }

/** Class map and RGB of one image. */
export function shapeImage(rnd: () => number, W: number, H: number): { cls: Uint8Array; rgb: Uint8Array } {
  const cls = new Uint8Array(W * H);
  const count = 1 + Math.floor(rnd() * 3);
  for (let s = 0; s < count; s++) {
    const c = 1 + Math.floor(rnd() * 3), r = Math.min(W, H) * (0.14 + rnd() * 0.08);
    const cx = r + rnd() * (W - 2 * r), cy = r + rnd() * (H - 2 * r);
    for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
      const dx = Math.abs(x + 0.5 - cx), dy = Math.abs(y + 0.5 - cy);
      const inside = c === 1 ? dx < r && dy < r : c === 2 ? dx * dx + dy * dy < r * r : (dx < r && dy < r / 2) || (dy < r && dx < r / 2);
      if (inside) cls[y * W + x] = c;
    }
  }
  const tint = [[0, 0, 0], [90, -25, -25], [-25, 90, -25], [-25, -25, 90]];
  const rgb = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++) for (let x = 0; x < W; x++) {
    const c = cls[y * W + x]!;
    for (let ch = 0; ch < 3; ch++) {
      const v = 120 + tint[c]![ch]! + 30 * Math.sin(x * 0.9 + ch) * Math.cos(y * 0.7) + (rnd() - 0.5) * 45;
      rgb[(y * W + x) * 3 + ch] = Math.max(0, Math.min(255, Math.round(v)));
    }
  }
  return { cls, rgb };
}

/** Writes <dir>/images/s<k>.png and <dir>/masks/s<k>.png (and classes.json for palette masks). */
export async function writeShapes(dir: string, o: ShapesOptions): Promise<void> {
  const W = o.width ?? 64, H = o.height ?? 64;
  const rnd = mulberry32(o.seed ?? 1);
  fs.mkdirSync(path.join(dir, 'images'), { recursive: true });
  fs.mkdirSync(path.join(dir, 'masks'), { recursive: true });
  for (let k = 0; k < o.n; k++) {
    const { cls, rgb } = shapeImage(rnd, W, H);
    if (o.ignoreBand) cls.fill(255, (H - o.ignoreBand) * W);
    const id = `s${String(k).padStart(3, '0')}`;
    await sharp(rgb, { raw: { width: W, height: H, channels: 3 } }).png().toFile(path.join(dir, 'images', `${id}.png`));
    let mask: ReturnType<typeof sharp>;
    if (o.palette) {
      const colourMap = new Uint8Array(W * H * 3);
      cls.forEach((c, i) => colourMap.set(SHAPE_PALETTE[c] ?? [255, 255, 255], 3 * i));
      mask = sharp(colourMap, { raw: { width: W, height: H, channels: 3 } });
    } else mask = sharp(cls, { raw: { width: W, height: H, channels: 1 } }).toColourspace('b-w');  // one channel: the indices as they are
    await mask.png().toFile(path.join(dir, 'masks', `${id}.png`));
  }
  if (o.palette) {
    if (o.ignoreBand) throw new Error('writeShapes: palette masks here have no ignore colour');
    fs.writeFileSync(path.join(dir, 'classes.json'), JSON.stringify({ classes: SHAPE_CLASSES.map((name, index) => ({ name, index, colour: SHAPE_PALETTE[index] })) }));
  }
}
