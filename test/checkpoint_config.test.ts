// Checkpoints carry their SAM configuration (issue: "a wrong decoder is built without a word"):
// what the shapes cannot tell (decoder_heads, an ambiguous window layout) comes from the explicit
// config, else the checkpoint's own metadata, else the official release's values for an exact
// ViT-B/L/H architecture; anything else is refused with a message that says what to pass.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { toRaw } from '../src/adapters/index.js';
import { manualSeed } from '../src/engine/index.js';
import { openCheckpoint, openPth } from '../src/io/pth.js';
import { writePth } from '../src/io/pth_write.js';
import { readSafetensors, writeSafetensors } from '../src/io/safetensors.js';
import { buildSam, checkpointConfig, inferSamConfig, loadSamFile, SAM_CONFIG_KEY, samConfigMetadata } from '../src/model/sam/build.js';
import { SAM_PRESETS, type SamConfig } from '../src/model/sam/sam.js';
import { parseConfig, PRESETS } from '../src/train/config.js';
import { pretrain } from '../src/train/pretrain.js';
import { buildModel } from '../src/train/run.js';
import { silentProgress } from '../src/train/progress.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CVC_SAM = path.resolve(ROOT, '../shared/fixtures/cvc-small-sam');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-ckcfg-'));
process.on('exit', () => fs.rmSync(work, { recursive: true, force: true }));

/** Not a release architecture: a 2-head, 64-wide decoder (8 heads would load just as well). */
const SMALL: SamConfig = {
  img_size: 32, patch_size: 8, embed_dim: 16, depth: 2, num_heads: 2, mlp_ratio: 2, window_size: 2, global_attn_indexes: [1],
  prompt_embed_dim: 16, mask_in_chans: 4, decoder_depth: 1, decoder_mlp_dim: 32, decoder_heads: 2, iou_head_hidden_dim: 8,
};

function runConfig(o: { checkpoint?: string; modelConfig?: string | null; out: string; pretrained?: 'sam' | 'none' }) {
  const raw = PRESETS.lora();
  raw.model = { ...raw.model!, checkpoint: o.checkpoint ?? null, pretrained: o.pretrained ?? 'sam', ...(o.modelConfig !== undefined ? { config: o.modelConfig } : {}) };
  raw.data = { ...raw.data!, synthetic: { kind: 'source', n: 6, size: 32, seed: 0 }, image_size: 32, batch_size: 2, num_workers: 1, prefetch: 0, splits: { seed: 0, fractions: [1, 0, 0], arch_frac: 0 } };
  raw.train = { epochs: null, steps: 1, seed: 0, eval_every: 1, log_every: 1, out_dir: o.out };
  return parseConfig(raw);
}

