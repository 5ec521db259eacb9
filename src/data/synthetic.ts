// Synthetic segmentation domains for the demo (no files needed), deterministic from the seed.
//
//  source: saturated, smoothly shaded ellipses (1-3, all foreground) with crisp edges on colourful
//          textured backgrounds (value noise + stripes) — easy, "natural-image-like" objects.
//  target: one low-contrast irregular lesion (radius modulated by harmonics, soft edge, mottled inside)
//          on a skin/tissue-toned background with uneven illumination, dark hair-like distractor curves
//          and multiplicative speckle noise — a medical-looking domain in which colour and edge cues
//          learnt on the source do not transfer, so adapting source -> target is a real task.
//
// Image i of a domain depends only on (seed, kind, i), not on n. Pure TS: ~1 ms at 64², ~3 ms at 128², ~10 ms at 256².
import type { DecodedSample } from './loader.js';
import { hashSeed, mulberry32 } from './dataset.js';

export type DomainKind = 'source' | 'target';

export interface SyntheticDomain {
  kind: DomainKind;
  size: number;
  seed: number;
  /** Same shape as a decoded file sample: RGB uint8 HWC + 0/1 mask; usable by iterateBatches directly. */
  samples: DecodedSample[];
}

type Rng = () => number;
type RGB = [number, number, number];

const clamp255 = (v: number): number => (v < 0 ? 0 : v > 255 ? 255 : v);
const gauss = (r: Rng): number => (r() + r() - 1) * 2.449; // triangular, mean 0, std 1: cheap stand-in for N(0,1)
const lerp = (a: number, b: number, t: number): number => a + (b - a) * t;

/** Smooth value noise on a g×g lattice, sampled at size×size; values in [0,1]. */
function valueNoise(size: number, g: number, r: Rng): Float32Array {
  const lat = new Float32Array((g + 1) * (g + 1)).map(() => r());
  const out = new Float32Array(size * size);
  for (let y = 0; y < size; y++) {
    const fy = (y / size) * g, iy = Math.floor(fy), ty = fy - iy, sy = ty * ty * (3 - 2 * ty);
    for (let x = 0; x < size; x++) {
      const fx = (x / size) * g, ix = Math.floor(fx), tx = fx - ix, sx = tx * tx * (3 - 2 * tx);
      const a = lat[iy * (g + 1) + ix]!, b = lat[iy * (g + 1) + ix + 1]!;
      const c = lat[(iy + 1) * (g + 1) + ix]!, d = lat[(iy + 1) * (g + 1) + ix + 1]!;
      out[y * size + x] = lerp(lerp(a, b, sx), lerp(c, d, sx), sy);
    }
  }
  return out;
}

/** Two-octave fractal noise in [0,1]. */
function fbm(size: number, g: number, r: Rng): Float32Array {
  const a = valueNoise(size, g, r), b = valueNoise(size, g * 4, r);
  for (let i = 0; i < a.length; i++) a[i] = 0.7 * a[i]! + 0.3 * b[i]!;
  return a;
}

function hsv(h: number, s: number, v: number): RGB {
  const f = (n: number): number => {
    const k = (n + h * 6) % 6;
    return 255 * v * (1 - s * Math.max(0, Math.min(k, 4 - k, 1)));
  };
  return [f(5), f(3), f(1)];
}

function sourceImage(size: number, r: Rng): { rgb: Uint8Array; mask: Uint8Array } {
  const rgb = new Uint8Array(size * size * 3);
  const mask = new Uint8Array(size * size);
  const h0 = r();
  const c1 = hsv(h0, 0.3 + 0.4 * r(), 0.35 + 0.3 * r());
  const c2 = hsv((h0 + 0.15 + 0.2 * r()) % 1, 0.3 + 0.4 * r(), 0.5 + 0.4 * r());
  const tex = fbm(size, 3 + Math.floor(r() * 4), r);
  const freq = (2 + r() * 6) * (2 * Math.PI / size), ang = r() * Math.PI, ca = Math.cos(ang), sa = Math.sin(ang);
  const objs = Array.from({ length: 1 + Math.floor(r() * 3) }, () => ({
    cx: size * (0.2 + 0.6 * r()), cy: size * (0.2 + 0.6 * r()),
    ax: size * (0.08 + 0.17 * r()), ay: size * (0.08 + 0.17 * r()),
    th: r() * Math.PI, col: hsv((h0 + 0.4 + 0.3 * r()) % 1, 0.7 + 0.3 * r(), 0.8 + 0.2 * r()),
  })).map((o) => ({ ...o, c: Math.cos(o.th), s: Math.sin(o.th) }));
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) {
      const i = y * size + x;
      const stripes = 0.5 + 0.5 * Math.sin((x * ca + y * sa) * freq);
      const t = 0.65 * tex[i]! + 0.35 * stripes;
      let cr = lerp(c1[0], c2[0], t), cg = lerp(c1[1], c2[1], t), cb = lerp(c1[2], c2[2], t);
      for (const o of objs) {
        const dx = x - o.cx, dy = y - o.cy;
        const u = (dx * o.c + dy * o.s) / o.ax;
        const v = (-dx * o.s + dy * o.c) / o.ay;
        const d2 = u * u + v * v;
        if (d2 <= 1) {
          const shade = 0.75 + 0.25 * (1 - d2); // lighter towards the centre
          (cr = o.col[0] * shade), (cg = o.col[1] * shade), (cb = o.col[2] * shade);
          mask[i] = 1;
        }
      }
      const n = (r() - 0.5) * 8;
      rgb[3 * i] = clamp255(cr + n);
      rgb[3 * i + 1] = clamp255(cg + n);
      rgb[3 * i + 2] = clamp255(cb + n);
    }
  return { rgb, mask };
}

