// Data-parallel training on PyTorch's c10d (a TCPStore rendezvous and a Gloo process group on the
// CPU, an NCCL one when the run computes on CUDA: one GPU per process, cuda:LOCAL_RANK; see
// engine/dist.ts), as torchrun + DistributedDataParallel do it:
//  - every rank builds the same model, then rank 0's weights are broadcast (one source of truth);
//  - each global batch is cut into disjoint per-rank slices (data/loader.ts `shard`);
//  - after backward, the trainable gradients are averaged in flat buckets (one allreduce each);
//    each rank's loss is scaled by its share of the global batch, so the average is the gradient of
//    the global batch's mean loss, also when the last batch does not split evenly;
//  - clipping, the optimizers and the stage switches then run on identical numbers on every rank;
//  - evaluation runs on shards and the per-image rows are gathered, so the means are computed over
//    the same rows, in the same order, as in one process;
//  - rank 0 alone writes files.
// Faults: each rank records its progress in the store before a collective; when a collective fails
// (a peer died: connection closed; or hung: c10d's timeout) the error names the ranks that fell behind.
import { ProcessGroup, Store, noGrad, tidy, cat, cudaIndex, setCudaDevice, zeros, tensor, type Device, type DistBackend, type Module, type Tensor } from '../engine/index.js';

export interface DistEnv {
  rank: number;
  worldSize: number;
  localRank: number;
  localWorldSize: number;
  masterAddr: string;
  masterPort: number;
}

/** torchrun's environment variables (WORLD_SIZE > 1), or null for a single process. */
export function distEnvFromProcess(env: NodeJS.ProcessEnv = process.env): DistEnv | null {
  const world = Number(env.WORLD_SIZE ?? '1');
  if (!(world > 1)) return null;
  const need = (k: string): string => {
    const v = env[k];
    if (v === undefined || v === '') throw new Error(`data-parallel: WORLD_SIZE=${world} but ${k} is not set (set MASTER_ADDR, MASTER_PORT, RANK, LOCAL_RANK as torchrun does, or use --nproc)`);
    return v;
  };
  const int = (k: string, v: string): number => {
    const n = Number(v);
    if (!Number.isInteger(n) || n < 0) throw new Error(`data-parallel: ${k}=${v} is not a non-negative integer`);
    return n;
  };
  const rank = int('RANK', need('RANK'));
  if (rank >= world) throw new Error(`data-parallel: RANK=${rank} must be below WORLD_SIZE=${world}`);
  const port = int('MASTER_PORT', need('MASTER_PORT'));
  if (port < 1 || port > 65535) throw new Error(`data-parallel: MASTER_PORT=${port} is not a TCP port`);
  return {
    rank, worldSize: world, localRank: int('LOCAL_RANK', env.LOCAL_RANK ?? '0'), localWorldSize: int('LOCAL_WORLD_SIZE', env.LOCAL_WORLD_SIZE ?? String(world)),
    masterAddr: need('MASTER_ADDR'), masterPort: port,
  };
}

export interface DataParallelOptions {
  /** Bytes of gradients per allreduce (DDP's bucket_cap_mb; default 25 MB). */
  bucketBytes?: number;
  /** Rendezvous and collective timeout (default 60 s). */
  timeoutMs?: number;
  /**
   * Where this rank computes (default 'cpu'): 'cpu' uses Gloo; 'cuda:N' makes N this process's
   * current CUDA device and uses NCCL (collectives then take tensors on that device).
   */
  device?: Device;
}

export class DataParallel {
  readonly rank: number;
  readonly worldSize: number;
  readonly isMain: boolean;
  readonly bucketBytes: number;
  /** Where the collectives' tensors live ('cpu' with Gloo, 'cuda:N' with NCCL). */
  readonly device: Device;
  readonly backend: DistBackend;
  readonly timeoutMs: number;
  private seq = 0;
  private step = 0;

  private constructor(readonly env: DistEnv, private readonly store: Store, private readonly group: ProcessGroup, o: DataParallelOptions) {
    this.rank = env.rank;
    this.worldSize = env.worldSize;
    this.isMain = env.rank === 0;
    this.bucketBytes = o.bucketBytes ?? 25 * 1024 * 1024;
    this.device = o.device ?? 'cpu';
    this.backend = backendFor(this.device);
    this.timeoutMs = o.timeoutMs ?? 60_000;
  }

