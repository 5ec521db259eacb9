// Engine-independent tensor records: what checkpoint readers produce and writers consume.
// Bytes are little-endian and row-major (contiguous); `read()` lets a loader pull one tensor at a
// time from a large file instead of holding the whole checkpoint in memory twice.

// The element types are the engine's (engine/dtype.ts has no runtime dependencies, so readers and
// writers here still work without the native addon).
import { DTYPE_BYTES, type DType } from '../engine/dtype.js';

export { DTYPE_BYTES, type DType };

export interface RawTensor {
  dtype: DType;
  shape: number[];
  /** Contiguous little-endian bytes, numel(shape) * DTYPE_BYTES[dtype] long. */
  data: Uint8Array;
}

export interface LazyTensor {
  dtype: DType;
  shape: number[];
  /** Reads (and copies into a fresh buffer) the contiguous bytes of this tensor. */
  read(): Uint8Array;
}

export function numel(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

export function byteLength(t: { dtype: DType; shape: readonly number[] }): number {
  return numel(t.shape) * DTYPE_BYTES[t.dtype];
}

/** A named collection of lazily readable tensors, e.g. an opened checkpoint. */
export interface TensorSource {
  readonly format: 'safetensors' | 'pth';
  readonly metadata: Record<string, string>;
  keys(): string[];
  get(name: string): LazyTensor | undefined;
  close(): void;
}

/** Reads every tensor of a source into memory (small checkpoints; large ones: read lazily). */
export function readAll(src: TensorSource): Map<string, RawTensor> {
  return new Map(src.keys().map((k) => {
    const t = src.get(k)!;
    return [k, { dtype: t.dtype, shape: t.shape, data: t.read() }];
  }));
}
