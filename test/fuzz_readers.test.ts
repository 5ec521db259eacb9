// Property-based fuzzing (fast-check) of the readers behind predict / inspect / convert: the torch.save
// reader (zip container + restricted pickle), the safetensors reader and image decoding. Inputs are
// truncated, have bytes flipped or spliced, and have header fields rewritten with huge, negative or
// inconsistent values. Every case must either load into something self-consistent (each tensor reads
// back shape × dtype-size bytes; an image has width × height × 3 bytes) or fail with the reader's own
// error type and a message that names the file and the problem: never a TypeError/RangeError from
// deep inside, a crash, a hang, or an allocation sized from a corrupt header (Buffer allocations are
// watched: none may exceed the size of the file being read).
//
// Each property runs in a child process (512 MB heap) under a watchdog, so that a reader looping
// forever (they are synchronous: nothing in the same thread could interrupt it), running out of
// memory or crashing natively fails the test instead of stalling or killing the run. Each case is
// also timed. The seed is fixed so that CI is reproducible; explore further with
// NASLORA_FUZZ_SEED=<n> and NASLORA_FUZZ_RUNS=<multiplier> (more runs and a longer time budget).
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { fork } from 'node:child_process';
import { crc32, deflateSync } from 'node:zlib';
import fc from 'fast-check';
import sharp from 'sharp';
import { PickleError, STORAGE_DTYPES, unpickle } from '../src/io/pickle.js';
import { CheckpointError, openCheckpoint, openPth } from '../src/io/pth.js';
import { pickleStateDict, writePth, zipStored } from '../src/io/pth_write.js';
import { byteLength, DTYPE_BYTES, type RawTensor, type TensorSource } from '../src/io/raw.js';
import { openSafetensors, SafetensorsError, writeSafetensors } from '../src/io/safetensors.js';
import { decodeImage, decodeMask, ImageDecodeError, ImageTooLargeError, MAX_IMAGE_PIXELS } from '../src/io/image.js';
import { decodeRgb } from '../src/data/loader.js';

const ROOT = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '../..');
const SHARED = path.resolve(ROOT, '../shared');
const SEED = Number(process.env.NASLORA_FUZZ_SEED ?? 0x5eed);
const RUNS = Number(process.env.NASLORA_FUZZ_RUNS ?? 1);
/** Soft time budget of one property (fast-check stops starting new cases after it). */
const BUDGET_MS = 4000 * RUNS;
/** A single case slower than this counts as a hang. */
const CASE_MS = 3000;
/** The watchdog: a child still running after this is killed and the property fails. */
const WATCHDOG_MS = BUDGET_MS + 30_000;

interface Outcome { ok: boolean; runs: number; interrupted: boolean; ms: number; message?: string; loaded?: number; refused?: number }
// `any`: each property has its own tuple of generated values.
type Property = () => fc.IRawProperty<any> | Promise<fc.IRawProperty<any>>;
interface Spec { runs: number; property: Property }

// ---------------------------------------------------------------- the test process: one child per property

