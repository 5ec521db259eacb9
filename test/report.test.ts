// The HTML report, opened in a real browser (Debian's chromium driven by puppeteer-core) from real
// runs: the demo (--quick), a NAS-LoRA run on real Kvasir-SEG images at their original sizes, and a
// compare folder. Each page must load from file:// with no console error and no request leaving the
// file; its charts, series, heat-map marks, overlays and tables must match the run's own files.
// Screenshots are kept in $TMPDIR/naslora-report-screenshots for a person to look at.
import { after, before, describe, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import puppeteer, { type Browser, type Page } from 'puppeteer-core';
import { writeReport } from '../src/report/index.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(here, '../..');
const CLI = path.join(ROOT, 'dist/src/cli/main.js');
const KVASIR = path.resolve(ROOT, '../shared/data/kvasir-seg');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const run = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8' });

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-report-'));
const SHOTS = path.join(os.tmpdir(), 'naslora-report-screenshots');
const demo = path.join(work, 'demo');
const kvasirRun = path.join(work, 'kvasir-nas');
const compareDir = path.join(work, 'compare');
let browser: Browser;

const readJson = <T>(f: string): T => JSON.parse(fs.readFileSync(f, 'utf8')) as T;

interface Loaded { page: Page; problems: string[] }

/** Opens a page from file:// and waits for every chart; collects console errors and any request that is not the file itself. */
async function open(file: string, shot: string): Promise<Loaded> {
  const page = await browser.newPage();
  const problems: string[] = [];
  page.on('console', (m) => { if (m.type() === 'error') problems.push(`console: ${m.text()}`); });
  page.on('pageerror', (e) => problems.push(`page error: ${(e as Error).message}`));
  page.on('requestfailed', (r) => problems.push(`failed request: ${r.url().slice(0, 120)}`));
  page.on('request', (r) => { if (!r.url().startsWith('data:') && r.url() !== `file://${file}`) problems.push(`request: ${r.url().slice(0, 120)}`); });
  await page.setViewport({ width: 1280, height: 900 });
  await page.goto(`file://${file}`, { waitUntil: 'load' });
  await page.evaluate(() => (window as unknown as { naslora: { ready: Promise<unknown> } }).naslora.ready);
  fs.mkdirSync(SHOTS, { recursive: true });
  await page.screenshot({ path: path.join(SHOTS, `${shot}.png`), fullPage: true });
  return { page, problems };
}

/** data-value of every cell of a table row (by the first cell's text). */
async function tableValues(page: Page, id: string): Promise<Record<string, Record<string, string>>> {
  return page.evaluate((tid) => {
    const t = document.getElementById(tid) as HTMLTableElement;
    const head = [...t.tHead!.rows[0]!.cells].map((c) => c.textContent!.trim());
    const out: Record<string, Record<string, string>> = {};
    for (const r of [...t.tBodies[0]!.rows]) out[r.cells[0]!.textContent!.trim()] = Object.fromEntries([...r.cells].map((c, i) => [head[i], c.getAttribute('data-value') ?? c.textContent!.trim()]));
    return out;
  }, id);
}

before(async () => {
  assert.ok(fs.existsSync(CHROMIUM), `${CHROMIUM} missing: scripts/setup.sh installs Debian's chromium`);
  browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  const d = run('demo', '--quick', '--out', demo);
  assert.equal(d.status, 0, d.stderr);
  assert.match(d.stderr, new RegExp(`report: ${path.join(demo, 'report.html').replace(/[.\\/]/g, '\\$&')}`));
  // A NAS-LoRA run on real images of different sizes (the overlays keep each one's size).
  const ids = fs.readdirSync(path.join(KVASIR, 'images')).sort().slice(0, 16);
  const csv = path.join(work, 'kvasir.csv');
  fs.writeFileSync(csv, ['image,mask', ...ids.map((f) => `${path.join(KVASIR, 'images', f)},${path.join(KVASIR, 'masks', f)}`)].join('\n') + '\n');
  const t = run('train', '-c', 'nas-lora', '--set', `model.checkpoint=${path.join(demo, 'pretrain/sam.safetensors')}`, '--set', `model.config=${path.join(demo, 'demo_sam_config.json')}`,
    '--set', `data.dir=${csv}`, '--set', 'data.image_size=64', '--set', 'data.batch_size=4', '--set', 'data.splits.fractions=[0.5, 0.1, 0.4]', '--set', 'method.rank=4',
    '--set', 'train.epochs=null', '--set', 'train.steps=12', '--set', 'train.eval_every=4', '--set', 'train.log_every=2', '--set', `train.out_dir=${kvasirRun}`);
  assert.equal(t.status, 0, t.stderr);
  assert.match(t.stderr, /report: .*kvasir-nas\/report\.html/);
  // A compare folder: two methods × two seeds on the demo's target domain.
  const base = {
    model: { pretrained: 'sam', checkpoint: path.join(demo, 'pretrain/sam.safetensors'), config: path.join(demo, 'demo_sam_config.json') },
    data: { dir: null, synthetic: { kind: 'target', n: 24, size: 64, seed: 1 }, image_size: 64, batch_size: 4, splits: { seed: 0, fractions: [0.5, 0.2, 0.3], arch_frac: 0.15 } },
    method: { rank: 4 }, optim: { lr: 3e-3 }, train: { epochs: null, steps: 16, eval_every: 8, log_every: 4 },
  };
  const yaml = path.join(work, 'compare.yaml');
  fs.writeFileSync(yaml, JSON.stringify({ base, methods: ['zero-shot', 'lora', 'nas-lora'], seeds: [0, 1], out_dir: compareDir }));
  const c = run('compare', '-c', yaml);
  assert.equal(c.status, 0, c.stderr);
  assert.match(c.stderr, /report: .*compare\/report\.html/);
});

after(async () => {
  await browser?.close();
  fs.rmSync(work, { recursive: true, force: true });
});

describe('run page', () => {
  test('NAS-LoRA on real images: charts, α series, heat map, tables and overlays match the run files', async () => {
    const { page, problems } = await open(path.join(kvasirRun, 'report.html'), 'run-kvasir-nas-lora');
    assert.deepEqual(problems, []);
    const derived = readJson<{ derived: Record<string, string> }>(path.join(kvasirRun, 'derived_ops.json'));
    const cfg = readJson<{ method: { ops: string[] } }>(path.join(kvasirRun, 'config.resolved.json'));
    const cells = Object.keys(derived.derived);
    assert.ok(cells.length >= 4);
    const charts = await page.evaluate(() => [...document.querySelectorAll<HTMLElement>('.chart')].map((c) => ({
      kind: c.dataset.kind!, title: c.dataset.title!, svg: c.querySelectorAll('svg').length,
      lineOps: [...c.querySelectorAll('g.mark-line.role-mark path')].map((p) => /op: (\w+)/.exec(p.getAttribute('aria-label') ?? '')?.[1] ?? ''),
      lines: c.querySelectorAll('g.mark-line.role-mark path').length,
      stars: [...c.querySelectorAll('g.mark-text text')].map((t) => t.getAttribute('aria-label') ?? '').filter((l) => l.startsWith('derived op of ')),
    })));
    for (const c of charts) assert.equal(c.svg, 1, `${c.kind} ${c.title} rendered`);
    const kinds = charts.map((c) => c.kind);
    for (const k of ['loss', 'lr', 'eval', 'heatmap']) assert.equal(kinds.filter((x) => x === k).length, 1, k);
    assert.equal(charts.find((c) => c.kind === 'loss')!.lines, 1);
    // validation metrics: one line per metric the run evaluates
    const events = fs.readFileSync(path.join(kvasirRun, 'events.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; metrics?: Record<string, number> });
    const evalMetrics = Object.keys(events.find((e) => e.type === 'eval')!.metrics!).filter((k) => k !== 'count');
    assert.equal(charts.find((c) => c.kind === 'eval')!.lines, evalMetrics.length);
    // one α chart per adapted layer, one line per op, every op of the config
    const alpha = charts.filter((c) => c.kind === 'alpha');
    assert.deepEqual(alpha.map((c) => c.title).sort(), [...cells].sort());
    for (const a of alpha) assert.deepEqual([...a.lineOps].sort(), [...cfg.method.ops].sort(), a.title);
    // the heat map's ★ marks are exactly the derived ops
    const stars = charts.find((c) => c.kind === 'heatmap')!.stars.sort();
    const short = (p: string) => p.replace(/^image_encoder\./, '').replace(/\.adapter\.cell$/, '');
    assert.deepEqual(stars, cells.map((c) => `derived op of ${short(c)}: ${derived.derived[c]}`).sort());

    // test metrics table = metrics.json
    const metrics = readJson<{ test: Record<string, number>; val: Record<string, number> }>(path.join(kvasirRun, 'metrics.json'));
    const tab = await tableValues(page, 'metrics-table');
    for (const split of ['test', 'val'] as const) {
      const cellsByMetric = await page.evaluate((s) => Object.fromEntries([...document.querySelectorAll(`#metrics-table tr`)].filter((r) => r.querySelector(`[data-split="${s}"]`))
        .flatMap((r) => [...r.querySelectorAll('td[data-metric]')].map((td) => [td.getAttribute('data-metric'), Number(td.getAttribute('data-value'))]))), split);
      for (const [k, v] of Object.entries(metrics[split])) if (k !== 'count') assert.equal(cellsByMetric[k], v, `${split} ${k}`);
      assert.equal(Number(tab[split]!.images), metrics[split].count);
    }
    // per-image table = test_per_image.json, and it sorts
    const per = readJson<{ rows: Array<Record<string, number | string>> }>(path.join(kvasirRun, 'test_per_image.json'));
    const perTab = await tableValues(page, 'per-image-table');
    assert.equal(Object.keys(perTab).length, per.rows.length);
    for (const row of per.rows) assert.equal(Number(perTab[row.id as string]!.Dice), row.dice);
    await page.click('#per-image-table th:nth-child(2)');
    const sorted = await page.evaluate(() => [...document.querySelectorAll('#per-image-table tbody tr')].map((r) => Number(r.children[1]!.getAttribute('data-value'))));
    assert.deepEqual(sorted, [...sorted].sort((a, b) => a - b));

    // overlays: best/median/worst present; each panel decodes at the image's original size
    const figs = await page.evaluate(() => [...document.querySelectorAll<HTMLElement>('.example')].map((e) => ({
      id: e.dataset.id!, title: e.querySelector('h3')!.textContent!,
      imgs: [...e.querySelectorAll('img')].map((i) => ({ panel: i.dataset.panel!, complete: i.complete, w: i.naturalWidth, h: i.naturalHeight })),
    })));
    for (const role of ['best', 'median', 'worst']) assert.ok(figs.some((f) => f.title.includes(role)), role);
    const idsInTest = new Set(per.rows.map((r) => r.id as string));
    for (const f of figs) {
      assert.ok(idsInTest.has(f.id), f.id);
      const file = fs.readdirSync(path.join(KVASIR, 'images')).find((x) => x.startsWith(f.id))!;
      const meta = await sharp(path.join(KVASIR, 'images', file)).metadata();
      assert.deepEqual(f.imgs.map((i) => i.panel), ['image', 'ground truth', 'prediction', 'error map']);
      for (const i of f.imgs) {
        assert.ok(i.complete, `${f.id} ${i.panel} decoded`);
        assert.deepEqual([i.w, i.h], [meta.width, meta.height], `${f.id} ${i.panel} at original size`);
      }
    }
    await page.close();
  });

  test('a killed or running run: partial events are shown and the page says so; a corrupt events file is an error naming it', async () => {
    const part = path.join(work, 'partial');
    fs.cpSync(kvasirRun, part, { recursive: true });
    fs.rmSync(path.join(part, 'metrics.json'));
    fs.rmSync(path.join(part, 'report.html'));
    const ev = fs.readFileSync(path.join(part, 'events.jsonl'), 'utf8').split('\n').filter(Boolean);
    const keep = ev.slice(0, 8);
    fs.writeFileSync(path.join(part, 'events.jsonl'), keep.join('\n') + '\n' + ev[8]!.slice(0, 20));  // torn last line, as a kill mid-write leaves
    const r = run('report', part);
    assert.equal(r.status, 0, r.stderr);
    const { page, problems } = await open(path.join(part, 'report.html'), 'run-partial');
    assert.deepEqual(problems, []);
    const banner = await page.$eval('#partial', (e) => e.textContent!);
    assert.match(banner, /Partial run/);
    const lastStep = JSON.parse(keep.filter((l) => l.includes('"type":"step"')).pop()!) as { step: number };
    assert.match(banner, new RegExp(`step ${lastStep.step} of 12`));
    assert.ok(await page.$eval('body', (b) => b.textContent!.includes('the last line is incomplete')));
    await page.close();

    // a bad line in the middle: a clear error naming the file and line, and the old page is kept
    const before = fs.readFileSync(path.join(part, 'report.html'));
    fs.writeFileSync(path.join(part, 'events.jsonl'), [keep[0], '{"type":"step", oops', ...keep.slice(1)].join('\n') + '\n');
    const bad = run('report', part);
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, new RegExp(`naslora: ${path.join(part, 'events.jsonl').replace(/[.\\/]/g, '\\$&')}: line 2 is not valid JSON`));
    assert.deepEqual(fs.readFileSync(path.join(part, 'report.html')), before);
    assert.deepEqual(fs.readdirSync(part).filter((f) => f.includes('.tmp')), []);
    fs.rmSync(path.join(part, 'events.jsonl'));
    const missing = run('report', part);
    assert.notEqual(missing.status, 0);
    assert.match(missing.stderr, /events\.jsonl: missing/);
  });

  test('the image budget caps the overlays and says how many were left out', async () => {
    const small = path.join(work, 'small.html');
    const full = await writeReport(kvasirRun, { out: path.join(work, 'full.html') });
    const capped = await writeReport(kvasirRun, { out: small, imageBudget: 200_000 });
    assert.ok(capped.bytes < full.bytes);
    const html = fs.readFileSync(small, 'utf8');
    assert.match(html, /more example\(s\) left out to keep the report small/);
    assert.ok(capped.bytes < 1_100_000 + 200_000, `${capped.bytes} bytes`);
  });
});

describe('compare page', () => {
  test('bars, seed points, time scatter, tables = compare.json, links to each run page', async () => {
    const { page, problems } = await open(path.join(compareDir, 'report.html'), 'compare');
    assert.deepEqual(problems, []);
    const c = readJson<{ runs: Array<{ method: string; seed: number; dice: number; iou: number; seconds: number; derived_ops: Record<string, string> | null }>; methods: Array<{ method: string; dice_mean: number; dice_sd: number; iou_mean: number }> }>(path.join(compareDir, 'compare.json'));
    const charts = await page.evaluate(() => [...document.querySelectorAll<HTMLElement>('.chart')].map((el) => ({
      kind: el.dataset.kind!, bars: el.querySelectorAll('g.mark-rect.role-mark path').length, points: el.querySelectorAll('g.mark-symbol.role-mark path').length,
      rules: el.querySelectorAll('g.mark-rule.role-mark line').length,
    })));
    const bars = charts.filter((x) => x.kind === 'bars');
    assert.equal(bars.length, 2);
    for (const b of bars) {
      assert.equal(b.bars, c.methods.length);
      assert.equal(b.points, c.runs.length);
      assert.equal(b.rules, c.methods.length);
    }
    assert.equal(charts.find((x) => x.kind === 'scatter')!.points, c.runs.length);
    const tab = await tableValues(page, 'compare-table');
    for (const m of c.methods) {
      assert.equal(Number(tab[m.method]!['Dice mean']), m.dice_mean);
      assert.equal(Number(tab[m.method]!['Dice sd']), m.dice_sd);
      assert.equal(Number(tab[m.method]!['IoU mean']), m.iou_mean);
    }
    // derived ops of every NAS run side by side
    const nas = c.runs.filter((r) => r.derived_ops);
    const der = await tableValues(page, 'derived-table');
    for (const r of nas) for (const [layer, op] of Object.entries(r.derived_ops!)) assert.equal(der[layer.replace(/^image_encoder\./, '').replace(/\.adapter\.cell$/, '')]![`${r.method} seed ${r.seed}`], op);
    // every run links to its own page (relative), and each page opens cleanly
    const links = await page.$$eval('#runs-table a', (as) => as.map((a) => a.getAttribute('href')!));
    assert.equal(links.length, c.runs.length);
    for (const l of links) {
      assert.ok(!path.isAbsolute(l), l);
      assert.ok(fs.existsSync(path.join(compareDir, l)), l);
    }
    const nasLink = links.find((l) => l.startsWith('nas-lora/'))!;
    await page.close();
    const sub = await open(path.join(compareDir, nasLink), 'compare-nas-lora-run');
    assert.deepEqual(sub.problems, []);
    assert.ok(await sub.page.$('.chart[data-kind=heatmap] svg'));
    await sub.page.close();
  });
});

describe('demo page', () => {
  test('the source model next to each adapted method on the same target images', async () => {
    const { page, problems } = await open(path.join(demo, 'report.html'), 'demo');
    assert.deepEqual(problems, []);
    const res = readJson<{ rows: Array<{ method: string; dice: number }> }>(path.join(demo, 'demo_results.json'));
    const tab = await tableValues(page, 'demo-table');
    for (const r of res.rows) assert.equal(Number(tab[r.method]!.Dice), r.dice);
    const grid = await page.evaluate(() => [...document.querySelectorAll<HTMLElement>('#side-by-side-grid .example')].map((e) => [...e.querySelectorAll('figcaption')].map((f) => f.textContent!)));
    assert.equal(grid.length, 3);
    for (const g of grid) {
      assert.deepEqual(g.slice(0, 2), ['image', 'ground truth']);
      for (const [k, m] of ['source model (no adaptation)', 'nas-lora', 'lora', 'conv-lora'].entries()) assert.ok(g[2 + k]!.startsWith(m), `${g[2 + k]} is ${m}`);
    }
    const sizes = await page.$$eval('#side-by-side-grid img', (is) => is.map((i) => [i.complete, i.naturalWidth, i.naturalHeight]));
    for (const s of sizes) assert.deepEqual(s, [true, 64, 64]);
    await page.close();
  });

  test('not a report folder: a clear error', () => {
    const r = run('report', work);
    assert.notEqual(r.status, 0);
    assert.match(r.stderr, /not a run folder/);
  });
});
