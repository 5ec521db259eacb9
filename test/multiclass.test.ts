// Multi-class building blocks: the loss against PyTorch's cross_entropy (class weights, ignore index,
// with and without the soft Dice term), values and gradients; the metrics against a reference written
// here from the benchmark definitions (dataset-level per-class IoU/Dice, mIoU over classes present,
// pixel accuracy, ignore index).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { manualSeed, randn, randint, tidy } from '../src/engine/index.js';
import { multiclassLoss } from '../src/train/losses.js';
import { argmaxClasses, countClasses, addCounts, emptyCounts, scores } from '../src/eval/multiclass.js';
import { fromRaw, maxRelErr, raw, runPyRef } from './helpers/pyref.js';

for (const [name, o, args] of [
  ['plain', {}, ['none', '0']],
  ['weights + ignore 255', { weight: [0.2, 1, 2.5, 0.7], ignoreIndex: 255 }, ['255', '0', '0.2', '1', '2.5', '0.7']],
  ['ignore + Dice', { ignoreIndex: 255, diceWeight: 0.5 }, ['255', '0.5']],
  ['weights + Dice', { weight: [1, 2, 3, 4], diceWeight: 1 }, ['none', '1', '1', '2', '3', '4']],
] as const) {
  test(`multiclassLoss (${name}) equals PyTorch's cross_entropy (+ Dice), value and gradient`, () => {
    manualSeed(7);
    tidy(() => {
      const x = randn([2, 4, 6, 5]).mul(2).requiresGrad_();
      let y = randint(0, 4, [2, 6, 5]);
      if ('ignoreIndex' in o) {
        const m = randint(0, 5, [2, 6, 5]).eq(0);  // ~1/5 of the pixels ignored
        y = y.mul(m.logicalNot().to('int64')).add(m.to('int64').mul(255));
      }
      const loss = multiclassLoss(x, y, o);
      loss.backward();
      const ref = runPyRef('multiclass_ref.py', new Map([['x', raw(x.detach())], ['y', raw(y)]]), [...args]);
      if (!ref) return;
      const refLoss = fromRaw(ref.get('loss')!).item();
      assert.ok(Math.abs(loss.item() - refLoss) <= 1e-5 * Math.abs(refLoss), `${loss.item()} vs ${refLoss}`);
      assert.ok(maxRelErr(x.grad!, fromRaw(ref.get('loss.grad')!)) < 1e-4);
    });
  });
}

test('multiclassLoss refuses mismatched shapes and weights', () => {
  tidy(() => {
    assert.throws(() => multiclassLoss(randn([1, 3, 4, 4]), randint(0, 3, [1, 5, 4])), /do not match/);
    assert.throws(() => multiclassLoss(randn([1, 3, 4, 4]), randint(0, 3, [1, 4, 4]), { weight: [1, 2] }), /2 class weights for 3 classes/);
  });
});

/** The benchmark definition, written plainly: per class over all pixels of all images. */
function reference(preds: number[][], gts: number[][], k: number, ignore: number | null) {
  const iou: number[] = [], dice: number[] = [];
  let correct = 0, valid = 0;
  for (let c = 0; c < k; c++) {
    let tp = 0, fp = 0, fn = 0;
    preds.forEach((p, n) => p.forEach((v, i) => {
      const g = gts[n]![i]!;
      if (g === ignore) return;
      if (v === c && g === c) tp++;
      else if (v === c) fp++;
      else if (g === c) fn++;
    }));
    iou.push(tp + fp + fn ? tp / (tp + fp + fn) : NaN);
    dice.push(tp + fp + fn ? (2 * tp) / (2 * tp + fp + fn) : NaN);
  }
  preds.forEach((p, n) => p.forEach((v, i) => { const g = gts[n]![i]!; if (g !== ignore) { valid++; if (g === v) correct++; } }));
  const m = (xs: number[]) => { const v = xs.filter((x) => !Number.isNaN(x)); return v.reduce((a, b) => a + b, 0) / v.length; };
  return { iou, dice, mIoU: m(iou), mDice: m(dice), pa: correct / valid };
}

