// Checkpoint I/O: the restricted pickle reader, torch.save zip reading/writing and SAM naming.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { unpickle } from '../src/io/pickle.js';
import { readJsonLines } from '../src/io/jsonl.js';
import { RunDir } from '../src/train/run_dir.js';
import { openCheckpoint, openPth } from '../src/io/pth.js';
import { contiguousStride, pickleStateDict, writePth, zipStored } from '../src/io/pth_write.js';
import { byteLength, readAll, type DType, type RawTensor, type TensorSource } from '../src/io/raw.js';
import { assertSameTensors } from './helpers/tensors.js';
import { openSafetensors } from '../src/io/safetensors.js';
import { detectNaming, renameKeys, toHuggingFace, toSegmentAnything } from '../src/model/sam/naming.js';

// Compiled to dist/test/: the repo root is two levels up, the shared folder next to it.
const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const FIX = path.resolve(ROOT, '../shared/fixtures/sam-reference');
const TMP = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-ckpt-'));
process.on('exit', () => fs.rmSync(TMP, { recursive: true, force: true }));
const tmp = (name: string): string => path.join(TMP, name);



// Small deterministic pseudo-random bytes/floats (LCG), so failures reproduce.
function lcg(seed: number): () => number {
  let s = seed >>> 0;
  return () => { s = (Math.imul(s, 1664525) + 1013904223) >>> 0; return s / 2 ** 32; };
}
function randomTensor(dtype: DType, shape: number[], rnd: () => number): RawTensor {
  const data = new Uint8Array(byteLength({ dtype, shape }));
  if (dtype === 'float32') {
    const f = new Float32Array(data.buffer);
    for (let i = 0; i < f.length; i++) f[i] = (rnd() - 0.5) * 0.1;
  } else if (dtype === 'float64') {
    const f = new Float64Array(data.buffer);
    for (let i = 0; i < f.length; i++) f[i] = (rnd() - 0.5) * 0.1;
  } else if (dtype === 'float16' || dtype === 'bfloat16') {
    // finite values only: keep the exponent below all-ones
    const u = new Uint16Array(data.buffer);
    for (let i = 0; i < u.length; i++) u[i] = (Math.floor(rnd() * 0x10000) & (dtype === 'float16' ? 0xbbff : 0xbf7f));
  } else if (dtype === 'bool') {
    for (let i = 0; i < data.length; i++) data[i] = rnd() < 0.5 ? 1 : 0;
  } else {
    for (let i = 0; i < data.length; i++) data[i] = Math.floor(rnd() * 256);
  }
  return { dtype, shape, data };
}

// torch.load(weights_only=True) in Debian's PyTorch, as an independent reader of what we write.
const PY = '/usr/bin/python3';
const hasTorch = fs.existsSync(PY) && spawnSync(PY, ['-c', 'import torch'], { stdio: 'ignore' }).status === 0;
const TORCH_DTYPE: Record<string, DType> = {
  'torch.float32': 'float32', 'torch.float64': 'float64', 'torch.float16': 'float16', 'torch.bfloat16': 'bfloat16',
  'torch.int64': 'int64', 'torch.int32': 'int32', 'torch.int16': 'int16', 'torch.int8': 'int8', 'torch.uint8': 'uint8', 'torch.bool': 'bool',
};
function torchLoad(file: string): { type: string; tensors: Map<string, RawTensor> } {
  const script = [
    'import sys, json, torch',
    'sd = torch.load(sys.argv[1], weights_only=True)',
    'out = {}',
    'for k, t in sd.items():',
    '    b = (t.view(torch.int16) if t.dtype == torch.bfloat16 else t).contiguous().numpy().tobytes()',
    '    out[k] = [str(t.dtype), list(t.shape), b.hex()]',
    'print(json.dumps({"type": type(sd).__name__, "tensors": out}))',
  ].join('\n');
  const r = spawnSync(PY, ['-c', script, file], { encoding: 'utf8', maxBuffer: 1 << 28 });
  assert.equal(r.status, 0, `torch.load failed: ${r.stderr}`);
  const j = JSON.parse(r.stdout) as { type: string; tensors: Record<string, [string, number[], string]> };
  return {
    type: j.type,
    tensors: new Map(Object.entries(j.tensors).map(([k, [dt, shape, hex]]) => [k, { dtype: TORCH_DTYPE[dt], shape, data: Buffer.from(hex, 'hex') }])),
  };
}

