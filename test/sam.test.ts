// SAM: the port against the official implementation's outputs (the sam-tiny fixture), against a
// PyTorch re-implementation of segment-anything's modeling code on other configurations
// (test/py/sam_ref.py), checkpoint loading (names, shapes, config inference, other input sizes),
// and self-consistency (batched boxes, adapter hook, memory).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { Linear, manualSeed, memory, Module, noGrad, randn, tensor, tidy, type Tensor } from '../src/engine/index.js';
import { openPth } from '../src/io/pth.js';
import type { RawTensor } from '../src/io/raw.js';
import { openSafetensors, readSafetensors } from '../src/io/safetensors.js';
import { Block } from '../src/model/sam/image_encoder.js';
import { buildSam, inferSamConfig, loadSam, loadSamFile, loadSamWeights, samTensors, type LoadedSam } from '../src/model/sam/build.js';
import { toHuggingFace } from '../src/model/sam/naming.js';
import { SamPredictor, type Prediction } from '../src/model/sam/predictor.js';
import { SAM_PRESETS, type SamConfig } from '../src/model/sam/sam.js';
import { resizeImageU8 } from '../src/model/sam/transforms.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIX = path.resolve(ROOT, '../shared/fixtures/sam-reference');
const PYTHON = '/usr/bin/python3';

interface FixturePrompt {
  points?: Array<[number, number]>; labels?: number[]; box?: [number, number, number, number];
  mask_input_from?: number; multimask_output: boolean;
}
const FIXTURE = JSON.parse(fs.readFileSync(path.join(FIX, 'sam-tiny.json'), 'utf8')) as { config: SamConfig; prompts: FixturePrompt[] };
const REF = readSafetensors(path.join(FIX, 'sam-tiny.reference.safetensors')).tensors;

const f32 = (r: RawTensor): Float32Array => new Float32Array(r.data.slice().buffer);
const fromRaw = (r: RawTensor): Tensor => (r.dtype === 'float32' ? tensor(f32(r), r.shape)
  : r.dtype === 'int64' ? tensor(new BigInt64Array(r.data.slice().buffer), r.shape) : tensor(r.data.slice(), r.shape, { dtype: r.dtype }));
const raw = (t: Tensor): RawTensor => ({ dtype: t.dtype, shape: t.shape, data: t.contiguous().toBytes() });

/** max |a − b| and max |b|. */
function errs(a: ArrayLike<number>, b: ArrayLike<number>): { abs: number; ref: number } {
  assert.equal(a.length, b.length, 'length');
  let abs = 0, ref = 0;
  for (let i = 0; i < b.length; i++) {
    abs = Math.max(abs, Math.abs(a[i] - b[i]));
    ref = Math.max(ref, Math.abs(b[i]));
  }
  return { abs, ref };
}
/** Asserts max abs error ≤ tol · max|ref|; returns the relative error. */
function closeRel(name: string, a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-4): number {
  const e = errs(a, b);
  assert.ok(e.abs <= tol * e.ref, `${name}: max abs error ${e.abs} > ${tol} × ${e.ref}`);
  return e.abs / e.ref;
}
function sameMasks(name: string, a: Uint8Array, b: Uint8Array, frac = 0.9999): number {
  assert.equal(a.length, b.length, `${name}: length`);
  let same = 0;
  for (let i = 0; i < a.length; i++) if ((a[i] !== 0) === (b[i] !== 0)) same++;
  assert.ok(same / a.length >= frac, `${name}: masks agree on ${same} of ${a.length} pixels`);
  return same / a.length;
}

const loadTiny = (file = 'sam-tiny.pth'): LoadedSam => loadSamFile(path.join(FIX, file), { config: FIXTURE.config });

/** The fixture's prompts through the predictor (mask_input_from: our own best low-res logits). */
function runFixturePrompts(p: SamPredictor): Prediction[] {
  const out: Prediction[] = [];
  for (const pr of FIXTURE.prompts) {
    let maskInput: Float32Array | undefined;
    if (pr.mask_input_from !== undefined) {
      const prev = out[pr.mask_input_from];
      const best = prev.iouPredictions.indexOf(Math.max(...prev.iouPredictions));
      const n = prev.lowResSize[0] * prev.lowResSize[1];
      maskInput = prev.lowResLogits.slice(best * n, (best + 1) * n);
    }
    out.push(p.predict({ pointCoords: pr.points, pointLabels: pr.labels, box: pr.box, maskInput, multimaskOutput: pr.multimask_output, returnLogits: true }));
  }
  return out;
}

