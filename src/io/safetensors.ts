// safetensors: 8-byte little-endian header length, a JSON header, then the raw bytes.
// https://github.com/huggingface/safetensors — read lazily from a file descriptor so that large
// checkpoints are never held twice in memory.
import * as fs from 'node:fs';
import { writeFileAtomic } from './atomic.js';
import { byteLength, DTYPE_BYTES, type DType, type LazyTensor, type RawTensor, type TensorSource } from './raw.js';

const ST_TO_DTYPE: Record<string, DType> = {
  F32: 'float32', F64: 'float64', F16: 'float16', BF16: 'bfloat16',
  I64: 'int64', I32: 'int32', I16: 'int16', I8: 'int8', U8: 'uint8', BOOL: 'bool',
};
const DTYPE_TO_ST: Record<DType, string> = Object.fromEntries(
  Object.entries(ST_TO_DTYPE).map(([k, v]) => [v, k]),
) as Record<DType, string>;

const isObject = (v: unknown): v is Record<string, unknown> => v !== null && typeof v === 'object' && !Array.isArray(v);
const describeJson = (v: unknown): string => (v === null ? 'null' : Array.isArray(v) ? 'an array' : `a ${typeof v}`);
/** A header value in an error message, cut short (a corrupt header can hold megabytes). */
const brief = (v: unknown): string => { const s = JSON.stringify(v) ?? String(v); return s.length > 80 ? `${s.slice(0, 77)}...` : s; };

export class SafetensorsError extends Error {
  constructor(file: string, msg: string) { super(`${file}: not a valid safetensors file: ${msg}`); }
}

export function openSafetensors(file: string): TensorSource {
  const fd = fs.openSync(file, 'r');
  try {
    const size = fs.fstatSync(fd).size;
    if (size < 8) throw new SafetensorsError(file, `file is ${size} bytes, too short for a header`);
    const lenBuf = Buffer.alloc(8);
    fs.readSync(fd, lenBuf, 0, 8, 0);
    const headerLen = Number(lenBuf.readBigUInt64LE(0));
    if (headerLen <= 0 || 8 + headerLen > size || headerLen > 100 * 1024 * 1024) {
      throw new SafetensorsError(file, `header length ${headerLen} does not fit in a ${size}-byte file`);
    }
    const hbuf = Buffer.alloc(headerLen);
    fs.readSync(fd, hbuf, 0, headerLen, 8);
    let header: unknown;
    try {
      header = JSON.parse(hbuf.toString('utf8'));
    } catch (e) {
      throw new SafetensorsError(file, `header is not JSON (${(e as Error).message})`);
    }
    if (!isObject(header)) throw new SafetensorsError(file, `header is ${describeJson(header)}, not a JSON object`);
    const dataStart = 8 + headerLen;
    const metadata = header.__metadata__ ?? {};
    if (!isObject(metadata) || !Object.values(metadata).every((v) => typeof v === 'string')) {
      throw new SafetensorsError(file, `__metadata__ must map names to strings, got ${brief(metadata)}`);
    }
    const entries = new Map<string, LazyTensor>();
    for (const [name, e] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      if (!isObject(e)) throw new SafetensorsError(file, `tensor '${name}' is ${describeJson(e)}, not an object with dtype, shape and data_offsets`);
      const dtype = typeof e.dtype === 'string' && Object.hasOwn(ST_TO_DTYPE, e.dtype) ? ST_TO_DTYPE[e.dtype] : undefined;
      if (!dtype) throw new SafetensorsError(file, `tensor '${name}' has unsupported dtype ${brief(e.dtype)}`);
      if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isSafeInteger(d) && d >= 0)) {
        throw new SafetensorsError(file, `tensor '${name}' has an invalid shape ${brief(e.shape)} (expected non-negative integers)`);
      }
      const shape = (e.shape as number[]).map((d) => (d === 0 ? 0 : d)); // JSON's -0 passes as an integer >= 0: make it 0
      const offsets = e.data_offsets;
      if (!Array.isArray(offsets) || offsets.length !== 2 || !offsets.every((o) => Number.isSafeInteger(o) && o >= 0)) {
        throw new SafetensorsError(file, `tensor '${name}' has invalid data_offsets ${brief(offsets)} (expected [begin, end])`);
      }
      const [b, en] = offsets as [number, number];
      const want = shape.includes(0) ? 0 : byteLength({ dtype, shape });
      if (en < b || en - b !== want || dataStart + en > size) {
        throw new SafetensorsError(file, `tensor '${name}' offsets [${b}, ${en}] do not match its shape ${JSON.stringify(shape)} or the file size`);
      }
      entries.set(name, {
        dtype, shape,
        read(): Uint8Array {
          const out = Buffer.alloc(want);
          let off = 0;
          while (off < want) {
            const n = fs.readSync(fd, out, off, want - off, dataStart + b + off);
            if (n <= 0) throw new SafetensorsError(file, `unexpected end of file in tensor '${name}'`);
            off += n;
          }
          return out;
        },
      });
    }
    return {
      format: 'safetensors', metadata: metadata as Record<string, string>,
      keys: () => [...entries.keys()],
      get: (n) => entries.get(n),
      close: () => fs.closeSync(fd),
    };
  } catch (e) {
    fs.closeSync(fd);
    throw e;
  }
}

/** Reads every tensor of a safetensors file into memory. */
export function readSafetensors(file: string): { tensors: Map<string, RawTensor>; metadata: Record<string, string> } {
  const src = openSafetensors(file);
  try {
    const tensors = new Map<string, RawTensor>();
    for (const k of src.keys()) {
      const t = src.get(k)!;
      tensors.set(k, { dtype: t.dtype, shape: t.shape, data: t.read() });
    }
    return { tensors, metadata: src.metadata };
  } finally {
    src.close();
  }
}

/** Writes tensors (in the given order, 8-byte aligned header) atomically. */
export function writeSafetensors(
  file: string,
  tensors: Map<string, RawTensor> | Array<[string, RawTensor]>,
  metadata?: Record<string, string>,
): void {
  const list = tensors instanceof Map ? [...tensors.entries()] : tensors;
  const header: Record<string, unknown> = {};
  if (metadata && Object.keys(metadata).length) header.__metadata__ = metadata;
  let off = 0;
  for (const [name, t] of list) {
    const n = byteLength(t);
    if (t.data.byteLength !== n) throw new Error(`writeSafetensors: tensor '${name}' has ${t.data.byteLength} bytes, shape ${JSON.stringify(t.shape)} of ${t.dtype} needs ${n}`);
    header[name] = { dtype: DTYPE_TO_ST[t.dtype], shape: t.shape, data_offsets: [off, off + n] };
    off += n;
  }
  let json = JSON.stringify(header);
  json += ' '.repeat((8 - ((Buffer.byteLength(json) + 8) % 8)) % 8);
  const len = Buffer.alloc(8);
  len.writeBigUInt64LE(BigInt(Buffer.byteLength(json)));
  writeFileAtomic(file, [len, json, ...list.map(([, t]) => t.data)]);
}

export { DTYPE_BYTES };
