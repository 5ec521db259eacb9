// segment_anything/modeling/image_encoder.py: the ViT image encoder (ViTDet-style backbone with
// windowed and global attention, decomposed relative positions) and its neck.
//
// Tokens travel as (B, H, W, C) between blocks, as in the original; attention receives its token
// grid in that layout too, so a layer wrapping `qkv` (an adapter) sees H and W: for a windowed
// block the grid is one window (B·nWindows, ws, ws, C), for a global block the whole image.
import { callOp, Conv2d, einsum, F, LayerNorm, Linear, ModuleList, tensor, tidy, zeros, type Device, type Tensor } from '../../engine/index.js';
import { LayerNorm2d, MLPBlock, SamModule, Sequential, type Layer } from './common.js';

export interface ImageEncoderOpts {
  imgSize?: number;
  patchSize?: number;
  inChans?: number;
  embedDim?: number;
  depth?: number;
  numHeads?: number;
  mlpRatio?: number;
  outChans?: number;
  qkvBias?: boolean;
  useAbsPos?: boolean;
  useRelPos?: boolean;
  windowSize?: number;
  globalAttnIndexes?: readonly number[];
  /** LayerNorm eps in the blocks (SAM builds with 1e-6). */
  eps?: number;
}

export class ImageEncoderViT extends SamModule {
  readonly imgSize: number;
  readonly patchSize: number;
  readonly embedDim: number;
  readonly globalAttnIndexes: readonly number[];
  patch_embed: PatchEmbed;
  pos_embed: Tensor | null;
  blocks: ModuleList<Block>;
  neck: Sequential;

  // Defaults are build_sam.py's ViT-B (the constructor's own defaults differ: no rel-pos, eps 1e-5).
  constructor(o: ImageEncoderOpts = {}) {
    super();
    const img = (this.imgSize = o.imgSize ?? 1024);
    const p = (this.patchSize = o.patchSize ?? 16);
    const dim = (this.embedDim = o.embedDim ?? 768);
    const outChans = o.outChans ?? 256;
    this.globalAttnIndexes = [...(o.globalAttnIndexes ?? [2, 5, 8, 11])];
    const grid = Math.floor(img / p);
    this.patch_embed = this.child('patch_embed', new PatchEmbed(p, o.inChans ?? 3, dim));
    this.pos_embed = o.useAbsPos === false ? null : this.param('pos_embed', zeros([1, grid, grid, dim]));
    const blocks: Block[] = [];
    for (let i = 0; i < (o.depth ?? 12); i++) {
      blocks.push(new Block({
        dim, numHeads: o.numHeads ?? 12, mlpRatio: o.mlpRatio ?? 4, qkvBias: o.qkvBias ?? true, useRelPos: o.useRelPos ?? true,
        windowSize: this.globalAttnIndexes.includes(i) ? 0 : o.windowSize ?? 14, inputSize: [grid, grid], eps: o.eps ?? 1e-6,
      }));
    }
    this.blocks = this.child('blocks', new ModuleList(blocks));
    this.neck = this.child('neck', new Sequential([
      new Conv2d(dim, outChans, 1, { bias: false }),
      new LayerNorm2d(outChans),
      new Conv2d(outChans, outChans, 3, { padding: 1, bias: false }),
      new LayerNorm2d(outChans),
    ]));
  }

  /** (B, 3, imgSize, imgSize) normalized image → (B, outChans, imgSize/patch, imgSize/patch). */
  forward(x: Tensor): Tensor {
    x = this.patch_embed.forward(x);
    if (this.pos_embed) x = x.add(this.pos_embed);
    for (const blk of this.blocks.items) x = blk.forward(x);
    return this.neck.forward(x.permute(0, 3, 1, 2));
  }
}

export interface BlockOpts {
  dim: number;
  numHeads: number;
  mlpRatio?: number;
  qkvBias?: boolean;
  useRelPos?: boolean;
  /** 0: global attention over the whole grid. */
  windowSize?: number;
  /** The token grid of the image; sizes the rel-pos tables of a global block. */
  inputSize?: [number, number];
  eps?: number;
}

/** Transformer block with windowed (windowSize > 0) or global attention. */
export class Block extends SamModule {
  readonly windowSize: number;
  norm1: LayerNorm;
  attn: Attention;
  norm2: LayerNorm;
  mlp: MLPBlock;

