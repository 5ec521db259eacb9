// `naslora compare` on a tiny SAM and synthetic data: 2 methods × 2 seeds end to end through the
// CLI (summary statistics equal those recomputed from each run's metrics.json; --json prints JSON
// only), skipping finished runs on a re-run, resuming a run killed with SIGKILL to the same result as
// an uninterrupted one, zero-shot evaluation, and bad compare files refused before anything runs.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Sam, type SamConfig } from '../src/model/sam/sam.js';
import { manualSeed } from '../src/engine/index.js';
import { toRaw } from '../src/adapters/io.js';
import { writeSafetensors } from '../src/io/safetensors.js';
import { silentProgress } from '../src/train/progress.js';
import { planCompare, runCompare, sampleSd, COMPARE_METRICS, type CompareResult } from '../src/compare/compare.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(here, '../..');
const CLI = path.join(ROOT, 'dist/src/cli/main.js');
const cli = (...args: string[]) => spawnSync(process.execPath, [CLI, 'compare', ...args], { encoding: 'utf8' });

const TINY: SamConfig = {
  img_size: 64, patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2, mlp_ratio: 2, window_size: 4, global_attn_indexes: [1],
  prompt_embed_dim: 32, mask_in_chans: 8, decoder_depth: 1, decoder_mlp_dim: 64, decoder_heads: 2, iou_head_hidden_dim: 16,
};

const work = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-compare-'));
process.on('exit', () => fs.rmSync(work, { recursive: true, force: true }));
const modelConfig = path.join(work, 'tiny.json');
fs.writeFileSync(modelConfig, JSON.stringify({ config: TINY }));

/** A base run config (YAML): tiny SAM from random weights, synthetic data with a test split. */
function baseYaml(steps: number, model = `{ config: ${modelConfig}, checkpoint: null, pretrained: none }`): string {
  return [
    `model: ${model}`,
    'data:',
    '  synthetic: { kind: target, n: 24, size: 64, seed: 1 }',
    '  image_size: 64',
    '  batch_size: 4',
    '  num_workers: 1',
    '  prefetch: 1',
    '  cache: true',
    '  splits: { seed: 0, fractions: [0.5, 0.2, 0.3], arch_frac: 0.15 }',
    'method: { rank: 2, lora_alpha: 4 }',
    'optim: { lr: 0.003 }',
    `train: { epochs: null, steps: ${steps}, eval_every: ${steps}, log_every: 1 }`,
    '',
  ].join('\n');
}

/** Writes <dir>/base.yaml and <dir>/compare.yaml; returns the compare file. */
function compareFile(dir: string, body: string, base = baseYaml(4)): string {
  fs.mkdirSync(dir, { recursive: true });
  fs.writeFileSync(path.join(dir, 'base.yaml'), base);
  const f = path.join(dir, 'compare.yaml');
  fs.writeFileSync(f, body);
  return f;
}

type Metrics = { seconds: number; trainable_parameters: number; test: Record<string, number> };
const readMetrics = (runDir: string) => JSON.parse(fs.readFileSync(path.join(runDir, 'metrics.json'), 'utf8')) as Metrics;
const SRC: Record<string, string> = Object.fromEntries(COMPARE_METRICS.map(([k, s]) => [k, s]));

const e2eDir = path.join(work, 'e2e');
const e2eOut = path.join(work, 'e2e-runs');

