// `naslora eval`: metrics of a (base + adapter) model on a data split, at original resolution.
import type { Command } from 'commander';
import { evaluateOriginal, writeEvalReport } from '../../eval/evaluate.js';
import { segmentLogits } from '../../model/sam/segment.js';
import { loadDataset, type SplitName } from '../../train/data/dataset.js';
import { loadCliModel } from './model_io.js';

export function registerEval(program: Command): void {
  program
    .command('eval')
    .description('evaluate SAM (+ adapter) on a data split: summary.json and per_image.csv (Dice, IoU, S-measure, E-measure, weighted F, MAE, BER)')
    .requiredOption('--checkpoint <file>', 'base SAM checkpoint (.pth or .safetensors)')
    .option('--model-config <json>', 'SAM config (for values the checkpoint shapes cannot tell)')
    .option('--adapter <dir>', 'adapter folder (adapter_config.json + adapter.safetensors)')
    .requiredOption('--data <dir|csv>', 'dataset folder (images/ + masks/) or CSV')
    .option('--split <name>', 'train | val | test | all', 'test')
    .option('--seed <n>', 'split seed when the dataset has no split files', '0')
    .option('--image-size <n>', 'model input size (default: the checkpoint\'s)')
    .option('--resize <mode>', 'squash | longest-pad', 'squash')
    .option('--threshold <n>', 'mask threshold (gray > n)', '127')
    .requiredOption('-o, --out <dir>', 'output folder')
    .action(async (o: { checkpoint: string; modelConfig?: string; adapter?: string; data: string; split: string; seed: string; imageSize?: string; resize: 'squash' | 'longest-pad'; threshold: string; out: string }) => {
      if (!['train', 'val', 'test', 'all'].includes(o.split)) throw new Error(`--split must be train, val, test or all, not '${o.split}'`);
      const { splits } = loadDataset(o.data, { seed: Number(o.seed) });
      const items = o.split === 'all' ? [...splits.train, ...splits.arch, ...splits.val, ...splits.test] : splits[o.split as SplitName];
      if (!items.length) throw new Error(`split '${o.split}' of ${o.data} is empty`);
      const m = loadCliModel({ checkpoint: o.checkpoint, modelConfig: o.modelConfig, adapter: o.adapter, imageSize: o.imageSize ? Number(o.imageSize) : undefined });
      try {
        m.loaded.model.eval();
        const S = m.loaded.config.img_size;
        const r = await evaluateOriginal({ forward: (x) => segmentLogits(m.loaded.model, x) }, items, {
          imageSize: S, resize: o.resize, threshold: Number(o.threshold),
          onImage: (i, n) => { if (i % 10 === 0 || i === n) process.stderr.write(`\reval ${i}/${n}`); },
        });
        process.stderr.write('\n');
        writeEvalReport(o.out, r, { checkpoint: o.checkpoint, adapter: o.adapter ?? null, method: m.adapter?.method.name ?? 'none', split: o.split, images: items.length });
        const s = r.summary;
        console.log(`${items.length} images (${o.split}): Dice ${s.dice.toFixed(4)}  IoU ${s.iou.toFixed(4)}  S ${s.sMeasure.toFixed(4)}  E ${s.meanEMeasure.toFixed(4)}  wF ${s.weightedF.toFixed(4)}  MAE ${s.mae.toFixed(4)}  BER ${s.ber.toFixed(4)}`);
        console.log(`wrote ${o.out}/summary.json and ${o.out}/per_image.csv`);
      } finally {
        m.loaded.model.dispose();
      }
    });
}
