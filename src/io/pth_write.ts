// Writes torch.save-compatible checkpoints: a stored (uncompressed) zip with archive/data.pkl (a
// protocol 2 pickle of an OrderedDict of _rebuild_tensor_v2 calls with persistent storage ids, like
// torch.save(state_dict) emits), archive/data/<i> (one storage per tensor), archive/byteorder and
// archive/version. As in torch's PyTorchStreamWriter, every entry's data starts 64-byte aligned,
// padded with an 'FB' extra field, so that readers can map tensors straight from the file.
import { crc32 } from 'node:zlib';
import { writeFileAtomic } from './atomic.js';
import { STORAGE_DTYPES } from './pickle.js';
import { byteLength, numel, type DType, type RawTensor } from './raw.js';

const STORAGE_OF = Object.fromEntries(Object.entries(STORAGE_DTYPES).map(([k, v]) => [v, k])) as Record<DType, string>;

/** One tensor of a state dict as torch pickles it: a view (offset, shape, stride) on storage `key`. */
export interface PickledTensor {
  name: string; dtype: DType; key: string; storageNumel: number;
  offset: number; shape: number[]; stride: number[];
}

export const contiguousStride = (shape: number[]): number[] => {
  const s = new Array<number>(shape.length);
  for (let i = shape.length - 1, acc = 1; i >= 0; i--) { s[i] = acc; acc *= shape[i]; }
  return s;
};

/**
 * The protocol 2 pickle torch.save writes for an OrderedDict of tensors. `attributes` become
 * instance attributes of the OrderedDict (BUILD, as torch.save does for a state dict's `_metadata`):
 * `torch.load(f, weights_only=True)` accepts them (`sd.<name>`), and `load_state_dict` ignores them.
 */
export function pickleStateDict(tensors: PickledTensor[], attributes: Record<string, string> = {}): Uint8Array {
  const out: Buffer[] = [];
  const op = (...bytes: number[]): void => { out.push(Buffer.from(bytes)); };
  const text = (s: string): void => { out.push(Buffer.from(s, 'utf8')); };
  const str = (s: string): void => { // BINUNICODE
    const b = Buffer.from(s, 'utf8');
    const h = Buffer.alloc(5); h[0] = 0x58; h.writeUInt32LE(b.length, 1);
    out.push(h, b);
  };
  const int = (n: number): void => {
    if (!Number.isSafeInteger(n) || n < 0) throw new Error(`pickleStateDict: bad integer ${n}`);
    if (n < 0x100) op(0x4b, n); // BININT1
    else if (n < 0x10000) op(0x4d, n & 0xff, n >> 8); // BININT2
    else if (n < 0x80000000) { const h = Buffer.alloc(5); h[0] = 0x4a; h.writeInt32LE(n, 1); out.push(h); } // BININT
    else { // LONG1: little-endian two's complement, with a 0 sign byte when the top bit is set
      const bytes: number[] = [];
      for (let v = BigInt(n); v > 0n; v >>= 8n) bytes.push(Number(v & 0xffn));
      if (bytes[bytes.length - 1] & 0x80) bytes.push(0);
      op(0x8a, bytes.length, ...bytes);
    }
  };
  const tup = (xs: number[]): void => { if (!xs.length) op(0x29); else { op(0x28); xs.forEach(int); op(0x74); } };
  const global = (module: string, name: string): void => { op(0x63); text(`${module}\n${name}\n`); };

  op(0x80, 2); // PROTO 2
  global('collections', 'OrderedDict'); op(0x29, 0x52); // OrderedDict()
  op(0x28); // MARK ... SETITEMS
  for (const t of tensors) {
    str(t.name);
    global('torch._utils', '_rebuild_tensor_v2');
    op(0x28); // MARK: the argument tuple
    op(0x28); str('storage'); global('torch', STORAGE_OF[t.dtype].slice('torch.'.length)); str(t.key); str('cpu'); int(t.storageNumel); op(0x74);
    op(0x51); // BINPERSID
    int(t.offset); tup(t.shape); tup(t.stride);
    op(0x89); // requires_grad False
    global('collections', 'OrderedDict'); op(0x29, 0x52); // backward_hooks
    op(0x74, 0x52); // TUPLE, REDUCE
  }
  op(0x75); // SETITEMS
  const attrs = Object.entries(attributes);
  if (attrs.length) {
    op(0x7d, 0x28); // EMPTY_DICT, MARK
    for (const [k, v] of attrs) { str(k); str(v); }
    op(0x75, 0x62); // SETITEMS, BUILD
  }
  op(0x2e); // STOP
  return Buffer.concat(out);
}

export interface ZipOptions {
  /** Write ZIP64 fields for every entry even when not needed (tests the >4 GB layout on small files). */
  forceZip64?: boolean;
}

export interface PthOptions extends ZipOptions {
  /** String attributes of the saved OrderedDict (see pickleStateDict), e.g. naslora's SAM configuration. */
  attributes?: Record<string, string>;
}

