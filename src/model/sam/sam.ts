// segment_anything/modeling/sam.py: the whole model (image encoder, prompt encoder, mask
// decoder), its pre- and post-processing, and the configurations of build_sam.py.
import { callOp, F, stack, tensor, tidy, type Device, type Tensor } from '../../engine/index.js';
import { SamModule } from './common.js';
import { ImageEncoderViT } from './image_encoder.js';
import { MaskDecoder } from './mask_decoder.js';
import { PromptEncoder, type PointPrompt } from './prompt_encoder.js';
import { TwoWayTransformer } from './transformer.js';

/**
 * A SAM configuration, keys as segment-anything's constructor arguments (and the reference
 * fixture's `config`). Fixed as in SAM: qkv bias, relative positions, encoder LayerNorm eps 1e-6,
 * 3 multimask outputs, IoU head depth 3, attention downsample rate 2 in the decoder.
 */
export interface SamConfig {
  img_size: number;
  patch_size: number;
  embed_dim: number;
  depth: number;
  num_heads: number;
  mlp_ratio: number;
  /** 0: every block global. */
  window_size: number;
  global_attn_indexes: number[];
  /** = neck out_chans = transformer dim. */
  prompt_embed_dim: number;
  mask_in_chans: number;
  decoder_depth: number;
  decoder_mlp_dim: number;
  decoder_heads: number;
  iou_head_hidden_dim: number;
  pixel_mean?: [number, number, number];
  pixel_std?: [number, number, number];
}

export type SamPresetName = 'vit_b' | 'vit_l' | 'vit_h';

const BASE = {
  img_size: 1024, patch_size: 16, mlp_ratio: 4, window_size: 14, prompt_embed_dim: 256, mask_in_chans: 16,
  decoder_depth: 2, decoder_mlp_dim: 2048, decoder_heads: 8, iou_head_hidden_dim: 256,
};
/** build_sam.py's build_sam_vit_b / _l / _h. */
export const SAM_PRESETS: Record<SamPresetName, SamConfig> = {
  vit_b: { ...BASE, embed_dim: 768, depth: 12, num_heads: 12, global_attn_indexes: [2, 5, 8, 11] },
  vit_l: { ...BASE, embed_dim: 1024, depth: 24, num_heads: 16, global_attn_indexes: [5, 11, 17, 23] },
  vit_h: { ...BASE, embed_dim: 1280, depth: 32, num_heads: 16, global_attn_indexes: [7, 15, 23, 31] },
};

export const PIXEL_MEAN: [number, number, number] = [123.675, 116.28, 103.53];
export const PIXEL_STD: [number, number, number] = [58.395, 57.12, 57.375];

/** One image of Sam.forward's batch (sam.py's batched_input entries). */
export interface SamInput {
  /** (3, H, W) image, already resized with ResizeLongestSide (any dtype). */
  image: Tensor;
  originalSize: [number, number];
  pointCoords?: Tensor;
  pointLabels?: Tensor;
  boxes?: Tensor;
  maskInputs?: Tensor;
}

export interface SamOutput { masks: Tensor; iouPredictions: Tensor; lowResLogits: Tensor }

export class Sam extends SamModule {
  readonly maskThreshold = 0;
  readonly imageFormat = 'RGB';
  image_encoder: ImageEncoderViT;
  prompt_encoder: PromptEncoder;
  mask_decoder: MaskDecoder;
  // Non-persistent buffers in PyTorch: not part of the state dict.
  readonly pixelMean: Tensor;
  readonly pixelStd: Tensor;

  constructor(imageEncoder: ImageEncoderViT, promptEncoder: PromptEncoder, maskDecoder: MaskDecoder,
    pixelMean: readonly number[] = PIXEL_MEAN, pixelStd: readonly number[] = PIXEL_STD) {
    super();
    this.image_encoder = this.child('image_encoder', imageEncoder);
    this.prompt_encoder = this.child('prompt_encoder', promptEncoder);
    this.mask_decoder = this.child('mask_decoder', maskDecoder);
    this.pixelMean = tensor([...pixelMean], [3, 1, 1]).keep();
    this.pixelStd = tensor([...pixelStd], [3, 1, 1]).keep();
  }

