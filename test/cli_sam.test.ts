// The SAM commands end to end: `naslora predict` against the official SamPredictor's outputs (the
// sam-tiny fixture), `inspect`, `convert` round trips, bad inputs (clear error, exit ≠ 0, nothing
// written), and a synthetic checkpoint with the released ViT-B names and shapes at 1024×1024.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import sharp from 'sharp';
import { DEFAULT_OPS, injectAdapters, saveAdapter, type AdapterConfig } from '../src/adapters/index.js';
import { openCheckpoint } from '../src/io/pth.js';
import { writePth, zipStored } from '../src/io/pth_write.js';
import { byteLength, readAll, type RawTensor, type TensorSource } from '../src/io/raw.js';
import { assertSameTensors } from './helpers/tensors.js';
import { readSafetensors } from '../src/io/safetensors.js';
import { loadSamFile } from '../src/model/sam/build.js';
import { SAM_PRESETS, type SamConfig } from '../src/model/sam/sam.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const CLI = path.join(ROOT, 'dist/src/cli/main.js');
// Relative to ROOT (the CLI runs there), as a user would type them.
const FIX = '../shared/fixtures/sam-reference';
const TINY = `${FIX}/sam-tiny.pth`, TINY_HF = `${FIX}/sam-tiny.hf.safetensors`, TINY_CFG = `${FIX}/sam-tiny.json`;
const FIXTURE = JSON.parse(fs.readFileSync(path.join(ROOT, TINY_CFG), 'utf8')) as { config: SamConfig; image: string };
const IMAGE = `../shared/${FIXTURE.image}`;
const REF = readSafetensors(path.join(ROOT, FIX, 'sam-tiny.reference.safetensors')).tensors;

const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-cli-sam-'));
process.on('exit', () => fs.rmSync(TMP, { recursive: true, force: true }));
const tmp = (name: string): string => path.join(TMP, name);

function cli(...args: string[]): { status: number | null; stdout: string; stderr: string } {
  const r = spawnSync(process.execPath, [CLI, ...args], { cwd: ROOT, encoding: 'utf8', maxBuffer: 1 << 26 });
  return { status: r.status, stdout: r.stdout, stderr: r.stderr };
}
function ok(...args: string[]): string {
  const r = cli(...args);
  assert.equal(r.status, 0, `naslora ${args.join(' ')}: ${r.stderr}`);
  return r.stdout;
}
const predictArgs = (out: string, ...more: string[]): string[] =>
  ['predict', '--checkpoint', TINY, '--model-config', TINY_CFG, '--image', IMAGE, '--out', out, ...more];

const f32 = (r: RawTensor): Float32Array => new Float32Array(new Uint8Array(r.data).buffer);
/** max |a − b| ≤ tol · max |b| (as in test/sam.test.ts). */
function closeRel(name: string, a: Float32Array, b: Float32Array, tol = 1e-4): void {
  assert.equal(a.length, b.length, `${name}: length`);
  let abs = 0, ref = 0;
  for (let i = 0; i < b.length; i++) { abs = Math.max(abs, Math.abs(a[i] - b[i])); ref = Math.max(ref, Math.abs(b[i])); }
  assert.ok(abs <= tol * ref, `${name}: max abs error ${abs} > ${tol} × ${ref}`);
}
function maxAbs(a: Float32Array, b: Float32Array): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}
function sameMasks(name: string, a: Uint8Array, b: Uint8Array): void {
  assert.equal(a.length, b.length, `${name}: length`);
  let same = 0;
  for (let i = 0; i < a.length; i++) if ((a[i] !== 0) === (b[i] !== 0)) same++;
  assert.ok(same / a.length >= 0.9999, `${name}: masks agree on ${same} of ${a.length} pixels`);
}