test('sam-tiny.pth loads and equals sam-tiny.hf.safetensors after renaming, both ways', () => {
  const pth = openPth(path.join(FIX, 'sam-tiny.pth'));
  const hf = openSafetensors(path.join(FIX, 'sam-tiny.hf.safetensors'));
  try {
    assert.equal(pth.keys().length, 202);
    assert.equal(detectNaming(pth.keys()), 'segment-anything');
    assert.equal(detectNaming(hf.keys()), 'huggingface');
    const pthT = readAll(pth), hfT = readAll(hf);
    assertSameTensors(toHuggingFace(pthT), hfT);
    assertSameTensors(toSegmentAnything(hfT), pthT);
    // lazily, straight from the sources
    assertSameTensors(readAll(asSource(toHuggingFace(pth))), hfT);
    assertSameTensors(readAll(asSource(toSegmentAnything(hf))), pthT);
    // identity conversions
    assertSameTensors(toSegmentAnything(pthT), pthT);
    assertSameTensors(toHuggingFace(hfT), hfT);
  } finally {
    pth.close();
    hf.close();
  }
  for (const [f, fmt] of [['sam-tiny.pth', 'pth'], ['sam-tiny.hf.safetensors', 'safetensors']]) {
    const s = openCheckpoint(path.join(FIX, f));
    assert.equal(s.format, fmt);
    s.close();
  }
});

function asSource(m: Map<string, { dtype: DType; shape: number[]; read(): Uint8Array }>): TensorSource {
  return { format: 'pth', metadata: {}, keys: () => [...m.keys()], get: (k) => m.get(k), close: () => {} };
}

interface TsvRow { sam: string; hf: string; shape: number[] }
const TSV: TsvRow[] = fs.readFileSync(path.join(FIX, 'sam_vit_b_keys.tsv'), 'utf8').trim().split('\n').map((l) => {
  const [sam, hf, s] = l.split('\t');
  return { sam, hf, shape: (/\(([^)]*)\)/.exec(s)![1]).split(',').map((d) => d.trim()).filter(Boolean).map(Number) };
});

test('every ViT-B name of the TSV converts to its partner, both ways', () => {
  assert.equal(TSV.length, 315);
  const sam = TSV.filter((r) => r.sam !== 'extra');
  assert.equal(sam.length, 314);
  const toHf = renameKeys(sam.map((r) => r.sam), 'huggingface');
  assert.deepEqual(toHf.unknown, []);
  const want = new Map(sam.map((r) => [r.sam, r.hf]));
  for (const [s, h] of toHf.pairs) if (h !== 'shared_image_embedding.positional_embedding') assert.equal(h, want.get(s), s);
  assert.deepEqual(toHf.pairs.map(([, h]) => h).sort(), TSV.map((r) => r.hf).sort()); // incl. the tied copy
  const toSam = renameKeys(TSV.map((r) => r.hf), 'segment-anything');
  assert.deepEqual(toSam.unknown, []);
  assert.deepEqual(new Map(toSam.pairs), new Map(sam.map((r) => [r.hf, r.sam])));
  assert.throws(() => detectNaming([...sam.map((r) => r.sam), 'image_encoder.blocks.0.attn.lora_A', 'foo.bar']),
    /unknown SAM tensor names.*image_encoder\.blocks\.0\.attn\.lora_A, foo\.bar/);
  assert.throws(() => toHuggingFace(new Map([['vision_encoder.foo', { dtype: 'float32', shape: [], data: new Uint8Array(4) }]])), /vision_encoder\.foo/);
});

// ---- malicious and broken files ----

const MARKER = tmp('pwned');
function pklZip(file: string, pkl: Uint8Array, extra: Array<[string, Uint8Array]> = []): string {
  fs.writeFileSync(file, Buffer.concat(zipStored([['archive/data.pkl', pkl], ...extra, ['archive/version', Buffer.from('3\n')]])));
  return file;
}
const binunicode = (s: string): Buffer => { const b = Buffer.from(s); const h = Buffer.alloc(5); h[0] = 0x58; h.writeUInt32LE(b.length, 1); return Buffer.concat([h, b]); };
const short = (s: string): Buffer => Buffer.concat([Buffer.from([0x8c, Buffer.byteLength(s)]), Buffer.from(s)]);

