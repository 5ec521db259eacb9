// Child of `naslora bench cpu`: runs `demo --quick` into argv[2] and prints its own resource usage
// as one JSON line (bench/cpu.ts reads the last line of stdout).
import { engineInfo } from '../src/engine/index.js';
import { runDemo } from '../src/train/demo.js';
import { silentProgress } from '../src/train/progress.js';
import type { ChildUsage } from './cpu.js';

const out = process.argv[2];
if (!out) throw new Error('usage: cpu_child.js <out dir>');
const info = engineInfo();
const t0 = process.hrtime.bigint();
await runDemo({ out, quick: true, progress: () => silentProgress });
const wall = Number(process.hrtime.bigint() - t0) / 1e9;
const u = process.resourceUsage();
const r: ChildUsage = {
  wall_s: wall, user_s: u.userCPUTime / 1e6, sys_s: u.systemCPUTime / 1e6, invol_cs: u.involuntaryContextSwitches,
  vol_cs: u.voluntaryContextSwitches, minflt: u.minorPageFault, blas_threads: info.blasThreads, intra_op: info.threads,
};
console.log(JSON.stringify(r));