/** prediction.safetensors of `dir` against the reference prompt k. */
function checkAgainstReference(dir: string, k: number): void {
  const p = readSafetensors(path.join(dir, 'prediction.safetensors')).tensors;
  const refMasks = REF.get(`p${k}.masks`)!;
  assert.deepEqual(p.get('masks')!.shape, refMasks.shape);
  assert.equal(p.get('masks')!.dtype, 'uint8');
  closeRel(`p${k}.low_res_logits`, f32(p.get('low_res_logits')!), f32(REF.get(`p${k}.low_res_logits`)!));
  closeRel(`p${k}.mask_logits`, f32(p.get('mask_logits')!), f32(REF.get(`p${k}.mask_logits`)!));
  const iou = maxAbs(f32(p.get('iou_predictions')!), f32(REF.get(`p${k}.iou_predictions`)!));
  assert.ok(iou <= 1e-4, `p${k}.iou_predictions: max abs error ${iou}`);
  sameMasks(`p${k}.masks`, p.get('masks')!.data, refMasks.data);
  closeRel('image_embeddings', f32(p.get('image_embeddings')!), f32(REF.get('image_embeddings')!));
  for (let i = 0; i < refMasks.shape[0]; i++) assert.ok(fs.statSync(path.join(dir, `mask_${i}.png`)).size > 0);
  assert.ok(!fs.existsSync(path.join(dir, `mask_${refMasks.shape[0]}.png`)));
  assert.ok(fs.statSync(path.join(dir, 'overlay.png')).size > 0);
}

test('predict: fixture prompts p0 (point, multimask) and p1 (box) match the official SamPredictor; --mask-input round trip (p3)', async () => {
  ok(...predictArgs(tmp('p0'), '--point', '300,250,1', '--multimask'));
  checkAgainstReference(tmp('p0'), 0);
  ok(...predictArgs(tmp('p1'), '--box', '100,80,450,400'));
  checkAgainstReference(tmp('p1'), 1);
  // p3: a new point plus the best low-res mask of p0 fed back.
  ok(...predictArgs(tmp('p3'), '--point', '320,240,1', '--mask-input', tmp('p0/prediction.safetensors')));
  checkAgainstReference(tmp('p3'), 3);
  const meta = await sharp(tmp('p0/mask_0.png')).metadata();
  const img = REF.get('image')!;
  assert.deepEqual([meta.height, meta.width], img.shape.slice(0, 2));
  // Several boxes: one batch, B·C masks; rerunning into the same folder replaces the earlier prediction.
  ok(...predictArgs(tmp('p0'), '--box', '100,80,450,400', '--box', '10,20,200,300', '--point', '300,250,1'));
  assert.deepEqual(readSafetensors(tmp('p0/prediction.safetensors')).tensors.get('masks')!.shape, [2, ...img.shape.slice(0, 2)]);
  assert.deepEqual(fs.readdirSync(tmp('p0')).sort(), ['mask_0.png', 'mask_1.png', 'overlay.png', 'prediction.safetensors']);
});

test('predict with an adapter; inspect describes the adapter folder', () => {
  const { model } = loadSamFile(path.join(ROOT, TINY), { config: FIXTURE.config });
  const method: AdapterConfig = {
    name: 'nas-lora', rank: 2, lora_alpha: 4, dropout: 0, targets: '^image_encoder\\.blocks\\.\\d+\\.attn\\.qkv$', qv_only: false,
    ops: [...DEFAULT_OPS], alpha_init: 0, pc_k: 2, experts: 4, moe_loss_weight: 0.01, gate_noise: true,
  };
  const layers = injectAdapters(model, method);
  saveAdapter(tmp('adapter'), model, method, { baseFile: path.join(ROOT, TINY) });
  model.dispose();
  ok(...predictArgs(tmp('pa'), '--adapter', tmp('adapter'), '--point', '300,250,1'));
  assert.ok(fs.existsSync(tmp('pa/prediction.safetensors')));
  const r = JSON.parse(ok('inspect', tmp('adapter'), '--json')) as {
    kind: string; method: string; rank: number; alpha: number; layers: string[]; trainable: Record<string, number>;
    cells: Array<{ state: string; derived: string }>; base: { sha256: string };
  };
  assert.equal(r.kind, 'adapter');
  assert.equal(r.method, 'nas-lora');
  assert.equal(r.rank, 2);
  assert.equal(r.alpha, 4);
  assert.equal(r.layers.length, layers.length);
  assert.ok(r.trainable.lora > 0 && r.trainable.ops > 0 && r.trainable.alpha > 0);
  assert.ok(r.cells.length > 0 && r.cells.every((c) => c.state === 'search' && DEFAULT_OPS.includes(c.derived)));
  assert.match(r.base.sha256, /^[0-9a-f]{64}$/);
  assert.match(ok('inspect', tmp('adapter')), /nas-lora adapter on \d+ layer\(s\)/);
});

