// `naslora bench <suite>`: naslora against PyTorch in the same run (see bench/).
import { spawnSync } from 'node:child_process';
import type { Command } from 'commander';
import { printRows, type BenchRow } from '../../../bench/common.js';
import { resolveDevice } from '../../engine/index.js';
import { addRuntimeOptions, type RuntimeFlags } from '../runtime_options.js';

const SUITES: Record<string, () => Promise<BenchRow[]>> = {
  engine: async () => (await import('../../../bench/engine.js')).benchEngine(),
  sam: async () => (await import('../../../bench/sam.js')).benchSam(),
  adapters: async () => (await import('../../../bench/adapters.js')).benchAdapters(),
  train: async () => (await import('../../../bench/train.js')).benchTrain(),
  cpu: async () => (await import('../../../bench/cpu.js')).benchCpu(),
  dist: async () => (await import('../../../bench/dist.js')).benchDist(),
  serve: async () => (await import('../../../bench/serve.js')).benchServe(),
};

/** Suites that take --device / --precision (the others compare naslora with PyTorch on the CPU). */
const DEVICE_SUITES = new Set(['sam']);

export function registerBench(program: Command): void {
  addRuntimeOptions(program
    .command('bench')
    .description(`benchmarks against PyTorch: ${Object.keys(SUITES).join(', ')}`)
    .argument('<suite>', Object.keys(SUITES).join(' | '))
    .option('--json', 'print {"rows":[...]} and nothing else on stdout')
    .option('--grid <grid>', 'bench train: token grids to measure, small | large | all (default all, or NASLORA_BENCH_GRID)'))
    .action(async (suite: string, o: { json?: boolean; grid?: string } & RuntimeFlags) => {
      const run = SUITES[suite];
      if (!run) throw new Error(`unknown bench suite '${suite}' (choose from ${Object.keys(SUITES).join(', ')})`);
      const device = resolveDevice(o.device ?? 'cpu', { what: '--device' });  // fails at once where this libtorch has no CUDA
      if ((device !== 'cpu' || (o.precision ?? 'fp32') !== 'fp32') && !DEVICE_SUITES.has(suite))
        throw new Error(`bench ${suite} compares naslora with PyTorch on the CPU in fp32; --device and --precision apply to: ${[...DEVICE_SUITES].join(', ')}`);
      // Read by bench/sam.ts (here and in the re-run below, which inherits the environment).
      if (o.device !== undefined) process.env.NASLORA_BENCH_DEVICE = o.device;
      if (o.precision !== undefined) process.env.NASLORA_BENCH_PRECISION = o.precision;
      if (o.grid !== undefined) process.env.NASLORA_BENCH_GRID = o.grid;  // read by bench/train.ts and its children
      // OpenBLAS keeps its own thread pool, and on 2 cores it ran the same GEMM on one or two cores
      // depending on the process's history (in naslora and PyTorch alike): pin it, the same for
      // both twins (they inherit the variable), unless the user chose a value.
      if (process.env.OPENBLAS_NUM_THREADS === undefined) {
        const r = spawnSync(process.execPath, process.argv.slice(1), { stdio: 'inherit', env: { ...process.env, OPENBLAS_NUM_THREADS: '1' } });
        process.exitCode = r.status ?? 1;
        return;
      }
      printRows(await run(), o.json ?? false);
    });
}

export function addBenchSuite(name: string, run: () => Promise<BenchRow[]>): void {
  SUITES[name] = run;
}
