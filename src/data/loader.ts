// Sample loading, augmentation and a prefetching batch iterator (plain Float32Array batches).
//
// Pipeline per sample: decode (sharp) -> RGB uint8 HWC + binary mask at the original size (cacheable)
// -> optional random crop -> resize (sharp; image bilinear, mask nearest) -> optional flip -> CHW float32
// normalised with SAM's pixel mean/std; mask as 0/1 float32 at the label size. Multi-class data
// (LoaderOptions.classes) keeps class indices instead (0..K−1 or the ignore index), still float32.
//
// Resize modes (data.resize):
//  - 'squash' (default): stretch to S×S ignoring the aspect ratio. This is what the Conv-LoRA protocol does
//    ("input resized to the model's square size"), so numbers stay comparable with the paper's ground.
//  - 'longest-pad': SAM's predictor: scale the longest side to S (ResizeLongestSide, size rounded as
//    `floor(x*scale+0.5)`), put the result top-left and pad bottom/right with 0 *after* normalisation
//    (i.e. the pixel mean), as Sam.preprocess does. The mask is treated the same way at the label size,
//    padding = background (multi-class with an ignore index: the ignore index); `validRegion()` tells the valid part for cropping predictions back.
//
// Determinism: the epoch order depends on (seed, epoch) only, and each sample's augmentation draws
// from its own PRNG seeded by (seed, epoch, id), so prefetch timing and concurrency never change a batch.
import sharp from 'sharp';
import { MAX_IMAGE_PIXELS, sharpInputOptions } from '../io/image.js';
import { type Sample, hashSeed, mulberry32, shuffleInPlace } from './dataset.js';
import { decodeClassMask, type ClassSpec } from './classes.js';

export const SAM_PIXEL_MEAN: readonly [number, number, number] = [123.675, 116.28, 103.53];
export const SAM_PIXEL_STD: readonly [number, number, number] = [58.395, 57.12, 57.375];
export const DEFAULT_THRESHOLD = 127;

/** A decoded sample at its original size; synthetic.ts produces the same shape. */
export interface DecodedSample {
  id: string;
  width: number;
  height: number;
  /** RGB, uint8, HWC (3 channels). */
  rgb: Uint8Array;
  /** Binary mask, HW, values 0/1; multi-class: class indices (or the ignore index). */
  mask: Uint8Array;
}

/** How a mask file becomes labels: binary foreground = gray > threshold, or a multi-class spec. */
export type MaskRule = number | ClassSpec;

export type ResizeMode = 'squash' | 'longest-pad';

export interface AugmentOptions {
  /** Random horizontal flip with probability 0.5. */
  hflip: boolean;
  /** Random crop whose side is a fraction in [min, max] of the original side (same for x and y;
   *  keeps the aspect ratio), at a random position, before resizing; null = no crop. */
  cropScale: [number, number] | null;
}

export interface LoaderOptions {
  /** Model input size S (square). */
  imageSize: number;
  /** Label size L (square); defaults to imageSize. */
  labelSize?: number;
  resize?: ResizeMode;
  /** Mask foreground rule: gray > threshold, gray = max over colour channels. */
  threshold?: number;
  /** Multi-class masks (class indices, palette colours): replaces the threshold rule. */
  classes?: ClassSpec | null;
  /** null/undefined = no augmentation (eval). */
  augment?: Partial<AugmentOptions> | null;
}

export interface PreparedSample {
  id: string;
  /** 3×S×S normalised. */
  image: Float32Array;
  /** L×L, 0/1 (multi-class: class indices). */
  mask: Float32Array;
  origHeight: number;
  origWidth: number;
  flipped: boolean;
  /** Crop in original pixels [left, top, width, height] (the whole image when not cropped). */
  crop: [number, number, number, number];
}

// ---------------------------------------------------------------- decoding

export interface Gray {
  data: Uint8Array;
  width: number;
  height: number;
  /** True when the colour channels differ somewhere (a coloured mask, not R=G=B). */
  coloured: boolean;
}

