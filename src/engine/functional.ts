// Neural-network functions (torch.nn.functional's subset that SAM, the adapters and the losses use).
import { callOp, hasOp, isReducedFloat, Tensor } from './tensor.js';
import { autocastActive } from './device.js';

const T = (x: ReturnType<typeof callOp>): Tensor => x as Tensor;
type Pair = number | [number, number];

export function linear(x: Tensor, weight: Tensor, bias?: Tensor | null): Tensor {
  return T(callOp('aten::linear', x, weight, bias ?? null));
}

export interface ConvOpts { stride?: Pair; padding?: Pair; dilation?: Pair; groups?: number }
export function conv2d(x: Tensor, weight: Tensor, bias?: Tensor | null, o: ConvOpts = {}): Tensor {
  return T(callOp('aten::conv2d', x, weight, bias ?? null, o.stride ?? 1, o.padding ?? 0, o.dilation ?? 1, o.groups ?? 1));
}

export function convTranspose2d(
  x: Tensor, weight: Tensor, bias?: Tensor | null, o: ConvOpts & { outputPadding?: Pair } = {},
): Tensor {
  return T(callOp('aten::conv_transpose2d.input', x, weight, bias ?? null, o.stride ?? 1, o.padding ?? 0,
    o.outputPadding ?? 0, o.groups ?? 1, o.dilation ?? 1));
}

/** Inside autocast: x as float32 when it is bf16/fp16 (norms and reductions run in fp32), else x itself. */
export function fp32UnderAutocast(x: Tensor): Tensor {
  return autocastActive() && isReducedFloat(x.dtype) ? x.float() : x;
}

/** Layer norm; inside autocast a bf16/fp16 input is normalized in fp32 (the output is fp32). */
export function layerNorm(x: Tensor, normalizedShape: number[], weight?: Tensor | null, bias?: Tensor | null, eps = 1e-5): Tensor {
  return T(callOp('aten::layer_norm', fp32UnderAutocast(x), normalizedShape, weight ?? null, bias ?? null, eps, true));
}

const SDPA = 'aten::scaled_dot_product_attention';

/** Whether this libtorch has torch.nn.functional.scaled_dot_product_attention (2.x; not 1.13). */
export function hasScaledDotProductAttention(): boolean {
  return hasOp(SDPA);
}

/**
 * softmax(q·kᵀ/√E + mask)·v over (…, L, E) queries and (…, S, E) keys/values, with an additive float
 * mask broadcastable to (…, L, S), by libtorch's fused kernels (flash / memory-efficient on CUDA,
 * chosen by libtorch; the math form elsewhere). libtorch 2.x only: check hasScaledDotProductAttention().
 */
export function scaledDotProductAttention(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | null = null): Tensor {
  if (!hasOp(SDPA)) throw new Error('scaled_dot_product_attention: this libtorch has no aten::scaled_dot_product_attention (it came with PyTorch 2.0)');
  return T(callOp(SDPA, q, k, v, mask));
}

/** What scaled_dot_product_attention computes, written out (any libtorch): softmax(q·kᵀ/√E + mask)·v. */
export function scaledDotProductAttentionMath(q: Tensor, k: Tensor, v: Tensor, mask: Tensor | null = null): Tensor {
  const scores = q.matmul(k.transpose(-2, -1)).mul(q.size(-1) ** -0.5);
  return (mask ? scores.add(mask) : scores).softmax(-1).matmul(v);
}

export interface PoolOpts { stride?: Pair; padding?: Pair; ceilMode?: boolean }
export function avgPool2d(x: Tensor, kernel: Pair, o: PoolOpts & { countIncludePad?: boolean } = {}): Tensor {
  return T(callOp('aten::avg_pool2d', x, kernel, o.stride ?? kernel, o.padding ?? 0, o.ceilMode ?? false, o.countIncludePad ?? true, null));
}
export function maxPool2d(x: Tensor, kernel: Pair, o: PoolOpts & { dilation?: Pair } = {}): Tensor {
  return T(callOp('aten::max_pool2d', x, kernel, o.stride ?? kernel, o.padding ?? 0, o.dilation ?? 1, o.ceilMode ?? false));
}
export function adaptiveAvgPool2d(x: Tensor, size: Pair): Tensor {
  return T(callOp('aten::adaptive_avg_pool2d', x, size));
}

export type InterpMode = 'nearest' | 'bilinear' | 'bicubic';
export interface InterpOpts { size: [number, number]; mode?: InterpMode; alignCorners?: boolean; antialias?: boolean }
/** F.interpolate on (N, C, H, W) to an explicit output size. */
export function interpolate(x: Tensor, o: InterpOpts): Tensor {
  const mode = o.mode ?? 'nearest';
  const ac = o.alignCorners ?? false;
  if (mode === 'nearest') return T(callOp('aten::upsample_nearest2d', x, o.size, null, null));
  if (o.antialias) return T(callOp(`aten::_upsample_${mode}2d_aa`, x, o.size, ac, null, null));
  return T(callOp(`aten::upsample_${mode}2d`, x, o.size, ac, null, null));
}

/** Constant padding, pad given as in F.pad: [left, right, top, bottom, ...] from the last dim. */
export function pad(x: Tensor, padding: number[], value = 0): Tensor {
  return T(callOp('aten::constant_pad_nd', x, padding, value));
}

export function dropout(x: Tensor, p: number, training: boolean): Tensor {
  if (!training || p === 0) return x.clone();
  return T(callOp('aten::dropout', x, p, true));
}

export type Reduction = 'none' | 'mean' | 'sum';
const RED: Record<Reduction, number> = { none: 0, mean: 1, sum: 2 };

export function binaryCrossEntropyWithLogits(
  logits: Tensor, target: Tensor, o: { weight?: Tensor; posWeight?: Tensor; reduction?: Reduction } = {},
): Tensor {
  return T(callOp('aten::binary_cross_entropy_with_logits', logits, target, o.weight ?? null, o.posWeight ?? null, RED[o.reduction ?? 'mean']));
}

export function mseLoss(x: Tensor, y: Tensor, reduction: Reduction = 'mean'): Tensor {
  return T(callOp('aten::mse_loss', x, y, RED[reduction]));
}

export function crossEntropy(logits: Tensor, target: Tensor, reduction: Reduction = 'mean'): Tensor {
  return T(callOp('aten::cross_entropy_loss', logits, target, null, RED[reduction], -100, 0.0));
}

export function gelu(x: Tensor): Tensor { return x.gelu(); }
export function relu(x: Tensor): Tensor { return x.relu(); }
export function sigmoid(x: Tensor): Tensor { return x.sigmoid(); }
export function softmax(x: Tensor, dim: number): Tensor { return x.softmax(dim); }
export function logSoftmax(x: Tensor, dim: number): Tensor { return x.logSoftmax(dim); }
export function oneHot(x: Tensor, n: number): Tensor { return x.oneHot(n); }
