// The Tensor class, tensor lifetimes (scopes), and the operator table.
//
// Lifetimes: libtorch memory is invisible to the JS garbage collector, so tensors are freed
// explicitly. `tidy(fn)` frees every tensor created inside fn except those it returns; `dispose()`
// frees one now; `keep()` takes a tensor out of the current scope. A FinalizationRegistry frees
// tensors that become unreachable without being disposed — a safety net, not the plan.
import { native, type Handle, type NativeArg, type NativeResult } from './native.js';
import { CODE_DTYPE, DTYPE_BYTES, DTYPE_CODE, dtypeOfArray, isFloating, typedArrayFor, type DType, type TypedArrayFor } from './dtype.js';
import { autocastActive, type Device } from './device.js';

// ---------------------------------------------------------------------------------------------
// Operators: resolved once at load, called by id.

const opNames = new Map<number, string>();
function lookup(qualified: string): number {
  const dot = qualified.indexOf('.');
  const id = dot < 0 ? native.opLookup(qualified, '') : native.opLookup(qualified.slice(0, dot), qualified.slice(dot + 1));
  opNames.set(id, qualified);
  return id;
}

const ops = new Map<string, number>();
const missingOps = new Set<string>();

/**
 * Whether this libtorch has an operator (looked up once, lazily; a missing one is remembered, never
 * thrown): for ops that only some versions have, e.g. 'aten::scaled_dot_product_attention' (2.x).
 */
export function hasOp(qualified: string): boolean {
  if (ops.has(qualified)) return true;
  if (missingOps.has(qualified)) return false;
  try {
    opId(qualified);
    return true;
  } catch {
    missingOps.add(qualified);
    return false;
  }
}

/** The id of an ATen operator by its schema name, e.g. 'aten::add.Tensor'. */
export function opId(qualified: string): number {
  let id = ops.get(qualified);
  if (id === undefined) {
    id = lookup(qualified);
    ops.set(qualified, id);
  }
  return id;
}

export type Arg = Tensor | number | boolean | string | null | undefined | readonly Arg[];

function toNative(a: Arg): NativeArg {
  if (a instanceof Tensor) return a.handle;
  if (Array.isArray(a)) return a.map(toNative);
  return a as NativeArg;
}

function wrapResult(r: NativeResult): Tensor | Tensor[] | number | boolean | string | null {
  if (typeof r === 'number') return new Tensor(r);
  if (Array.isArray(r)) return r.map((x) => wrapResult(x)) as Tensor[];
  return r;
}

/** Calls an ATen operator; tensor results are wrapped (and owned by the current scope). */
export function callOp(qualified: string, ...args: Arg[]): Tensor | Tensor[] | number | boolean | string | null {
  const id = opId(qualified);
  const nargs = args.map(toNative);
  if (!audit) return wrapResult(native.call(id, ...nargs));
  const placed = auditCall(id, nargs);
  const r = wrapResult(native.call(id, ...nargs));
  auditResults(r, placed);
  return r;
}

// Fast paths used by the Tensor methods: results known to be one tensor / a tensor list.
function t1(id: number, ...args: NativeArg[]): Tensor {
  if (!audit) return new Tensor(native.call(id, ...args) as Handle);
  const placed = auditCall(id, args);
  const t = new Tensor(native.call(id, ...args) as Handle);
  auditResults(t, placed);
  return t;
}
function tN(id: number, ...args: NativeArg[]): Tensor[] {
  if (!audit) return (native.call(id, ...args) as Handle[]).map((h) => new Tensor(h));
  const placed = auditCall(id, args);
  const ts = (native.call(id, ...args) as Handle[]).map((h) => new Tensor(h));
  auditResults(ts, placed);
  return ts;
}
/** In-place calls (their result is the input). */
function cv(id: number, ...args: NativeArg[]): void {
  if (audit) auditCall(id, args);
  native.callVoid(id, ...args);
}

// ---------------------------------------------------------------------------------------------
// Device audit (tests of the GPU path on a machine without one). While it runs, every tensor is
// either "placed" (made with an explicit device, moved by Module.to / Tensor.to, or computed from a
// placed tensor) or "host-made" (made without a device: on a GPU run it would sit on the CPU). An op
// that meets both, with a host-made operand of more than one element, is recorded: on CUDA it would
// fail with "Expected all tensors to be on the same device". copy_ (a legal cross-device copy) is
// exempt; 0-dim host tensors are exempt (libtorch accepts CPU scalars next to CUDA tensors).

interface AuditState { placed: Map<Handle, boolean>; sites: Map<Handle, string>; violations: string[] }
let audit: AuditState | null = null;
const DEVICE_ARG = /^(cpu|meta|cuda(:\d+)?)$/;

/** Starts recording device mix-ups (see above); tensors that exist now count as host-made. */
export function startDeviceAudit(): void {
  audit = { placed: new Map(), sites: new Map(), violations: [] };
}

/** Stops the audit and returns what it recorded (one line per distinct op and creation site). */
export function stopDeviceAudit(): string[] {
  const v = audit ? [...new Set(audit.violations)] : [];
  audit = null;
  return v;
}

/** Marks a tensor as living on the run's device (Module.to does this, also for 'cpu'). */
export function markPlaced(t: Tensor): void {
  if (audit && !t.isDisposed) audit.placed.set(t.handle, true);
}