test('multi-class metrics equal the benchmark definitions (random maps, a class absent, ignore index)', () => {
  let seed = 3;
  const rnd = () => { seed = (seed * 1103515245 + 12345) % 2 ** 31; return seed / 2 ** 31; };
  const k = 5;
  for (const ignore of [null, 255]) {
    // class 4 never appears: it must be left out of the means, not counted as IoU 1 or 0
    const preds = Array.from({ length: 3 }, () => Array.from({ length: 400 }, () => Math.floor(rnd() * 4)));
    const gts = preds.map((p) => p.map((v) => (rnd() < 0.1 && ignore !== null ? ignore : rnd() < 0.7 ? v : Math.floor(rnd() * 4))));
    let c = emptyCounts(k);
    for (let n = 0; n < 3; n++) c = addCounts(c, countClasses(preds[n]!, gts[n]!, k, ignore));
    const s = scores(c);
    const r = reference(preds, gts, k, ignore);
    for (let j = 0; j < 4; j++) {
      assert.ok(Math.abs(s.iou[j]! - r.iou[j]!) < 1e-12, `IoU class ${j}`);
      assert.ok(Math.abs(s.dice[j]! - r.dice[j]!) < 1e-12, `Dice class ${j}`);
    }
    assert.ok(Number.isNaN(s.iou[4]!) && Number.isNaN(r.iou[4]!));
    assert.deepEqual(s.present, [0, 1, 2, 3]);
    assert.ok(Math.abs(s.mIoU - r.mIoU) < 1e-12 && Math.abs(s.mDice - r.mDice) < 1e-12 && Math.abs(s.pixelAccuracy - r.pa) < 1e-12);
  }
  assert.throws(() => countClasses([0, 1], [0, 7], 3), /not a class in 0\.\.2/);
  assert.deepEqual([...argmaxClasses([0, 5, 1, 1, 2, 0, 3, 9, 0], 3, 3)], [2, 2, 0]);
});

// ---- the decoder's class heads, and a tiny SAM that learns a 4-class task

import { AdamW, noGrad, tensor } from '../src/engine/index.js';
import { Sam, type SamConfig } from '../src/model/sam/sam.js';
import { segmentClassLogits } from '../src/model/sam/segment.js';
import { mulberry32 } from '../src/data/dataset.js';

const TINY: SamConfig = {
  img_size: 64, patch_size: 8, embed_dim: 48, depth: 2, num_heads: 4, mlp_ratio: 2, window_size: 4, global_attn_indexes: [1],
  prompt_embed_dim: 32, mask_in_chans: 8, decoder_depth: 2, decoder_mlp_dim: 64, decoder_heads: 4, iou_head_hidden_dim: 16,
};

test('class heads start as copies of the single-mask token; the binary outputs are untouched', () => {
  manualSeed(1);
  const sam = Sam.fromConfig(TINY);
  tidy(() => noGrad(() => {
    const x = randn([2, 3, 64, 64]);
    const emb = sam.image_encoder.forward(x);
    const [sparse, dense] = sam.prompt_encoder.forward(null, null, null);
    const pe = sam.prompt_encoder.getDensePe();
    const before = sam.mask_decoder.forward(emb, pe, sparse.expand(2, -1, -1), dense.expand(2, -1, -1, -1), false, true)[0].toFloat32Array();
    sam.mask_decoder.addClassHeads(4);
    const after = sam.mask_decoder.forward(emb, pe, sparse.expand(2, -1, -1), dense.expand(2, -1, -1, -1), false, true)[0].toFloat32Array();
    assert.deepEqual(after, before);  // bit-identical
    const k = sam.mask_decoder.classMasks(emb, pe, sparse.expand(2, -1, -1), dense.expand(2, -1, -1, -1), true);
    assert.deepEqual(k.shape, [2, 4, 32, 32]);
    // identical tokens and MLPs: the same maps (up to BLAS rounding between rows)
    for (let c = 1; c < 4; c++) assert.ok(maxRelErr(k.select(1, c), k.select(1, 0)) < 1e-5, `class ${c}`);
    assert.throws(() => sam.mask_decoder.addClassHeads(3), /already/);
  }));
  const names = [...sam.namedParameters()].map(([n]) => n);
  assert.ok(names.includes('mask_decoder.class_tokens.weight') && names.includes('mask_decoder.class_hypernetworks_mlps.3.layers.2.bias'));
  sam.dispose();
});

