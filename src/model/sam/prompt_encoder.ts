// segment_anything/modeling/prompt_encoder.py: points, boxes and masks → sparse and dense
// prompt embeddings, with random-Fourier positional encodings.
import { cat, Conv2d, Embedding, empty, ModuleList, ones, randn, stack, tidy, where, zeros, type Device, type Tensor } from '../../engine/index.js';
import { LayerNorm2d, SamModule, Sequential } from './common.js';

/** Point prompts: coords (B, N, 2) as (x, y) in input-frame pixels, labels (B, N): 1 fg, 0 bg, -1 padding. */
export interface PointPrompt { coords: Tensor; labels: Tensor }

export class PromptEncoder extends SamModule {
  readonly numPointEmbeddings = 4; // pos/neg point + 2 box corners
  readonly maskInputSize: [number, number];
  pe_layer: PositionEmbeddingRandom;
  point_embeddings: ModuleList<Embedding>;
  not_a_point_embed: Embedding;
  mask_downscaling: Sequential;
  no_mask_embed: Embedding;

  /**
   * @param imageEmbeddingSize (h, w) of the image embedding
   * @param inputImageSize (H, W) of the padded encoder input
   */
  constructor(
    readonly embedDim: number,
    readonly imageEmbeddingSize: [number, number],
    readonly inputImageSize: [number, number],
    maskInChans: number,
  ) {
    super();
    this.pe_layer = this.child('pe_layer', new PositionEmbeddingRandom(Math.floor(embedDim / 2)));
    this.point_embeddings = this.child('point_embeddings',
      new ModuleList(Array.from({ length: this.numPointEmbeddings }, () => new Embedding(1, embedDim))));
    this.not_a_point_embed = this.child('not_a_point_embed', new Embedding(1, embedDim));
    this.maskInputSize = [4 * imageEmbeddingSize[0], 4 * imageEmbeddingSize[1]];
    const c4 = Math.floor(maskInChans / 4);
    this.mask_downscaling = this.child('mask_downscaling', new Sequential([
      new Conv2d(1, c4, 2, { stride: 2 }),
      new LayerNorm2d(c4),
      'gelu',
      new Conv2d(c4, maskInChans, 2, { stride: 2 }),
      new LayerNorm2d(maskInChans),
      'gelu',
      new Conv2d(maskInChans, embedDim, 1),
    ]));
    this.no_mask_embed = this.child('no_mask_embed', new Embedding(1, embedDim));
  }

  /** getDensePe's cache: the encoding and what it was computed from. */
  private densePe: { pe: Tensor; gaussian: Float32Array; device: string; dtype: string } | null = null;

  /**
   * The positional encoding of the image embedding grid, (1, C, h, w), contiguous. It depends on the
   * (untrained) Gaussian matrix alone, so it is computed once and reused while that matrix's values
   * and device and the dtype the encoding computes in (autocast) stay the same; each caller gets a
   * handle of its own (disposing it leaves the cache alone). A matrix that requires grad is encoded
   * afresh every time.
   */
  getDensePe(): Tensor {
    const g = this.pe_layer.positional_encoding_gaussian_matrix;
    const compute = (): Tensor => tidy(() => this.pe_layer.forward(this.imageEmbeddingSize).unsqueeze(0).contiguous());
    if (g.requiresGrad) return compute();
    // The dtype a matmul with the matrix gives now (bfloat16 under autocast): the encoding's.
    const dtype = tidy(() => g.narrow(1, 0, 1).transpose(0, 1).matmul(g.narrow(1, 0, 1)).dtype);
    const device = g.device, values = g.toFloat32Array();
    const c = this.densePe;
    if (c && c.device === device && c.dtype === dtype && c.gaussian.every((v, i) => Object.is(v, values[i]))) return c.pe.detach();
    this.releaseDensePe();
    const pe = compute().keep();
    this.densePe = { pe, gaussian: values, device, dtype };
    return pe.detach();
  }

  /** Frees getDensePe's cache (Sam.dispose calls it). */
  releaseDensePe(): void {
    this.densePe?.pe.dispose();
    this.densePe = null;
  }

