// Training: a short NAS-LoRA run on real polyp images lowers the loss and raises validation Dice;
// a run killed with SIGKILL mid-epoch resumes to exactly the losses of an uninterrupted run.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { parseConfig, PRESETS, configToYaml, type RunConfig } from '../src/train/config.js';
import { buildModel, loadSplits, runTraining } from '../src/train/run.js';
import { evaluate } from '../src/train/trainer.js';
import { silentProgress } from '../src/train/progress.js';
import { memory, randn } from '../src/engine/index.js';
import { cachedPlacements } from '../src/adapters/index.js';

const ROOT_FOR_SEED = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(here, '../..');
const KVASIR = path.resolve(ROOT, '../shared/data/kvasir-seg');
const CLI = path.join(ROOT, 'dist/src/cli/main.js');

const TINY = {
  img_size: 64, patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2, mlp_ratio: 2, window_size: 4, global_attn_indexes: [1],
  prompt_embed_dim: 32, mask_in_chans: 8, decoder_depth: 1, decoder_mlp_dim: 64, decoder_heads: 2, iou_head_hidden_dim: 16,
};

function setup(n: number): { dir: string; csv: string; modelConfig: string } {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-train-'));
  const ids = fs.readdirSync(path.join(KVASIR, 'images')).sort().slice(0, n);
  const rows = ids.map((f) => `${path.join(KVASIR, 'images', f)},${path.join(KVASIR, 'masks', f)}`);
  const csv = path.join(dir, 'subset.csv');
  fs.writeFileSync(csv, ['image,mask', ...rows].join('\n') + '\n');
  const modelConfig = path.join(dir, 'tiny.json');
  fs.writeFileSync(modelConfig, JSON.stringify({ config: TINY }));
  return { dir, csv, modelConfig };
}

function config(csv: string, modelConfig: string, out: string, steps: number, extra: (r: ReturnType<typeof PRESETS['nas-lora']>) => void = () => {}): RunConfig {
  const raw = PRESETS['nas-lora']();
  raw.model = { config: modelConfig, checkpoint: null, pretrained: 'none' };
  raw.data = { ...raw.data!, dir: csv, image_size: 64, batch_size: 4, num_workers: 2, prefetch: 1, cache: true, splits: { seed: 0, fractions: [0.7, 0.15, 0.15], arch_frac: 0.15 } };
  raw.method = { ...raw.method!, rank: 4, lora_alpha: 8 };
  raw.optim = { ...raw.optim!, lr: 3e-3 };
  raw.train = { epochs: null, steps, seed: 3, eval_every: steps, log_every: 2, out_dir: out };
  extra(raw);
  return parseConfig(raw);
}

