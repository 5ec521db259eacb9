// Data-parallel communication: PyTorch's c10d (a TCPStore for rendezvous, Gloo or NCCL process
// groups) bound in native/dist.cc.
//
// One process per rank. Every rank opens a Store on the master's host:port (rank 0 is usually the
// master, and listens there), then a ProcessGroup over it; the group's constructor returns once all
// ranks have joined. Collectives are called in the same order on every rank.
//
// Why everything is synchronous: a data-parallel step cannot go on before its gradients are
// reduced, so a collective that returns when done (and throws when it cannot be done) keeps the
// trainer's control flow and tensor lifetimes plain. Nothing waits forever: each call is bounded by
// the group's timeout (or the call's `timeoutMs`). A dead peer closes its sockets and the next
// collective throws at once ("Connection closed by peer"); a peer that is alive but never joins
// makes it throw after the timeout. Either way the Error names the operation, this rank, the
// backend and the timeout, followed by c10d's own text. After such an error the group is broken
// (the ranks no longer agree on where they are): close it, and end or restart the run.
//
// Measured on a shared 2-core machine, loopback, 2 ranks, Gloo (libtorch 1.13.1): an allreduce of
// 1M float32 (4 MB) takes a median of 3-5.7 ms (min ~2.2 ms, max ~10 ms; medians up to ~9 ms when
// the machine is busy), and one of 256 floats ~0.22 ms (the fixed cost of a call); test/dist.test.ts
// prints both on every run. So a bucket of B bytes costs roughly 0.25 ms + B / (~1 GB/s): buckets
// of 1 MB and up keep the fixed cost to a fifth or less.
//
// The nccl backend is compiled only for a CUDA libtorch whose NCCL/CUDA headers were found at build
// time (native/torch-paths.cjs); it has not been run on a GPU yet. On a CPU build asking for it
// throws "this libtorch has no NCCL (a CPU build)".
import { native } from './native.js';
import { Tensor } from './tensor.js';

/** gloo: CPU tensors (any libtorch). nccl: CUDA tensors (a CUDA libtorch built with NCCL). */
export type DistBackend = 'gloo' | 'nccl';
/** 'avg' is a sum divided by the world size afterwards (Gloo has no AVG), so floating tensors only. */
export type ReduceOp = 'sum' | 'avg' | 'max' | 'min';

/** Which backends this build of the addon offers (nccl: also needs a visible CUDA device). */
export function distBackends(): { gloo: boolean; nccl: boolean } {
  return native.distInfo();
}

/** PyTorch's default is 30 min; 5 min still covers a slow first step, and fails a stuck run sooner. */
export const DIST_DEFAULT_TIMEOUT_MS = 300_000;

export interface StoreOptions {
  /** The master's address (the master binds it): '127.0.0.1' for one machine. */
  host: string;
  /** The master's port; 0 on the master picks a free one (read it back from `store.port`). */
  port: number;
  /** Number of ranks that will connect (the master counts itself). */
  worldSize: number;
  /** True on exactly one rank: it runs the store's server. */
  isMaster: boolean;
  /** Bound on connecting and on every get/wait (default DIST_DEFAULT_TIMEOUT_MS). */
  timeoutMs?: number;
  /**
   * Master only: the constructor returns when all worldSize ranks have connected (default true).
   * False lets the master go on at once (e.g. to tell the others its port).
   */
  waitForWorkers?: boolean;
}

// Safety nets for objects dropped without close(): release the native side when collected.
const storeFinalizer = new FinalizationRegistry<number>((id) => { native.storeClose(id); });
const groupFinalizer = new FinalizationRegistry<number>((id) => { native.pgClose(id); });

/**
 * A c10d TCPStore: a small key-value store on the master that every rank reaches over TCP. Used for
 * the process group's rendezvous, and by the launcher/trainer for its own handshakes (a counter
 * with add(), a value set by one rank and read by all with get()).
 *
 * The master's store must stay open (and its process alive) while any rank uses it: the process
 * groups made over it keep it open on this rank until they are closed too.
 */
export class Store {
  readonly host: string;
  readonly worldSize: number;
  readonly isMaster: boolean;
  readonly timeoutMs: number;
  #id: number;

  /** Connects (and on the master, listens); blocks for at most timeoutMs. */
  constructor(opts: StoreOptions) {
    const timeoutMs = opts.timeoutMs ?? DIST_DEFAULT_TIMEOUT_MS;
    // Clients always check in (c10d counts them in a key); only the master may skip waiting for that count.
    this.#id = native.storeCreate(opts.host, opts.port, opts.worldSize, opts.isMaster, timeoutMs,
      !opts.isMaster || (opts.waitForWorkers ?? true));
    this.host = opts.host;
    this.worldSize = opts.worldSize;
    this.isMaster = opts.isMaster;
    this.timeoutMs = timeoutMs;
    storeFinalizer.register(this, this.#id, this);
  }

