// `naslora report`: one self-contained HTML page for a run folder, a compare folder or the demo's
// folder (a compare or demo page also writes each run's own page, which it links to). Every page
// is written atomically: a failure leaves the previous page, never half of a new one.
import * as path from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';
import { comparePage } from './compare_page.js';
import { demoPage } from './demo_page.js';
import { ImageBudget } from './images.js';
import { isCompareDir, isDemoDir, isRunDir, readCompare, readDemo, readRun } from './load.js';
import { runPage } from './run_page.js';

export type ReportKind = 'run' | 'compare' | 'demo';

export interface ReportOptions {
  /** The page to write (default <dir>/report.html). */
  out?: string;
  /** Bytes of inlined images per page (default 8 MB: the page stays under ~10 MB). */
  imageBudget?: number;
  log?: (msg: string) => void;
}

export interface ReportResult { kind: ReportKind; path: string; pages: string[]; bytes: number }

export const DEFAULT_IMAGE_BUDGET = 8 * 1024 * 1024;

export function reportKind(dir: string): ReportKind {
  if (isDemoDir(dir)) return 'demo';
  if (isRunDir(dir)) return 'run';
  if (isCompareDir(dir)) return 'compare';
  throw new Error(`${dir}: not a run folder (events.jsonl, metrics.json), a compare folder (compare.json or <method>/seed<k> runs) or a demo folder (demo_results.json)`);
}

async function writeRunPage(dir: string, out: string, o: ReportOptions): Promise<number> {
  const html = await runPage(readRun(dir), { budget: new ImageBudget(o.imageBudget ?? DEFAULT_IMAGE_BUDGET), reportPath: out });
  writeFileAtomic(out, html);
  return Buffer.byteLength(html);
}

/** Run pages for the given run folders (each <run>/report.html); a run that cannot be read is reported and skipped. */
async function runPages(dirs: string[], o: ReportOptions): Promise<Map<string, string>> {
  const pages = new Map<string, string>();
  for (const d of dirs) {
    const out = path.join(d, 'report.html');
    try {
      await writeRunPage(d, out, o);
      pages.set(d, out);
    } catch (e) {
      o.log?.(`report: no page for ${d}: ${(e as Error).message}`);
    }
  }
  return pages;
}

export async function writeReport(dir: string, o: ReportOptions = {}): Promise<ReportResult> {
  const kind = reportKind(dir);
  const out = o.out ?? path.join(dir, 'report.html');
  if (kind === 'run') return { kind, path: out, pages: [out], bytes: await writeRunPage(dir, out, o) };
  if (kind === 'compare') {
    const c = readCompare(dir);
    const pages = await runPages(c.runs.map((r) => r.run_dir), o);
    const html = comparePage(c, { reportPath: out, runPages: pages });
    writeFileAtomic(out, html);
    return { kind, path: out, pages: [out, ...pages.values()], bytes: Buffer.byteLength(html) };
  }
  const d = readDemo(dir);
  const pages = await runPages(d.runs.map((r) => r.dir), o);
  const html = await demoPage(d, { reportPath: out, runPages: pages, budget: new ImageBudget(o.imageBudget ?? DEFAULT_IMAGE_BUDGET) });
  writeFileAtomic(out, html);
  return { kind, path: out, pages: [out, ...pages.values()], bytes: Buffer.byteLength(html) };
}