function auditCall(id: number, args: NativeArg[]): boolean {
  const a = audit!;
  const name = opNames.get(id) ?? `op#${id}`;
  let placed = false;
  const host: Handle[] = [];
  const visit = (x: NativeArg): void => {
    if (Array.isArray(x)) { x.forEach(visit); return; }
    if (typeof x === 'string' && DEVICE_ARG.test(x)) { placed = true; return; }
    if (typeof x !== 'number') return;
    const p = a.placed.get(x);
    if (p === undefined) return;  // a plain number (or a tensor from before the audit)
    if (p) placed = true;
    else host.push(x);
  };
  args.forEach(visit);
  if (name === 'aten::copy_' || name.startsWith('aten::to.device')) return placed;
  if (placed) {
    for (const h of host) {
      const shape = native.shape(h);
      if (shape.length === 0) continue;
      a.violations.push(`${name}: a tensor [${shape}] made without a device meets the run's device; made at\n${a.sites.get(h) ?? '  (unknown)'}`);
    }
  }
  return placed;
}

function auditResults(r: unknown, placed: boolean): void {
  if (r instanceof Tensor) audit!.placed.set(r.handle, placed || (audit!.placed.get(r.handle) ?? false));
  else if (Array.isArray(r)) for (const x of r) auditResults(x, placed);
}

const O = {
  add: lookup('aten::add.Tensor'), addS: lookup('aten::add.Scalar'),
  sub: lookup('aten::sub.Tensor'), subS: lookup('aten::sub.Scalar'), rsubS: lookup('aten::rsub.Scalar'),
  mul: lookup('aten::mul.Tensor'), mulS: lookup('aten::mul.Scalar'),
  div: lookup('aten::div.Tensor'), divS: lookup('aten::div.Scalar'),
  pow: lookup('aten::pow.Tensor_Tensor'), powS: lookup('aten::pow.Tensor_Scalar'),
  neg: lookup('aten::neg'), exp: lookup('aten::exp'), log: lookup('aten::log'), log1p: lookup('aten::log1p'),
  sqrt: lookup('aten::sqrt'), rsqrt: lookup('aten::rsqrt'), abs: lookup('aten::abs'), sin: lookup('aten::sin'),
  cos: lookup('aten::cos'), tanh: lookup('aten::tanh'), sigmoid: lookup('aten::sigmoid'), relu: lookup('aten::relu'),
  gelu: lookup('aten::gelu'), erf: lookup('aten::erf'), floor: lookup('aten::floor'), ceil: lookup('aten::ceil'),
  round: lookup('aten::round'), sign: lookup('aten::sign'), reciprocal: lookup('aten::reciprocal'),
  clamp: lookup('aten::clamp'), maximum: lookup('aten::maximum'), minimum: lookup('aten::minimum'),
  eq: lookup('aten::eq.Tensor'), eqS: lookup('aten::eq.Scalar'), ne: lookup('aten::ne.Tensor'), neS: lookup('aten::ne.Scalar'),
  lt: lookup('aten::lt.Tensor'), ltS: lookup('aten::lt.Scalar'), le: lookup('aten::le.Tensor'), leS: lookup('aten::le.Scalar'),
  gt: lookup('aten::gt.Tensor'), gtS: lookup('aten::gt.Scalar'), ge: lookup('aten::ge.Tensor'), geS: lookup('aten::ge.Scalar'),
  logicalAnd: lookup('aten::logical_and'), logicalOr: lookup('aten::logical_or'), logicalNot: lookup('aten::logical_not'),
  where: lookup('aten::where.self'), whereSO: lookup('aten::where.ScalarOther'), whereSS: lookup('aten::where.ScalarSelf'),
  sumAll: lookup('aten::sum'), sumDim: lookup('aten::sum.dim_IntList'), meanAll: lookup('aten::mean'), meanDim: lookup('aten::mean.dim'),
  maxAll: lookup('aten::max'), maxDim: lookup('aten::max.dim'), minAll: lookup('aten::min'), minDim: lookup('aten::min.dim'),
  amax: lookup('aten::amax'), amin: lookup('aten::amin'), argmax: lookup('aten::argmax'), argmin: lookup('aten::argmin'),
  var: lookup('aten::var.correction'), std: lookup('aten::std.correction'), norm: lookup('aten::linalg_vector_norm'),
  logsumexp: lookup('aten::logsumexp'), cumsum: lookup('aten::cumsum'), prod: lookup('aten::prod'),
  reshape: lookup('aten::reshape'), view: lookup('aten::view'), permute: lookup('aten::permute'),
  transpose: lookup('aten::transpose.int'), flatten: lookup('aten::flatten.using_ints'),
  unsqueeze: lookup('aten::unsqueeze'), squeezeDim: lookup('aten::squeeze.dim'), squeeze: lookup('aten::squeeze'),
  narrow: lookup('aten::narrow'), slice: lookup('aten::slice.Tensor'), select: lookup('aten::select.int'),
  indexSelect: lookup('aten::index_select'), gather: lookup('aten::gather'), index: lookup('aten::index.Tensor'),
  scatter: lookup('aten::scatter.src'), cat: lookup('aten::cat'), stack: lookup('aten::stack'),
  split: lookup('aten::split.Tensor'), splitSizes: lookup('aten::split_with_sizes'), chunk: lookup('aten::chunk'),
  repeat: lookup('aten::repeat'), expand: lookup('aten::expand'), contiguous: lookup('aten::contiguous'),
  clone: lookup('aten::clone'), detach: lookup('aten::detach'), toDtype: lookup('aten::to.dtype'),
  toDevice: lookup('aten::to.device'), flip: lookup('aten::flip'), roll: lookup('aten::roll'),
  tril: lookup('aten::tril'), triu: lookup('aten::triu'), matmul: lookup('aten::matmul'), mm: lookup('aten::mm'),
  bmm: lookup('aten::bmm'), item: lookup('aten::item'), mulInplaceS: lookup('aten::mul_.Scalar'),
  mulInplace: lookup('aten::mul_.Tensor'), addInplace: lookup('aten::add_.Tensor'), addInplaceS: lookup('aten::add_.Scalar'),
  addcmulInplace: lookup('aten::addcmul_'), addcdivInplace: lookup('aten::addcdiv_'), lerpInplace: lookup('aten::lerp_.Scalar'),
  copyInplace: lookup('aten::copy_'), zeroInplace: lookup('aten::zero_'), fillInplace: lookup('aten::fill_.Scalar'),
  divInplace: lookup('aten::div_.Tensor'), divInplaceS: lookup('aten::div_.Scalar'), clampInplace: lookup('aten::clamp_'), uniformInplace: lookup('aten::uniform_'),
  normalInplace: lookup('aten::normal_'), sqrtInplace: lookup('aten::sqrt_'), softmax: lookup('aten::softmax.int'),
  logSoftmax: lookup('aten::log_softmax.int'), topk: lookup('aten::topk'), sort: lookup('aten::sort'),
  oneHot: lookup('aten::one_hot'), any: lookup('aten::any'), all: lookup('aten::all'), isnan: lookup('aten::isnan'),
  nonzero: lookup('aten::nonzero'), einsum: lookup('aten::einsum'),
  square: lookup('aten::square'), indexAdd: lookup('aten::index_add'), indexCopy: lookup('aten::index_copy'), softplus: lookup('aten::softplus'), outer: lookup('aten::outer'),
} as const;