function targetImage(size: number, r: Rng): { rgb: Uint8Array; mask: Uint8Array } {
  const rgb = new Uint8Array(size * size * 3);
  const mask = new Uint8Array(size * size);
  // Tissue tone (pink-beige .. grey-brown) and a slightly darker, browner lesion: low contrast by design.
  const bg: RGB = [180 + 40 * r(), 130 + 40 * r(), 110 + 40 * r()];
  const k = 0.72 + 0.12 * r();
  const les: RGB = [bg[0] * k, bg[1] * (k - 0.06), bg[2] * (k - 0.08)];
  const cx = size * (0.3 + 0.4 * r()), cy = size * (0.3 + 0.4 * r()), r0 = size * (0.12 + 0.16 * r());
  const harm = [2, 3, 4, 5].map((n) => ({ n, a: (0.05 + 0.12 * r()) / n * 2, p: r() * 2 * Math.PI }));
  const soft = Math.max(1, size * 0.03); // width of the blurry boundary, in pixels
  const reach = r0 * harm.reduce((m, h) => m * (1 + h.a), 1) + 2 * soft; // beyond it: plain background
  const mottle = fbm(size, 6 + Math.floor(r() * 6), r);
  const light = valueNoise(size, 2, r);
  const hairs = Array.from({ length: Math.floor(r() * 4) }, () => ({
    x0: r() * size, y0: r() * size, ang: r() * Math.PI, bend: (r() - 0.5) * 0.02, w: 0.6 + r() * 0.8,
  })).map((h) => ({ ...h, c: Math.cos(h.ang), s: Math.sin(h.ang) }));
  const speckle = 0.12 + 0.12 * r();
  for (let y = 0; y < size; y++)
    for (let x = 0; x < size; x++) {
      const i = y * size + x;
      const dx = x - cx, dy = y - cy;
      const dist = Math.sqrt(dx * dx + dy * dy);
      let t = 0;
      if (dist < reach) {
        const th = Math.atan2(dy, dx);
        let rad = r0;
        for (const h of harm) rad *= 1 + h.a * Math.sin(h.n * th + h.p);
        const sd = dist - rad; // signed distance to the boundary (approx.)
        if (sd <= 0) mask[i] = 1;
        t = Math.min(1, Math.max(0, 0.5 - sd / (2 * soft))) * (0.8 + 0.4 * mottle[i]!);
      }
      const illum = 0.8 + 0.35 * light[i]!;
      let cr = lerp(bg[0], les[0], t) * illum, cg = lerp(bg[1], les[1], t) * illum, cb = lerp(bg[2], les[2], t) * illum;
      for (const hr of hairs) {
        // distance to a gently bent line through (x0,y0)
        const px = x - hr.x0, py = y - hr.y0;
        const along = px * hr.c + py * hr.s;
        const across = -px * hr.s + py * hr.c - hr.bend * along * along;
        if (Math.abs(across) < hr.w) (cr *= 0.35), (cg *= 0.3), (cb *= 0.3);
      }
      const sp = 1 + speckle * gauss(r); // multiplicative speckle, same for the three channels
      rgb[3 * i] = clamp255(cr * sp);
      rgb[3 * i + 1] = clamp255(cg * sp);
      rgb[3 * i + 2] = clamp255(cb * sp);
    }
  return { rgb, mask };
}

export function makeSyntheticDomain(kind: DomainKind, n: number, size: number, seed: number): SyntheticDomain {
  if (!(size >= 8)) throw new Error(`synthetic image size must be >= 8, got ${size}`);
  const samples = Array.from({ length: n }, (_, i): DecodedSample => {
    const r = mulberry32(hashSeed(seed, kind, i));
    const { rgb, mask } = kind === 'source' ? sourceImage(size, r) : targetImage(size, r);
    return { id: `syn-${kind}-${String(i).padStart(4, '0')}`, width: size, height: size, rgb, mask };
  });
  return { kind, size, seed, samples };
}
