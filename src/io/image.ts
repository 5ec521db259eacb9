// Image and mask files <-> typed arrays, through sharp (libvips).
// The reference pipeline decodes with PIL: `Image.open(f).convert('RGB')` for images and
// `convert('L')` for masks. We reproduce PIL's conventions exactly:
// - no EXIF auto-rotation (PIL does not rotate on open; sharp only does when asked);
// - embedded ICC profiles are ignored (PIL ignores them; sharp would convert to sRGB by default);
// - alpha is dropped, not composited; grey is replicated to R=G=B;
// - CMYK and 16-bit grey use PIL's own (naive) conversions, done here by hand.
// JPEG decoding itself is libjpeg(-turbo) islow IDCT + fancy upsampling in both, and is byte-identical
// on every image of the shared datasets (see test/image.test.ts).
import * as fs from 'node:fs';
import sharp, { type Metadata, type SharpOptions } from 'sharp';
import { writeFileAtomic } from './atomic.js';
/** An 8-bit image, HWC (row-major, channels interleaved). */
export interface ImageU8 {
  data: Uint8Array;
  width: number;
  height: number;
  channels: number;
}

/** Decoded RGB image, row-major HWC uint8 (the layout of `np.asarray(img.convert('RGB'))`). */
export interface RgbImage extends ImageU8 {
  channels: 3;
}

/** Binary mask, row-major, one byte per pixel, values 0/1. */
export interface BinaryMask {
  data: Uint8Array;
  width: number;
  height: number;
}

export class ImageDecodeError extends Error {
  constructor(what: string, reason: string) { super(`cannot decode image ${what}: ${reason}`); }
}

/**
 * Largest pixel count (width × height, from the file's header) that decoding accepts: 8192 × 8192.
 * A tiny compressed file can declare a huge image (a decompression bomb: a PNG of zeros declaring
 * 50000 × 50000 is a few hundred KB); the header is checked against this limit before any pixel
 * buffer is allocated or anything is decoded. Override per call with `DecodeOptions.maxPixels`.
 */
export const MAX_IMAGE_PIXELS = 8192 * 8192;

/** The image declares more pixels than allowed (an HTTP server answers 413 to this). */
export class ImageTooLargeError extends ImageDecodeError {
  constructor(what: string, readonly width: number, readonly height: number, readonly limit: number) {
    super(what, `image has ${width}×${height} = ${width * height} pixels, more than the limit of ${limit}`);
  }
}

export interface DecodeOptions {
  /** Largest width × height accepted (default MAX_IMAGE_PIXELS). */
  maxPixels?: number;
}

/** Checks a `maxPixels` option; returns the limit to apply. */
export function pixelLimit(opts: DecodeOptions = {}): number {
  const limit = opts.maxPixels ?? MAX_IMAGE_PIXELS;
  if (!Number.isSafeInteger(limit) || limit < 1) throw new RangeError(`maxPixels must be a positive integer, got ${limit}`);
  return limit;
}

/**
 * sharp's options for decoding untrusted input under a pixel limit. libvips checks it after reading
 * the header, before decoding (a second line of defence behind the explicit check on metadata()).
 */
export const sharpInputOptions = (limit: number): SharpOptions => ({ limitInputPixels: limit });

function readInput(fileOrBuffer: string | Uint8Array): { what: string; buf: Buffer } {
  if (typeof fileOrBuffer !== 'string') {
    const buf = Buffer.from(fileOrBuffer.buffer, fileOrBuffer.byteOffset, fileOrBuffer.byteLength);
    if (buf.length === 0) throw new ImageDecodeError('<buffer>', 'the buffer is empty');
    return { what: '<buffer>', buf };
  }
  let buf: Buffer;
  try {
    buf = fs.readFileSync(fileOrBuffer);
  } catch (e) {
    const err = e as NodeJS.ErrnoException;
    throw new ImageDecodeError(fileOrBuffer, err.code === 'ENOENT' ? 'no such file' : err.message);
  }
  if (buf.length === 0) throw new ImageDecodeError(fileOrBuffer, 'the file is empty');
  return { what: fileOrBuffer, buf };
}

/**
 * Decodes any format sharp reads (JPEG, PNG, WebP, TIFF, GIF, …) to RGB like PIL's `convert('RGB')`.
 * Images whose header declares more than `opts.maxPixels` (default MAX_IMAGE_PIXELS) pixels are
 * refused with an ImageTooLargeError before anything is allocated or decoded.
 */
