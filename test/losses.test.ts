// Task losses: hand-computed tiny cases, and values + gradients against an independent PyTorch
// implementation of the same formulas (test/py/losses_ref.py).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { manualSeed, memory, randn, tensor, tidy, zeros, type Tensor } from '../src/engine/index.js';
import {
  LOSS_NAMES, balancedBceLoss, bceDiceLoss, diceLoss, lossByName, structureLoss, type LossFn, type LossName,
} from '../src/train/losses.js';
import type { RawTensor } from '../src/io/raw.js';
import { fromRaw, maxRelErr, raw, runPyRef, PYTHON } from './helpers/pyref.js';


const sp = (x: number): number => Math.log1p(Math.exp(x)); // softplus: −log σ(−x)
const LN2 = Math.log(2);
const close = (a: number, b: number, tol = 1e-6, what = ''): void =>
  assert.ok(Math.abs(a - b) <= tol * Math.max(1, Math.abs(b)), `${what}: ${a} vs ${b}`);
const t4 = (v: number[], h: number, w: number): Tensor => tensor(v, [1, 1, h, w]);

test('structure loss: hand-computed cases (empty mask; 1×1 foreground, count_include_pad border)', () => tidy(() => {
  // All-zero mask: avgpool = 0, weights 1, BCE = ln 2, inter = 0, union = 4·0.5 → wIoU = 1 − 1/3.
  close(structureLoss(zeros([1, 1, 2, 2]), zeros([1, 1, 2, 2])).item(), LN2 + 2 / 3, 1e-6, 'empty');
  // 1×1 foreground pixel: the 31×31 window holds 961 cells, 960 of them padding → avg 1/961.
  const w = 1 + 5 * (1 - 1 / 961);
  close(structureLoss(zeros([1, 1, 1, 1]), t4([1], 1, 1)).item(), LN2 + 1 - (0.5 * w + 1) / (w + 1), 1e-6, '1x1');
  // Confident and right: close to 0; confident and wrong: large.
  const y = t4([1, 0, 0, 1], 2, 2);
  assert.ok(structureLoss(y.mul(40).sub(20), y).item() < 0.2);
  assert.ok(structureLoss(y.mul(-40).add(20), y).item() > 10);
}));

test('balanced BCE: positives weighted by #neg/#total, negatives by #pos/#total, per image', () => tidy(() => {
  close(balancedBceLoss(zeros([1, 1, 1, 2]), t4([1, 0], 1, 2)).item(), 0.5 * LN2, 1e-6, 'balanced 1:1');
  const x = [2, -1, 0, 1];
  const want = (0.75 * sp(-2) + 0.25 * (sp(-1) + sp(0) + sp(1))) / 4;
  close(balancedBceLoss(t4(x, 2, 2), t4([1, 0, 0, 0], 2, 2)).item(), want, 1e-6, '1 pos of 4');
  // Per image: a batch of [image above, mirrored image] averages the two per-image losses...
  const xb = tensor([...x, 2, -1, 0, 1], [2, 1, 2, 2]);
  const yb = tensor([1, 0, 0, 0, 0, 1, 1, 1], [2, 1, 2, 2]);
  const second = (0.75 * sp(2) + 0.25 * (sp(1) + sp(0) + sp(-1))) / 4; // one negative (logit 2), three positives
  close(balancedBceLoss(xb, yb).item(), (want + second) / 2, 1e-6, 'per image');
  // ...while perImage=false counts 4 of 8 positive over the batch: both weights 1/2.
  const flat = 0.5 * (sp(-2) + sp(-1) + sp(0) + sp(1) + sp(2) + sp(1) + sp(0) + sp(-1)) / 8;
  close(balancedBceLoss(xb, yb, { perImage: false }).item(), flat, 1e-6, 'batch');
  // No positives: the negatives' weight is 0, the loss is 0 and finite.
  const e = balancedBceLoss(t4([3, -2], 1, 2), t4([0, 0], 1, 2)).item();
  assert.ok(Number.isFinite(e) && Math.abs(e) < 1e-8, `empty mask gives ${e}`);
}));

