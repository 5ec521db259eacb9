// `--dry-run` for train, pretrain and compare: everything a run would resolve before its first step,
// and nothing more. Presets, the YAML and the overrides are resolved and validated; file paths are
// checked; the checkpoint's header is read (names, shapes, its own configuration; no weights); the
// data are listed and split (no image is decoded); the model is built with fresh weights to count
// the parameters each part trains; the run folder's state is reported. Nothing is written.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { countByPart, formatCounts, injectAdapters, setTrainable, type AdapterConfig, type Part } from '../adapters/index.js';
import { openCheckpoint } from '../io/pth.js';
import { checkpointConfig } from '../model/sam/build.js';
import { Sam, SAM_PRESETS, type SamConfig } from '../model/sam/sam.js';
import { classSpecOf, configToYaml, effectiveArchFrac, type RunConfig } from './config.js';
import { adapterParamCount, loadSplits, resolveSamConfig } from './run.js';
import { planStages } from './search.js';
import { totalSteps } from './trainer.js';

export interface RunCheck {
  /** The resolved config as YAML (what config.resolved.json would hold). */
  config: string;
  /** Checkpoint header, or how a fresh model is built. */
  model: string;
  data: string;
  schedule: string;
  parameters: string;
  runDir: string;
}

const rel = (p: string): string => (path.isAbsolute(p) ? p : `${p} (${path.resolve(p)})`);