interface InspectJson {
  container: string; naming: string; config: Record<string, unknown>; sources: Record<string, string>;
  parameters: Record<string, number>;
}

test('inspect: container, naming, inferred config with sources, parameters per part (.pth and HF .safetensors)', () => {
  const tiny = FIXTURE.config as unknown as Record<string, unknown>;
  for (const [file, container, naming] of [[TINY, 'pth', 'segment-anything'], [TINY_HF, 'safetensors', 'huggingface']]) {
    const r = JSON.parse(ok('inspect', file, '--json')) as InspectJson;
    assert.equal(r.container, container);
    assert.equal(r.naming, naming);
    for (const [k, v] of Object.entries(tiny)) if (k !== 'decoder_heads') assert.deepEqual(r.config[k], v, k);
    assert.equal(r.config.decoder_heads, null); // not in the shapes
    assert.equal(r.sources.decoder_heads, 'unknown');
    assert.equal(r.sources.window_size, 'shapes');
    assert.equal(r.parameters.total, r.parameters.image_encoder + r.parameters.prompt_encoder + r.parameters.mask_decoder);
    assert.ok(r.parameters.image_encoder > 0 && r.parameters.prompt_encoder > 0 && r.parameters.mask_decoder > 0);
    const withCfg = JSON.parse(ok('inspect', file, '--json', '--model-config', TINY_CFG)) as InspectJson;
    assert.equal(withCfg.config.decoder_heads, 2);
    assert.equal(withCfg.sources.decoder_heads, 'config');
    assert.deepEqual(withCfg.parameters, r.parameters); // the tied HF copy is not counted twice
  }
  assert.match(ok('inspect', TINY), /naming: segment-anything[\s\S]*decoder_heads\s+null\s+<- unknown/);
});

const readFile = (file: string): Map<string, RawTensor> => {
  const src: TensorSource = openCheckpoint(file);
  try { return readAll(src); } finally { src.close(); }
};

test('convert: pth → HF safetensors → pth is exact; HF output carries the tied positional embedding', () => {
  // sam-tiny has no configuration metadata and no release shapes: its decoder_heads must be given.
  const refused = cli('convert', TINY, tmp('c0.safetensors'));
  assert.notEqual(refused.status, 0);
  assert.match(refused.stderr, /cannot tell decoder_heads[\s\S]*--model-config[\s\S]*model_config\.json/);
  assert.ok(!fs.existsSync(tmp('c0.safetensors')));
  ok('convert', TINY, tmp('c.hf.safetensors'), '--naming', 'huggingface', '--model-config', TINY_CFG);
  // Every output carries the full configuration; later conversions need no --model-config.
  assert.deepEqual(JSON.parse(readSafetensors(tmp('c.hf.safetensors')).metadata.naslora_sam_config!), FIXTURE.config);
  ok('convert', tmp('c.hf.safetensors'), tmp('c.pth'), '--naming', 'segment-anything');
  const cp = openCheckpoint(tmp('c.pth'));
  assert.deepEqual(JSON.parse(cp.metadata.naslora_sam_config!), FIXTURE.config);
  cp.close();
  assertSameTensors(readFile(tmp('c.pth')), readFile(path.join(ROOT, TINY)));
  const hf = readFile(tmp('c.hf.safetensors'));
  assertSameTensors(hf, readFile(path.join(ROOT, TINY_HF)));
  assert.ok(Buffer.from(hf.get('shared_image_embedding.positional_embedding')!.data)
    .equals(Buffer.from(hf.get('prompt_encoder.shared_embedding.positional_embedding')!.data)));
  // A second round trip reproduces our own files byte for byte.
  ok('convert', tmp('c.pth'), tmp('d.hf.safetensors'), '--naming', 'huggingface');
  ok('convert', tmp('d.hf.safetensors'), tmp('d.pth'), '--naming', 'segment-anything');
  assert.ok(fs.readFileSync(tmp('c.pth')).equals(fs.readFileSync(tmp('d.pth'))));
  assert.ok(fs.readFileSync(tmp('c.hf.safetensors')).equals(fs.readFileSync(tmp('d.hf.safetensors'))));
  // Container change only (naming kept).
  ok('convert', TINY, tmp('e.safetensors'), '--model-config', TINY_CFG);
  assertSameTensors(readFile(tmp('e.safetensors')), readFile(path.join(ROOT, TINY)));
  const bad = cli('convert', TINY, tmp('x.bin'));
  assert.notEqual(bad.status, 0);
  assert.match(bad.stderr, /must end in \.pth or \.safetensors/);
  assert.match(cli('convert', TINY, tmp('x.pth'), '--naming', 'timm').stderr, /--naming must be/);
});

