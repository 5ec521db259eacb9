// Loads the libtorch addon (build/Release/naslora.node) and types its surface.
import { createRequire } from 'node:module';
import * as path from 'node:path';
import * as fs from 'node:fs';
import { fileURLToPath } from 'node:url';

/** A tensor handle: generation * 2^22 + slot in the addon's handle table. */
export type Handle = number;
/** What an operator call returns, before wrapping. */
export type NativeResult = Handle | number | boolean | string | null | NativeResult[];
export type NativeArg = Handle | number | boolean | string | null | undefined | NativeArg[];

export interface NativeMemory {
  liveTensors: number; liveBytes: number; peakBytes: number; liveAllocations: number;
  /** glibc, all arenas: bytes malloc has handed out and not had back (libtorch, Node's buffers, libvips…), and bytes it holds from the OS; -1 without glibc ≥ 2.33. */
  mallocInUse: number; mallocHeld: number;
}
export interface NativeInfo {
  version: string; config: string; parallel: string; cudaAvailable: boolean; mallocTuned: boolean;
  /** Built against a CUDA libtorch; its caching allocator's statistics compiled in. */
  cudaBuild: boolean; cudaMemoryStats: boolean;
  /** OpenBLAS's thread count (-1: not OpenBLAS); follows the intra-op count unless OPENBLAS_NUM_THREADS / GOTO_NUM_THREADS is set. */
  blasThreads: number; blasFollowsIntraOp: boolean;
}

/** native/dist.cc: c10d stores and process groups, held by id (see src/engine/dist.ts). */
export interface NativeDist {
  storeCreate(host: string, port: number, worldSize: number, isMaster: boolean, timeoutMs: number, waitForWorkers: boolean): number;
  storePort(store: number): number;
  storeSet(store: number, key: string, value: string | Uint8Array): void;
  storeGet(store: number, key: string, timeoutMs?: number): Uint8Array;
  storeAdd(store: number, key: string, n: number): number;
  storeCheck(store: number, keys: readonly string[]): boolean;
  storeWait(store: number, keys: readonly string[], timeoutMs?: number): void;
  storeDelete(store: number, key: string): boolean;
  storeNumKeys(store: number): number;
  storeClose(store: number): boolean;
  pgCreate(store: number, backend: string, rank: number, worldSize: number, timeoutMs: number, host: string, iface: string, name: string): number;
  pgAllreduce(pg: number, t: Handle, op: string, timeoutMs?: number): void;
  pgBroadcast(pg: number, t: Handle, root: number, timeoutMs?: number): void;
  pgAllgather(pg: number, t: Handle, timeoutMs?: number): Handle[];
  pgBarrier(pg: number, timeoutMs?: number): void;
  pgClose(pg: number): boolean;
  distInfo(): { gloo: boolean; nccl: boolean };
}

export interface NativeEngine extends NativeDist {
  opLookup(name: string, overload: string): number;
  call(op: number, ...args: NativeArg[]): NativeResult;
  callVoid(op: number, ...args: NativeArg[]): void;
  release(h: Handle): boolean;
  fromBuffer(data: ArrayBufferView, shape: readonly number[], dtype: number): Handle;
  toBuffer(h: Handle): ArrayBuffer;
  meta(h: Handle): [number[], number, string, boolean];
  shape(h: Handle): number[];
  setRequiresGrad(h: Handle, on: boolean): void;
  grad(h: Handle): Handle | null;
  setGrad(h: Handle, g: Handle | null): void;
  backward(h: Handle, grad: Handle | null, retainGraph: boolean): void;
  setGradEnabled(on: boolean): boolean;
  isGradEnabled(): boolean;
  manualSeed(seed: number): void;
  setNumThreads(n: number): void;
  getNumThreads(): number;
  memory(): NativeMemory;
  resetPeak(): void;
  info(): NativeInfo;
  /** `t.data = d`: t keeps its identity (handle, requires_grad) and takes d's data, device and dtype. */
  setData(h: Handle, d: Handle): void;
  cudaDeviceCount(): number;
  setCudaDevice(index: number): void;
  cudaMemory(index: number): { allocated: number; peak: number; reserved: number } | null;
  cudaResetPeak(index: number): boolean;
  /** Enables/disables autocast for 'cpu' or 'cuda' with a lower-precision dtype code; returns [was enabled, was dtype]. */
  setAutocast(deviceType: 'cpu' | 'cuda', enabled: boolean, dtype: number): [boolean, number];
  autocastClearCache(): void;
}

function findAddon(): string {
  const here = path.dirname(fileURLToPath(import.meta.url));
  // src/engine -> repo root, or dist/src/engine -> repo root
  for (const up of ['../..', '../../..']) {
    const p = path.resolve(here, up, 'build/Release/naslora.node');
    if (fs.existsSync(p)) return p;
  }
  throw new Error(
    'naslora: the native engine is not built (build/Release/naslora.node missing). ' +
      'Install libtorch (Debian: apt-get install libtorch-dev libopenblas0-pthread) and run `npm run build:native`.',
  );
}

export const native: NativeEngine = createRequire(import.meta.url)(findAddon()) as NativeEngine;