  constructor(o: BlockOpts) {
    super();
    this.windowSize = o.windowSize ?? 0;
    const eps = o.eps ?? 1e-6;
    this.norm1 = this.child('norm1', new LayerNorm(o.dim, eps));
    this.attn = this.child('attn', new Attention(o.dim, o.numHeads, {
      qkvBias: o.qkvBias ?? true, useRelPos: o.useRelPos ?? true,
      inputSize: this.windowSize === 0 ? o.inputSize : [this.windowSize, this.windowSize],
    }));
    this.norm2 = this.child('norm2', new LayerNorm(o.dim, eps));
    this.mlp = this.child('mlp', new MLPBlock(o.dim, Math.trunc(o.dim * (o.mlpRatio ?? 4)), 'gelu'));
  }

  /** x (B, H, W, C) → (B, H, W, C). */
  forward(x: Tensor): Tensor {
    // A scope per block: the attention maps of one block are freed before the next one runs.
    return tidy(() => {
      const shortcut = x;
      let h = this.norm1.forward(x);
      const [, H, W] = h.shape;
      let padHW: [number, number] = [H, W];
      if (this.windowSize > 0) [h, padHW] = windowPartition(h, this.windowSize);
      h = this.attn.forward(h);
      if (this.windowSize > 0) h = windowUnpartition(h, this.windowSize, padHW, [H, W]);
      const y = shortcut.add(h);
      return y.add(this.mlp.forward(this.norm2.forward(y)));
    });
  }
}

export interface AttentionOpts { qkvBias?: boolean; useRelPos?: boolean; inputSize?: [number, number] }

/**
 * How the encoder's attention is computed: 'sdpa' = libtorch's scaled_dot_product_attention (2.x;
 * fused memory-efficient / flash kernels on CUDA) with the decomposed relative positions as an
 * additive mask; 'explicit' = the scores, softmax and product written out (every libtorch, 1.13
 * included); 'auto' (default) = sdpa where this libtorch has it. NASLORA_ATTENTION sets the default.
 */
export type AttentionImpl = 'auto' | 'sdpa' | 'explicit';
export const ATTENTION_IMPLS: readonly AttentionImpl[] = ['auto', 'sdpa', 'explicit'];
let attentionSetting: AttentionImpl = (() => {
  const e = process.env.NASLORA_ATTENTION;
  if (e === undefined || e === '') return 'auto';
  if (!(ATTENTION_IMPLS as readonly string[]).includes(e)) throw new Error(`NASLORA_ATTENTION=${e}: expected ${ATTENTION_IMPLS.join(', ')}`);
  return e as AttentionImpl;
})();

/** Sets how the image encoder's attention is computed (for every encoder); returns the previous setting. */
export function setAttentionImpl(impl: AttentionImpl): AttentionImpl {
  if (!(ATTENTION_IMPLS as readonly string[]).includes(impl)) throw new Error(`attention must be one of ${ATTENTION_IMPLS.join(', ')}, not '${impl}'`);
  const prev = attentionSetting;
  attentionSetting = impl;
  return prev;
}

/** The attention path the encoder takes now ('auto' resolved against this libtorch). */
export function attentionImpl(): 'sdpa' | 'explicit' {
  if (attentionSetting === 'explicit') return 'explicit';
  const has = F.hasScaledDotProductAttention();
  if (attentionSetting === 'sdpa' && !has) throw new Error('attention sdpa: this libtorch has no aten::scaled_dot_product_attention (PyTorch 2.0 or later); use explicit or auto');
  return has ? 'sdpa' : 'explicit';
}

/** Multi-head attention with decomposed relative positions, on a (B, H, W, C) token grid. */
export class Attention extends SamModule {
  readonly headDim: number;
  readonly scale: number;
  readonly useRelPos: boolean;
  /** The fused q/k/v projection: called on the (B, H, W, C) grid. */
  qkv: Layer;
  proj: Layer;
  rel_pos_h: Tensor | null = null;
  rel_pos_w: Tensor | null = null;
  /** The path the last forward took (tests, benchmarks). */
  lastImpl: 'sdpa' | 'explicit' | null = null;

  constructor(dim: number, readonly numHeads: number, o: AttentionOpts = {}) {
    super();
    if (dim % numHeads !== 0) throw new Error(`Attention: dim ${dim} is not divisible by ${numHeads} heads`);
    this.headDim = dim / numHeads;
    this.scale = this.headDim ** -0.5;
    this.qkv = this.child('qkv', new Linear(dim, dim * 3, o.qkvBias ?? true));
    this.proj = this.child('proj', new Linear(dim, dim));
    this.useRelPos = o.useRelPos ?? true;
    if (this.useRelPos) {
      if (!o.inputSize) throw new Error('Attention: input size must be given when using relative positional encoding');
      this.rel_pos_h = this.param('rel_pos_h', zeros([2 * o.inputSize[0] - 1, this.headDim]));
      this.rel_pos_w = this.param('rel_pos_w', zeros([2 * o.inputSize[1] - 1, this.headDim]));
    }
  }

