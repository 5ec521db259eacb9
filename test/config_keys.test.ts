// Every leaf key of the run-config schema does something. Each key has a probe here: a small run
// (tiny SAM, a few steps) with the key at another value, which must differ from the same run with the
// key at its usual value in what the run did: losses, metrics, the files it wrote (config echoes
// excluded: config.resolved.json, the method echoed in adapter_config.json, metrics.json's
// `scoring`), its log lines (warnings, discretisations; not the line restating the search
// settings), or the data pipeline's counters (workers, prefetch, cache). A key that
// nothing reads makes its probe fail; a new key without a probe fails the coverage check. A variant
// that merely fails does not count: every probed run must succeed. runtime.device's probe needs a
// CUDA device; on a libtorch without one its own test checks what the key does there instead (cuda
// ends the run at once, before anything is read or written).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { toRaw } from '../src/adapters/io.js';
import { cudaAvailable, cudaInfo, manualSeed } from '../src/engine/index.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { samConfigMetadata } from '../src/model/sam/build.js';
import { Sam, type SamConfig } from '../src/model/sam/sam.js';
import { configLeafKeys, loadConfig } from '../src/train/config.js';
import { loaderStats, resetLoaderStats } from '../src/data/loader.js';
import type { Progress } from '../src/train/progress.js';
import { runTraining } from '../src/train/run.js';
import { SHAPE_CLASSES, SHAPE_PALETTE, writeShapes } from './helpers/shapes.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const KVASIR = path.resolve(ROOT, '../shared/data/kvasir-seg');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-keys-'));
process.on('exit', () => fs.rmSync(work, { recursive: true, force: true }));
const at = (...p: string[]) => path.join(work, ...p);

const TINY: SamConfig = {
  img_size: 32, patch_size: 8, embed_dim: 16, depth: 2, num_heads: 2, mlp_ratio: 2, window_size: 2, global_attn_indexes: [1],
  prompt_embed_dim: 16, mask_in_chans: 4, decoder_depth: 1, decoder_mlp_dim: 32, decoder_heads: 2, iou_head_hidden_dim: 8,
};

/** Keys that cannot change anything, and why. */
const EXEMPT: Record<string, string> = {
  'optim.name': "a single allowed value ('adamw'): it names the optimizer, there is no other to choose",
};

type Scenario = 'nas' | 'dir' | 'ckpt' | 'conv' | 'pc' | 'mc' | 'mcp';
interface Probe { scenario: Scenario; before?: string[]; change: string[]; needsCuda?: boolean }

const ALT = ['schedule.alpha_optim.mode=alternate'];
const PROMPTED = ['data.mode=prompted'];
const EARLY = ['method.ops=[skip, conv_3x3]', 'schedule.search.shrink=[]', 'schedule.alpha_optim.travel=60', 'schedule.search.early_discretize={entropy: 0.99, patience: 1}'];
const SHRINK = ['schedule.search.shrink=[{at: 0.5, keep: 4}]'];

