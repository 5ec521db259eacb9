// Dataset validation: decodes every pair and reports problems with a severity and an actionable message.
//  error   = a file or split entry cannot be used as it is (the pair is dropped or the run would be wrong);
//  warning = usable, but something the user should know (e.g. JPEG masks that are not strictly binary).
// Per-file errors get one issue each; frequent per-file warnings are aggregated into one issue with all ids.
import * as path from 'node:path';
import { type DiscoverOptions, type DiscoveredDataset, SPLIT_NAMES, type SplitName, discoverDataset } from './dataset.js';
import { DEFAULT_THRESHOLD, decodeGray, decodeRgb } from './loader.js';
import { addClassStats, decodeClassMask, emptyClassStats, type ClassSpec, type ClassStats } from './classes.js';

export type Severity = 'error' | 'warning';

export type IssueCode =
  | 'not-found'
  | 'no-samples'
  | 'unreadable'
  | 'unsupported-format'
  | 'size-mismatch'
  | 'missing-mask'
  | 'missing-image'
  | 'empty-mask'
  | 'low-range-mask'
  | 'non-binary-mask'
  | 'coloured-mask'
  | 'duplicate-id'
  | 'split-leakage'
  | 'unknown-split-id'
  | 'unassigned'
  | 'ignored-file'
  | 'unknown-class-index'
  | 'palette-mismatch'
  | 'absent-class';

export interface Issue {
  severity: Severity;
  code: IssueCode;
  message: string;
  /** Affected sample ids (all of them, also when the message shows only a few). */
  ids: string[];
  paths: string[];
}

export interface ValidationReport {
  source: string;
  layout: 'dirs' | 'csv' | 'unknown';
  /** Usable pairs found by discovery. */
  samples: number;
  /** Pairs that decoded and passed the per-pair error checks. */
  valid: number;
  issues: Issue[];
  errors: number;
  warnings: number;
  ok: boolean;
  stats: {
    /** Smallest and largest image [width, height] (by area). */
    minSize: [number, number] | null;
    maxSize: [number, number] | null;
    /** Mean foreground fraction of the masks after thresholding. */
    meanForeground: number;
  };
  /** Multi-class data sets (options.classes): per class, its share of the valid pixels and the images containing it. */
  classes?: Array<{ index: number; name: string; pixelShare: number; images: number }>;
  ignoredPixels?: number;
}

export interface ValidateOptions extends DiscoverOptions {
  /** Foreground rule gray > threshold (data.threshold). Default 127. */
  threshold?: number;
  /** Pixels with lo < gray < hi count as ambiguous. Default [10, 245]. */
  ambiguous?: [number, number];
  /** Pairs decoded at once. Default 8. */
  concurrency?: number;
  /** Multi-class masks (class-index or palette PNGs): checked against these classes instead of binarised. */
  classes?: ClassSpec | null;
}

const errMsg = (e: unknown): string => (e instanceof Error ? e.message : String(e));
const pct = (x: number): string => `${(100 * x).toFixed(x < 0.001 && x > 0 ? 3 : 1)}%`;
const few = (xs: string[], n = 5): string => xs.slice(0, n).join(', ') + (xs.length > n ? `, … (${xs.length} in all)` : '');

interface PairResult {
  id: string;
  issues: Issue[];
  size?: [number, number];
  foreground?: number;
  /** Fractions of pixels not in {0,255} and of ambiguous pixels, when the mask is not strictly binary. */
  nonBinary?: { off: number; ambiguous: number };
  coloured?: boolean;
}

async function checkClassPair(r: PairResult, imagePath: string, maskPath: string, spec: ClassSpec, stats: ClassStats): Promise<PairResult> {
  const err = (code: IssueCode, message: string, paths: string[]): void => void r.issues.push({ severity: 'error', code, message, ids: [r.id], paths });
  const [img, mask] = await Promise.allSettled([decodeRgb(imagePath), decodeClassMask(maskPath, spec)]);
  if (img.status === 'rejected') err('unreadable', `${r.id}: cannot decode image ${imagePath}: ${errMsg(img.reason)} — re-export or remove it`, [imagePath]);
  if (mask.status === 'rejected') err('unreadable', `${r.id}: cannot decode mask ${maskPath}: ${errMsg(mask.reason)} — re-export or remove it`, [maskPath]);
  if (img.status === 'rejected' || mask.status === 'rejected') return r;
  const m = mask.value;
  if (m.width !== img.value.width || m.height !== img.value.height) {
    err('size-mismatch', `${r.id}: image is ${img.value.width}x${img.value.height} but mask is ${m.width}x${m.height} — masks must match their image pixel for pixel`, [imagePath, maskPath]);
    return r;
  }
  r.size = [m.width, m.height];
  addClassStats(stats, r.id, m, spec);
  return r;
}