test('sam-tiny fixture: every output matches the official SamPredictor', (t) => {
  const { model, checkpoint, naming } = loadTiny();
  assert.equal(naming, 'segment-anything');
  assert.equal(checkpoint.sources.decoder_heads, 'config');
  const image = REF.get('image')!;
  const [H, W] = image.shape;
  const report: string[] = [];

  // ResizeLongestSide: byte-identical; preprocess: the encoder input.
  const resized = resizeImageU8({ data: image.data, width: W, height: H, channels: 3 }, model.imgSize);
  const refResized = REF.get('resized_image')!;
  assert.deepEqual([resized.height, resized.width, 3], refResized.shape);
  assert.ok(Buffer.from(resized.data).equals(Buffer.from(refResized.data)), 'resized_image differs');
  tidy(() => {
    const x = tensor(resized.data, [1, resized.height, resized.width, 3], { dtype: 'uint8' }).permute(0, 3, 1, 2);
    const e = closeRel('input_tensor', model.preprocess(x).toFloat32Array(), f32(REF.get('input_tensor')!));
    report.push(`input_tensor ${e.toExponential(2)}`);
  });

  const p = new SamPredictor(model);
  p.setImage(image.data, H, W);
  assert.deepEqual(p.inputSize, [refResized.shape[0], refResized.shape[1]]);
  report.push(`image_embeddings ${closeRel('image_embeddings', p.getImageEmbedding().toFloat32Array(), f32(REF.get('image_embeddings')!)).toExponential(2)}`);

  runFixturePrompts(p).forEach((r, k) => {
    const n = REF.get(`p${k}.masks`)!.shape[0];
    assert.equal(r.count, n);
    const low = closeRel(`p${k}.low_res_logits`, r.lowResLogits, f32(REF.get(`p${k}.low_res_logits`)!));
    const logits = closeRel(`p${k}.mask_logits`, r.maskLogits!, f32(REF.get(`p${k}.mask_logits`)!));
    const iou = errs(r.iouPredictions, f32(REF.get(`p${k}.iou_predictions`)!)).abs;
    assert.ok(iou <= 1e-4, `p${k}.iou_predictions: max abs error ${iou}`);
    const agree = sameMasks(`p${k}.masks`, r.masks, REF.get(`p${k}.masks`)!.data);
    report.push(`p${k}: low_res ${low.toExponential(2)} mask_logits ${logits.toExponential(2)} iou(abs) ${iou.toExponential(2)} masks ${(agree * 100).toFixed(4)}%`);
  });
  t.diagnostic(`max abs error / max |reference|: ${report.join('; ')}`);
  p.dispose();
  model.dispose();
});

test('sam-tiny: Hugging Face safetensors and the .pth give identical outputs', () => {
  const a = loadTiny(), b = loadTiny('sam-tiny.hf.safetensors');
  assert.equal(b.naming, 'huggingface');
  const image = REF.get('image')!;
  const outs = [a, b].map(({ model }) => {
    const p = new SamPredictor(model);
    p.setImage(image.data, image.shape[0], image.shape[1]);
    const emb = p.getImageEmbedding().toFloat32Array();
    const preds = runFixturePrompts(p);
    p.dispose();
    model.dispose();
    return { emb, preds };
  });
  assert.deepEqual(outs[1].emb, outs[0].emb);
  outs[0].preds.forEach((r, k) => {
    assert.deepEqual(outs[1].preds[k].lowResLogits, r.lowResLogits);
    assert.deepEqual(outs[1].preds[k].iouPredictions, r.iouPredictions);
  });
});

