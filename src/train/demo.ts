// `naslora demo`: the whole story on a new machine with no data or weights. A tiny SAM is
// pretrained on a synthetic source domain, then adapted to a different synthetic target domain
// with NAS-LoRA, LoRA and Conv-LoRA (same base, targets and rank), and evaluated on held-out
// target images.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { SamConfig } from '../model/sam/sam.js';
import { writeFileAtomic } from '../io/atomic.js';
import { parseConfig, PRESETS, type RunConfig, type RunConfigInput } from './config.js';
import { pretrain } from './pretrain.js';
import { runTraining, loadSplits, buildModel } from './run.js';
import { evaluate } from './trainer.js';
import { makeProgress, type Progress } from './progress.js';

export const DEMO_SAM: SamConfig = {
  img_size: 64, patch_size: 8, embed_dim: 64, depth: 4, num_heads: 4, mlp_ratio: 4, window_size: 4, global_attn_indexes: [1, 3],
  prompt_embed_dim: 32, mask_in_chans: 8, decoder_depth: 2, decoder_mlp_dim: 128, decoder_heads: 4, iou_head_hidden_dim: 32,
};

export interface DemoOptions {
  out: string;
  /** Smaller domains and fewer steps (tests, a first look). */
  quick?: boolean;
  seed?: number;
  methods?: string[];
  progress?: (label: string) => Progress;
}

export interface DemoRow { method: string; dice: number; iou: number; trainable: number; adapter: number; seconds: number }
export interface DemoResult { rows: DemoRow[]; derived: Record<string, string>; table: string }

function demoConfig(method: string, o: { out: string; modelConfig: string; checkpoint: string | null; kind: 'source' | 'target'; n: number; steps: number; lr: number; seed: number }): RunConfig {
  const raw = PRESETS[method as keyof typeof PRESETS]() as RunConfigInput;
  raw.model = { config: o.modelConfig, checkpoint: o.checkpoint, pretrained: o.checkpoint ? 'sam' : 'none' };
  raw.data = {
    ...raw.data, dir: null, synthetic: { kind: o.kind, n: o.n, size: 64, seed: o.seed + (o.kind === 'source' ? 0 : 1000) },
    image_size: DEMO_SAM.img_size, batch_size: 8, num_workers: 2, prefetch: 2,
    splits: { seed: o.seed, fractions: o.kind === 'source' ? [0.9, 0.1, 0] : [0.5, 0.1, 0.4], arch_frac: 0.15 },
  };
  raw.method = { ...raw.method!, rank: 4, lora_alpha: 8, experts: 4 };
  raw.optim = { ...raw.optim!, lr: o.lr, warmup_frac: 0.05 };
  raw.train = { epochs: null, steps: o.steps, seed: o.seed, eval_every: Math.max(1, Math.floor(o.steps / 4)), log_every: 10, out_dir: o.out };
  return parseConfig(raw, `demo config for ${method}`);
}

export async function runDemo(o: DemoOptions): Promise<DemoResult> {
  const seed = o.seed ?? 0;
  const q = o.quick ?? false;
  const progress = o.progress ?? ((l: string) => makeProgress(l));
  fs.mkdirSync(o.out, { recursive: true });
  const modelConfig = path.join(o.out, 'demo_sam_config.json');
  writeFileAtomic(modelConfig, JSON.stringify({ config: DEMO_SAM }, null, 2) + '\n');

  // 1. Pretrain on the source domain: every part of SAM trains.
  const src = demoConfig('decoder-only', { out: path.join(o.out, 'pretrain'), modelConfig, checkpoint: null, kind: 'source', n: q ? 48 : 400, steps: q ? 30 : 700, lr: 1e-3, seed });
  const pre = await pretrain(src, { progress: progress('pretrain (source domain)') });

  // 2. The pretrained model on the target domain, before any adaptation.
  const rows: DemoRow[] = [];
  const tgt = (m: string) => demoConfig(m, { out: path.join(o.out, m), modelConfig, checkpoint: pre.checkpoint, kind: 'target', n: q ? 40 : 200, steps: q ? 20 : 300, lr: 3e-3, seed });
  {
    const cfg = tgt('lora');
    const splits = loadSplits(cfg, 0);
    const b = buildModel({ ...cfg, method: { ...cfg.method, name: 'decoder-only' } }, () => undefined);
    const m = await evaluate(b.seg, splits.test, cfg, cfg.eval.threshold);
    b.sam.dispose();
    rows.push({ method: 'source model (no adaptation)', dice: m.dice, iou: m.iou, trainable: 0, adapter: 0, seconds: 0 });
  }

  // 3. Adapt with each method, same base, targets, rank, data and steps.
  const derived: Record<string, string> = {};
  for (const method of o.methods ?? ['nas-lora', 'lora', 'conv-lora']) {
    const cfg = tgt(method);
    const r = await runTraining(cfg, { progress: progress(method) });
    rows.push({ method, dice: r.test?.dice ?? NaN, iou: r.test?.iou ?? NaN, trainable: r.trainable, adapter: r.adapterParams, seconds: r.seconds });
    if (method === 'nas-lora') {
      const d = JSON.parse(fs.readFileSync(path.join(r.runDir, 'derived_ops.json'), 'utf8')) as { derived: Record<string, string> };
      Object.assign(derived, d.derived);
    }
  }
  const table = formatTable(rows, derived);
  writeFileAtomic(path.join(o.out, 'demo_results.json'), JSON.stringify({ rows, derived }, null, 2) + '\n');
  writeFileAtomic(path.join(o.out, 'demo_results.md'), table + '\n');
  return { rows, derived, table };
}

export function formatTable(rows: DemoRow[], derived: Record<string, string>): string {
  const head = '| method | Dice | IoU | trainable params (adapter + decoder) | encoder adapter params | train time (s) |\n| --- | --- | --- | --- | --- | --- |';
  const body = rows.map((r) => `| ${r.method} | ${r.dice.toFixed(4)} | ${r.iou.toFixed(4)} | ${r.trainable.toLocaleString('en-US')} | ${r.adapter.toLocaleString('en-US')} | ${r.seconds.toFixed(1)} |`).join('\n');
  const ops = Object.entries(derived).map(([p, op]) => `  ${p.replace(/\.adapter\.cell$/, '')}: ${op}`).join('\n');
  return `${head}\n${body}\n\nNAS-LoRA derived op per layer:\n${ops || '  (none)'}`;
}
