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
