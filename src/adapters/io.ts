// Adapter files: `adapter.safetensors` (the adapter tensors and any other trained part, e.g. the
// mask decoder, under their model names) + `adapter_config.json` (method, options, α, derived ops,
// the base checkpoint's SHA-256). Plain LoRA also exports in Hugging Face PEFT's layout.
import { createHash } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { markPlaced, tensor, tidy, type Device, type Module, type Tensor } from '../engine/index.js';
import { writeFileAtomic } from '../io/atomic.js';
import { openSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { DType, RawTensor } from '../io/raw.js';
import { findAdapters, injectAdapters, nasCells, type InjectedLayer } from './inject.js';
import { partOf, type Part } from './parts.js';
import { getMethod, type AdapterConfig } from './registry.js';

export const ADAPTER_FILE = 'adapter.safetensors';
export const CONFIG_FILE = 'adapter_config.json';
export const FORMAT = 'naslora-adapter/1';

export interface CellRecord {
  path: string; ops: string[]; alpha: number[]; derived: string | null; reparameterized: boolean; others?: Array<{ op: string; w: number }>; size?: number;
  /** Ops still in the search (absent: all); a folded cell lives in lora_B (B·M) and is not computed. */
  active?: boolean[]; folded?: boolean;
}

export interface AdapterFileConfig {
  format: typeof FORMAT;
  method: AdapterConfig;
  /** Model parts whose weights are in the file (adapter parts, and e.g. 'decoder'). */
  parts: Part[];
  layers: string[];
  cells: CellRecord[];
  base: { sha256: string | null; file: string | null };
  created: string;
  /**
   * Multi-class models: the classes (K = names.length) whose heads (mask_decoder.class_tokens and
   * class_hypernetworks_mlps, in the decoder part) are in the file; absent for binary models.
   */
  classes?: AdapterClasses;
  /** How training prepared its inputs (data.image_size, data.resize): prompt-free prediction and eval repeat it. Absent in older files. */
  input?: AdapterInput;
}

export interface AdapterInput { image_size: number; resize: 'squash' | 'longest-pad' }

export interface AdapterClasses { names: string[]; colours: Array<[number, number, number]> | null; ignore_index: number | null }

/** A model whose mask decoder can grow class heads (SAM's). */
interface WithClassHeads { mask_decoder: { addClassHeads(k: number): void; numClasses: number } }

/** SHA-256 of a file, streamed. */
export function sha256File(file: string): string {
  const h = createHash('sha256');
  const fd = fs.openSync(file, 'r');
  try {
    const buf = Buffer.alloc(8 << 20);
    let n: number;
    while ((n = fs.readSync(fd, buf, 0, buf.length, null)) > 0) h.update(buf.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
  return h.digest('hex');
}

export function toRaw(t: Tensor): RawTensor {
  return tidy(() => ({ dtype: t.dtype, shape: t.shape, data: t.contiguous().toBytes() }));
}

export function fromRaw(r: { dtype: DType; shape: number[]; data: Uint8Array }): Tensor {
  const b = new Uint8Array(r.data).buffer;  // own, aligned copy
  switch (r.dtype) {
    case 'float32': return tensor(new Float32Array(b), r.shape);
    case 'float64': return tensor(new Float64Array(b), r.shape);
    case 'int64': return tensor(new BigInt64Array(b), r.shape);
    case 'int32': return tensor(new Int32Array(b), r.shape);
    case 'uint8': case 'bool': return tensor(new Uint8Array(b), r.shape, { dtype: r.dtype });
    default: throw new Error(`tensors of dtype ${r.dtype} are not supported here`);
  }
}

/**
 * Saves the adapter: every parameter of the given parts (default: all adapter parts plus every
 * other part that is trainable now) and the cells' state.
 */
export function saveAdapter(dir: string, model: Module, method: AdapterConfig, o: { parts?: Part[]; baseFile?: string | null; baseSha256?: string | null; classes?: AdapterClasses | null; input?: AdapterInput | null } = {}): AdapterFileConfig {
  const layers = findAdapters(model);
  const params = model.namedParameters();
  // Default: the adapter's own parts, plus any other part that trains now (never the frozen encoder).
  const parts = o.parts ?? [...new Set(params
    .filter(([n, p]) => p.requiresGrad || ['lora', 'ops', 'alpha'].includes(partOf(n)))
    .map(([n]) => partOf(n)))].filter((p) => p !== 'encoder');
  const tensors: Array<[string, RawTensor]> = params.filter(([n]) => parts.includes(partOf(n))).map(([n, p]) => [n, toRaw(p)]);
  const cells: CellRecord[] = nasCells(layers).map(({ path: p, cell, branch }) => {
    const rec: CellRecord = {
      path: p, ops: cell.candidates.map((c) => c.name), alpha: [...cell.alpha.toArray()], derived: cell.derived,
      reparameterized: cell.reparam !== null, active: [...cell.active], folded: branch.folded,
    };
    if (cell.reparam) {
      rec.size = cell.reparam.size;
      rec.others = cell.reparam.others.map(({ op, w }) => ({ op: op.name, w }));
      if (cell.reparam.kernel) tensors.push([`${p}.reparam_kernel`, toRaw(cell.reparam.kernel)]);
    }
    return rec;
  });
  const cfg: AdapterFileConfig = {
    format: FORMAT, method, parts, layers: layers.map((l) => l.path), cells,
    base: { sha256: o.baseSha256 ?? (o.baseFile ? sha256File(o.baseFile) : null), file: o.baseFile ? path.basename(o.baseFile) : null },
    created: new Date().toISOString(),
    ...(o.classes ? { classes: o.classes } : {}),
    ...(o.input ? { input: o.input } : {}),
  };
  if (o.classes && !parts.includes('decoder')) throw new Error(`saveAdapter: a multi-class model's class heads are in the decoder part; parts ${parts.join(', ')} leave them out`);
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, ADAPTER_FILE), tensors, { format: 'pt', naslora: FORMAT });
  writeFileAtomic(path.join(dir, CONFIG_FILE), JSON.stringify(cfg, null, 2) + '\n');
  return cfg;
}

export function readAdapterConfig(dir: string): AdapterFileConfig {
  const file = path.join(dir, CONFIG_FILE);
  if (!fs.existsSync(file)) throw new Error(`${dir}: no ${CONFIG_FILE} (not a naslora adapter folder)`);
  let cfg: AdapterFileConfig;
  try {
    cfg = JSON.parse(fs.readFileSync(file, 'utf8')) as AdapterFileConfig;
  } catch (e) {
    throw new Error(`${file}: not valid JSON (${(e as Error).message})`);
  }
  if (cfg.format !== FORMAT) throw new Error(`${file}: format '${String(cfg.format)}' is not ${FORMAT}`);
  if (!cfg.method || typeof cfg.method.name !== 'string') throw new Error(`${file}: no method`);
  getMethod(cfg.method.name);  // throws for unknown methods, naming the known ones
  if (cfg.classes !== undefined && !(Array.isArray(cfg.classes?.names) && cfg.classes.names.length >= 2 && cfg.classes.names.every((n) => typeof n === 'string')))
    throw new Error(`${file}: classes needs names for 2 or more classes`);
  return cfg;
}

/**
 * Puts the adapter into a plain model (injects its layers, loads its tensors, restores the
 * cells). Checks the base checkpoint's hash when both are known, and every name and shape,
 * before changing the model's weights.
 */
export function loadAdapter(dir: string, model: Module, o: { baseSha256?: string | null; config?: AdapterFileConfig } = {}): { config: AdapterFileConfig; layers: InjectedLayer[] } {
  const cfg = o.config ?? readAdapterConfig(dir);  // callers that looked at it first pass what they read
  if (cfg.base.sha256 && o.baseSha256 && cfg.base.sha256 !== o.baseSha256) {
    throw new Error(`adapter ${dir} was trained on a different base checkpoint (sha256 ${cfg.base.sha256.slice(0, 12)}…, this one is ${o.baseSha256.slice(0, 12)}…)`);
  }
  if (!fs.existsSync(path.join(dir, ADAPTER_FILE))) throw new Error(`${dir}: ${ADAPTER_FILE} is missing`);
  if (findAdapters(model).length) throw new Error('the model already has adapters');
  if (cfg.classes) {
    // A multi-class adapter brings its K class heads: the decoder grows them, then they are loaded.
    const dec = (model as unknown as Partial<WithClassHeads>).mask_decoder;
    if (!dec?.addClassHeads) throw new Error(`adapter ${dir} is multi-class (${cfg.classes.names.length} classes) and this model has no mask decoder to hold the class heads`);
    if (dec.numClasses === 0) dec.addClassHeads(cfg.classes.names.length);
    else if (dec.numClasses !== cfg.classes.names.length) throw new Error(`adapter ${dir} has ${cfg.classes.names.length} classes; the model's decoder already has ${dec.numClasses} class heads`);
  }
  const layers = injectAdapters(model, cfg.method);
  restore(dir, cfg, model, layers);
  return { config: cfg, layers };
}

/** Restores saved adapter tensors and cell states into a model that already has the adapters. */
export function loadAdapterState(dir: string, model: Module): AdapterFileConfig {
  const cfg = readAdapterConfig(dir);
  restore(dir, cfg, model, findAdapters(model));
  return cfg;
}

function restore(dir: string, cfg: AdapterFileConfig, model: Module, layers: InjectedLayer[]): void {
  const src = openSafetensors(path.join(dir, ADAPTER_FILE));
  try {
    const own = new Map(model.namedParameters());
    const kernels = new Map<string, string>(cfg.cells.filter((c) => c.reparameterized).map((c) => [c.path, `${c.path}.reparam_kernel`]));
    const kernelNames = new Set(kernels.values());
    const problems: string[] = [];
    for (const k of src.keys()) {
      if (kernelNames.has(k)) continue;
      const p = own.get(k);
      const t = src.get(k)!;
      if (!p) problems.push(`unexpected tensor '${k}'`);
      else if (p.shape.join(',') !== t.shape.join(',')) problems.push(`'${k}' has shape [${t.shape}], the model needs [${p.shape}]`);
    }
    for (const [n] of own) if (cfg.parts.includes(partOf(n)) && !src.get(n)) problems.push(`missing tensor '${n}'`);
    if (problems.length) throw new Error(`adapter ${dir} does not fit this model: ${problems.slice(0, 10).join('; ')}${problems.length > 10 ? ` (+${problems.length - 10} more)` : ''}`);
    const read = (k: string) => { const l = src.get(k)!; return fromRaw({ ...l, data: l.read() }).keep(); };
    const sd = new Map<string, Tensor>();
    for (const k of src.keys()) if (!kernelNames.has(k)) sd.set(k, read(k));
    model.loadStateDict(sd, false);
    for (const t of sd.values()) t.dispose();
    const cellsByPath = new Map(nasCells(layers).map((c) => [c.path, c]));
    for (const rec of cfg.cells) {
      const found = cellsByPath.get(rec.path);
      if (!found) throw new Error(`adapter ${dir}: cell ${rec.path} is not in the model`);
      const { cell, branch } = found;
      if (rec.active) {
        if (rec.active.length !== cell.candidates.length) throw new Error(`adapter ${dir}: cell ${rec.path} lists ${rec.active.length} active flags for ${cell.candidates.length} ops`);
        cell.active = [...rec.active];
      }
      if (rec.derived) {
        cell.discretize();
        cell.derived = rec.derived;  // the saved choice wins over a tie in α
      }
      if (rec.folded) {
        // lora_B was saved with the cell folded into it (B·M): mark it, do not fold again.
        if (!rec.derived) throw new Error(`adapter ${dir}: cell ${rec.path} is folded but has no derived op`);
        branch.folded = true;
        cell.requiresGrad_(false);
      }
      if (rec.reparameterized) {
        cell.reparam?.kernel?.dispose();
        // Read onto the CPU; the kernel lives where the cell does (a model already moved to a GPU).
        const onCellDevice = (t: Tensor): Tensor => {
          const d = cell.alpha.device;
          if (t.device === d) {
            markPlaced(t);
            return t;
          }
          const m = t.to(d as Device).keep();
          t.dispose();
          return m;
        };
        cell.reparam = {
          kernel: src.get(kernels.get(rec.path)!) ? onCellDevice(read(kernels.get(rec.path)!)) : null, size: rec.size ?? 1,
          others: (rec.others ?? []).map(({ op, w }) => ({ op: cell.candidates.find((c) => c.name === op)!, w })),
        };
      }
    }
  } finally {
    src.close();
  }
}

/**
 * Hugging Face PEFT layout for plain LoRA on the fused qkv of SAM's vision encoder:
 * adapter_model.safetensors with base_model.model.vision_encoder.layers.{i}.attn.qkv.lora_A/B.weight.
 */
export function exportPeft(dir: string, model: Module, method: AdapterConfig, baseName = 'facebook/sam-vit-base'): void {
  if (method.name !== 'lora') throw new Error(`PEFT export is for plain LoRA; '${method.name}' keeps a spatial branch PEFT cannot represent`);
  if (method.qv_only) throw new Error('PEFT export needs LoRA on the whole fused qkv (qv_only slices have no PEFT equivalent)');
  const tensors: Array<[string, RawTensor]> = [];
  for (const { path: p, layer } of findAdapters(model)) {
    const m = /^image_encoder\.blocks\.(\d+)\.attn\.qkv$/.exec(p);
    if (!m) throw new Error(`PEFT export supports adapters on image_encoder.blocks.N.attn.qkv only, not ${p}`);
    const b = layer.branches[0];
    tensors.push([`base_model.model.vision_encoder.layers.${m[1]}.attn.qkv.lora_A.weight`, toRaw(b.A.weight)]);
    tensors.push([`base_model.model.vision_encoder.layers.${m[1]}.attn.qkv.lora_B.weight`, toRaw(b.B.weight)]);
  }
  const cfg = {
    peft_type: 'LORA', task_type: null, base_model_name_or_path: baseName, r: method.rank, lora_alpha: method.lora_alpha,
    lora_dropout: method.dropout, target_modules: ['qkv'], bias: 'none', fan_in_fan_out: false, inference_mode: true,
    init_lora_weights: true, modules_to_save: null, layers_to_transform: null, layers_pattern: null, revision: null,
  };
  fs.mkdirSync(dir, { recursive: true });
  writeSafetensors(path.join(dir, 'adapter_model.safetensors'), tensors, { format: 'pt' });
  writeFileAtomic(path.join(dir, 'adapter_config.json'), JSON.stringify(cfg, null, 2) + '\n');
}

/** Merges every adapter into W0 when all can merge exactly; otherwise names those that cannot. */
export function mergeAll(layers: InjectedLayer[]): void {
  const stuck = layers.filter((l) => !l.layer.mergeable()).map((l) => l.path);
  if (stuck.length) {
    throw new Error(`cannot merge exactly: ${stuck.length} layer(s) keep a spatial branch (${stuck.join(', ')}); ` +
      `export --format adapter writes the re-parameterized adapter instead`);
  }
  for (const l of layers) l.layer.merge();
}