const PROBES: Record<string, Probe> = {
  'model.config': { scenario: 'nas', change: [`model.config=${at('tiny-b.json')}`] },
  'model.checkpoint': { scenario: 'ckpt', change: [`model.checkpoint=${at('b.safetensors')}`] },
  'model.pretrained': { scenario: 'ckpt', change: ['model.pretrained=none'] },
  'data.dir': { scenario: 'dir', change: [`data.dir=${at('data-b')}`] },
  'data.mask_suffix': { scenario: 'dir', before: [`data.dir=${at('data-suffix')}`], change: ['data.mask_suffix=_m'] },
  'data.synthetic.kind': { scenario: 'nas', change: ['data.synthetic.kind=source'] },
  'data.synthetic.n': { scenario: 'nas', change: ['data.synthetic.n=14'] },
  'data.synthetic.size': { scenario: 'nas', change: ['data.synthetic.size=40'] },
  'data.synthetic.seed': { scenario: 'nas', change: ['data.synthetic.seed=7'] },
  'data.splits.seed': { scenario: 'nas', change: ['data.splits.seed=5'] },
  'data.splits.fractions': { scenario: 'nas', change: ['data.splits.fractions=[0.6, 0.2, 0.2]'] },
  'data.splits.arch_frac': { scenario: 'nas', before: ALT, change: ['data.splits.arch_frac=0.6'] },
  'data.image_size': { scenario: 'nas', change: ['data.image_size=40'] },
  'data.label_size': { scenario: 'nas', change: ['data.label_size=16'] },
  'data.resize': { scenario: 'dir', change: ['data.resize=longest-pad'] },
  'data.threshold': { scenario: 'dir', change: ['data.threshold=20'] },
  'data.classes.num_classes': { scenario: 'mc', change: ['data.classes.num_classes=5'] },
  'data.classes.file': { scenario: 'mcp', change: [`data.classes.file=${at('classes-b.json')}`] },
  // Only a value that is in the masks or in the padding can matter (any other is refused or absent): longest-pad pads with it.
  'data.classes.ignore_index': { scenario: 'mc', before: ['data.resize=longest-pad'], change: ['data.classes.ignore_index=255'] },
  'data.classes.loss_weights': { scenario: 'mc', change: ['data.classes.loss_weights=[0.2, 1, 2, 4]'] },
  'data.augment.hflip': { scenario: 'nas', change: ['data.augment.hflip=false'] },
  'data.augment.crop_scale': { scenario: 'nas', change: ['data.augment.crop_scale=[0.5, 0.9]'] },
  'data.mode': { scenario: 'nas', change: ['data.mode=prompted'] },
  'data.prompts.box': { scenario: 'nas', before: PROMPTED, change: ['data.prompts.box=false'] },
  'data.prompts.box_jitter': { scenario: 'nas', before: PROMPTED, change: ['data.prompts.box_jitter=0.4'] },
  'data.prompts.n_pos': { scenario: 'nas', before: PROMPTED, change: ['data.prompts.n_pos=3'] },
  'data.prompts.n_neg': { scenario: 'nas', before: PROMPTED, change: ['data.prompts.n_neg=2'] },
  'data.batch_size': { scenario: 'nas', change: ['data.batch_size=3'] },
  'data.num_workers': { scenario: 'nas', change: ['data.num_workers=3'] },
  'data.prefetch': { scenario: 'nas', change: ['data.prefetch=0'] },
  'data.cache': { scenario: 'dir', change: ['data.cache=true'] },
  'method.name': { scenario: 'conv', change: ['method.name=nas-lora'] },
  'method.rank': { scenario: 'nas', change: ['method.rank=2'] },
  'method.lora_alpha': { scenario: 'nas', change: ['method.lora_alpha=64'] },
  'method.dropout': { scenario: 'nas', change: ['method.dropout=0.3'] },
  'method.targets': { scenario: 'nas', change: ['method.targets=^image_encoder\\.blocks\\.0\\.attn\\.qkv$'] },
  'method.qv_only': { scenario: 'nas', change: ['method.qv_only=true'] },
  'method.ops': { scenario: 'nas', change: ['method.ops=[skip, conv_3x3, conv_5x5, max_pool_3x3]'] },
  'method.alpha_init': { scenario: 'nas', change: ['method.alpha_init=2'] },
  'method.ops_init': { scenario: 'nas', change: ['method.ops_init=default'] },
  'method.pc_k': { scenario: 'pc', change: ['method.pc_k=4'] },
  'method.experts': { scenario: 'conv', change: ['method.experts=2'] },
  'method.moe_loss_weight': { scenario: 'conv', change: ['method.moe_loss_weight=0.5'] },
  'method.gate_noise': { scenario: 'conv', change: ['method.gate_noise=false'] },
  'optim.lr': { scenario: 'nas', change: ['optim.lr=0.001'] },
  'optim.weight_decay': { scenario: 'nas', change: ['optim.weight_decay=0.5'] },
  'optim.betas': { scenario: 'nas', change: ['optim.betas=[0.5, 0.9]'] },
  'optim.eps': { scenario: 'nas', change: ['optim.eps=0.01'] },
  'optim.grad_clip': { scenario: 'nas', change: ['optim.grad_clip=0.001'] },
  'optim.grad_accum': { scenario: 'nas', change: ['optim.grad_accum=2'] },
  'optim.schedule': { scenario: 'nas', change: ['optim.schedule=cosine'] },
  'optim.poly_power': { scenario: 'nas', change: ['optim.poly_power=3'] },
  'optim.warmup_frac': { scenario: 'nas', change: ['optim.warmup_frac=0.5'] },
  'optim.min_lr': { scenario: 'nas', change: ['optim.min_lr=0.002'] },
  loss: { scenario: 'nas', change: ['loss=bce-dice'] },
  'schedule.stages[].name': { scenario: 'nas', change: ['schedule.stages.0.name=first'] },
  'schedule.stages[].share': { scenario: 'nas', change: ['schedule.stages.0.share=0.4', 'schedule.stages.2.share=0.2'] },
  'schedule.stages[].train': { scenario: 'nas', change: ['schedule.stages.0.train=[lora]'] },
  'schedule.stages[].optimize_alpha': { scenario: 'nas', change: ['schedule.stages.0.optimize_alpha=true'] },
  'schedule.stages[].alpha_split': { scenario: 'nas', before: ALT, change: ['schedule.stages.1.alpha_split=train'] },
  'schedule.stages[].discretize_at_entry': { scenario: 'nas', change: ['schedule.stages.2.discretize_at_entry=false'] },
  'schedule.alpha_optim.lr': { scenario: 'nas', before: ['schedule.alpha_optim.travel=null'], change: ['schedule.alpha_optim.lr=0.2'] },
  'schedule.alpha_optim.betas': { scenario: 'nas', change: ['schedule.alpha_optim.betas=[0.9, 0.9]'] },
  'schedule.alpha_optim.weight_decay': { scenario: 'nas', change: ['schedule.alpha_optim.weight_decay=0.5'] },
  'schedule.alpha_optim.mode': { scenario: 'nas', change: ['schedule.alpha_optim.mode=alternate'] },
  'schedule.alpha_optim.travel': { scenario: 'nas', change: ['schedule.alpha_optim.travel=2'] },
  'schedule.search.sampling': { scenario: 'nas', change: ['schedule.search.sampling=gumbel'] },
  'schedule.search.tau': { scenario: 'nas', before: ['schedule.search.sampling=gumbel'], change: ['schedule.search.tau=[0.2, 0.1]'] },
  'schedule.search.shrink[].at': { scenario: 'nas', before: SHRINK, change: ['schedule.search.shrink.0.at=0.1'] },
  'schedule.search.shrink[].keep': { scenario: 'nas', before: SHRINK, change: ['schedule.search.shrink.0.keep=2'] },
  'schedule.search.beta_decay': { scenario: 'nas', change: ['schedule.search.beta_decay=2'] },
  'schedule.search.early_discretize.entropy': { scenario: 'nas', before: EARLY, change: ['schedule.search.early_discretize.entropy=0'] },
  'schedule.search.early_discretize.patience': { scenario: 'nas', before: EARLY, change: ['schedule.search.early_discretize.patience=5'] },
  'schedule.search.warn_margin': { scenario: 'nas', change: ['schedule.search.warn_margin=1'] },
  'schedule.search.tie_margin': { scenario: 'nas', before: ['schedule.alpha_optim.travel=null', 'schedule.search.shrink=[]'], change: ['schedule.search.tie_margin=0'] },
  'schedule.search.fold_fix': { scenario: 'nas', change: ['schedule.search.fold_fix=false'] },
  'train.epochs': { scenario: 'nas', change: ['train.steps=null', 'train.epochs=1'] },
  'train.steps': { scenario: 'nas', change: ['train.steps=4'] },
  'train.seed': { scenario: 'nas', change: ['train.seed=9'] },
  'train.eval_every': { scenario: 'nas', change: ['train.eval_every=2'] },
  'train.log_every': { scenario: 'nas', change: ['train.log_every=4'] },
  'train.out_dir': { scenario: 'nas', change: [`train.out_dir=${at('run-elsewhere')}`] },
  'eval.metrics': { scenario: 'nas', change: ['eval.metrics=[dice, mae]'] },
  'eval.split': { scenario: 'nas', change: ['eval.split=test'] },
  'eval.threshold': { scenario: 'nas', change: ['eval.threshold=0.3'] },
  'eval.resolution': { scenario: 'nas', before: ['data.label_size=16'], change: ['eval.resolution=original'] },
  'runtime.device': { scenario: 'nas', change: ['runtime.device=cuda'], needsCuda: true },
  'runtime.precision': { scenario: 'nas', change: ['runtime.precision=bf16'] },
};

