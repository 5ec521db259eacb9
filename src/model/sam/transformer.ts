// segment_anything/modeling/transformer.py: the two-way transformer of the mask decoder. Tokens
// (prompt + output tokens) and image positions attend to each other in both directions.
//
// Intermediates are freed as soon as they are dead (a tidy scope per attention and per sub-block)
// rather than at the end of the caller's scope: PyTorch frees each one when its last reference goes,
// and the same ops writing into memory freed a moment ago (still in cache) instead of fresh memory
// made the decoder ~10 % faster (an interleaved A/B on ViT-B). Tensors that autograd saved stay
// alive through the graph; the graph itself is the original's (gradients are summed in the same
// order), so training is bit for bit unchanged.
import { LayerNorm, Linear, ModuleList, tidy, type Tensor } from '../../engine/index.js';
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
    return tidy(() => {
      const image = imageEmbedding.flatten(2).permute(0, 2, 1);
      const pe = imagePe.flatten(2).permute(0, 2, 1);
      let queries = pointEmbedding;
      let keys = image;
      for (const layer of this.layers.items) {
        const [q, k] = layer.forward(queries, keys, pointEmbedding, pe);
        // The previous layer's outputs are dead now (a layer never returns its inputs).
        if (queries !== pointEmbedding && queries !== q) queries.dispose();
        if (keys !== image && keys !== k) keys.dispose();
        [queries, keys] = [q, k];
      }
      // Final attention layer from the points to the image.
      const out = tidy(() => {
        const q = queries.add(pointEmbedding);
        const k = keys.add(pe);
        return this.norm_final_attn.forward(queries.add(this.final_attn_token_to_image.forward(q, k, keys)));
      });
      return [out, keys];
    });
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
    return tidy(() => {
      // Self attention block (the first layer has no positional encoding added, nor a residual).
      queries = tidy(() => {
        if (this.skipFirstLayerPe) return this.norm1.forward(this.self_attn.forward(queries, queries, queries));
        const q = queries.add(queryPe);
        return this.norm1.forward(queries.add(this.self_attn.forward(q, q, queries)));
      });

      // Cross attention block, tokens attending to the image embedding.
      queries = tidy(() => this.norm2.forward(queries.add(this.cross_attn_token_to_image.forward(queries.add(queryPe), keys.add(keyPe), keys))));

      // MLP block.
      queries = tidy(() => this.norm3.forward(queries.add(this.mlp.forward(queries))));

      // Cross attention block, image embedding attending to the tokens. keys + keyPe again, as the
      // original: the same values as above, but one sum used twice would change the order in which
      // autograd adds up the keys' gradient (a rounding-level change to training).
      const newKeys = tidy(() => this.norm4.forward(keys.add(this.cross_attn_image_to_token.forward(keys.add(keyPe), queries.add(queryPe), queries))));
      return [queries, newKeys];
    });
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
    return tidy(() => {
      // Projections in the original's order (an adapter on them may draw random numbers).
      const qh = tidy(() => this.separateHeads(this.q_proj.forward(q)));
      const kh = tidy(() => this.separateHeads(this.k_proj.forward(k)));
      const vh = tidy(() => this.separateHeads(this.v_proj.forward(v)));
      const attn = tidy(() => qh.matmul(kh.permute(0, 1, 3, 2)).div(Math.sqrt(qh.shape[3])).softmax(-1));
      qh.dispose();
      kh.dispose();
      const out = tidy(() => this.recombineHeads(attn.matmul(vh)));
      attn.dispose();
      vh.dispose();
      return this.out_proj.forward(out);
    });
  }
}