const CHILD = process.env.NASLORA_FUZZ_PROPERTY;
if (!CHILD) {
  const names = (): string[] => Object.keys(properties());
  for (const [i, name] of names().entries()) {
    test(name, async (t) => {
      const out = await inChild(name, SEED + i);
      const split = out.loaded !== undefined ? ` (${out.loaded} inputs loaded, ${out.refused} refused)` : '';
      t.diagnostic(`${out.runs} runs${out.interrupted ? ' (time budget reached)' : ''} in ${Math.round(out.ms)} ms${split}`);
      assert.ok(out.ok, out.message);
    });
  }
  test('an image declaring more pixels than the limit (a decompression bomb) is refused before decoding', async () => {
    // A valid 1-bit 10000 × 10000 PNG: 100 Mpixels (300 MB as RGB) in ~30 KB of zlib'd zeros.
    const w = 10000, h = 10000;
    const bomb = png(w, h, 1, 0, deflateSync(Buffer.alloc((1 + w / 8) * h), { level: 9 }));
    assert.ok(bomb.length < 200_000);
    const t0 = performance.now();
    const ext0 = process.memoryUsage().arrayBuffers;
    await assert.rejects(decodeImage(bomb), (e: unknown) => {
      assert.ok(e instanceof ImageTooLargeError, String(e));
      assert.equal(e.message, `cannot decode image <buffer>: image has 10000×10000 = 100000000 pixels, more than the limit of ${MAX_IMAGE_PIXELS}`);
      assert.deepEqual([e.width, e.height, e.limit], [w, h, MAX_IMAGE_PIXELS]);
      return true;
    });
    assert.ok(performance.now() - t0 < 2000, 'refused from the header, without decoding');
    assert.ok(process.memoryUsage().arrayBuffers - ext0 < 50e6, 'nothing image-sized was allocated');
    await assert.rejects(decodeMask(bomb), ImageTooLargeError);
    // The training/eval data loader decodes under the same limit.
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-bomb-'));
    try {
      fs.writeFileSync(path.join(dir, 'bomb.png'), bomb);
      await assert.rejects(decodeRgb(path.join(dir, 'bomb.png')), new RegExp(`bomb\\.png: image has more pixels than the limit of ${MAX_IMAGE_PIXELS}$`));
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    // The limit is an option (a server may lower it); a small image passes under a limit it meets.
    const small = png(20, 10, 8, 0, deflateSync(Buffer.alloc(21 * 10)));
    await assert.rejects(decodeImage(small, { maxPixels: 199 }), /image has 20×10 = 200 pixels, more than the limit of 199$/);
    assert.equal((await decodeImage(small, { maxPixels: 200 })).data.length, 600);
    await assert.rejects(decodeImage(small, { maxPixels: 0 }), RangeError);
  });
}

function inChild(name: string, seed: number): Promise<Outcome> {
  return new Promise((resolve) => {
    const env: NodeJS.ProcessEnv = { ...process.env, NASLORA_FUZZ_PROPERTY: name, NASLORA_FUZZ_PROPERTY_SEED: String(seed) };
    delete env.NODE_TEST_CONTEXT; // the child is not a test file of its own
    const child = fork(fileURLToPath(import.meta.url), [], { env, execArgv: ['--max-old-space-size=512'], stdio: ['ignore', 'pipe', 'pipe', 'ipc'] });
    let output = '', result: Outcome | undefined;
    child.stdout!.on('data', (d: Buffer) => { output += d.toString(); });
    child.stderr!.on('data', (d: Buffer) => { output += d.toString(); });
    const timer = setTimeout(() => {
      result ??= { ok: false, runs: 0, interrupted: false, ms: WATCHDOG_MS, message: `hang: no result after ${WATCHDOG_MS} ms` };
      child.kill('SIGKILL');
    }, WATCHDOG_MS);
    child.on('message', (o: Outcome) => { result ??= o; });
    child.on('exit', (code, signal) => {
      clearTimeout(timer);
      resolve(result ?? { ok: false, runs: 0, interrupted: false, ms: 0, message: `the fuzzing process died (exit code ${code}, signal ${signal}) without a result:\n${output.slice(-4000)}` });
    });
  });
}

async function runProperty(name: string, seed: number): Promise<Outcome> {
  const t0 = performance.now();
  try {
    const spec = properties()[name];
    watchAllocations();
    const fds = openFds();
    const r = await fc.check(await spec.property(), {
      numRuns: Math.round(spec.runs * RUNS), seed, interruptAfterTimeLimit: BUDGET_MS, markInterruptAsFailure: false,
    });
    const ms = performance.now() - t0;
    if (r.failed) {
      const err = r.errorInstance instanceof Error ? r.errorInstance.stack ?? r.errorInstance.message : String(r.errorInstance);
      return { ok: false, runs: r.numRuns, interrupted: r.interrupted, ms, message: `${fc.defaultReportMessage(r) ?? 'failed'}\nError: ${err}` };
    }
    const leaked = openFds() - fds;
    if (leaked > 0) return { ok: false, runs: r.numRuns, interrupted: r.interrupted, ms, message: `${leaked} file descriptors left open` };
    return { ok: true, runs: r.numRuns, interrupted: r.interrupted, ms, ...stats };
  } catch (e) {
    return { ok: false, runs: 0, interrupted: false, ms: performance.now() - t0, message: (e as Error).stack ?? String(e) };
  }
}

const openFds = (): number => (fs.existsSync('/proc/self/fd') ? fs.readdirSync('/proc/self/fd').length : 0);

// ---------------------------------------------------------------- case checks

/**
 * Buffer allocations (Buffer.alloc / allocUnsafe / allocUnsafeSlow) larger than `allocLimit` are
 * refused (so that a bug cannot really take gigabytes) and remembered in `overAlloc`, which the case
 * check reports even when a reader caught the refusal.
 */
let allocLimit = Infinity, overAlloc = 0;
/** How many checked inputs loaded and how many were refused with a clear error. */
const stats = { loaded: 0, refused: 0 };
function watchAllocations(): void {
  const B = Buffer as unknown as Record<string, (size: number, ...rest: unknown[]) => Buffer>;
  for (const k of ['alloc', 'allocUnsafe', 'allocUnsafeSlow']) {
    const orig = B[k];
    B[k] = function (this: unknown, size: number, ...rest: unknown[]): Buffer {
      if (typeof size === 'number' && size > allocLimit) {
        overAlloc = Math.max(overAlloc, size);
        throw new Error(`fuzz test: refused a ${size}-byte allocation`);
      }
      return orig.call(this, size, ...rest);
    };
  }
}

type ErrorClass = abstract new (...args: never[]) => Error;

/** The error a reader threw must be its own, naming `what` and saying something after it. */
function expectClearError(e: unknown, types: ErrorClass[], what: string): void {
  if (!(e instanceof Error)) throw new Error(`threw a non-Error: ${String(e)}`);
  if (!types.some((T) => e instanceof T)) {
    throw new Error(`threw ${e.constructor.name} instead of ${types.map((T) => T.name).join(' or ')}: ${e.message}\n${e.stack}`);
  }
  const i = e.message.indexOf(what);
  if (i < 0) throw new Error(`the message does not name ${what}: ${e.message}`);
  if (e.message.slice(i + what.length).replace(/[:\s]/g, '').length < 8) throw new Error(`the message says too little: ${e.message}`);
}

function timed<T>(what: string, f: () => T): T {
  const t0 = performance.now();
  const r = f();
  const ms = performance.now() - t0;
  if (ms > CASE_MS) throw new Error(`${what} took ${Math.round(ms)} ms (more than ${CASE_MS} ms: a hang?)`);
  return r;
}

const TMP = CHILD ? fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-fuzz-')) : '';
if (CHILD) process.on('exit', () => fs.rmSync(TMP, { recursive: true, force: true }));

/**
 * Writes `bytes` to a file, opens it with `open`, reads every tensor, and checks the outcome:
 * self-consistent tensors, or a clear error of the reader's type. Allocations stay within the file size.
 */
function checkTensorFile(bytes: Uint8Array, open: (f: string) => TensorSource, types: ErrorClass[] = [CheckpointError, SafetensorsError]): void {
  const file = path.join(TMP, 'case.bin');
  fs.writeFileSync(file, bytes);
  const tooBig = (): Error => new Error(`tried to allocate a ${overAlloc}-byte buffer reading a ${bytes.byteLength}-byte file`);
  overAlloc = 0;
  allocLimit = bytes.byteLength + 64;
  try {
    timed('opening and reading', () => {
      try {
        const src = open(file);
        try {
          for (const v of Object.values(src.metadata)) assert.equal(typeof v, 'string', 'metadata values are strings');
          for (const k of src.keys()) {
            const t = src.get(k)!;
            assert.ok(Object.hasOwn(DTYPE_BYTES, t.dtype), `tensor '${k}': dtype ${String(t.dtype)}`);
            assert.ok(Array.isArray(t.shape) && t.shape.every((d) => Number.isSafeInteger(d) && d >= 0), `tensor '${k}': shape ${JSON.stringify(t.shape)}`);
            const data = t.read();
            assert.ok(data instanceof Uint8Array);
            assert.equal(data.byteLength, byteLength(t), `tensor '${k}' ${JSON.stringify(t.shape)} ${t.dtype}: ${data.byteLength} bytes`);
          }
          stats.loaded++;
        } finally {
          src.close();
        }
      } catch (e) {
        if (overAlloc) throw tooBig();
        if (e instanceof assert.AssertionError) throw e;
        expectClearError(e, types, file);
        stats.refused++;
      }
    });
  } finally {
    allocLimit = Infinity;
  }
  if (overAlloc) throw tooBig();
}

/** Decodes `bytes` as an image (or a mask): a consistent image, or an ImageDecodeError. */
async function checkImage(bytes: Uint8Array, mask: boolean): Promise<void> {
  const t0 = performance.now();
  try {
    if (mask) {
      const m = await decodeMask(bytes);
      assert.ok(Number.isSafeInteger(m.width) && m.width > 0 && Number.isSafeInteger(m.height) && m.height > 0);
      assert.equal(m.data.length, m.width * m.height);
      assert.ok(m.width * m.height <= MAX_IMAGE_PIXELS);
    } else {
      const img = await decodeImage(bytes);
      assert.ok(Number.isSafeInteger(img.width) && img.width > 0 && Number.isSafeInteger(img.height) && img.height > 0);
      assert.equal(img.data.length, img.width * img.height * 3);
      assert.ok(img.width * img.height <= MAX_IMAGE_PIXELS);
    }
    stats.loaded++;
  } catch (e) {
    if (e instanceof assert.AssertionError) throw e;
    expectClearError(e, [ImageDecodeError], '<buffer>');
    stats.refused++;
  }
  const ms = performance.now() - t0;
  if (ms > CASE_MS) throw new Error(`decoding took ${Math.round(ms)} ms (more than ${CASE_MS} ms: a hang?)`);
}

// ---------------------------------------------------------------- mutations

/** A header field at a byte position: width in bytes, little-endian unless `be`. */
interface Field { name: string; pos: number; width: 1 | 2 | 4 | 8; be?: boolean }

type Mutation =
  | { t: 'truncate'; at: number }
  | { t: 'bytes'; edits: Array<[number, number]> }
  | { t: 'splice'; at: number; del: number; ins: number[] }
  | { t: 'field'; f: number; set: bigint }
  | { t: 'field'; f: number; add: number };

function getField(b: Buffer, f: Field): bigint {
  switch (f.width) {
    case 1: return BigInt(b[f.pos]);
    case 2: return BigInt(f.be ? b.readUInt16BE(f.pos) : b.readUInt16LE(f.pos));
    case 4: return BigInt(f.be ? b.readUInt32BE(f.pos) : b.readUInt32LE(f.pos));
    case 8: return f.be ? b.readBigUInt64BE(f.pos) : b.readBigUInt64LE(f.pos);
  }
}
function putField(b: Buffer, f: Field, value: bigint): void {
  const v = BigInt.asUintN(8 * f.width, value);
  switch (f.width) {
    case 1: b[f.pos] = Number(v); break;
    case 2: if (f.be) b.writeUInt16BE(Number(v), f.pos); else b.writeUInt16LE(Number(v), f.pos); break;
    case 4: if (f.be) b.writeUInt32BE(Number(v), f.pos); else b.writeUInt32LE(Number(v), f.pos); break;
    case 8: if (f.be) b.writeBigUInt64BE(v, f.pos); else b.writeBigUInt64LE(v, f.pos); break;
  }
}

function applyMutations(base: Uint8Array, fields: Field[], muts: Mutation[]): Buffer {
  let b = Buffer.from(base);
  for (const m of muts) {
    switch (m.t) {
      case 'truncate': b = b.subarray(0, Math.min(m.at, b.length)); break;
      case 'bytes': for (const [p, v] of m.edits) if (b.length) b[p % b.length] = v; break;
      case 'splice': {
        const at = Math.min(m.at, b.length);
        b = Buffer.concat([b.subarray(0, at), Buffer.from(m.ins), b.subarray(Math.min(b.length, at + m.del))]);
        break;
      }
      case 'field': {
        const f = fields[m.f];
        if (f.pos + f.width <= b.length) putField(b, f, 'set' in m ? m.set : getField(b, f) + BigInt(m.add));
        break;
      }
    }
  }
  return b;
}

const U64 = 2n ** 64n - 1n;
/** Values that break size checks: 0, ±1 around powers of two and the file size, sign bits, random. */
function interesting(size: number): fc.Arbitrary<bigint> {
  const s = BigInt(size);
  return fc.oneof(
    { weight: 3, arbitrary: fc.constantFrom(0n, 1n, 2n, 0x7fn, 0x80n, 0xffn, 0x7fffn, 0x8000n, 0xffffn, 0x7fffffffn, 0x80000000n, 0xffffffffn,
      2n ** 53n - 1n, 2n ** 53n, 2n ** 63n, U64, s - 1n, s, s + 1n, 2n * s, s - 22n) },
    { weight: 2, arbitrary: fc.bigInt({ min: 0n, max: U64 }) },
    { weight: 2, arbitrary: fc.bigInt({ min: 0n, max: s + 64n }) },
  );
}

interface MutationOptions { fields?: Field[]; pos?: fc.Arbitrary<number>; maxMutations?: number }
function mutations(base: Uint8Array, o: MutationOptions = {}): fc.Arbitrary<Mutation[]> {
  const len = base.byteLength, fields = o.fields ?? [];
  const pos = o.pos ?? fc.nat({ max: len - 1 });
  const arbs: Array<fc.Arbitrary<Mutation>> = [
    fc.record({ t: fc.constant('truncate' as const), at: pos }),
    fc.record({ t: fc.constant('bytes' as const), edits: fc.array(fc.tuple(pos, fc.nat({ max: 255 })), { minLength: 1, maxLength: 8 }) }),
    fc.record({ t: fc.constant('splice' as const), at: pos, del: fc.nat({ max: 16 }), ins: fc.array(fc.nat({ max: 255 }), { maxLength: 16 }) }),
  ];
  if (fields.length) {
    const f = fc.nat({ max: fields.length - 1 });
    arbs.push(
      fc.record({ t: fc.constant('field' as const), f, set: interesting(len) }),
      fc.record({ t: fc.constant('field' as const), f, add: fc.integer({ min: -64, max: 64 }) }),
    );
  }
  // Field rewrites weigh more: they aim at the size checks, random bytes mostly hit data.
  const weighted = arbs.map((arbitrary, i) => ({ arbitrary, weight: i >= 3 ? 3 : 1 }));
  return fc.array(fc.oneof(...weighted), { minLength: 1, maxLength: o.maxMutations ?? 3 });
}

// ---------------------------------------------------------------- zip (torch.save) layout

const sig = (n: number): Buffer => { const b = Buffer.alloc(4); b.writeUInt32LE(n); return b; };

interface ZipLayout { fields: Field[]; cd: [number, number]; entries: Map<string, { data: number; size: number }> }

/** The header fields of a zip as zipStored/torch write it (ZIP64 end records, optional ZIP64 extras). */
function zipLayout(b: Buffer): ZipLayout {
  const fields: Field[] = [];
  const F = (name: string, pos: number, width: Field['width']): void => { fields.push({ name, pos, width }); };
  const eocd = b.lastIndexOf(sig(0x06054b50));
  for (const [n, o, w] of [['disk', 4, 2], ['cdDisk', 6, 2], ['countDisk', 8, 2], ['count', 10, 2], ['cdSize', 12, 4], ['cdOffset', 16, 4], ['commentLen', 20, 2]] as const) F(`eocd.${n}`, eocd + o, w);
  let count = b.readUInt16LE(eocd + 10), cdStart = b.readUInt32LE(eocd + 16);
  const loc = eocd - 20;
  if (loc >= 0 && b.readUInt32LE(loc) === 0x07064b50) {
    F('loc64.disk', loc + 4, 4); F('loc64.offset', loc + 8, 8); F('loc64.disks', loc + 16, 4);
    const e64 = Number(b.readBigUInt64LE(loc + 8));
    for (const [n, o, w] of [['recSize', 4, 8], ['disk', 16, 4], ['cdDisk', 20, 4], ['countDisk', 24, 8], ['count', 32, 8], ['cdSize', 40, 8], ['cdOffset', 48, 8]] as const) F(`eocd64.${n}`, e64 + o, w);
    count = Number(b.readBigUInt64LE(e64 + 32)); cdStart = Number(b.readBigUInt64LE(e64 + 48));
  }
  const entries = new Map<string, { data: number; size: number }>();
  let p = cdStart;
  const extras = (where: string, start: number, len: number, onZip64: (x: number, len: number) => void): void => {
    for (let x = start; x + 4 <= start + len;) {
      const id = b.readUInt16LE(x), n = b.readUInt16LE(x + 2);
      F(`${where}.extra(${id}).id`, x, 2); F(`${where}.extra(${id}).len`, x + 2, 2);
      if (id === 1) { for (let k = 0; k + 8 <= n; k += 8) F(`${where}.zip64[${k / 8}]`, x + 4 + k, 8); onZip64(x, n); }
      x += 4 + n;
    }
  };
  for (let i = 0; i < count; i++) {
    const nameLen = b.readUInt16LE(p + 28), extraLen = b.readUInt16LE(p + 30), commentLen = b.readUInt16LE(p + 32);
    const name = b.toString('utf8', p + 46, p + 46 + nameLen);
    let size = b.readUInt32LE(p + 24), local = b.readUInt32LE(p + 42);
    for (const [n, o, w] of [['method', 10, 2], ['csize', 20, 4], ['size', 24, 4], ['nameLen', 28, 2], ['extraLen', 30, 2], ['commentLen', 32, 2], ['localOffset', 42, 4]] as const) F(`cd[${name}].${n}`, p + o, w);
    extras(`cd[${name}]`, p + 46 + nameLen, extraLen, (x) => {
      let q = x + 4;
      if (size === 0xffffffff) { size = Number(b.readBigUInt64LE(q)); q += 8; }
      if (b.readUInt32LE(p + 20) === 0xffffffff) q += 8;
      if (local === 0xffffffff) local = Number(b.readBigUInt64LE(q));
    });
    for (const [n, o, w] of [['method', 8, 2], ['csize', 18, 4], ['size', 22, 4], ['nameLen', 26, 2], ['extraLen', 28, 2]] as const) F(`local[${name}].${n}`, local + o, w);
    const lName = b.readUInt16LE(local + 26), lExtra = b.readUInt16LE(local + 28);
    extras(`local[${name}]`, local + 30 + lName, lExtra, () => {});
    entries.set(name, { data: local + 30 + lName + lExtra, size });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return { fields, cd: [cdStart, b.length], entries };
}

// ---------------------------------------------------------------- pickle building and scanning

const u32le = (n: number): number[] => [n & 0xff, (n >>> 8) & 0xff, (n >>> 16) & 0xff, (n >>> 24) & 0xff];
const u64le = (n: bigint): number[] => Array.from({ length: 8 }, (_, i) => Number((BigInt.asUintN(64, n) >> BigInt(8 * i)) & 0xffn));
const binunicode = (s: string): number[] => { const b = [...Buffer.from(s, 'utf8')]; return [0x58, ...u32le(b.length), ...b]; };
const global = (m: string, n: string): number[] => [0x63, ...Buffer.from(`${m}\n${n}\n`, 'latin1')];
/** Any integer as a pickle int: BININT1, BININT, else LONG1 (two's complement, little-endian). */
function pint(v: bigint): number[] {
  if (v >= 0n && v < 256n) return [0x4b, Number(v)];
  if (v >= -(2n ** 31n) && v < 2n ** 31n) return [0x4a, ...u32le(Number(BigInt.asUintN(32, v)))];
  const bytes: number[] = [];
  let x = v;
  for (;;) {
    bytes.push(Number(x & 0xffn));
    x >>= 8n;
    const top = bytes[bytes.length - 1] & 0x80;
    if ((x === 0n && !top) || (x === -1n && top)) break;
  }
  return [0x8a, bytes.length, ...bytes];
}

interface View { name: string; storage: string; key: string; numel: bigint; offset: bigint; shape: bigint[]; stride: bigint[] }
/** A state dict pickle like torch.save writes (protocol 2), with arbitrary integers in the storage ids and views. */
function pickleViews(views: View[]): Buffer {
  const out: number[] = [0x80, 2, ...global('collections', 'OrderedDict'), 0x29, 0x52, 0x28];
  const tup = (xs: bigint[]): number[] => (xs.length ? [0x28, ...xs.flatMap(pint), 0x74] : [0x29]);
  for (const v of views) {
    out.push(...binunicode(v.name), ...global('torch._utils', '_rebuild_tensor_v2'), 0x28);
    out.push(0x28, ...binunicode('storage'), ...global('torch', v.storage), ...binunicode(v.key), ...binunicode('cpu'), ...pint(v.numel), 0x74, 0x51);
    out.push(...pint(v.offset), ...tup(v.shape), ...tup(v.stride), 0x89, ...global('collections', 'OrderedDict'), 0x29, 0x52, 0x74, 0x52);
  }
  out.push(0x75, 0x2e);
  return Buffer.from(out);
}

/** Opcode positions of a pickle as pickleStateDict writes it, with the byte range of each length/int argument. */
interface Op { pos: number; arg?: Field }
function scanPickle(b: Buffer): Op[] {
  const ops: Op[] = [];
  for (let p = 0; p < b.length;) {
    const op = b[p];
    const arg = (width: Field['width']): Field => ({ name: `op 0x${op.toString(16)} at ${p}`, pos: p + 1, width });
    switch (op) {
      case 0x80: case 0x4b: ops.push({ pos: p, arg: arg(1) }); p += 2; break; // PROTO, BININT1
      case 0x4d: ops.push({ pos: p, arg: arg(2) }); p += 3; break; // BININT2
      case 0x4a: ops.push({ pos: p, arg: arg(4) }); p += 5; break; // BININT
      case 0x58: ops.push({ pos: p, arg: arg(4) }); p += 5 + b.readUInt32LE(p + 1); break; // BINUNICODE
      case 0x8a: ops.push({ pos: p, arg: arg(1) }); p += 2 + b[p + 1]; break; // LONG1
      case 0x63: ops.push({ pos: p }); p = b.indexOf(0x0a, b.indexOf(0x0a, p + 1) + 1) + 1; break; // GLOBAL
      default: ops.push({ pos: p }); p += 1;
    }
  }
  return ops;
}

/** Every opcode the reader knows or refuses, and a few it does not. */
const OPCODES = [
  0x80, 0x95, 0x2e, 0x28, 0x30, 0x31, 0x32, 0x4e, 0x88, 0x89, 0x4b, 0x4d, 0x4a, 0x8a, 0x8b, 0x47, 0x8c, 0x58, 0x8d, 0x55, 0x54,
  0x43, 0x42, 0x8e, 0x96, 0x29, 0x74, 0x85, 0x86, 0x87, 0x5d, 0x6c, 0x61, 0x65, 0x7d, 0x64, 0x73, 0x75, 0x8f, 0x90, 0x91, 0x71,
  0x72, 0x94, 0x68, 0x6a, 0x63, 0x93, 0x52, 0x62, 0x51, 0x81, 0x92, 0x69, 0x6f, 0x82, 0x83, 0x84, 0x50, 0x97, 0x98, 0x00, 0xff,
];

/** Short opcode sequences that stress the reader: memo gets/puts, huge lengths, forbidden globals, structure ops. */
const gadget: fc.Arbitrary<number[]> = fc.oneof(
  fc.constantFrom(...OPCODES).map((o) => [o]),
  fc.tuple(fc.constantFrom(0x68, 0x71), fc.nat({ max: 255 })).map(([o, i]) => [o, i]), // BINGET / BINPUT
  fc.tuple(fc.constantFrom(0x6a, 0x72), fc.oneof(fc.nat({ max: 40 }), fc.constant(0xffffffff), fc.nat())).map(([o, i]) => [o, ...u32le(i)]),
  fc.tuple(fc.constantFrom(0x58, 0x42, 0x54, 0x8b), fc.oneof(fc.nat({ max: 64 }), fc.constantFrom(0x7fffffff, 0x80000000, 0xffffffff), fc.nat()))
    .map(([o, n]) => [o, ...u32le(n)]), // BINUNICODE, BINBYTES, BINSTRING, LONG4 with a length
  fc.tuple(fc.constantFrom(0x8d, 0x8e, 0x96, 0x95), fc.oneof(fc.constantFrom(0n, 8n, 2n ** 32n, 2n ** 53n, 2n ** 63n, U64), fc.bigInt({ min: 0n, max: U64 })))
    .map(([o, n]) => [o, ...u64le(n)]), // BINUNICODE8, BINBYTES8, BYTEARRAY8, FRAME
  fc.tuple(fc.nat({ max: 255 }), fc.array(fc.nat({ max: 255 }), { maxLength: 12 })).map(([n, b]) => [0x8a, n, ...b]), // LONG1
  fc.bigInt({ min: -(2n ** 80n), max: 2n ** 80n }).map(pint),
  fc.constantFrom(
    global('os', 'system'), global('builtins', 'eval'), global('torch._utils', '_rebuild_tensor_v2'), global('collections', 'OrderedDict'),
    global('torch', 'FloatStorage'), global('torch._utils', '_rebuild_parameter'), [0x8c, 2, 0x6f, 0x73, 0x8c, 6, ...Buffer.from('system'), 0x93],
    [0x28, ...binunicode('storage'), ...global('torch', 'FloatStorage'), ...binunicode('0'), ...binunicode('cpu'), 0x4b, 6, 0x74, 0x51],
  ),
);

type PickleMutation =
  | { t: 'bytes'; edits: Array<[number, number]> }
  | { t: 'truncate'; at: number }
  | { t: 'insert'; op: number; bytes: number[] }
  | { t: 'delete'; op: number; count: number }
  | { t: 'arg'; op: number; set: bigint };

function mutatePickle(base: Buffer, ops: Op[], muts: PickleMutation[]): Buffer {
  const withArg = ops.filter((o) => o.arg);
  let b = Buffer.from(base);
  for (const m of muts) {
    switch (m.t) {
      case 'bytes': for (const [p, v] of m.edits) if (b.length) b[p % b.length] = v; break;
      case 'truncate': b = b.subarray(0, Math.min(m.at, b.length)); break;
      case 'insert': { const at = Math.min(ops[m.op].pos, b.length); b = Buffer.concat([b.subarray(0, at), Buffer.from(m.bytes), b.subarray(at)]); break; }
      case 'delete': { const at = Math.min(ops[m.op].pos, b.length); b = Buffer.concat([b.subarray(0, at), b.subarray(Math.min(b.length, at + m.count))]); break; }
      case 'arg': { const f = withArg[m.op % withArg.length].arg!; if (f.pos + f.width <= b.length) putField(b, f, m.set); break; }
    }
  }
  return b;
}

function pickleMutations(base: Buffer, ops: Op[]): fc.Arbitrary<PickleMutation[]> {
  const pos = fc.nat({ max: base.length - 1 }), op = fc.nat({ max: ops.length - 1 });
  return fc.array(fc.oneof(
    fc.record({ t: fc.constant('bytes' as const), edits: fc.array(fc.tuple(pos, fc.oneof(fc.constantFrom(...OPCODES), fc.nat({ max: 255 }))), { minLength: 1, maxLength: 4 }) }),
    fc.record({ t: fc.constant('truncate' as const), at: pos }),
    { arbitrary: fc.record({ t: fc.constant('insert' as const), op, bytes: gadget }), weight: 3 },
    fc.record({ t: fc.constant('delete' as const), op, count: fc.integer({ min: 1, max: 8 }) }),
    { arbitrary: fc.record({ t: fc.constant('arg' as const), op: fc.nat(), set: interesting(base.length) }), weight: 2 },
  ), { minLength: 1, maxLength: 4 });
}

// ---------------------------------------------------------------- small valid inputs

function smallTensors(): Array<[string, RawTensor]> {
  const f32 = new Float32Array([1, 2, 3, 4, 5, 6]);
  return [
    ['enc.w', { dtype: 'float32', shape: [2, 3], data: new Uint8Array(f32.buffer) }],
    ['enc.b', { dtype: 'int64', shape: [2], data: new Uint8Array(16).fill(7) }],
    ['scale', { dtype: 'float16', shape: [], data: new Uint8Array([0, 0x3c]) }],
    ['empty', { dtype: 'uint8', shape: [0, 3], data: new Uint8Array(0) }],
    ['mask', { dtype: 'bool', shape: [3], data: new Uint8Array([1, 0, 1]) }],
  ];
}

const ATTRS = { naslora_sam_config: '{"encoder":"vit_t"}' };
function smallPth(forceZip64: boolean): Buffer {
  const f = path.join(TMP, `base${forceZip64 ? '64' : ''}.pth`);
  writePth(f, smallTensors(), { attributes: ATTRS, forceZip64 });
  return fs.readFileSync(f);
}
function smallSafetensors(): Buffer {
  const f = path.join(TMP, 'base.safetensors');
  writeSafetensors(f, smallTensors(), { format: 'pt', naslora_sam_config: '{"x":1}' });
  return fs.readFileSync(f);
}
/** A torch.save zip around the given data.pkl and the small tensors' storages. */
function pthAround(pkl: Uint8Array, storages: Array<Uint8Array> = smallTensors().map(([, t]) => t.data)): Buffer {
  return Buffer.concat(zipStored([
    ['archive/data.pkl', pkl], ['archive/byteorder', Buffer.from('little')],
    ...storages.map((d, i): [string, Uint8Array] => [`archive/data/${i}`, d]), ['archive/version', Buffer.from('3\n')],
  ]));
}
function smallPickle(): Buffer {
  return Buffer.from(pickleStateDict(smallTensors().map(([name, t], i) => ({
    name, dtype: t.dtype, key: String(i), storageNumel: t.shape.reduce((a, b) => a * b, 1), offset: 0, shape: t.shape,
    stride: t.shape.map((_, d) => t.shape.slice(d + 1).reduce((a, b) => a * b, 1)),
  })), ATTRS));
}

function chunk(type: string, data: Uint8Array): Buffer {
  const h = Buffer.alloc(8);
  h.writeUInt32BE(data.length, 0); h.write(type, 4, 'latin1');
  const c = Buffer.alloc(4);
  c.writeUInt32BE(crc32(Buffer.concat([Buffer.from(type, 'latin1'), data])));
  return Buffer.concat([h, data, c]);
}
/** A PNG from its IHDR values and zlib'd scanlines. */
function png(w: number, h: number, depth: number, colour: number, idat: Uint8Array): Buffer {
  const ihdr = Buffer.alloc(13);
  ihdr.writeUInt32BE(w, 0); ihdr.writeUInt32BE(h, 4); ihdr[8] = depth; ihdr[9] = colour;
  return Buffer.concat([Buffer.from([137, 80, 78, 71, 13, 10, 26, 10]), chunk('IHDR', ihdr), chunk('IDAT', idat), chunk('IEND', new Uint8Array(0))]);
}

interface PngChunk { type: string; start: number; len: number }
function pngChunks(b: Buffer): PngChunk[] {
  const out: PngChunk[] = [];
  for (let p = 8; p + 12 <= b.length;) {
    const len = b.readUInt32BE(p);
    out.push({ type: b.toString('latin1', p + 4, p + 8), start: p, len });
    p += 12 + len;
  }
  return out;
}
function pngFields(b: Buffer): Field[] {
  const fields: Field[] = [];
  for (const c of pngChunks(b)) fields.push({ name: `${c.type}.length`, pos: c.start, width: 4, be: true });
  for (const [n, o, w] of [['width', 16, 4], ['height', 20, 4], ['depth', 24, 1], ['colour', 25, 1], ['compression', 26, 1], ['filter', 27, 1], ['interlace', 28, 1]] as const) {
    fields.push({ name: `IHDR.${n}`, pos: o, width: w, be: true });
  }
  return fields;
}
/** Recomputes every chunk CRC that still lies inside the buffer (so that libpng gets past its CRC checks). */
function fixPngCrcs(b: Buffer): void {
  for (let p = 8; p + 12 <= b.length;) {
    const len = b.readUInt32BE(p);
    if (p + 12 + len > b.length) break;
    b.writeUInt32BE(crc32(b.subarray(p + 4, p + 8 + len)), p + 8 + len);
    p += 12 + len;
  }
}
function jpegFields(b: Buffer): Field[] {
  const fields: Field[] = [];
  for (let p = 2; p + 4 <= b.length && b[p] === 0xff;) {
    const marker = b[p + 1];
    if (marker === 0xda) break; // start of scan: entropy-coded data follows
    const len = b.readUInt16BE(p + 2);
    fields.push({ name: `segment ff${marker.toString(16)}.length`, pos: p + 2, width: 2, be: true });
    if (marker >= 0xc0 && marker <= 0xc2) {
      fields.push({ name: 'SOF.precision', pos: p + 4, width: 1 }, { name: 'SOF.height', pos: p + 5, width: 2, be: true },
        { name: 'SOF.width', pos: p + 7, width: 2, be: true }, { name: 'SOF.components', pos: p + 9, width: 1 });
      for (let c = 0; c < b[p + 9]; c++) fields.push({ name: `SOF.component${c}.sampling`, pos: p + 11 + 3 * c, width: 1 }, { name: `SOF.component${c}.table`, pos: p + 12 + 3 * c, width: 1 });
    }
    p += 2 + len;
  }
  return fields;
}

async function imageBases(): Promise<Array<{ name: string; bytes: Buffer; mask: boolean }>> {
  const w = 24, h = 16;
  const rgb = Buffer.alloc(w * h * 3);
  for (let i = 0; i < rgb.length; i++) rgb[i] = (i * 37) & 0xff;
  const raw = { raw: { width: w, height: h, channels: 3 as const } };
  const bases = [
    { name: 'png rgb', bytes: await sharp(rgb, raw).png().toBuffer(), mask: false },
    { name: 'png palette', bytes: await sharp(rgb, raw).png({ palette: true, colours: 8 }).toBuffer(), mask: false },
    { name: 'png interlaced grey', bytes: await sharp(rgb, raw).greyscale().png({ progressive: true }).toBuffer(), mask: true },
    { name: 'jpeg', bytes: await sharp(rgb, raw).jpeg({ quality: 80 }).toBuffer(), mask: false },
    { name: 'jpeg progressive', bytes: await sharp(rgb, raw).jpeg({ progressive: true }).toBuffer(), mask: false },
  ];
  // Real files of the shared data sets, when present: a Kvasir JPEG and a PH2 mask PNG.
  for (const [rel, mask] of [['data/kvasir-seg/images/cju2htabevq9108015qjei0x7.jpg', false], ['data/ph2/masks/IMD004.png', true]] as const) {
    const f = path.join(SHARED, rel);
    if (fs.existsSync(f)) bases.push({ name: rel, bytes: fs.readFileSync(f), mask });
  }
  return bases;
}

// ---------------------------------------------------------------- the properties

function properties(): Record<string, Spec> {
  return {
    'pth: truncations, byte flips and splices end in a clear error or consistent tensors': {
      runs: 500,
      property: () => {
        const bases = [smallPth(false), smallPth(true)];
        return fc.property(fc.nat({ max: 1 }).chain((i) => fc.tuple(fc.constant(i), mutations(bases[i]))), ([i, muts]) => {
          const b = applyMutations(bases[i], [], muts);
          checkTensorFile(b, openCheckpoint);
          checkTensorFile(b, openPth, [CheckpointError]);
        });
      },
    },
    'pth: rewritten zip fields (end records, ZIP64, central and local headers) end in a clear error or consistent tensors': {
      runs: 800,
      property: () => {
        const bases = [smallPth(false), smallPth(true)].map((bytes) => ({ bytes, fields: zipLayout(bytes).fields }));
        return fc.property(fc.nat({ max: 1 }).chain((i) => fc.tuple(fc.constant(i), mutations(bases[i].bytes, { fields: bases[i].fields, maxMutations: 2 }))), ([i, muts]) => {
          checkTensorFile(applyMutations(bases[i].bytes, bases[i].fields, muts), openPth, [CheckpointError]);
        });
      },
    },
    'pth: mutated data.pkl (opcodes, lengths, memo indices, forbidden globals) ends in a clear error or consistent tensors': {
      runs: 800,
      property: () => {
        const pkl = smallPickle(), ops = scanPickle(pkl);
        return fc.property(pickleMutations(pkl, ops), (muts) => {
          const mutated = mutatePickle(pkl, ops, muts);
          checkTensorFile(pthAround(mutated), openPth, [CheckpointError]);
        });
      },
    },
    'pth: storage sizes, offsets, shapes and strides beyond the data end in a clear error or the right bytes': {
      runs: 600,
      property: () => {
        const big = fc.oneof(
          { weight: 6, arbitrary: fc.bigInt({ min: -2n, max: 12n }) },
          { weight: 2, arbitrary: fc.constantFrom(2n ** 31n - 1n, 2n ** 31n, 2n ** 32n, 2n ** 53n - 1n, 2n ** 53n, 2n ** 62n, 2n ** 63n, -(2n ** 63n), 10n ** 30n) },
          { weight: 1, arbitrary: fc.bigInt({ min: -(2n ** 70n), max: 2n ** 70n }) },
        );
        const small = fc.oneof({ weight: 8, arbitrary: fc.bigInt({ min: 0n, max: 4n }) }, { weight: 1, arbitrary: big });
        const storages = ['FloatStorage', 'LongStorage', 'HalfStorage', 'BoolStorage', 'ByteStorage', 'DoubleStorage', 'BFloat16Storage'];
        const view = fc.record({
          name: fc.constantFrom('a', 'b.w', 'c'), storage: fc.constantFrom(...storages), key: fc.constantFrom('0', '1', '2', '9'),
          // null: exactly what the storage record holds (the usual case); else anything
          numel: fc.option(fc.oneof({ weight: 4, arbitrary: fc.bigInt({ min: 0n, max: 40n }) }, { weight: 1, arbitrary: big }), { freq: 2 }),
          offset: small, shape: fc.array(small, { maxLength: 4 }), stride: fc.array(small, { maxLength: 4 }),
        }).map((v) => ({ ...v, stride: v.stride.length === v.shape.length ? v.stride : v.shape.map((_, i) => v.stride[i] ?? 1n) }));
        const sizes = fc.array(fc.nat({ max: 200 }), { minLength: 3, maxLength: 3 });
        return fc.property(fc.array(view, { minLength: 1, maxLength: 3 }), sizes, (generated, lens) => {
          const storageBytes = lens.map((n, i) => Uint8Array.from({ length: n }, (_, j) => (i * 64 + j) & 0xff));
          const views: View[] = generated.map((v) => ({
            ...v, numel: v.numel ?? BigInt(Math.floor((lens[Number(v.key)] ?? 0) / DTYPE_BYTES[STORAGE_DTYPES[`torch.${v.storage}`]])),
          }));
          const file = pthAround(pickleViews(views), storageBytes);
          checkTensorFile(file, openPth, [CheckpointError]);
          checkViewValues(file, views, storageBytes);
        });
      },
    },
    'pth: crafted pickles (self-referencing, deep and exponentially shared dicts, 10^5 dims, megabyte integers, wide lists) end in a clear error or load': {
      runs: 100,
      property: () => fc.property(fc.oneof(
        fc.record({ t: fc.constant('self' as const) }),
        fc.record({ t: fc.constant('shared' as const), depth: fc.integer({ min: 1, max: 64 }) }),
        fc.record({ t: fc.constant('chain' as const), depth: fc.constantFrom(1, 10, 1000, 20_000, 200_000) }),
        fc.record({ t: fc.constant('wide' as const), n: fc.constantFrom(1, 1000, 300_000) }),
        fc.record({ t: fc.constant('deepKey' as const), depth: fc.constantFrom(1, 100, 200_000) }),
        fc.record({ t: fc.constant('dims' as const), ndim: fc.constantFrom(1, 4, 64, 65, 50_000) }),
        fc.record({ t: fc.constant('long' as const), n: fc.constantFrom(0, 7, 8, 9, 1_000_000), fill: fc.constantFrom(0x00, 0xff, 0x01) }),
      ), (c) => { checkTensorFile(pthAround(structurePickle(c), c.t === 'dims' ? [new Uint8Array(200_000)] : undefined), openPth, [CheckpointError]); }),
    },
    'pickle: unpickle on mutated bytes returns a value or throws a PickleError': {
      runs: 3000,
      property: () => {
        const pkl = smallPickle(), ops = scanPickle(pkl);
        return fc.property(pickleMutations(pkl, ops), (muts) => {
          timed('unpickle', () => {
            try {
              unpickle(mutatePickle(pkl, ops, muts));
              stats.loaded++;
            } catch (e) {
              if (!(e instanceof PickleError)) throw new Error(`threw ${(e as Error).constructor?.name}: ${(e as Error).message}`);
              assert.ok(e.message.length > 10, e.message);
              stats.refused++;
            }
          });
        });
      },
    },
    'pth fixture (sam-tiny.pth): flips and truncations in its directory and data.pkl end in a clear error or consistent tensors': {
      runs: 150,
      property: () => {
        const f = path.join(SHARED, 'fixtures/sam-reference/sam-tiny.pth');
        if (!fs.existsSync(f)) return fc.property(fc.constant(0), () => {}); // shared fixtures absent: nothing to fuzz
        const bytes = fs.readFileSync(f), z = zipLayout(bytes);
        const pkl = [...z.entries].find(([n]) => n.endsWith('/data.pkl'))![1];
        const pos = fc.oneof(fc.integer({ min: z.cd[0], max: bytes.length - 1 }), fc.integer({ min: pkl.data, max: pkl.data + pkl.size - 1 }), fc.nat({ max: bytes.length - 1 }));
        return fc.property(mutations(bytes, { fields: z.fields, pos, maxMutations: 2 }), (muts) => {
          checkTensorFile(applyMutations(bytes, z.fields, muts), openCheckpoint);
        });
      },
    },
    'safetensors: truncations, byte flips and splices end in a clear error or consistent tensors': {
      runs: 500,
      property: () => {
        const base = smallSafetensors();
        const hdr = 8 + Number(base.readBigUInt64LE(0));
        const pos = fc.oneof({ weight: 3, arbitrary: fc.nat({ max: hdr + 8 }) }, { weight: 1, arbitrary: fc.nat({ max: base.length - 1 }) });
        const fields: Field[] = [{ name: 'header length', pos: 0, width: 8 }];
        return fc.property(mutations(base, { fields, pos }), (muts) => {
          const b = applyMutations(base, fields, muts);
          checkTensorFile(b, openSafetensors, [SafetensorsError]);
          checkTensorFile(b, openCheckpoint);
        });
      },
    },
    'safetensors: rewritten header length and JSON (dtype, shape, data_offsets, __metadata__) end in a clear error or consistent tensors': {
      runs: 1000,
      property: () => {
        const base = smallSafetensors();
        const hlen = Number(base.readBigUInt64LE(0));
        const header = JSON.parse(base.toString('utf8', 8, 8 + hlen)) as Record<string, unknown>;
        const data = base.subarray(8 + hlen);
        const names = Object.keys(header).filter((k) => k !== '__metadata__');
        return fc.property(fc.array(jsonEdit(names), { minLength: 1, maxLength: 3 }), fc.option(interesting(base.length)), (edits, len) => {
          const json = editHeader(header, edits);
          const lenBuf = Buffer.alloc(8);
          lenBuf.writeBigUInt64LE(len ?? BigInt(Buffer.byteLength(json)));
          checkTensorFile(Buffer.concat([lenBuf, Buffer.from(json), data]), openSafetensors, [SafetensorsError]);
        });
      },
    },
    'safetensors fixture (cvc-small-sam): flips and truncations in its header end in a clear error or consistent tensors': {
      runs: 100,
      property: () => {
        const f = path.join(SHARED, 'fixtures/cvc-small-sam/sam.safetensors');
        if (!fs.existsSync(f)) return fc.property(fc.constant(0), () => {});
        const bytes = fs.readFileSync(f);
        const hdr = 8 + Number(bytes.readBigUInt64LE(0));
        const fields: Field[] = [{ name: 'header length', pos: 0, width: 8 }];
        return fc.property(mutations(bytes, { fields, pos: fc.nat({ max: hdr + 64 }), maxMutations: 2 }), (muts) => {
          checkTensorFile(applyMutations(bytes, fields, muts), openCheckpoint);
        });
      },
    },
    'images: truncations, byte flips and splices (PNG, JPEG) end in an ImageDecodeError or a consistent image': {
      runs: 400,
      property: async () => {
        const bases = await imageBases();
        const one = fc.nat({ max: bases.length - 1 }).chain((i) => {
          const len = bases[i].bytes.length;
          const pos = fc.oneof(fc.nat({ max: Math.min(600, len - 1) }), fc.nat({ max: len - 1 })); // headers first
          return fc.tuple(fc.constant(i), mutations(bases[i].bytes, { pos }), fc.boolean());
        });
        return fc.asyncProperty(one, async ([i, muts, fixCrc]) => {
          const b = applyMutations(bases[i].bytes, [], muts);
          if (fixCrc && b[0] === 0x89) fixPngCrcs(b); // past libpng's CRC checks, into zlib and the filters
          await checkImage(b, bases[i].mask);
        });
      },
    },
    'images: rewritten PNG IHDR/IDAT and JPEG SOF fields (huge sizes) end in an ImageDecodeError or a consistent image': {
      runs: 500,
      property: async () => {
        const bases = (await imageBases()).map((x) => {
          const isPng = x.bytes[0] === 0x89;
          return { ...x, png: isPng, fields: isPng ? pngFields(x.bytes) : jpegFields(x.bytes) };
        });
        const dim = fc.oneof(
          fc.constantFrom(0n, 1n, 8191n, 8192n, 8193n, 16384n, 30000n, 65535n, 65536n, 100000n, 2n ** 24n, 2n ** 31n - 1n, 2n ** 31n, 2n ** 32n - 1n),
          fc.bigInt({ min: 0n, max: 2n ** 32n - 1n }),
        );
        const edit = fc.tuple(fc.nat(), fc.oneof(dim, fc.integer({ min: -8, max: 8 })));
        const cut = fc.option(fc.double({ min: 0, max: 1, noNaN: true }));
        return fc.asyncProperty(fc.nat({ max: bases.length - 1 }), fc.array(edit, { minLength: 1, maxLength: 3 }), fc.boolean(), cut, async (i, edits, fixCrc, cutIdat) => {
          const base = bases[i];
          const muts: Mutation[] = edits.map(([f, v]) => (typeof v === 'bigint' ? { t: 'field', f: f % base.fields.length, set: v } : { t: 'field', f: f % base.fields.length, add: v }));
          let b = applyMutations(base.bytes, base.fields, muts);
          if (base.png && cutIdat !== null) b = truncateIdat(b, cutIdat);
          if (base.png && fixCrc) fixPngCrcs(b);
          await checkImage(b, base.mask);
          if (base.png && fixCrc) {
            // A header declaring more pixels than the limit never decodes.
            const w = b.readUInt32BE(16), h = b.readUInt32BE(20);
            if (w * h > MAX_IMAGE_PIXELS) await assert.rejects(decodeImage(b), ImageDecodeError);
          }
        });
      },
    },
  };
}

/** Cuts the first IDAT's data to a fraction, with its length field updated (the CRC is fixed or not by the caller). */
function truncateIdat(b: Buffer, frac: number): Buffer {
  const c = pngChunks(b).find((x) => x.type === 'IDAT');
  if (!c || c.start + 12 + c.len > b.length) return b;
  const keep = Math.floor(c.len * frac);
  const out = Buffer.concat([b.subarray(0, c.start + 8 + keep), b.subarray(c.start + 8 + c.len)]);
  out.writeUInt32BE(keep, c.start);
  return out;
}

/** Pickles that stress the traversal of the unpickled state dict rather than the opcode reader. */
type Structure = { t: 'self' } | { t: 'shared'; depth: number } | { t: 'chain'; depth: number } | { t: 'wide'; n: number }
  | { t: 'deepKey'; depth: number } | { t: 'dims'; ndim: number } | { t: 'long'; n: number; fill: number };
function structurePickle(c: Structure): Buffer {
  const tensor = [...binunicode('w'), ...global('torch._utils', '_rebuild_tensor_v2'), 0x28,
    0x28, ...binunicode('storage'), ...global('torch', 'FloatStorage'), ...binunicode('0'), ...binunicode('cpu'), 0x4b, 6, 0x74, 0x51,
    0x4b, 0, 0x28, 0x4b, 2, 0x4b, 3, 0x74, 0x28, 0x4b, 3, 0x4b, 1, 0x74, 0x89, ...global('collections', 'OrderedDict'), 0x29, 0x52, 0x74, 0x52];
  const out: number[] = [0x80, 2];
  switch (c.t) {
    case 'self': // d = {'w': tensor, 'me': d}
      out.push(0x7d, 0x71, 0, 0x28, ...tensor, ...binunicode('me'), 0x68, 0, 0x75);
      break;
    case 'shared': // d0 = {'w': tensor}; d(i+1) = {'a': d(i), 'b': d(i)}: 2^depth paths to one tensor
      out.push(0x7d, 0x28, ...tensor, 0x75, 0x72, ...u32le(0), 0x30);
      for (let i = 0; i < c.depth; i++) {
        out.push(0x7d, 0x28, 0x8c, 1, 0x61, 0x6a, ...u32le(i), 0x8c, 1, 0x62, 0x6a, ...u32le(i), 0x75, 0x72, ...u32le(i + 1));
        if (i < c.depth - 1) out.push(0x30); // POP: only the last level stays on the stack
      }
      break;
    case 'chain': // {'a': {'a': ... {'w': tensor}}}
      for (let i = 0; i < c.depth; i++) out.push(0x7d, 0x8c, 1, 0x61);
      out.push(0x7d, 0x28, ...tensor, 0x75);
      for (let i = 0; i < c.depth; i++) out.push(0x73);
      break;
    case 'wide': // {'w': tensor, 'l': [None] * n}
      out.push(0x7d, 0x28, ...tensor, 0x8c, 1, 0x6c, 0x5d, 0x28);
      for (let i = 0; i < c.n; i++) out.push(0x4e);
      out.push(0x65, 0x75);
      break;
    case 'dims': { // 'w' viewed as shape [K, 1, 1, ...] with stride [2, ...]: a strided gather over ndim dims per element
      const K = 100_000, shape = [K, ...Array<number>(c.ndim - 1).fill(1)], stride = [2, ...Array<number>(c.ndim - 1).fill(1)];
      const tup = (xs: number[]): number[] => [0x28, ...xs.flatMap((x) => pint(BigInt(x))), 0x74];
      const parts = [[0x7d, 0x28, ...binunicode('w'), ...global('torch._utils', '_rebuild_tensor_v2'), 0x28,
        0x28, ...binunicode('storage'), ...global('torch', 'ByteStorage'), ...binunicode('0'), ...binunicode('cpu'), ...pint(BigInt(2 * K)), 0x74, 0x51, 0x4b, 0],
      tup(shape), tup(stride), [0x89, ...global('collections', 'OrderedDict'), 0x29, 0x52, 0x74, 0x52, 0x75]];
      for (const part of parts) for (const x of part) out.push(x); // no spread: 10^5 arguments overflow the stack
      break;
    }
    case 'long': { // {'w': tensor, 'n': LONG4 of n bytes} (a BigInt built byte by byte is quadratic in n)
      out.push(0x7d, 0x28, ...tensor, 0x8c, 1, 0x6e, 0x8b, ...u32le(c.n));
      for (let i = 0; i < c.n; i++) out.push(i === 0 ? 5 : c.fill);
      out.push(0x75);
      break;
    }
    case 'deepKey': // {[[[...]]]: tensor}: a key that is a deeply nested list
      out.push(0x7d, 0x28);
      for (let i = 0; i < c.depth; i++) out.push(0x5d);
      for (let i = 0; i < c.depth - 1; i++) out.push(0x61);
      out.push(...tensor.slice(binunicode('w').length), 0x75);
      break;
  }
  out.push(0x2e);
  return Buffer.from(out);
}

/** When a pickled view loads, its bytes must be the strided gather of its storage (an independent reference). */
function checkViewValues(file: Buffer, views: View[], storages: Uint8Array[]): void {
  const f = path.join(TMP, 'views.pth');
  fs.writeFileSync(f, file);
  let src: TensorSource;
  try { src = openPth(f); } catch { return; } // the error itself was checked by checkTensorFile
  try {
    const last = new Map(views.map((v) => [v.name, v])); // a later SETITEMS entry replaces an earlier one
    for (const name of src.keys()) {
      const v = last.get(name)!, t = src.get(name)!;
      const el = DTYPE_BYTES[t.dtype], shape = v.shape.map(Number), stride = v.stride.map(Number), st = storages[Number(v.key)];
      const n = shape.reduce((a, b) => a * b, 1);
      if (n > 4096) continue;
      const want = new Uint8Array(n * el);
      for (let i = 0; i < n; i++) {
        let rem = i, s = Number(v.offset);
        for (let d = shape.length - 1; d >= 0; d--) { s += (rem % shape[d]) * stride[d]; rem = Math.floor(rem / shape[d]); }
        want.set(st.subarray(s * el, (s + 1) * el), i * el);
      }
      assert.deepEqual(new Uint8Array(t.read()), want, `view '${name}' ${JSON.stringify(shape)} stride ${JSON.stringify(stride)} offset ${v.offset}`);
    }
  } finally {
    src.close();
  }
}

// ---- safetensors JSON header edits

type JsonEdit =
  | { t: 'field'; name: number; field: 'dtype' | 'shape' | 'data_offsets'; value: unknown }
  | { t: 'elem'; name: number; field: 'shape' | 'data_offsets'; i: number; value: unknown }
  | { t: 'metadata'; value: unknown }
  | { t: 'root'; value: unknown }
  | { t: 'add'; key: string; value: unknown }
  | { t: 'remove'; name: number };

/** JSON text spliced in verbatim (numbers JSON.stringify cannot write: 1e400 parses to Infinity). */
const RAW = (s: string): { raw: string } => ({ raw: s });
const weirdNumber: fc.Arbitrary<unknown> = fc.oneof(
  fc.integer({ min: -4, max: 64 }),
  fc.constantFrom(-1, 2 ** 31, 2 ** 32, 2 ** 53 - 1, 2 ** 53, 2 ** 53 + 2, 2 ** 64, 1e300, 0.5, -0.5, 1e-300),
  fc.constantFrom(RAW('1e400'), RAW('-1e400'), RAW('123456789012345678901234567890'), RAW('4.0'), RAW('-0')),
  fc.nat({ max: 400 }),
);
const weird: fc.Arbitrary<unknown> = fc.oneof(
  { weight: 3, arbitrary: weirdNumber },
  { weight: 2, arbitrary: fc.constantFrom('F32', 'I64', 'BOOL', 'F8_E4M3', 'U64', '__proto__', 'constructor', 'toString', '', 'x') },
  { weight: 1, arbitrary: fc.string({ maxLength: 8 }) },
  { weight: 1, arbitrary: fc.constantFrom(null, true, false, {}, [], { a: 1 }, { raw: '{"__proto__": {"x": 1}}' }) },
  { weight: 2, arbitrary: fc.array(weirdNumber, { maxLength: 4 }) },
);
function jsonEdit(names: string[]): fc.Arbitrary<JsonEdit> {
  const name = fc.nat({ max: names.length - 1 });
  return fc.oneof(
    { weight: 3, arbitrary: fc.record({ t: fc.constant('field' as const), name, field: fc.constantFrom('dtype' as const, 'shape' as const, 'data_offsets' as const), value: weird }) },
    { weight: 4, arbitrary: fc.record({ t: fc.constant('elem' as const), name, field: fc.constantFrom('shape' as const, 'data_offsets' as const), i: fc.nat({ max: 2 }), value: weirdNumber }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('metadata' as const), value: fc.oneof(weird, fc.dictionary(fc.constantFrom('format', 'naslora_sam_config', '__proto__'), weird)) }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('root' as const), value: weird }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('add' as const), key: fc.constantFrom('__proto__', 'constructor', '', 'z'), value: fc.oneof(weird, fc.record({ dtype: weird, shape: weird, data_offsets: weird })) }) },
    { weight: 1, arbitrary: fc.record({ t: fc.constant('remove' as const), name }) },
  );
}

