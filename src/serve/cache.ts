// The server's memory: decoded images and image embeddings, each bounded by a byte budget and
// evicted least-recently-used first. Embeddings are native tensors: evicting one disposes it, so
// the budget holds for native memory too. A request for an embedding being computed waits for that
// computation (single flight) instead of starting another.
import type { Tensor } from '../engine/index.js';

/** A map with a byte budget, least-recently-used first out. */
export class LruBytes<V> {
  private readonly map = new Map<string, { value: V; bytes: number }>();
  bytes = 0;
  constructor(readonly budget: number, private readonly onEvict: (v: V) => void = () => undefined) {}

  get(key: string): V | undefined {
    const e = this.map.get(key);
    if (!e) return undefined;
    this.map.delete(key);
    this.map.set(key, e);  // most recent last
    return e.value;
  }

  has(key: string): boolean { return this.map.has(key); }

  /** Inserts (replacing), then evicts the oldest entries while over budget (never the new one). */
  set(key: string, value: V, bytes: number): void {
    this.delete(key);
    this.map.set(key, { value, bytes });
    this.bytes += bytes;
    for (const [k, e] of this.map) {
      if (this.bytes <= this.budget || k === key) break;
      this.map.delete(k);
      this.bytes -= e.bytes;
      this.onEvict(e.value);
    }
  }

  delete(key: string): void {
    const e = this.map.get(key);
    if (!e) return;
    this.map.delete(key);
    this.bytes -= e.bytes;
    this.onEvict(e.value);
  }

  get size(): number { return this.map.size; }

  clear(): void { for (const k of [...this.map.keys()]) this.delete(k); }
}

export interface StoredImage { id: string; rgb: Uint8Array; width: number; height: number }

export interface Embedding {
  features: Tensor;
  originalSize: [number, number];
  inputSize: [number, number];
  /** Requests using it now: an evicted embedding is freed when the last one ends. */
  users: number;
  evicted: boolean;
}

/** Embeddings by (image, adapter), with single-flight computation. */
export class EmbeddingCache {
  private readonly lru: LruBytes<Embedding>;
  private readonly pending = new Map<string, Promise<Embedding> & { waiting: { n: number } }>();
  hits = 0;
  misses = 0;

  constructor(budget: number) {
    this.lru = new LruBytes<Embedding>(budget, (e) => {
      e.evicted = true;
      if (e.users === 0) e.features.dispose();
    });
  }

  static key(imageId: string, adapter: string): string { return `${imageId}\u0000${adapter}`; }

  get bytes(): number { return this.lru.bytes; }
  get size(): number { return this.lru.size; }

  /**
   * The embedding, computed by `compute` on a miss (once, however many requests ask at the same
   * time); `use` runs with it held, so eviction cannot free it meanwhile.
   */
  async with<T>(key: string, compute: () => Promise<Embedding>, use: (e: Embedding) => T | Promise<T>): Promise<T> {
    let e = this.lru.get(key);
    if (e) {
      this.hits++;
      e.users++;  // held from here: no await between the lookup and the hold
    } else {
      let p = this.pending.get(key);
      if (!p) {
        this.misses++;
        const waiting = { n: 0 };
        // Every request waiting for this computation holds the result from the moment it exists,
        // before the insertion below can evict anything.
        p = Object.assign(compute().then((x) => {
          x.users += waiting.n;
          this.lru.set(key, x, x.features.numel * 4);
          return x;
        }).finally(() => this.pending.delete(key)), { waiting });
        this.pending.set(key, p);
      } else this.hits++;
      (p as Promise<Embedding> & { waiting: { n: number } }).waiting.n++;
      e = await p;
    }
    try {
      return await use(e);
    } finally {
      e.users--;
      if (e.evicted && e.users === 0 && !e.features.isDisposed) e.features.dispose();
    }
  }

  clear(): void { this.lru.clear(); }
}
