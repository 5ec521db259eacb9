// `naslora inspect`: what a SAM checkpoint or an adapter folder holds, without building a model.
// Checkpoints: container, naming, the configuration inferred from the tensor shapes (and where
// each value came from), parameter counts per part. Adapters: method, targets, rank, α,
// trainable parameters per part, the state of each NAS cell, the base checkpoint's SHA-256.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { ADAPTER_FILE, partOf, readAdapterConfig, type Part } from '../../adapters/index.js';
import { openCheckpoint } from '../../io/pth.js';
import { numel } from '../../io/raw.js';
import { openSafetensors } from '../../io/safetensors.js';
import { inferSamConfig, samConfigFromMetadata, samTensors, type ConfigSource } from '../../model/sam/build.js';
import type { Naming } from '../../model/sam/naming.js';
import type { SamConfig } from '../../model/sam/sam.js';
import { readModelConfig } from './model_io.js';

export interface CheckpointReport {
  kind: 'checkpoint';
  file: string;
  bytes: number;
  container: 'pth' | 'safetensors';
  naming: Naming;
  tensors: number;
  dtypes: Record<string, number>;
  /** null values: not decidable from the shapes or metadata (pass --model-config). */
  config: Record<string, number | number[] | null>;
  sources: Record<string, ConfigSource | 'unknown'>;
  parameters: { image_encoder: number; prompt_encoder: number; mask_decoder: number; other: number; total: number };
  /** Tensors that are not SAM's (e.g. merged adapter weights). */
  unknown: string[];
}

export interface CellReport { path: string; state: 'search' | 'discretized' | 'reparameterized'; derived: string; weights: Record<string, number> }

export interface AdapterReport {
  kind: 'adapter';
  dir: string;
  method: string;
  targets: string;
  rank: number;
  alpha: number;
  options: Record<string, unknown>;
  layers: string[];
  trainable: Partial<Record<Part, number>> & { total: number };
  cells: CellReport[];
  base: { sha256: string | null; file: string | null };
  created: string;
  /** Multi-class adapters: class names by index and the ignore index; null for binary ones. */
  classes: { names: string[]; ignore_index: number | null } | null;
  /** Input size and resize of training (older adapters: null). */
  input: { image_size: number; resize: string } | null;
}

export function inspectCheckpoint(file: string, given: Partial<SamConfig> = {}): CheckpointReport {
  const src = openCheckpoint(file);
  try {
    const { tensors, naming } = samTensors(src);
    const shapes = new Map([...tensors].map(([k, t]) => [k, t.shape]));
    // decoder_heads cannot be read off shapes: without a given value or the checkpoint's own
    // configuration (metadata), infer the rest and report it unknown.
    const metadata = samConfigFromMetadata(src.metadata);
    let inf;
    let headsKnown = true;
    try {
      inf = inferSamConfig(shapes, given, metadata);
    } catch (e) {
      if (given.decoder_heads !== undefined || metadata || !/decoder_heads/.test((e as Error).message)) throw e;
      inf = inferSamConfig(shapes, { ...given, decoder_heads: 0 });
      headsKnown = false;
    }
    const config: Record<string, number | number[] | null> = { ...inf.config };
    const sources: Record<string, ConfigSource | 'unknown'> = { ...inf.sources };
    if (!headsKnown) { config.decoder_heads = null; sources.decoder_heads = 'unknown'; }
    const parameters = { image_encoder: 0, prompt_encoder: 0, mask_decoder: 0, other: 0, total: 0 };
    const unknown: string[] = [];
    for (const [k, t] of tensors) {
      const part = /^(image_encoder|prompt_encoder|mask_decoder)\./.exec(k)?.[1] as keyof typeof parameters | undefined;
      if (part) parameters[part] += numel(t.shape);
      else { parameters.other += numel(t.shape); unknown.push(k); }
      parameters.total += numel(t.shape);
    }
    const dtypes: Record<string, number> = {};
    for (const k of src.keys()) { const d = src.get(k)!.dtype; dtypes[d] = (dtypes[d] ?? 0) + 1; }
    return {
      kind: 'checkpoint', file, bytes: fs.statSync(file).size, container: src.format, naming,
      tensors: src.keys().length, dtypes, config, sources, parameters, unknown,
    };
  } finally {
    src.close();
  }
}