async function checkPair(
  id: string, imagePath: string, maskPath: string, threshold: number, [lo, hi]: [number, number], spec: ClassSpec | null = null, stats: ClassStats | null = null,
): Promise<PairResult> {
  const r: PairResult = { id, issues: [] };
  const err = (code: IssueCode, message: string, paths: string[]): void =>
    void r.issues.push({ severity: 'error', code, message, ids: [id], paths });
  if (spec) return checkClassPair(r, imagePath, maskPath, spec, stats!);
  const [img, mask] = await Promise.allSettled([decodeRgb(imagePath), decodeGray(maskPath)]);
  if (img.status === 'rejected') err('unreadable', `${id}: cannot decode image ${imagePath}: ${errMsg(img.reason)} — re-export or remove it`, [imagePath]);
  if (mask.status === 'rejected') err('unreadable', `${id}: cannot decode mask ${maskPath}: ${errMsg(mask.reason)} — re-export or remove it`, [maskPath]);
  if (img.status === 'rejected' || mask.status === 'rejected') return r;
  const { width: w, height: h } = img.value;
  const m = mask.value;
  if (m.width !== w || m.height !== h) {
    err('size-mismatch', `${id}: image is ${w}x${h} but mask is ${m.width}x${m.height} — wrong pairing or a resized mask; masks must match their image pixel for pixel`, [imagePath, maskPath]);
    return r;
  }
  r.size = [w, h];
  let fg = 0, off = 0, amb = 0, max = 0;
  for (const v of m.data) {
    if (v > threshold) fg++;
    if (v !== 0 && v !== 255) off++;
    if (v > lo && v < hi) amb++;
    if (v > max) max = v;
  }
  const n = m.data.length;
  r.foreground = fg / n;
  r.coloured = m.coloured;
  if (fg === 0 && max > 0) {
    err('low-range-mask', `${id}: mask values lie in 0..${max} (a label map such as {0,1}?), so gray > ${threshold} leaves it empty — set data.threshold=0 (or lower than ${max}) for this dataset`, [maskPath]);
    return r;
  }
  if (fg === 0)
    r.issues.push({ severity: 'warning', code: 'empty-mask', message: `${id}: mask is empty (no pixel > ${threshold}) — fine for true negatives, but prompted mode cannot draw a box or positive point from it`, ids: [id], paths: [maskPath] });
  if (off > 0) r.nonBinary = { off: off / n, ambiguous: amb / n };
  return r;
}

/** Runs tasks with at most n in flight, results in input order. */
async function mapLimit<T, R>(xs: readonly T[], n: number, f: (x: T) => Promise<R>): Promise<R[]> {
  const out = new Array<R>(xs.length);
  let next = 0;
  const worker = async (): Promise<void> => {
    while (next < xs.length) {
      const i = next++;
      out[i] = await f(xs[i]!);
    }
  };
  await Promise.all(Array.from({ length: Math.max(1, Math.min(n, xs.length)) }, worker));
  return out;
}