test('malicious pickles are refused by name and nothing is executed', () => {
  const cmd = `touch ${MARKER}`;
  const cases: Array<[string, Buffer, RegExp]> = [
    ['GLOBAL os.system', Buffer.concat([Buffer.from('\x80\x02cos\nsystem\n', 'latin1'), binunicode(cmd), Buffer.from([0x85, 0x52, 0x2e])]), /refusing pickle global 'os\.system'/],
    ['STACK_GLOBAL builtins.eval', Buffer.concat([Buffer.from([0x80, 0x04]), short('builtins'), short('eval'), Buffer.from([0x93]),
      short(`__import__('os').system('${cmd}')`), Buffer.from([0x85, 0x52, 0x2e])]), /refusing pickle global 'builtins\.eval'/],
    ['GLOBAL subprocess.Popen in a state dict', Buffer.concat([Buffer.from('\x80\x02ccollections\nOrderedDict\n)R(', 'latin1'), binunicode('x'),
      Buffer.from('csubprocess\nPopen\n', 'latin1'), binunicode(cmd), Buffer.from([0x85, 0x52, 0x75, 0x2e])]), /refusing pickle global 'subprocess\.Popen'/],
    ['REDUCE on an allowed non-callable global', Buffer.from('\x80\x02ctorch\nFloatStorage\n)R.', 'latin1'), /refusing REDUCE on 'torch\.FloatStorage'/],
    ['REDUCE on a string', Buffer.concat([Buffer.from([0x80, 0x02]), binunicode('os.system'), binunicode(cmd), Buffer.from([0x85, 0x52, 0x2e])]), /refusing REDUCE on string/],
    ['BUILD on a tensor-like object', Buffer.from('\x80\x02]}b.', 'latin1'), /refusing BUILD on a list/],
    ['unknown opcode', Buffer.from([0x80, 0x02, 0xff, 0x2e]), /unknown pickle opcode 0xff/],
    ['NEWOBJ', Buffer.from('\x80\x02ccollections\nOrderedDict\n)\x81.', 'latin1'), /refusing pickle opcode NEWOBJ/],
    ['truncated pickle', Buffer.from([0x80, 0x02, 0x58, 0xff, 0xff, 0x00, 0x00, 0x41]), /truncated pickle/],
  ];
  for (const [what, pkl, re] of cases) {
    assert.throws(() => unpickle(pkl), re, what);
    const file = pklZip(tmp('evil.pth'), pkl);
    assert.throws(() => openPth(file), (e: Error) => re.test(e.message) && e.message.includes('data.pkl'), what);
    assert.throws(() => openCheckpoint(file), re, what);
  }
  assert.ok(!fs.existsSync(MARKER), 'a payload ran');
});

test('broken files fail with clear errors', () => {
  const good = tmp('good.pth');
  const rnd = lcg(7);
  writePth(good, [['a', randomTensor('float32', [4, 5], rnd)], ['b', randomTensor('int64', [3], rnd)]]);
  const bytes = fs.readFileSync(good);
  const put = (name: string, b: Uint8Array): string => { const f = tmp(name); fs.writeFileSync(f, b); return f; };

  assert.throws(() => openCheckpoint(put('empty', new Uint8Array(0))), /empty file/);
  assert.throws(() => openPth(put('empty', new Uint8Array(0))), /empty file/);
  const random = Buffer.alloc(4096);
  for (let i = 0; i < random.length; i++) random[i] = Math.floor(rnd() * 256);
  random[0] = 0x13; random[8] = 0x01; // neither zip magic, pickle nor JSON
  assert.throws(() => openCheckpoint(put('random', random)), /unknown checkpoint format/);
  assert.throws(() => openPth(put('random', random)), /not a zip archive/);
  assert.throws(() => openPth(put('trunc', bytes.subarray(0, bytes.length >> 1))), /truncated or corrupt zip: no end-of-central-directory/);
  assert.throws(() => openCheckpoint(put('trunc', bytes.subarray(0, bytes.length - 30))), /truncated or corrupt zip/);
  // corrupt central directory: break the signature of its first entry
  const cd = Buffer.from(bytes);
  cd.writeUInt32LE(0xdeadbeef, cd.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02])));
  assert.throws(() => openPth(put('cd', cd)), /corrupt zip central directory: bad entry 0/);
  // central directory offset pointing outside the file
  const off = Buffer.from(bytes);
  off.writeBigUInt64LE(BigInt(bytes.length * 2), off.lastIndexOf(Buffer.from([0x50, 0x4b, 0x06, 0x06])) + 48);
  assert.throws(() => openPth(put('cdoff', off)), /central directory .* lies outside the file/);
  // legacy (pre-1.6) torch.save: a bare pickle starting with the magic number
  const legacy = Buffer.from('80028a0a6cfc9c46f9206aa85019', 'hex');
  assert.throws(() => openCheckpoint(put('legacy', legacy)), /legacy torch\.save format.*torch>=1\.6/);
  // a safetensors file whose header length has the low byte 0x80 (the pickle magic) is still safetensors
  const hdr = JSON.stringify({ __metadata__: { pad: 'x'.repeat(48) }, w: { dtype: 'F32', shape: [1], data_offsets: [0, 4] } });
  assert.equal(Buffer.byteLength(hdr) & 0xff, 0x80);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(hdr)));
  const st = openCheckpoint(put('st80', Buffer.concat([len, Buffer.from(hdr), Buffer.alloc(4)])));
  assert.equal(st.format, 'safetensors');
  st.close();
  // a zip that is not a torch checkpoint
  assert.throws(() => openPth(put('nopkl', Buffer.concat(zipStored([['x/readme.txt', Buffer.from('hi')]])))), /missing <archive>\/data\.pkl/);
  // storage records: missing, too short
  const pkl = pickleStateDict([{ name: 'w', dtype: 'float32', key: '0', storageNumel: 6, offset: 0, shape: [2, 3], stride: [3, 1] }]);
  assert.throws(() => openPth(pklZip(tmp('nostorage'), pkl)), /storage record 'archive\/data\/0' of tensor 'w' is missing/);
  assert.throws(() => openPth(pklZip(tmp('short'), pkl, [['archive/data/0', new Uint8Array(20)]])), /is 20 bytes, too short for 6 float32/);
  const far = pickleStateDict([{ name: 'w', dtype: 'float32', key: '0', storageNumel: 6, offset: 2, shape: [2, 3], stride: [3, 1] }]);
  assert.throws(() => openPth(pklZip(tmp('far'), far, [['archive/data/0', new Uint8Array(24)]])), /tensor 'w' .* reaches past its storage/);
  // big-endian checkpoints
  assert.throws(() => openPth(pklZip(tmp('be'), pkl, [['archive/data/0', new Uint8Array(24)], ['archive/byteorder', Buffer.from('big')]])), /byteorder 'big'/);
  // compressed entry: flip the method of data.pkl to deflate in both headers
  const comp = Buffer.from(bytes);
  comp.writeUInt16LE(8, 8);
  comp.writeUInt16LE(8, comp.indexOf(Buffer.from([0x50, 0x4b, 0x01, 0x02])) + 10);
  assert.throws(() => openPth(put('deflate', comp)), /'archive\/data\.pkl' is compressed \(method 8\)/);
});

