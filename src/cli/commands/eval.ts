// `naslora eval`: metrics of a (base + adapter) model on a data split, at original resolution
// (default) or at a label size, as training scores its splits (eval.resolution: label).
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { writeFileAtomic } from '../../io/atomic.js';
import { encodeClassPng, encodeMaskPng } from '../../io/image.js';
import { evaluateAtLabelSize, evaluateOriginal, RESOLUTIONS, writeEvalReport, type Resolution } from '../../eval/evaluate.js';
import { segmentClassLogits, segmentLogits } from '../../model/sam/segment.js';
import { loadDataset, type SplitName } from '../../data/dataset.js';
import { adapterClassSpec, loadCliModel } from './model_io.js';
import { formatScores } from '../../train/trainer.js';
import { autocast } from '../../engine/index.js';
import { addRuntimeOptions, commandRuntime, type RuntimeFlags } from '../runtime_options.js';

export function registerEval(program: Command): void {
  addRuntimeOptions(program
    .command('eval')
    .description('evaluate SAM (+ adapter) on a data split at original resolution or a label size: summary.json (with the resolution used) and per_image.csv (Dice, IoU, S-measure, E-measure, weighted F, MAE, BER; a multi-class adapter: mDice, mIoU, pixel accuracy and IoU/Dice per class)')
    .requiredOption('--checkpoint <file>', 'base SAM checkpoint (.pth or .safetensors)')
    .option('--model-config <json>', 'SAM config (for values the checkpoint shapes cannot tell)')
    .option('--adapter <dir>', 'adapter folder (adapter_config.json + adapter.safetensors)')
    .requiredOption('--data <dir|csv>', 'dataset folder (images/ + masks/) or CSV')
    .option('--split <name>', 'train | val | test | all', 'test')
    .option('--seed <n>', 'split seed when the dataset has no split files', '0')
    .option('--image-size <n>', 'model input size (default: the checkpoint\'s)')
    .option('--resize <mode>', "squash | longest-pad (default: the adapter's training setting, else squash)")
    .option('--threshold <n>', 'mask threshold (gray > n; binary masks)', '127')
    .option('--resolution <r>', 'original: each image at its own size; label: masks and predictions at --label-size, as `train` scores (eval.resolution)', 'original')
    .option('--label-size <n>', 'with --resolution label: the label size (default: the model input size, as data.label_size null)')
    .option('--batch-size <n>', 'with --resolution label: images per forward pass', '4')
    .option('--save-predictions <dir>', 'with --resolution original: write each prediction as scored, <id>.png at the image\'s size (binary: 0/255; multi-class: class indices)')
    .requiredOption('-o, --out <dir>', 'output folder'), { defaults: true })
    .action(async (o: { checkpoint: string; modelConfig?: string; adapter?: string; data: string; split: string; seed: string; imageSize?: string; resize?: 'squash' | 'longest-pad'; threshold: string; resolution: string; labelSize?: string; batchSize: string; savePredictions?: string; out: string } & RuntimeFlags) => {
      const rt = commandRuntime(o);  // before anything is loaded
      if (!['train', 'val', 'test', 'all'].includes(o.split)) throw new Error(`--split must be train, val, test or all, not '${o.split}'`);
      if (!RESOLUTIONS.includes(o.resolution as Resolution)) throw new Error(`--resolution must be ${RESOLUTIONS.join(' or ')}, not '${o.resolution}'`);
      const posInt = (v: string | undefined, name: string): number | undefined => {
        if (v === undefined) return undefined;
        const n = Number(v);
        if (!Number.isInteger(n) || n <= 0) throw new Error(`${name} must be a positive integer, not '${v}'`);
        return n;
      };
      if (o.labelSize !== undefined && o.resolution !== 'label') throw new Error('--label-size needs --resolution label');
      if (o.savePredictions !== undefined && o.resolution !== 'original') throw new Error('--save-predictions writes predictions at original resolution: it needs --resolution original');
      const labelSizeOpt = posInt(o.labelSize, '--label-size');
      const batchSize = posInt(o.batchSize, '--batch-size')!;
      const { splits } = loadDataset(o.data, { seed: Number(o.seed) });
      const items = o.split === 'all' ? [...splits.train, ...splits.arch, ...splits.val, ...splits.test] : splits[o.split as SplitName];
      if (!items.length) throw new Error(`split '${o.split}' of ${o.data} is empty`);
      if (o.resize !== undefined && o.resize !== 'squash' && o.resize !== 'longest-pad') throw new Error(`--resize must be squash or longest-pad, not '${o.resize}'`);
      const m = loadCliModel({ checkpoint: o.checkpoint, modelConfig: o.modelConfig, adapter: o.adapter, imageSize: o.imageSize ? Number(o.imageSize) : undefined });
      try {
        m.loaded.model.eval();
        m.loaded.model.to(rt.device);  // once, base and adapter together (no copy when already there)
        const S = m.loaded.config.img_size;
        // A multi-class adapter carries its classes: masks are read as class maps, the model gives K maps.
        const classes = adapterClassSpec(m.adapter);
        const resize = o.resize ?? m.adapter?.input?.resize ?? 'squash';
        const segment = classes ? segmentClassLogits : segmentLogits;
        const model = { forward: (x: Parameters<typeof segmentLogits>[1]) => autocast(rt, () => segment(m.loaded.model, x)) };
        const predDir = o.savePredictions;
        if (predDir) fs.mkdirSync(predDir, { recursive: true });
        const common = {
          imageSize: S, resize, threshold: Number(o.threshold), device: rt.device, classes,
          onPrediction: predDir
            ? async (id: string, pred: Uint8Array, w: number, h: number) => writeFileAtomic(path.join(predDir, `${id.replace(/[\\/]/g, '__')}.png`), classes ? await encodeClassPng(pred, w, h) : await encodeMaskPng(pred, w, h))
            : undefined,
          onImage: (i: number, n: number) => { if (i % 10 === 0 || i === n) process.stderr.write(`\reval ${i}/${n}`); },
        };
        const labelSize = labelSizeOpt ?? S;
        const r = o.resolution === 'label'
          ? await evaluateAtLabelSize(model, items, { ...common, labelSize, batchSize })
          : await evaluateOriginal(model, items, common);
        process.stderr.write('\n');
        const resolution = o.resolution === 'label' ? { resolution: 'label', label_size: labelSize } : { resolution: 'original' };
        writeEvalReport(o.out, r, { checkpoint: o.checkpoint, adapter: m.adapterDir, method: m.adapter?.method.name ?? 'none', split: o.split, images: items.length, resize, ...resolution });
        const s = r.summary;
        const at = o.resolution === 'label' ? `at label size ${labelSize}` : 'at original resolution';
        if (classes) console.log(`${items.length} images (${o.split}, ${at}): ${formatScores(s)}`);
        else console.log(`${items.length} images (${o.split}, ${at}): Dice ${s.dice.toFixed(4)}  IoU ${s.iou.toFixed(4)}  S ${s.sMeasure.toFixed(4)}  E ${s.meanEMeasure.toFixed(4)}  wF ${s.weightedF.toFixed(4)}  MAE ${s.mae.toFixed(4)}  BER ${s.ber.toFixed(4)}`);
        console.log(`wrote ${o.out}/summary.json and ${o.out}/per_image.csv${predDir ? `, and ${items.length} predictions to ${predDir}` : ''}`);
      } finally {
        m.loaded.model.dispose();
      }
    });
}
