// `naslora data validate <dir-or-csv>`: decodes every image/mask pair and reports problems.
// Exit status 1 when the report has errors (warnings alone exit 0), so it can gate scripts and CI.
import * as fs from 'node:fs';
import { InvalidArgumentError, type Command } from 'commander';
import { formatReport, validateDataset } from '../../data/validate.js';
import { numberedClasses, readClassSpec } from '../../data/classes.js';

function parseThreshold(v: string): number {
  const n = Number(v);
  if (!Number.isInteger(n) || n < 0 || n > 254) throw new InvalidArgumentError('expected an integer gray level 0..254 (foreground = gray > N)');
  return n;
}

export function registerData(program: Command): void {
  const data = program.command('data').description('dataset tools');
  data
    .command('validate')
    .description('check a dataset (folder with images/ and masks/, or a CSV file): pairing, sizes, decodability, mask values, splits')
    .argument('<dir-or-csv>', 'dataset folder or CSV file')
    .option('--json', 'print the report as JSON')
    .option('--threshold <N>', 'mask foreground rule gray > N (data.threshold)', parseThreshold, 127)
    .option('--mask-suffix <s>', "suffix stripped from mask base names before pairing (e.g. '_segmentation')", '')
    .option('--classes <classes.json>', 'multi-class masks: class names, indices and (palette masks) colours; reports classes present, pixel share, images per class, unknown indices, palette mismatches')
    .option('--num-classes <K>', 'multi-class class-index masks with K classes (0 = background), without a classes.json')
    .option('--ignore-index <v>', 'with --num-classes: a mask value that marks pixels to ignore (e.g. 255)')
    .action(async (src: string, o: { json?: boolean; threshold: number; maskSuffix: string; classes?: string; numClasses?: string; ignoreIndex?: string }) => {
      // Fail before discovery with a message that says what was expected there.
      if (!fs.existsSync(src)) throw new Error(`${src}: no such folder or file (expected a folder with images/ and masks/, or a .csv file)`);
      if (o.classes && o.numClasses) throw new Error('give --classes or --num-classes, not both');
      const ignore = o.ignoreIndex === undefined ? null : Number(o.ignoreIndex);
      if (ignore !== null && !(Number.isInteger(ignore) && ignore >= 0 && ignore <= 255)) throw new Error(`--ignore-index must be an integer 0..255, got '${o.ignoreIndex}'`);
      const classes = o.classes ? readClassSpec(o.classes) : o.numClasses ? numberedClasses(Number(o.numClasses), ignore) : null;
      const report = await validateDataset(src, { threshold: o.threshold, maskSuffix: o.maskSuffix, classes });
      console.log(o.json ? JSON.stringify(report, null, 2) : formatReport(report));
      // Not process.exit(): let stdout drain (large JSON reports through a pipe).
      if (!report.ok) process.exitCode = 1;
    });
}
