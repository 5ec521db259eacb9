// `naslora bench cpu`: where the main job's CPU time goes. `demo --quick` runs in a child process
// (bench/cpu_child.ts), once with the engine's default (OpenBLAS's thread count follows libtorch's
// intra-op count, see native/naslora.cc) and once with one OpenBLAS thread per core (OpenBLAS's own
// default, what naslora ran with before). Each child reports its own getrusage: user and system CPU
// seconds, involuntary context switches (a spinning thread preempted), minor page faults (buffers
// handed back to the OS and faulted in again). Not a PyTorch comparison: torch_ms and ratio are
// empty; `sys_per_user` is the number to watch. On a 2-core machine shared with other work the wall
// times move, the system time and the context switches do not (much): compare those.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { round, type BenchRow } from './common.js';

export interface ChildUsage { wall_s: number; user_s: number; sys_s: number; invol_cs: number; vol_cs: number; minflt: number; blas_threads: number; intra_op: number }

const here = path.dirname(fileURLToPath(import.meta.url));

function runChild(env: NodeJS.ProcessEnv): ChildUsage {
  const out = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-bench-cpu-'));
  try {
    const r = spawnSync(process.execPath, [path.join(here, 'cpu_child.js'), out], { encoding: 'utf8', env, maxBuffer: 64 * 1024 * 1024 });
    if (r.status !== 0) throw new Error(`bench cpu: the demo child failed: ${(r.stderr || '').trim().split('\n').slice(-3).join(' | ')}`);
    const lines = r.stdout.trim().split('\n');
    return JSON.parse(lines[lines.length - 1]!) as ChildUsage;
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}

export function benchCpu(): BenchRow[] {
  const base = { ...process.env };
  delete base.OPENBLAS_NUM_THREADS; // `naslora bench` pins it to 1 for the PyTorch suites; here each run chooses
  delete base.GOTO_NUM_THREADS;
  const runs: Array<[string, NodeJS.ProcessEnv]> = [
    ['demo_quick_blas_follows_intra_op', base],
    ['demo_quick_blas_thread_per_core', { ...base, OPENBLAS_NUM_THREADS: String(os.cpus().length) }],
  ];
  return runs.map(([name, env]) => {
    const u = runChild(env);
    return {
      name, naslora_ms: round(u.wall_s * 1000, 0), torch_ms: null, ratio: null,
      user_s: round(u.user_s, 2), sys_s: round(u.sys_s, 2), sys_per_user: round(u.sys_s / u.user_s, 3),
      invol_cs: u.invol_cs, vol_cs: u.vol_cs, minflt: u.minflt, blas_threads: u.blas_threads, intra_op: u.intra_op,
    };
  });
}
