// PyTorch checkpoints (torch.save since 1.6): an uncompressed zip holding <archive>/data.pkl (the
// pickled state dict, whose tensors point at storages by key), <archive>/data/<key> (raw
// little-endian storage bytes), <archive>/version and, since torch 2.x, <archive>/byteorder.
// The zip central directory is parsed here directly from a file descriptor so that tensors are read
// lazily, one at a time, straight from their offset in the file (vit_h is 2.5 GB).
import * as fs from 'node:fs';
import { PickleError, TensorRef, pickleAttributes, unpickle } from './pickle.js';
import { DTYPE_BYTES, numel, type LazyTensor, type TensorSource } from './raw.js';
import { openSafetensors } from './safetensors.js';

export class CheckpointError extends Error {
  constructor(file: string, msg: string) { super(`${file}: ${msg}`); }
}

interface ZipEntry { name: string; method: number; size: number; csize: number; localOffset: number }

const SIG_LOCAL = 0x04034b50, SIG_CENTRAL = 0x02014b50, SIG_EOCD = 0x06054b50;
const SIG_EOCD64 = 0x06064b50, SIG_LOCATOR64 = 0x07064b50;

function readAt(fd: number, pos: number, n: number): Buffer {
  const b = Buffer.alloc(n);
  let off = 0;
  while (off < n) {
    const r = fs.readSync(fd, b, off, n - off, pos + off);
    if (r <= 0) break;
    off += r;
  }
  return off === n ? b : b.subarray(0, off);
}

const u64 = (b: Buffer, off: number): number => Number(b.readBigUInt64LE(off));

/** Reads the zip central directory (with ZIP64 support) into name -> entry. */
function readZipDirectory(fd: number, size: number, fail: (m: string) => never): Map<string, ZipEntry> {
  // The end-of-central-directory record is the last 22 bytes plus an optional comment (< 64 KiB).
  const tailStart = Math.max(0, size - 22 - 0xffff);
  const tail = readAt(fd, tailStart, size - tailStart);
  let e = -1;
  for (let i = tail.length - 22; i >= 0; i--) if (tail.readUInt32LE(i) === SIG_EOCD) { e = i; break; }
  if (e < 0) fail('truncated or corrupt zip: no end-of-central-directory record');
  const eocdPos = tailStart + e;
  let count = tail.readUInt16LE(e + 10), cdSize = tail.readUInt32LE(e + 12), cdOffset = tail.readUInt32LE(e + 16);
  // ZIP64: a locator right before the EOCD points at the 64-bit record (torch always writes one).
  if (eocdPos >= 20) {
    const loc = readAt(fd, eocdPos - 20, 20);
    if (loc.readUInt32LE(0) === SIG_LOCATOR64) {
      const p = u64(loc, 8);
      const rec = p + 56 <= eocdPos ? readAt(fd, p, 56) : Buffer.alloc(0);
      if (rec.length < 56 || rec.readUInt32LE(0) !== SIG_EOCD64) fail('corrupt zip: bad ZIP64 end-of-central-directory record');
      count = u64(rec, 32); cdSize = u64(rec, 40); cdOffset = u64(rec, 48);
    }
  }
  if (cdOffset + cdSize > eocdPos) fail(`truncated or corrupt zip: central directory [${cdOffset}, +${cdSize}) lies outside the file`);
  const cd = readAt(fd, cdOffset, cdSize);
  const entries = new Map<string, ZipEntry>();
  let p = 0;
  for (let i = 0; i < count; i++) {
    if (p + 46 > cd.length || cd.readUInt32LE(p) !== SIG_CENTRAL) fail(`corrupt zip central directory: bad entry ${i} at offset ${cdOffset + p}`);
    const method = cd.readUInt16LE(p + 10);
    let csize = cd.readUInt32LE(p + 20), usize = cd.readUInt32LE(p + 24);
    const nameLen = cd.readUInt16LE(p + 28), extraLen = cd.readUInt16LE(p + 30), commentLen = cd.readUInt16LE(p + 32);
    let localOffset = cd.readUInt32LE(p + 42);
    if (p + 46 + nameLen + extraLen + commentLen > cd.length) fail(`corrupt zip central directory: entry ${i} overruns it`);
    const name = cd.toString('utf8', p + 46, p + 46 + nameLen);
    // ZIP64 extra field (id 1): the 64-bit values of exactly those fields that are 0xFFFFFFFF above.
    for (let x = p + 46 + nameLen, end = x + extraLen; x + 4 <= end;) {
      const id = cd.readUInt16LE(x), len = cd.readUInt16LE(x + 2);
      if (x + 4 + len > end) fail(`corrupt zip central directory: extra field ${id} of '${name}' overruns its entry`);
      if (id === 1) {
        let q = x + 4;
        const next = (): number => {
          if (q + 8 > x + 4 + len) fail(`corrupt zip central directory: short ZIP64 field for '${name}'`);
          q += 8;
          return u64(cd, q - 8);
        };
        if (usize === 0xffffffff) usize = next();
        if (csize === 0xffffffff) csize = next();
        if (localOffset === 0xffffffff) localOffset = next();
      }
      x += 4 + len;
    }
    // Sizes and offsets come from the file: check them against its size before anything is read or allocated.
    if (localOffset >= size || usize > size || csize > size) {
      fail(`corrupt zip central directory: entry '${name}' (local header at ${localOffset}, ${usize} bytes) lies outside the ${size}-byte file`);
    }
    entries.set(name, { name, method, size: usize, csize, localOffset });
    p += 46 + nameLen + extraLen + commentLen;
  }
  return entries;
}