/** 64×64 textured backgrounds with 1–3 shapes (1 square, 2 disk, 3 cross), labels at 32×32. */
function shapes(n: number, seed: number): { images: Float32Array; labels: BigInt64Array } {
  const rnd = mulberry32(seed);
  const S = 64, L = 32;
  const images = new Float32Array(n * 3 * S * S), labels = new BigInt64Array(n * L * L);
  const colour = [[0, 0, 0], [1.6, -0.4, -0.4], [-0.4, 1.6, -0.4], [-0.4, -0.4, 1.6]];
  for (let k = 0; k < n; k++) {
    const cls = new Uint8Array(S * S);
    const count = 1 + Math.floor(rnd() * 3);
    for (let s = 0; s < count; s++) {
      const c = 1 + Math.floor(rnd() * 3), r = 7 + rnd() * 5, cx = r + rnd() * (S - 2 * r), cy = r + rnd() * (S - 2 * r);
      for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) {
        const dx = Math.abs(x + 0.5 - cx), dy = Math.abs(y + 0.5 - cy);
        const inside = c === 1 ? dx < r && dy < r : c === 2 ? dx * dx + dy * dy < r * r : (dx < r && dy < r / 3) || (dy < r && dx < r / 3);
        if (inside) cls[y * S + x] = c;
      }
    }
    for (let y = 0; y < S; y++) for (let x = 0; x < S; x++) {
      const c = cls[y * S + x]!;
      for (let ch = 0; ch < 3; ch++) images[((k * 3 + ch) * S + y) * S + x] = colour[c]![ch]! + 0.5 * Math.sin(x * 0.9 + ch) * Math.cos(y * 0.7) + (rnd() - 0.5) * 0.8;
    }
    for (let y = 0; y < L; y++) for (let x = 0; x < L; x++) labels[k * L * L + y * L + x] = BigInt(cls[(2 * y) * S + 2 * x]!);  // nearest
  }
  return { images, labels };
}

test('a tiny SAM with class heads learns a synthetic 4-class task to mIoU > 0.8 on held-out images', () => {
  manualSeed(0);
  const sam = Sam.fromConfig(TINY);
  sam.mask_decoder.addClassHeads(4);
  const opt = new AdamW(sam.parameters(), { lr: 2e-3, weightDecay: 1e-4 });
  const train = shapes(256, 1), held = shapes(48, 2);
  const B = 16, S = 64, L = 32;
  sam.train();
  for (let step = 0; step < 400; step++) {
    const b = step % (256 / B);
    tidy(() => {
      const x = tensor(train.images.subarray(b * B * 3 * S * S, (b + 1) * B * 3 * S * S), [B, 3, S, S]);
      const y = tensor(train.labels.subarray(b * B * L * L, (b + 1) * B * L * L), [B, L, L], { dtype: 'int64' });
      opt.zeroGrad();
      multiclassLoss(segmentClassLogits(sam, x), y, { diceWeight: 0.5 }).backward();
      opt.step();
    });
  }
  sam.eval();
  const counts = emptyCounts(4);
  noGrad(() => tidy(() => {
    const logits = segmentClassLogits(sam, tensor(held.images, [48, 3, S, S])).toFloat32Array();
    for (let k = 0; k < 48; k++) {
      const pred = argmaxClasses(logits.subarray(k * 4 * L * L, (k + 1) * 4 * L * L), 4, L * L);
      countClasses(pred, Array.from(held.labels.subarray(k * L * L, (k + 1) * L * L), Number), 4, null, counts);
    }
  }));
  const s = scores(counts);
  console.log(`4-class synthetic task: mIoU ${s.mIoU.toFixed(3)} (per class ${s.iou.map((v) => v.toFixed(3)).join(', ')}), pixel accuracy ${s.pixelAccuracy.toFixed(3)}`);
  assert.ok(s.mIoU > 0.8, `mIoU ${s.mIoU}`);
  opt.dispose();
  sam.dispose();
});

// ---- data validation of multi-class masks

import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';

const CLI = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../src/cli/main.js');