function structuralIssues(ds: DiscoveredDataset): Issue[] {
  const issues: Issue[] = [];
  const add = (severity: Severity, code: IssueCode, message: string, ids: string[], paths: string[] = []): void =>
    void issues.push({ severity, code, message, ids, paths });
  for (const o of ds.imagesWithoutMask)
    add('error', 'missing-mask', `${o.id}: image ${o.path} has no mask (expected a mask with base name '${o.id}') — add it or remove the image`, [o.id], [o.path]);
  for (const o of ds.masksWithoutImage)
    add('error', 'missing-image', `${o.id}: mask ${o.path} has no image (expected an image with base name '${o.id}') — add it or remove the mask`, [o.id], [o.path]);
  for (const d of ds.duplicates)
    add('error', 'duplicate-id', `${d.id}: ${d.paths.length} ${d.role} files share this id (${d.paths.map((p) => path.basename(p)).join(', ')}); using ${path.basename(d.paths[0]!)} — delete or rename the others`, [d.id], d.paths);
  for (const s of ds.skipped)
    add('error', 'unsupported-format', `${s.id}: ${s.role} ${s.path} cannot be used: ${s.reason}`, [s.id], [s.path]);
  if (ds.ignored.length > 0)
    add('warning', 'ignored-file', `${ds.ignored.length} entries ignored (not an image format sharp reads, or a bad CSV row): ${few(ds.ignored.map((p) => path.basename(p)))}`, [], ds.ignored);
  if (ds.givenSplits) {
    const sampleIds = new Set(ds.samples.map((s) => s.id));
    const where = new Map<string, SplitName[]>();
    for (const split of SPLIT_NAMES) {
      const ids = ds.givenSplits[split];
      for (const id of new Set(ids)) where.set(id, [...(where.get(id) ?? []), split]);
      const unknown = [...new Set(ids.filter((id) => !sampleIds.has(id)))];
      if (unknown.length > 0)
        add('error', 'unknown-split-id', `split '${split}' lists ${unknown.length} id(s) that are not usable samples (no image/mask pair): ${few(unknown)} — fix the split file or add the files`, unknown);
    }
    const leaked = [...where].filter(([, s]) => s.length > 1);
    for (const [id, s] of leaked)
      add('error', 'split-leakage', `${id}: listed in several splits (${s.join(', ')}) — evaluation would be contaminated; keep it in one split only (it is used in '${s[0]}')`, [id]);
    const unassigned = ds.samples.map((s) => s.id).filter((id) => !where.has(id));
    if (unassigned.length > 0)
      add('warning', 'unassigned', `${unassigned.length} sample(s) are in no split and will not be used: ${few(unassigned)}`, unassigned);
  }
  return issues;
}

