// Engine runtime settings: OpenBLAS's thread pool follows libtorch's intra-op thread count (its idle
// workers spin on sched_yield(), which was most of the demo's system time), unless the user pins it.
// The time itself is a benchmark row (`naslora bench cpu`), not a test.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const here = path.dirname(fileURLToPath(import.meta.url));
const CLI = path.join(path.resolve(here, '../..'), 'dist/src/cli/main.js');

function doctor(env: NodeJS.ProcessEnv): { threads: number; blasThreads: number; blasFollowsIntraOp: boolean; blas: { kind: string } } {
  const r = spawnSync(process.execPath, [CLI, 'doctor', '--json'], { encoding: 'utf8', env });
  assert.equal(r.status, 0, r.stderr);
  return JSON.parse(r.stdout);
}

test('OpenBLAS threads follow the intra-op threads unless OPENBLAS_NUM_THREADS is set', (t) => {
  const env = { ...process.env };
  delete env.OPENBLAS_NUM_THREADS;
  delete env.GOTO_NUM_THREADS;
  delete env.NASLORA_THREADS;
  const d = doctor(env);
  if (d.blas.kind !== 'openblas') { t.skip(`BLAS is ${d.blas.kind}, not OpenBLAS`); return; }
  assert.equal(d.blasFollowsIntraOp, true);
  assert.equal(d.blasThreads, d.threads);
  const two = doctor({ ...env, NASLORA_THREADS: '2' });
  assert.equal(two.threads, 2);
  assert.equal(two.blasThreads, 2, 'NASLORA_THREADS moves the BLAS threads too');
  const one = doctor({ ...env, NASLORA_THREADS: '1' });
  assert.equal(one.blasThreads, 1);
  // OpenBLAS caps its count at the number of cores: pin 2 while libtorch runs 1.
  if (os.cpus().length < 2) return;
  const pinned = doctor({ ...env, NASLORA_THREADS: '1', OPENBLAS_NUM_THREADS: '2' });
  assert.equal(pinned.blasFollowsIntraOp, false);
  assert.equal(pinned.blasThreads, 2, 'a user-set OPENBLAS_NUM_THREADS is kept');
});