// ---------------------------------------------------------------------------------------------
// Scopes.

const scopes: Tensor[][] = [];
// NASLORA_TRACK_TENSORS=1 records where each live tensor was created (see liveTensorSites()).
const sites: Map<Handle, string> | null = process.env.NASLORA_TRACK_TENSORS ? new Map() : null;
const finalizer = new FinalizationRegistry<Handle>((h) => {
  native.release(h);
  sites?.delete(h);
});

/** With NASLORA_TRACK_TENSORS=1: live tensors counted by creation site (for finding leaks). */
export function liveTensorSites(top = 10): Array<{ count: number; site: string }> {
  if (!sites) throw new Error('set NASLORA_TRACK_TENSORS=1 to record tensor creation sites');
  const c = new Map<string, number>();
  for (const s of sites.values()) c.set(s, (c.get(s) ?? 0) + 1);
  return [...c.entries()].sort((a, b) => b[1] - a[1]).slice(0, top).map(([site, count]) => ({ count, site }));
}

/** Runs fn; every tensor created inside that is not part of its result is disposed. */
export function tidy<T>(fn: () => T): T {
  const scope: Tensor[] = [];
  scopes.push(scope);
  let result: T;
  try {
    result = fn();
  } catch (e) {
    scopes.pop();
    for (const t of scope) t.dispose();
    throw e;
  }
  scopes.pop();
  if (result instanceof Promise) throw new Error('tidy(): fn must be synchronous (await outside the scope)');
  const kept = new Set<Tensor>();
  collectTensors(result, kept);
  const parent = scopes.length ? scopes[scopes.length - 1] : null;
  for (const t of scope) {
    if (!kept.has(t)) t.dispose();
    else if (parent) parent.push(t);
    else t.guard();  // leaves every scope: from now on only the finalizer can catch a leak
  }
  return result;
}

function collectTensors(x: unknown, out: Set<Tensor>, depth = 0): void {
  if (depth > 4 || x === null || typeof x !== 'object') return;
  if (x instanceof Tensor) out.add(x);
  else if (Array.isArray(x)) for (const v of x) collectTensors(v, out, depth + 1);
  else if (x instanceof Map) for (const v of x.values()) collectTensors(v, out, depth + 1);
  else if (Object.getPrototypeOf(x) === Object.prototype) for (const v of Object.values(x)) collectTensors(v, out, depth + 1);
}

/** Disposes every tensor in a (nested) structure. */
export function dispose(x: unknown): void {
  const s = new Set<Tensor>();
  collectTensors(x, s);
  for (const t of s) t.dispose();
}

/** Runs fn with autograd recording off. */
export function noGrad<T>(fn: () => T): T {
  const prev = native.setGradEnabled(false);
  try {
    return fn();
  } finally {
    native.setGradEnabled(prev);
  }
}

export function isGradEnabled(): boolean {
  return native.isGradEnabled();
}

// ---------------------------------------------------------------------------------------------
// Tensor.

export type Scalar = number | boolean;
export type TensorOrScalar = Tensor | number;
export type { Device };

/** float16 / bfloat16: what autocast computes in. */
export function isReducedFloat(d: DType): boolean {
  return d === 'bfloat16' || d === 'float16';
}