  /** The native id; throws after close(). */
  get id(): number {
    if (Number.isNaN(this.#id)) throw new Error('store used after close');
    return this.#id;
  }

  get closed(): boolean { return Number.isNaN(this.#id); }

  /** The port the master listens on (the one picked, when it was created with port 0). */
  get port(): number { return native.storePort(this.id); }

  /** Sets key to a string (stored as UTF-8) or to bytes. */
  set(key: string, value: string | Uint8Array): void { native.storeSet(this.id, key, value); }

  /** The key's value as UTF-8 text, waiting for some rank to set it (at most timeoutMs, default the store's). */
  get(key: string, timeoutMs?: number): string {
    return Buffer.from(this.getBytes(key, timeoutMs)).toString('utf8');
  }

  /** get() as raw bytes. */
  getBytes(key: string, timeoutMs?: number): Uint8Array { return native.storeGet(this.id, key, timeoutMs); }

  /** Atomically adds n to the integer at key (a missing key counts as 0); returns the new value. */
  add(key: string, n: number): number { return native.storeAdd(this.id, key, n); }

  /** Whether all keys are set now (does not wait). */
  check(keys: readonly string[]): boolean { return native.storeCheck(this.id, keys); }

  /** Returns when all keys are set; throws after timeoutMs (default the store's). */
  wait(keys: readonly string[], timeoutMs?: number): void { native.storeWait(this.id, keys, timeoutMs); }

  /** Deletes key; returns whether it was set. */
  delete(key: string): boolean { return native.storeDelete(this.id, key); }

  /** Number of keys in the store (c10d's own rendezvous keys included). */
  numKeys(): number { return native.storeNumKeys(this.id); }

  /** Releases this rank's handle (idempotent). On the master the server stops when no group uses it. */
  close(): void {
    if (Number.isNaN(this.#id)) return;
    storeFinalizer.unregister(this);
    native.storeClose(this.#id);
    this.#id = NaN;
  }
}

export interface ProcessGroupOptions {
  /** Default 'gloo'. */
  backend?: DistBackend;
  /** Bound on the rendezvous and, by default, on every collective (default DIST_DEFAULT_TIMEOUT_MS). */
  timeoutMs?: number;
  /**
   * Gloo: the address this rank's connections bind to ('127.0.0.1' for one machine), or `iface` a
   * network interface ('lo', 'eth0'). Neither: GLOO_SOCKET_IFNAME if set, else the address the
   * machine's hostname resolves to (loopback if it does not resolve).
   */
  host?: string;
  iface?: string;
  /**
   * Key prefix in the store. Default 'pg<n>' for the n-th group made over this Store, so groups made
   * in the same order on every rank meet without naming them.
   */
  name?: string;
}

export interface CollectiveOptions {
  /** Bound for this call (default the group's timeoutMs). */
  timeoutMs?: number;
}

/**
 * A c10d process group (ProcessGroupGloo, or ProcessGroupNCCL on a CUDA build): the collectives of
 * data-parallel training. Each call blocks until this rank's part is done, then returns; it throws
 * a JS Error when a peer died or did not join within the timeout (see the top of this file).
 *
 * Tensors: Gloo takes CPU tensors, NCCL CUDA ones; every rank passes the same shape and dtype
 * (float32, float64 and int64 are tested; Gloo also takes the other integer and half types).
 * In-place calls (allreduce, broadcast) write into the given tensor, a non-contiguous view
 * included (through a contiguous copy); autograd does not see these writes, as in PyTorch.
 */
export class ProcessGroup {
  readonly rank: number;
  readonly worldSize: number;
  readonly backend: DistBackend;
  readonly timeoutMs: number;
  #id: number;

  /**
   * Joins the group as `rank` of `worldSize` (0 <= rank < worldSize), meeting the other ranks through
   * `store`: returns when all have joined, throws after opts.timeoutMs.
   */
  constructor(store: Store, rank: number, worldSize: number, opts: ProcessGroupOptions = {}) {
    const backend = opts.backend ?? 'gloo';
    const timeoutMs = opts.timeoutMs ?? DIST_DEFAULT_TIMEOUT_MS;
    this.#id = native.pgCreate(store.id, backend, rank, worldSize, timeoutMs, opts.host ?? '', opts.iface ?? '', opts.name ?? '');
    this.rank = rank;
    this.worldSize = worldSize;
    this.backend = backend;
    this.timeoutMs = timeoutMs;
    groupFinalizer.register(this, this.#id, this);
  }

  get #live(): number {
    if (Number.isNaN(this.#id)) throw new Error('process group used after close');
    return this.#id;
  }

  get closed(): boolean { return Number.isNaN(this.#id); }

  /** In place: t becomes the elementwise reduction of every rank's t ('avg': sum ÷ worldSize). */
  allreduce(t: Tensor, op: ReduceOp = 'sum', opts: CollectiveOptions = {}): void {
    native.pgAllreduce(this.#live, t.handle, op, opts.timeoutMs);
  }

  /** In place: every rank's t becomes root's t. */
  broadcast(t: Tensor, root: number, opts: CollectiveOptions = {}): void {
    native.pgBroadcast(this.#live, t.handle, root, opts.timeoutMs);
  }

  /**
   * Every rank's t, in rank order, as new tensors owned by the current tidy scope (or by the caller
   * outside one: dispose them). Every rank's t must have the same shape and dtype.
   */
  allgather(t: Tensor, opts: CollectiveOptions = {}): Tensor[] {
    return native.pgAllgather(this.#live, t.handle, opts.timeoutMs).map((h) => new Tensor(h));
  }

  /** Returns when every rank has called barrier() (and this rank's earlier collectives are done). */
  barrier(opts: CollectiveOptions = {}): void {
    native.pgBarrier(this.#live, opts.timeoutMs);
  }

  /**
   * Leaves the group (idempotent). A healthy group's threads and connections are released. After a
   * failed collective, one may still be running in c10d's thread (until Gloo's own timeout, the
   * group's): the native group is then set aside, never destroyed, so that close() returns at once;
   * its threads and sockets stay until the process exits, which is what normally follows.
   */
  close(): void {
    if (Number.isNaN(this.#id)) return;
    groupFinalizer.unregister(this);
    native.pgClose(this.#id);
    this.#id = NaN;
  }
}