/** Decodes any sharp-readable file to 8-bit RGB HWC (grey expands to RGB, alpha dropped, 16-bit scaled).
 *  EXIF orientation is NOT applied (as in PIL), so images and masks stay aligned pixel for pixel. */
export async function decodeRgb(file: string): Promise<{ data: Uint8Array; width: number; height: number }> {
  // Under the pixel limit: libvips refuses a header declaring more before decoding (decompression bombs).
  const { data, info } = await sharp(file, sharpInputOptions(MAX_IMAGE_PIXELS)).removeAlpha().toColourspace('srgb').raw()
    .toBuffer({ resolveWithObject: true })
    .catch((e: Error) => { throw /exceeds pixel limit/.test(e.message) ? new Error(`${file}: image has more pixels than the limit of ${MAX_IMAGE_PIXELS}`) : e; });
  if (info.channels !== 3) throw new Error(`${file}: decoded to ${info.channels} channels, expected 3`);
  return { data: new Uint8Array(data.buffer, data.byteOffset, data.byteLength), width: info.width, height: info.height };
}

/** Decodes a mask to 8-bit gray = max over R,G,B (robust to coloured masks such as red-on-black). */
export async function decodeGray(file: string): Promise<Gray> {
  const { data, width, height } = await decodeRgb(file);
  const g = new Uint8Array(width * height);
  let coloured = false;
  for (let i = 0, j = 0; i < g.length; i++, j += 3) {
    const r = data[j]!, gg = data[j + 1]!, b = data[j + 2]!;
    if (r !== gg || gg !== b) coloured = true;
    g[i] = r > gg ? (r > b ? r : b) : gg > b ? gg : b;
  }
  return { data: g, width, height, coloured };
}

export function binarize(gray: Uint8Array, threshold = DEFAULT_THRESHOLD): Uint8Array {
  const m = new Uint8Array(gray.length);
  for (let i = 0; i < gray.length; i++) m[i] = gray[i]! > threshold ? 1 : 0;
  return m;
}

/**
 * What the data pipeline did since the last reset (tests and benchmarks read it): files decoded
 * (data.cache decodes each sample once), the most samples loading at once (data.num_workers), the most
 * batches loading at once (data.prefetch + 1).
 */
export const loaderStats = { decodes: 0, maxActiveLoads: 0, maxBatchesInFlight: 0 };
export function resetLoaderStats(): void {
  Object.assign(loaderStats, { decodes: 0, maxActiveLoads: 0, maxBatchesInFlight: 0 });
}

export async function decodeSample(s: Sample, rule: MaskRule = DEFAULT_THRESHOLD): Promise<DecodedSample> {
  loaderStats.decodes++;
  if (typeof rule !== 'number') {
    const [img, m] = await Promise.all([decodeRgb(s.imagePath), decodeClassMask(s.maskPath, rule)]);
    if (img.width !== m.width || img.height !== m.height)
      throw new Error(`${s.id}: image ${img.width}x${img.height} but mask ${m.width}x${m.height} (${s.maskPath})`);
    // A value that is no class would be a wrong label (or crash the loss): refuse it, naming the file.
    const bad = [...m.unknown.entries()].map(([v, n]) => `value ${v} (${n} px)`).concat([...m.unknownColours.entries()].map(([c, n]) => `colour ${c} (${n} px)`));
    if (bad.length)
      throw new Error(`${s.maskPath}: ${bad.slice(0, 5).join(', ')}${bad.length > 5 ? ', …' : ''} ${bad.length === 1 ? 'is' : 'are'} not one of the ${rule.names.length} classes${rule.ignoreIndex === null ? '' : ` or the ignore index ${rule.ignoreIndex}`} (naslora data validate lists every such mask)`);
    return { id: s.id, width: img.width, height: img.height, rgb: img.data, mask: m.data };
  }
  const [img, gray] = await Promise.all([decodeRgb(s.imagePath), decodeGray(s.maskPath)]);
  if (img.width !== gray.width || img.height !== gray.height)
    throw new Error(`${s.id}: image ${img.width}x${img.height} but mask ${gray.width}x${gray.height} (${s.maskPath})`);
  return { id: s.id, width: img.width, height: img.height, rgb: img.data, mask: binarize(gray.data, rule) };
}