test('Dice (smooth 1) and BCE + Dice: hand-computed', () => tidy(() => {
  // p = (0.5, 0.5), y = (1, 0): 1 − (2·0.5 + 1)/(1 + 1 + 1) = 1/3.
  close(diceLoss(zeros([1, 1, 1, 2]), t4([1, 0], 1, 2)).item(), 1 / 3, 1e-6, 'dice');
  close(bceDiceLoss(zeros([1, 1, 1, 2]), t4([1, 0], 1, 2)).item(), LN2 + 1 / 3, 1e-6, 'bce+dice');
  // Per image vs whole batch: image 2 is empty and predicted empty-ish (p = 0.5 each).
  const x = zeros([2, 1, 1, 2]);
  const y = tensor([1, 1, 0, 0], [2, 1, 1, 2]);
  close(diceLoss(x, y).item(), ((1 - 3 / 4) + (1 - 1 / 2)) / 2, 1e-6, 'dice per image'); // (2+1)/(1+2+1), 1/(1+0+1)
  close(diceLoss(x, y, { perImage: false }).item(), 1 - 3 / 5, 1e-6, 'dice batch'); // (2·1+1)/(2+2+1)
}));

test('lossByName maps the config names; bad shapes and names are rejected', () => tidy(() => {
  const x = t4([0.3, -1], 1, 2), y = t4([1, 0], 1, 2);
  const pairs: Array<[LossName, LossFn]> = [['structure', structureLoss], ['bce-dice', bceDiceLoss], ['balanced-bce', balancedBceLoss]];
  assert.deepEqual([...LOSS_NAMES].sort(), pairs.map(([n]) => n).sort());
  for (const [n, f] of pairs) assert.equal(lossByName(n)(x, y).item(), f(x, y).item(), n);
  assert.throws(() => lossByName('focal' as LossName), /unknown loss 'focal'/);
  assert.throws(() => structureLoss(zeros([1, 1, 2, 2]), zeros([1, 1, 2, 3])), /same size/);
  assert.throws(() => diceLoss(zeros([2, 2]), zeros([2, 2])), /\(B, 1, H, W\)/);
}));

test('losses keep no intermediate tensors alive; only the scalar is returned', () => {
  const x = randn([2, 1, 33, 35]), y = randn([2, 1, 33, 35]).gt(0).float();
  for (const name of LOSS_NAMES) {
    const before = memory().liveTensors;
    const l = lossByName(name)(x, y);
    assert.deepEqual(l.shape, []);
    assert.equal(memory().liveTensors, before + 1, `${name} leaked ${memory().liveTensors - before - 1} tensor(s)`);
    l.dispose();
  }
  x.dispose();
  y.dispose();
});

test('every loss matches the PyTorch reference: values and gradients within 1e-5 relative', (t) => tidy(() => {
  manualSeed(5);
  const B = 4, H = 40, W = 47;
  const x = randn([B, 1, H, W]).mul(3);
  // Masks: a smooth blob, random pixels, an empty mask, a full mask (edge cases of the counts and the pooling).
  const blob = randn([1, 1, H, W]).add(1).gt(0).float();
  const y = tensor(new Float32Array([
    ...blob.toFloat32Array(), ...randn([1, 1, H, W]).gt(0.5).float().toFloat32Array(),
    ...new Float32Array(H * W), ...new Float32Array(H * W).fill(1),
  ]), [B, 1, H, W]);
  const ref = runPyRef('losses_ref.py', new Map([['x', raw(x)], ['y', raw(y)]]));
  if (!ref) { t.skip(`PyTorch is not importable by ${PYTHON}; skipping the reference comparison`); return; }
  const cases: Array<[string, LossFn]> = [
    ['structure', structureLoss],
    ['balanced_bce', (a, b) => balancedBceLoss(a, b)],
    ['balanced_bce_batch', (a, b) => balancedBceLoss(a, b, { perImage: false })],
    ['dice', (a, b) => diceLoss(a, b)],
    ['dice_batch', (a, b) => diceLoss(a, b, { perImage: false })],
    ['bce_dice', (a, b) => bceDiceLoss(a, b)],
  ];
  for (const [name, fn] of cases) {
    const xi = x.clone().requiresGrad_(true);
    const loss = fn(xi, y);
    loss.backward();
    const want = fromRaw(ref.get(name)!).item();
    close(loss.item(), want, 1e-5, `${name} value`);
    const e = maxRelErr(xi.grad!, fromRaw(ref.get(`${name}.grad`)!));
    assert.ok(e <= 1e-5, `${name}: gradient relative error ${e}`);
  }
}));