test('config inference: sam-tiny and the released ViT-B names/shapes', () => {
  const src = openPth(path.join(FIX, 'sam-tiny.pth'));
  const shapes = new Map(src.keys().map((k) => [k, src.get(k)!.shape]));
  src.close();
  const { config, sources } = inferSamConfig(shapes, { decoder_heads: FIXTURE.config.decoder_heads });
  assert.deepEqual(config, FIXTURE.config);
  assert.equal(sources.global_attn_indexes, 'shapes');
  assert.throws(() => inferSamConfig(shapes), /decoder_heads/);
  assert.throws(() => inferSamConfig(shapes, { decoder_heads: 2, num_heads: 8 }), /num_heads = 8 contradicts the checkpoint \(4 from shapes\)/);
  assert.throws(() => inferSamConfig(shapes, { decoder_heads: 2, img_size: 512 }), /imgSize option/);

  // sam_vit_b_keys.tsv: segment-anything name, HF name, shape of all 314 tensors of the release.
  const rows = fs.readFileSync(path.join(FIX, 'sam_vit_b_keys.tsv'), 'utf8').trim().split('\n')
    .map((l) => l.split('\t')).filter((c) => c[0] !== 'extra');
  const shapeOf = (s: string): number[] => (s.match(/\d+/g) ?? []).map(Number);
  const vitb = new Map(rows.map((c) => [c[0], shapeOf(c[2].split(')')[0])]));
  assert.equal(vitb.size, 314);
  const inf = inferSamConfig(vitb);
  assert.deepEqual(inf.config, SAM_PRESETS.vit_b);
  assert.equal(inf.sources.decoder_heads, 'release vit_b');
  // The same from the Hugging Face names.
  const hfShapes = new Map(rows.map((c) => [c[1], { dtype: 'float32' as const, shape: vitb.get(c[0])!, read: () => new Uint8Array(0) }]));
  const { tensors, naming } = samTensors(hfShapes);
  assert.equal(naming, 'huggingface');
  assert.deepEqual(inferSamConfig(new Map([...tensors].map(([k, v]) => [k, v.shape]))).config, SAM_PRESETS.vit_b);

  // The preset builds exactly the release's state dict (names and shapes).
  const m = buildSam('vit_b');
  const own = m.stateDict();
  assert.deepEqual([...own.keys()].sort(), [...vitb.keys()].sort());
  for (const [k, t] of own) assert.deepEqual(t.shape, vitb.get(k), k);
  m.dispose();
});

/** A small random SAM as a checkpoint (segment-anything names). */
function randomCheckpoint(c: SamConfig): Map<string, RawTensor> {
  const m = buildSam(c);
  const sd = new Map<string, RawTensor>();
  tidy(() => { for (const [k, t] of m.stateDict()) sd.set(k, raw(t.add(randn(t.shape).mul(0.1)))); });
  m.dispose();
  return sd;
}
const SMALL: SamConfig = {
  img_size: 64, patch_size: 8, embed_dim: 16, depth: 13, num_heads: 2, mlp_ratio: 2, window_size: 3,
  global_attn_indexes: [1, 12], prompt_embed_dim: 16, mask_in_chans: 4, decoder_depth: 1, decoder_mlp_dim: 16,
  decoder_heads: 2, iou_head_hidden_dim: 8,
};

