// Where the engine computes, and in which precision: CUDA devices (through the addon's CUDA hooks,
// which a CPU libtorch answers with "none"), the `--device cpu|cuda|auto` choice, and autocast
// (libtorch's dispatcher-level mixed precision: matmuls and convolutions in bfloat16, the rest as the
// inputs are; see autocast() for what naslora adds on top).
//
// On a CPU build of libtorch (Debian's) a request for CUDA fails at once, naming why, instead of deep
// inside the first tensor operation.
import { native } from './native.js';

/** What a user asks for. */
export type DeviceSpec = 'cpu' | 'cuda' | 'auto';
export const DEVICE_SPECS: readonly DeviceSpec[] = ['cpu', 'cuda', 'auto'];
/** A concrete device ('cuda:N' once resolved; 'meta' for shape-only tests). */
export type Device = 'cpu' | 'cuda' | 'meta' | `cuda:${number}`;
export type Precision = 'fp32' | 'bf16';
export const PRECISIONS: readonly Precision[] = ['fp32', 'bf16'];

export interface CudaInfo {
  /** The addon was built against a CUDA libtorch (lib/libtorch_cuda.so). */
  build: boolean;
  /** CUDA devices visible now (0 on a CPU build, or without a driver or device). */
  devices: number;
  /** cudaMemory() works (the addon found CUDA's runtime header at build time). */
  memoryStats: boolean;
}

export function cudaInfo(): CudaInfo {
  const i = native.info();
  return { build: i.cudaBuild, devices: native.cudaDeviceCount(), memoryStats: i.cudaMemoryStats };
}

/** True when tensors can go to 'cuda' now. */
export function cudaAvailable(): boolean {
  return native.cudaDeviceCount() > 0;
}

/** Why 'cuda' cannot be used here (null when it can). */
export function cudaUnavailableReason(): string | null {
  const c = cudaInfo();
  if (c.devices > 0) return null;
  const version = native.info().version;
  if (!c.build) {
    return `this libtorch has no CUDA (a CPU build: libtorch ${version}); rebuild the addon against a CUDA libtorch ` +
      '(LIBTORCH=<libtorch or pip torch folder> npm run build:native; README, "GPU") or use --device cpu';
  }
  return `this CUDA libtorch (${version}) sees no CUDA device (no driver, no GPU, or CUDA_VISIBLE_DEVICES hides them); use --device cpu`;
}

export interface ResolveOptions {
  /** Data-parallel: this process's index on its machine (its GPU), and how many processes share the machine. */
  localRank?: number;
  localWorldSize?: number;
  /** Names the setting in errors (e.g. '--device', 'runtime.device'). */
  what?: string;
}

/**
 * A device spec → the device to compute on: 'cpu', or 'cuda:<local rank>' (one GPU per process).
 * 'auto' is CUDA when the engine reports a device (and, data-parallel, one per local process), else
 * the CPU. 'cuda' where there is none throws at once, saying why.
 */
export function resolveDevice(spec: string, o: ResolveOptions = {}): 'cpu' | `cuda:${number}` {
  const what = o.what ?? 'device';
  if (!(DEVICE_SPECS as readonly string[]).includes(spec)) throw new Error(`${what} must be one of ${DEVICE_SPECS.join(', ')}, not '${spec}'`);
  if (spec === 'cpu') return 'cpu';
  const local = o.localRank ?? 0;
  const perMachine = o.localWorldSize ?? 1;
  const n = native.cudaDeviceCount();
  if (spec === 'auto') return n > 0 && perMachine <= n && local < n ? `cuda:${local}` : 'cpu';
  const why = cudaUnavailableReason();
  if (why) throw new Error(`${what} cuda: ${why}`);
  if (local >= n) throw new Error(`${what} cuda: this process has local rank ${local}, but only ${n} CUDA device(s) are visible (one GPU per process: start at most ${n} processes per machine)`);
  return `cuda:${local}`;
}

/** Makes device `index` this process's current CUDA device (what a bare 'cuda' means; NCCL's device). */
export function setCudaDevice(index: number): void {
  native.setCudaDevice(index);
}

/** The device index of 'cuda:N' ('cuda' is 0), or null for other devices. */
export function cudaIndex(device: string): number | null {
  if (device === 'cuda') return 0;
  const m = /^cuda:(\d+)$/.exec(device);
  return m ? Number(m[1]) : null;
}

export interface CudaMemory { allocated: number; peak: number; reserved: number }

/** The CUDA caching allocator's bytes on a device; null where the addon was built without them. */
export function cudaMemory(device: string | number = 0): CudaMemory | null {
  const i = typeof device === 'number' ? device : cudaIndex(device);
  if (i === null) throw new Error(`cudaMemory: '${device}' is not a CUDA device`);
  return native.cudaMemory(i);
}

export function resetCudaPeakMemory(device: string | number = 0): boolean {
  const i = typeof device === 'number' ? device : cudaIndex(device);
  if (i === null) throw new Error(`resetCudaPeakMemory: '${device}' is not a CUDA device`);
  return native.cudaResetPeak(i);
}

// ---------------------------------------------------------------------------------------------
// Autocast.

const BF16 = 15;  // ScalarType::BFloat16
let depth = 0;

/** True inside autocast() with bf16 (the policy in tensor.ts / functional.ts then keeps softmax, norms in fp32). */
export function autocastActive(): boolean {
  return depth > 0;
}

/**
 * Runs fn with mixed precision when precision is 'bf16' (fp32: fn as is). libtorch's autocast runs
 * matmuls and convolutions (linear, conv, bmm, matmul, einsum's products, SDPA) in bfloat16 on the
 * device's type; parameters stay float32 (the casts are differentiable, so gradients reach the fp32
 * master weights). libtorch 1.13's CPU autocast leaves softmax and layer_norm in whatever dtype they
 * are given, so naslora's own ops complete the policy while autocast is on: softmax / log_softmax
 * compute in fp32, layer norms (F.layerNorm, LayerNorm2d) take fp32 input, and models return fp32
 * logits for the loss (losses and metrics are computed outside, in fp32). Nested calls are allowed;
 * the cache of cast weights is cleared when the outermost one ends (weights change between steps).
 * Run backward() outside, as with torch.autocast.
 */
export function autocast<T>(o: { device: string; precision: Precision }, fn: () => T): T {
  if (o.precision === 'fp32') return fn();
  if (o.precision !== 'bf16') throw new Error(`precision must be one of ${PRECISIONS.join(', ')}, not '${String(o.precision)}'`);
  const type = o.device === 'cpu' ? 'cpu' : cudaIndex(o.device) !== null ? 'cuda' : null;
  if (type === null) return fn();  // meta (shape tests): no autocast there
  const [wasOn, wasDtype] = native.setAutocast(type, true, BF16);
  depth++;
  try {
    const r = fn();
    if (r instanceof Promise) throw new Error('autocast(): fn must be synchronous');
    return r;
  } finally {
    depth--;
    native.setAutocast(type, wasOn, wasDtype);
    if (depth === 0) native.autocastClearCache();
  }
}