test('2 methods × 2 seeds through the CLI: compare.json statistics match the runs\' metrics.json; --json prints JSON only', () => {
  const f = compareFile(e2eDir, `base: base.yaml\nmethods: [lora, decoder-only]\nseeds: [0, 1]\nout_dir: ${e2eOut}\n`);
  const r = cli('-c', f, '--json');
  assert.equal(r.status, 0, r.stderr);
  const printed = JSON.parse(r.stdout) as CompareResult;  // the whole of stdout is one JSON document
  const saved = JSON.parse(fs.readFileSync(path.join(e2eOut, 'compare.json'), 'utf8')) as CompareResult;
  assert.deepEqual(printed, saved);
  assert.equal(saved.runs.length, 4);
  assert.deepEqual(saved.methods.map((m) => m.method), ['lora', 'decoder-only']);
  assert.match(r.stderr, /compare: run 1\/4 lora seed 0 \(ETA unknown\)/);
  assert.match(r.stderr, /compare: run 2\/4 lora seed 1 \(ETA (\d+m)?\d+s\)/);
  assert.match(r.stderr, /compare: run 4\/4 decoder-only seed 1 \(ETA/);
  for (const m of saved.methods) {
    const dirs = [0, 1].map((s) => path.join(e2eOut, m.method, `seed${s}`));
    const ms = dirs.map(readMetrics);
    for (const [k] of COMPARE_METRICS) {
      const xs = ms.map((x) => x.test[SRC[k]!]!);
      assert.equal(m[`${k}_mean`], (xs[0]! + xs[1]!) / 2, `${m.method} ${k}_mean`);
      assert.ok(Math.abs(m[`${k}_sd`] - Math.abs(xs[0]! - xs[1]!) / Math.SQRT2) < 1e-12, `${m.method} ${k}_sd`);
    }
    assert.equal(m.seconds_mean, (ms[0]!.seconds + ms[1]!.seconds) / 2);
    assert.equal(m.trainable_params, ms[0]!.trainable_parameters);
    assert.equal(m.time_vs_conv_lora, null);
    assert.equal(m.derived_ops, null);
  }
  const lora = saved.methods[0]!;
  assert.equal(lora.time_vs_lora, 1);
  assert.equal(saved.methods[1]!.adapter_params, 0);
  assert.ok(lora.adapter_params > 0);
  assert.ok(saved.runs.every((x) => x.status === 'trained' && x.derived_ops === null && x.seconds > 0));
  assert.equal(sampleSd([3]), 0);
  const md = fs.readFileSync(path.join(e2eOut, 'compare.md'), 'utf8');
  assert.match(md, /\| method \| n \| Dice \| IoU \| S \| E \| wF \| MAE \| seconds \| time ÷ Conv-LoRA \| time ÷ LoRA \|/);
  assert.match(md, /\| lora \| 2 \| \d\.\d{4} ± \d\.\d{4} \|/);
});

test('a re-run skips finished runs (no training, run folders untouched); a changed config is refused', () => {
  const f = path.join(e2eDir, 'compare.yaml');
  const runDirs = ['lora', 'decoder-only'].flatMap((m) => [0, 1].map((s) => path.join(e2eOut, m, `seed${s}`)));
  const before = runDirs.map((d) => fs.statSync(path.join(d, 'metrics.json')).mtimeMs);
  const first = JSON.parse(fs.readFileSync(path.join(e2eOut, 'compare.json'), 'utf8')) as CompareResult;
  const r = cli('-c', f);
  assert.equal(r.status, 0, r.stderr);
  assert.equal(r.stderr.match(/finished earlier, skipped/g)?.length, 4, r.stderr);
  assert.doesNotMatch(r.stderr, /"event":"start"|ETA/);
  assert.deepEqual(runDirs.map((d) => fs.statSync(path.join(d, 'metrics.json')).mtimeMs), before);
  assert.match(r.stdout, /^# naslora compare/);
  const again = JSON.parse(fs.readFileSync(path.join(e2eOut, 'compare.json'), 'utf8')) as CompareResult;
  assert.deepEqual(again.methods, first.methods);
  assert.ok(again.runs.every((x) => x.status === 'skipped'));
  // Reusing these run folders under another config would mix configurations.
  const bad = cli('-c', f, '--set', 'optim.lr=0.001');
  assert.equal(bad.status, 1);
  assert.match(bad.stderr, /seed0: was run with another config \(optim\.lr: 0\.003 → 0\.001\)/);
});

test('kill -9 during a run, re-run: the run resumes from its checkpoint and ends as an uninterrupted run does', async () => {
  const steps = 40;
  const dir = path.join(work, 'kill');
  const out = path.join(work, 'kill-runs');
  const f = compareFile(dir, `base: base.yaml\nmethods: [lora]\nseeds: [0]\nout_dir: ${out}\n`, baseYaml(steps));
  const runDir = path.join(out, 'lora', 'seed0');
  const child = spawn(process.execPath, [CLI, 'compare', '-c', f], { stdio: ['ignore', 'ignore', 'ignore'] });
  const killed = await new Promise<boolean>((resolve) => {
    const poll = setInterval(() => {
      if (fs.existsSync(path.join(runDir, 'checkpoints', 'last', 'trainer_state.json'))) { clearInterval(poll); resolve(child.kill('SIGKILL')); }
    }, 5);
    child.on('exit', () => { clearInterval(poll); resolve(false); });
  });
  assert.ok(killed, 'the run ended before a checkpoint appeared');
  await new Promise((r) => child.on('exit', r));
  assert.ok(!fs.existsSync(path.join(runDir, 'metrics.json')), 'the run had finished before the kill');
  const stepsAtKill = (JSON.parse(fs.readFileSync(path.join(runDir, 'checkpoints', 'last', 'trainer_state.json'), 'utf8')) as { step: number }).step;
  assert.ok(stepsAtKill < steps);

  const r = cli('-c', f, '--json');
  assert.equal(r.status, 0, r.stderr);
  assert.match(r.stderr, /was interrupted: resuming from its last checkpoint/);
  assert.match(r.stderr, /resumed from .* at step \d+\/40/);
  const resumed = (JSON.parse(r.stdout) as CompareResult).runs[0]!;
  assert.equal(resumed.status, 'resumed');

  // The same compare, never interrupted, into another out_dir.
  const refDir = path.join(work, 'kill-ref');
  const refOut = path.join(work, 'kill-ref-runs');
  const g = compareFile(refDir, `base: base.yaml\nmethods: [lora]\nseeds: [0]\nout_dir: ${refOut}\n`, baseYaml(steps));
  const ref = cli('-c', g, '--json');
  assert.equal(ref.status, 0, ref.stderr);
  const uninterrupted = (JSON.parse(ref.stdout) as CompareResult).runs[0]!;
  for (const [k] of COMPARE_METRICS) assert.equal(resumed[k], uninterrupted[k], `${k} after resume differs from the uninterrupted run`);
  const losses = (d: string) => fs.readFileSync(path.join(d, 'events.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; loss?: number }).filter((e) => e.type === 'step').map((e) => e.loss);
  assert.deepEqual(losses(runDir), losses(path.join(refOut, 'lora', 'seed0')));
});

test('zero-shot: the base checkpoint on the test split, no training, once per seed', async () => {
  manualSeed(0);
  const sam = Sam.fromConfig(TINY);
  const ckpt = path.join(work, 'tiny.safetensors');
  writeSafetensors(ckpt, [...sam.stateDict()].map(([n, t]) => [n, toRaw(t)]), { format: 'pt' });
  sam.dispose();
  const dir = path.join(work, 'zs');
  const out = path.join(work, 'zs-runs');
  const f = compareFile(dir, `base: base.yaml\nmethods: [zero-shot]\nseeds: [0, 1]\nout_dir: ${out}\n`,
    baseYaml(4, `{ config: ${modelConfig}, checkpoint: ${ckpt}, pretrained: sam }`));
  // A stale partial folder (no metrics.json, no checkpoint) is removed and the run done afresh.
  fs.mkdirSync(path.join(out, 'zero-shot', 'seed0'), { recursive: true });
  fs.writeFileSync(path.join(out, 'zero-shot', 'seed0', 'stale.txt'), 'x');
  const logs: string[] = [];
  const r = await runCompare(planCompare(f), { log: (m) => logs.push(m), progress: () => silentProgress });
  assert.equal(r.runs.length, 2);
  assert.ok(r.runs.every((x) => x.status === 'evaluated' && x.seconds === 0 && x.trainable_params === 0 && x.adapter_params === 0 && x.test_images > 0));
  assert.equal(r.runs[0]!.dice, r.runs[1]!.dice);
  assert.ok(Number.isFinite(r.runs[0]!.dice));
  assert.equal(r.methods[0]!.dice_sd, 0);
  assert.ok(!fs.existsSync(path.join(out, 'zero-shot', 'seed0', 'stale.txt')));
  const again = await runCompare(planCompare(f), { log: (m) => logs.push(m), progress: () => silentProgress });
  assert.ok(again.runs.every((x) => x.status === 'skipped'));
});

test('bad compare files: exit 1, a message naming the key, no run folder', () => {
  const cases: Array<{ name: string; body: string; args?: string[]; expect: RegExp }> = [
    { name: 'unknown-method', body: 'methods: [lora, lorax]', expect: /methods\[1\]: unknown method 'lorax'/ },
    { name: 'empty-methods', body: 'methods: []', expect: /methods: empty/ },
    { name: 'empty-seeds', body: 'methods: [lora]\nseeds: []', expect: /seeds: empty/ },
    { name: 'unknown-set-key', body: 'methods: [lora, { name: wide, preset: lora, set: { method.foo: 3 } }]', expect: /methods\[1\]\.set\.method\.foo: unknown key 'foo' under method/ },
    { name: 'set-twice', body: 'methods: [{ name: r8, preset: lora, set: { method.rank: 8, method.rank: 4 } }]', expect: /methods\[0\]\.set\.method\.rank: given twice/ },
    { name: 'set-overlap', body: 'methods: [{ name: r8, preset: lora, set: { method: { rank: 8 }, method.rank: 4 } }]', expect: /methods\[0\]\.set\.method\.rank: conflicts with methods\[0\]\.set\.method/ },
    { name: 'owned-seed', body: 'methods: [lora]', args: ['--set', 'train.seed=3'], expect: /--set train\.seed: not allowed/ },
    { name: 'owned-out-dir', body: 'methods: [{ name: x, preset: lora, set: { train.out_dir: elsewhere } }]', expect: /methods\[0\]\.set\.train\.out_dir: not allowed/ },
    { name: 'set-vs-method', body: 'methods: [{ name: r8, preset: lora, set: { method.rank: 8 } }]', args: ['--set', 'method.rank=4'], expect: /--set method\.rank: conflicts with methods\[0\]\.set\.method\.rank/ },
    { name: 'duplicate-name', body: 'methods: [lora, { name: lora, preset: nas-lora }]', expect: /methods\[1\]\.name: duplicate method name 'lora'/ },
    { name: 'base-method-name', body: 'methods: [lora]', expect: /base\.method\.name: not allowed/ },
    { name: 'no-test-split', body: 'methods: [lora]', args: ['--set', 'data.splits.fractions=[0.8, 0.2, 0]'], expect: /no test split/ },
    { name: 'unknown-top-key', body: 'methods: [lora]\nseed: [0]', expect: /seed: unknown key/ },
  ];
  for (const c of cases) {
    const dir = path.join(work, 'bad', c.name);
    const out = path.join(dir, 'runs');
    const base = c.name === 'base-method-name' ? baseYaml(4).replace('method: { rank: 2', 'method: { name: lora, rank: 2') : baseYaml(4);
    const seeds = c.body.includes('seeds:') ? '' : '\nseeds: [0]';
    const f = compareFile(dir, `base: base.yaml\n${c.body}${seeds}\nout_dir: ${out}\n`, base);
    const r = cli('-c', f, ...(c.args ?? []));
    assert.equal(r.status, 1, `${c.name}: ${r.stderr}`);
    assert.match(r.stderr, c.expect, c.name);
    assert.match(r.stderr, /^naslora: invalid compare file/, c.name);
    assert.ok(!fs.existsSync(out), `${c.name}: created ${out}`);
  }
});

test('naslora compare --help documents every option and the compare file', () => {
  const r = cli('--help');
  assert.equal(r.status, 0);
  for (const s of ['--config', '--set', '--json', 'relative to the compare file', 'zero-shot', 'seeds:', 'out_dir:']) assert.ok(r.stdout.includes(s), s);
});
