// A restricted pickle reader for torch.save state dicts: it interprets pickle opcodes as data only
// and never imports or calls anything. The only "globals" it knows are OrderedDict, the tensor
// rebuild functions and the typed storage classes; any other global is refused by name, so a
// malicious checkpoint (GLOBAL 'os system' + REDUCE, ...) fails before anything could happen.
// Opcode reference: CPython Lib/pickletools.py.
import type { DType } from './raw.js';

export class PickleError extends Error {}

/** A persistent storage reference: ('storage', torch.XStorage, key, location, numel). */
export class StorageRef {
  constructor(readonly dtype: DType, readonly key: string, readonly location: string, readonly numel: number) {}
}

/** What torch._utils._rebuild_tensor_v2(storage, storage_offset, size, stride, ...) describes. */
export class TensorRef {
  constructor(readonly storage: StorageRef, readonly offset: number, readonly shape: number[], readonly stride: number[]) {}
}

/** An allowed global: a name only, never resolved to code. */
export class PyGlobal {
  constructor(readonly name: string) {}
}

export const STORAGE_DTYPES: Record<string, DType> = {
  'torch.FloatStorage': 'float32', 'torch.DoubleStorage': 'float64', 'torch.HalfStorage': 'float16',
  'torch.BFloat16Storage': 'bfloat16', 'torch.LongStorage': 'int64', 'torch.IntStorage': 'int32',
  'torch.ShortStorage': 'int16', 'torch.CharStorage': 'int8', 'torch.ByteStorage': 'uint8', 'torch.BoolStorage': 'bool',
};
const ORDERED_DICT = 'collections.OrderedDict';
const REBUILD_TENSOR = 'torch._utils._rebuild_tensor_v2';
const REBUILD_PARAM = 'torch._utils._rebuild_parameter';
const ALLOWED = new Set([ORDERED_DICT, REBUILD_TENSOR, REBUILD_PARAM, ...Object.keys(STORAGE_DTYPES)]);

// Opcodes that exist but are refused (they build arbitrary objects or use the extension registry).
const REFUSED: Record<number, string> = {
  0x81: 'NEWOBJ', 0x92: 'NEWOBJ_EX', 0x69: 'INST', 0x6f: 'OBJ', 0x82: 'EXT1', 0x83: 'EXT2', 0x84: 'EXT4',
  0x50: 'PERSID', 0x97: 'NEXT_BUFFER', 0x98: 'READONLY_BUFFER',
};

/** Instance attributes that BUILD set on a dict (OrderedDict.__dict__), e.g. `_metadata`. */
const ATTRIBUTES = new WeakMap<Map<unknown, unknown>, Map<string, unknown>>();
export function pickleAttributes(dict: Map<unknown, unknown>): ReadonlyMap<string, unknown> {
  return ATTRIBUTES.get(dict) ?? new Map();
}

const isTuple = (v: unknown): v is unknown[] => Array.isArray(v) && Object.isFrozen(v);
const tuple = (items: unknown[]): readonly unknown[] => Object.freeze(items);
const describe = (v: unknown): string =>
  v instanceof PyGlobal ? `'${v.name}'` : v instanceof Map ? 'a dict' : Array.isArray(v) ? (isTuple(v) ? 'a tuple' : 'a list') : typeof v;

function isIntArray(v: unknown): v is number[] {
  return Array.isArray(v) && v.every((d) => Number.isSafeInteger(d) && d >= 0);
}

/** torch's persistent_load for typed storages. */
export function torchPersistentLoad(pid: unknown): StorageRef {
  if (!isTuple(pid) || pid.length !== 5 || pid[0] !== 'storage') throw new PickleError(`unsupported persistent id (expected ('storage', type, key, location, numel))`);
  const [, type, key, location, n] = pid;
  if (!(type instanceof PyGlobal) || !STORAGE_DTYPES[type.name]) throw new PickleError(`unsupported storage type ${describe(type)} in persistent id`);
  if (typeof key !== 'string' || typeof location !== 'string' || !Number.isSafeInteger(n) || (n as number) < 0) {
    throw new PickleError(`malformed storage persistent id for key ${String(key)}`);
  }
  return new StorageRef(STORAGE_DTYPES[type.name], key, location, n as number);
}

