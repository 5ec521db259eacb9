// segment_anything/modeling/transformer.py: the two-way transformer of the mask decoder. Tokens
// (prompt + output tokens) and image positions attend to each other in both directions.
import { LayerNorm, Linear, ModuleList, type Tensor } from '../../engine/index.js';
import { MLPBlock, SamModule, type Activation, type Layer } from './common.js';

export class TwoWayTransformer extends SamModule {
  layers: ModuleList<TwoWayAttentionBlock>;
  final_attn_token_to_image: Attention;
  norm_final_attn: LayerNorm;

  constructor(depth: number, embeddingDim: number, numHeads: number, mlpDim: number, activation: Activation = 'relu', attentionDownsampleRate = 2) {
    super();
    this.layers = this.child('layers', new ModuleList(Array.from({ length: depth }, (_, i) =>
      new TwoWayAttentionBlock(embeddingDim, numHeads, mlpDim, activation, attentionDownsampleRate, i === 0))));
    this.final_attn_token_to_image = this.child('final_attn_token_to_image', new Attention(embeddingDim, numHeads, attentionDownsampleRate));
    this.norm_final_attn = this.child('norm_final_attn', new LayerNorm(embeddingDim));
  }

  /**
   * imageEmbedding, imagePe (B, C, h, w); pointEmbedding (B, N, C) →
   * [queries (B, N, C), keys (B, h·w, C)].
   */
  forward(imageEmbedding: Tensor, imagePe: Tensor, pointEmbedding: Tensor): [Tensor, Tensor] {
    const image = imageEmbedding.flatten(2).permute(0, 2, 1);
    const pe = imagePe.flatten(2).permute(0, 2, 1);
    let queries = pointEmbedding;
    let keys = image;
    for (const layer of this.layers.items) [queries, keys] = layer.forward(queries, keys, pointEmbedding, pe);
    // Final attention layer from the points to the image.
    const q = queries.add(pointEmbedding);
    const k = keys.add(pe);
    queries = queries.add(this.final_attn_token_to_image.forward(q, k, keys));
    return [this.norm_final_attn.forward(queries), keys];
  }
}

/**
 * (1) self-attention of the sparse inputs, (2) cross-attention tokens → image, (3) MLP on the
 * tokens, (4) cross-attention image → tokens.
 */
export class TwoWayAttentionBlock extends SamModule {
  self_attn: Attention;
  norm1: LayerNorm;
  cross_attn_token_to_image: Attention;
  norm2: LayerNorm;
  mlp: MLPBlock;
  norm3: LayerNorm;
  norm4: LayerNorm;
  cross_attn_image_to_token: Attention;

  constructor(dim: number, numHeads: number, mlpDim = 2048, activation: Activation = 'relu', downsampleRate = 2, readonly skipFirstLayerPe = false) {
    super();
    this.self_attn = this.child('self_attn', new Attention(dim, numHeads));
    this.norm1 = this.child('norm1', new LayerNorm(dim));
    this.cross_attn_token_to_image = this.child('cross_attn_token_to_image', new Attention(dim, numHeads, downsampleRate));
    this.norm2 = this.child('norm2', new LayerNorm(dim));
    this.mlp = this.child('mlp', new MLPBlock(dim, mlpDim, activation));
    this.norm3 = this.child('norm3', new LayerNorm(dim));
    this.norm4 = this.child('norm4', new LayerNorm(dim));
    this.cross_attn_image_to_token = this.child('cross_attn_image_to_token', new Attention(dim, numHeads, downsampleRate));
  }

  forward(queries: Tensor, keys: Tensor, queryPe: Tensor, keyPe: Tensor): [Tensor, Tensor] {
    // Self attention block (the first layer has no positional encoding added, nor a residual).
    if (this.skipFirstLayerPe) {
      queries = this.self_attn.forward(queries, queries, queries);
    } else {
      const q = queries.add(queryPe);
      queries = queries.add(this.self_attn.forward(q, q, queries));
    }
    queries = this.norm1.forward(queries);

    // Cross attention block, tokens attending to the image embedding.
    let q = queries.add(queryPe);
    let k = keys.add(keyPe);
    queries = this.norm2.forward(queries.add(this.cross_attn_token_to_image.forward(q, k, keys)));

    // MLP block.
    queries = this.norm3.forward(queries.add(this.mlp.forward(queries)));

    // Cross attention block, image embedding attending to the tokens.
    q = queries.add(queryPe);
    k = keys.add(keyPe);
    keys = this.norm4.forward(keys.add(this.cross_attn_image_to_token.forward(k, q, queries)));
    return [queries, keys];
  }
}

/** Attention that can downscale the embedding size after projecting to queries, keys and values. */
export class Attention extends SamModule {
  readonly internalDim: number;
  q_proj: Layer;
  k_proj: Layer;
  v_proj: Layer;
  out_proj: Layer;

  constructor(readonly embeddingDim: number, readonly numHeads: number, downsampleRate = 1) {
    super();
    this.internalDim = Math.floor(embeddingDim / downsampleRate);
    if (this.internalDim % numHeads !== 0) throw new Error(`Attention: ${numHeads} heads must divide the internal dim ${this.internalDim}`);
    this.q_proj = this.child('q_proj', new Linear(embeddingDim, this.internalDim));
    this.k_proj = this.child('k_proj', new Linear(embeddingDim, this.internalDim));
    this.v_proj = this.child('v_proj', new Linear(embeddingDim, this.internalDim));
    this.out_proj = this.child('out_proj', new Linear(this.internalDim, embeddingDim));
  }

  /** (B, N, C) → (B, nHeads, N, C/nHeads) */
  private separateHeads(x: Tensor): Tensor {
    const [b, n, c] = x.shape;
    return x.reshape(b, n, this.numHeads, c / this.numHeads).transpose(1, 2);
  }

  /** (B, nHeads, N, c) → (B, N, nHeads·c) */
  private recombineHeads(x: Tensor): Tensor {
    const [b, nh, n, c] = x.shape;
    return x.transpose(1, 2).reshape(b, n, nh * c);
  }

  forward(q: Tensor, k: Tensor, v: Tensor): Tensor {
    q = this.separateHeads(this.q_proj.forward(q));
    k = this.separateHeads(this.k_proj.forward(k));
    v = this.separateHeads(this.v_proj.forward(v));
    const cPerHead = q.shape[3];
    let attn = q.matmul(k.permute(0, 1, 3, 2));
    attn = attn.div(Math.sqrt(cPerHead)).softmax(-1);
    return this.out_proj.forward(this.recombineHeads(attn.matmul(v)));
  }
}