/** A stored zip as a list of chunks, entry data aligned to 64 bytes; ZIP64 where sizes or offsets need it. */
export function zipStored(entries: Array<[string, Uint8Array]>, opts: ZipOptions = {}): Uint8Array[] {
  const MAX = 0xffffffff;
  const chunks: Uint8Array[] = [];
  const central: Buffer[] = [];
  let pos = 0;
  const push = (b: Uint8Array): void => { chunks.push(b); pos += b.byteLength; };
  for (const [name, data] of entries) {
    const nameBuf = Buffer.from(name, 'utf8');
    const size = data.byteLength, offset = pos;
    const z64Local = opts.forceZip64 || size >= MAX;
    const z64Central = z64Local || offset >= MAX;
    const crc = crc32(data);
    // Local header: [ZIP64 extra (sizes)] then the 'FB' padding extra that aligns the data to 64.
    const z64 = z64Local ? Buffer.alloc(20) : Buffer.alloc(0);
    if (z64Local) { z64.writeUInt16LE(1, 0); z64.writeUInt16LE(16, 2); z64.writeBigUInt64LE(BigInt(size), 4); z64.writeBigUInt64LE(BigInt(size), 12); }
    const start = offset + 30 + nameBuf.length + z64.length + 4;
    const pad = (64 - (start % 64)) % 64;
    const fb = Buffer.alloc(4 + pad, 'Z');
    fb.write('FB', 0, 'latin1'); fb.writeUInt16LE(pad, 2);
    const h = Buffer.alloc(30);
    h.writeUInt32LE(0x04034b50, 0); h.writeUInt16LE(z64Local ? 45 : 20, 4); h.writeUInt16LE(0x0800, 6); // UTF-8 names
    h.writeUInt16LE(0, 8); h.writeUInt16LE(0, 10); h.writeUInt16LE(0x21, 12); // stored; 1980-01-01 00:00
    h.writeUInt32LE(crc, 14);
    h.writeUInt32LE(z64Local ? MAX : size, 18); h.writeUInt32LE(z64Local ? MAX : size, 22);
    h.writeUInt16LE(nameBuf.length, 26); h.writeUInt16LE(z64.length + fb.length, 28);
    push(h); push(nameBuf); push(z64); push(fb); push(data);
    // Central directory header: ZIP64 extra with (size, csize, offset) when any of them needs it.
    const c = Buffer.alloc(46);
    c.writeUInt32LE(0x02014b50, 0); c.writeUInt16LE(z64Central ? 45 : 20, 4); c.writeUInt16LE(z64Central ? 45 : 20, 6);
    c.writeUInt16LE(0x0800, 8); c.writeUInt16LE(0, 10); c.writeUInt16LE(0, 12); c.writeUInt16LE(0x21, 14);
    c.writeUInt32LE(crc, 16);
    c.writeUInt32LE(z64Central ? MAX : size, 20); c.writeUInt32LE(z64Central ? MAX : size, 24);
    c.writeUInt16LE(nameBuf.length, 28); c.writeUInt16LE(z64Central ? 28 : 0, 30);
    c.writeUInt32LE(z64Central ? MAX : offset, 42);
    const cz = Buffer.alloc(z64Central ? 28 : 0);
    if (z64Central) {
      cz.writeUInt16LE(1, 0); cz.writeUInt16LE(24, 2);
      cz.writeBigUInt64LE(BigInt(size), 4); cz.writeBigUInt64LE(BigInt(size), 12); cz.writeBigUInt64LE(BigInt(offset), 20);
    }
    central.push(c, nameBuf, cz);
  }
  const cdOffset = pos;
  central.forEach(push);
  const cdSize = pos - cdOffset, n = entries.length;
  // Like torch, always end with a ZIP64 end-of-central-directory record and locator, then the classic EOCD.
  const e64 = Buffer.alloc(56 + 20);
  e64.writeUInt32LE(0x06064b50, 0); e64.writeBigUInt64LE(44n, 4); e64.writeUInt16LE(45, 12); e64.writeUInt16LE(45, 14);
  e64.writeBigUInt64LE(BigInt(n), 24); e64.writeBigUInt64LE(BigInt(n), 32);
  e64.writeBigUInt64LE(BigInt(cdSize), 40); e64.writeBigUInt64LE(BigInt(cdOffset), 48);
  e64.writeUInt32LE(0x07064b50, 56); e64.writeBigUInt64LE(BigInt(pos), 64); e64.writeUInt32LE(1, 72);
  const e = Buffer.alloc(22);
  e.writeUInt32LE(0x06054b50, 0);
  e.writeUInt16LE(Math.min(n, 0xffff), 8); e.writeUInt16LE(Math.min(n, 0xffff), 10);
  e.writeUInt32LE(Math.min(cdSize, MAX), 12); e.writeUInt32LE(opts.forceZip64 ? MAX : Math.min(cdOffset, MAX), 16);
  push(e64); push(e);
  return chunks;
}

/** Writes `tensors` (in order) as a torch.save(OrderedDict) checkpoint, atomically. */
export function writePth(file: string, tensors: Array<[string, RawTensor]>, opts: PthOptions = {}): void {
  const pickled: PickledTensor[] = tensors.map(([name, t], i) => {
    const n = byteLength(t);
    if (t.data.byteLength !== n) throw new Error(`writePth: tensor '${name}' has ${t.data.byteLength} bytes, shape ${JSON.stringify(t.shape)} of ${t.dtype} needs ${n}`);
    return { name, dtype: t.dtype, key: String(i), storageNumel: numel(t.shape), offset: 0, shape: t.shape, stride: contiguousStride(t.shape) };
  });
  writeFileAtomic(file, zipStored([
    ['archive/data.pkl', pickleStateDict(pickled, opts.attributes)],
    ['archive/byteorder', Buffer.from('little')],
    ...tensors.map(([, t], i): [string, Uint8Array] => [`archive/data/${i}`, t.data]),
    ['archive/version', Buffer.from('3\n')],
  ], opts));
}