function callAllowed(fn: unknown, args: unknown): unknown {
  if (!(fn instanceof PyGlobal)) throw new PickleError(`refusing REDUCE on ${describe(fn)} (not an allowed callable)`);
  if (!isTuple(args)) throw new PickleError(`REDUCE on '${fn.name}' without an argument tuple`);
  switch (fn.name) {
    case ORDERED_DICT: {
      const m = new Map<unknown, unknown>();
      if (args.length === 0) return m;
      if (args.length === 1 && Array.isArray(args[0])) {
        for (const kv of args[0]) {
          if (!Array.isArray(kv) || kv.length !== 2) throw new PickleError(`OrderedDict(...) item is not a pair`);
          m.set(kv[0], kv[1]);
        }
        return m;
      }
      throw new PickleError(`unsupported OrderedDict(...) arguments`);
    }
    case REBUILD_TENSOR: {
      // (storage, storage_offset, size, stride, requires_grad, backward_hooks[, metadata])
      const [storage, offset, size, stride] = args;
      if (args.length < 6 || !(storage instanceof StorageRef) || !Number.isSafeInteger(offset) || (offset as number) < 0 ||
        !isIntArray(size) || !isIntArray(stride) || size.length !== stride.length) {
        throw new PickleError(`malformed ${REBUILD_TENSOR} arguments`);
      }
      // BINFLOAT can give -0, which passes as an integer: make it 0.
      const int = (d: number): number => (d === 0 ? 0 : d);
      return new TensorRef(storage, int(offset as number), size.map(int), stride.map(int));
    }
    case REBUILD_PARAM: {
      // (data, requires_grad, backward_hooks): a Parameter is just its data here.
      if (!(args[0] instanceof TensorRef)) throw new PickleError(`malformed ${REBUILD_PARAM} arguments`);
      return args[0];
    }
    default:
      throw new PickleError(`refusing REDUCE on '${fn.name}' (not an allowed callable)`);
  }
}

export interface UnpickleOptions {
  /** Maps a BINPERSID id to a value; defaults to torch's typed storage ids. */
  persistentLoad?: (pid: unknown) => unknown;
}