test('loading: other input sizes resize pos_embed and the global blocks\' rel-pos (by index), clear errors', () => {
  const ckpt = randomCheckpoint(SMALL);
  for (const size of [32, 96, 120]) {
    const { model, config, resized } = loadSam(ckpt, { config: { decoder_heads: 2 }, imgSize: size });
    assert.equal(config.img_size, size);
    // Blocks 1 and 12 only: never 10 or 11 (which a name match on '1' would take).
    assert.deepEqual(resized.sort(), ['image_encoder.blocks.1.attn.rel_pos_h', 'image_encoder.blocks.1.attn.rel_pos_w',
      'image_encoder.blocks.12.attn.rel_pos_h', 'image_encoder.blocks.12.attn.rel_pos_w', 'image_encoder.pos_embed']);
    const g = size / 8;
    assert.deepEqual(model.stateDict().get('image_encoder.blocks.12.attn.rel_pos_h')!.shape, [2 * g - 1, 8]);
    assert.deepEqual(model.stateDict().get('image_encoder.blocks.11.attn.rel_pos_h')!.shape, [5, 8]);
    // Windowed blocks are loaded unchanged.
    assert.deepEqual(model.stateDict().get('image_encoder.blocks.11.attn.rel_pos_w')!.toFloat32Array(), f32(ckpt.get('image_encoder.blocks.11.attn.rel_pos_w')!));
    tidy(() => noGrad(() => {
      const out = model.forward([{ image: randn([3, size, size / 2]).mul(50).add(120), originalSize: [40, 20], boxes: tensor([1, 2, 10, 20], [1, 4]) }], true);
      assert.deepEqual(out[0].masks.shape, [1, 3, 40, 20]);
      assert.deepEqual(out[0].lowResLogits.shape, [1, 3, 4 * g, 4 * g]);
      assert.ok(out[0].lowResLogits.isnan().any().item() === 0);
    }));
    model.dispose();
  }
  // Same size: a plain load, bit for bit.
  const same = loadSam(ckpt, { config: { decoder_heads: 2 } });
  assert.deepEqual(same.resized, []);
  for (const [k, t] of same.model.stateDict()) assert.ok(Buffer.from(t.toBytes()).equals(Buffer.from(ckpt.get(k)!.data)), k);
  same.model.dispose();

  const m = buildSam({ ...SMALL });
  const drop = new Map(ckpt); drop.delete('mask_decoder.iou_token.weight');
  assert.throws(() => loadSamWeights(m, drop), /missing from the checkpoint \(1\): mask_decoder\.iou_token\.weight/);
  const extra = new Map(ckpt); extra.set('mask_decoder.extra.weight', ckpt.get('mask_decoder.iou_token.weight')!);
  assert.throws(() => loadSamWeights(m, extra), /not in the model \(1\): mask_decoder\.extra\.weight/);
  const wrong = buildSam({ ...SMALL, window_size: 4 });
  assert.throws(() => loadSamWeights(wrong, ckpt), /shape mismatch \(22\): image_encoder\.blocks\.0\.attn\.rel_pos_h: checkpoint \[5,8\] vs model \[7,8\]/);
  assert.throws(() => loadSam(ckpt, { config: { decoder_heads: 2 }, imgSize: 60 }), /multiple of the patch size/);
  m.dispose(); wrong.dispose();

  // All-global encoders are ambiguous from shapes alone.
  const allGlobal = randomCheckpoint({ ...SMALL, depth: 2, window_size: 0, global_attn_indexes: [] });
  assert.throws(() => loadSam(allGlobal, { config: { decoder_heads: 2 } }), /cannot tell windowed from global blocks/);
  loadSam(allGlobal, { config: { decoder_heads: 2, window_size: 0, global_attn_indexes: [] } }).model.dispose();
});

test('predictor: several boxes in one predictTorch call equal one call per box; no tensor leaks', () => {
  const { model } = loadTiny();
  const image = REF.get('image')!;
  const [H, W] = image.shape;
  const p = new SamPredictor(model);
  p.setImage(image.data, H, W);
  const boxes = [[100, 80, 450, 400], [10, 20, 200, 300], [300, 100, 600, 500]] as const;
  const before = memory().liveTensors;
  const singles = boxes.map((b) => p.predict({ box: b, multimaskOutput: true }));
  tidy(() => {
    const sx = p.inputSize![1] / W, sy = p.inputSize![0] / H;
    const bt = tensor(boxes.flatMap((b) => [b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy]), [3, 4]);
    const r = p.predictTorch({ boxes: bt, multimaskOutput: true });
    assert.deepEqual(r.masks.shape, [3, 3, H, W]);
    boxes.forEach((_, i) => {
      closeRel(`box ${i} low-res`, r.lowResLogits.select(0, i).toFloat32Array(), singles[i].lowResLogits, 1e-5);
      closeRel(`box ${i} iou`, r.iouPredictions.select(0, i).toFloat32Array(), singles[i].iouPredictions, 1e-5);
    });
  });
  assert.equal(memory().liveTensors, before);
  assert.throws(() => p.predict({ pointCoords: [[1, 2]] }), /point_labels/);
  p.resetImage();
  assert.throws(() => p.predict({ box: [0, 0, 1, 1] }), /setImage/);
  model.dispose();
});

