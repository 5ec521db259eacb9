// segment_anything/predictor.py: SamPredictor. Computes the image embedding once (setImage) and
// predicts masks for prompts on it (predict, predictTorch). Inference only (no autograd).
import { noGrad, tensor, tidy, type CreateOpts, type Device, type Tensor } from '../../engine/index.js';
import { applyBoxes, applyCoords, resizeImageU8 } from './transforms.js';
import type { Sam } from './sam.js';

export interface PredictOptions {
  /** Points (x, y) in original-image pixels. */
  pointCoords?: ReadonlyArray<readonly [number, number]>;
  /** Per point: 1 foreground, 0 background, -1 padding (ignored). */
  pointLabels?: ArrayLike<number>;
  /** x0, y0, x1, y1 in original-image pixels. */
  box?: readonly [number, number, number, number];
  /** Low-res logits of an earlier prediction (one mask, 4h×4w, e.g. 256×256 for SAM). */
  maskInput?: Float32Array | Tensor;
  /** Three masks (true) or one (false). Default true. */
  multimaskOutput?: boolean;
  /** Also return the upscaled logits. */
  returnLogits?: boolean;
}

export interface Prediction {
  /** Number of masks (3 or 1), and the original image size. */
  count: number;
  height: number;
  width: number;
  /** count×height×width, 1 where the logit > 0 (SAM's mask threshold). */
  masks: Uint8Array;
  /** count×height×width logits, with returnLogits. */
  maskLogits?: Float32Array;
  /** count predicted IoUs. */
  iouPredictions: Float32Array;
  /** count×lowResSize[0]×lowResSize[1] logits (feed one back as maskInput). */
  lowResLogits: Float32Array;
  lowResSize: [number, number];
}

export interface PredictTorchOptions {
  /** (B, N, 2) in the resized (input) frame; apply transforms.applyCoords first. */
  pointCoords?: Tensor;
  /** (B, N) */
  pointLabels?: Tensor;
  /** (B, 4) in the resized frame. */
  boxes?: Tensor;
  /** (B, 1, 4h, 4w) low-res logits. */
  maskInput?: Tensor;
  multimaskOutput?: boolean;
  returnLogits?: boolean;
}

export interface TorchPrediction {
  /** (B, C, H, W): bool masks, or logits with returnLogits. */
  masks: Tensor;
  iouPredictions: Tensor;
  lowResLogits: Tensor;
}

/** Prompts in original-image pixels, as `naslora predict` and `naslora serve` take them. */
export interface PixelPrompts {
  points?: ReadonlyArray<{ x: number; y: number; label: number }>;
  /** Several boxes are a batch of B prompt sets sharing the points. */
  boxes?: ReadonlyArray<readonly [number, number, number, number]>;
  /** Low-res logits (one mask, maskInputSize) of an earlier prediction, fed to every prompt set. */
  maskInput?: Float32Array;
  multimask?: boolean;
}

/** N = B·C masks, prompt-major: B prompt sets × C masks each (3 with multimask, else 1). */
export interface PixelPrediction {
  count: number;
  perPrompt: number;
  height: number;
  width: number;
  /** N×H×W, 1 where the logit > the mask threshold. */
  masks: Uint8Array;
  /** N×H×W logits. */
  maskLogits: Uint8Array;
  iou: Float32Array;
  /** N×h×w low-res logits (bytes of float32) and their shape. */
  lowRes: Uint8Array;
  lowShape: number[];
}

/** predictPixels' answer without the full-size logits (predictPixelMasks). */
export type PixelMasks = Omit<PixelPrediction, 'maskLogits'>;

export class SamPredictor {
  /** (1, C, h, w) embedding of the current image. */
  private features: Tensor | null = null;
  /** Whether resetImage() frees the features (false when they belong to a caller's cache). */
  private ownsFeatures = true;
  /** (h, w) of the image before / after ResizeLongestSide. */
  originalSize: [number, number] | null = null;
  inputSize: [number, number] | null = null;

  /**
   * Computes the model's dense positional encoding if it has none cached (it is constant per model,
   * see PromptEncoder.getDensePe): predictions then make no tensor that outlives them.
   */
  constructor(readonly model: Sam) {
    noGrad(() => tidy(() => { model.prompt_encoder.getDensePe(); }));
  }

  get isImageSet(): boolean { return this.features !== null; }

  /** The model's device: inputs are made there (or moved there) once per call. */
  private get device(): Device { return this.model.device as Device; }
  private onDevice(t: Tensor): Tensor { const d = this.device; return t.device === d ? t : t.to(d); }

