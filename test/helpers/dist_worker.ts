// One rank of test/dist.test.ts: node dist/test/helpers/dist_worker.js <scenario> <rank> <worldSize> <port>
// Rank 0 hosts the store on 127.0.0.1:<port>. Prints one JSON line ({ rank, ... } or { rank, error })
// on stdout; the test checks the values. Scenarios:
//   basic  store ops, allreduce sum/avg/max (float32, float64, int64, a non-contiguous view),
//          broadcast from rank 1, barrier, allgather; with BENCH=1 also times a 1M-float allreduce
//   exit   rank 1 exits right after joining; the others' allreduce must throw
//   kill   rank 1 says it is ready and waits to be killed (kill -9 by the test); the others start
//          their allreduce when the test writes a line to their stdin
//   hang   rank 1 joins, then sleeps without joining the allreduce; the others' must time out
import * as fs from 'node:fs';
import { ProcessGroup, Store, tensor, tidy, type Tensor } from '../../src/engine/index.js';

const [scenario, rankS, worldS, portS] = process.argv.slice(2);
const rank = Number(rankS);
const world = Number(worldS);
const port = Number(portS);
const TIMEOUT_MS = Number(process.env.DIST_TIMEOUT_MS ?? 20_000);

const out = (o: Record<string, unknown>) => process.stdout.write(JSON.stringify({ rank, ...o }) + '\n');
const sleep = (ms: number) => Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
const arr = (t: Tensor): number[] => Array.from(t.toArray<'float64'>() as ArrayLike<number>);

function join(timeoutMs: number): { store: Store; pg: ProcessGroup } {
  const store = new Store({ host: '127.0.0.1', port, worldSize: world, isMaster: rank === 0, timeoutMs });
  const pg = new ProcessGroup(store, rank, world, { backend: 'gloo', timeoutMs, host: '127.0.0.1' });
  return { store, pg };
}

function basic(): void {
  const { store, pg } = join(TIMEOUT_MS);
  const r: Record<string, unknown> = {};

  // Store: a value set by rank 0, one key per rank, a shared counter.
  if (rank === 0) store.set('greeting', 'hello from rank 0');
  store.set(`rank/${rank}`, new Uint8Array([rank, 200, 7]));
  r.counterAfterMine = store.add('counter', rank + 1);
  const keys = Array.from({ length: world }, (_, i) => `rank/${i}`);
  store.wait(keys);
  r.greeting = store.get('greeting');
  r.rankBytes = keys.map((k) => Array.from(store.getBytes(k)));
  r.checkMissing = store.check(['no-such-key']);
  r.checkAll = store.check(keys);
  pg.barrier();
  r.counter = store.add('counter', 0);

  tidy(() => {
    // Dyadic values: every partial sum is exact, so the results are exact whatever Gloo's order.
    const n = 6;
    const f32 = tensor(new Float32Array(n).map((_, i) => (rank + 1) * (i - 2.25)), [n]);
    pg.allreduce(f32, 'sum');
    r.sum32 = arr(f32);
    const avg32 = tensor(new Float32Array(n).map((_, i) => (rank + 1) * (i - 2.25)), [n]);
    pg.allreduce(avg32, 'avg');
    r.avg32 = arr(avg32);
    r.dtype32 = avg32.dtype;
    const f64 = tensor(new Float64Array(n).map((_, i) => (rank + 1) * (i + 0.125) * 1024), [2, 3]);
    pg.allreduce(f64, 'avg');
    r.avg64 = arr(f64);
    r.dtype64 = f64.dtype;
    const i64 = tensor(new BigInt64Array(3).map((_, i) => BigInt(rank + 1) * (1n << 40n) + BigInt(i)), [3]);
    pg.allreduce(i64, 'sum');
    r.sum64i = Array.from(i64.toArray<'int64'>(), (v) => v.toString());
    const mx = tensor(new Float32Array([rank, -rank]), [2]);
    pg.allreduce(mx, 'max');
    r.max = arr(mx);
    // In place through a non-contiguous view: the base tensor must see the sum.
    const base = tensor(new Float32Array(6).map((_, i) => (rank + 1) * i), [2, 3]);
    pg.allreduce(base.transpose(0, 1), 'sum');
    r.sumView = arr(base);
    // Broadcast from rank 1.
    const b = tensor(new Float32Array(4).map((_, i) => rank * 100 + i), [4]);
    pg.broadcast(b, 1);
    r.bcast = arr(b);
    const g = pg.allgather(tensor(new Float64Array([rank, rank + 0.5]), [2], { dtype: 'float64' }));
    r.gather = g.map(arr);
  });

  // Barrier: rank r arrives r*300 ms late; nobody may leave before the last one arrived.
  sleep(rank * 300);
  r.barrierIn = Date.now();
  pg.barrier();
  r.barrierOut = Date.now();

  if (process.env.BENCH === '1') {
    tidy(() => {
      const big = tensor(new Float32Array(1 << 20).fill(1), [1 << 20]);
      for (let i = 0; i < 3; i++) pg.allreduce(big, 'sum');  // warm up
      const times: number[] = [];
      for (let i = 0; i < 10; i++) {
        const t0 = performance.now();
        pg.allreduce(big, 'sum');
        times.push(performance.now() - t0);
      }
      times.sort((a, b) => a - b);
      r.allreduce1MMs = { median: times[5], min: times[0], max: times[9] };
      // The fixed cost of one call: a 256-float allreduce.
      const small = tensor(new Float32Array(256).fill(1), [256]);
      const st: number[] = [];
      for (let i = 0; i < 50; i++) {
        const t0 = performance.now();
        pg.allreduce(small, 'sum');
        st.push(performance.now() - t0);
      }
      st.sort((a, b) => a - b);
      r.allreduceSmallMs = { median: st[25], min: st[0], max: st[49] };
    });
  }
  pg.barrier();
  pg.close();
  store.close();
  out(r);
}

