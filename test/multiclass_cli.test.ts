// Multi-class segmentation through the command line, end to end, on a synthetic 4-class data set
// written as files (class-index PNGs with an ignore band): `train` (LoRA, tiny SAM) learns it to
// mIoU > 0.8 on the held-out test split; `eval` of the saved adapter gives metrics.json's test scores
// again; `predict` writes class maps whose per-class IoU / Dice / mIoU / pixel accuracy, computed by
// NumPy from the PNG files, are the scores `eval` reported; the report shows the per-class table and
// class-coloured examples in a real browser; `export` keeps the class heads in an adapter and refuses
// formats that cannot hold them; `compare` reports per-class IoU; bad masks and bad configs are refused
// with messages that say what to do.
import { after, before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import puppeteer, { type Browser } from 'puppeteer-core';
import YAML from 'yaml';
import { SHAPE_CLASSES, writeShapes } from './helpers/shapes.js';
import { PYTHON } from './helpers/pyref.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = path.join(ROOT, 'dist/src/cli/main.js');
const CHROMIUM = process.env.CHROMIUM ?? '/usr/bin/chromium';
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-mc-cli-'));
const at = (...p: string[]) => path.join(work, ...p);
const cli = (...args: string[]) => spawnSync(process.execPath, [CLI, ...args], { encoding: 'utf8', cwd: work });
const readJson = <T>(f: string): T => JSON.parse(fs.readFileSync(f, 'utf8')) as T;

const TINY = {
  img_size: 64, patch_size: 4, embed_dim: 48, depth: 2, num_heads: 4, mlp_ratio: 2, window_size: 4, global_attn_indexes: [1],
  prompt_embed_dim: 32, mask_in_chans: 8, decoder_depth: 2, decoder_mlp_dim: 64, decoder_heads: 4, iou_head_hidden_dim: 16,
};
const BASE = [
  '--set', 'model.pretrained=none', '--set', 'model.checkpoint=null', '--set', `model.config=${at('tiny.json')}`,
  '--set', `data.dir=${at('data')}`, '--set', 'data.classes={num_classes: 4, ignore_index: 255}', '--set', 'loss=ce-dice',
  '--set', 'eval.metrics=[dice, iou]', '--set', 'data.image_size=64', '--set', 'data.label_size=32', '--set', 'data.batch_size=8',
  '--set', 'data.cache=true', '--set', 'train.epochs=null', '--set', 'optim.lr=0.01', '--set', 'method.rank=8',
];
const RUN = at('run');

interface ClassTable { names: string[]; iou: Array<number | null>; dice: Array<number | null>; pixels: number[]; present: number[] }
interface Summary { count: number; dice: number; iou: number; pixelAccuracy: number; classes: ClassTable }

/** pretrained=none: a run's base is the fresh tiny SAM of train.seed 0; written out for eval, predict, export, serve. */
function writeBase(): void {
  const base = at('base.safetensors');
  const dist = (m: string) => JSON.stringify(path.join(ROOT, 'dist/src', m));
  const w = spawnSync(process.execPath, ['--input-type=module', '-e', `
    const { Sam } = await import(${dist('model/sam/sam.js')});
    const { manualSeed } = await import(${dist('engine/index.js')});
    const { writeSafetensors } = await import(${dist('io/safetensors.js')});
    const { toRaw } = await import(${dist('adapters/io.js')});
    const { samConfigMetadata } = await import(${dist('model/sam/build.js')});
    const cfg = ${JSON.stringify(TINY)};
    manualSeed(0);
    const m = Sam.fromConfig(cfg);
    writeSafetensors(${JSON.stringify(base)}, [...m.stateDict()].map(([n, t]) => [n, toRaw(t)]), { format: 'pt', ...samConfigMetadata(cfg) });
  `], { encoding: 'utf8' });
  assert.equal(w.status, 0, w.stderr);
}

before(async () => {
  fs.writeFileSync(at('tiny.json'), JSON.stringify({ config: TINY }));
  writeBase();
  // 160 images 64×64 with 1–3 shapes each; the bottom 4 rows of every mask are 255 (ignored).
  await writeShapes(at('data'), { n: 160, width: 64, height: 64, seed: 1, ignoreBand: 4 });
});
after(() => fs.rmSync(work, { recursive: true, force: true }));

test('train → eval → predict: a tiny SAM with LoRA learns 4 classes (mIoU > 0.8); eval and NumPy agree with the run', async () => {
  const t = cli('train', '-c', 'lora', ...BASE, '--set', 'train.steps=300', '--set', 'train.eval_every=150', '--set', 'eval.resolution=original', '--set', 'data.label_size=64', '--set', `train.out_dir=${RUN}`);
  assert.equal(t.status, 0, t.stderr.slice(-3000));
  assert.match(t.stdout + t.stderr, /val mDice [\d.]+ mIoU [\d.]+ pixel-acc [\d.]+ \| IoU background [\d.]+, class 1/);
  assert.match(t.stderr, /test \(at original resolution\): mDice [\d.]+ mIoU [\d.]+ pixel-acc [\d.]+ \| IoU background/);
  const m = readJson<{ test: Summary; scoring: { test_resolution: string } }>(path.join(RUN, 'metrics.json'));
  const s = m.test;
  console.log(`multi-class CLI run: test mIoU ${s.iou.toFixed(4)}, mDice ${s.dice.toFixed(4)}, pixel accuracy ${s.pixelAccuracy.toFixed(4)}; IoU per class ${s.classes.iou.map((v) => v!.toFixed(3)).join(', ')} (${s.count} images)`);
  assert.equal(m.scoring.test_resolution, 'original');
  assert.ok(s.iou > 0.8, `test mIoU ${s.iou}`);
  assert.deepEqual(s.classes.names, ['background', 'class 1', 'class 2', 'class 3']);
  assert.deepEqual(s.classes.present, [0, 1, 2, 3]);
  // the ignore band counts nowhere: the ground-truth pixels are 60 of 64 rows
  assert.equal(s.classes.pixels.reduce((a, b) => a + b, 0), s.count * 64 * 60);
  const adapterCfg = readJson<{ classes: { names: string[]; ignore_index: number }; input: { image_size: number; resize: string } }>(path.join(RUN, 'checkpoints/last/adapter_config.json'));
  assert.deepEqual(adapterCfg.classes.names, s.classes.names);
  assert.equal(adapterCfg.classes.ignore_index, 255);
  assert.deepEqual(adapterCfg.input, { image_size: 64, resize: 'squash' });

  // eval of the final adapter (the model metrics.json's test scores came from), same split: the same numbers
  const base = at('base.safetensors');
  const ev2 = cli('eval', '--checkpoint', base, '--adapter', path.join(RUN, 'checkpoints/last'), '--data', at('data'), '--split', 'test', '-o', at('eval'), '--save-predictions', at('eval', 'pred'));
  assert.equal(ev2.status, 0, ev2.stderr.slice(-2000));
  assert.match(ev2.stdout, /mDice [\d.]+ mIoU [\d.]+ pixel-acc/);
  const e = readJson<Summary & { resize: string }>(at('eval', 'summary.json'));
  assert.equal(e.resize, 'squash', "the adapter's training resize");
  assert.equal(e.count, s.count);
  for (const k of ['dice', 'iou', 'pixelAccuracy'] as const) assert.ok(Math.abs(e[k] - s[k]) < 1e-12, `${k}: eval ${e[k]} vs run ${s[k]}`);
  assert.deepEqual(e.classes, s.classes);
  const csv = fs.readFileSync(at('eval', 'per_image.csv'), 'utf8').trim().split('\n');
  assert.equal(csv[0], 'id,dice,iou,pixel_accuracy,iou_background,iou_class 1,iou_class 2,iou_class 3,dice_background,dice_class 1,dice_class 2,dice_class 3');
  assert.equal(csv.length, 1 + s.count);

  // NumPy's scores of the predictions eval saved (class maps at the original size) and the ground-truth files = eval's
  const ids = csv.slice(1).map((l) => l.split(',')[0]!);
  const pairs = ids.flatMap((id) => [at('eval', 'pred', `${id}.png`), at('data', 'masks', `${id}.png`)]);
  // predict, on a few of the images, writes the same class maps
  const pixels = async (f: string) => ({ meta: await sharp(f).metadata(), data: await sharp(f).extractChannel(0).raw().toBuffer() });
  for (const id of ids.slice(0, 3)) {
    const out = at('pred', id);
    const p = cli('predict', '--checkpoint', base, '--adapter', path.join(RUN, 'checkpoints/last'), '--image', at('data', 'images', `${id}.png`), '-o', out);
    assert.equal(p.status, 0, p.stderr);
    const [a, b] = [await pixels(path.join(out, 'classes.png')), await pixels(at('eval', 'pred', `${id}.png`))];
    for (const x of [a, b]) assert.deepEqual([x.meta.width, x.meta.height, x.meta.channels], [64, 64, 1], 'one 8-bit channel of class indices');
    assert.deepEqual(a.data, b.data, `${id}: predict's classes.png = eval's saved prediction`);
  }
  const first = at('pred', ids[0]!);
  assert.deepEqual(fs.readdirSync(first).sort(), ['classes.json', 'classes.png', 'overlay.png']);
  const cj = readJson<{ classes: Array<{ name: string; share: number }> }>(path.join(first, 'classes.json'));
  assert.equal(cj.classes.length, 4);
  assert.ok(Math.abs(cj.classes.reduce((a, c) => a + c.share, 0) - 1) < 1e-12);
  const ref = spawnSync(PYTHON, [path.join(ROOT, 'test/py/multiclass_metrics_ref.py'), '4', '255', ...pairs], { encoding: 'utf8' });
  assert.equal(ref.status, 0, ref.stderr);
  const np = JSON.parse(ref.stdout) as { iou: Array<number | null>; dice: Array<number | null>; miou: number; mdice: number; pa: number; images: Array<{ miou: number; mdice: number; pa: number }> };
  for (let c = 0; c < 4; c++) {
    assert.ok(Math.abs(np.iou[c]! - e.classes.iou[c]!) < 1e-12, `IoU class ${c}: NumPy ${np.iou[c]} vs eval ${e.classes.iou[c]}`);
    assert.ok(Math.abs(np.dice[c]! - e.classes.dice[c]!) < 1e-12, `Dice class ${c}`);
  }
  assert.ok(Math.abs(np.miou - e.iou) < 1e-12 && Math.abs(np.mdice - e.dice) < 1e-12 && Math.abs(np.pa - e.pixelAccuracy) < 1e-12);
  // per image too (per_image.csv rows, 6 decimals)
  csv.slice(1).forEach((line, i) => {
    const [, dice, iou, pa] = line.split(',').map(Number);
    assert.ok(Math.abs(dice! - np.images[i]!.mdice) < 1e-6 && Math.abs(iou! - np.images[i]!.miou) < 1e-6 && Math.abs(pa! - np.images[i]!.pa) < 1e-6, `image ${ids[i]}`);
  });
  // prompts make no sense for a multi-class adapter: refused, nothing written
  const bad = cli('predict', '--checkpoint', base, '--adapter', path.join(RUN, 'checkpoints/last'), '--image', at('data', 'images', `${ids[0]}.png`), '--point', '10,10,1', '-o', at('pred-bad'));
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /multi-class adapter \(4 classes\).*drop --point/);
  assert.ok(!fs.existsSync(at('pred-bad')));

  // export: the adapter format keeps the heads (and predicts the same); merged and PEFT are refused
  for (const format of ['merged', 'peft']) {
    const out = at(`export-${format}${format === 'merged' ? '.safetensors' : ''}`);
    const x = cli('export', '--checkpoint', base, '--adapter', path.join(RUN, 'checkpoints/last'), '--format', format, '-o', out);
    assert.notEqual(x.status, 0, format);
    assert.match(x.stderr, /multi-class adapter \(4 classes: background, class 1, class 2, class 3\).*class heads.*--format adapter/);
    assert.ok(!fs.existsSync(out), `${format}: nothing written`);
  }
  const xa = cli('export', '--checkpoint', base, '--adapter', path.join(RUN, 'checkpoints/last'), '--format', 'adapter', '-o', at('export-adapter'));
  assert.equal(xa.status, 0, xa.stderr);
  assert.match(xa.stdout, /4 class heads .* are kept in the adapter/);
  const p2 = cli('predict', '--checkpoint', base, '--adapter', at('export-adapter'), '--image', at('data', 'images', `${ids[0]}.png`), '-o', at('pred-exported'));
  assert.equal(p2.status, 0, p2.stderr);
  assert.deepEqual(fs.readFileSync(at('pred-exported', 'classes.png')), fs.readFileSync(path.join(first, 'classes.png')));

  // the report in a real browser: per-class table = metrics.json, class-coloured panels at the image size
  const browser: Browser = await puppeteer.launch({ executablePath: CHROMIUM, headless: true, args: ['--no-sandbox', '--disable-gpu', '--disable-dev-shm-usage'] });
  try {
    const page = await browser.newPage();
    const problems: string[] = [];
    page.on('console', (msg) => { if (msg.type() === 'error') problems.push(msg.text()); });
    page.on('pageerror', (err) => problems.push((err as Error).message));
    await page.goto(`file://${path.join(RUN, 'report.html')}`, { waitUntil: 'load' });
    await page.evaluate(() => (window as unknown as { naslora: { ready: Promise<unknown> } }).naslora.ready);
    assert.deepEqual(problems, []);
    const rows = await page.evaluate(() => [...document.querySelectorAll('#class-table tbody tr')].map((r) => [...r.querySelectorAll('td')].map((c) => c.getAttribute('data-value') ?? c.textContent!.trim())));
    assert.equal(rows.length, 4);
    rows.forEach((r, c) => {
      assert.equal(r[0], s.classes.names[c]);
      assert.ok(Math.abs(Number(r[1]) - s.classes.iou[c]!) < 1e-9, `IoU ${c} in the page`);
      assert.ok(Math.abs(Number(r[2]) - s.classes.dice[c]!) < 1e-9, `Dice ${c} in the page`);
    });
    const lines = await page.evaluate(() => document.querySelectorAll('.chart[data-kind="eval"] g.mark-line.role-mark path').length);
    assert.equal(lines, 3 + 4, 'mDice, mIoU, pixel accuracy and one IoU line per class');
    assert.match(await page.evaluate(() => document.body.textContent!), /Best val mDice \d\.\d{4} at step/);
    const legend = await page.evaluate(() => document.getElementById('class-legend')?.textContent ?? '');
    for (const n of s.classes.names) assert.ok(legend.includes(n), n);
    const panels = await page.evaluate(async () => Promise.all([...document.querySelectorAll<HTMLImageElement>('.example img[data-panel="prediction"]')].map(async (img) => {
      await img.decode();
      return [img.naturalWidth, img.naturalHeight];
    })));
    assert.ok(panels.length >= 3);
    for (const p of panels) assert.deepEqual(p, [64, 64]);
    fs.mkdirSync(path.join(os.tmpdir(), 'naslora-report-screenshots'), { recursive: true });
    await page.screenshot({ path: path.join(os.tmpdir(), 'naslora-report-screenshots', 'run-multiclass.png'), fullPage: true });
  } finally {
    await browser.close();
  }
});