/** Memoises decoded samples (promises, so concurrent requests share one decode) up to a byte budget. */
export class SampleCache {
  private readonly map = new Map<string, Promise<DecodedSample>>();
  private bytes = 0;
  constructor(readonly maxBytes = 2 * 1024 ** 3) {}
  get(s: Sample, rule: MaskRule = DEFAULT_THRESHOLD): Promise<DecodedSample> {
    const key = `${typeof rule === 'number' ? rule : JSON.stringify(rule)}\0${s.imagePath}\0${s.maskPath}`;
    const hit = this.map.get(key);
    if (hit) return hit;
    const p = decodeSample(s, rule);
    if (this.bytes < this.maxBytes) {
      this.map.set(key, p);
      p.then(
        (d) => void (this.bytes += d.rgb.byteLength + d.mask.byteLength),
        () => void this.map.delete(key), // do not cache failures
      );
    }
    return p;
  }
  get size(): number {
    return this.map.size;
  }
}

// ---------------------------------------------------------------- geometry

/** SAM's ResizeLongestSide.get_preprocess_shape: [h, w] of the valid (unpadded) region. */
export function validRegion(origHeight: number, origWidth: number, size: number): [number, number] {
  const scale = size / Math.max(origHeight, origWidth);
  return [Math.floor(origHeight * scale + 0.5), Math.floor(origWidth * scale + 0.5)];
}

async function resizeRaw(
  data: Uint8Array, width: number, height: number, channels: 1 | 3,
  crop: [number, number, number, number], outW: number, outH: number, kernel: 'linear' | 'nearest',
): Promise<Uint8Array> {
  let p = sharp(data, { raw: { width, height, channels } });
  const [left, top, cw, ch] = crop;
  if (cw !== width || ch !== height) p = p.extract({ left, top, width: cw, height: ch });
  p = p.resize(outW, outH, { fit: 'fill', kernel });
  p = channels === 1 ? p.extractChannel(0) : p.removeAlpha();
  const out = await p.raw().toBuffer();
  return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
}

/** Crops, resizes, flips and normalises one decoded sample. rng = null: no augmentation. */
export async function prepareSample(d: DecodedSample, opts: LoaderOptions, rng: (() => number) | null): Promise<PreparedSample> {
  const S = opts.imageSize;
  const L = opts.labelSize ?? S;
  const aug = rng && opts.augment ? opts.augment : null;
  // Fixed draw order (flip, then crop) so a sample's augmentation only depends on its own PRNG.
  const flipped = !!aug?.hflip && rng!() < 0.5;
  let crop: [number, number, number, number] = [0, 0, d.width, d.height];
  if (aug?.cropScale) {
    const [lo, hi] = aug.cropScale;
    const f = lo + (hi - lo) * rng!();
    const cw = Math.max(1, Math.min(d.width, Math.round(d.width * f)));
    const ch = Math.max(1, Math.min(d.height, Math.round(d.height * f)));
    crop = [Math.floor(rng!() * (d.width - cw + 1)), Math.floor(rng!() * (d.height - ch + 1)), cw, ch];
  }
  const pad = opts.resize === 'longest-pad';
  const [ih, iw] = pad ? validRegion(crop[3], crop[2], S) : [S, S];
  const [lh, lw] = pad ? validRegion(crop[3], crop[2], L) : [L, L];
  // Binary masks go through the resize as 0/255 and are thresholded after; class indices go through
  // as they are (nearest neighbour never mixes two labels).
  const multi = !!opts.classes;
  let maskIn = d.mask;
  if (!multi) {
    maskIn = new Uint8Array(d.mask.length);
    for (let i = 0; i < maskIn.length; i++) maskIn[i] = d.mask[i] ? 255 : 0;
  }
  const [rgb, m] = await Promise.all([
    resizeRaw(d.rgb, d.width, d.height, 3, crop, iw, ih, 'linear'),
    resizeRaw(maskIn, d.width, d.height, 1, crop, lw, lh, 'nearest'),
  ]);
  // CHW, normalised; padded cells stay 0 (= the pixel mean after normalisation, like Sam.preprocess).
  const image = new Float32Array(3 * S * S);
  for (let c = 0; c < 3; c++) {
    const mean = SAM_PIXEL_MEAN[c]!, inv = 1 / SAM_PIXEL_STD[c]!;
    for (let y = 0; y < ih; y++)
      for (let x = 0; x < iw; x++) {
        const sx = flipped ? iw - 1 - x : x;
        image[c * S * S + y * S + x] = (rgb[(y * iw + sx) * 3 + c]! - mean) * inv;
      }
  }
  // Padding (longest-pad) is background (class 0); multi-class data with an ignore index pads with
  // it instead (as mmsegmentation pads label maps), so the padding counts in no loss and no metric.
  const mask = new Float32Array(L * L);
  if (multi && opts.classes!.ignoreIndex !== null && (lh < L || lw < L)) mask.fill(opts.classes!.ignoreIndex);
  for (let y = 0; y < lh; y++)
    for (let x = 0; x < lw; x++) {
      const v = m[y * lw + (flipped ? lw - 1 - x : x)]!;
      mask[y * L + x] = multi ? v : v > 127 ? 1 : 0;
    }
  return { id: d.id, image, mask, origHeight: d.height, origWidth: d.width, flipped, crop };
}