// A fault: rank 1 goes away (or hangs); the other ranks' next allreduce must throw, in bounded time.
function fault(kind: 'exit' | 'kill' | 'hang'): void {
  const timeoutMs = 3000;
  const { store, pg } = join(TIMEOUT_MS);
  pg.barrier();
  if (rank === 1) {
    if (kind === 'exit') process.exit(0);
    out({ ready: true });
    sleep(kind === 'hang' ? 60_000 : 120_000);  // killed by the test long before
    process.exit(0);
  }
  if (kind === 'exit') sleep(300);  // rank 1 is gone by now
  if (kind === 'kill') {
    // Wait for the test's go (it has killed rank 1 and seen it exit).
    const buf = Buffer.alloc(1);
    while (fs.readSync(0, buf, 0, 1, null) === 1 && buf[0] !== 10) { /* read a line */ }
  }
  const t0 = performance.now();
  try {
    tidy(() => pg.allreduce(tensor(new Float32Array(1024).fill(rank), [1024]), 'sum', { timeoutMs }));
    out({ error: null, ms: performance.now() - t0 });
  } catch (e) {
    const ms = performance.now() - t0;
    // The group is now out of step with its peers: it must refuse further collectives.
    let again = '';
    try { pg.barrier(); } catch (e2) { again = (e2 as Error).message; }
    const c0 = performance.now();
    if (process.env.NO_CLOSE !== '1') pg.close();
    out({ error: (e as Error).message, isError: e instanceof Error, ms, again, closeMs: performance.now() - c0 });
  }
  store.close();
  process.exit(0);
}

// `node --test dist/test/` also runs every file under test/ as a test file: without a scenario this
// is that run, and there is nothing to do.
if (scenario === undefined) process.exit(0);
try {
  if (scenario === 'basic') basic();
  else if (scenario === 'exit' || scenario === 'kill' || scenario === 'hang') fault(scenario);
  else throw new Error(`unknown scenario ${scenario}`);
} catch (e) {
  out({ error: (e as Error).message });
  process.exit(1);
}