const RUN = at('run');
const SCENARIOS: Record<Scenario, string[]> = {
  nas: ['nas-lora', `model.config=${at('tiny.json')}`, 'model.pretrained=none', 'model.checkpoint=null', 'data.synthetic={kind: target, n: 12, size: 32, seed: 1}'],
  dir: ['lora', `model.config=${at('tiny.json')}`, 'model.pretrained=none', 'model.checkpoint=null', `data.dir=${at('data-a')}`],
  ckpt: ['lora', `model.config=${at('tiny.json')}`, `model.checkpoint=${at('a.safetensors')}`, 'data.synthetic={kind: target, n: 12, size: 32, seed: 1}'],
  conv: ['conv-lora', `model.config=${at('tiny.json')}`, 'model.pretrained=none', 'model.checkpoint=null', 'data.synthetic={kind: target, n: 12, size: 32, seed: 1}'],
  mc: ['lora', `model.config=${at('tiny.json')}`, 'model.pretrained=none', 'model.checkpoint=null', `data.dir=${at('data-mc')}`, 'data.classes={num_classes: 4}', 'loss=ce', 'eval.metrics=[dice, iou]'],
  mcp: ['lora', `model.config=${at('tiny.json')}`, 'model.pretrained=none', 'model.checkpoint=null', `data.dir=${at('data-mcp')}`, `data.classes={file: ${at('data-mcp', 'classes.json')}}`, 'loss=ce', 'eval.metrics=[dice, iou]'],
  pc: ['nas-pc-lora', `model.config=${at('tiny.json')}`, 'model.pretrained=none', 'model.checkpoint=null', 'data.synthetic={kind: target, n: 12, size: 32, seed: 1}', 'method.rank=4'],
};
const COMMON = [
  'data.image_size=32', 'data.batch_size=2', 'data.num_workers=1', 'data.prefetch=1', 'data.splits={seed: 0, fractions: [0.5, 0.25, 0.25], arch_frac: 0.25}',
  'optim.lr=0.003', 'train.epochs=null', 'train.steps=6', 'train.eval_every=3', 'train.log_every=1', `train.out_dir=${RUN}`,
];