  override dispose(): void {
    super.dispose();
    this.releaseDensePe();
  }

  private embedPoints(points: Tensor, labels: Tensor, pad: boolean): Tensor {
    points = points.add(0.5); // shift to the centre of the pixel
    labels = labels.float();
    if (pad) {
      // A padding point stands in for the missing box (the decoder was trained with one).
      const device = points.device as Device;
      points = cat([points, zeros([points.shape[0], 1, 2], { device })], 1);
      labels = cat([labels, ones([labels.shape[0], 1], { device }).neg()], 1);
    }
    let pe = this.pe_layer.forwardWithCoords(points, this.inputImageSize);
    const is = (v: number): Tensor => labels.eq(v).unsqueeze(-1);
    pe = where(is(-1), this.not_a_point_embed.weight, pe); // = 0 + not_a_point_embed
    pe = where(is(0), pe.add(this.point_embeddings.at(0).weight), pe);
    pe = where(is(1), pe.add(this.point_embeddings.at(1).weight), pe);
    return pe;
  }

  private embedBoxes(boxes: Tensor): Tensor {
    const coords = boxes.add(0.5).reshape(-1, 2, 2);
    const corners = this.pe_layer.forwardWithCoords(coords, this.inputImageSize);
    return corners.add(cat([this.point_embeddings.at(2).weight, this.point_embeddings.at(3).weight], 0));
  }

  /**
   * Sparse (B, N, C) and dense (B, C, h, w) embeddings. boxes (B, 4) as x0 y0 x1 y1, masks
   * (B, 1, 4h, 4w) low-res logits. Without a box, points get a padding point appended.
   */
  forward(points: PointPrompt | null, boxes: Tensor | null, masks: Tensor | null): [Tensor, Tensor] {
    const bs = points ? points.coords.shape[0] : boxes ? boxes.shape[0] : masks ? masks.shape[0] : 1;
    const sparse: Tensor[] = [empty([bs, 0, this.embedDim], { device: this.no_mask_embed.weight.device as Device })];
    if (points) sparse.push(this.embedPoints(points.coords, points.labels, boxes === null));
    if (boxes) sparse.push(this.embedBoxes(boxes));
    const [h, w] = this.imageEmbeddingSize;
    const dense = masks
      ? this.mask_downscaling.forward(masks)
      : this.no_mask_embed.weight.reshape(1, -1, 1, 1).expand(bs, -1, h, w);
    return [cat(sparse, 1), dense];
  }
}

/** Positional encoding with random spatial frequencies (Tancik et al., Fourier features). */
export class PositionEmbeddingRandom extends SamModule {
  /** (2, numPosFeats); a buffer in PyTorch, so it is in the state dict but not trained. */
  positional_encoding_gaussian_matrix: Tensor;

  constructor(numPosFeats = 64, scale = 1) {
    super();
    if (!(scale > 0)) scale = 1;
    this.positional_encoding_gaussian_matrix = this.buffer('positional_encoding_gaussian_matrix', randn([2, numPosFeats]).mul_(scale));
  }

  /** coords in [0, 1] (…, 2) → (…, 2·numPosFeats). */
  private peEncoding(coords: Tensor): Tensor {
    const c = coords.mul(2).sub(1).matmul(this.positional_encoding_gaussian_matrix).mul(2 * Math.PI);
    return cat([c.sin(), c.cos()], -1);
  }

  /** Encoding of an (h, w) grid of pixel centres: (C, h, w). */
  forward([h, w]: [number, number]): Tensor {
    const grid = ones([h, w], { device: this.positional_encoding_gaussian_matrix.device as Device });
    const y = grid.cumsum(0).sub(0.5).div(h);
    const x = grid.cumsum(1).sub(0.5).div(w);
    return this.peEncoding(stack([x, y], -1)).permute(2, 0, 1);
  }

  /** Points (B, N, 2) in pixels of an image of size (H, W), not normalized. */
  forwardWithCoords(coords: Tensor, [H, W]: [number, number]): Tensor {
    const c = stack([coords.select(2, 0).div(W), coords.select(2, 1).div(H)], -1);
    return this.peEncoding(c.float());
  }
}