export async function decodeImage(fileOrBuffer: string | Uint8Array, opts: DecodeOptions = {}): Promise<RgbImage> {
  const limit = pixelLimit(opts);
  const { what, buf } = readInput(fileOrBuffer);
  let meta: Metadata;
  try {
    // Header only (no pixels are decoded): unlimited here, so that the limit is reported with the size.
    meta = await sharp(buf, { limitInputPixels: false }).metadata();
  } catch (e) {
    throw new ImageDecodeError(what, (e as Error).message);
  }
  const { width, height } = meta;
  if (!width || !height) throw new ImageDecodeError(what, 'image has no size');
  if (width * height > limit) throw new ImageTooLargeError(what, width, height, limit);
  const input = { ...sharpInputOptions(limit), ignoreIcc: true };
  try {
    // The output is allocated only once libvips has decoded the pixels (a truncated file fails first).
    const n = width * height;
    let rgb: Uint8Array;
    if (meta.space === 'cmyk') {
      // PIL cmyk2rgb: R = 255 - K - C*(255-K)/255 with its MULDIV255 rounding; no colour management.
      const { data, info } = await sharp(buf, input).pipelineColourspace('cmyk').toColourspace('cmyk')
        .raw().toBuffer({ resolveWithObject: true });
      if (info.channels !== 4 || data.length !== n * 4) throw new Error(`unexpected decoded layout ${info.width}x${info.height}x${info.channels}`);
      rgb = new Uint8Array(n * 3);
      for (let i = 0; i < n; i++) {
        const nk = 255 - data[4 * i + 3];
        for (let c = 0; c < 3; c++) {
          const t = data[4 * i + c] * nk + 128;
          rgb[3 * i + c] = Math.max(0, nk - (((t >> 8) + t) >> 8));
        }
      }
    } else if (meta.channels === 1 && meta.depth === 'ushort') {
      // PIL opens 16-bit grey as mode 'I'; I -> RGB clips to 255 (it does not rescale).
      const { data, info } = await sharp(buf, sharpInputOptions(limit)).toColourspace('grey16').raw({ depth: 'ushort' }).toBuffer({ resolveWithObject: true });
      if (info.channels !== 1 || data.length !== n * 2) throw new Error(`unexpected decoded layout ${info.width}x${info.height}x${info.channels}`);
      const v16 = new Uint16Array(data.buffer, data.byteOffset, n);
      rgb = new Uint8Array(n * 3);
      for (let i = 0; i < n; i++) rgb[3 * i] = rgb[3 * i + 1] = rgb[3 * i + 2] = Math.min(255, v16[i]);
    } else {
      // Palette, grey, grey+alpha, RGB(A), 16-bit RGB (high byte, as PIL): libvips gives PIL's values.
      const { data, info } = await sharp(buf, input).removeAlpha().toColourspace('srgb')
        .raw({ depth: 'uchar' }).toBuffer({ resolveWithObject: true });
      if (info.channels !== 3 || data.length !== n * 3) throw new Error(`unexpected decoded layout ${info.width}x${info.height}x${info.channels}`);
      rgb = new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
    }
    return { data: rgb, width, height, channels: 3 };
  } catch (e) {
    throw new ImageDecodeError(what, (e as Error).message);
  }
}

/** PIL's RGB -> L (ITU-R 601-2 luma, 16-bit fixed point): (R*19595 + G*38470 + B*7471 + 0x8000) >> 16. */
export function rgbToGrey(img: RgbImage): Uint8Array {
  const n = img.width * img.height;
  const out = new Uint8Array(n);
  const d = img.data;
  for (let i = 0; i < n; i++) out[i] = (d[3 * i] * 19595 + d[3 * i + 1] * 38470 + d[3 * i + 2] * 7471 + 0x8000) >>> 16;
  return out;
}

/**
 * Reads a mask file: grey as PIL `convert('L')` (colour masks through the luma formula, grey ones
 * unchanged), then `grey > threshold` → 1. The default 127 suits 0/255 masks with JPEG noise.
 */
export async function decodeMask(fileOrBuffer: string | Uint8Array, threshold = 127, opts: DecodeOptions = {}): Promise<BinaryMask> {
  const img = await decodeImage(fileOrBuffer, opts);
  const grey = rgbToGrey(img);
  const data = new Uint8Array(grey.length);
  for (let i = 0; i < grey.length; i++) data[i] = grey[i] > threshold ? 1 : 0;
  return { data, width: img.width, height: img.height };
}