  /** Joins the group: rank 0 hosts the store at MASTER_ADDR:MASTER_PORT, the others connect. */
  static join(env: DistEnv, o: DataParallelOptions = {}): DataParallel {
    const timeoutMs = o.timeoutMs ?? 60_000;
    let store: Store;
    try {
      store = new Store({ host: env.masterAddr, port: env.masterPort, worldSize: env.worldSize, isMaster: env.rank === 0, timeoutMs });
    } catch (e) {
      throw new Error(`data-parallel rank ${env.rank}: no rendezvous at ${env.masterAddr}:${env.masterPort} within ${timeoutMs / 1000} s (${(e as Error).message})`);
    }
    const device = o.device ?? 'cpu';
    const backend = backendFor(device);
    // NCCL runs on the current CUDA device: this rank's (cuda:LOCAL_RANK), set before the group exists.
    if (backend === 'nccl') setCudaDevice(cudaIndex(device)!);
    let group: ProcessGroup;
    try {
      group = new ProcessGroup(store, env.rank, env.worldSize, { backend, timeoutMs });
    } catch (e) {
      store.close();
      throw new Error(`data-parallel rank ${env.rank}: no ${backend} process group on ${device}: ${(e as Error).message}`);
    }
    return new DataParallel(env, store, group, o);
  }

  /** Runs a collective; on failure, names the ranks that did not get as far as this one. */
  private guard<T>(what: string, f: () => T): T {
    this.seq++;
    try {
      this.store.set(`progress/${this.rank}`, String(this.seq));
    } catch (e) {
      throw this.lost(what, e as Error);
    }
    try {
      return f();
    } catch (e) {
      throw this.lost(what, e as Error);
    }
  }

  /**
   * Who is gone: every rank that sees a collective fail says so in the store at once; the ranks that
   * have not said so within a grace period (a few seconds, at most the timeout) died or hang. Ranks
   * that had not even reached this collective are named as such.
   */
  private lost(what: string, e: Error): Error {
    const gone = (why: string) => new Error(`data-parallel rank ${this.rank}: ${why} during ${what} at step ${this.step}: ${e.message}`);
    try {
      this.store.set(`failed/${this.rank}`, String(this.seq));
      const others = Array.from({ length: this.worldSize }, (_, r) => r).filter((r) => r !== this.rank);
      const grace = Math.min(this.timeoutMs, 5000);
      const until = Date.now() + grace;
      let silent = others;
      while (silent.length && Date.now() < until) {
        silent = silent.filter((r) => !this.store.check([`failed/${r}`]));
        if (silent.length) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, 100);
      }
      if (!silent.length) return gone('a collective failed on every rank (no rank was lost)');
      const behind = silent.filter((r) => {
        const key = `progress/${r}`;
        return !this.store.check([key]) || Number(this.store.get(key)) < this.seq;
      });
      const names = silent.map((r) => `rank ${r}`).join(', ');
      return gone(`lost ${names} (died or hung: no word from it within ${grace / 1000} s of the failure${behind.length ? `; ${behind.map((r) => `rank ${r}`).join(', ')} never reached this ${what}` : ''})`);
    } catch {
      // The store lives in rank 0's process: without it, rank 0 is the one that is gone.
      return gone('lost rank 0 (it hosts the rendezvous store)');
    }
  }


  setStep(step: number): void { this.step = step; }

  /** Rank 0's parameters (and buffers) to every rank. */
  broadcastModule(m: Module): void {
    this.guard('broadcast of the initial weights', () => noGrad(() => {
      for (const [, p] of m.namedParameters()) this.group.broadcast(p, 0);
    }));
  }

  /**
   * Averages the gradients of params across ranks, in buckets of about bucketBytes (one allreduce
   * each), and sums `extras` (loss terms, counts) alongside. A parameter with a gradient on no rank
   * keeps none (the optimizers skip it, as in one process); one with a gradient on some ranks gets
   * the average with zeros for the others.
   */
  reduceGradients(params: readonly Tensor[], extras: readonly number[] = []): number[] {
    return this.guard('gradient allreduce', () => noGrad(() => {
      const grads = params.map((p) => p.grad);
      try {
        // Which parameters have a gradient anywhere, and the extras: one small float64 allreduce.
        const head = tensor(new Float64Array([...grads.map((g) => (g ? 1 : 0)), ...extras]), [grads.length + extras.length], { dtype: 'float64', device: this.device });
        this.group.allreduce(head, 'sum');
        const summed = head.toArray<'float64'>() as Float64Array;
        head.dispose();
        const any = params.map((_, i) => summed[i]! > 0);
        const idx = params.map((_, i) => i).filter((i) => any[i]);
        let start = 0;
        while (start < idx.length) {
          let bytes = 0;
          let end = start;
          while (end < idx.length && (end === start || bytes + params[idx[end]!]!.numel * 4 <= this.bucketBytes)) bytes += params[idx[end++]!]!.numel * 4;
          const members = idx.slice(start, end);
          tidy(() => {
            const flat = cat(members.map((i) => (grads[i] ?? zeros(params[i]!.shape, { device: this.device })).flatten()));
            this.group.allreduce(flat, 'avg');
            let off = 0;
            for (const i of members) {
              const n = params[i]!.numel;
              const v = flat.narrow(0, off, n).view(...params[i]!.shape);
              if (grads[i]) grads[i]!.copy_(v);
              else params[i]!.grad = v.clone();
              off += n;
            }
          });
          start = end;
        }
        return Array.from(summed.subarray(grads.length));
      } finally {
        for (const g of grads) g?.dispose();
      }
    }));
  }

  /** Sums a tensor across ranks in place (no autograd). */
  allreduceSum(t: Tensor): void {
    this.guard('allreduce', () => this.group.allreduce(t, 'sum'));
  }

  /** Every rank's value (JSON through the store), in rank order, on every rank. */
  gather<T>(tag: string, value: T): T[] {
    return this.guard(`gather of ${tag}`, () => {
      const key = (r: number) => `gather/${this.seq}/${tag}/${r}`;
      this.store.set(key(this.rank), JSON.stringify(value));
      const out: T[] = [];
      for (let r = 0; r < this.worldSize; r++) out.push(JSON.parse(this.store.get(key(r))) as T);
      this.sync();  // everyone has read: the keys may be reused by a later gather
      return out;
    });
  }

  barrier(what = 'barrier'): void {
    this.guard(what, () => this.sync());
  }

  /**
   * A barrier. NCCL's own barrier picks its device by guessing from the rank; a one-element allreduce
   * on this rank's device is the same synchronisation without the guess.
   */
  private sync(): void {
    if (this.backend === 'gloo') {
      this.group.barrier();
      return;
    }
    const t = zeros([1], { device: this.device });
    try {
      this.group.allreduce(t, 'sum');
      t.item();  // the CPU waits for the device
    } finally {
      t.dispose();
    }
  }

  close(): void {
    this.group.close();
    this.store.close();
  }
}