test('adapter hook: a module replacing attn.qkv sees the token grid (windows or the whole image)', () => {
  const { model } = loadTiny();
  const seen: number[][] = [];
  class Spy extends Module {
    constructor(readonly inner: Linear) { super(); this.child('inner', inner); }
    forward(x: Tensor): Tensor { seen.push(x.shape); return this.inner.forward(x); }
  }
  const image = REF.get('image')!;
  const p = new SamPredictor(model);
  p.setImage(image.data, image.shape[0], image.shape[1]);
  const ref = p.getImageEmbedding().toFloat32Array();
  for (const blk of model.image_encoder.blocks.items) blk.attn.replaceChild('qkv', new Spy(blk.attn.qkv as Linear));
  p.setImage(image.data, image.shape[0], image.shape[1]);
  // window 6 on a 16×16 grid: padded to 18, 9 windows of 6×6; blocks 1 and 3 global.
  assert.deepEqual(seen, [[9, 6, 6, 64], [1, 16, 16, 64], [9, 6, 6, 64], [1, 16, 16, 64]]);
  assert.deepEqual(p.getImageEmbedding().toFloat32Array(), ref);
  assert.throws(() => model.image_encoder.blocks.at(0).attn.replaceChild('qkv', new (class extends Module {})()), /no forward/);
  p.dispose();
  model.dispose();
});

// ---- against the PyTorch re-implementation of segment-anything's modeling code -------------