  /** Sets the image (uint8, HWC, RGB) and computes its embedding. */
  setImage(image: Uint8Array, height: number, width: number): void {
    if (image.length !== height * width * 3) throw new Error(`setImage: ${image.length} bytes is not a ${height}×${width} RGB image`);
    const resized = resizeImageU8({ data: image, width, height, channels: 3 }, this.model.imgSize);
    tidy(() => {
      const t = tensor(resized.data, [1, resized.height, resized.width, 3], { dtype: 'uint8', device: this.device }).permute(0, 3, 1, 2).contiguous();
      this.setTorchImage(t, [height, width]);
    });
  }

  /** Sets an already resized image (1, 3, h, w), longest side = model.imgSize. */
  setTorchImage(transformedImage: Tensor, originalSize: [number, number]): void {
    const s = transformedImage.shape;
    if (s.length !== 4 || s[1] !== 3 || Math.max(s[2], s[3]) !== this.model.imgSize) {
      throw new Error(`setTorchImage: input must be (B, 3, h, w) with long side ${this.model.imgSize}, got [${s}]`);
    }
    this.resetImage();
    this.originalSize = [...originalSize];
    this.inputSize = [s[2], s[3]];
    // float32 whatever the precision it was computed in (an autocast caller): it is saved and fed back as such.
    this.features = noGrad(() => tidy(() => this.model.image_encoder.forward(this.model.preprocess(this.onDevice(transformedImage))).float())).keep();
  }

  /** The (1, C, h, w) image embedding (owned by the predictor). */
  getImageEmbedding(): Tensor {
    if (!this.features) throw new Error('an image must be set with setImage() before the embedding can be returned');
    return this.features;
  }

  /** Masks for one prompt set, in original-image coordinates; plain arrays out. */
  predict(o: PredictOptions = {}): Prediction {
    const [oh, ow] = this.need();
    return tidy(() => {
      const on: CreateOpts = { device: this.device };
      let pointCoords: Tensor | undefined, pointLabels: Tensor | undefined, boxes: Tensor | undefined, maskInput: Tensor | undefined;
      if (o.pointCoords) {
        if (!o.pointLabels || o.pointLabels.length !== o.pointCoords.length) throw new Error('point_labels must be supplied with point_coords, one per point');
        const c = applyCoords(o.pointCoords.flat(), [oh, ow], this.model.imgSize);
        pointCoords = tensor(Float32Array.from(c), [1, o.pointCoords.length, 2], on);
        pointLabels = tensor(Int32Array.from(o.pointLabels), [1, o.pointLabels.length], on);
      }
      if (o.box) boxes = tensor(Float32Array.from(applyBoxes(o.box, [oh, ow], this.model.imgSize)), [1, 4], on);
      if (o.maskInput) {
        const [mh, mw] = this.model.prompt_encoder.maskInputSize;
        maskInput = o.maskInput instanceof Float32Array ? tensor(o.maskInput, [1, 1, mh, mw], on) : o.maskInput.reshape(1, 1, mh, mw);
      }
      const r = this.predictTorch({ pointCoords, pointLabels, boxes, maskInput, multimaskOutput: o.multimaskOutput ?? true, returnLogits: true });
      const logits = r.masks.select(0, 0);
      const low = r.lowResLogits.select(0, 0);
      return {
        count: logits.shape[0], height: oh, width: ow,
        masks: logits.gt(this.model.maskThreshold).toBytes(),
        maskLogits: o.returnLogits ? logits.toFloat32Array() : undefined,
        iouPredictions: r.iouPredictions.select(0, 0).toFloat32Array(),
        lowResLogits: low.toFloat32Array(),
        lowResSize: [low.shape[1], low.shape[2]] as [number, number],
      };
    });
  }

  /**
   * Masks for a batch of B prompt sets at once (e.g. several boxes), inputs already in the
   * resized frame. Without a box, point prompts get a padding point.
   */
  predictTorch(o: PredictTorchOptions): TorchPrediction {
    const [oh, ow] = this.need();
    if ((o.pointCoords === undefined) !== (o.pointLabels === undefined)) throw new Error('pointCoords and pointLabels go together');
    return noGrad(() => tidy(() => {
      const m = this.model;
      const dev = (t: Tensor | undefined): Tensor | null => (t ? this.onDevice(t) : null);
      const points = o.pointCoords ? { coords: dev(o.pointCoords)!, labels: dev(o.pointLabels)! } : null;
      const [sparse, dense] = m.prompt_encoder.forward(points, dev(o.boxes), dev(o.maskInput));
      const [lowRes, iou] = m.mask_decoder.forward(this.features!, m.prompt_encoder.getDensePe(), sparse, dense, o.multimaskOutput ?? true);
      // float32 out, whatever precision the decoder computed in (callers read the bytes as float32).
      const logits = m.postprocessMasks(lowRes, this.inputSize!, [oh, ow]).float();
      return { masks: o.returnLogits ? logits : logits.gt(m.maskThreshold), iouPredictions: iou.float(), lowResLogits: lowRes.float() };
    }));
  }

