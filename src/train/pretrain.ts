// Full training of a small SAM from scratch (every part trains), so adaptation can be shown where
// no SAM checkpoint can be downloaded. Writes <out>/sam.safetensors (segment-anything names) and
// <out>/model_config.json.
import * as path from 'node:path';
import { toRaw } from '../adapters/io.js';
import { writeFileAtomic } from '../io/atomic.js';
import { writeSafetensors } from '../io/safetensors.js';
import { samConfigMetadata } from '../model/sam/build.js';
import type { RunConfig } from './config.js';
import { runTraining, type RunOutcome } from './run.js';
import type { Progress } from './progress.js';

export const PRETRAIN_PARTS = ['encoder', 'decoder', 'iou_head', 'prompt_encoder'] as const;

/** Turns a run config into a from-scratch pretraining config (no adapter: method.name decoder-only, all parts train). */
export function pretrainConfig(cfg: RunConfig): RunConfig {
  return {
    ...cfg,
    model: { ...cfg.model, pretrained: 'none', checkpoint: null },
    method: { ...cfg.method, name: 'decoder-only' },
    schedule: { ...cfg.schedule, stages: [{ name: 'pretrain', share: 1, train: [...PRETRAIN_PARTS], optimize_alpha: false, alpha_split: 'train', discretize_at_entry: false }] },
  };
}

export async function pretrain(cfg: RunConfig, o: { progress?: Progress } = {}): Promise<RunOutcome & { checkpoint: string }> {
  const p = pretrainConfig(cfg);
  const out = p.train.out_dir;
  const checkpoint = path.join(out, 'sam.safetensors');
  // Called 'pretrain' in progress lines and metrics.json (it trains every part, no adapter); with
  // nothing held out it is scored on its training data, labelled as such (metrics.json `train`).
  const r = await runTraining(p, {
    progress: o.progress, label: 'pretrain', scoreTrainWhenNothingHeldOut: true,
    afterTrain: (b) => {
      // The configuration travels with the weights (SAM_CONFIG_KEY), so that loading it needs no model.config.
      writeSafetensors(checkpoint, [...b.sam.stateDict()].map(([n, t]) => [n, toRaw(t)]), { format: 'pt', naslora: 'pretrained', ...samConfigMetadata(b.config) });
      writeFileAtomic(path.join(out, 'model_config.json'), JSON.stringify({ config: b.config }, null, 2) + '\n');
    },
  });
  return { ...r, checkpoint };
}
