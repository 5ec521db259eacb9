// Data pipeline tests: discovery, splits, validation (real and broken sets), loader, prompts, synthetic domains.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { discoverDataset, makeSplits, mulberry32, saveSplits, type DatasetSplits } from '../src/data/dataset.js';
import { validateDataset, formatReport, type IssueCode, type ValidationReport } from '../src/data/validate.js';
import {
  SAM_PIXEL_MEAN, SAM_PIXEL_STD, SampleCache, batchPrompts, boxFromMask, decodeSample, iterateBatches, pointsFromMask,
  prepareSample, validRegion, type Batch, type DecodedSample,
} from '../src/data/loader.js';
import { makeSyntheticDomain } from '../src/data/synthetic.js';

// Tests run compiled from dist/test/, so the shared data is three levels up.
const DATA = fileURLToPath(new URL('../../../shared/data/', import.meta.url));
const KVASIR = path.join(DATA, 'kvasir-seg');
const haveData = fs.existsSync(KVASIR);

function tmpDir(): string {
  return fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-data-'));
}

async function png(file: string, w: number, h: number, f: (x: number, y: number) => number, channels: 1 | 3 = 1): Promise<void> {
  const buf = Buffer.alloc(w * h * channels);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) for (let c = 0; c < channels; c++) buf[(y * w + x) * channels + c] = f(x, y);
  await sharp(buf, { raw: { width: w, height: h, channels } }).png().toFile(file);
}

function ids(splits: DatasetSplits): Record<string, string[]> {
  return Object.fromEntries(Object.entries(splits).map(([k, v]: [string, DatasetSplits['train']]) => [k, v.map((s) => s.id)]));
}

test('discovery + seeded splits: deterministic, disjoint, complete', { skip: !haveData && 'shared data missing' }, () => {
  const ds = discoverDataset(KVASIR);
  assert.equal(ds.layout, 'dirs');
  assert.equal(ds.samples.length, 200);
  assert.equal(ds.givenSplits, null);
  const a = makeSplits(ds, { seed: 1 });
  assert.deepEqual(ids(a), ids(makeSplits(ds, { seed: 1 })));
  assert.notDeepEqual(ids(a).test, ids(makeSplits(ds, { seed: 2 })).test);
  assert.deepEqual([a.train.length, a.arch.length, a.val.length, a.test.length], [119, 21, 20, 40]);
  const all = [...a.train, ...a.arch, ...a.val, ...a.test].map((s) => s.id);
  assert.equal(new Set(all).size, 200, 'no id in two splits, none lost');
  // archFrac only moves ids between train and arch; val/test stay put.
  const b = makeSplits(ds, { seed: 1, archFrac: 0 });
  assert.equal(b.arch.length, 0);
  assert.deepEqual(b.train.map((s) => s.id).sort(), [...a.train, ...a.arch].map((s) => s.id).sort());
  assert.deepEqual(ids(b).test, ids(a).test);
  const c = makeSplits(ds, { seed: 1, fractions: [8, 1, 1] });
  assert.deepEqual([c.val.length, c.test.length], [20, 20]);
});

test('saved splits reload as given splits, arch included', { skip: !haveData && 'shared data missing' }, () => {
  const dir = tmpDir();
  fs.symlinkSync(path.join(KVASIR, 'images'), path.join(dir, 'images'));
  fs.symlinkSync(path.join(KVASIR, 'masks'), path.join(dir, 'masks'));
  const a = makeSplits(discoverDataset(dir), { seed: 3 });
  saveSplits(path.join(dir, 'splits'), a);
  const ds = discoverDataset(dir);
  assert.ok(ds.givenSplits);
  assert.deepEqual(ids(makeSplits(ds, { seed: 99 })), ids(a));
});

async function expectIssue(r: ValidationReport, code: IssueCode, id: string | null, severity: 'error' | 'warning'): Promise<void> {
  const hit = r.issues.find((i) => i.code === code && (id === null || i.ids.includes(id)));
  assert.ok(hit, `expected ${code} for ${id}; got:\n${formatReport(r)}`);
  assert.equal(hit.severity, severity, hit.message);
}

