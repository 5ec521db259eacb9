// `naslora report <dir>`: the HTML report of a run, a compare or the demo.
import type { Command } from 'commander';
import { writeReport, type ReportResult } from '../../report/index.js';

export function registerReport(program: Command): void {
  program
    .command('report')
    .description('write a self-contained HTML report (charts, α, masks; opens from file://) for a run folder, a compare folder or the demo folder')
    .argument('<dir>', 'run folder (train.out_dir), compare folder (out_dir) or demo folder')
    .option('-o, --out <file>', 'the HTML file to write (default <dir>/report.html)')
    .action(async (dir: string, o: { out?: string }) => {
      const r = await writeReport(dir, { out: o.out, log: (m) => console.error(m) });
      console.error(describeReport(r));
    });
}

export function describeReport(r: ReportResult): string {
  const more = r.pages.length > 1 ? ` (and ${r.pages.length - 1} run page${r.pages.length > 2 ? 's' : ''} beside the runs)` : '';
  return `report: ${r.path} (${(r.bytes / 1024 / 1024).toFixed(1)} MB)${more}`;
}

/** After train/compare/demo: write the report and say where; a report failure does not fail the job. */
export async function reportAfter(dir: string): Promise<void> {
  try {
    console.error(describeReport(await writeReport(dir, { log: (m) => console.error(m) })));
  } catch (e) {
    console.error(`report: not written: ${(e as Error).message}`);
  }
}