  /** Builds the modules of a configuration (weights: PyTorch's default initialisation). */
  static fromConfig(c: SamConfig): Sam {
    const grid = Math.floor(c.img_size / c.patch_size);
    return new Sam(
      new ImageEncoderViT({
        imgSize: c.img_size, patchSize: c.patch_size, embedDim: c.embed_dim, depth: c.depth, numHeads: c.num_heads,
        mlpRatio: c.mlp_ratio, outChans: c.prompt_embed_dim, qkvBias: true, useRelPos: true,
        windowSize: c.window_size, globalAttnIndexes: c.global_attn_indexes, eps: 1e-6,
      }),
      new PromptEncoder(c.prompt_embed_dim, [grid, grid], [c.img_size, c.img_size], c.mask_in_chans),
      new MaskDecoder(c.prompt_embed_dim,
        new TwoWayTransformer(c.decoder_depth, c.prompt_embed_dim, c.decoder_heads, c.decoder_mlp_dim),
        { numMultimaskOutputs: 3, iouHeadDepth: 3, iouHeadHiddenDim: c.iou_head_hidden_dim }),
      c.pixel_mean ?? PIXEL_MEAN, c.pixel_std ?? PIXEL_STD,
    );
  }

  get imgSize(): number { return this.image_encoder.imgSize; }

  /**
   * End to end on a batch of images with their prompts (sam.py's forward, without the no_grad:
   * wrap in noGrad() for inference). Masks are thresholded unless returnLogits.
   */
  forward(batch: SamInput[], multimaskOutput: boolean, returnLogits = false): SamOutput[] {
    const images = stack(batch.map((b) => this.preprocess(b.image)), 0);
    const embeddings = this.image_encoder.forward(images);
    const device = this.device;
    const on = (t: Tensor | undefined): Tensor | null => (t ? (t.device === device ? t : t.to(device as Device)) : null);
    return batch.map((b, i) => {
      const points: PointPrompt | null = b.pointCoords ? { coords: on(b.pointCoords)!, labels: on(b.pointLabels)! } : null;
      const [sparse, dense] = this.prompt_encoder.forward(points, on(b.boxes), on(b.maskInputs));
      const [lowRes, iou] = this.mask_decoder.forward(embeddings.select(0, i).unsqueeze(0), this.prompt_encoder.getDensePe(), sparse, dense, multimaskOutput);
      const logits = this.postprocessMasks(lowRes, [b.image.shape[1], b.image.shape[2]], b.originalSize);
      return { masks: returnLogits ? logits : logits.gt(this.maskThreshold), iouPredictions: iou, lowResLogits: lowRes };
    });
  }

  /**
   * Low-res mask logits (B, N, 4h, 4w) → logits at the original image size: upscale to the
   * padded input, crop the padding (inputSize = the resized image's (h, w)), resize.
   */
  postprocessMasks(masks: Tensor, inputSize: [number, number], originalSize: [number, number]): Tensor {
    const s = this.imgSize;
    const [h, w] = masks.shape.slice(-2);
    const pow2 = (r: number): boolean => Number.isInteger(r) && r > 0 && (r & (r - 1)) === 0;
    return tidy(() => {
      let m: Tensor;
      if (pow2(s / h) && pow2(s / w)) {
        // The crop's pixels alone: bilinear to inputSize with the full upscale's scale factors makes
        // each one from the same source coordinates as the upscale to s×s (the source step is
        // h/s either way, exactly, for a power-of-two ratio), so they are the same values, without
        // computing the padding's rows or columns.
        m = callOp('aten::upsample_bilinear2d', masks, inputSize, false, s / h, s / w) as Tensor;
      } else {
        m = F.interpolate(masks, { size: [s, s], mode: 'bilinear', alignCorners: false });
        m = m.slice(-2, 0, inputSize[0]).slice(-1, 0, inputSize[1]);
      }
      return F.interpolate(m, { size: originalSize, mode: 'bilinear', alignCorners: false });
    });
  }

  /** Normalize pixel values and pad to a square input: (…, 3, h, w) → (…, 3, S, S). */
  preprocess(x: Tensor): Tensor {
    // An image made elsewhere is moved to the model's device first (once).
    if (x.device !== this.pixelMean.device) x = x.to(this.pixelMean.device as Device);
    const n = x.float().sub(this.pixelMean).div(this.pixelStd);
    const [h, w] = n.shape.slice(-2);
    return F.pad(n, [0, this.imgSize - w, 0, this.imgSize - h]);
  }

  protected override deviceTensors(): Tensor[] { return [this.pixelMean, this.pixelStd]; }

  override dispose(): void {
    super.dispose();
    this.prompt_encoder.releaseDensePe();
    this.pixelMean.dispose();
    this.pixelStd.dispose();
  }
}