test('validation of the real sets: JPEG masks warn, no errors', { skip: !haveData && 'shared data missing' }, async () => {
  const k = await validateDataset(KVASIR);
  assert.equal(k.errors, 0, formatReport(k));
  assert.ok(k.ok);
  await expectIssue(k, 'non-binary-mask', null, 'warning');
  assert.match(k.issues.find((i) => i.code === 'non-binary-mask')!.message, /gray > 127/);
  const c = await validateDataset(path.join(DATA, 'cvc-clinicdb'));
  assert.equal(c.errors, 0, formatReport(c));
  assert.match(formatReport(c), /max 6\.6%/); // matches SOURCE.md
  const p = await validateDataset(path.join(DATA, 'ph2'));
  assert.equal(p.errors + p.warnings, 0, formatReport(p)); // PNG masks, strictly binary
});

test('validation of a broken dataset reports each problem', async () => {
  const dir = tmpDir();
  const I = path.join(dir, 'images'), M = path.join(dir, 'masks');
  fs.mkdirSync(I);
  fs.mkdirSync(M);
  const rgb = (x: number, y: number): number => (x * 7 + y * 3) % 256;
  const rect = (x: number, y: number): number => (x > 8 && x < 20 && y > 4 && y < 16 ? 255 : 0);
  await png(path.join(I, 'a.png'), 32, 24, rgb, 3), await png(path.join(M, 'a.png'), 32, 24, rect);
  await png(path.join(I, 'b.png'), 32, 24, rgb, 3); // image without mask
  await png(path.join(M, 'c.png'), 32, 24, rect); // mask without image
  await png(path.join(I, 'd.png'), 32, 24, rgb, 3), await png(path.join(M, 'd.png'), 16, 16, rect); // size mismatch
  fs.writeFileSync(path.join(I, 'e.png'), 'not a png'), await png(path.join(M, 'e.png'), 32, 24, rect); // unreadable
  await png(path.join(I, 'f.png'), 32, 24, rgb, 3), await png(path.join(M, 'f.png'), 32, 24, () => 0); // empty mask
  await png(path.join(I, 'g.png'), 32, 24, rgb, 3), await png(path.join(M, 'g.png'), 32, 24, rect);
  await sharp(path.join(I, 'g.png')).jpeg().toFile(path.join(I, 'g.jpg')); // duplicate id
  await png(path.join(I, 'h.png'), 32, 24, rgb, 3), await png(path.join(M, 'h.png'), 32, 24, (x, y) => (rect(x, y) ? 1 : 0)); // {0,1}
  fs.writeFileSync(path.join(I, 'i.bmp'), 'BM'), await png(path.join(M, 'i.png'), 32, 24, rect); // BMP
  fs.writeFileSync(path.join(I, 'notes.txt'), 'x');
  fs.mkdirSync(path.join(dir, 'splits'));
  fs.writeFileSync(path.join(dir, 'splits', 'train.txt'), 'a\nd\ne\nf\ng\n');
  fs.writeFileSync(path.join(dir, 'splits', 'val.txt'), 'a\n'); // leakage
  fs.writeFileSync(path.join(dir, 'splits', 'test.txt'), 'zzz\n'); // unknown id
  const r = await validateDataset(dir);
  await expectIssue(r, 'missing-mask', 'b', 'error');
  await expectIssue(r, 'missing-image', 'c', 'error');
  await expectIssue(r, 'size-mismatch', 'd', 'error');
  await expectIssue(r, 'unreadable', 'e', 'error');
  await expectIssue(r, 'empty-mask', 'f', 'warning');
  await expectIssue(r, 'duplicate-id', 'g', 'error');
  await expectIssue(r, 'low-range-mask', 'h', 'error');
  await expectIssue(r, 'unsupported-format', 'i', 'error');
  assert.match(r.issues.find((i) => i.code === 'unsupported-format')!.message, /BMP is not readable by sharp/);
  await expectIssue(r, 'split-leakage', 'a', 'error');
  await expectIssue(r, 'unknown-split-id', 'zzz', 'error');
  await expectIssue(r, 'unassigned', 'h', 'warning');
  await expectIssue(r, 'ignored-file', null, 'warning');
  assert.ok(!r.ok);
  assert.equal(r.issues.filter((i) => i.code === 'unreadable').length, 1);
  // The good pair and the splits stay usable; the leaked id goes to its first split only.
  const s = makeSplits(discoverDataset(dir));
  assert.deepEqual(ids(s).val, []);
  assert.ok(ids(s).train.includes('a'));
});

