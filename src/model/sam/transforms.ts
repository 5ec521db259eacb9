// segment-anything's ResizeLongestSide (segment_anything/utils/transforms.py), on plain typed arrays.
// SamPredictor resizes with torchvision's F.resize on a PIL image, i.e. PIL's Image.resize(BILINEAR),
// which since Pillow 7 is an *antialiased* separable resampler. We port Pillow's
// libImaging/Resample.c (8-bit path) so that the resized image is byte-identical to the reference:
// same coefficients (double), same fixed-point rounding (22 fraction bits), same pass order.

import type { ImageU8 } from '../../io/image.js';

export type { ImageU8 };

/** Output size (h, w) whose longest side is `longSide`: `int(x * scale + 0.5)` as in the official code. */
export function getPreprocessShape(h: number, w: number, longSide: number): [number, number] {
  const scale = (longSide * 1.0) / Math.max(h, w);
  // Python's int() truncates; the values are positive so floor == trunc.
  return [Math.trunc(h * scale + 0.5), Math.trunc(w * scale + 0.5)];
}

// Pillow: "8 bits for result. Filter can have negative areas [...] two extra bits for overflow".
const PRECISION_BITS = 32 - 8 - 2;

// Pillow's bilinear (triangle) filter, support 1.
function triangle(x: number): number {
  if (x < 0) x = -x;
  return x < 1 ? 1 - x : 0;
}

interface Coeffs { ksize: number; bounds: Int32Array; kk: Int32Array }

// Port of precompute_coeffs + normalize_coeffs_8bpc for the box (0, inSize). When downscaling the
// triangle is stretched by the scale (support = 1 * scale): that is the antialiasing.
function precomputeCoeffs(inSize: number, outSize: number): Coeffs {
  // `(double)(in1 - in0)`: in0 = 0 and in1 = inSize are exact in float.
  const scale = inSize / outSize;
  const filterscale = scale < 1 ? 1 : scale;
  const support = 1.0 * filterscale;
  const ksize = Math.ceil(support) * 2 + 1;
  const bounds = new Int32Array(outSize * 2);
  const kk = new Int32Array(outSize * ksize);
  const w = new Float64Array(ksize);
  for (let xx = 0; xx < outSize; xx++) {
    const center = 0 + (xx + 0.5) * scale;
    const ss = 1.0 / filterscale;
    let ww = 0.0;
    // C `(int)` truncates toward zero.
    let xmin = Math.trunc(center - support + 0.5);
    if (xmin < 0) xmin = 0;
    let xmax = Math.trunc(center + support + 0.5);
    if (xmax > inSize) xmax = inSize;
    xmax -= xmin;
    for (let x = 0; x < xmax; x++) {
      const v = triangle((x + xmin - center + 0.5) * ss);
      w[x] = v;
      ww += v;
    }
    for (let x = 0; x < xmax; x++) {
      const k = ww !== 0 ? w[x] / ww : w[x];
      // normalize_coeffs_8bpc: round half away from zero to fixed point.
      kk[xx * ksize + x] = k < 0 ? Math.trunc(-0.5 + k * (1 << PRECISION_BITS)) : Math.trunc(0.5 + k * (1 << PRECISION_BITS));
    }
    bounds[xx * 2] = xmin;
    bounds[xx * 2 + 1] = xmax;
  }
  return { ksize, bounds, kk };
}

// Pillow's clip8: drop the fraction bits, clamp to [0, 255].
function clip8(ss: number): number {
  const v = ss >> PRECISION_BITS;
  return v < 0 ? 0 : v > 255 ? 255 : v;
}

/**
 * PIL `Image.resize((outW, outH), Image.BILINEAR)` for a uint8 image with any channel count
 * (Pillow resamples each band independently, so 1, 3 and 4 channels behave alike; note that PIL
 * premultiplies alpha for RGBA/LA first, which this function does not do).
 */