  forward(x: Tensor): Tensor {
    return attentionImpl() === 'sdpa' ? this.forwardSdpa(x) : this.forwardExplicit(x);
  }

  /**
   * scaled_dot_product_attention on (B, nHeads, H·W, headDim); the relative positions (from the
   * unscaled q, as in the explicit form) become its additive mask (B, nHeads, H·W, H·W). Its default
   * scale is 1/√headDim, SAM's. `sdpa` is libtorch's kernel (tests pass its written-out form to check
   * this path's layout and mask on a libtorch without it).
   */
  forwardSdpa(x: Tensor, sdpa: typeof F.scaledDotProductAttention = F.scaledDotProductAttention): Tensor {
    this.lastImpl = 'sdpa';
    const [B, H, W] = x.shape;
    const nh = this.numHeads;
    const qkv = this.qkv.forward(x).reshape(B, H * W, 3, nh, -1).permute(2, 0, 3, 1, 4);  // (3, B, nh, HW, hd)
    const q = qkv.select(0, 0), k = qkv.select(0, 1), v = qkv.select(0, 2);
    let mask: Tensor | null = null;
    if (this.useRelPos) {
      const bias = decomposedRelPosBias(q.reshape(B * nh, H * W, -1), this.rel_pos_h!, this.rel_pos_w!, [H, W], [H, W]);
      mask = bias.view(B, nh, H * W, H * W);
      bias.dispose();
    }
    const ctx = sdpa(q, k, v, mask);
    mask?.dispose();
    const out = ctx.permute(0, 2, 1, 3).reshape(B, H, W, -1);
    ctx.dispose();
    return this.proj.forward(out);
  }

  forwardExplicit(x: Tensor): Tensor {
    this.lastImpl = 'explicit';
    const [B, H, W] = x.shape;
    const nh = this.numHeads;
    // qkv: (3, B·nHeads, H·W, headDim)
    const qkv = this.qkv.forward(x).reshape(B, H * W, 3, nh, -1).permute(2, 0, 3, 1, 4).reshape(3, B * nh, H * W, -1);
    const q = qkv.select(0, 0), k = qkv.select(0, 1), v = qkv.select(0, 2);
    // The (B·nHeads, HW, HW) maps are the big tensors (805 MB each for ViT-B's global blocks at
    // 1024): the relative positions are added in place, and each map's handle is dropped as soon
    // as the next one exists (autograd keeps what it needs), as PyTorch's refcounting would.
    const scores = q.mul(this.scale).matmul(k.transpose(-2, -1));
    if (this.useRelPos) addDecomposedRelPos_(scores, q, this.rel_pos_h!, this.rel_pos_w!, [H, W], [H, W]);
    const attn = scores.softmax(-1);
    scores.dispose();
    const ctx = attn.matmul(v);
    attn.dispose();
    const out = ctx.view(B, nh, H, W, -1).permute(0, 2, 3, 1, 4).reshape(B, H, W, -1);
    return this.proj.forward(out);
  }
}

/** (B, H, W, C) → windows (B·nW, ws, ws, C), zero-padding H and W up to multiples of ws. */
export function windowPartition(x: Tensor, ws: number): [Tensor, [number, number]] {
  const [B, H, W, C] = x.shape;
  const padH = (ws - (H % ws)) % ws;
  const padW = (ws - (W % ws)) % ws;
  if (padH > 0 || padW > 0) x = F.pad(x, [0, 0, 0, padW, 0, padH]);
  const Hp = H + padH, Wp = W + padW;
  const windows = x.view(B, Hp / ws, ws, Wp / ws, ws, C).permute(0, 1, 3, 2, 4, 5).contiguous().view(-1, ws, ws, C);
  return [windows, [Hp, Wp]];
}

/** Windows back to (B, H, W, C), dropping the padding. */
export function windowUnpartition(windows: Tensor, ws: number, padHW: [number, number], hw: [number, number]): Tensor {
  const [Hp, Wp] = padHW;
  const [H, W] = hw;
  const B = windows.shape[0] / ((Hp * Wp) / ws / ws);
  let x = windows.view(B, Hp / ws, Wp / ws, ws, ws, -1).permute(0, 1, 3, 2, 4, 5).contiguous().view(B, Hp, Wp, -1);
  if (Hp > H || Wp > W) x = x.slice(1, 0, H).slice(2, 0, W).contiguous();
  return x;
}