test('data validate --num-classes / --classes: classes present, pixel shares, images per class, unknown indices, palette mismatches', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-mc-'));
  try {
    for (const sub of ['images', 'masks', 'pal/images', 'pal/masks']) fs.mkdirSync(path.join(dir, sub), { recursive: true });
    const W = 8, H = 4;
    // a: classes 0,1 + 4 ignored pixels; b: classes 0,2 and a stray value 7 (2 pixels); class 3 never appears
    const a = new Uint8Array(W * H).fill(0); a.fill(1, 0, 12); a.fill(255, 28, 32);
    const b = new Uint8Array(W * H).fill(0); b.fill(2, 8, 16); b[20] = 7; b[21] = 7;
    for (const [id, m] of [['a', a], ['b', b]] as const) {
      await sharp(m, { raw: { width: W, height: H, channels: 1 } }).png().toFile(path.join(dir, 'masks', `${id}.png`));
      await sharp({ create: { width: W, height: H, channels: 3, background: '#808080' } }).png().toFile(path.join(dir, 'images', `${id}.png`));
    }
    const r = spawnSync(process.execPath, [CLI, 'data', 'validate', dir, '--num-classes', '4', '--ignore-index', '255', '--json'], { encoding: 'utf8' });
    assert.equal(r.status, 1, r.stderr);  // an unknown index is an error
    const rep = JSON.parse(r.stdout) as { classes: Array<{ index: number; pixelShare: number; images: number }>; ignoredPixels: number; issues: Array<{ code: string; ids: string[]; message: string }> };
    const valid = 64 - 4 - 2;
    assert.deepEqual(rep.classes.map((c) => c.images), [2, 1, 1, 0]);
    assert.ok(Math.abs(rep.classes[1]!.pixelShare - 12 / valid) < 1e-12 && Math.abs(rep.classes[2]!.pixelShare - 8 / valid) < 1e-12);
    assert.equal(rep.ignoredPixels, 4);
    const unk = rep.issues.find((i) => i.code === 'unknown-class-index')!;
    assert.deepEqual(unk.ids, ['b']);
    assert.match(unk.message, /mask value 7 .* 2 pixels/);
    assert.ok(rep.issues.some((i) => i.code === 'absent-class' && /3 class 3/.test(i.message)));
    // palette masks with a classes.json; one mask has a colour not in it
    const classes = { classes: [{ name: 'background', index: 0, colour: [0, 0, 0] }, { name: 'leaf', index: 1, colour: [0, 200, 0] }, { name: 'lesion', index: 2, colour: [200, 0, 0] }] };
    fs.writeFileSync(path.join(dir, 'classes.json'), JSON.stringify(classes));
    const pal = (cols: number[][]) => sharp(Uint8Array.from(cols.flat()), { raw: { width: W, height: H, channels: 3 } }).png();
    const px = (c: number[], n: number) => Array.from({ length: n }, () => c);
    await pal([...px([0, 200, 0], 16), ...px([0, 0, 0], 16)]).toFile(path.join(dir, 'pal/masks/p.png'));
    await pal([...px([200, 0, 0], 10), ...px([0, 0, 255], 6), ...px([0, 0, 0], 16)]).toFile(path.join(dir, 'pal/masks/q.png'));
    for (const id of ['p', 'q']) await sharp({ create: { width: W, height: H, channels: 3, background: '#808080' } }).png().toFile(path.join(dir, 'pal/images', `${id}.png`));
    const p = spawnSync(process.execPath, [CLI, 'data', 'validate', path.join(dir, 'pal'), '--classes', path.join(dir, 'classes.json'), '--json'], { encoding: 'utf8' });
    assert.equal(p.status, 1, p.stderr);
    const prep = JSON.parse(p.stdout) as typeof rep;
    assert.deepEqual(prep.classes.map((c) => c.images), [2, 1, 1]);
    const mis = prep.issues.find((i) => i.code === 'palette-mismatch')!;
    assert.deepEqual(mis.ids, ['q']);
    assert.match(mis.message, /colour \(0,0,255\) is not in classes\.json: 6 pixels/);
    // a broken classes.json: a clear error
    fs.writeFileSync(path.join(dir, 'bad.json'), JSON.stringify({ classes: [{ name: 'a', index: 0 }, { name: 'b', index: 0 }] }));
    const bad = spawnSync(process.execPath, [CLI, 'data', 'validate', dir, '--classes', path.join(dir, 'bad.json')], { encoding: 'utf8' });
    assert.notEqual(bad.status, 0);
    assert.match(bad.stderr, /index 0 is given twice/);
    // binary data sets are unchanged: no class report
    const bin = spawnSync(process.execPath, [CLI, 'data', 'validate', dir, '--json'], { encoding: 'utf8' });
    assert.equal((JSON.parse(bin.stdout) as { classes?: unknown }).classes, undefined);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