test('CSV layout with a split column', async () => {
  const dir = tmpDir();
  fs.mkdirSync(path.join(dir, 'x'));
  for (const n of ['p', 'q', 'r']) {
    await png(path.join(dir, 'x', `${n}.png`), 8, 8, (x) => x * 30, 3);
    await png(path.join(dir, 'x', `${n}_m.png`), 8, 8, (x) => (x > 3 ? 255 : 0));
  }
  const csv = path.join(dir, 'list.csv');
  fs.writeFileSync(csv, 'image,mask,split\nx/p.png,x/p_m.png,train\n"x/q.png",x/q_m.png,valid\nx/r.png,x/r_m.png,test\n');
  const ds = discoverDataset(csv);
  assert.equal(ds.layout, 'csv');
  assert.deepEqual(ds.samples.map((s) => s.id), ['p', 'q', 'r']);
  assert.deepEqual(ids(makeSplits(ds)), { train: ['p'], val: ['q'], test: ['r'], arch: [] });
  const r = await validateDataset(csv);
  assert.equal(r.errors + r.warnings, 0, formatReport(r));
});

function constSample(w: number, h: number, c: [number, number, number], maskLeftHalf = true): DecodedSample {
  const rgb = new Uint8Array(w * h * 3);
  for (let i = 0; i < w * h; i++) rgb.set(c, 3 * i);
  const mask = new Uint8Array(w * h);
  for (let y = 0; y < h; y++) for (let x = 0; x < w; x++) mask[y * w + x] = maskLeftHalf && x < w / 2 ? 1 : 0;
  return { id: 'const', width: w, height: h, rgb, mask };
}

test('loader: shapes, SAM normalisation, squash vs longest-pad, flip', async () => {
  const d = constSample(40, 20, [100, 150, 200]);
  const p = await prepareSample(d, { imageSize: 32, labelSize: 16 }, null);
  assert.equal(p.image.length, 3 * 32 * 32);
  assert.equal(p.mask.length, 16 * 16);
  for (let c = 0; c < 3; c++) {
    const want = ([100, 150, 200][c]! - SAM_PIXEL_MEAN[c]!) / SAM_PIXEL_STD[c]!;
    assert.ok(Math.abs(p.image[c * 1024 + 5 * 32 + 7]! - want) < 1e-4);
  }
  assert.deepEqual([...p.mask.subarray(0, 16)], [...Array(8).fill(1), ...Array(8).fill(0)]);
  // longest-pad: 40x20 -> 32x16 valid region, zeros (= mean) below.
  const q = await prepareSample(d, { imageSize: 32, labelSize: 16, resize: 'longest-pad' }, null);
  assert.deepEqual(validRegion(20, 40, 32), [16, 32]);
  assert.ok(Math.abs(q.image[15 * 32]! - p.image[0]!) < 1e-4);
  assert.equal(q.image[16 * 32], 0);
  assert.equal(q.mask.subarray(8 * 16).reduce((a, b) => a + b, 0), 0);
  // flip mirrors the mask (rng()=0.1 < 0.5 flips)
  const f = await prepareSample(d, { imageSize: 32, labelSize: 16, augment: { hflip: true } }, () => 0.1);
  assert.ok(f.flipped);
  assert.deepEqual([...f.mask.subarray(0, 16)], [...Array(8).fill(0), ...Array(8).fill(1)]);
  // crop keeps image/mask aligned: a crop of the left half is all foreground
  const c = await prepareSample(d, { imageSize: 32, labelSize: 16, augment: { hflip: false, cropScale: [0.5, 0.5] } }, mulberry32(1));
  assert.equal(c.crop[2], 20);
  if (c.crop[0] === 0) assert.equal(c.mask.reduce((a, b) => a + b, 0), 256);
});