/**
 * Relative positional embeddings for query size qSize and key size kSize: (qSize, kSize, C).
 * A table of another length is linearly interpolated first (F.interpolate mode="linear").
 */
export function getRelPos(qSize: number, kSize: number, relPos: Tensor): Tensor {
  const maxRelDist = 2 * Math.max(qSize, kSize) - 1;
  let table = relPos;
  if (relPos.shape[0] !== maxRelDist) {
    const l = relPos.reshape(1, relPos.shape[0], -1).permute(0, 2, 1);
    table = (callOp('aten::upsample_linear1d', l, [maxRelDist], false, null) as Tensor).reshape(-1, maxRelDist).permute(1, 0);
  }
  // Scale the coordinates with the shorter length if q and k sizes differ; float32 arithmetic
  // with Python-double scalars, as torch computes it, then .long() truncation.
  const f = Math.fround;
  const qs = f(Math.max(kSize / qSize, 1)), ks = f(Math.max(qSize / kSize, 1));
  const shift = f((kSize - 1) * Math.max(qSize / kSize, 1));
  const idx: number[] = [];
  for (let i = 0; i < qSize; i++) {
    for (let j = 0; j < kSize; j++) idx.push(Math.trunc(f(f(f(i * qs) - f(j * ks)) + shift)));
  }
  return table.index([tensor(idx, [qSize, kSize], { dtype: 'int64', device: relPos.device as Device })]);
}

/**
 * attn (B, qH·qW, kH·kW) + the decomposed relative positions of q (B, qH·qW, C) (MViTv2,
 * https://github.com/facebookresearch/mvit).
 */
export function addDecomposedRelPos(
  attn: Tensor, q: Tensor, relPosH: Tensor, relPosW: Tensor, qSize: [number, number], kSize: [number, number],
): Tensor {
  return addDecomposedRelPos_(attn.clone(), q, relPosH, relPosW, qSize, kSize);
}

/** The two terms of the decomposed relative positions of q (B, qh·qw, C): (B, qh, qw, kh) and (B, qh, qw, kw). */
function relPosTerms(q: Tensor, relPosH: Tensor, relPosW: Tensor, qSize: [number, number], kSize: [number, number]): [Tensor, Tensor] {
  const [qh, qw] = qSize, [kh, kw] = kSize;
  const Rh = getRelPos(qh, kh, relPosH);
  const Rw = getRelPos(qw, kw, relPosW);
  const [B, , dim] = q.shape;
  const rq = q.reshape(B, qh, qw, dim);
  return [einsum('bhwc,hkc->bhwk', rq, Rh), einsum('bhwc,wkc->bhwk', rq, Rw)];
}

/** The decomposed relative positions as an additive attention bias (B, qh·qw, kh·kw): what addDecomposedRelPos adds. */
export function decomposedRelPosBias(q: Tensor, relPosH: Tensor, relPosW: Tensor, qSize: [number, number], kSize: [number, number]): Tensor {
  const [relH, relW] = relPosTerms(q, relPosH, relPosW, qSize, kSize);
  return relH.unsqueeze(4).add(relW.unsqueeze(3)).reshape(q.shape[0], qSize[0] * qSize[1], kSize[0] * kSize[1]);
}

/** addDecomposedRelPos in place on attn (returned); autograd-safe: matmul and add do not save their outputs. */
export function addDecomposedRelPos_(
  attn: Tensor, q: Tensor, relPosH: Tensor, relPosW: Tensor, qSize: [number, number], kSize: [number, number],
): Tensor {
  const [qh, qw] = qSize, [kh, kw] = kSize;
  const [relH, relW] = relPosTerms(q, relPosH, relPosW, qSize, kSize);
  const B = q.shape[0];
  const v = attn.view(B, qh, qw, kh, kw);
  v.add_(relH.unsqueeze(4)).add_(relW.unsqueeze(3));
  v.dispose();
  return attn;
}

/** Image to patch embedding: a strided conv, output as (B, H, W, C). */
export class PatchEmbed extends SamModule {
  proj: Conv2d;
  constructor(patchSize: number, inChans: number, embedDim: number) {
    super();
    this.proj = this.child('proj', new Conv2d(inChans, embedDim, patchSize, { stride: patchSize }));
  }
  forward(x: Tensor): Tensor {
    return this.proj.forward(x).permute(0, 2, 3, 1);
  }
}