/** Volatile or echoed fields left out of the fingerprint. */
const DROP = new Set(['t', 'seconds', 'live_bytes', 'created', 'scoring', 'base']);
function scrub(v: unknown): unknown {
  if (Array.isArray(v)) return v.map(scrub);
  if (v && typeof v === 'object') return Object.fromEntries(Object.entries(v).filter(([k]) => !DROP.has(k)).map(([k, x]) => [k, scrub(x)]));
  return v;
}

function files(dir: string): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  const walk = (d: string): void => {
    for (const f of fs.readdirSync(d).sort()) {
      const p = path.join(d, f);
      const r = path.relative(work, p);
      if (fs.statSync(p).isDirectory()) { walk(p); continue; }
      if (f === 'config.resolved.json') { out[r] = 'present'; continue; }
      const text = fs.readFileSync(p);
      if (f.endsWith('.jsonl')) out[r] = text.toString().trim().split('\n').map((l) => scrub(JSON.parse(l)));
      else if (f.endsWith('.json')) {
        const j = scrub(JSON.parse(text.toString())) as Record<string, unknown>;
        if (f === 'adapter_config.json') delete j.method; // the method's settings, echoed for loading
        out[r] = j;
      } else out[r] = createHash('sha256').update(text).digest('hex').slice(0, 16);
    }
  };
  walk(dir);
  return out;
}

