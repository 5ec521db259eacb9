// The candidate operations of a NAS-LoRA cell, each r→r on a (batch, r, H, W) map, stride 1,
// same padding. Adding an op is one registerOp() call.
//
// For re-parameterization an op declares what it is: a convolution (then `conv` gives its weight
// and dilation, and denseKernel() its exact equivalent zero-padded to any odd size), 'avg' / 'max'
// pools, or 'zero'. 'perToken' ops (skip, 1×1 conv) act on each token alone, so a cell of them can
// fold into W0.
import { Conv2d, Empty, F, eye, tensor, zerosLike, noGrad, type Device, type Module, type Tensor } from '../../engine/index.js';

export type OpKind = 'conv' | 'avg' | 'max' | 'zero';

export interface CandidateOp {
  name: string;
  kind: OpKind;
  perToken: boolean;
  build(r: number): Module;
  apply(z: Tensor, m: Module): Tensor;
  /** Multiply-adds per token and output channel on an r-channel map: the tie-break at discretisation prefers the cheapest. */
  cost(r: number): number;
  /** For kind 'conv': its (r, r, k, k) weight (on `device`, the cell's), applied with `dilation` and same padding. */
  conv?: { k: number; dilation: number; weight(m: Module, r: number, device: Device): Tensor };
}

/** The smallest odd dense kernel size that expresses a conv-type op. */
export function span(op: CandidateOp): number {
  return op.conv ? op.conv.dilation * (op.conv.k - 1) + 1 : 1;
}

/** The (r, r, size, size) kernel equal to a conv-type op applied with padding (size−1)/2. */
export function denseKernel(op: CandidateOp, m: Module, r: number, size: number, device: Device): Tensor {
  return embedKernel(op.conv!.weight(m, r, device), op.conv!.dilation, size);
}

export const OPS = new Map<string, CandidateOp>();
export function registerOp(op: CandidateOp): void { OPS.set(op.name, op); }

// One-hot placement matrices (k·k → size·size), cached per device: a dilated k×k kernel becomes a
// dense size×size one with a single matmul, cheap enough to do at every search step.
const placements = new Map<string, Tensor>();
function placement(k: number, dilation: number, size: number, device: string): Tensor {
  const key = `${k}/${dilation}/${size}/${device}`;
  let p = placements.get(key);
  if (!p) {
    const extent = dilation * (k - 1) + 1;
    if (size < extent) throw new Error(`kernel of span ${extent} does not fit in ${size}`);
    const off = (size - extent) / 2;
    const m = new Float32Array(k * k * size * size);
    for (let a = 0; a < k; a++) for (let b = 0; b < k; b++) m[(a * k + b) * size * size + (off + a * dilation) * size + off + b * dilation] = 1;
    p = tensor(m, [k * k, size * size], { device: device as Device }).keep();
    placements.set(key, p);
  }
  return p;
}

/** Tensors held by the placement cache (at most one per kernel/dilation/size combination in use). */
export function cachedPlacements(): number { return placements.size; }

/** Places a (o, i, k, k) kernel dilated by d, centred, into a (o, i, size, size) zero kernel. */
export function embedKernel(w: Tensor, dilation: number, size: number): Tensor {
  const [o, i, k] = w.shape;
  return w.reshape(o * i, k * k).matmul(placement(k, dilation, size, w.device)).reshape(o, i, size, size);
}

function convOp(name: string, k: number, dilation: number): CandidateOp {
  const weight = (m: Module) => (m as Conv2d).weight;
  return {
    name, kind: 'conv', perToken: k === 1, cost: (r) => k * k * r,
    build: (r) => new Conv2d(r, r, k, { padding: (dilation * (k - 1)) / 2, dilation, bias: false }),
    apply: (z, m) => (m as Conv2d).forward(z),
    conv: { k, dilation, weight },
  };
}

registerOp({
  name: 'skip', kind: 'conv', perToken: true, cost: () => 0,
  build: () => new Empty(),
  apply: (z) => z,
  conv: { k: 1, dilation: 1, weight: (_m, r, device) => eye(r, { device }).reshape(r, r, 1, 1) },
});
registerOp(convOp('conv_1x1', 1, 1));
registerOp(convOp('conv_3x3', 3, 1));
registerOp(convOp('conv_5x5', 5, 1));
registerOp(convOp('dil_conv_3x3', 3, 2));
registerOp(convOp('dil_conv_5x5', 5, 2));
registerOp({
  // padded cells are not counted (count_include_pad=False): linear but not a fixed kernel at the
  // borders, so re-parameterization keeps it as its own term instead of folding it into the conv.
  name: 'avg_pool_3x3', kind: 'avg', perToken: false, cost: () => 9,
  build: () => new Empty(),
  apply: (z) => F.avgPool2d(z, 3, { stride: 1, padding: 1, countIncludePad: false }),
});
registerOp({
  name: 'max_pool_3x3', kind: 'max', perToken: false, cost: () => 9,
  build: () => new Empty(),
  apply: (z) => F.maxPool2d(z, 3, { stride: 1, padding: 1 }),  // implicit −∞ padding never wins
});
registerOp({
  name: 'zero', kind: 'zero', perToken: true, cost: () => 0,
  build: () => new Empty(),
  apply: (z) => zerosLike(z),
});

export const DEFAULT_OPS = ['skip', 'conv_1x1', 'conv_3x3', 'conv_5x5', 'dil_conv_3x3', 'dil_conv_5x5', 'avg_pool_3x3', 'max_pool_3x3'];

export function getOp(name: string): CandidateOp {
  const op = OPS.get(name);
  if (!op) throw new Error(`unknown NAS-LoRA op '${name}' (known: ${[...OPS.keys()].join(', ')})`);
  return op;
}

export { noGrad };