/** Inside autocast, the dtype argument that makes softmax-like ops compute in fp32 (CUDA autocast's policy for them). */
function fp32Arg(t: Tensor): number | null {
  return autocastActive() && isReducedFloat(t.dtype) ? DTYPE_CODE.float32 : null;
}

export class Tensor {
  #h: Handle;
  #guarded = false;

  constructor(h: Handle) {
    this.#h = h;
    // Tensors made inside a tidy scope are freed by it; only those that leave every scope (or are
    // made outside one) get the finalizer safety net, which costs more than the op itself.
    if (scopes.length) scopes[scopes.length - 1].push(this);
    else this.guard();
    sites?.set(h, new Error().stack!.split('\n').slice(2, 7).join('\n'));
    if (audit) {
      audit.placed.set(h, false);
      audit.sites.set(h, new Error().stack!.split('\n').slice(3, 9).join('\n'));
    }
  }

  /** Registers the garbage-collection safety net (idempotent). */
  guard(): void {
    if (this.#guarded || Number.isNaN(this.#h)) return;
    this.#guarded = true;
    finalizer.register(this, this.#h, this);
  }

  /** The native handle; throws if disposed. */
  get handle(): Handle {
    if (Number.isNaN(this.#h)) throw new Error('tensor used after dispose');
    return this.#h;
  }

  get isDisposed(): boolean {
    return Number.isNaN(this.#h);
  }

  dispose(): void {
    if (Number.isNaN(this.#h)) return;
    if (this.#guarded) finalizer.unregister(this);
    native.release(this.#h);
    sites?.delete(this.#h);
    if (audit) { audit.placed.delete(this.#h); audit.sites.delete(this.#h); }
    this.#h = NaN;
  }

  /** Removes this tensor from the current tidy scope so it outlives it. */
  keep(): this {
    this.guard();
    for (let i = scopes.length - 1; i >= 0; i--) {
      const idx = scopes[i].lastIndexOf(this);
      if (idx >= 0) {
        scopes[i].splice(idx, 1);
        break;
      }
    }
    return this;
  }

  // -- metadata ----------------------------------------------------------------------------
  get shape(): number[] { return native.shape(this.handle); }
  get ndim(): number { return this.shape.length; }
  get dtype(): DType { return CODE_DTYPE[native.meta(this.handle)[1]]; }
  get device(): string { return native.meta(this.handle)[2]; }
  get numel(): number { return this.shape.reduce((a, b) => a * b, 1); }
  size(dim: number): number {
    const s = this.shape;
    return s[dim < 0 ? dim + s.length : dim];
  }

  // -- autograd ----------------------------------------------------------------------------
  get requiresGrad(): boolean { return native.meta(this.handle)[3]; }
  set requiresGrad(on: boolean) { native.setRequiresGrad(this.handle, on); }
  requiresGrad_(on = true): this { native.setRequiresGrad(this.handle, on); return this; }
  /** The accumulated gradient as a new tensor handle (dispose it, or read it inside tidy), or null. */
  get grad(): Tensor | null {
    const g = native.grad(this.handle);
    if (g === null) return null;
    const t = new Tensor(g);
    if (audit) audit.placed.set(g, audit.placed.get(this.handle) ?? false);  // a gradient lives with its tensor
    return t;
  }
  set grad(g: Tensor | null) { native.setGrad(this.handle, g ? g.handle : null); }
  backward(grad?: Tensor, opts: { retainGraph?: boolean } = {}): void {
    native.backward(this.handle, grad ? grad.handle : null, opts.retainGraph ?? false);
  }
  detach(): Tensor { return t1(O.detach, this.handle); }

  // -- data --------------------------------------------------------------------------------
  /** A copy of the data as a typed array of the tensor's dtype (float16/bfloat16 as raw Uint16). */
  toArray<D extends DType = 'float32'>(): TypedArrayFor[D] {
    return typedArrayFor(this.dtype, native.toBuffer(this.handle)) as TypedArrayFor[D];
  }
  /** Float32 copy of the data, whatever the dtype. */
  toFloat32Array(): Float32Array {
    if (this.dtype === 'float32') return new Float32Array(native.toBuffer(this.handle));
    const f = t1(O.toDtype, this.handle, DTYPE_CODE.float32);
    try { return new Float32Array(native.toBuffer(f.handle)); } finally { f.dispose(); }
  }
  toBytes(): Uint8Array { return new Uint8Array(native.toBuffer(this.handle)); }
  item(): number {
    const v = native.call(O.item, this.handle);
    return typeof v === 'boolean' ? Number(v) : (v as number);
  }

  // -- elementwise -------------------------------------------------------------------------
  add(o: TensorOrScalar, alpha = 1): Tensor {
    return o instanceof Tensor ? t1(O.add, this.handle, o.handle, alpha) : t1(O.addS, this.handle, o, alpha);
  }
  sub(o: TensorOrScalar, alpha = 1): Tensor {
    return o instanceof Tensor ? t1(O.sub, this.handle, o.handle, alpha) : t1(O.subS, this.handle, o, alpha);
  }
  /** o - this */
  rsub(o: number): Tensor { return t1(O.rsubS, this.handle, o, 1); }
  mul(o: TensorOrScalar): Tensor { return o instanceof Tensor ? t1(O.mul, this.handle, o.handle) : t1(O.mulS, this.handle, o); }
  div(o: TensorOrScalar): Tensor { return o instanceof Tensor ? t1(O.div, this.handle, o.handle) : t1(O.divS, this.handle, o); }
  pow(o: TensorOrScalar): Tensor { return o instanceof Tensor ? t1(O.pow, this.handle, o.handle) : t1(O.powS, this.handle, o); }
  neg(): Tensor { return t1(O.neg, this.handle); }
  exp(): Tensor { return t1(O.exp, this.handle); }
  log(): Tensor { return t1(O.log, this.handle); }
  log1p(): Tensor { return t1(O.log1p, this.handle); }
  sqrt(): Tensor { return t1(O.sqrt, this.handle); }
  rsqrt(): Tensor { return t1(O.rsqrt, this.handle); }
  square(): Tensor { return t1(O.square, this.handle); }
  abs(): Tensor { return t1(O.abs, this.handle); }
  sin(): Tensor { return t1(O.sin, this.handle); }
  cos(): Tensor { return t1(O.cos, this.handle); }
  tanh(): Tensor { return t1(O.tanh, this.handle); }
  sigmoid(): Tensor { return t1(O.sigmoid, this.handle); }
  relu(): Tensor { return t1(O.relu, this.handle); }
  /** GELU; 'none' is the exact erf form (SAM's nn.GELU default). */
  gelu(approximate: 'none' | 'tanh' = 'none'): Tensor { return t1(O.gelu, this.handle, approximate); }
  erf(): Tensor { return t1(O.erf, this.handle); }
  softplus(beta = 1, threshold = 20): Tensor { return t1(O.softplus, this.handle, beta, threshold); }
  floor(): Tensor { return t1(O.floor, this.handle); }
  ceil(): Tensor { return t1(O.ceil, this.handle); }
  round(): Tensor { return t1(O.round, this.handle); }
  sign(): Tensor { return t1(O.sign, this.handle); }
  reciprocal(): Tensor { return t1(O.reciprocal, this.handle); }
  clamp(min: number | null, max: number | null = null): Tensor { return t1(O.clamp, this.handle, min, max); }
  maximum(o: Tensor): Tensor { return t1(O.maximum, this.handle, o.handle); }
  minimum(o: Tensor): Tensor { return t1(O.minimum, this.handle, o.handle); }

  // -- comparisons -------------------------------------------------------------------------
  eq(o: TensorOrScalar): Tensor { return o instanceof Tensor ? t1(O.eq, this.handle, o.handle) : t1(O.eqS, this.handle, o); }
  ne(o: TensorOrScalar): Tensor { return o instanceof Tensor ? t1(O.ne, this.handle, o.handle) : t1(O.neS, this.handle, o); }
  lt(o: TensorOrScalar): Tensor { return o instanceof Tensor ? t1(O.lt, this.handle, o.handle) : t1(O.ltS, this.handle, o); }
  le(o: TensorOrScalar): Tensor { return o instanceof Tensor ? t1(O.le, this.handle, o.handle) : t1(O.leS, this.handle, o); }
  gt(o: TensorOrScalar): Tensor { return o instanceof Tensor ? t1(O.gt, this.handle, o.handle) : t1(O.gtS, this.handle, o); }
  ge(o: TensorOrScalar): Tensor { return o instanceof Tensor ? t1(O.ge, this.handle, o.handle) : t1(O.geS, this.handle, o); }
  logicalAnd(o: Tensor): Tensor { return t1(O.logicalAnd, this.handle, o.handle); }
  logicalOr(o: Tensor): Tensor { return t1(O.logicalOr, this.handle, o.handle); }
  logicalNot(): Tensor { return t1(O.logicalNot, this.handle); }
  isnan(): Tensor { return t1(O.isnan, this.handle); }
  any(): Tensor { return t1(O.any, this.handle); }
  all(): Tensor { return t1(O.all, this.handle); }

  // -- reductions --------------------------------------------------------------------------
  sum(dim?: number | number[], keepdim = false): Tensor {
    return dim === undefined ? t1(O.sumAll, this.handle) : t1(O.sumDim, this.handle, dim, keepdim);
  }
  mean(dim?: number | number[], keepdim = false): Tensor {
    return dim === undefined ? t1(O.meanAll, this.handle) : t1(O.meanDim, this.handle, dim, keepdim);
  }
  /** Max over everything (no dim) or the values along dim. */
  max(dim?: number, keepdim = false): Tensor {
    if (dim === undefined) return t1(O.maxAll, this.handle);
    const [v, i] = tN(O.maxDim, this.handle, dim, keepdim);
    i.dispose();
    return v;
  }
  min(dim?: number, keepdim = false): Tensor {
    if (dim === undefined) return t1(O.minAll, this.handle);
    const [v, i] = tN(O.minDim, this.handle, dim, keepdim);
    i.dispose();
    return v;
  }
  /** [values, indices] along dim. */
  maxWithIndices(dim: number, keepdim = false): [Tensor, Tensor] { return tN(O.maxDim, this.handle, dim, keepdim) as [Tensor, Tensor]; }
  amax(dim: number | number[], keepdim = false): Tensor { return t1(O.amax, this.handle, dim, keepdim); }
  amin(dim: number | number[], keepdim = false): Tensor { return t1(O.amin, this.handle, dim, keepdim); }
  argmax(dim?: number, keepdim = false): Tensor { return t1(O.argmax, this.handle, dim ?? null, keepdim); }
  argmin(dim?: number, keepdim = false): Tensor { return t1(O.argmin, this.handle, dim ?? null, keepdim); }
  /** Variance with Bessel's correction by default (correction = 1), as torch.var. */
  var(dim?: number | number[], opts: { correction?: number; keepdim?: boolean } = {}): Tensor {
    return t1(O.var, this.handle, dim ?? null, opts.correction ?? 1, opts.keepdim ?? false);
  }
  std(dim?: number | number[], opts: { correction?: number; keepdim?: boolean } = {}): Tensor {
    return t1(O.std, this.handle, dim ?? null, opts.correction ?? 1, opts.keepdim ?? false);
  }
  norm(p = 2, dim?: number | number[], keepdim = false): Tensor { return t1(O.norm, this.handle, p, dim ?? null, keepdim); }
  logsumexp(dim: number | number[], keepdim = false): Tensor { return t1(O.logsumexp, this.handle, dim, keepdim); }
  cumsum(dim: number): Tensor { return t1(O.cumsum, this.handle, dim); }
  prod(): Tensor { return t1(O.prod, this.handle); }

  // -- shape -------------------------------------------------------------------------------
  reshape(...shape: number[]): Tensor { return t1(O.reshape, this.handle, shape); }
  view(...shape: number[]): Tensor { return t1(O.view, this.handle, shape); }
  permute(...dims: number[]): Tensor { return t1(O.permute, this.handle, dims); }
  transpose(a: number, b: number): Tensor { return t1(O.transpose, this.handle, a, b); }
  flatten(start = 0, end = -1): Tensor { return t1(O.flatten, this.handle, start, end); }
  unsqueeze(dim: number): Tensor { return t1(O.unsqueeze, this.handle, dim); }
  squeeze(dim?: number): Tensor { return dim === undefined ? t1(O.squeeze, this.handle) : t1(O.squeezeDim, this.handle, dim); }
  narrow(dim: number, start: number, length: number): Tensor { return t1(O.narrow, this.handle, dim, start, length); }
  /** Python's x[..., start:end:step] along dim (end may be null for "to the end"). */
  slice(dim: number, start: number | null, end: number | null = null, step = 1): Tensor {
    return t1(O.slice, this.handle, dim, start, end, step);
  }
  select(dim: number, index: number): Tensor { return t1(O.select, this.handle, dim, index); }
  indexSelect(dim: number, index: Tensor): Tensor { return t1(O.indexSelect, this.handle, dim, index.handle); }
  gather(dim: number, index: Tensor): Tensor { return t1(O.gather, this.handle, dim, index.handle, false); }
  /** Advanced indexing x[i0, i1, ...] with index tensors (null = ':'). */
  index(indices: Array<Tensor | null>): Tensor { return t1(O.index, this.handle, indices.map((t) => (t ? t.handle : null))); }
  /** Out-of-place index_add: self with source rows added at index along dim. */
  indexAdd(dim: number, index: Tensor, source: Tensor): Tensor { return t1(O.indexAdd, this.handle, dim, index.handle, source.handle, 1); }
  indexCopy(dim: number, index: Tensor, source: Tensor): Tensor { return t1(O.indexCopy, this.handle, dim, index.handle, source.handle); }
  scatter(dim: number, index: Tensor, src: Tensor): Tensor { return t1(O.scatter, this.handle, dim, index.handle, src.handle); }
  split(size: number | number[], dim = 0): Tensor[] {
    return typeof size === 'number' ? tN(O.split, this.handle, size, dim) : tN(O.splitSizes, this.handle, size, dim);
  }
  chunk(n: number, dim = 0): Tensor[] { return tN(O.chunk, this.handle, n, dim); }
  repeat(...times: number[]): Tensor { return t1(O.repeat, this.handle, times); }
  expand(...shape: number[]): Tensor { return t1(O.expand, this.handle, shape, false); }
  contiguous(): Tensor { return t1(O.contiguous, this.handle, 0); }
  clone(): Tensor { return t1(O.clone, this.handle, null); }
  flip(...dims: number[]): Tensor { return t1(O.flip, this.handle, dims); }
  roll(shifts: number | number[], dims: number | number[]): Tensor { return t1(O.roll, this.handle, shifts, dims); }
  tril(diagonal = 0): Tensor { return t1(O.tril, this.handle, diagonal); }
  triu(diagonal = 0): Tensor { return t1(O.triu, this.handle, diagonal); }
  to(target: DType | Device): Tensor {
    if (target in DTYPE_CODE) return t1(O.toDtype, this.handle, DTYPE_CODE[target as DType], false, false, null);
    return t1(O.toDevice, this.handle, target, native.meta(this.handle)[1], false, false, null);
  }
  /** As float32 (a new handle on the same data, no copy, when it already is). */
  float(): Tensor { return this.to('float32'); }
  /**
   * `this.data = src` (torch's set_data): this tensor object, its handle and requires_grad stay, its
   * data, device and dtype become src's. How Module.to() moves parameters without replacing them.
   */
  setData(src: Tensor): this { native.setData(this.handle, src.handle); return this; }

  // -- linear algebra ----------------------------------------------------------------------
  matmul(o: Tensor): Tensor { return t1(O.matmul, this.handle, o.handle); }
  mm(o: Tensor): Tensor { return t1(O.mm, this.handle, o.handle); }
  bmm(o: Tensor): Tensor { return t1(O.bmm, this.handle, o.handle); }
  outer(o: Tensor): Tensor { return t1(O.outer, this.handle, o.handle); }

  // -- softmax family ----------------------------------------------------------------------
  /** Inside autocast a bf16/fp16 input is computed (and returned) in fp32. */
  softmax(dim: number): Tensor { return t1(O.softmax, this.handle, dim, fp32Arg(this)); }
  logSoftmax(dim: number): Tensor { return t1(O.logSoftmax, this.handle, dim, fp32Arg(this)); }
  /** [values, indices] of the k largest (or smallest) along dim. */
  topk(k: number, dim = -1, largest = true, sorted = true): [Tensor, Tensor] {
    return tN(O.topk, this.handle, k, dim, largest, sorted) as [Tensor, Tensor];
  }
  sort(dim = -1, descending = false): [Tensor, Tensor] { return tN(O.sort, this.handle, dim, descending) as [Tensor, Tensor]; }
  oneHot(numClasses = -1): Tensor { return t1(O.oneHot, this.handle, numClasses); }
  nonzero(): Tensor { return t1(O.nonzero, this.handle); }

  // -- in place (optimizers, initialisation; no new tensor is created) ---------------------
  add_(o: TensorOrScalar, alpha = 1): this {
    if (o instanceof Tensor) cv(O.addInplace, this.handle, o.handle, alpha);
    else cv(O.addInplaceS, this.handle, o, alpha);
    return this;
  }
  mul_(o: TensorOrScalar): this {
    if (o instanceof Tensor) cv(O.mulInplace, this.handle, o.handle);
    else cv(O.mulInplaceS, this.handle, o);
    return this;
  }
  div_(o: TensorOrScalar): this {
    if (o instanceof Tensor) cv(O.divInplace, this.handle, o.handle);
    else cv(O.divInplaceS, this.handle, o);
    return this;
  }
  addcmul_(a: Tensor, b: Tensor, value = 1): this { cv(O.addcmulInplace, this.handle, a.handle, b.handle, value); return this; }
  addcdiv_(a: Tensor, b: Tensor, value = 1): this { cv(O.addcdivInplace, this.handle, a.handle, b.handle, value); return this; }
  lerp_(end: Tensor, weight: number): this { cv(O.lerpInplace, this.handle, end.handle, weight); return this; }
  copy_(src: Tensor): this { cv(O.copyInplace, this.handle, src.handle, false); return this; }
  zero_(): this { cv(O.zeroInplace, this.handle); return this; }
  fill_(v: number): this { cv(O.fillInplace, this.handle, v); return this; }
  clamp_(min: number | null, max: number | null = null): this { cv(O.clampInplace, this.handle, min, max); return this; }
  sqrt_(): this { cv(O.sqrtInplace, this.handle); return this; }
  uniform_(from = 0, to = 1): this { cv(O.uniformInplace, this.handle, from, to, null); return this; }
  normal_(mean = 0, std = 1): this { cv(O.normalInplace, this.handle, mean, std, null); return this; }

  toString(): string {
    return this.isDisposed ? 'Tensor(disposed)' : `Tensor(shape=[${this.shape}], dtype=${this.dtype}, device=${this.device})`;
  }
}

// ---------------------------------------------------------------------------------------------
// Creation.

export interface CreateOpts { dtype?: DType; device?: Device; requiresGrad?: boolean }

function finish(t: Tensor, o: CreateOpts): Tensor {
  if (audit && o.device) audit.placed.set(t.handle, true);
  if (o.device && o.device !== 'cpu') {
    const m = t.to(o.device);
    t.dispose();
    t = m;
  }
  if (o.requiresGrad) t.requiresGrad = true;
  return t;
}

/** Host arrays for the dtypes whose bytes libtorch takes directly; null for the others. */
function hostArray(data: readonly number[], dtype: DType): ArrayBufferView | null {
  switch (dtype) {
    case 'float32': return new Float32Array(data);
    case 'float64': return new Float64Array(data);
    case 'int64': return BigInt64Array.from(data, (x) => BigInt(Math.trunc(x)));
    case 'int32': return new Int32Array(data);
    case 'uint8': case 'bool': return new Uint8Array(data);
    default: return null;  // float16, bfloat16, int16, int8: made from float32
  }
}

function convert(t: Tensor, dtype: DType, opts: CreateOpts): Tensor {
  const c = t.to(dtype);
  t.dispose();
  return finish(c, opts);
}

/**
 * A tensor from a typed array (copied; its own dtype unless opts.dtype converts it, and a
 * Uint8Array may be read as 'bool') or a flat number array (float32 unless opts.dtype).
 */
export function tensor(data: ArrayBufferView | readonly number[], shape?: readonly number[], opts: CreateOpts = {}): Tensor {
  if (!ArrayBuffer.isView(data)) {
    const dtype = opts.dtype ?? 'float32';
    const arr = hostArray(data, dtype);
    if (!arr) return convert(tensor(data, shape), dtype, opts);
    return finish(new Tensor(native.fromBuffer(arr, shape ?? [data.length], DTYPE_CODE[dtype])), opts);
  }
  const own = dtypeOfArray(data);
  const dtype = opts.dtype ?? own;
  if (dtype === 'bool' && own !== 'uint8') throw new Error('bool tensors take a Uint8Array of 0/1');
  const stored: DType = dtype === 'bool' ? 'bool' : own;
  const t = new Tensor(native.fromBuffer(data, shape ?? [data.byteLength / DTYPE_BYTES[own]], DTYPE_CODE[stored]));
  return stored === dtype ? finish(t, opts) : convert(t, dtype, opts);
}

export function scalarTensor(v: number, opts: CreateOpts = {}): Tensor {
  return full([], v, opts);
}

const C = {
  zeros: lookup('aten::zeros'), ones: lookup('aten::ones'), full: lookup('aten::full'), empty: lookup('aten::empty.memory_format'),
  arange: lookup('aten::arange.start_step'), linspace: lookup('aten::linspace'), randn: lookup('aten::randn'),
  rand: lookup('aten::rand'), randint: lookup('aten::randint.low'), eye: lookup('aten::eye'), randperm: lookup('aten::randperm'),
  zerosLike: lookup('aten::zeros_like'), onesLike: lookup('aten::ones_like'), randnLike: lookup('aten::randn_like'),
  fullLike: lookup('aten::full_like'),
};

const dt = (o: CreateOpts, d: DType = 'float32') => DTYPE_CODE[o.dtype ?? d];
const dev = (o: CreateOpts) => o.device ?? null;

export function zeros(shape: readonly number[], o: CreateOpts = {}): Tensor {
  return finish(t1(C.zeros, shape as number[], dt(o), null, dev(o), null), { requiresGrad: o.requiresGrad });
}
export function ones(shape: readonly number[], o: CreateOpts = {}): Tensor {
  return finish(t1(C.ones, shape as number[], dt(o), null, dev(o), null), { requiresGrad: o.requiresGrad });
}
export function full(shape: readonly number[], value: number, o: CreateOpts = {}): Tensor {
  return finish(t1(C.full, shape as number[], value, dt(o), null, dev(o), null), { requiresGrad: o.requiresGrad });
}
export function empty(shape: readonly number[], o: CreateOpts = {}): Tensor {
  return finish(t1(C.empty, shape as number[], dt(o), null, dev(o), null, null), { requiresGrad: o.requiresGrad });
}
export function arange(start: number, end?: number, step = 1, o: CreateOpts = {}): Tensor {
  if (end === undefined) { end = start; start = 0; }
  const d = o.dtype ?? (Number.isInteger(start) && Number.isInteger(end) && Number.isInteger(step) ? 'int64' : 'float32');
  return finish(t1(C.arange, start, end, step, DTYPE_CODE[d], null, dev(o), null), { requiresGrad: o.requiresGrad });
}
export function linspace(start: number, end: number, steps: number, o: CreateOpts = {}): Tensor {
  return finish(t1(C.linspace, start, end, steps, dt(o), null, dev(o), null), { requiresGrad: o.requiresGrad });
}
export function randn(shape: readonly number[], o: CreateOpts = {}): Tensor {
  return finish(t1(C.randn, shape as number[], dt(o), null, dev(o), null), { requiresGrad: o.requiresGrad });
}
export function rand(shape: readonly number[], o: CreateOpts = {}): Tensor {
  return finish(t1(C.rand, shape as number[], dt(o), null, dev(o), null), { requiresGrad: o.requiresGrad });
}
export function randint(low: number, high: number, shape: readonly number[], o: CreateOpts = {}): Tensor {
  return finish(t1(C.randint, low, high, shape as number[], dt(o, 'int64'), null, dev(o), null), {});
}
export function randperm(n: number, o: CreateOpts = {}): Tensor {
  return t1(C.randperm, n, dt(o, 'int64'), null, dev(o), null);
}
export function eye(n: number, o: CreateOpts = {}): Tensor {
  return finish(t1(C.eye, n, dt(o), null, dev(o), null), { requiresGrad: o.requiresGrad });
}
export function zerosLike(t: Tensor): Tensor { return t1(C.zerosLike, t.handle, null, null, null, null, null); }
export function onesLike(t: Tensor): Tensor { return t1(C.onesLike, t.handle, null, null, null, null, null); }
export function randnLike(t: Tensor): Tensor { return t1(C.randnLike, t.handle, null, null, null, null, null); }
export function fullLike(t: Tensor, v: number): Tensor { return t1(C.fullLike, t.handle, v, null, null, null, null, null); }

// ---------------------------------------------------------------------------------------------
// Multi-tensor functions.

export function cat(ts: readonly Tensor[], dim = 0): Tensor { return t1(O.cat, ts.map((t) => t.handle), dim); }
export function stack(ts: readonly Tensor[], dim = 0): Tensor { return t1(O.stack, ts.map((t) => t.handle), dim); }
export function where(cond: Tensor, a: TensorOrScalar, b: TensorOrScalar): Tensor {
  if (a instanceof Tensor && b instanceof Tensor) return t1(O.where, cond.handle, a.handle, b.handle);
  if (a instanceof Tensor) return t1(O.whereSO, cond.handle, a.handle, b as number);
  if (b instanceof Tensor) return t1(O.whereSS, cond.handle, a, b.handle);
  const ta = fullLike(cond.to('float32'), a);
  try { return t1(O.whereSO, cond.handle, ta.handle, b); } finally { ta.dispose(); }
}
export function einsum(eq: string, ...ts: Tensor[]): Tensor { return t1(O.einsum, eq, ts.map((t) => t.handle)); }

export { isFloating };