async function fingerprint(args: string[]): Promise<string> {
  const [preset, ...sets] = args;
  const cfg = loadConfig(preset!, sets);
  fs.rmSync(RUN, { recursive: true, force: true });
  fs.rmSync(cfg.train.out_dir, { recursive: true, force: true });
  const logs: string[] = [];
  const progress: Progress = { start() {}, tick() {}, stop() {}, log: (m) => logs.push(m) };
  resetLoaderStats();
  const r = await runTraining(cfg, { progress });
  return JSON.stringify({
    losses: r.losses, test: r.test, final: r.final, best: r.best, trainable: r.trainable, adapter: r.adapterParams,
    files: files(cfg.train.out_dir), loader: { ...loaderStats },
    // What the run told its user (warnings, discretisations, evaluations); not the line that restates the search settings.
    logs: logs.filter((l) => !l.startsWith('search: ')),
  });
}

async function makeData(): Promise<void> {
  // Multi-class: 4 classes as class-index masks (non-square, so longest-pad pads), and as palette masks
  // with a classes.json; classes-b.json gives the same colours other indices.
  await writeShapes(at('data-mc'), { n: 8, width: 48, height: 40, seed: 3 });
  await writeShapes(at('data-mcp'), { n: 8, width: 48, height: 40, seed: 4, palette: true });
  const order = [0, 3, 1, 2];
  fs.writeFileSync(at('classes-b.json'), JSON.stringify({ classes: order.map((c, index) => ({ name: SHAPE_CLASSES[c], index, colour: SHAPE_PALETTE[c] })) }));
  fs.writeFileSync(at('tiny.json'), JSON.stringify({ config: TINY }));
  fs.writeFileSync(at('tiny-b.json'), JSON.stringify({ config: { ...TINY, decoder_heads: 1, mlp_ratio: 3 } }));
  for (const [name, seed] of [['a', 1], ['b', 2]] as const) {
    manualSeed(seed);
    const m = Sam.fromConfig(TINY);
    writeSafetensors(at(`${name}.safetensors`), [...m.stateDict()].map(([n, t]) => [n, toRaw(t)]), { format: 'pt', ...samConfigMetadata(TINY) });
    m.dispose();
  }
  // Small non-square copies of Kvasir images (48×40) and their masks (grey, with the JPEG's soft edges).
  const ids = fs.readdirSync(path.join(KVASIR, 'images')).sort().slice(0, 24);
  const small = async (src: string, dst: string, mask: boolean): Promise<void> => {
    fs.mkdirSync(path.dirname(dst), { recursive: true });
    const p = sharp(src).resize(48, 40, { fit: 'fill', kernel: mask ? 'nearest' : 'lanczos3' });
    await (mask ? p.grayscale() : p).png().toFile(dst);
  };
  for (let i = 0; i < 8; i++) {
    for (const [set, k] of [['data-a', i], ['data-b', i + 8]] as const) {
      await small(path.join(KVASIR, 'images', ids[k]!), at(set, 'images', `s${i}.png`), false);
      await small(path.join(KVASIR, 'masks', ids[k]!), at(set, 'masks', `s${i}.png`), true);
    }
    // data-suffix: masks named s<i>_m; without the suffix they pair with the images s<i>_m instead of s<i>.
    await small(path.join(KVASIR, 'images', ids[i]!), at('data-suffix', 'images', `s${i}.png`), false);
    await small(path.join(KVASIR, 'images', ids[i + 16]!), at('data-suffix', 'images', `s${i}_m.png`), false);
    await small(path.join(KVASIR, 'masks', ids[i]!), at('data-suffix', 'masks', `s${i}_m.png`), true);
  }
}