/** File offset of an entry's data (after its local header), checked to lie within the file. */
function dataOffset(fd: number, size: number, e: ZipEntry, fail: (m: string) => never): number {
  if (e.method !== 0) fail(`zip entry '${e.name}' is compressed (method ${e.method}); PyTorch checkpoints store entries uncompressed`);
  const h = readAt(fd, e.localOffset, 30);
  if (h.length < 30 || h.readUInt32LE(0) !== SIG_LOCAL) fail(`corrupt zip: bad local header for '${e.name}' at offset ${e.localOffset}`);
  const start = e.localOffset + 30 + h.readUInt16LE(26) + h.readUInt16LE(28);
  if (start + e.size > size) fail(`truncated zip: entry '${e.name}' ends past the end of the file`);
  return start;
}

const isContiguous = (shape: number[], stride: number[]): boolean => {
  let s = 1;
  for (let i = shape.length - 1; i >= 0; i--) {
    if (shape[i] !== 1 && stride[i] !== s) return false;
    s *= shape[i];
  }
  return true;
};

/** Copies the strided view `t` (element indices relative to `base`) out of `src` into contiguous bytes. */
function gather(src: Buffer, base: number, t: TensorRef, el: number): Uint8Array {
  const { shape, stride } = t;
  const out = Buffer.alloc(numel(shape) * el);
  if (out.length === 0) return out;
  const nd = shape.length, inner = shape[nd - 1], innerStride = stride[nd - 1];
  const idx = new Array<number>(nd - 1).fill(0);
  for (let o = 0; o < out.length;) {
    let s = t.offset - base;
    for (let d = 0; d < nd - 1; d++) s += idx[d] * stride[d];
    if (innerStride === 1) { src.copy(out, o, s * el, (s + inner) * el); o += inner * el; }
    else for (let j = 0; j < inner; j++, o += el) src.copy(out, o, (s + j * innerStride) * el, (s + j * innerStride + 1) * el);
    for (let d = nd - 2; d >= 0; d--) { if (++idx[d] < shape[d]) break; idx[d] = 0; } // odometer
  }
  return out;
}

const isScalar = (v: unknown): v is string | number | boolean | null => v === null || ['string', 'number', 'boolean'].includes(typeof v);

/**
 * Flattens nested dicts of tensors into dotted names; scalar leaves go to metadata, others (lists...)
 * are ignored. Iterative and budgeted: a crafted pickle can nest dicts deeper than the call stack,
 * contain itself through the memo, or share one dict under two keys at every level (2^depth names
 * from a few hundred bytes); `budget` bounds the entries visited.
 */
