// Learning-rate schedules as pure functions of the optimizer step (0-based) and the run's total steps.
//
// Warm-up: W = round(warmup_frac · totalSteps) steps rising linearly, lr·(step+1)/(W+1), so the first
// step already moves (no wasted step at lr 0) and the ramp meets the base lr at step W.
// After warm-up, with progress t = (step − W)/(totalSteps − W) in [0, 1):
//   poly      min_lr + (lr − min_lr)·(1 − t)^poly_power   (mmseg / Conv-LoRA style: the last step is
//                                                           just above min_lr, min_lr is reached at t = 1)
//   cosine    min_lr + (lr − min_lr)·(1 + cos πt)/2
//   constant  lr
// Steps at or past totalSteps get the t = 1 value.
import type { RunConfig } from './config.js';

export type LrScheduleConfig = Pick<RunConfig['optim'], 'lr' | 'schedule' | 'poly_power' | 'warmup_frac' | 'min_lr'>;

/** Number of warm-up steps for a run of totalSteps. */
export function warmupSteps(totalSteps: number, cfg: Pick<LrScheduleConfig, 'warmup_frac'>): number {
  return Math.min(totalSteps, Math.round(cfg.warmup_frac * totalSteps));
}

/** The learning rate at optimizer step `step` (0-based) of a run of totalSteps steps. */
export function learningRate(step: number, totalSteps: number, cfg: LrScheduleConfig): number {
  if (!Number.isInteger(totalSteps) || totalSteps <= 0) throw new Error(`learningRate: totalSteps must be a positive integer, got ${totalSteps}`);
  if (!Number.isInteger(step) || step < 0) throw new Error(`learningRate: step must be a non-negative integer, got ${step}`);
  const w = warmupSteps(totalSteps, cfg);
  if (step < w) return (cfg.lr * (step + 1)) / (w + 1);
  if (cfg.schedule === 'constant') return cfg.lr;
  const n = totalSteps - w;
  const t = n <= 0 ? 1 : Math.min(1, (step - w) / n);
  const span = cfg.lr - cfg.min_lr;
  if (cfg.schedule === 'poly') return cfg.min_lr + span * Math.pow(1 - t, cfg.poly_power);
  return cfg.min_lr + span * 0.5 * (1 + Math.cos(Math.PI * t));
}

/** learningRate / base lr: a multiplier to apply to other optimizers' own base rates (e.g. the α optimizer). */
export function lrScale(step: number, totalSteps: number, cfg: LrScheduleConfig): number {
  return learningRate(step, totalSteps, cfg) / cfg.lr;
}