/** PNG of an RGB image. */
export async function encodeRgbPng(img: RgbImage): Promise<Buffer> {
  if (img.data.length !== img.width * img.height * 3) throw new Error(`encodeRgbPng: data does not match ${img.width}x${img.height}x3`);
  return sharp(img.data, { raw: { width: img.width, height: img.height, channels: 3 } }).png().toBuffer();
}

/**
 * Grey PNG of a mask: a 0/1 Uint8Array becomes 0/255; probabilities (Float32Array in [0, 1])
 * become round(255 p), so soft predictions can be saved and re-read at full precision of 8 bits.
 */
export async function encodeMaskPng(mask: Uint8Array | Float32Array, width: number, height: number): Promise<Buffer> {
  if (mask.length !== width * height) throw new Error(`encodeMaskPng: ${mask.length} values for a ${width}x${height} mask`);
  const grey = new Uint8Array(width * height);
  if (mask instanceof Uint8Array) for (let i = 0; i < grey.length; i++) grey[i] = mask[i] ? 255 : 0;
  else for (let i = 0; i < grey.length; i++) grey[i] = Math.round(255 * Math.min(1, Math.max(0, mask[i])));
  return sharp(grey, { raw: { width, height, channels: 1 } }).png().toBuffer();
}

export interface OverlayOptions {
  /** Mask colour, RGB 0..255 (default a green that stands out on tissue images). */
  color?: readonly [number, number, number];
  /** Opacity of the colour over masked pixels, 0..1 (default 0.45). */
  alpha?: number;
}

/** PNG of the image with masked pixels (mask != 0) blended towards a colour: a quick visual check. */
export async function encodeOverlayPng(img: RgbImage, mask: Uint8Array, opts: OverlayOptions = {}): Promise<Buffer> {
  const n = img.width * img.height;
  if (mask.length !== n) throw new Error(`encodeOverlayPng: mask has ${mask.length} values, image is ${img.width}x${img.height}`);
  const [r, g, b] = opts.color ?? [0, 255, 64];
  const a = opts.alpha ?? 0.45;
  const out = new Uint8Array(img.data);
  for (let i = 0; i < n; i++) {
    if (!mask[i]) continue;
    out[3 * i] = Math.round(out[3 * i] * (1 - a) + r * a);
    out[3 * i + 1] = Math.round(out[3 * i + 1] * (1 - a) + g * a);
    out[3 * i + 2] = Math.round(out[3 * i + 2] * (1 - a) + b * a);
  }
  return encodeRgbPng({ data: out, width: img.width, height: img.height, channels: 3 });
}

/** Writes encoded bytes (e.g. from encodeMaskPng) atomically. */
export function writeImageFile(file: string, bytes: Uint8Array): void {
  writeFileAtomic(file, bytes);
}

/**
 * A class map over the image: each pixel of class c ≥ 1 tinted with colours[c] (opacity alpha,
 * default 0.5); class 0 (background) and values without a colour leave the image as it is.
 */
export async function encodeClassOverlayPng(img: RgbImage, classes: Uint8Array, colours: ReadonlyArray<readonly [number, number, number]>, alpha = 0.5): Promise<Buffer> {
  const n = img.width * img.height;
  if (classes.length !== n) throw new Error(`encodeClassOverlayPng: class map has ${classes.length} values, image is ${img.width}x${img.height}`);
  const out = new Uint8Array(img.data);
  for (let i = 0; i < n; i++) {
    const c = classes[i]!;
    const col = c > 0 ? colours[c] : undefined;
    if (!col) continue;
    for (let ch = 0; ch < 3; ch++) out[3 * i + ch] = Math.round(out[3 * i + ch]! * (1 - alpha) + col[ch]! * alpha);
  }
  return sharp(out, { raw: { width: img.width, height: img.height, channels: 3 } }).png().toBuffer();
}

/** A class-index map as an 8-bit single-channel PNG (values as they are: 0..K−1). */
export function encodeClassPng(classes: Uint8Array, width: number, height: number): Promise<Buffer> {
  if (classes.length !== width * height) throw new Error(`encodeClassPng: ${classes.length} values for a ${width}x${height} map`);
  // b-w keeps one channel (the default interpretation would write an RGB PNG), so readers get the indices.
  return sharp(classes, { raw: { width, height, channels: 1 } }).toColourspace('b-w').png().toBuffer();
}