export function inspectAdapter(dir: string): AdapterReport {
  const cfg = readAdapterConfig(dir);
  const file = path.join(dir, ADAPTER_FILE);
  if (!fs.existsSync(file)) throw new Error(`${dir}: ${ADAPTER_FILE} is missing`);
  const src = openSafetensors(file);
  const trainable: Partial<Record<Part, number>> & { total: number } = { total: 0 };
  try {
    for (const k of src.keys()) {
      if (k.endsWith('.reparam_kernel')) continue; // derived from the ops, not trained
      const n = numel(src.get(k)!.shape), p = partOf(k);
      trainable[p] = (trainable[p] ?? 0) + n;
      trainable.total += n;
    }
  } finally {
    src.close();
  }
  const cells: CellReport[] = cfg.cells.map((c) => {
    // softmax(α): the mixing weights while searching; the saved choice once discretized.
    const mx = Math.max(...c.alpha), e = c.alpha.map((a) => Math.exp(a - mx)), s = e.reduce((a, b) => a + b, 0);
    const w = c.derived ? c.ops.map((op) => (op === c.derived ? 1 : 0)) : e.map((x) => x / s);
    return {
      path: c.path, state: c.reparameterized ? 'reparameterized' : c.derived ? 'discretized' : 'search',
      derived: c.derived ?? c.ops[w.indexOf(Math.max(...w))],
      weights: Object.fromEntries(c.ops.map((op, i) => [op, Math.round(w[i] * 1e4) / 1e4])),
    };
  });
  const { name, targets, rank, lora_alpha, ...options } = cfg.method;
  return {
    kind: 'adapter', dir, method: name, targets, rank, alpha: lora_alpha, options, layers: cfg.layers,
    trainable, cells, base: cfg.base, created: cfg.created,
    classes: cfg.classes ? { names: cfg.classes.names, ignore_index: cfg.classes.ignore_index } : null, input: cfg.input ?? null,
  };
}

function printCheckpoint(r: CheckpointReport): void {
  console.log(`${r.file}: ${r.container} container, ${(r.bytes / 2 ** 20).toFixed(1)} MiB, ${r.tensors} tensors (${Object.entries(r.dtypes).map(([d, n]) => `${n} ${d}`).join(', ')})`);
  console.log(`naming: ${r.naming}`);
  console.log('config (value  <- source):');
  for (const [k, v] of Object.entries(r.config)) {
    if (k === 'pixel_mean' || k === 'pixel_std') continue;
    const note = r.sources[k] === 'unknown' ? '  (not in the shapes nor the metadata: pass --model-config, e.g. the model_config.json that naslora pretrain writes)' : '';
    console.log(`  ${k.padEnd(20)} ${JSON.stringify(v).padEnd(16)} <- ${r.sources[k]}${note}`);
  }
  console.log('parameters:');
  for (const [k, v] of Object.entries(r.parameters)) if (k !== 'other' || v) console.log(`  ${k.padEnd(20)} ${String(v).padStart(12)}`);
  if (r.unknown.length) console.log(`not SAM tensors (${r.unknown.length}): ${r.unknown.slice(0, 10).join(', ')}${r.unknown.length > 10 ? ', …' : ''}`);
}

function printAdapter(r: AdapterReport): void {
  console.log(`${r.dir}: ${r.method} adapter on ${r.layers.length} layer(s) /${r.targets}/, rank ${r.rank}, alpha ${r.alpha}`);
  if (r.classes) console.log(`multi-class, ${r.classes.names.length} classes (prompt-free): ${r.classes.names.map((n, i) => `${i} ${n}`).join(', ')}${r.classes.ignore_index === null ? '' : `; ignore index ${r.classes.ignore_index}`}`);
  if (r.input) console.log(`trained at input size ${r.input.image_size}, resize ${r.input.resize}`);
  console.log(`options: ${Object.entries(r.options).map(([k, v]) => `${k}=${JSON.stringify(v)}`).join(' ')}`);
  console.log('trainable parameters:');
  for (const [k, v] of Object.entries(r.trainable)) if (k !== 'total') console.log(`  ${k.padEnd(15)} ${String(v).padStart(12)}`);
  console.log(`  ${'total'.padEnd(15)} ${String(r.trainable.total).padStart(12)}`);
  if (r.cells.length) {
    console.log('cells (derived op, state, weights):');
    for (const c of r.cells) {
      const w = Object.entries(c.weights).sort((a, b) => b[1] - a[1]).slice(0, 3).map(([op, x]) => `${op} ${x.toFixed(3)}`).join(', ');
      console.log(`  ${c.path}: ${c.derived} (${c.state}; ${w})`);
    }
  }
  console.log(`base checkpoint: ${r.base.file ?? '?'} sha256 ${r.base.sha256 ?? 'unknown'}`);
}

export function registerInspect(program: Command): void {
  program
    .command('inspect')
    .description('describe a SAM checkpoint (.pth / .safetensors) or an adapter folder')
    .argument('<path>', 'checkpoint file or adapter folder')
    .option('--model-config <json>', 'SAM config for values the shapes cannot tell (decoder_heads)')
    .option('--json', 'print the report as JSON')
    .action((p: string, o: { json?: boolean; modelConfig?: string }) => {
      if (!fs.existsSync(p)) throw new Error(`${p}: no such file or folder`);
      const r = fs.statSync(p).isDirectory() ? inspectAdapter(p) : inspectCheckpoint(p, readModelConfig(o.modelConfig));
      if (o.json) console.log(JSON.stringify(r, null, 2));
      else if (r.kind === 'checkpoint') printCheckpoint(r);
      else printAdapter(r);
    });
}
