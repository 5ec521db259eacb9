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

export interface NativeMemory { liveTensors: number; liveBytes: number; peakBytes: number; liveAllocations: number }
export interface NativeInfo {
  version: string; config: string; parallel: string; cudaAvailable: boolean; mallocTuned: boolean;
  /** OpenBLAS's thread count (-1: not OpenBLAS); follows the intra-op count unless OPENBLAS_NUM_THREADS / GOTO_NUM_THREADS is set. */
  blasThreads: number; blasFollowsIntraOp: boolean;
}

export interface NativeEngine {
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
