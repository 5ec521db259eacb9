#!/usr/bin/env node
// naslora's command line. Each command lives in its own module under commands/ and registers
// itself here; errors end with a clear message and a non-zero exit, never a stack dump.
import { Command, CommanderError } from 'commander';
import { registerDoctor } from './commands/doctor.js';
import { registerBench } from './commands/bench.js';
import { registerTrain } from './commands/train.js';
import { registerEval } from './commands/eval.js';
import { registerExport } from './commands/export.js';
import { registerData } from './commands/data.js';
import { registerPredict } from './commands/predict.js';
import { registerInspect } from './commands/inspect.js';
import { registerConvert } from './commands/convert.js';
import { registerCompare } from './commands/compare.js';
import { registerReport } from './commands/report.js';
import { registerServe } from './commands/serve.js';
import { endLiveBars } from '../train/progress.js';

const program = new Command()
  .name('naslora')
  .description('NAS-LoRA fine-tuning of the Segment Anything Model (SAM) on a libtorch engine')
  .version('0.1.0')
  .showHelpAfterError()
  .exitOverride();

registerDoctor(program);
registerBench(program);
registerTrain(program);
registerCompare(program);
registerReport(program);
registerServe(program);
registerEval(program);
registerExport(program);
registerData(program);
registerPredict(program);
registerInspect(program);
registerConvert(program);

try {
  await program.parseAsync(process.argv);
} catch (e) {
  if (e instanceof CommanderError) process.exit(e.exitCode);
  endLiveBars();
  console.error(`naslora: ${(e as Error).message}`);
  if (process.env.NASLORA_DEBUG) console.error((e as Error).stack);
  process.exit(1);
}