// ---- writing ----

const ALL_DTYPES: DType[] = ['float32', 'float64', 'float16', 'bfloat16', 'int64', 'int32', 'int16', 'int8', 'uint8', 'bool'];

test('writePth round trip: openPth and torch.load(weights_only=True) read identical values', (t) => {
  const rnd = lcg(42);
  const tensors: Array<[string, RawTensor]> = ALL_DTYPES.map((d, i) => [`t.${d}`, randomTensor(d, [3, i + 1, 2], rnd)]);
  tensors.push(['scalar', randomTensor('float32', [], rnd)], ['empty', randomTensor('float32', [0, 4], rnd)],
    ['big.int', { dtype: 'int64', shape: [70000], data: randomTensor('int64', [70000], rnd).data }]);
  for (const forceZip64 of [false, true]) {
    const file = tmp(`rt${forceZip64 ? '64' : ''}.pth`);
    writePth(file, tensors, { forceZip64 });
    const src = openPth(file);
    assert.deepEqual(src.keys(), tensors.map(([k]) => k));
    assertSameTensors(readAll(src), new Map(tensors));
    src.close();
    // every entry's data starts 64-byte aligned, as torch.save writes it
    const buf = fs.readFileSync(file);
    for (let p = buf.indexOf('PK\x03\x04'); p >= 0 && p < buf.length; p = buf.indexOf('PK\x03\x04', p + 4)) {
      if (buf.readUInt32LE(p) !== 0x04034b50 || buf.readUInt16LE(p + 26) > 64) continue;
      assert.equal((p + 30 + buf.readUInt16LE(p + 26) + buf.readUInt16LE(p + 28)) % 64, 0);
    }
    if (!hasTorch) { t.skip(`${PY} cannot import torch: skipping the torch.load check`); continue; }
    const loaded = torchLoad(file);
    assert.equal(loaded.type, 'OrderedDict');
    assertSameTensors(loaded.tensors, new Map(tensors));
  }
});

