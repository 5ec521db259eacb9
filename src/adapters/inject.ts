// Puts adapters into a model: every Linear whose module path matches the target regex is replaced
// (in its parent) by the method's adapter layer wrapping it.
import { Linear, type Module, type Tensor } from '../engine/index.js';
import { AdapterLayer } from './base.js';
import { ConvLoraLayer } from './conv_lora/layer.js';
import { NasLoraLayer, type NasBranch } from './nas_lora/layer.js';
import type { MixedCell } from './nas_lora/cell.js';
import { getMethod, type AdapterConfig } from './registry.js';

export interface InjectedLayer { path: string; layer: AdapterLayer }

export function injectAdapters(model: Module, c: AdapterConfig): InjectedLayer[] {
  const spec = getMethod(c.name);
  if (!spec.createLayer) return [];
  const re = new RegExp(c.targets);
  const targets = [...model.namedModules()].filter(([p, m]) => re.test(p) && m instanceof Linear) as Array<[string, Linear]>;
  if (!targets.length) throw new Error(`adapter targets /${c.targets}/ match no Linear layer of the model`);
  const byPath = new Map(model.namedModules());
  return targets.map(([path, base]) => {
    const dot = path.lastIndexOf('.');
    const parent = byPath.get(dot < 0 ? '' : path.slice(0, dot))!;
    const layer = spec.createLayer!(base, c);
    parent.replaceChild(path.slice(dot + 1), layer);
    return { path, layer };
  });
}

/** Finds the adapter layers already in a model. */
export function findAdapters(model: Module): InjectedLayer[] {
  return [...model.namedModules()].filter(([, m]) => m instanceof AdapterLayer).map(([path, m]) => ({ path, layer: m as AdapterLayer }));
}

/** NAS cells with their paths ('<layer path>.<branch>.cell') and branches. */
export function nasCells(layers: InjectedLayer[]): Array<{ path: string; cell: MixedCell; branch: NasBranch }> {
  return layers.flatMap(({ path, layer }) => layer instanceof NasLoraLayer
    ? layer.branches.map((b, i) => ({ path: `${path}.${layer.branchNames[i]}.cell`, cell: (b as NasBranch).cell, branch: b as NasBranch }))
    : []);
}

/** Sum of the Conv-LoRA load-balancing losses of the last training forward, or null. */
export function auxLoss(layers: InjectedLayer[]): Tensor | null {
  let s: Tensor | null = null;
  for (const { layer } of layers) {
    if (!(layer instanceof ConvLoraLayer)) continue;
    const l = layer.auxLoss();
    if (l) s = s ? s.add(l) : l;
  }
  return s;
}