test('bad inputs: a clear error, exit ≠ 0, no output folder and no stray files', () => {
  const dir = tmp('bad');
  fs.mkdirSync(dir);
  const put = (name: string, b: Uint8Array): string => { const f = path.join(dir, name); fs.writeFileSync(f, b); return f; };
  const tinyBytes = fs.readFileSync(path.join(ROOT, TINY));
  const tinyTensors = [...readFile(path.join(ROOT, TINY))];

  const truncated = put('truncated.pth', tinyBytes.subarray(0, tinyBytes.length >> 1));
  // A pickle that would run `touch <marker>` if unpickled by a permissive reader (built by hand).
  const marker = path.join(dir, 'pwned');
  const cmd = Buffer.from(`touch ${marker}`);
  const bu = Buffer.alloc(5); bu[0] = 0x58; bu.writeUInt32LE(cmd.length, 1);
  const evilPkl = Buffer.concat([Buffer.from('\x80\x02cos\nsystem\n', 'latin1'), bu, cmd, Buffer.from([0x85, 0x52, 0x2e])]);
  const evil = put('evil.pth', Buffer.concat(zipStored([['archive/data.pkl', evilPkl], ['archive/version', Buffer.from('3\n')]])));
  const missing = path.join(dir, 'missing.pth');
  writePth(missing, tinyTensors.filter(([k]) => k !== 'mask_decoder.iou_token.weight'));
  const extra = path.join(dir, 'extra.pth');
  writePth(extra, [...tinyTensors, ['mask_decoder.extra.weight', tinyTensors[0][1]]]);
  const wrongCfg = put('wrong.json', Buffer.from(JSON.stringify({ ...FIXTURE.config, num_heads: 8 })));
  const garbage = put('garbage.png', Buffer.from('this is not an image at all'));
  const empty = put('empty.jpg', new Uint8Array(0));

  const cases: Array<[string, string[], RegExp]> = [
    ['truncated zip', ['--checkpoint', truncated], /truncated or corrupt zip/],
    ['pickle naming os.system', ['--checkpoint', evil], /refusing pickle global 'os\.system'/],
    ['missing key', ['--checkpoint', missing], /missing from the checkpoint \(1\): mask_decoder\.iou_token\.weight/],
    ['extra key', ['--checkpoint', extra], /not in the model \(1\): mask_decoder\.extra\.weight/],
    ['config contradicting the shapes', ['--model-config', wrongCfg], /num_heads = 8 contradicts the checkpoint \(4 from shapes\)/],
    ['missing checkpoint', ['--checkpoint', path.join(dir, 'nope.pth')], /--checkpoint .*nope\.pth: no such file/],
    ['unreadable image', ['--image', garbage], /cannot decode image .*garbage\.png/],
    ['missing image', ['--image', path.join(dir, 'nope.jpg')], /cannot decode image .*nope\.jpg: no such file/],
    ['empty image', ['--image', empty], /cannot decode image .*empty\.jpg: the file is empty/],
    ['point outside the image', ['--point', '700,10,1'], /--point 700,10,1 lies outside the 622×529 image/],
    ['box outside the image', ['--box', '10,10,50,600'], /--box 10,10,50,600 lies outside/],
    ['malformed point', ['--point', '300,250'], /--point '300,250': expected x,y,label/],
    ['bad label', ['--point', '300,250,2'], /label must be 1 \(foreground\), 0 \(background\) or -1 \(padding\), not 2/],
    ['malformed box', ['--box', '1,2,x,4'], /--box '1,2,x,4': expected x0,y0,x1,y1/],
    ['reversed box', ['--box', '50,2,10,4'], /needs x0 <= x1/],
    ['no prompt', [], /give at least one prompt/],
    ['bad mask input', ['--mask-input', TINY_HF], /--mask-input .*: not a prediction file/],
  ];
  for (const [what, over, re] of cases) {
    const out = path.join(dir, 'out');
    // Defaults, then the case's own flags replace them (commander keeps the last value).
    const prompt = over.some((a) => ['--point', '--box', '--mask-input'].includes(a)) || what === 'no prompt' ? [] : ['--point', '300,250,1'];
    const r = cli(...predictArgs(out, ...prompt, ...over));
    assert.notEqual(r.status, 0, `${what}: exit status 0`);
    assert.match(r.stderr, /^naslora: /, what);
    assert.match(r.stderr, re, `${what}: ${r.stderr}`);
    assert.doesNotMatch(r.stderr, /\n\s+at /, `${what}: a stack trace`);
    assert.ok(!fs.existsSync(out), `${what}: output folder written`);
    assert.deepEqual(fs.readdirSync(dir).filter((f) => f.startsWith('.') || f === 'out'), [], `${what}: stray files`);
  }
  assert.ok(!fs.existsSync(marker), 'the pickle payload ran');
  // An --out that holds other files is never replaced.
  fs.mkdirSync(path.join(dir, 'keep'));
  fs.writeFileSync(path.join(dir, 'keep/notes.txt'), 'mine');
  const r = cli(...predictArgs(path.join(dir, 'keep'), '--point', '300,250,1'));
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /holds other files \(notes\.txt\)/);
  assert.deepEqual(fs.readdirSync(path.join(dir, 'keep')), ['notes.txt']);
});

