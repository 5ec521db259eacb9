// `naslora demo`: the whole story on a new machine with no data or weights. A tiny SAM is
// pretrained on a synthetic source domain, then adapted to a different synthetic target domain
// with NAS-LoRA, LoRA and Conv-LoRA (same base, targets and rank), each with 2 training seeds
// (1 with --quick) on the same data, and evaluated on held-out target images (mean ± sd).
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { SamConfig } from '../model/sam/sam.js';
import { writeFileAtomic } from '../io/atomic.js';
import { parseConfig, PRESETS, type RunConfig, type RunConfigInput } from './config.js';
import { pretrain } from './pretrain.js';
import { runTraining, loadSplits, buildModel } from './run.js';
import { evaluateReport, saveTestExamples } from './trainer.js';
import { makeProgress, type Progress } from './progress.js';
import { mean, sampleSd } from '../eval/stats.js';

export const DEMO_SAM: SamConfig = {
  img_size: 64, patch_size: 8, embed_dim: 64, depth: 4, num_heads: 4, mlp_ratio: 4, window_size: 4, global_attn_indexes: [1, 3],
  prompt_embed_dim: 32, mask_in_chans: 8, decoder_depth: 2, decoder_mlp_dim: 128, decoder_heads: 4, iou_head_hidden_dim: 32,
};

export interface DemoOptions {
  out: string;
  /** Smaller domains and fewer steps (tests, a first look). */
  quick?: boolean;
  seed?: number;
  /** Training seeds per method (default: 2, or 1 with quick); the data are the same for all. */
  seeds?: number;
  methods?: string[];
  progress?: (label: string) => Progress;
}

/** Means and sample sds over the seeds (sd 0 for one seed). */
export interface DemoRow { method: string; n: number; dice: number; dice_sd: number; iou: number; iou_sd: number; trainable: number; adapter: number; seconds: number }
/** NAS-LoRA's derived op per layer, per training seed. */
export interface DemoResult { rows: DemoRow[]; derived: Record<string, Record<string, string>>; table: string }

function demoConfig(method: string, o: { out: string; modelConfig: string; checkpoint: string | null; kind: 'source' | 'target'; n: number; steps: number; lr: number; seed: number; trainSeed?: number }): RunConfig {
  const raw = PRESETS[method as keyof typeof PRESETS]() as RunConfigInput;
  raw.model = { config: o.modelConfig, checkpoint: o.checkpoint, pretrained: o.checkpoint ? 'sam' : 'none' };
  raw.data = {
    ...raw.data, dir: null, synthetic: { kind: o.kind, n: o.n, size: 64, seed: o.seed + (o.kind === 'source' ? 0 : 1000) },
    image_size: DEMO_SAM.img_size, batch_size: 8, num_workers: 2, prefetch: 2,
    splits: { seed: o.seed, fractions: o.kind === 'source' ? [0.9, 0.1, 0] : [0.5, 0.1, 0.4], arch_frac: 0.15 },
  };
  raw.method = { ...raw.method!, rank: 4, lora_alpha: 8, experts: 4 };
  raw.optim = { ...raw.optim!, lr: o.lr, warmup_frac: 0.05 };
  raw.train = { epochs: null, steps: o.steps, seed: o.trainSeed ?? o.seed, eval_every: Math.max(1, Math.floor(o.steps / 4)), log_every: 10, out_dir: o.out };
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
  const tgt = (m: string, trainSeed: number) => demoConfig(m, {
    out: path.join(o.out, m, `seed${trainSeed}`), modelConfig, checkpoint: pre.checkpoint, kind: 'target', n: q ? 40 : 200, steps: q ? 20 : 300, lr: 3e-3, seed, trainSeed,
  });
  {
    const cfg = tgt('lora', seed);
    const splits = loadSplits(cfg, 0);
    const b = buildModel({ ...cfg, method: { ...cfg.method, name: 'decoder-only' } }, () => undefined);
    const rep = await evaluateReport(b.seg, splits.test, { ...cfg, eval: { ...cfg.eval, resolution: 'label' } });
    const m = rep.summary;
    // Its predictions on the same target images every run saves (the report shows them side by side).
    await saveTestExamples(b.seg, splits.test, rep.rows, cfg, path.join(o.out, 'source_examples'));
    b.sam.dispose();
    rows.push({ method: 'source model (no adaptation)', n: 1, dice: m.dice, dice_sd: 0, iou: m.iou, iou_sd: 0, trainable: 0, adapter: 0, seconds: 0 });
  }

  // 3. Adapt with each method: same base, targets, rank, data and steps; training seeds differ.
  const derived: Record<string, Record<string, string>> = {};
  const seeds = Array.from({ length: o.seeds ?? (q ? 1 : 2) }, (_, i) => seed + i);
  for (const method of o.methods ?? ['nas-lora', 'lora', 'conv-lora']) {
    const rs = [];
    for (const s of seeds) {
      const r = await runTraining(tgt(method, s), { progress: progress(`${method} seed ${s}`) });
      rs.push(r);
      if (method === 'nas-lora') {
        const d = JSON.parse(fs.readFileSync(path.join(r.runDir, 'derived_ops.json'), 'utf8')) as { derived: Record<string, string> };
        derived[`seed ${s}`] = d.derived;
      }
    }
    const dice = rs.map((r) => r.test?.dice ?? NaN);
    const iou = rs.map((r) => r.test?.iou ?? NaN);
    rows.push({
      method, n: rs.length, dice: mean(dice), dice_sd: sampleSd(dice), iou: mean(iou), iou_sd: sampleSd(iou),
      trainable: rs[0].trainable, adapter: rs[0].adapterParams, seconds: mean(rs.map((r) => r.seconds)),
    });
  }
  const table = formatTable(rows, derived);
  writeFileAtomic(path.join(o.out, 'demo_results.json'), JSON.stringify({ seeds, rows, derived }, null, 2) + '\n');
  writeFileAtomic(path.join(o.out, 'demo_results.md'), table + '\n');
  return { rows, derived, table };
}

export function formatTable(rows: DemoRow[], derived: Record<string, Record<string, string>>): string {
  const pm = (m: number, sd: number, n: number) => (n > 1 ? `${m.toFixed(4)} ± ${sd.toFixed(4)}` : m.toFixed(4));
  const n = Math.max(...rows.map((r) => r.n));
  const head = `| method | Dice${n > 1 ? ` (mean ± sd, ${n} seeds)` : ''} | IoU | trainable params (adapter + decoder) | encoder adapter params | train time (s) |\n| --- | --- | --- | --- | --- | --- |`;
  const body = rows.map((r) => `| ${r.method} | ${pm(r.dice, r.dice_sd, r.n)} | ${pm(r.iou, r.iou_sd, r.n)} | ${r.trainable.toLocaleString('en-US')} | ${r.adapter.toLocaleString('en-US')} | ${r.seconds.toFixed(1)} |`).join('\n');
  const layers = [...new Set(Object.values(derived).flatMap((d) => Object.keys(d)))];
  const ops = layers.map((p) => `  ${p.replace(/\.adapter\.cell$/, '')}: ${Object.values(derived).map((d) => d[p]).join(', ')}`).join('\n');
  return `${head}\n${body}\n\nNAS-LoRA derived op per layer${Object.keys(derived).length > 1 ? ` (${Object.keys(derived).join(', ')})` : ''}:\n${ops || '  (none)'}`;
}
