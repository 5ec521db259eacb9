// Learning-rate schedules against hand-computed values.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { learningRate, lrScale, warmupSteps, type LrScheduleConfig } from '../src/train/lr.js';

const cfg = (o: Partial<LrScheduleConfig> = {}): LrScheduleConfig => ({ lr: 1e-4, schedule: 'poly', poly_power: 0.9, warmup_frac: 0, min_lr: 0, ...o });
const close = (a: number, b: number, what: string): void => assert.ok(Math.abs(a - b) <= 1e-12 * Math.max(1, Math.abs(b)) + 1e-18, `${what}: ${a} vs ${b}`);
const lrs = (total: number, c: LrScheduleConfig): number[] => Array.from({ length: total }, (_, s) => learningRate(s, total, c));

test('poly decay without warm-up: lr·(1 − s/N)^p, min_lr floor', () => {
  // N = 10, p = 2: (1 − s/10)² → 1, 0.81, 0.64, ..., 0.01
  lrs(10, cfg({ lr: 1, poly_power: 2 })).forEach((v, s) => close(v, (1 - s / 10) ** 2, `step ${s}`));
  // p = 1, min_lr 0.1: 0.1 + 0.9·(1 − s/4) → 1, 0.775, 0.55, 0.325; at and past the end: min_lr
  const c = cfg({ lr: 1, poly_power: 1, min_lr: 0.1 });
  lrs(4, c).forEach((v, s) => close(v, [1, 0.775, 0.55, 0.325][s]!, `step ${s}`));
  close(learningRate(4, 4, c), 0.1, 'end');
  close(learningRate(99, 4, c), 0.1, 'past the end');
  // The preset's poly 0.9 at half way: 1e-4 · 0.5^0.9
  close(learningRate(50, 100, cfg()), 1e-4 * 0.5 ** 0.9, 'half way');
});

test('linear warm-up then the schedule over the remaining steps', () => {
  // N = 10, warmup_frac 0.2 → W = 2 warm-up steps at lr·1/3, lr·2/3, then poly p = 1 over 8 steps.
  const c = cfg({ lr: 3, poly_power: 1, warmup_frac: 0.2 });
  assert.equal(warmupSteps(10, c), 2);
  const want = [1, 2, 3, 3 * 7 / 8, 3 * 6 / 8, 3 * 5 / 8, 3 * 4 / 8, 3 * 3 / 8, 3 * 2 / 8, 3 * 1 / 8];
  lrs(10, c).forEach((v, s) => close(v, want[s]!, `step ${s}`));
  // Constant with warm-up: ramp, then flat.
  assert.deepEqual(lrs(5, cfg({ lr: 4, schedule: 'constant', warmup_frac: 0.6 })), [1, 2, 3, 4, 4]);
  // W rounds to the nearest step; warmup_frac 1: the whole run ramps.
  assert.equal(warmupSteps(7, { warmup_frac: 0.1 }), 1);
  assert.deepEqual(lrs(3, cfg({ lr: 4, warmup_frac: 1 })), [1, 2, 3]);
});

test('cosine to min_lr', () => {
  // N = 4: t = 0, 1/4, 1/2, 3/4 → 0.1 + 0.9·(1 + cos πt)/2
  const c = cfg({ lr: 1, schedule: 'cosine', min_lr: 0.1 });
  const want = [1, 0.1 + 0.45 * (1 + Math.SQRT1_2), 0.55, 0.1 + 0.45 * (1 - Math.SQRT1_2)];
  lrs(4, c).forEach((v, s) => close(v, want[s]!, `step ${s}`));
  close(learningRate(4, 4, c), 0.1, 'end');
  // With warm-up 0.25 of 8: steps 0, 1 ramp (1/3, 2/3), then cosine over 6 steps.
  const w = cfg({ lr: 1, schedule: 'cosine', warmup_frac: 0.25 });
  const got = lrs(8, w);
  close(got[0]!, 1 / 3, 'w0');
  close(got[2]!, 1, 'first decay step');
  close(got[5]!, 0.5, 'half way through the decay'); // t = 3/6
});

test('lrScale is the ratio to the base lr; bad arguments are rejected', () => {
  close(lrScale(5, 10, cfg({ poly_power: 1 })), 0.5, 'scale');
  assert.equal(lrScale(3, 10, cfg({ schedule: 'constant' })), 1);
  assert.throws(() => learningRate(0, 0, cfg()), /totalSteps must be a positive integer/);
  assert.throws(() => learningRate(-1, 10, cfg()), /step must be a non-negative integer/);
  assert.throws(() => learningRate(1.5, 10, cfg()), /step must be/);
});