/** Unpickles `data` (protocols 2..5) allowing only torch state-dict globals. Dicts become Maps, tuples frozen arrays. */
export function unpickle(data: Uint8Array, opts: UnpickleOptions = {}): unknown {
  const persistentLoad = opts.persistentLoad ?? torchPersistentLoad;
  const buf = Buffer.from(data.buffer, data.byteOffset, data.byteLength);
  let pos = 0;
  let stack: unknown[] = [];
  // Saved stacks; MARK starts a fresh one (like CPython's metastack). popMark() swaps `stack`, so always
  // pop into a local before pushing: `stack.push(popMark())` would push onto the popped array.
  const marks: unknown[][] = [];
  const memo = new Map<number, unknown>();

  const need = (n: number): number => {
    if (n < 0 || pos + n > buf.length) throw new PickleError(`truncated pickle: need ${n} bytes at offset ${pos}`);
    const p = pos;
    pos += n;
    return p;
  };
  const pop = (): unknown => {
    if (stack.length === 0) throw new PickleError(`pickle stack underflow at offset ${pos - 1}`);
    return stack.pop();
  };
  const top = (): unknown => {
    if (stack.length === 0) throw new PickleError(`pickle stack underflow at offset ${pos - 1}`);
    return stack[stack.length - 1];
  };
  const popMark = (): unknown[] => {
    const items = stack;
    const prev = marks.pop();
    if (!prev) throw new PickleError(`pickle MARK missing at offset ${pos - 1}`);
    stack = prev;
    return items;
  };
  const str = (n: number, enc: BufferEncoding = 'utf8'): string => { const p = need(n); return buf.toString(enc, p, p + n); };
  const bytes = (n: number): Uint8Array => { const p = need(n); return new Uint8Array(buf.subarray(p, p + n)); };
  const len8 = (): number => {
    const n = buf.readBigUInt64LE(need(8));
    if (n > BigInt(buf.length)) throw new PickleError(`truncated pickle: length ${n} at offset ${pos - 8}`);
    return Number(n);
  };
  const long = (n: number): number => {
    // little-endian two's complement (LONG1/LONG4). Only safe integers are accepted, so only the low
    // 8 bytes can matter: the others must be sign extension (building a BigInt of a LONG4 of
    // megabytes would take quadratic time).
    const p = need(n);
    if (n === 0) return 0;
    const fill = buf[p + n - 1] & 0x80 ? 0xff : 0;
    for (let i = 8; i < n; i++) if (buf[p + i] !== fill) throw new PickleError(`integer of ${n} bytes at offset ${p} too large`);
    let v = 0n;
    for (let i = Math.min(n, 8) - 1; i >= 0; i--) v = (v << 8n) | BigInt(buf[p + i]);
    if (fill) v -= 1n << BigInt(8 * Math.min(n, 8));
    if (v > BigInt(Number.MAX_SAFE_INTEGER) || v < BigInt(Number.MIN_SAFE_INTEGER)) throw new PickleError(`integer ${v} too large`);
    return Number(v);
  };
  const global = (module: unknown, name: unknown): PyGlobal => {
    const full = `${String(module)}.${String(name)}`;
    if (typeof module !== 'string' || typeof name !== 'string' || !ALLOWED.has(full)) throw new PickleError(`refusing pickle global '${full}'`);
    return new PyGlobal(full);
  };
  const line = (): string => {
    const end = buf.indexOf(0x0a, pos);
    if (end < 0) throw new PickleError(`truncated pickle: unterminated GLOBAL at offset ${pos}`);
    const s = buf.toString('utf8', pos, end);
    pos = end + 1;
    return s;
  };
  const setItems = (d: unknown, items: unknown[]): void => {
    if (!(d instanceof Map)) throw new PickleError(`SETITEM(S) on ${describe(d)}`);
    if (items.length % 2) throw new PickleError(`SETITEMS with an odd number of items`);
    for (let i = 0; i < items.length; i += 2) d.set(items[i], items[i + 1]);
  };
  const append = (l: unknown, items: unknown[]): void => {
    if (!Array.isArray(l) || isTuple(l)) throw new PickleError(`APPEND(S) on ${describe(l)}`);
    for (const v of items) l.push(v); // not push(...items): a spread of 10^5+ items overflows the call stack
  };

  for (;;) {
    const at = pos;
    const op = buf[need(1)];
    switch (op) {
      case 0x80: need(1); break; // PROTO
      case 0x95: need(8); break; // FRAME (framing is only a hint for buffered readers)
      case 0x2e: { // STOP
        if (stack.length !== 1 || marks.length) throw new PickleError(`pickle ended with ${stack.length} values on the stack`);
        return stack[0];
      }
      case 0x28: marks.push(stack); stack = []; break; // MARK
      case 0x30: pop(); break; // POP
      case 0x31: popMark(); break; // POP_MARK
      case 0x32: stack.push(top()); break; // DUP
      case 0x4e: stack.push(null); break; // NONE
      case 0x88: stack.push(true); break; // NEWTRUE
      case 0x89: stack.push(false); break; // NEWFALSE
      case 0x4b: stack.push(buf.readUInt8(need(1))); break; // BININT1
      case 0x4d: stack.push(buf.readUInt16LE(need(2))); break; // BININT2
      case 0x4a: stack.push(buf.readInt32LE(need(4))); break; // BININT
      case 0x8a: stack.push(long(buf.readUInt8(need(1)))); break; // LONG1
      case 0x8b: stack.push(long(buf.readUInt32LE(need(4)))); break; // LONG4
      case 0x47: stack.push(buf.readDoubleBE(need(8))); break; // BINFLOAT
      case 0x8c: stack.push(str(buf.readUInt8(need(1)))); break; // SHORT_BINUNICODE
      case 0x58: stack.push(str(buf.readUInt32LE(need(4)))); break; // BINUNICODE
      case 0x8d: stack.push(str(len8())); break; // BINUNICODE8
      case 0x55: stack.push(str(buf.readUInt8(need(1)), 'latin1')); break; // SHORT_BINSTRING
      case 0x54: stack.push(str(buf.readUInt32LE(need(4)), 'latin1')); break; // BINSTRING
      case 0x43: stack.push(bytes(buf.readUInt8(need(1)))); break; // SHORT_BINBYTES
      case 0x42: stack.push(bytes(buf.readUInt32LE(need(4)))); break; // BINBYTES
      case 0x8e: case 0x96: stack.push(bytes(len8())); break; // BINBYTES8, BYTEARRAY8
      case 0x29: stack.push(tuple([])); break; // EMPTY_TUPLE
      case 0x74: { const t = tuple(popMark()); stack.push(t); break; } // TUPLE
      case 0x85: stack.push(tuple([pop()])); break; // TUPLE1
      case 0x86: { const b = pop(); stack.push(tuple([pop(), b])); break; } // TUPLE2
      case 0x87: { const c = pop(); const b = pop(); stack.push(tuple([pop(), b, c])); break; } // TUPLE3
      case 0x5d: stack.push([]); break; // EMPTY_LIST
      case 0x6c: { const l = popMark(); stack.push(l); break; } // LIST
      case 0x61: { const v = pop(); append(top(), [v]); break; } // APPEND
      case 0x65: { const items = popMark(); append(top(), items); break; } // APPENDS
      case 0x7d: stack.push(new Map()); break; // EMPTY_DICT
      case 0x64: { const d = new Map(); setItems(d, popMark()); stack.push(d); break; } // DICT
      case 0x73: { const v = pop(); const k = pop(); setItems(top(), [k, v]); break; } // SETITEM
      case 0x75: { const items = popMark(); setItems(top(), items); break; } // SETITEMS
      case 0x8f: stack.push(new Set()); break; // EMPTY_SET
      case 0x90: { // ADDITEMS
        const items = popMark();
        const s = top();
        if (!(s instanceof Set)) throw new PickleError(`ADDITEMS on ${describe(s)}`);
        for (const v of items) s.add(v);
        break;
      }
      case 0x91: { const s = new Set(popMark()); stack.push(s); break; } // FROZENSET
      case 0x71: memo.set(buf.readUInt8(need(1)), top()); break; // BINPUT
      case 0x72: memo.set(buf.readUInt32LE(need(4)), top()); break; // LONG_BINPUT
      case 0x94: memo.set(memo.size, top()); break; // MEMOIZE
      case 0x68: case 0x6a: { // BINGET, LONG_BINGET
        const i = op === 0x68 ? buf.readUInt8(need(1)) : buf.readUInt32LE(need(4));
        if (!memo.has(i)) throw new PickleError(`pickle memo key ${i} missing at offset ${at}`);
        stack.push(memo.get(i));
        break;
      }
      case 0x63: { const module = line(); stack.push(global(module, line())); break; } // GLOBAL
      case 0x93: { const name = pop(); stack.push(global(pop(), name)); break; } // STACK_GLOBAL
      case 0x52: { const args = pop(); stack.push(callAllowed(pop(), args)); break; } // REDUCE
      case 0x62: { // BUILD: only OrderedDict state (instance attributes: state_dict's `_metadata`, naslora's config)
        const state = pop();
        const inst = top();
        if (!(inst instanceof Map)) throw new PickleError(`refusing BUILD on ${describe(inst)}`);
        if (state instanceof Map) {
          const attrs = ATTRIBUTES.get(inst) ?? new Map<string, unknown>();
          for (const [k, v] of state) if (typeof k === 'string') attrs.set(k, v);
          ATTRIBUTES.set(inst, attrs);
        }
        break;
      }
      case 0x51: stack.push(persistentLoad(pop())); break; // BINPERSID
      default: {
        if (op in REFUSED) throw new PickleError(`refusing pickle opcode ${REFUSED[op]} at offset ${at}`);
        const ch = op >= 0x20 && op < 0x7f ? ` ('${String.fromCharCode(op)}')` : '';
        throw new PickleError(`unknown pickle opcode 0x${op.toString(16).padStart(2, '0')}${ch} at offset ${at}`);
      }
    }
  }
}