export async function validateDataset(dirOrCsv: string, opts: ValidateOptions = {}): Promise<ValidationReport> {
  const threshold = opts.threshold ?? DEFAULT_THRESHOLD;
  const report: ValidationReport = {
    source: dirOrCsv, layout: 'unknown', samples: 0, valid: 0, issues: [], errors: 0, warnings: 0, ok: false,
    stats: { minSize: null, maxSize: null, meanForeground: 0 },
  };
  let ds: DiscoveredDataset;
  try {
    ds = discoverDataset(dirOrCsv, opts);
  } catch (e) {
    report.issues.push({ severity: 'error', code: 'not-found', message: (e as Error).message, ids: [], paths: [dirOrCsv] });
    report.errors = 1;
    return report;
  }
  report.layout = ds.layout;
  report.samples = ds.samples.length;
  const issues = structuralIssues(ds);
  const spec = opts.classes ?? null;
  const cstats = spec ? emptyClassStats(spec.names.length) : null;
  const results = await mapLimit(ds.samples, opts.concurrency ?? 8, (s) =>
    checkPair(s.id, s.imagePath, s.maskPath, threshold, opts.ambiguous ?? [10, 245], spec, cstats),
  );
  if (spec && cstats) {
    const k = spec.names.length;
    const total = cstats.pixels.reduce((a, b) => a + b, 0);
    report.classes = spec.names.map((name, index) => ({ index, name, pixelShare: total ? cstats.pixels[index]! / total : 0, images: cstats.images[index]! }));
    report.ignoredPixels = cstats.ignored;
    for (const [v, e] of [...cstats.unknown].sort((a, b) => a[0] - b[0]))
      issues.push({ severity: 'error', code: 'unknown-class-index', ids: e.ids, paths: [], message: `mask value ${v} is neither a class (0..${k - 1}) nor the ignore index${spec.ignoreIndex === null ? ' (none set)' : ` ${spec.ignoreIndex}`}: ${e.pixels} pixels in ${e.ids.length} mask(s): ${few(e.ids)} — fix the masks, or set the ignore index / the number of classes` });
    for (const [c, e] of [...cstats.unknownColours].sort((a, b) => b[1].pixels - a[1].pixels))
      issues.push({ severity: 'error', code: 'palette-mismatch', ids: e.ids, paths: [], message: `colour (${c}) is not in classes.json: ${e.pixels} pixels in ${e.ids.length} mask(s): ${few(e.ids)} — add the class or fix the masks (these pixels would be ignored)` });
    const absent = report.classes.filter((c) => c.images === 0);
    if (absent.length) issues.push({ severity: 'warning', code: 'absent-class', ids: [], paths: [], message: `class(es) never present in any mask: ${absent.map((c) => `${c.index} ${c.name}`).join(', ')} — their metrics will be undefined (left out of mIoU)` });
  }
  let fgSum = 0;
  const area = (s: [number, number]): number => s[0] * s[1];
  for (const r of results) {
    issues.push(...r.issues);
    if (r.issues.some((i) => i.severity === 'error') || !r.size) continue;
    report.valid++;
    fgSum += r.foreground ?? 0;
    if (!report.stats.minSize || area(r.size) < area(report.stats.minSize)) report.stats.minSize = r.size;
    if (!report.stats.maxSize || area(r.size) > area(report.stats.maxSize)) report.stats.maxSize = r.size;
  }
  report.stats.meanForeground = report.valid > 0 ? fgSum / report.valid : 0;
  const nb = results.filter((r) => r.nonBinary);
  if (nb.length > 0) {
    const amb = nb.map((r) => r.nonBinary!.ambiguous);
    const offMean = nb.reduce((a, r) => a + r.nonBinary!.off, 0) / nb.length;
    const [lo, hi] = opts.ambiguous ?? [10, 245];
    issues.push({
      severity: 'warning', code: 'non-binary-mask', ids: nb.map((r) => r.id), paths: [],
      message:
        `${nb.length} of ${results.length} masks are not strictly binary (values other than 0/255, typical of JPEG masks): ` +
        `on average ${pct(offMean)} of their pixels; ambiguous pixels (${lo} < gray < ${hi}): mean ${pct(amb.reduce((a, b) => a + b, 0) / nb.length)}, max ${pct(Math.max(...amb))}. ` +
        `They will be binarised with gray > ${threshold} (data.threshold; gray = max of R,G,B), not > 0. Masks: ${few(nb.map((r) => r.id), 3)}`,
    });
  }
  const col = results.filter((r) => r.coloured);
  if (col.length > 0)
    issues.push({ severity: 'warning', code: 'coloured-mask', ids: col.map((r) => r.id), paths: [], message: `${col.length} masks have differing colour channels; gray = max(R,G,B) is thresholded, so any bright colour counts as foreground: ${few(col.map((r) => r.id))}` });
  if (ds.samples.length === 0)
    issues.push({ severity: 'error', code: 'no-samples', ids: [], paths: [], message: `${dirOrCsv}: no usable image/mask pairs found` });
  issues.sort((a, b) => (a.severity === b.severity ? 0 : a.severity === 'error' ? -1 : 1));
  report.issues = issues;
  report.errors = issues.filter((i) => i.severity === 'error').length;
  report.warnings = issues.length - report.errors;
  report.ok = report.errors === 0;
  return report;
}

/** Human-readable report, one line per issue. */
export function formatReport(r: ValidationReport): string {
  const head =
    `${r.source} (${r.layout}): ${r.samples} pairs, ${r.valid} valid, ${r.errors} error(s), ${r.warnings} warning(s)` +
    (r.stats.minSize ? `; sizes ${r.stats.minSize.join('x')}..${r.stats.maxSize!.join('x')}; mean foreground ${pct(r.stats.meanForeground)}` : '');
  const classes = r.classes ? ['classes (index, name, share of valid pixels, images containing it):', ...r.classes.map((c) => `  ${String(c.index).padStart(3)} ${c.name.padEnd(16)} ${pct(c.pixelShare).padStart(7)} ${String(c.images).padStart(6)}`),
    ...(r.ignoredPixels ? [`  ignored pixels: ${r.ignoredPixels}`] : [])] : [];
  return [head, ...classes, ...r.issues.map((i) => `${i.severity.toUpperCase()} [${i.code}] ${i.message}`)].join('\n');
}
