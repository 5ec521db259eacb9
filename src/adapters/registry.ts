// The adapter methods by name. A method is a folder that calls registerMethod(); nothing else in
// the code base lists the methods.
import type { Linear } from '../engine/index.js';
import type { AdapterLayer } from './base.js';

/** The method section of a run config (snake_case, as in the YAML). */
export interface AdapterConfig {
  name: string;
  rank: number;
  lora_alpha: number;
  dropout: number;
  /** Regex over module paths (segment-anything names) of the Linear layers to adapt. */
  targets: string;
  qv_only: boolean;
  ops: string[];
  alpha_init: number;
  /** NAS cells' conv initialisation (absent = 'default'). */
  ops_init?: 'default' | 'dirac';
  pc_k: number;
  experts: number;
  moe_loss_weight: number;
  gate_noise: boolean;
}

export const DEFAULT_TARGETS = '^image_encoder\\.blocks\\.\\d+\\.attn\\.qkv$';

export interface MethodSpec {
  name: string;
  description: string;
  /** Wraps one target layer; absent for methods without encoder adapters (decoder-only). */
  createLayer?(base: Linear, c: AdapterConfig): AdapterLayer;
  /** Whether the method has architecture weights α. */
  searchable: boolean;
}

const METHODS = new Map<string, MethodSpec>();

export function registerMethod(spec: MethodSpec): void { METHODS.set(spec.name, spec); }

export function getMethod(name: string): MethodSpec {
  const m = METHODS.get(name);
  if (!m) throw new Error(`unknown adapter method '${name}' (known: ${[...METHODS.keys()].join(', ')})`);
  return m;
}

export function methodNames(): string[] { return [...METHODS.keys()]; }