test('every leaf key of the run-config schema has a probe here (or a stated exemption)', () => {
  const leaves = configLeafKeys();
  const missing = leaves.filter((k) => !(k in PROBES) && !(k in EXEMPT));
  assert.deepEqual(missing, [], `keys without a probe (show what each changes, or remove the key): ${missing.join(', ')}`);
  const stale = Object.keys({ ...PROBES, ...EXEMPT }).filter((k) => !leaves.includes(k));
  assert.deepEqual(stale, [], `probes for keys the schema no longer has: ${stale.join(', ')}`);
});

test('every leaf key changes what a run does', async () => {
  await makeData();
  const baselines = new Map<string, string>();
  const failures: string[] = [];
  for (const [key, p] of Object.entries(PROBES)) {
    if (p.needsCuda && !cudaAvailable()) continue;  // see the runtime.device test below
    const base = [...SCENARIOS[p.scenario], ...COMMON, ...(p.before ?? [])];
    const id = JSON.stringify(base);
    let b = baselines.get(id);
    if (b === undefined) {
      b = await fingerprint(base);
      // The comparison means something only if the same run gives the same fingerprint.
      assert.equal(await fingerprint(base), b, `the baseline of ${key} (${p.scenario} ${(p.before ?? []).join(' ')}) is not reproducible`);
      baselines.set(id, b);
    }
    let v: string;
    try {
      v = await fingerprint([...base, ...p.change]);
    } catch (e) {
      failures.push(`${key}: the variant run failed (${(e as Error).message.split('\n').slice(0, 2).join(' ')})`);
      continue;
    }
    if (v === b) failures.push(`${key}: ${p.change.join(' ')} changed nothing (${p.scenario}${p.before ? ` with ${p.before.join(' ')}` : ''})`);
  }
  assert.deepEqual(failures, [], `keys that do nothing:\n${failures.join('\n')}`);
});

test('runtime.device: on a libtorch without a CUDA device, cuda ends the run at once, before it reads or writes anything; auto runs on the CPU', { skip: cudaAvailable() ? 'a CUDA device is visible: the probe above runs the key' : false }, async () => {
  const sets = [...SCENARIOS.nas.slice(1), ...COMMON, `train.out_dir=${at('run-device')}`];
  fs.rmSync(at('run-device'), { recursive: true, force: true });
  const logs: string[] = [];
  const progress: Progress = { start() {}, tick() {}, stop() {}, log: (m) => logs.push(m) };
  await assert.rejects(runTraining(loadConfig('nas-lora', [...sets, 'runtime.device=cuda']), { progress }),
    cudaInfo().build ? /runtime\.device cuda: this CUDA libtorch .* sees no CUDA device/ : /runtime\.device cuda: this libtorch has no CUDA \(a CPU build/);
  assert.deepEqual(logs, [], 'nothing was loaded (no data line)');
  assert.ok(!fs.existsSync(at('run-device')), 'nothing was written');
  const r = await runTraining(loadConfig('nas-lora', [...sets, 'runtime.device=auto']), { progress });
  assert.ok(r.losses.length > 0);
  const m = JSON.parse(fs.readFileSync(at('run-device', 'metrics.json'), 'utf8')) as { runtime: { device: string } };
  assert.equal(m.runtime.device, 'cpu', 'auto: the CPU, where no CUDA device is visible');
});