function flatten(root: unknown, budget: number, tensors: Map<string, TensorRef>, metadata: Record<string, string>, fail: (m: string) => never): void {
  if (!(root instanceof Map)) fail('data.pkl does not hold a dict (state dict)');
  type Item = { v: unknown; prefix: string } | { leave: Map<unknown, unknown> };
  const todo: Item[] = [{ v: root, prefix: '' }];
  const open = new Set<Map<unknown, unknown>>(); // the dicts on the current path
  let visited = 0;
  while (todo.length) {
    const item = todo.pop()!;
    if ('leave' in item) { open.delete(item.leave); continue; }
    const { v, prefix } = item;
    if (++visited > budget) fail(`data.pkl expands to more than ${budget} entries (dicts shared under many names); not a plain state dict`);
    if (v instanceof Map) {
      if (open.has(v)) fail(`data.pkl: the dict at '${prefix}' contains itself`);
      open.add(v);
      todo.push({ leave: v });
      const children: Item[] = [];
      for (const [k, x] of v) {
        if (!isScalar(k)) fail(`data.pkl: a key of the dict at '${prefix}' is not a string`);
        children.push({ v: x, prefix: prefix ? `${prefix}.${String(k)}` : String(k) });
      }
      for (let i = children.length - 1; i >= 0; i--) todo.push(children[i]); // keep the dict's order
    } else if (v instanceof TensorRef) tensors.set(prefix, v);
    else if (isScalar(v)) metadata[prefix] = String(v);
  }
}

/** Most dimensions a tensor may have (PyTorch's own limit for most operations; SAM's tensors have at most 4). */
const MAX_DIMS = 64;

const LEGACY = 'legacy torch.save format (before torch 1.6) not supported, re-save with torch>=1.6 (torch.save(torch.load(f), f))';

