// Dataset discovery and deterministic splits.
//
// Layout A: <dir>/images/ and <dir>/masks/ whose files share base names (id = name without extension),
//           optional <dir>/splits/{train,val,test[,arch]}.txt (one id per line, '#' comments allowed).
// Layout B: a CSV file with an `image,mask[,split]` header; paths are relative to the CSV's folder.
//
// Discovery never decodes images (that is validate.ts's job); it only pairs files and records what it
// could not pair, so that validation can report it and training can run on the usable pairs.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { writeFileAtomic } from '../io/atomic.js';

export interface Sample {
  id: string;
  imagePath: string;
  maskPath: string;
}

export interface DatasetSplits<T extends { id: string } = Sample> {
  train: T[];
  val: T[];
  test: T[];
  /** Architecture split for NAS search, carved out of (and disjoint from) train. */
  arch: T[];
}

export type SplitName = 'train' | 'val' | 'test' | 'arch';
export const SPLIT_NAMES: readonly SplitName[] = ['train', 'val', 'test', 'arch'];

/** Extensions sharp can decode (its prebuilt libvips), in the order preferred when an id has several. */
export const IMAGE_EXTS: readonly string[] = ['.png', '.jpg', '.jpeg', '.tif', '.tiff', '.webp'];
/** Image formats that appear in segmentation sets but that sharp cannot decode. */
export const UNSUPPORTED_EXTS: Readonly<Record<string, string>> = {
  '.bmp': 'BMP is not readable by sharp (no BMP loader in its libvips); convert it losslessly to PNG, e.g. `magick x.bmp x.png` or PIL `Image.open(p).save(q)`',
  '.gif': 'GIF is palette-based and lossy for photos; convert it to PNG',
};

export interface SkippedFile {
  id: string;
  path: string;
  role: 'image' | 'mask';
  reason: string;
}

export interface DiscoveredDataset {
  /** The folder (layout A) or the CSV file (layout B). */
  source: string;
  layout: 'dirs' | 'csv';
  /** Usable pairs (both files present and in a readable format), sorted by id. */
  samples: Sample[];
  /** Splits given by the dataset (split files or CSV column); null when none were given.
   *  An empty `arch` list means "carve it from train". */
  givenSplits: Record<SplitName, string[]> | null;
  imagesWithoutMask: Array<{ id: string; path: string }>;
  masksWithoutImage: Array<{ id: string; path: string }>;
  /** Ids that occur with several files of one role (e.g. a.jpg and a.png); the first listed is used. */
  duplicates: Array<{ id: string; role: 'image' | 'mask'; paths: string[] }>;
  /** Pairs dropped because a file has a format sharp cannot decode. */
  skipped: SkippedFile[];
  /** Files ignored for an unknown extension, and CSV rows that could not be parsed. */
  ignored: string[];
}

export interface DiscoverOptions {
  /** Suffix on mask base names to strip before pairing, e.g. '_segmentation' (ISIC) or '_mask'. */
  maskSuffix?: string;
}

export interface SplitOptions {
  seed?: number;
  /** train/val/test fractions used when the dataset gives no splits; normalised to sum 1. */
  fractions?: [number, number, number];
  /** Fraction of train moved into the arch split (0 = none). */
  archFrac?: number;
}

export const DEFAULT_FRACTIONS: [number, number, number] = [0.7, 0.1, 0.2];
export const DEFAULT_ARCH_FRAC = 0.15;

// ---------------------------------------------------------------- seeded randomness