async function collect(items: DecodedSample[], o: Partial<Parameters<typeof iterateBatches>[1]>): Promise<Batch[]> {
  const out: Batch[] = [];
  for await (const b of iterateBatches(items, { imageSize: 32, labelSize: 16, batchSize: 3, augment: { hflip: true }, seed: 5, ...o })) out.push(b);
  return out;
}

test('batch iterator: deterministic order and flips, independent of prefetch/workers', async () => {
  const items = makeSyntheticDomain('source', 10, 24, 1).samples;
  const a = await collect(items, { prefetch: 0, workers: 1 });
  const b = await collect(items, { prefetch: 3, workers: 8 });
  assert.deepEqual(a.map((x) => x.batchSize), [3, 3, 3, 1]);
  assert.equal(a[0]!.images.length, 3 * 3 * 32 * 32);
  assert.equal(a[0]!.masks.length, 3 * 16 * 16);
  for (let i = 0; i < a.length; i++) {
    assert.deepEqual(a[i]!.ids, b[i]!.ids);
    assert.deepEqual(a[i]!.images, b[i]!.images);
    assert.deepEqual(a[i]!.masks, b[i]!.masks);
  }
  const e1 = await collect(items, { epoch: 1 });
  assert.notDeepEqual(e1.flatMap((x) => x.ids), a.flatMap((x) => x.ids));
  const ordered = await collect(items, { shuffle: false, dropLast: true, augment: null });
  assert.deepEqual(ordered.flatMap((x) => x.ids), items.slice(0, 9).map((s) => s.id));
});

test('batch iterator over files with a cache; prompts from masks', { skip: !haveData && 'shared data missing' }, async () => {
  const samples = discoverDataset(KVASIR).samples.slice(0, 4);
  const cache = new SampleCache();
  const run = async (): Promise<Batch[]> => {
    const out: Batch[] = [];
    for await (const b of iterateBatches(samples, { imageSize: 64, labelSize: 32, batchSize: 2, cache, seed: 0, augment: { hflip: true } })) out.push(b);
    return out;
  };
  const a = await run();
  assert.equal(cache.size, 4);
  const b = await run();
  assert.deepEqual(a[1]!.images, b[1]!.images);
  assert.equal(a[0]!.images.length, 2 * 3 * 64 * 64);
  const d = await decodeSample(samples[0]!);
  assert.deepEqual(a.flatMap((x) => x.origSizes).find((_, i) => a.flatMap((x) => x.ids)[i] === d.id), [d.height, d.width]);
  const pr = batchPrompts(a[0]!, { jitterFrac: 0.1, nPos: 2, nNeg: 1, seed: 0 });
  assert.equal(pr.boxes!.length, 8);
  assert.deepEqual([...pr.pointLabels.subarray(0, 3)], [1, 1, 0]);
  assert.ok(pr.boxes!.every((v) => v >= 0 && v <= 64));
  assert.equal(batchPrompts(a[0]!, { box: false, jitterFrac: 0.1, nPos: 2, nNeg: 1, seed: 0 }).boxes, null);
});