export function resizeBilinearU8(img: ImageU8, outW: number, outH: number): ImageU8 {
  const { width: inW, height: inH, channels: C, data } = img;
  if (data.length !== inW * inH * C) throw new Error(`resizeBilinearU8: data has ${data.length} bytes, ${inW}x${inH}x${C} needs ${inW * inH * C}`);
  if (!(Number.isInteger(outW) && Number.isInteger(outH) && outW > 0 && outH > 0)) throw new Error(`resizeBilinearU8: invalid output size ${outW}x${outH}`);
  // PIL returns a copy when nothing changes; each pass is skipped when its size is unchanged.
  const needH = outW !== inW;
  const needV = outH !== inH;
  const half = 1 << (PRECISION_BITS - 1);
  let src = data;
  let srcW = inW;
  const vert = precomputeCoeffs(inH, outH);
  // Horizontal pass first, only over the rows the vertical pass will read (Pillow's ybox_first..last).
  let rowOffset = 0;
  if (needH) {
    const yFirst = vert.bounds[0];
    const yLast = vert.bounds[outH * 2 - 2] + vert.bounds[outH * 2 - 1];
    const rows = yLast - yFirst;
    rowOffset = yFirst;
    const { ksize, bounds, kk } = precomputeCoeffs(inW, outW);
    const tmp = new Uint8Array(outW * rows * C);
    for (let yy = 0; yy < rows; yy++) {
      const rowIn = (yy + yFirst) * inW * C;
      for (let xx = 0; xx < outW; xx++) {
        const xmin = bounds[xx * 2], xmax = bounds[xx * 2 + 1], k0 = xx * ksize;
        for (let c = 0; c < C; c++) {
          let ss = half;
          for (let x = 0; x < xmax; x++) ss += data[rowIn + (x + xmin) * C + c] * kk[k0 + x];
          tmp[(yy * outW + xx) * C + c] = clip8(ss);
        }
      }
    }
    src = tmp;
    srcW = outW;
  }
  if (!needV) {
    return { data: needH ? src : data.slice(), width: srcW, height: inH, channels: C };
  }
  const { ksize, bounds, kk } = vert;
  const out = new Uint8Array(srcW * outH * C);
  for (let yy = 0; yy < outH; yy++) {
    // Bounds are relative to the first row kept by the horizontal pass.
    const ymin = bounds[yy * 2] - rowOffset, ymax = bounds[yy * 2 + 1], k0 = yy * ksize;
    for (let i = 0; i < srcW * C; i++) {
      let ss = half;
      for (let y = 0; y < ymax; y++) ss += src[(y + ymin) * srcW * C + i] * kk[k0 + y];
      out[yy * srcW * C + i] = clip8(ss);
    }
  }
  return { data: out, width: srcW, height: outH, channels: C };
}

/** ResizeLongestSide.apply_image: resize so that the longest side is `targetLength` (PIL bilinear). */
export function resizeImageU8(img: ImageU8, targetLength: number): ImageU8 {
  const [h, w] = getPreprocessShape(img.height, img.width, targetLength);
  return resizeBilinearU8(img, w, h);
}

/**
 * ResizeLongestSide.apply_coords: (x, y) pairs (flat, N*2) in original pixels → resized-image
 * pixels. float64 like numpy; SamPredictor then casts to float32.
 */
export function applyCoords(coords: ArrayLike<number>, origHW: readonly [number, number], longSide: number): Float64Array {
  const [oldH, oldW] = origHW;
  const [newH, newW] = getPreprocessShape(oldH, oldW, longSide);
  if (coords.length % 2 !== 0) throw new Error(`applyCoords: ${coords.length} values is not a list of (x, y) pairs`);
  const out = new Float64Array(coords.length);
  for (let i = 0; i < coords.length; i += 2) {
    out[i] = coords[i] * (newW / oldW);
    out[i + 1] = coords[i + 1] * (newH / oldH);
  }
  return out;
}

/** ResizeLongestSide.apply_boxes: boxes (flat, N*4, x0 y0 x1 y1) are two corner points each. */
export function applyBoxes(boxes: ArrayLike<number>, origHW: readonly [number, number], longSide: number): Float64Array {
  if (boxes.length % 4 !== 0) throw new Error(`applyBoxes: ${boxes.length} values is not a multiple of 4`);
  return applyCoords(boxes, origHW, longSide);
}
