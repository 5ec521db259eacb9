// `naslora pretrain` calls itself pretrain (progress lines, metrics.json), and with nothing held out
// it scores the training data, labelled as such, instead of reporting nothing.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = path.join(ROOT, 'dist/src/cli/main.js');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-pretrain-'));
process.on('exit', () => fs.rmSync(work, { recursive: true, force: true }));

const SMALL = {
  img_size: 32, patch_size: 8, embed_dim: 16, depth: 2, num_heads: 2, mlp_ratio: 2, window_size: 2, global_attn_indexes: [1],
  prompt_embed_dim: 16, mask_in_chans: 4, decoder_depth: 1, decoder_mlp_dim: 32, decoder_heads: 2, iou_head_hidden_dim: 8,
};
const cfgFile = path.join(work, 'small.json');
fs.writeFileSync(cfgFile, JSON.stringify({ config: SMALL }));

function pretrain(out: string, fractions: string) {
  return spawnSync(process.execPath, [CLI, 'pretrain', '-c', 'decoder-only', '--set', `model.config=${cfgFile}`,
    '--set', 'data.synthetic={kind: source, n: 10, size: 32, seed: 0}', '--set', 'data.image_size=32', '--set', `data.splits.fractions=${fractions}`,
    '--set', 'data.batch_size=4', '--set', 'train.epochs=null', '--set', 'train.steps=2', '--set', 'train.log_every=1', '--set', `train.out_dir=${out}`],
  { encoding: 'utf8' });
}

test('pretrain with nothing held out: called pretrain, scored on its training data and labelled so', () => {
  const out = path.join(work, 'all-train');
  const r = pretrain(out, '[1, 0, 0]');
  assert.equal(r.status, 0, r.stderr);
  // Progress (JSON lines when not on a terminal) names the task pretrain, never the decoder-only method.
  const lines = r.stdout.trim().split('\n').map((l) => JSON.parse(l) as { task: string; event: string; msg?: string });
  assert.ok(lines.length > 3 && lines.every((l) => l.task === 'pretrain'), 'every progress line is pretrain\'s');
  assert.doesNotMatch(r.stdout + r.stderr, /decoder-only/);
  assert.ok(lines.some((l) => l.event === 'log' && /nothing held out: scored on the training data/.test(l.msg ?? '')));
  const m = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
  assert.equal(m.method, 'pretrain');
  assert.equal(m.test, null);
  assert.equal(m.train.count, 10);
  assert.ok(m.train.dice >= 0 && m.train.dice <= 1);
  assert.match(m.train_note, /not held out/);
  assert.match(r.stderr, /train \(not held out, no val or test split\): Dice \d\.\d{4} on 10 images/);
});

test('pretrain with a test split: test metrics, no training-data score', () => {
  const out = path.join(work, 'held-out');
  const r = pretrain(out, '[0.7, 0, 0.3]');
  assert.equal(r.status, 0, r.stderr);
  const m = JSON.parse(fs.readFileSync(path.join(out, 'metrics.json'), 'utf8'));
  assert.equal(m.method, 'pretrain');
  assert.equal(m.test.count, 3);
  assert.equal(m.train, undefined);
  assert.match(r.stderr, /test: Dice \d\.\d{4} on 3 images/);
});