  /**
   * Uses an embedding computed earlier (by getImageEmbedding on the same model), without copying
   * it: the caller keeps it alive while this predictor uses it and frees it afterwards.
   */
  useEmbedding(features: Tensor, originalSize: [number, number], inputSize: [number, number]): void {
    this.resetImage();
    this.features = features;
    this.ownsFeatures = false;
    this.originalSize = [...originalSize];
    this.inputSize = [...inputSize];
  }

  /**
   * Masks for prompts in original-image pixels, as `naslora predict` computes them: one batched
   * predictTorch call (several boxes = a batch of prompt sets sharing the points), masks at the
   * original size, flattened prompt-major.
   */
  predictPixels(o: PixelPrompts): PixelPrediction {
    return this.pixels(o, true) as PixelPrediction;
  }

  /**
   * predictPixels without the full-size logits, which `naslora serve` does not send: no N×H×W
   * float32 copy to JavaScript.
   */
  predictPixelMasks(o: PixelPrompts): PixelMasks {
    return this.pixels(o, false);
  }

  private pixels(o: PixelPrompts, withLogits: boolean): PixelMasks & { maskLogits?: Uint8Array } {
    const [H, W] = this.need();
    const m = this.model;
    const points = o.points ?? [], boxes = o.boxes ?? [];
    const S = m.imgSize, hw: [number, number] = [H, W];
    const B = Math.max(1, boxes.length);
    return tidy(() => {
      const rep = <T>(xs: T[]): T[] => Array.from({ length: B }, () => xs).flat();
      const on: CreateOpts = { device: this.device };
      const coords = points.length ? tensor(rep([...applyCoords(points.flatMap((p) => [p.x, p.y]), hw, S)]), [B, points.length, 2], on) : undefined;
      const labels = points.length ? tensor(Int32Array.from(rep(points.map((p) => p.label))), [B, points.length], on) : undefined;
      const bt = boxes.length ? tensor(Float32Array.from(applyBoxes(boxes.flat(), hw, S)), [B, 4], on) : undefined;
      const [mh, mw] = m.prompt_encoder.maskInputSize;
      const mi = o.maskInput ? tensor(o.maskInput, [1, 1, mh, mw], on).expand(B, 1, mh, mw).contiguous() : undefined;
      const p = this.predictTorch({ pointCoords: coords, pointLabels: labels, boxes: bt, maskInput: mi, multimaskOutput: o.multimask ?? false, returnLogits: true });
      // (B, C, …) → (N = B·C, …), prompt-major.
      const flat = (t: Tensor): Tensor => t.reshape(-1, ...t.shape.slice(2)).contiguous();
      const logits = flat(p.masks), low = flat(p.lowResLogits);
      const iou = flat(p.iouPredictions).toFloat32Array();
      return {
        count: iou.length, perPrompt: p.masks.shape[1], height: H, width: W,
        masks: logits.gt(m.maskThreshold).toBytes(), ...(withLogits ? { maskLogits: logits.toBytes() } : {}), iou, lowRes: low.toBytes(), lowShape: low.shape,
      };
    });
  }

  /** Hands the current embedding to the caller (who frees it); the predictor then has no image. */
  takeEmbedding(): { features: Tensor; originalSize: [number, number]; inputSize: [number, number] } {
    if (!this.features || !this.originalSize || !this.inputSize) throw new Error('an image must be set with setImage() before its embedding can be taken');
    const out = { features: this.features, originalSize: this.originalSize, inputSize: this.inputSize };
    this.features = null;
    this.originalSize = null;
    this.inputSize = null;
    this.ownsFeatures = true;
    return out;
  }

  /** Frees the embedding (unless it came from useEmbedding). */
  resetImage(): void {
    if (this.ownsFeatures) this.features?.dispose();
    this.ownsFeatures = true;
    this.features = null;
    this.originalSize = null;
    this.inputSize = null;
  }

  dispose(): void { this.resetImage(); }

  private need(): [number, number] {
    if (!this.features || !this.originalSize) throw new Error('an image must be set with setImage() before mask prediction');
    return this.originalSize;
  }
}