test('boxFromMask / pointsFromMask', () => {
  const W = 20, H = 10;
  const data = new Float32Array(W * H);
  for (let y = 2; y <= 5; y++) for (let x = 4; x <= 13; x++) data[y * W + x] = 1;
  const m = { data, width: W, height: H };
  assert.deepEqual(boxFromMask(m, 0, mulberry32(0)), [4, 2, 13, 5]);
  for (let s = 0; s < 20; s++) {
    const [x0, y0, x1, y1] = boxFromMask(m, 0.2, mulberry32(s))!;
    assert.ok(Math.abs(x0 - 4) <= 2 && Math.abs(x1 - 13) <= 2 && Math.abs(y0 - 2) <= 0.8 && Math.abs(y1 - 5) <= 0.8);
  }
  assert.equal(boxFromMask({ data: new Float32Array(4), width: 2, height: 2 }, 0.1, mulberry32(0)), null);
  const p = pointsFromMask(m, 3, 2, mulberry32(7));
  assert.deepEqual([...p.labels], [1, 1, 1, 0, 0]);
  for (let k = 0; k < 5; k++) {
    const x = Math.floor(p.coords[2 * k]!), y = Math.floor(p.coords[2 * k + 1]!);
    assert.equal(data[y * W + x], k < 3 ? 1 : 0);
  }
  assert.deepEqual([...pointsFromMask({ data: new Float32Array(4), width: 2, height: 2 }, 1, 1, mulberry32(0)).labels], [-1, 0]);
});

test('synthetic domains: deterministic, fast, and visibly different', () => {
  const t0 = performance.now();
  const s = makeSyntheticDomain('source', 16, 128, 42);
  const t = makeSyntheticDomain('target', 16, 128, 42);
  const ms = (performance.now() - t0) / 32;
  assert.ok(ms < 30, `${ms.toFixed(1)} ms per 128² image`);
  assert.deepEqual(makeSyntheticDomain('source', 16, 128, 42).samples[3]!.rgb, s.samples[3]!.rgb);
  assert.deepEqual(makeSyntheticDomain('target', 4, 128, 42).samples[3]!.mask, t.samples[3]!.mask, 'image i does not depend on n');
  assert.notDeepEqual(makeSyntheticDomain('source', 4, 128, 43).samples[0]!.rgb, s.samples[0]!.rgb);
  // Per-image stats: foreground/background contrast, colour saturation, pixel noise (neighbour difference).
  // contrast = RGB distance between the mean foreground and mean background colours.
  const stats = (d: DecodedSample): { contrast: number; sat: number; noise: number; fg: number } => {
    let f = 0, sat = 0, noise = 0;
    const fs = [0, 0, 0], bs = [0, 0, 0];
    for (let i = 0; i < d.width * d.height; i++) {
      const [r, g, b] = [d.rgb[3 * i]!, d.rgb[3 * i + 1]!, d.rgb[3 * i + 2]!];
      sat += Math.max(r, g, b) - Math.min(r, g, b);
      if (i % d.width > 0) noise += Math.abs((r + g + b - d.rgb[3 * i - 3]! - d.rgb[3 * i - 2]! - d.rgb[3 * i - 1]!) / 3);
      if (d.mask[i]) f++;
      for (let c = 0; c < 3; c++) (d.mask[i] ? fs : bs)[c]! += d.rgb[3 * i + c]!;
    }
    const n = d.width * d.height;
    const contrast = Math.hypot(...fs.map((v, c) => v / Math.max(1, f) - bs[c]! / Math.max(1, n - f)));
    return { contrast, sat: sat / n, noise: noise / n, fg: f / n };
  };
  const mean = (xs: DecodedSample[], k: 'contrast' | 'sat' | 'noise'): number => xs.reduce((a, d) => a + stats(d)[k], 0) / xs.length;
  for (const d of [...s.samples, ...t.samples]) {
    assert.ok(d.mask.every((v) => v === 0 || v === 1));
    const fg = stats(d).fg;
    assert.ok(fg > 0.005 && fg < 0.8, `${d.id} foreground ${fg}`);
  }
  assert.ok(mean(s.samples, 'contrast') > 2 * mean(t.samples, 'contrast'), 'target lesions are low-contrast');
  assert.ok(mean(t.samples, 'noise') > 2 * mean(s.samples, 'noise'), 'target has speckle');
  assert.ok(mean(s.samples, 'sat') > mean(t.samples, 'sat'), 'source is more colourful');
});