test('a synthetic checkpoint with all 314 ViT-B names and shapes loads and predicts at 1024×1024', async () => {
  const rows = fs.readFileSync(path.join(ROOT, FIX, 'sam_vit_b_keys.tsv'), 'utf8').trim().split('\n')
    .map((l) => l.split('\t')).filter((c) => c[0] !== 'extra');
  assert.equal(rows.length, 314);
  let s = 12345; // LCG: small deterministic values in (-0.05, 0.05)
  const tensors: Array<[string, RawTensor]> = rows.map(([name, , shape]) => {
    const dims = (/\(([^)]*)\)/.exec(shape)![1]).split(',').map((d) => d.trim()).filter(Boolean).map(Number);
    const data = new Uint8Array(byteLength({ dtype: 'float32', shape: dims }));
    const f = new Float32Array(data.buffer);
    for (let i = 0; i < f.length; i++) { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; f[i] = (s / 2 ** 32 - 0.5) * 0.1; }
    return [name, { dtype: 'float32', shape: dims, data }];
  });
  const total = tensors.reduce((n, [, t]) => n + t.data.byteLength / 4, 0);
  const file = tmp('vit_b.pth'), image = tmp('img1024.png');
  writePth(file, tensors);
  tensors.length = 0;
  try {
    const px = Buffer.alloc(1024 * 1024 * 3);
    for (let i = 0; i < px.length; i++) px[i] = (i * 7 + (i >> 12)) & 255;
    await sharp(px, { raw: { width: 1024, height: 1024, channels: 3 } }).png().toFile(image);
    const ins = JSON.parse(ok('inspect', file, '--json')) as InspectJson;
    assert.equal(ins.naming, 'segment-anything');
    for (const [k, v] of Object.entries(SAM_PRESETS.vit_b)) assert.deepEqual(ins.config[k], v, k);
    assert.equal(ins.sources.decoder_heads, 'release vit_b');
    assert.equal(ins.parameters.total, total);
    assert.equal(ins.parameters.total, ins.parameters.image_encoder + ins.parameters.prompt_encoder + ins.parameters.mask_decoder);
    ok('predict', '--checkpoint', file, '--image', image, '--point', '512,400,1', '--out', tmp('vitb'));
    const p = readSafetensors(tmp('vitb/prediction.safetensors')).tensors;
    assert.deepEqual(p.get('masks')!.shape, [1, 1024, 1024]);
    assert.deepEqual(p.get('low_res_logits')!.shape, [1, 256, 256]);
    assert.deepEqual(p.get('image_embeddings')!.shape, [1, 256, 64, 64]);
    assert.ok(f32(p.get('low_res_logits')!).every(Number.isFinite));
    assert.ok(Number.isFinite(f32(p.get('iou_predictions')!)[0]));
  } finally {
    fs.rmSync(file, { force: true });
    fs.rmSync(image, { force: true });
  }
});
