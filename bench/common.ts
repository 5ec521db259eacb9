// Shared benchmark plumbing: median timing after warm-up, and running the PyTorch twin script.
import { spawn, spawnSync } from 'node:child_process';
import { createInterface } from 'node:readline';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { getNumThreads, tidy } from '../src/engine/index.js';

export interface BenchRow { name: string; naslora_ms: number; torch_ms: number | null; ratio: number | null; [k: string]: number | string | null }

export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m] : (s[m - 1] + s[m]) / 2;
}

/** Median milliseconds of fn over `runs` runs after `warmup` runs; each run is its own tidy scope. */
export function timeMs(fn: () => unknown, runs = 7, warmup = 2, inner = 1): number {
  for (let i = 0; i < warmup; i++) tidy(() => { for (let j = 0; j < inner; j++) fn(); });
  const ts: number[] = [];
  for (let i = 0; i < runs; i++) {
    const t0 = process.hrtime.bigint();
    tidy(() => { for (let j = 0; j < inner; j++) fn(); });
    ts.push(Number(process.hrtime.bigint() - t0) / 1e6 / inner);
  }
  return median(ts);
}

const here = path.dirname(fileURLToPath(import.meta.url));
/** The bench/ folder in the source tree (the Python scripts are not compiled into dist/). */
export const benchSrcDir = path.basename(path.dirname(here)) === 'dist' ? path.resolve(here, '../../bench') : here;

export const PYTHON = process.env.NASLORA_PYTHON ?? '/usr/bin/python3';

/**
 * Runs bench/<script> with PyTorch at the same thread count and the same malloc tuning naslora
 * applies to itself, and returns its JSON {name: ms}. Null (with a reason on stderr) where
 * PyTorch is unavailable.
 */
export function runTorch(script: string, args: string[] = []): Record<string, number> | null {
  const r = spawnSync(PYTHON, [path.join(benchSrcDir, script), '--threads', String(getNumThreads()), ...args], {
    encoding: 'utf8',
    env: { ...process.env, MALLOC_MMAP_THRESHOLD_: String(32 * 1024 * 1024), MALLOC_TRIM_THRESHOLD_: String(1024 * 1024 * 1024) },
    maxBuffer: 64 * 1024 * 1024,
  });
  if (r.status !== 0) {
    process.stderr.write(`PyTorch comparison unavailable (${PYTHON} ${script}): ${(r.stderr || r.error?.message || '').trim().split('\n').pop()}\n`);
    return null;
  }
  const lines = r.stdout.trim().split('\n');
  return JSON.parse(lines[lines.length - 1]) as Record<string, number>;
}

export function row(name: string, naslora: number, torch: Record<string, number> | null, extra: Record<string, number | string> = {}): BenchRow {
  const t = torch?.[name] ?? null;
  return { name, naslora_ms: round(naslora), torch_ms: t === null ? null : round(t), ratio: t ? round(naslora / t, 3) : null, ...extra };
}

export function round(x: number, d = 4): number {
  const f = 10 ** d;
  return Math.round(x * f) / f;
}

export function printRows(rows: BenchRow[], json: boolean): void {
  if (json) {
    console.log(JSON.stringify({ rows }));
    return;
  }
  const cols = Object.keys(rows.reduce((a, r) => ({ ...a, ...r }), {}));
  const w = cols.map((c) => Math.max(c.length, ...rows.map((r) => String(r[c] ?? '-').length)));
  console.log(cols.map((c, i) => c.padEnd(w[i])).join('  '));
  for (const r of rows) console.log(cols.map((c, i) => String(r[c] ?? '-').padEnd(w[i])).join('  '));
}

/** A PyTorch twin kept running: one request line in, one JSON reply line out. */
export interface Twin<R> { ask: (cmd: string) => Promise<R>; close: () => void }

/**
 * bench/<script> as a server: it loads its model(s), answers 'ping' once ready, then one JSON line
 * per request line, so the two sides can alternate run by run (load from other processes hits both
 * alike). Same thread count and malloc tuning as runTorch (OPENBLAS_NUM_THREADS comes from
 * `naslora bench`, which pins it for both sides). Null where PyTorch is unavailable.
 */
export async function startTwin<R>(script: string, args: string[]): Promise<Twin<R> | null> {
  const MB = 2 ** 20;
  const p = spawn(PYTHON, [path.join(benchSrcDir, script), '--threads', String(getNumThreads()), ...args], {
    env: { ...process.env, MALLOC_MMAP_THRESHOLD_: String(32 * MB), MALLOC_TRIM_THRESHOLD_: String(1024 * MB) },
    stdio: ['pipe', 'pipe', 'pipe'],
  });
  let stderr = '';
  p.stderr.on('data', (d: Buffer) => { stderr += d.toString(); });
  const waiting: Array<{ resolve: (r: R) => void; reject: (e: Error) => void }> = [];
  createInterface({ input: p.stdout }).on('line', (l) => waiting.shift()?.resolve(JSON.parse(l) as R));
  p.on('close', (code) => {
    for (const w of waiting.splice(0)) w.reject(new Error(`exit ${code}: ${stderr.trim().split('\n').pop() ?? ''}`));
  });
  p.on('error', (e) => { for (const w of waiting.splice(0)) w.reject(e); });
  const ask = (cmd: string): Promise<R> => new Promise((resolve, reject) => { waiting.push({ resolve, reject }); p.stdin.write(`${cmd}\n`); });
  try {
    await ask('ping');  // answered once the models are loaded
    return { ask, close: () => p.stdin.end() };
  } catch (e) {
    process.stderr.write(`PyTorch comparison unavailable (${PYTHON} ${script}): ${(e as Error).message}\n`);
    p.kill();
    return null;
  }
}