test('non-contiguous and shared-storage tensors are gathered like torch does', (t) => {
  // storage: 0..11 as float32, viewed as in torch: base.t(), base[1:, ::2], an expand, a slice
  const storage = Buffer.from(new Float32Array(Array.from({ length: 12 }, (_, i) => i)).buffer);
  const views = [
    { name: 'base', offset: 0, shape: [3, 4], stride: [4, 1], want: [0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11] },
    { name: 't', offset: 0, shape: [4, 3], stride: [1, 4], want: [0, 4, 8, 1, 5, 9, 2, 6, 10, 3, 7, 11] },
    { name: 'sub', offset: 4, shape: [2, 2], stride: [4, 2], want: [4, 6, 8, 10] },
    { name: 'expand', offset: 1, shape: [2, 3], stride: [0, 1], want: [1, 2, 3, 1, 2, 3] },
    { name: 'row', offset: 8, shape: [4], stride: [1], want: [8, 9, 10, 11] },
  ];
  const pkl = pickleStateDict(views.map((v) => ({ ...v, dtype: 'float32' as DType, key: '0', storageNumel: 12 })));
  const file = pklZip(tmp('views.pth'), pkl, [['archive/data/0', storage]]);
  const floats = (b: Uint8Array): number[] => [...new Float32Array(new Uint8Array(b).buffer)] // copy: a Buffer may sit in a shared pool;
  const src = openPth(file);
  for (const v of views) {
    const t = src.get(v.name)!;
    assert.deepEqual(t.shape, v.shape);
    assert.deepEqual(floats(t.read()), v.want, v.name);
  }
  src.close();
  if (hasTorch) {
    const loaded = torchLoad(file).tensors;
    for (const v of views) assert.deepEqual(floats(loaded.get(v.name)!.data), v.want, `torch: ${v.name}`);
  } else t.diagnostic(`${PY} cannot import torch: skipped comparing with torch.load`);
  assert.deepEqual(contiguousStride([2, 3, 4]), [12, 4, 1]);
});

test('a synthetic ViT-B checkpoint (all 314 TSV names and shapes) round-trips lazily', () => {
  const rnd = lcg(1);
  const rows = TSV.filter((r) => r.sam !== 'extra');
  const tensors: Array<[string, RawTensor]> = rows.map((r) => [r.sam, randomTensor('float32', r.shape, rnd)]);
  const file = tmp('vit_b.pth');
  writePth(file, tensors);
  try {
    const src = openCheckpoint(file);
    assert.equal(src.format, 'pth');
    assert.deepEqual(src.keys(), rows.map((r) => r.sam));
    for (const r of rows) assert.deepEqual(src.get(r.sam)!.shape, r.shape, r.sam);
    const byName = new Map(tensors);
    for (const k of ['image_encoder.pos_embed', 'image_encoder.blocks.11.attn.qkv.weight', 'mask_decoder.iou_prediction_head.layers.2.bias']) {
      assert.ok(Buffer.from(src.get(k)!.read()).equals(Buffer.from(byName.get(k)!.data)), k);
    }
    assert.equal(detectNaming(src.keys()), 'segment-anything');
    const hf = toHuggingFace(src);
    assert.deepEqual([...hf.keys()].sort(), TSV.map((r) => r.hf).sort());
    for (const r of TSV) assert.deepEqual(hf.get(r.hf)!.shape, r.shape, r.hf);
    assert.ok(Buffer.from(hf.get('vision_encoder.layers.11.attn.qkv.weight')!.read()).equals(Buffer.from(byName.get('image_encoder.blocks.11.attn.qkv.weight')!.data)));
    src.close();
  } finally {
    fs.rmSync(file, { force: true });
  }
});

test('JSON lines: a torn last line (a kill mid-append) is skipped and said; a bad line elsewhere names file and line; a resumed run drops the torn line', () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-jsonl-'));
  const f = path.join(dir, 'events.jsonl');
  fs.writeFileSync(f, '{"step":1}\n{"step":2}\n{"st');
  const notes: string[] = [];
  assert.deepEqual(readJsonLines(f, (n) => notes.push(n)), [{ step: 1 }, { step: 2 }]);
  assert.match(notes.join(), /events\.jsonl: the last line is incomplete/);
  // RunDir's truncation on --resume rewrites the file without it, so new lines start clean.
  const run = new RunDir(dir);
  run.truncateEvents('events.jsonl', (e) => (e.step ?? 0) <= 1);
  run.append('events.jsonl', { step: 2 });
  assert.equal(fs.readFileSync(f, 'utf8'), '{"step":1}\n{"step":2}\n');
  // A complete line that is not JSON, or not an object, is corruption, not a kill.
  fs.writeFileSync(f, '{"step":1}\n{"st\n{"step":3}\n');
  assert.throws(() => run.readJsonLines('events.jsonl'), /events\.jsonl: line 2 is not valid JSON/);
  fs.writeFileSync(f, '{"step":1}\n[1]\n');
  assert.throws(() => readJsonLines(f), /line 2 is not a JSON object/);
  assert.deepEqual(run.readJsonLines('alpha_history.jsonl'), []);
  fs.rmSync(dir, { recursive: true, force: true });
});
