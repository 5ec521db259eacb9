// Optimizer state to and from files, exactly (tensors in safetensors, counters in JSON).
import * as path from 'node:path';
import type { Optimizer, OptimizerState, Tensor } from '../engine/index.js';
import { fromRaw, toRaw } from '../adapters/io.js';
import { readSafetensors, writeSafetensors } from '../io/safetensors.js';
import type { RawTensor } from '../io/raw.js';

export interface SavedOptimizers { [name: string]: { groups: OptimizerState['groups']; steps: number[] } }

export function saveOptimizers(dir: string, opts: Record<string, Optimizer<object> | null>): SavedOptimizers {
  const tensors: Array<[string, RawTensor]> = [];
  const meta: SavedOptimizers = {};
  for (const [name, opt] of Object.entries(opts)) {
    if (!opt) continue;
    const s = opt.stateDict();
    meta[name] = { groups: s.groups, steps: s.params.map((p) => p.step) };
    s.params.forEach((p, i) => {
      for (const [k, t] of Object.entries(p.tensors)) {
        tensors.push([`${name}.${i}.${k}`, toRaw(t)]);
        t.dispose();
      }
    });
  }
  writeSafetensors(path.join(dir, 'optimizer.safetensors'), tensors);
  return meta;
}

export function loadOptimizers(dir: string, meta: SavedOptimizers, opts: Record<string, Optimizer<object> | null>): void {
  const { tensors } = readSafetensors(path.join(dir, 'optimizer.safetensors'));
  for (const [name, opt] of Object.entries(opts)) {
    if (!opt) continue;
    const m = meta[name];
    if (!m) throw new Error(`checkpoint has no state for optimizer '${name}'`);
    const params: OptimizerState['params'] = m.steps.map((step, i) => {
      const ts: Record<string, Tensor> = {};
      for (const [k, r] of tensors) {
        const pre = `${name}.${i}.`;
        if (k.startsWith(pre)) ts[k.slice(pre.length)] = fromRaw(r).keep();
      }
      return { step, tensors: ts };
    });
    opt.loadStateDict({ groups: m.groups, params });
    for (const p of params) for (const t of Object.values(p.tensors)) t.dispose();
  }
}
