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

interface HeaderEntry { dtype: string; shape: number[]; data_offsets: [number, number] }

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
    let header: Record<string, unknown>;
    try {
      header = JSON.parse(hbuf.toString('utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new SafetensorsError(file, `header is not JSON (${(e as Error).message})`);
    }
    const dataStart = 8 + headerLen;
    const metadata = (header.__metadata__ ?? {}) as Record<string, string>;
    const entries = new Map<string, LazyTensor>();
    for (const [name, v] of Object.entries(header)) {
      if (name === '__metadata__') continue;
      const e = v as HeaderEntry;
      const dtype = ST_TO_DTYPE[e?.dtype];
      if (!dtype) throw new SafetensorsError(file, `tensor '${name}' has unsupported dtype ${String(e?.dtype)}`);
      if (!Array.isArray(e.shape) || !e.shape.every((d) => Number.isInteger(d) && d >= 0)) {
        throw new SafetensorsError(file, `tensor '${name}' has an invalid shape`);
      }
      const [b, en] = e.data_offsets ?? [];
      const want = byteLength({ dtype, shape: e.shape });
      if (!Number.isInteger(b) || !Number.isInteger(en) || en - b !== want || dataStart + en > size) {
        throw new SafetensorsError(file, `tensor '${name}' offsets [${b}, ${en}] do not match its shape ${JSON.stringify(e.shape)} or the file size`);
      }
      entries.set(name, {
        dtype, shape: e.shape,
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
      format: 'safetensors', metadata,
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
