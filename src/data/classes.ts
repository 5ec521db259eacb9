// Multi-class masks: single-channel class-index PNGs (0 = background, 1..K−1, and optionally an
// ignore index such as 255), or colour/palette PNGs mapped to indices by a classes.json:
//   {"classes": [{"name": "background", "index": 0, "colour": [0, 0, 0]}, …], "ignore_index": 255}
// Binary data sets do not use any of this and keep working unchanged.
import * as fs from 'node:fs';
import sharp from 'sharp';
import { z } from 'zod';
import { MAX_IMAGE_PIXELS, sharpInputOptions } from '../io/image.js';

export interface ClassSpec {
  /** Class names by index (K = names.length). */
  names: string[];
  /** Colour of each class (palette masks), or null for class-index masks. */
  colours: Array<[number, number, number]> | null;
  ignoreIndex: number | null;
}

const Rgb = z.tuple([z.number().int().min(0).max(255), z.number().int().min(0).max(255), z.number().int().min(0).max(255)]);
const ClassesFile = z.strictObject({
  classes: z.array(z.strictObject({ name: z.string().min(1), index: z.number().int().min(0).max(254), colour: Rgb.optional() })).min(2),
  ignore_index: z.number().int().min(0).max(255).nullable().optional(),
});

/** classes.json → a ClassSpec; indices must be 0..K−1, each once; colours all given or none, distinct. */
export function readClassSpec(file: string): ClassSpec {
  let raw: unknown;
  try { raw = JSON.parse(fs.readFileSync(file, 'utf8')); } catch (e) { throw new Error(`${file}: ${(e as Error).message}`); }
  const r = ClassesFile.safeParse(raw);
  if (!r.success) throw new Error(`${file}: ${r.error.issues.map((i) => `${i.path.join('.')}: ${i.message}`).join('; ')}`);
  const k = r.data.classes.length;
  const names: string[] = Array(k);
  const colours: Array<[number, number, number] | undefined> = Array(k);
  for (const c of r.data.classes) {
    if (c.index >= k) throw new Error(`${file}: class '${c.name}' has index ${c.index}; with ${k} classes the indices are 0..${k - 1}`);
    if (names[c.index] !== undefined) throw new Error(`${file}: index ${c.index} is given twice ('${names[c.index]}', '${c.name}')`);
    names[c.index] = c.name;
    colours[c.index] = c.colour;
  }
  const some = colours.filter(Boolean).length;
  if (some && some !== k) throw new Error(`${file}: give a colour for every class or for none (${some} of ${k} have one)`);
  const keys = colours.map((c) => c?.join(','));
  if (some && new Set(keys).size !== k) throw new Error(`${file}: two classes share a colour`);
  const ignore = r.data.ignore_index ?? null;
  if (ignore !== null && ignore < k) throw new Error(`${file}: ignore_index ${ignore} is also a class index (0..${k - 1})`);
  return { names, colours: some ? (colours as Array<[number, number, number]>) : null, ignoreIndex: ignore };
}

/** A spec of K unnamed classes (class-index masks). */
export function numberedClasses(k: number, ignoreIndex: number | null = null): ClassSpec {
  if (!(Number.isInteger(k) && k >= 2 && k <= 255)) throw new Error(`the number of classes must be an integer in 2..255, got ${k}`);
  if (ignoreIndex !== null && ignoreIndex < k) throw new Error(`ignore index ${ignoreIndex} is also a class index (0..${k - 1})`);
  return { names: Array.from({ length: k }, (_, i) => (i === 0 ? 'background' : `class ${i}`)), colours: null, ignoreIndex };
}

export interface ClassMask {
  /** Class index per pixel (or the ignore index). */
  data: Uint8Array;
  width: number;
  height: number;
  /** Values that are neither a class nor the ignore index (class-index masks), with pixel counts. */
  unknown: Map<number, number>;
  /** Colours not in the palette (palette masks): 'r,g,b' → pixel count; those pixels get the ignore index (or 255). */
  unknownColours: Map<string, number>;
}