/** Opens a torch.save zip checkpoint; tensors are read lazily. */
export function openPth(file: string): TensorSource {
  const fd = fs.openSync(file, 'r');
  const fail = (m: string): never => { throw new CheckpointError(file, m); };
  try {
    const size = fs.fstatSync(fd).size;
    if (size === 0) fail('empty file');
    const head = readAt(fd, 0, Math.min(size, 512));
    // Pre-1.6 torch.save wrote a bare pickle stream (magic number first), even older ones a tar.
    if (head[0] === 0x80 || head.toString('latin1', 257, 262) === 'ustar') fail(LEGACY);
    if (head.length < 4 || head.readUInt32LE(0) !== SIG_LOCAL) fail('not a PyTorch checkpoint (not a zip archive)');
    const entries = readZipDirectory(fd, size, fail);
    const pkl = [...entries.keys()].find((n) => /^[^/]+\/data\.pkl$/.test(n));
    if (!pkl) fail('missing <archive>/data.pkl in the zip (not a torch.save checkpoint)');
    const archive = pkl!.slice(0, -'/data.pkl'.length);
    const record = (name: string): Buffer => {
      const e = entries.get(`${archive}/${name}`)!;
      return readAt(fd, dataOffset(fd, size, e, fail), e.size);
    };
    if (entries.has(`${archive}/byteorder`)) {
      const order = record('byteorder').toString('latin1').trim();
      if (order !== 'little') fail(`byteorder '${order}': only little-endian checkpoints are supported`);
    }
    let root: unknown;
    const pickled = record('data.pkl');
    try {
      root = unpickle(pickled);
    } catch (e) {
      if (e instanceof PickleError) fail(`data.pkl: ${e.message}`);
      fail(`data.pkl: unreadable pickle (${(e as Error).message})`);
    }
    const refs = new Map<string, TensorRef>();
    const metadata: Record<string, string> = { format: 'pt' };
    // Each entry of a plain state dict costs a few bytes of pickle; far more names than bytes means amplification.
    flatten(root, Math.max(10_000, 16 * pickled.length), refs, metadata, fail);
    // String attributes of the state dict (writePth's `attributes`, e.g. naslora_sam_config) are metadata too.
    if (root instanceof Map) for (const [k, v] of pickleAttributes(root)) if (typeof v === 'string') metadata[k] = v;

    // Check every tensor against its storage record now, so that a broken file fails at open. Each
    // reference is checked on its own: tensors sharing a storage may view it with different dtypes.
    const records = new Map<string, { pos: number; size: number }>();
    const tensors = new Map<string, LazyTensor>();
    for (const [name, t] of refs) {
      const st = t.storage, el = DTYPE_BYTES[st.dtype];
      let rec = records.get(st.key);
      if (!rec) {
        const e = entries.get(`${archive}/data/${st.key}`);
        if (!e) fail(`storage record '${archive}/data/${st.key}' of tensor '${name}' is missing`);
        rec = { pos: dataOffset(fd, size, e!, fail), size: e!.size };
        records.set(st.key, rec);
      }
      // Gathering a strided view costs O(ndim) per run of elements: a pickle with 10^5 dims of size 1 is a CPU bomb.
      if (t.shape.length > MAX_DIMS) fail(`tensor '${name}' has ${t.shape.length} dimensions, more than ${MAX_DIMS}`);
      if (rec.size < st.numel * el) fail(`storage record '${archive}/data/${st.key}' is ${rec.size} bytes, too short for ${st.numel} ${st.dtype} values`);
      const n = t.shape.includes(0) ? 0 : numel(t.shape);
      let last = t.offset; // largest element index the view touches
      t.shape.forEach((d, i) => { last += (d - 1) * t.stride[i]; });
      const view = `tensor '${name}' (offset ${t.offset}, shape ${JSON.stringify(t.shape)}, stride ${JSON.stringify(t.stride)})`;
      if (n > 0 && last >= st.numel) fail(`${view} reaches past its storage of ${st.numel} values`);
      // A view whose elements are distinct fits in its storage, so in the file; only one that repeats
      // elements (stride 0, as expand() makes) can be larger once materialised: bounded by the file size.
      if (n * el > size) fail(`${view} is ${n * el} bytes once materialised, more than the whole ${size}-byte file (a broadcast view?); not supported`);
      const pos = rec.pos;
      tensors.set(name, {
        dtype: st.dtype, shape: t.shape,
        read(): Uint8Array {
          if (n === 0) return new Uint8Array(0);
          const span = readAt(fd, pos + t.offset * el, (last - t.offset + 1) * el);
          if (span.length < (last - t.offset + 1) * el) throw new CheckpointError(file, `unexpected end of file in tensor '${name}'`);
          return isContiguous(t.shape, t.stride) ? span : gather(span, t.offset, t, el);
        },
      });
    }
    return {
      format: 'pth', metadata,
      keys: () => [...tensors.keys()],
      get: (k) => tensors.get(k),
      close: () => fs.closeSync(fd),
    };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/** Opens a safetensors or torch.save (zip) checkpoint, telling them apart by content. */
export function openCheckpoint(file: string): TensorSource {
  const fd = fs.openSync(file, 'r');
  let head: Buffer, size: number;
  try {
    size = fs.fstatSync(fd).size;
    head = readAt(fd, 0, 9);
  } finally {
    fs.closeSync(fd);
  }
  if (size === 0) throw new CheckpointError(file, 'empty file');
  if (head.length >= 4 && head.readUInt32LE(0) === SIG_LOCAL) return openPth(file);
  // safetensors: u64 header length, then a JSON object. Checked before the pickle magic: a header
  // length whose low byte is 0x80 starts with the same byte as a pickle.
  if (head.length === 9 && head[8] === 0x7b && head.readBigUInt64LE(0) <= BigInt(size - 8)) return openSafetensors(file);
  if (head[0] === 0x80) return openPth(file); // bare pickle: openPth explains the legacy format
  throw new CheckpointError(file, 'unknown checkpoint format (neither safetensors nor a PyTorch zip checkpoint)');
}