export type SampleSource = Sample | DecodedSample;

function isDecoded(s: SampleSource): s is DecodedSample {
  return (s as DecodedSample).rgb !== undefined;
}

export async function loadSample(
  s: SampleSource, opts: LoaderOptions, rng: (() => number) | null = null, cache: SampleCache | null = null,
): Promise<PreparedSample> {
  const t: MaskRule = opts.classes ?? opts.threshold ?? DEFAULT_THRESHOLD;
  const d = isDecoded(s) ? s : cache ? await cache.get(s, t) : await decodeSample(s, t);
  return prepareSample(d, opts, rng);
}

// ---------------------------------------------------------------- batches

export interface Batch {
  /** B×3×S×S */
  images: Float32Array;
  /** B×1×L×L (0/1, or class indices for multi-class data) */
  masks: Float32Array;
  ids: string[];
  batchSize: number;
  imageSize: number;
  labelSize: number;
  /** Original [height, width] per sample (to map predictions back). */
  origSizes: Array<[number, number]>;
  epoch: number;
  /** Index of this batch within the epoch. */
  index: number;
  /** Samples in the global batch this one is a shard of (= batchSize in one process). */
  globalSize?: number;
}

export interface BatchIteratorOptions extends LoaderOptions {
  batchSize: number;
  seed?: number;
  epoch?: number;
  /** Shuffle the order (training); false keeps the given order (evaluation). Default true. */
  shuffle?: boolean;
  /** Drop a last incomplete batch. Default false. */
  dropLast?: boolean;
  /** Batches kept decoded ahead of the consumer. Default 2. */
  prefetch?: number;
  /** Samples decoded/resized at once (sharp runs on libuv's thread pool). Default 4. */
  workers?: number;
  cache?: SampleCache | null;
  /** First batch index to produce (resuming mid-epoch). */
  startBatch?: number;
  /**
   * Data-parallel: this rank's share of every (global) batch. The order is the same on every rank;
   * each global batch of batchSize samples is cut into `world` contiguous, disjoint slices and this
   * rank gets slice `rank`, so the world's batches together are exactly the single-process batches.
   */
  shard?: { rank: number; world: number } | null;
}

/** Rank r's contiguous slice of a global batch of n samples (sizes differ by at most one). */
export function shardRange(n: number, rank: number, world: number): [number, number] {
  return [Math.floor((rank * n) / world), Math.floor(((rank + 1) * n) / world)];
}

export function batchCount(n: number, batchSize: number, dropLast = false): number {
  return dropLast ? Math.floor(n / batchSize) : Math.ceil(n / batchSize);
}