/** The process-group backend for a rank's device: Gloo on the CPU, NCCL on CUDA. */
export function backendFor(device: string): DistBackend {
  if (device === 'cpu') return 'gloo';
  if (cudaIndex(device) !== null) return 'nccl';
  throw new Error(`data-parallel: no process-group backend for device '${device}' (cpu: gloo, cuda: nccl)`);
}

let joined: DataParallel | null | undefined;

/**
 * This process's place in a data-parallel group, joined once (a compare's runs reuse it): from
 * torchrun's variables (set by `--nproc`/`--nnodes`, or by torchrun itself), with the timeout and
 * bucket size from NASLORA_DIST_TIMEOUT_S and NASLORA_DIST_BUCKET_MB; null in a single process.
 * `device` (this rank's, default 'cpu') picks the backend: Gloo for the CPU, NCCL for CUDA. A later
 * call asking for another device than the group was joined with is an error.
 */
export function processDist(o: { device?: Device } = {}): DataParallel | null {
  if (joined !== undefined) {
    if (joined && o.device !== undefined && o.device !== joined.device)
      throw new Error(`data-parallel: this process joined its group on ${joined.device} (${joined.backend}); a run asking for ${o.device} cannot use it (give every run of a compare the same runtime.device)`);
    return joined;
  }
  const env = distEnvFromProcess();
  const num = (k: string, dflt: number): number => {
    const v = process.env[k];
    if (v === undefined || v === '') return dflt;
    const n = Number(v);
    if (!(n > 0)) throw new Error(`${k}=${v}: expected a positive number`);
    return n;
  };
  joined = env ? DataParallel.join(env, { timeoutMs: num('NASLORA_DIST_TIMEOUT_S', 60) * 1000, bucketBytes: num('NASLORA_DIST_BUCKET_MB', 25) * 1024 * 1024, device: o.device }) : null;
  return joined;
}