test('pretrain writes the SAM configuration into sam.safetensors; train builds that model without model.config', async () => {
  const cfgFile = path.join(work, 'small.json');
  fs.writeFileSync(cfgFile, JSON.stringify({ config: SMALL }));
  const out = path.join(work, 'pre');
  const r = await pretrain(runConfig({ modelConfig: cfgFile, pretrained: 'none', out }), { progress: silentProgress });
  const { metadata } = readSafetensors(r.checkpoint);
  assert.deepEqual(JSON.parse(metadata[SAM_CONFIG_KEY]!), SMALL);

  // The preset's model.config (unset) with this checkpoint: its own 2-head decoder, not a default one.
  const b = buildModel(runConfig({ checkpoint: r.checkpoint, out: path.join(work, 't') }), () => undefined);
  try {
    assert.equal(b.config.decoder_heads, 2);
    assert.deepEqual(b.config, SMALL);
    assert.equal(b.sam.mask_decoder.transformer.layers.at(0).self_attn.numHeads, 2);
  } finally {
    b.sam.dispose();
  }
  // A given config that contradicts the metadata is an error, naming both values.
  const wrong = path.join(work, 'wrong.json');
  fs.writeFileSync(wrong, JSON.stringify({ config: { ...SMALL, decoder_heads: 4 } }));
  assert.throws(() => buildModel(runConfig({ checkpoint: r.checkpoint, modelConfig: wrong, out: path.join(work, 't2') }), () => undefined),
    /model\.config .*wrong\.json: config decoder_heads = 4 contradicts the checkpoint's own configuration \(decoder_heads = 2 in its metadata\)/);
  // The model_config.json written beside it agrees.
  buildModel(runConfig({ checkpoint: r.checkpoint, modelConfig: path.join(out, 'model_config.json'), out: path.join(work, 't3') }), () => undefined).sam.dispose();
});

test('a checkpoint without metadata whose shapes are not a release is refused, naming --model-config and model_config.json', () => {
  // The shared CVC model was written before checkpoints carried their configuration (4 decoder heads).
  const ck = path.join(CVC_SAM, 'sam.safetensors');
  const cfg = runConfig({ checkpoint: ck, out: path.join(work, 'cvc') });
  assert.throws(() => buildModel(cfg, () => undefined), (e: Error) =>
    /cannot tell decoder_heads/.test(e.message) && /--model-config/.test(e.message) && /model\.config/.test(e.message) && /model_config\.json/.test(e.message));
  const ok = buildModel({ ...cfg, model: { ...cfg.model, config: path.join(CVC_SAM, 'model_config.json') } }, () => undefined);
  assert.equal(ok.config.decoder_heads, 4);
  ok.sam.dispose();
});

test('release values only for an exact ViT-B/L/H architecture (any input size); metadata must agree with the shapes', () => {
  const shapesOf = (c: SamConfig): Map<string, number[]> => {
    const m = buildSam(c);
    const s = new Map([...m.stateDict()].map(([k, t]) => [k, t.shape]));
    m.dispose();
    return s;
  };
  const vitb = shapesOf({ ...SAM_PRESETS.vit_b, img_size: 224 }); // grid 14 = window 14: the layout is ambiguous too
  const inf = inferSamConfig(vitb);
  assert.deepEqual(inf.config, { ...SAM_PRESETS.vit_b, img_size: 224 });
  assert.equal(inf.sources.decoder_heads, 'release vit_b');
  assert.equal(inf.sources.global_attn_indexes, 'release vit_b');
  // ViT-B's decoder on another encoder: no longer taken for a release.
  const odd = shapesOf({ ...SMALL, prompt_embed_dim: 256, decoder_depth: 2, decoder_mlp_dim: 2048, decoder_heads: 8, iou_head_hidden_dim: 256 });
  assert.throws(() => inferSamConfig(odd), /cannot tell decoder_heads/);
  const small = shapesOf(SMALL);
  assert.equal(inferSamConfig(small, {}, SMALL).sources.decoder_heads, 'metadata');
  assert.throws(() => inferSamConfig(small, {}, { ...SMALL, num_heads: 4 }), /inconsistent: its naslora_sam_config metadata says num_heads = 4, its shapes 2/);
  assert.throws(() => inferSamConfig(small, { decoder_heads: 1 }, SMALL), /decoder_heads = 1 contradicts the checkpoint's own configuration/);
});

test('.pth: the configuration is a state-dict attribute (torch.load(weights_only=True) reads it; the dict holds only the tensors)', (t) => {
  manualSeed(0);
  const m = buildSam(SMALL);
  const tensors = [...m.stateDict()].map(([n, x]): [string, ReturnType<typeof toRaw>] => [n, toRaw(x)]);
  m.dispose();
  const file = path.join(work, 'small.pth');
  writePth(file, tensors, { attributes: samConfigMetadata(SMALL) });
  const src = openPth(file);
  try {
    assert.deepEqual(JSON.parse(src.metadata[SAM_CONFIG_KEY]!), SMALL);
    assert.equal(checkpointConfig(src).sources.decoder_heads, 'metadata');
    assert.deepEqual(src.keys().sort(), tensors.map(([n]) => n).sort(), 'the attribute is not a tensor entry');
  } finally {
    src.close();
  }
  const loaded = loadSamFile(file);
  assert.deepEqual(loaded.config, SMALL);
  loaded.model.dispose();
  // safetensors the same way.
  const st = path.join(work, 'small.safetensors');
  writeSafetensors(st, tensors, { format: 'pt', ...samConfigMetadata(SMALL) });
  const s2 = openCheckpoint(st);
  assert.equal(checkpointConfig(s2).config.decoder_heads, 2);
  s2.close();

  const py = spawnSync('/usr/bin/python3', ['-c', [
    'import json, sys, torch',
    'sd = torch.load(sys.argv[1], weights_only=True)',
    'assert all(isinstance(v, torch.Tensor) for v in sd.values())',
    'print(json.dumps(json.loads(sd.naslora_sam_config)))',
  ].join('\n'), file], { encoding: 'utf8' });
  if (py.status !== 0 && /No module named 'torch'/.test(py.stderr)) { t.diagnostic('torch not installed: the PyTorch check is skipped'); return; }
  assert.equal(py.status, 0, py.stderr);
  assert.deepEqual(JSON.parse(py.stdout), SMALL);
});