/** The sample order of one epoch: a permutation depending only on (seed, epoch). */
export function epochOrder(n: number, seed: number, epoch: number, shuffle = true): number[] {
  const idx = Array.from({ length: n }, (_, i) => i);
  return shuffle ? shuffleInPlace(idx, mulberry32(hashSeed(seed, epoch, 'order'))) : idx;
}

/** A counting semaphore: at most n tasks run at once. */
function limiter(n: number): <T>(f: () => Promise<T>) => Promise<T> {
  let active = 0;
  const waiting: Array<() => void> = [];
  return async <T>(f: () => Promise<T>): Promise<T> => {
    if (active >= n) await new Promise<void>((r) => waiting.push(r));
    active++;
    loaderStats.maxActiveLoads = Math.max(loaderStats.maxActiveLoads, active);
    try {
      return await f();
    } finally {
      active--;
      waiting.shift()?.();
    }
  };
}

/** Async batch iterator over one epoch, keeping `prefetch` batches in flight ahead of the consumer. */
export async function* iterateBatches(items: readonly SampleSource[], opts: BatchIteratorOptions): AsyncGenerator<Batch> {
  const S = opts.imageSize;
  const L = opts.labelSize ?? S;
  const seed = opts.seed ?? 0;
  const epoch = opts.epoch ?? 0;
  if (!(opts.batchSize >= 1)) throw new Error(`batchSize must be >= 1, got ${opts.batchSize}`);
  const order = epochOrder(items.length, seed, epoch, opts.shuffle ?? true);
  const nb = batchCount(items.length, opts.batchSize, opts.dropLast ?? false);
  const run = limiter(Math.max(1, opts.workers ?? 4));
  const augment = Boolean(opts.augment && (opts.augment.hflip || opts.augment.cropScale));

  const loadBatch = async (b: number): Promise<Batch> => {
    const global = order.slice(b * opts.batchSize, (b + 1) * opts.batchSize);
    const idx = opts.shard ? global.slice(...shardRange(global.length, opts.shard.rank, opts.shard.world)) : global;
    const prepared = await Promise.all(
      idx.map((i) => {
        const s = items[i]!;
        const rng = augment ? mulberry32(hashSeed(seed, epoch, s.id, 'aug')) : null;
        return run(() => loadSample(s, opts, rng, opts.cache ?? null));
      }),
    );
    const B = prepared.length;
    const images = new Float32Array(B * 3 * S * S);
    const masks = new Float32Array(B * L * L);
    prepared.forEach((p, k) => {
      images.set(p.image, k * 3 * S * S);
      masks.set(p.mask, k * L * L);
    });
    return {
      images, masks, ids: prepared.map((p) => p.id), batchSize: B, imageSize: S, labelSize: L,
      origSizes: prepared.map((p) => [p.origHeight, p.origWidth]), epoch, index: b, globalSize: global.length,
    };
  };

  const ahead = Math.max(0, opts.prefetch ?? 2);
  const pending: Array<Promise<Batch>> = [];
  let next = Math.max(0, opts.startBatch ?? 0);  // resume mid-epoch without decoding skipped batches
  const fill = (): void => {
    while (pending.length <= ahead && next < nb) {
      const p = loadBatch(next++);
      p.catch(() => undefined); // rejections surface when the batch is awaited, not as unhandled ones
      pending.push(p);
      loaderStats.maxBatchesInFlight = Math.max(loaderStats.maxBatchesInFlight, pending.length);
    }
  };
  fill();
  while (pending.length > 0) {
    const batch = await pending.shift()!;
    fill();
    yield batch;
  }
}

// ---------------------------------------------------------------- prompted mode

/** A binary mask view: data[y*width + x] > 0.5 is foreground. */
export interface MaskView {
  data: ArrayLike<number>;
  width: number;
  height: number;
}

/** XYXY box in pixels of the mask; like SAM's batched_mask_to_box, x1/y1 are the last foreground index. */
export type Box = [number, number, number, number];

/**
 * Tight box of the foreground with each edge moved by a uniform offset in ±jitterFrac × box side
 * (x edges by width, y edges by height), clipped to the image. null for an empty mask.
 */