/** Decodes a class mask (PNG: 8-bit gray index, or RGB/palette with spec colours). */
export async function decodeClassMask(file: string, spec: ClassSpec): Promise<ClassMask> {
  const img = sharp(file, sharpInputOptions(MAX_IMAGE_PIXELS));
  const { data, info } = await (spec.colours ? img.removeAlpha().toColourspace('srgb') : img.extractChannel(0)).raw().toBuffer({ resolveWithObject: true });
  const n = info.width * info.height;
  const out = new Uint8Array(n);
  const unknown = new Map<number, number>(), unknownColours = new Map<string, number>();
  const k = spec.names.length;
  if (spec.colours) {
    if (info.channels !== 3) throw new Error(`${file}: decoded to ${info.channels} channels, expected a colour mask`);
    const byColour = new Map(spec.colours.map((c, i) => [(c[0] << 16) | (c[1] << 8) | c[2], i]));
    for (let i = 0; i < n; i++) {
      const key = (data[3 * i]! << 16) | (data[3 * i + 1]! << 8) | data[3 * i + 2]!;
      const c = byColour.get(key);
      if (c === undefined) {
        const s = `${data[3 * i]},${data[3 * i + 1]},${data[3 * i + 2]}`;
        unknownColours.set(s, (unknownColours.get(s) ?? 0) + 1);
        out[i] = spec.ignoreIndex ?? 255;
      } else out[i] = c;
    }
  } else {
    for (let i = 0; i < n; i++) {
      const v = data[i * info.channels]!;
      if (v >= k && v !== spec.ignoreIndex) unknown.set(v, (unknown.get(v) ?? 0) + 1);
      out[i] = v;
    }
  }
  return { data: out, width: info.width, height: info.height, unknown, unknownColours };
}

export interface ClassStats {
  /** Pixels per class over the data set (valid pixels only), and images containing each class. */
  pixels: number[];
  images: number[];
  ignored: number;
  unknown: Map<number, { pixels: number; ids: string[] }>;
  unknownColours: Map<string, { pixels: number; ids: string[] }>;
}

export function emptyClassStats(k: number): ClassStats {
  return { pixels: Array(k).fill(0), images: Array(k).fill(0), ignored: 0, unknown: new Map(), unknownColours: new Map() };
}

export function addClassStats(s: ClassStats, id: string, m: ClassMask, spec: ClassSpec): void {
  const k = spec.names.length;
  const seen = new Uint8Array(k);
  for (const v of m.data) {
    if (v < k) { s.pixels[v]!++; seen[v] = 1; } else if (v === spec.ignoreIndex) s.ignored++;
  }
  seen.forEach((x, c) => { if (x) s.images[c]!++; });
  for (const [v, n] of m.unknown) { const e = s.unknown.get(v) ?? { pixels: 0, ids: [] }; e.pixels += n; e.ids.push(id); s.unknown.set(v, e); }
  for (const [c, n] of m.unknownColours) { const e = s.unknownColours.get(c) ?? { pixels: 0, ids: [] }; e.pixels += n; e.ids.push(id); s.unknownColours.set(c, e); }
}

/** Distinct colours for classes without a palette (background black, then a colour-blind-aware set, then a golden-angle hue walk). */
const DEFAULT_COLOURS: Array<[number, number, number]> = [
  [0, 0, 0], [230, 159, 0], [86, 180, 233], [0, 158, 115], [240, 228, 66], [0, 114, 178], [213, 94, 0], [204, 121, 167],
];

/** The colour each class is drawn in: the spec's palette, or the default set. */
export function classColours(spec: ClassSpec): Array<[number, number, number]> {
  if (spec.colours) return spec.colours.map((c) => [...c] as [number, number, number]);
  return spec.names.map((_, i) => {
    if (i < DEFAULT_COLOURS.length) return DEFAULT_COLOURS[i]!;
    const h = (i * 137.508) % 360, f = (n: number) => { const k = (n + h / 30) % 12; return Math.round(255 * (0.55 - 0.4 * Math.max(-1, Math.min(k - 3, 9 - k, 1)))); };
    return [f(0), f(8), f(4)];
  });
}

/** A class map drawn in the class colours (RGB, HWC); the ignore index (or any non-class value) is drawn white. */
export function colourise(map: ArrayLike<number>, colours: ReadonlyArray<readonly [number, number, number]>): Uint8Array {
  const out = new Uint8Array(map.length * 3);
  for (let i = 0; i < map.length; i++) out.set(colours[map[i]!] ?? [255, 255, 255], i * 3);
  return out;
}