test('compare over multi-class runs: per-class IoU mean ± sd per method; zero-shot refused', () => {
  const baseCfg = {
    model: { pretrained: 'none', checkpoint: null, config: at('tiny.json') },
    data: { dir: at('data'), classes: { num_classes: 4, ignore_index: 255 }, image_size: 64, label_size: 32, batch_size: 8, cache: true },
    loss: 'ce-dice', eval: { metrics: ['dice', 'iou'] }, method: { rank: 8 }, optim: { lr: 0.01 }, train: { epochs: null, steps: 6, eval_every: 3 },
  };
  const file = (methods: string[], out: string) => YAML.stringify({ base: baseCfg, methods, seeds: [0, 1], out_dir: out });
  const yaml = file(['decoder-only', 'lora'], at('cmp'));
  fs.writeFileSync(at('cmp.yaml'), yaml);
  const r = cli('compare', '-c', at('cmp.yaml'));
  assert.equal(r.status, 0, r.stderr.slice(-3000));
  const c = readJson<{ methods: Array<{ method: string; classes: { names: string[]; iou_mean: number[]; iou_sd: number[] }; pixel_accuracy_mean: number }>; runs: Array<{ classes: { iou: Array<number | null> } }> }>(at('cmp', 'compare.json'));
  assert.equal(c.runs.length, 4);
  for (const m of c.methods) {
    assert.deepEqual(m.classes.names, ['background', 'class 1', 'class 2', 'class 3']);
    assert.ok(Number.isFinite(m.pixel_accuracy_mean));
    const runs = c.runs.filter((x) => (x as unknown as { method: string }).method === m.method);
    const bg = runs.map((x) => x.classes.iou[0]!);
    assert.ok(Math.abs(m.classes.iou_mean[0]! - (bg[0]! + bg[1]!) / 2) < 1e-12);
  }
  const md = fs.readFileSync(at('cmp', 'compare.md'), 'utf8');
  assert.match(md, /## Per class \(multi-class\)/);
  assert.match(md, /\| method \| pixel accuracy \| IoU background \| IoU class 1 \| IoU class 2 \| IoU class 3 \|/);
  fs.writeFileSync(at('cmp0.yaml'), file(['zero-shot', 'lora'], at('cmp0')));
  const z = cli('compare', '-c', at('cmp0.yaml'));
  assert.notEqual(z.status, 0);
  assert.match(z.stderr, /zero-shot has nothing to score multi-class data with/);
});

test('palette masks with a classes.json train under their class names; masks that are no class, and binary settings, are refused', async () => {
  await writeShapes(at('pal'), { n: 12, width: 48, height: 40, seed: 5, palette: true });
  const pal = cli('train', '-c', 'decoder-only', ...BASE, '--set', `data.dir=${at('pal')}`, '--set', `data.classes={file: ${at('pal', 'classes.json')}}`,
    '--set', 'train.steps=4', '--set', 'train.eval_every=2', '--set', `train.out_dir=${at('run-pal')}`);
  assert.equal(pal.status, 0, pal.stderr.slice(-2000));
  const m = readJson<{ test: Summary }>(at('run-pal', 'metrics.json'));
  assert.deepEqual(m.test.classes.names, SHAPE_CLASSES);
  assert.equal(m.test.classes.pixels.reduce((a, b) => a + b, 0), m.test.count * 32 * 32, 'scored at label size 32, no pixel ignored');

  // a stray value in one mask: the run stops, naming the file and the value
  fs.cpSync(at('pal'), at('stray'), { recursive: true });
  fs.rmSync(at('stray', 'classes.json'));
  for (const f of fs.readdirSync(at('stray', 'masks'))) {
    const { data, info } = await sharp(at('pal', 'masks', f)).raw().toBuffer({ resolveWithObject: true });
    const idx = new Uint8Array(info.width * info.height);
    for (let i = 0; i < idx.length; i++) idx[i] = data[3 * i] ? 1 : data[3 * i + 1] ? 2 : data[3 * i + 2] ? 3 : 0;
    if (f === 's005.png') idx[7] = 9;
    await sharp(idx, { raw: { width: info.width, height: info.height, channels: 1 } }).png().toFile(at('stray', 'masks', f));
  }
  const st = cli('train', '-c', 'lora', ...BASE, '--set', `data.dir=${at('stray')}`, '--set', 'train.steps=4', '--set', 'train.eval_every=2', '--set', `train.out_dir=${at('run-stray')}`, '--set', 'data.splits.fractions=[1, 0, 0]');
  assert.notEqual(st.status, 0);
  assert.match(st.stderr, /s005\.png: value 9 \(1 px\) is not one of the 4 classes or the ignore index 255 \(naslora data validate lists every such mask\)/);

  // binary settings with classes, and the multi-class loss without them, are config errors naming the key
  const cases: Array<[string[], RegExp]> = [
    [['--set', 'loss=structure'], /loss: 'structure' is a binary loss; multi-class data \(data\.classes\) trains with 'ce' or 'ce-dice'/],
    [['--set', 'data.mode=prompted'], /data\.mode: multi-class segmentation is prompt-free/],
    [['--set', 'eval.metrics=[dice, iou, mae]'], /eval\.metrics: .*mae is binary: set eval\.metrics=\[dice, iou\]/],
    [['--set', 'data.classes.loss_weights=[1, 2]'], /data\.classes\.loss_weights: 2 weights for 4 classes/],
    [['--set', 'data.classes.ignore_index=3'], /data\.classes\.ignore_index: 3 is also a class index \(0\.\.3\)/],
    [['--set', 'data.classes=null'], /loss: 'ce-dice' is the multi-class loss; set data\.classes/],
    [['--set', 'data.threshold=100'], /data\.threshold: binarizes binary masks; .*leave it at 127/],
    [['--set', 'eval.threshold=0.3'], /eval\.threshold: thresholds binary probabilities; .*leave it at 0\.5/],
    [['--set', 'schedule.stages.0.train=[lora]'], /schedule\.stages: multi-class: no stage trains 'decoder'/],
  ];
  for (const [extra, re] of cases) {
    const r = cli('train', '-c', 'lora', ...BASE, ...extra, '--set', 'train.steps=2', '--set', `train.out_dir=${at('run-cfg')}`, '--dry-run');
    assert.notEqual(r.status, 0, extra.join(' '));
    assert.match(r.stderr, re, extra.join(' '));
  }
  assert.ok(!fs.existsSync(at('run-cfg')));
});

test('every method trains multi-class: the class heads learn apart, the adapter holds them, serve refuses it', async () => {
  const { loadConfig } = await import('../src/train/config.js');
  const { runTraining } = await import('../src/train/run.js');
  const { openSafetensors } = await import('../src/io/safetensors.js');
  const quiet = { start() {}, tick() {}, stop() {}, log() {} };
  for (const method of ['decoder-only', 'lora', 'conv-lora', 'nas-lora', 'nas-pc-lora'] as const) {
    const out = at(`every-${method}`);
    const sets = BASE.filter((_, i) => i % 2 === 1).concat(['train.steps=6', 'train.eval_every=3', `train.out_dir=${out}`, 'data.num_workers=1']);
    const cfg = loadConfig(method, sets);
    const r = await runTraining(cfg, { progress: quiet });
    assert.equal(r.losses.length, 6, method);
    assert.ok(r.losses.every(Number.isFinite), method);
    const m = readJson<{ test: Summary }>(path.join(out, 'metrics.json'));
    assert.deepEqual(m.test.classes.names, ['background', 'class 1', 'class 2', 'class 3'], method);
    // the 4 class tokens started as copies of one token; trained, they differ
    const st = openSafetensors(path.join(out, 'checkpoints/last/adapter.safetensors'));
    try {
      const tok = st.get('mask_decoder.class_tokens.weight');
      assert.ok(tok, `${method}: class tokens saved`);
      assert.deepEqual(tok.shape, [4, TINY.prompt_embed_dim]);
      const v = new Float32Array(new Uint8Array(tok.read()).buffer);
      const d = TINY.prompt_embed_dim, row = (i: number) => v.subarray(i * d, (i + 1) * d);
      assert.ok(row(1).some((x, j) => x !== row(0)[j]), `${method}: class tokens learned apart`);
      assert.ok(st.get('mask_decoder.class_hypernetworks_mlps.3.layers.2.weight'), `${method}: hypernetworks saved`);
    } finally {
      st.close();
    }
  }
  const ins = cli('inspect', path.join(at('every-lora'), 'checkpoints/last'), '--json');
  assert.equal(ins.status, 0, ins.stderr);
  const rep = JSON.parse(ins.stdout) as { classes: { names: string[]; ignore_index: number }; input: { image_size: number; resize: string } };
  assert.deepEqual(rep.classes, { names: ['background', 'class 1', 'class 2', 'class 3'], ignore_index: 255 });
  assert.deepEqual(rep.input, { image_size: 64, resize: 'squash' });
  const sv = cli('serve', '--checkpoint', at('base.safetensors'), '--adapter', path.join(at('every-lora'), 'checkpoints/last'), '--port', '0');
  assert.notEqual(sv.status, 0);
  assert.match(sv.stderr, /multi-class adapter \(4 classes\) is prompt-free .*naslora predict/);
});