/** mulberry32: tiny, fast, good-enough 32-bit PRNG; returns floats in [0, 1). */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Mixes numbers and strings into one 32-bit seed (FNV-1a over the parts), to derive independent streams. */
export function hashSeed(...parts: Array<number | string>): number {
  let h = 0x811c9dc5;
  for (const p of parts) {
    const s = typeof p === 'number' ? `#${p}` : `$${p}`;
    for (let i = 0; i < s.length; i++) h = Math.imul(h ^ s.charCodeAt(i), 0x01000193) >>> 0;
    h = Math.imul(h ^ 0x2c, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** Fisher-Yates shuffle, in place. */
export function shuffleInPlace<T>(a: T[], rng: () => number): T[] {
  for (let i = a.length - 1; i > 0; i--) {
    const j = Math.floor(rng() * (i + 1));
    const t = a[i]!;
    a[i] = a[j]!;
    a[j] = t;
  }
  return a;
}

// ---------------------------------------------------------------- discovery

function listFiles(dir: string): string[] {
  return fs
    .readdirSync(dir, { withFileTypes: true })
    .filter((e) => e.isFile() && !e.name.startsWith('.'))
    .map((e) => e.name)
    .sort();
}

function extOf(p: string): string {
  return path.extname(p).toLowerCase();
}

function idOf(file: string, suffix = ''): string {
  const base = path.basename(file, path.extname(file));
  return suffix && base.endsWith(suffix) ? base.slice(0, -suffix.length) : base;
}

function extRank(p: string): number {
  const i = IMAGE_EXTS.indexOf(extOf(p));
  return i < 0 ? IMAGE_EXTS.length : i;
}

function readIdList(file: string): string[] {
  return fs
    .readFileSync(file, 'utf8')
    .split(/\r?\n/)
    .map((l) => l.replace(/#.*/, '').trim())
    .filter((l) => l.length > 0)
    .map((l) => idOf(l)); // tolerate lines written as file names ("a.jpg")
}

/** Minimal RFC-4180 CSV line splitter (quotes, doubled quotes); no multi-line fields. */
export function parseCsvLine(line: string): string[] {
  const out: string[] = [];
  let cur = '';
  let q = false;
  for (let i = 0; i < line.length; i++) {
    const c = line[i]!;
    if (q) {
      if (c === '"' && line[i + 1] === '"') (cur += '"'), i++;
      else if (c === '"') q = false;
      else cur += c;
    } else if (c === '"') q = true;
    else if (c === ',') out.push(cur.trim()), (cur = '');
    else cur += c;
  }
  out.push(cur.trim());
  return out;
}

function isCsv(p: string): boolean {
  return extOf(p) === '.csv' && fs.statSync(p).isFile();
}

export function discoverDataset(dirOrCsv: string, opts: DiscoverOptions = {}): DiscoveredDataset {
  if (!fs.existsSync(dirOrCsv)) throw new Error(`dataset not found: ${dirOrCsv}`);
  return isCsv(dirOrCsv) ? discoverCsv(dirOrCsv) : discoverDirs(dirOrCsv, opts);
}

/** Groups candidate (id, path) pairs of one role; unreadable formats go to `skipped`. */
function groupRole(
  files: Array<{ id: string; path: string }>,
  role: 'image' | 'mask',
  ds: DiscoveredDataset,
): Map<string, string> {
  const byId = new Map<string, string[]>();
  for (const f of files) {
    const e = extOf(f.path);
    if (!IMAGE_EXTS.includes(e) && !(e in UNSUPPORTED_EXTS)) {
      ds.ignored.push(f.path);
      continue;
    }
    const list = byId.get(f.id) ?? [];
    list.push(f.path);
    byId.set(f.id, list);
  }
  const chosen = new Map<string, string>();
  for (const [id, paths] of byId) {
    paths.sort((a, b) => extRank(a) - extRank(b) || a.localeCompare(b));
    if (paths.length > 1) ds.duplicates.push({ id, role, paths: [...paths] });
    chosen.set(id, paths[0]!);
  }
  return chosen;
}

/** Pairs images and masks; fills samples / orphans / skipped. */
function pair(images: Map<string, string>, masks: Map<string, string>, ds: DiscoveredDataset): void {
  for (const [id, img] of images) {
    const m = masks.get(id);
    if (m === undefined) {
      ds.imagesWithoutMask.push({ id, path: img });
      continue;
    }
    const bad = [
      { role: 'image' as const, path: img },
      { role: 'mask' as const, path: m },
    ].filter((f) => extOf(f.path) in UNSUPPORTED_EXTS);
    if (bad.length > 0) for (const f of bad) ds.skipped.push({ id, ...f, reason: UNSUPPORTED_EXTS[extOf(f.path)]! });
    else ds.samples.push({ id, imagePath: img, maskPath: m });
  }
  for (const [id, m] of masks) if (!images.has(id)) ds.masksWithoutImage.push({ id, path: m });
  ds.samples.sort((a, b) => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0));
}

function emptyDataset(source: string, layout: 'dirs' | 'csv'): DiscoveredDataset {
  return {
    source, layout, samples: [], givenSplits: null, imagesWithoutMask: [], masksWithoutImage: [],
    duplicates: [], skipped: [], ignored: [],
  };
}

function discoverDirs(dir: string, opts: DiscoverOptions): DiscoveredDataset {
  const ds = emptyDataset(dir, 'dirs');
  const imgDir = path.join(dir, 'images');
  const maskDir = path.join(dir, 'masks');
  for (const d of [imgDir, maskDir])
    if (!fs.existsSync(d)) throw new Error(`${dir}: expected folders images/ and masks/ (or a .csv file); missing ${d}`);
  const images = groupRole(listFiles(imgDir).map((f) => ({ id: idOf(f), path: path.join(imgDir, f) })), 'image', ds);
  const masks = groupRole(
    listFiles(maskDir).map((f) => ({ id: idOf(f, opts.maskSuffix), path: path.join(maskDir, f) })),
    'mask',
    ds,
  );
  pair(images, masks, ds);
  const splitDir = path.join(dir, 'splits');
  if (fs.existsSync(splitDir)) {
    const given: Record<SplitName, string[]> = { train: [], val: [], test: [], arch: [] };
    let any = false;
    for (const s of SPLIT_NAMES) {
      const f = path.join(splitDir, `${s}.txt`);
      if (fs.existsSync(f)) (given[s] = readIdList(f)), (any = true);
    }
    if (any) ds.givenSplits = given;
  }
  return ds;
}

function discoverCsv(csv: string): DiscoveredDataset {
  const ds = emptyDataset(csv, 'csv');
  const base = path.dirname(csv);
  const lines = fs.readFileSync(csv, 'utf8').split(/\r?\n/).filter((l) => l.trim().length > 0);
  let cols = { image: 0, mask: 1, split: -1 };
  const head = lines.length > 0 ? parseCsvLine(lines[0]!).map((c) => c.toLowerCase()) : [];
  if (head.includes('image') && head.includes('mask')) {
    cols = { image: head.indexOf('image'), mask: head.indexOf('mask'), split: head.indexOf('split') };
    lines.shift();
  }
  const imgs: Array<{ id: string; path: string }> = [];
  const masks: Array<{ id: string; path: string }> = [];
  const given: Record<SplitName, string[]> = { train: [], val: [], test: [], arch: [] };
  lines.forEach((line, i) => {
    const f = parseCsvLine(line);
    const img = f[cols.image] ?? '';
    const m = f[cols.mask] ?? '';
    if (!img || !m) return void ds.ignored.push(`${csv}:${i + 2}: needs image and mask columns: ${line}`);
    const id = idOf(img); // id = image base name; the mask is paired by the row, not by name
    imgs.push({ id, path: path.resolve(base, img) });
    masks.push({ id, path: path.resolve(base, m) });
    const s = cols.split >= 0 ? (f[cols.split] ?? '').toLowerCase() : '';
    if (s === '') return;
    const norm = s === 'valid' || s === 'validation' ? 'val' : s;
    if (norm === 'train' || norm === 'val' || norm === 'test' || norm === 'arch') given[norm].push(id);
    else ds.ignored.push(`${csv}:${i + 2}: unknown split '${s}' (use train, val, test or arch)`);
  });
  pair(groupRole(imgs, 'image', ds), groupRole(masks, 'mask', ds), ds);
  if (SPLIT_NAMES.some((s) => given[s].length > 0)) ds.givenSplits = given;
  return ds;
}

// ---------------------------------------------------------------- splits

/**
 * Builds train/val/test/arch. Given splits are used as they are (ids that do not exist are dropped:
 * validateDataset reports them; a given arch list is used as is); otherwise ids are shuffled with `seed` and cut by `fractions`.
 * The arch split is then drawn from train with a seed derived from `seed`, so train ∪ arch is the same
 * whatever archFrac is, and val/test never depend on archFrac.
 */
/** Splits of any samples with ids (a discovered data set, or in-memory ones such as the demo's). */
export function makeSplits<T extends { id: string } = Sample>(
  ds: { samples: T[]; givenSplits: DiscoveredDataset['givenSplits'] }, opts: SplitOptions = {},
): DatasetSplits<T> {
  const seed = opts.seed ?? 0;
  const archFrac = opts.archFrac ?? DEFAULT_ARCH_FRAC;
  const byId = new Map(ds.samples.map((s) => [s.id, s]));
  let train: T[];
  let val: T[];
  let test: T[];
  let givenArch: T[] = [];
  if (ds.givenSplits) {
    const seen = new Set<string>(); // an id listed twice goes to the first split only (leak is reported)
    const pick = (ids: string[]): T[] =>
      ids.flatMap((id) => {
        const s = byId.get(id);
        if (!s || seen.has(id)) return [];
        seen.add(id);
        return [s];
      });
    train = pick(ds.givenSplits.train);
    val = pick(ds.givenSplits.val);
    test = pick(ds.givenSplits.test);
    givenArch = pick(ds.givenSplits.arch);
  } else {
    const f = opts.fractions ?? DEFAULT_FRACTIONS;
    const sum = f[0] + f[1] + f[2];
    if (!(sum > 0) || f.some((x) => x < 0)) throw new Error(`split fractions must be >= 0 with a positive sum, got ${f.join('/')}`);
    const all = shuffleInPlace([...ds.samples], mulberry32(hashSeed(seed, 'split')));
    const nTest = Math.round((all.length * f[2]) / sum);
    const nVal = Math.round((all.length * f[1]) / sum);
    const nTrain = all.length - nTest - nVal;
    train = all.slice(0, nTrain);
    val = all.slice(nTrain, nTrain + nVal);
    test = all.slice(nTrain + nVal);
  }
  const sortById = (a: T, b: T): number => (a.id < b.id ? -1 : a.id > b.id ? 1 : 0);
  if (givenArch.length > 0) return { train: train.sort(sortById), val: val.sort(sortById), test: test.sort(sortById), arch: givenArch.sort(sortById) };
  const shuffled = shuffleInPlace([...train].sort(sortById), mulberry32(hashSeed(seed, 'arch')));
  const nArch = Math.min(Math.round(train.length * Math.max(0, archFrac)), Math.max(0, train.length - 1));
  const arch = shuffled.slice(0, nArch).sort(sortById);
  const archIds = new Set(arch.map((s) => s.id));
  return {
    train: train.filter((s) => !archIds.has(s.id)).sort(sortById),
    val: val.sort(sortById),
    test: test.sort(sortById),
    arch,
  };
}

/** Discovery + splits in one call. */
export function loadDataset(
  dirOrCsv: string,
  opts: SplitOptions & DiscoverOptions = {},
): { dataset: DiscoveredDataset; splits: DatasetSplits } {
  const dataset = discoverDataset(dirOrCsv, opts);
  return { dataset, splits: makeSplits(dataset, opts) };
}

/** Writes <dir>/{train,val,test,arch}.txt so a run's exact splits can be reused (as split files) and audited. */
export function saveSplits(dir: string, splits: DatasetSplits): void {
  for (const name of ['train', 'val', 'test', 'arch'] as const)
    writeFileAtomic(path.join(dir, `${name}.txt`), splits[name].map((s) => s.id).join('\n') + '\n');
}
