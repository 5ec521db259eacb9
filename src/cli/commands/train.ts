// `naslora train`, `naslora pretrain`, `naslora demo`.
import type { Command } from 'commander';
import { loadConfig } from '../../train/config.js';
import { runTraining, runtimeOf } from '../../train/run.js';
import { formatScores } from '../../train/trainer.js';
import { pretrain, pretrainConfig } from '../../train/pretrain.js';
import { runDemo } from '../../train/demo.js';
import { checkRun, formatRunCheck } from '../../train/check.js';
import { reportAfter } from './report.js';
import { addLaunchOptions, isSecondaryRank, maybeLaunch, type LaunchOptions } from '../launch.js';
import { addRuntimeOptions, runtimeOverrides, type RuntimeFlags } from '../runtime_options.js';

const collect = (v: string, acc: string[]) => [...acc, v];

export function registerTrain(program: Command): void {
  addRuntimeOptions(addLaunchOptions(program
    .command('train')
    .description('fine-tune SAM with an adapter method (stage-wise schedule for NAS methods)')
    .requiredOption('-c, --config <file|preset>', 'YAML run config, or a preset: nas-lora, nas-pc-lora, lora, conv-lora, decoder-only')
    .option('--set <key=value>', 'override a config value (repeatable), e.g. --set data.dir=data/kvasir --set train.epochs=5', collect, [])
    .option('--resume', 'continue the run in train.out_dir from checkpoints/last')
    .option('--dry-run', 'resolve the config (presets, overrides, file paths), read the checkpoint header and list the data, print the resolved config and the parameter table, and exit')))
    .action(async (o: { config: string; set: string[]; resume?: boolean; dryRun?: boolean } & LaunchOptions & RuntimeFlags) => {
      const cfg = loadConfig(o.config, [...o.set, ...runtimeOverrides(o)]);
      if (o.dryRun) {
        console.log(formatRunCheck(checkRun(cfg)));
        return;
      }
      runtimeOf(cfg);  // a device this libtorch cannot give fails here, before any worker starts
      const launched = await maybeLaunch(o);
      if (launched !== null) { process.exitCode = launched; return; }
      const r = await runTraining(cfg, { resume: o.resume });
      if (isSecondaryRank()) return;
      console.error(`done: ${r.steps} steps in ${r.seconds.toFixed(1)} s; run folder ${r.runDir}`);
      const multi = cfg.data.classes !== null;
      if (r.best) console.error(`best ${cfg.eval.split} ${multi ? 'mDice' : 'Dice'} ${r.best.dice.toFixed(4)} at step ${r.best.step} (checkpoints/best)`);
      else console.error(`no ${cfg.eval.split} split, so no checkpoints/best: use checkpoints/last`);
      if (r.test) console.error(`test (${cfg.eval.resolution === 'label' ? `at label size ${cfg.data.label_size ?? cfg.data.image_size}` : 'at original resolution'}): ${multi ? formatScores(r.test) : `Dice ${r.test.dice.toFixed(4)}${r.test.iou === undefined ? '' : `, IoU ${r.test.iou.toFixed(4)}`}`} on ${r.test.count} images (metrics.json)`);
      await reportAfter(r.runDir);
    });

  addRuntimeOptions(addLaunchOptions(program
    .command('pretrain')
    .description('train a small SAM from scratch (every part), e.g. where no SAM checkpoint can be downloaded')
    .requiredOption('-c, --config <file|preset>', 'YAML run config or preset (model.config names the SAM configuration)')
    .option('--set <key=value>', 'override a config value (repeatable)', collect, [])
    .option('--dry-run', 'resolve the config, list the data, print the resolved pretraining config and the parameter table, and exit')))
    .action(async (o: { config: string; set: string[]; dryRun?: boolean } & LaunchOptions & RuntimeFlags) => {
      const cfg = loadConfig(o.config, [...o.set, ...runtimeOverrides(o)]);
      if (o.dryRun) {
        console.log(formatRunCheck(checkRun(pretrainConfig(cfg))));
        return;
      }
      runtimeOf(cfg);
      const launched = await maybeLaunch(o);
      if (launched !== null) { process.exitCode = launched; return; }
      const r = await pretrain(cfg);
      if (isSecondaryRank()) return;
      console.error(`pretrained in ${r.seconds.toFixed(1)} s: ${r.checkpoint} (with its SAM configuration; also model_config.json)`);
      if (r.test) console.error(`test: Dice ${r.test.dice.toFixed(4)} on ${r.test.count} images (metrics.json)`);
      else if (r.final) console.error(`val: Dice ${r.final.dice.toFixed(4)} (metrics.json)`);
      if (r.trainScore) console.error(`train (not held out, no val or test split): Dice ${r.trainScore.dice.toFixed(4)} on ${r.trainScore.count} images (metrics.json train)`);
      await reportAfter(cfg.train.out_dir);
    });

  program
    .command('demo')
    .description('pretrain a tiny SAM on a synthetic source domain, adapt it to a synthetic target domain with NAS-LoRA, LoRA and Conv-LoRA, and compare')
    .option('-o, --out <dir>', 'output folder', 'runs/demo')
    .option('--quick', 'small domains and few steps (a first look in under a minute)')
    .option('--seed <n>', 'data seed and first training seed', '0')
    .option('--seeds <n>', 'training seeds per method (default 2, 1 with --quick)')
    .action(async (o: { out: string; quick?: boolean; seed: string; seeds?: string }) => {
      const t0 = Date.now();
      const seeds = o.seeds === undefined ? undefined : Number(o.seeds);
      if (seeds !== undefined && !(Number.isInteger(seeds) && seeds >= 1)) throw new Error(`--seeds must be a positive integer, got '${o.seeds}'`);
      const r = await runDemo({ out: o.out, quick: o.quick, seed: Number(o.seed), seeds });
      const n = Math.max(...r.rows.map((x) => x.n));
      console.log(`\nAdaptation from the synthetic source domain to the target domain (held-out target images${n > 1 ? `; mean ± sd over ${n} training seeds on the same data` : '; one training seed: differences of a point or two are within seed noise'}):\n`);
      console.log(r.table);
      console.log(`\ntotal ${((Date.now() - t0) / 1000).toFixed(0)} s; results in ${o.out}/demo_results.md`);
      await reportAfter(o.out);
    });
}