test('a short NAS-LoRA run on Kvasir-SEG lowers the loss and raises validation Dice', async () => {
  const { dir, csv, modelConfig } = setup(48);
  try {
    const cfg = config(csv, modelConfig, path.join(dir, 'run'), 60);
    // Validation Dice of the same (seeded) model before training.
    const splits = loadSplits(cfg, 0);
    const b = buildModel(cfg, () => undefined);
    const before = await evaluate(b.seg, splits.val, cfg, 0.5);
    b.sam.dispose();
    // The placement cache of the fused search kernels may gain an entry (a shrunk cell fuses fewer
    // ops, so a smaller kernel size): a bounded cache, not a leak.
    const live0 = memory().liveTensors - cachedPlacements();
    const r = await runTraining(cfg, { progress: silentProgress });
    const first = r.losses.slice(0, 10).reduce((a, x) => a + x, 0) / 10;
    const last = r.losses.slice(-10).reduce((a, x) => a + x, 0) / 10;
    assert.ok(last < first * 0.9, `loss did not go down: first 10 steps ${first.toFixed(4)}, last 10 ${last.toFixed(4)}`);
    assert.ok(r.final && r.final.dice > before.dice + 0.05, `val Dice ${before.dice.toFixed(4)} → ${r.final?.dice.toFixed(4)}`);
    // Stage-wise schedule happened: α history during search, derived ops at the fix stage.
    const derived = JSON.parse(fs.readFileSync(path.join(dir, 'run', 'derived_ops.json'), 'utf8')) as { derived: Record<string, string> };
    assert.equal(Object.keys(derived.derived).length, TINY.depth);
    assert.ok(fs.readFileSync(path.join(dir, 'run', 'alpha_history.jsonl'), 'utf8').trim().split('\n').length >= 2);
    for (const f of ['config.resolved.json', 'events.jsonl', 'metrics.json', 'checkpoints/last/adapter.safetensors', 'checkpoints/best/trainer_state.json']) {
      assert.ok(fs.existsSync(path.join(dir, 'run', f)), `${f} missing`);
    }
    assert.equal(memory().liveTensors - cachedPlacements(), live0, 'the run left tensors alive');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('same seed, same run: identical losses', async () => {
  const { dir, csv, modelConfig } = setup(24);
  try {
    const a = await runTraining(config(csv, modelConfig, path.join(dir, 'a'), 6), { progress: silentProgress });
    const b = await runTraining(config(csv, modelConfig, path.join(dir, 'b'), 6), { progress: silentProgress });
    assert.deepEqual(a.losses, b.losses);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('kill -9 mid-run, then --resume: the same losses as a run never interrupted', async () => {
  const { dir, csv, modelConfig } = setup(24);
  try {
    const steps = 16;  // 17 train images / batch 4 = 5 batches an epoch: the kill lands mid-epoch
    const mk = (out: string) => config(csv, modelConfig, out, steps, (r) => { r.method = { ...r.method!, name: 'nas-lora' }; });
    const ref = await runTraining(mk(path.join(dir, 'ref')), { progress: silentProgress });

    const out = path.join(dir, 'killed');
    const yaml = path.join(dir, 'run.yaml');
    fs.writeFileSync(yaml, configToYaml(mk(out)));
    const child = spawn(process.execPath, [CLI, 'train', '--config', yaml], { stdio: ['ignore', 'pipe', 'pipe'] });
    let killedAt = -1;
    await new Promise<void>((resolve, reject) => {
      child.stdout.on('data', () => {
        const ev = path.join(out, 'events.jsonl');
        if (killedAt >= 0 || !fs.existsSync(ev)) return;
        const stepsDone = fs.readFileSync(ev, 'utf8').split('\n').filter((l) => l.includes('"type":"step"')).length;
        if (stepsDone >= 7) { killedAt = stepsDone; child.kill('SIGKILL'); }
      });
      child.on('exit', (code, sig) => (sig === 'SIGKILL' ? resolve() : reject(new Error(`child ended with ${code}/${sig} before the kill`))));
    });
    assert.ok(killedAt > 0 && killedAt < steps);
    const resumed = await runTraining(mk(out), { resume: true, progress: silentProgress });
    assert.deepEqual(resumed.losses, ref.losses, 'losses after resume differ from the uninterrupted run');
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('prompted mode: boxes and points drawn from the ground truth train the model too', async () => {
  const { dir, csv, modelConfig } = setup(16);
  try {
    const cfg = config(csv, modelConfig, path.join(dir, 'prompted'), 4, (r) => {
      // From the nas-lora preset to lora: the NAS-only settings go back to the lora preset's.
      r.method = { ...r.method!, name: 'lora', ops_init: 'default' };
      r.schedule = { ...r.schedule!, stages: [{ name: 'train', share: 1, train: ['lora', 'decoder'] }], search: PRESETS.lora().schedule.search };
      r.data = { ...r.data!, mode: 'prompted', prompts: { box: true, box_jitter: 0.1, n_pos: 1, n_neg: 1 } };
    });
    const r = await runTraining(cfg, { progress: silentProgress });
    assert.equal(r.losses.length, 4);
    assert.ok(r.losses.every(Number.isFinite));
    assert.ok(r.final && Number.isFinite(r.final.dice));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});

test('adapter initial values come from train.seed, not from what the process drew before (compare runs one run after another)', () => {
  const { dir, csv } = setup(8);
  try {
    const sam = path.resolve(ROOT_FOR_SEED, '../shared/fixtures/cvc-small-sam');
    const cfgFor = (seed: number) => config(csv, path.join(sam, 'model_config.json'), path.join(dir, 'x'), 4, (r) => {
      r.model = { config: path.join(sam, 'model_config.json'), checkpoint: path.join(sam, 'sam.safetensors'), pretrained: 'sam' };
      r.train = { ...r.train!, seed };
    });
    const adapterValues = (seed: number, drawBefore: number): number[] => {
      randn([drawBefore]).dispose();  // an earlier run's draws
      const b = buildModel(cfgFor(seed), () => undefined);
      try {
        return b.sam.namedParameters().filter(([n]) => /lora_A|cell\.ops/.test(n)).flatMap(([, p]) => [...p.toArray()].slice(0, 5));
      } finally {
        b.sam.dispose();
      }
    };
    assert.deepEqual(adapterValues(0, 10), adapterValues(0, 1000));
    assert.notDeepEqual(adapterValues(0, 10), adapterValues(1, 10));
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
});
