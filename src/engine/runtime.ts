// Process-wide engine settings: threads, seeding, memory accounting, build information.
import * as fs from 'node:fs';
import { native, type NativeMemory } from './native.js';
import { hasOp, randn, tidy } from './tensor.js';
import { cudaInfo, type CudaInfo } from './device.js';

export function setNumThreads(n: number): void { native.setNumThreads(n); }
export function getNumThreads(): number { return native.getNumThreads(); }

// Intra-op threads: libtorch's own default unless NASLORA_THREADS says otherwise. (On the 2-core
// machines here libtorch picks 1, and forcing 2 made small-model training steps 2.5x slower:
// OpenMP fork/join costs more than the tiny kernels gain.) OpenBLAS's thread count follows the
// intra-op count (native/naslora.cc) unless OPENBLAS_NUM_THREADS is set: its idle workers spin on
// sched_yield(), which cost the demo as much system time as half its user time.
if (process.env.NASLORA_THREADS) native.setNumThreads(Number(process.env.NASLORA_THREADS));

/** Seeds libtorch's generators (CPU and CUDA). */
export function manualSeed(seed: number): void { native.manualSeed(seed); }

/** Live tensor handles held by JS, and exact live/peak bytes of libtorch's CPU allocations. */
export function memory(): NativeMemory { return native.memory(); }
export function resetPeakMemory(): void { native.resetPeak(); }

export interface EngineInfo {
  libtorch: string;
  buildType: string;
  debugBuild: boolean;
  blas: { library: string; kind: 'openblas' | 'mkl' | 'reference' | 'blis' | 'unknown' };
  threads: number;
  /** OpenBLAS threads (-1: another BLAS), and whether they follow `threads` (no OPENBLAS_NUM_THREADS set). */
  blasThreads: number;
  blasFollowsIntraOp: boolean;
  devices: string[];
  /** CUDA: a CUDA build of libtorch, visible devices, allocator statistics available. */
  cuda: CudaInfo;
  /** aten::scaled_dot_product_attention is there (libtorch 2.x): SAM's encoder attention uses it. */
  sdpa: boolean;
  mallocTuned: boolean;
  parallel: string;
}

/** What the engine runs on; BLAS is read from the libraries actually mapped after a matmul. */
export function engineInfo(): EngineInfo {
  const i = native.info();
  tidy(() => { const a = randn([64, 64]); a.matmul(a); });
  let library = '';
  try {
    const maps = fs.readFileSync('/proc/self/maps', 'utf8').split('\n');
    library = maps.map((l) => l.split(/\s+/).pop() ?? '').find((p) => /blas|mkl|blis/i.test(p)) ?? '';
  } catch { /* not Linux */ }
  const kind = /openblas/i.test(library) ? 'openblas' : /mkl/i.test(library) ? 'mkl' : /blis/i.test(library) ? 'blis'
    : /\/blas\/libblas|libblas\.so/.test(library) ? 'reference' : 'unknown';
  const buildType = /BUILD_TYPE=(\w+)/.exec(i.config)?.[1] ?? 'unknown';
  return {
    libtorch: i.version, buildType, debugBuild: /^Debug$/i.test(buildType),
    blas: { library, kind }, threads: native.getNumThreads(), blasThreads: i.blasThreads, blasFollowsIntraOp: i.blasFollowsIntraOp,
    devices: i.cudaAvailable ? ['cpu', 'cuda'] : ['cpu'], cuda: cudaInfo(), sdpa: hasOp('aten::scaled_dot_product_attention'),
    mallocTuned: i.mallocTuned, parallel: i.parallel,
  };
}