function editHeader(header: Record<string, unknown>, edits: JsonEdit[]): string {
  let h: unknown = structuredClone(header);
  const names = Object.keys(header).filter((k) => k !== '__metadata__');
  for (const edit of edits) {
    const e = structuredClone(edit); // generated values may be shared constants: never edit them in place
    const obj = h !== null && typeof h === 'object' && !Array.isArray(h) ? (h as Record<string, unknown>) : undefined;
    switch (e.t) {
      case 'field': case 'elem': {
        const entry = obj?.[names[e.name]];
        if (entry === null || typeof entry !== 'object') break;
        const ent = entry as Record<string, unknown>;
        if (e.t === 'field') ent[e.field] = e.value;
        else if (Array.isArray(ent[e.field])) (ent[e.field] as unknown[])[e.i] = e.value;
        break;
      }
      case 'metadata': if (obj) obj.__metadata__ = e.value; break;
      case 'root': h = e.value; break;
      case 'add': if (obj) Object.defineProperty(obj, e.key, { value: e.value, enumerable: true, writable: true, configurable: true }); break;
      case 'remove': if (obj) delete obj[names[e.name]]; break;
    }
  }
  // Raw fragments: stringify them as unique markers, then splice the raw text in.
  const raws: string[] = [];
  const json = JSON.stringify(h, (_k, v: unknown) => {
    if (v && typeof v === 'object' && 'raw' in v && typeof (v as { raw: unknown }).raw === 'string' && Object.keys(v).length === 1) {
      raws.push((v as { raw: string }).raw);
      return `@@RAW${raws.length - 1}@@`;
    }
    return v;
  }) ?? 'null';
  return json.replace(/"@@RAW(\d+)@@"/g, (_m, i: string) => raws[Number(i)]);
}

// Last, once every declaration above is initialised: a child runs the one property it was given.
if (CHILD) {
  void runProperty(CHILD, Number(process.env.NASLORA_FUZZ_PROPERTY_SEED)).then((o) => process.send!(o, () => process.disconnect()));
}