/** Resolves a validated run config as far as possible without training; throws on what a run would fail on. */
export function checkRun(cfg: RunConfig, o: { runDir?: string } = {}): RunCheck {
  const problems: string[] = [];
  if (cfg.model.config !== null && !(cfg.model.config in SAM_PRESETS) && !fs.existsSync(cfg.model.config)) problems.push(`model.config: ${rel(cfg.model.config)} does not exist`);
  if (cfg.model.pretrained === 'sam' && !fs.existsSync(cfg.model.checkpoint!)) problems.push(`model.checkpoint: ${rel(cfg.model.checkpoint!)} does not exist`);
  if (cfg.data.dir !== null && !fs.existsSync(cfg.data.dir)) problems.push(`data.dir: ${rel(cfg.data.dir)} does not exist`);
  if (problems.length) throw new Error(`dry run: ${problems.join('; ')}`);

  // The model: the checkpoint's configuration from its header (shapes, metadata, model.config), or model.config.
  let samConfig: SamConfig;
  let model: string;
  if (cfg.model.pretrained === 'sam') {
    const file = cfg.model.checkpoint!;
    const given = cfg.model.config !== null ? (({ img_size: _s, ...rest }) => rest)(resolveSamConfig(cfg.model.config)) : undefined;
    const src = openCheckpoint(file);
    try {
      const inf = checkpointConfig(src, given);
      samConfig = { ...inf.config, img_size: cfg.data.image_size };
      const lines = Object.entries(inf.config).filter(([k]) => k !== 'pixel_mean' && k !== 'pixel_std')
        .map(([k, v]) => `  ${k.padEnd(20)} ${JSON.stringify(v).padEnd(16)} <- ${inf.sources[k as keyof typeof inf.sources]}`);
      model = [
        `checkpoint ${rel(file)}: ${src.format}, ${src.keys().length} tensors, ${inf.naming} names, ` +
          `${inf.fromMetadata ? 'carries its SAM configuration' : 'no configuration metadata'}${cfg.model.config !== null ? `; checked against model.config ${cfg.model.config}` : ''}`,
        ...lines,
        inf.config.img_size !== cfg.data.image_size ? `  input size ${cfg.data.image_size} (data.image_size): pos_embed and global rel-pos tables are interpolated from ${inf.config.img_size}` : '',
      ].filter(Boolean).join('\n');
    } catch (e) {
      throw new Error(`dry run: model.checkpoint ${file}${given ? ` with model.config ${cfg.model.config}` : ''}: ${(e as Error).message}`);
    } finally {
      src.close();
    }
  } else {
    samConfig = { ...resolveSamConfig(cfg.model.config!), img_size: cfg.data.image_size };
    model = `fresh weights (model.pretrained=none) from model.config ${cfg.model.config}: ${JSON.stringify(samConfig)}`;
  }

  const splits = loadSplits(cfg, effectiveArchFrac(cfg));
  if (!splits.train.length) throw new Error('dry run: the training split is empty');
  const spec = classSpecOf(cfg);
  const src = cfg.data.synthetic ? `synthetic ${cfg.data.synthetic.kind} domain (${cfg.data.synthetic.n} images)` : rel(cfg.data.dir!);
  const data = `${src}: ${splits.train.length} train, ${splits.val.length} val, ${splits.test.length} test, ${splits.arch.length} arch` +
    `; periodic evaluation on ${cfg.eval.split} (${(cfg.eval.split === 'val' ? splits.val : splits.test).length} images), ` +
    `test scored ${cfg.eval.resolution === 'label' ? `at label size ${cfg.data.label_size ?? cfg.data.image_size}` : 'at original resolution'}` +
    (spec ? `\nmulti-class: ${spec.names.map((n, i) => `${i} ${n}`).join(', ')}${spec.ignoreIndex === null ? '' : `; ignore index ${spec.ignoreIndex}`}${cfg.data.classes!.file ? ` (${cfg.data.classes!.file})` : ' (class-index masks)'}` : '');

  const { total, perEpoch } = totalSteps(cfg, splits.train.length);
  const plan = planStages(cfg.schedule.stages, total);
  const schedule = [`${total} steps (${perEpoch} batches of ${cfg.data.batch_size} an epoch, grad_accum ${cfg.optim.grad_accum})`,
    ...plan.map((p) => `  ${p.stage.name.padEnd(10)} steps ${p.start}–${p.end}: ${[...p.stage.train, ...(p.stage.optimize_alpha ? ['alpha'] : [])].join(', ')}` +
      `${p.stage.optimize_alpha ? ` (α on ${p.stage.alpha_split})` : ''}${p.stage.discretize_at_entry ? ' (discretize at entry)' : ''}`)].join('\n');

  // Parameters: the model with fresh weights (nothing read from the checkpoint) and the run's adapters.
  const sam = Sam.fromConfig(samConfig);
  let parameters: string;
  try {
    const layers = injectAdapters(sam, cfg.method as AdapterConfig);
    if (spec) sam.mask_decoder.addClassHeads(spec.names.length);  // as buildModel does: the heads train with the decoder
    setTrainable(sam, cfg.schedule.stages[0].train as Part[]);
    const first = formatCounts(countByPart(sam));
    parameters = `${layers.length} adapted layers; trainable by part (first stage):\n${first}\n  over the whole schedule: ${adapterParamCount(sam, cfg)} trainable`;
  } finally {
    sam.dispose();
  }

  const dir = o.runDir ?? cfg.train.out_dir;
  const state = (() => {
    if (!fs.existsSync(dir)) return 'does not exist: a run creates it';
    if (fs.existsSync(path.join(dir, 'metrics.json'))) return 'holds a finished run: train writes over it';
    const ts = path.join(dir, 'checkpoints', 'last', 'trainer_state.json');
    if (fs.existsSync(ts)) return `holds a run stopped at step ${(JSON.parse(fs.readFileSync(ts, 'utf8')) as { step: number }).step}: --resume continues it`;
    return 'exists (no checkpoint): a run writes into it';
  })();
  return { config: configToYaml(cfg), model, data, schedule, parameters, runDir: `${rel(dir)} ${state}` };
}

export function formatRunCheck(c: RunCheck, o: { config?: boolean } = {}): string {
  return [
    ...(o.config === false ? [] : ['# resolved config', c.config.trimEnd(), '']),
    '# model', c.model, '', '# data', c.data, '', '# schedule', c.schedule, '', '# parameters', c.parameters, '', '# run folder', c.runDir,
  ].join('\n');
}