export function boxFromMask(mask: MaskView, jitterFrac: number, rng: () => number): Box | null {
  const { data, width: W, height: H } = mask;
  let x0 = W, y0 = H, x1 = -1, y1 = -1;
  for (let y = 0; y < H; y++)
    for (let x = 0; x < W; x++)
      if (data[y * W + x]! > 0.5) {
        if (x < x0) x0 = x;
        if (x > x1) x1 = x;
        if (y < y0) y0 = y;
        if (y > y1) y1 = y;
      }
  if (x1 < 0) return null;
  const bw = x1 - x0 + 1, bh = y1 - y0 + 1;
  const j = (side: number): number => (rng() * 2 - 1) * jitterFrac * side;
  const clip = (v: number, hi: number): number => Math.min(hi, Math.max(0, v));
  const nx0 = clip(x0 + j(bw), W - 1), ny0 = clip(y0 + j(bh), H - 1);
  const nx1 = clip(x1 + j(bw), W - 1), ny1 = clip(y1 + j(bh), H - 1);
  return [Math.min(nx0, nx1), Math.min(ny0, ny1), Math.max(nx0, nx1), Math.max(ny0, ny1)];
}

export interface PointPrompts {
  /** n×2 (x, y) at pixel centres. */
  coords: Float32Array;
  /** n labels: 1 positive, 0 negative, -1 padding (SAM's "not a point") when a class has too few pixels. */
  labels: Int32Array;
}

/** nPos points drawn uniformly from the foreground and nNeg from the background (with replacement). */
export function pointsFromMask(mask: MaskView, nPos: number, nNeg: number, rng: () => number): PointPrompts {
  const { data, width: W } = mask;
  const fg: number[] = [];
  const bg: number[] = [];
  for (let i = 0; i < W * mask.height; i++) (data[i]! > 0.5 ? fg : bg).push(i);
  const n = nPos + nNeg;
  const coords = new Float32Array(n * 2);
  const labels = new Int32Array(n).fill(-1);
  for (let k = 0; k < n; k++) {
    const pool = k < nPos ? fg : bg;
    if (pool.length === 0) continue;
    const i = pool[Math.floor(rng() * pool.length)]!;
    coords[2 * k] = (i % W) + 0.5;
    coords[2 * k + 1] = Math.floor(i / W) + 0.5;
    labels[k] = k < nPos ? 1 : 0;
  }
  return { coords, labels };
}

export interface BatchPrompts {
  /** B×4 boxes in model-input pixels (S); an empty mask gets the whole image. null: no boxes (box: false). */
  boxes: Float32Array | null;
  /** B×n×2 points in model-input pixels. */
  pointCoords: Float32Array;
  /** B×n */
  pointLabels: Int32Array;
}

/** Boxes and points for every mask of a batch, scaled from label to input coordinates. */
export function batchPrompts(
  batch: Pick<Batch, 'masks' | 'ids' | 'batchSize' | 'imageSize' | 'labelSize' | 'epoch'>,
  o: { box?: boolean; jitterFrac: number; nPos: number; nNeg: number; seed: number },
): BatchPrompts {
  const { batchSize: B, labelSize: L, imageSize: S } = batch;
  const n = o.nPos + o.nNeg;
  const k = S / L;
  const boxes = o.box === false ? null : new Float32Array(B * 4);
  const out: BatchPrompts = { boxes, pointCoords: new Float32Array(B * n * 2), pointLabels: new Int32Array(B * n) };
  for (let b = 0; b < B; b++) {
    const rng = mulberry32(hashSeed(o.seed, batch.epoch, batch.ids[b]!, 'prompt'));
    const view: MaskView = { data: batch.masks.subarray(b * L * L, (b + 1) * L * L), width: L, height: L };
    if (boxes) boxes.set((boxFromMask(view, o.jitterFrac, rng) ?? [0, 0, L - 1, L - 1]).map((v) => v * k), b * 4);
    const pts = pointsFromMask(view, o.nPos, o.nNeg, rng);
    out.pointCoords.set(pts.coords.map((v) => v * k), b * n * 2);
    out.pointLabels.set(pts.labels, b * n);
  }
  return out;
}
