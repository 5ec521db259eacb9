// `naslora bench <suite>`: naslora against PyTorch in the same run (see bench/).
import type { Command } from 'commander';
import { printRows, type BenchRow } from '../../../bench/common.js';

const SUITES: Record<string, () => Promise<BenchRow[]>> = {
  engine: async () => (await import('../../../bench/engine.js')).benchEngine(),
  sam: async () => (await import('../../../bench/sam.js')).benchSam(),
  adapters: async () => (await import('../../../bench/adapters.js')).benchAdapters(),
  train: async () => (await import('../../../bench/train.js')).benchTrain(),
};

export function registerBench(program: Command): void {
  program
    .command('bench')
    .description(`benchmarks against PyTorch: ${Object.keys(SUITES).join(', ')}`)
    .argument('<suite>', Object.keys(SUITES).join(' | '))
    .option('--json', 'print {"rows":[...]} and nothing else on stdout')
    .action(async (suite: string, o: { json?: boolean }) => {
      const run = SUITES[suite];
      if (!run) throw new Error(`unknown bench suite '${suite}' (choose from ${Object.keys(SUITES).join(', ')})`);
      printRows(await run(), o.json ?? false);
    });
}

export function addBenchSuite(name: string, run: () => Promise<BenchRow[]>): void {
  SUITES[name] = run;
}