function pythonReference(): string | null {
  if (spawnSync(PYTHON, ['-c', 'import torch'], { encoding: 'utf8' }).status !== 0) return null;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-sam-'));
  process.on('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  const r = spawnSync(PYTHON, [path.join(ROOT, 'test/py/sam_ref.py'), dir], { encoding: 'utf8' });
  assert.equal(r.status, 0, r.stderr);
  return dir;
}
let pyDir: string | null | undefined;
const py = (): string | null => (pyDir === undefined ? (pyDir = pythonReference()) : pyDir);

const CASES: Record<string, { config: Partial<SamConfig>; imgSize?: number; weights: string }> = {
  // patch 8, window 5 padded, global block 1, mlp_ratio 2.5, non-square image, padding points, 2 boxes, mask input
  a: { config: { decoder_heads: 4 }, weights: 'a.weights.pth' },
  // checkpoint at 256, run at 128: pos_embed + global rel-pos (blocks 0, 2) interpolated; window 7 pads 8 → 14
  b: { config: { decoder_heads: 2 }, imgSize: 128, weights: 'b.weights.safetensors' },
  // all blocks global (window 0), masks without points
  c: { config: { decoder_heads: 1, window_size: 0, global_attn_indexes: [] }, weights: 'c.weights.safetensors' },
};

for (const [name, c] of Object.entries(CASES)) {
  test(`PyTorch reference, case ${name}: encoder, prompts, decoder and post-processing within 1e-4`, (t) => {
    const dir = py();
    if (!dir) { t.skip('PyTorch (/usr/bin/python3 with torch) is not installed'); return; }
    const file = path.join(dir, c.weights);
    const src = file.endsWith('.pth') ? openPth(file) : openSafetensors(file);
    const { model } = loadSam(src, { config: c.config, imgSize: c.imgSize });
    src.close();
    const io = readSafetensors(path.join(dir, `${name}.io.safetensors`)).tensors;
    const report: string[] = [];
    tidy(() => {
      const img = fromRaw(io.get('resized_image')!);
      const orig = [...new BigInt64Array(io.get('original_size')!.data.slice().buffer)].map(Number) as [number, number];
      report.push(`input ${closeRel('input_tensor', model.preprocess(img).toFloat32Array(), f32(io.get('input_tensor')!)).toExponential(1)}`);
      const p = new SamPredictor(model);
      p.setTorchImage(img, orig);
      report.push(`emb ${closeRel('image_embeddings', p.getImageEmbedding().toFloat32Array(), f32(io.get('image_embeddings')!)).toExponential(1)}`);
      for (let i = 0; io.has(`p${i}.mask_logits`); i++) {
        const get = (k: string): Tensor | undefined => (io.has(`p${i}.${k}`) ? fromRaw(io.get(`p${i}.${k}`)!) : undefined);
        const multimask = io.get(`p${i}.iou_predictions`)!.shape[1] === 3;
        const r = p.predictTorch({ pointCoords: get('coords'), pointLabels: get('labels'), boxes: get('boxes'), maskInput: get('mask_input'), multimaskOutput: multimask, returnLogits: true });
        const lo = closeRel(`p${i}.low_res_logits`, r.lowResLogits.toFloat32Array(), f32(io.get(`p${i}.low_res_logits`)!));
        const ml = closeRel(`p${i}.mask_logits`, r.masks.toFloat32Array(), f32(io.get(`p${i}.mask_logits`)!));
        const iou = errs(r.iouPredictions.toFloat32Array(), f32(io.get(`p${i}.iou_predictions`)!)).abs;
        assert.ok(iou <= 1e-4, `p${i}.iou_predictions: ${iou}`);
        report.push(`p${i} low ${lo.toExponential(1)} logits ${ml.toExponential(1)} iou ${iou.toExponential(1)}`);
      }
      p.dispose();

      if (io.has('grad.G')) {
        // Gradients through the whole model (prompt 0): sum(low_res · G) + sum(iou · g).
        const get = (k: string): Tensor => fromRaw(io.get(`p0.${k}`)!);
        const pe = model.prompt_encoder;
        const feats = model.image_encoder.forward(model.preprocess(img));
        const [sparse, dense] = pe.forward({ coords: get('coords'), labels: get('labels') }, null, null);
        const [low, iou] = model.mask_decoder.forward(feats, pe.getDensePe(), sparse, dense, true);
        low.mul(fromRaw(io.get('grad.G')!)).sum().add(iou.mul(fromRaw(io.get('grad.g')!)).sum()).backward();
        const params = new Map(model.namedParameters());
        let worst = 0;
        for (const k of [...io.keys()].filter((n) => /^grad\.[a-z]+_/.test(n))) {
          const name = k.slice(5);
          worst = Math.max(worst, closeRel(`grad ${name}`, params.get(name)!.grad!.toFloat32Array(), f32(io.get(k)!)));
        }
        report.push(`gradients ${worst.toExponential(1)}`);
        for (const q of model.parameters()) q.grad = null;
      }
    });
    t.diagnostic(report.join('; '));
    model.dispose();
  });
}

test('PyTorch reference: blocks alone (rel-pos interpolated at run time, windows padded in H and W)', (t) => {
  const dir = py();
  if (!dir) { t.skip('PyTorch (/usr/bin/python3 with torch) is not installed'); return; }
  const io = readSafetensors(path.join(dir, 'blocks.io.safetensors')).tensors;
  tidy(() => noGrad(() => {
    for (const [prefix, windowSize] of [['global', 0], ['window', 4]] as const) {
      const blk = new Block({ dim: 24, numHeads: 3, mlpRatio: 2, windowSize, inputSize: [6, 6] });
      const sd = new Map([...io].filter(([k]) => k.startsWith(`${prefix}.`)).map(([k, v]) => [k.slice(prefix.length + 1), fromRaw(v)]));
      blk.loadStateDict(sd);
      closeRel(`${prefix} block`, blk.forward(fromRaw(io.get('x')!)).toFloat32Array(), f32(io.get(`${prefix}_out`)!));
      blk.dispose();
    }
  }));
});

test('Hugging Face names round-trip through the loader for a random model', () => {
  manualSeed(3);
  const ckpt = randomCheckpoint({ ...SMALL, depth: 2, global_attn_indexes: [1] });
  const hf = toHuggingFace(ckpt);
  assert.ok(hf.has('shared_image_embedding.positional_embedding'));
  const a = loadSam(ckpt, { config: { decoder_heads: 2 } }), b = loadSam(hf, { config: { decoder_heads: 2 } });
  assert.equal(b.naming, 'huggingface');
  for (const [k, t] of a.model.stateDict()) assert.ok(Buffer.from(t.toBytes()).equals(Buffer.from(b.model.stateDict().get(k)!.toBytes())), k);
  a.model.dispose(); b.model.dispose();
});
