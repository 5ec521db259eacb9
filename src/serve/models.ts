// The models a server answers with: the base SAM, and one copy per adapter folder given at start
// (an adapter changes the image encoder's weights, so each needs its own encoder). Requests name
// them; they never name paths.
import * as path from 'node:path';
import { loadAdapter, readAdapterConfig, sha256File, type AdapterFileConfig } from '../adapters/index.js';
import { loadSamFile } from '../model/sam/build.js';
import type { Sam, SamConfig } from '../model/sam/sam.js';

export interface ServedModel {
  name: string;
  model: Sam;
  /** null for the base model. */
  adapter: AdapterFileConfig | null;
  adapterDir: string | null;
}

export interface ModelSpec {
  checkpoint: string;
  config?: Partial<SamConfig>;
  /** Adapter folders; a model's name is `name=dir`'s name, else the folder's name. */
  adapters: readonly string[];
}

export const BASE = 'base';

/** `name=dir` or `dir` → [name, dir]. */
export function adapterName(spec: string): [string, string] {
  const eq = spec.indexOf('=');
  if (eq > 0) return [spec.slice(0, eq), spec.slice(eq + 1)];
  const base = path.basename(path.resolve(spec));
  // <run>/checkpoints/last → the run's name
  if (['last', 'best'].includes(base)) return [`${path.basename(path.resolve(spec, '../..'))}-${base}`, spec];
  return [base, spec];
}

export function loadModels(spec: ModelSpec, log: (m: string) => void = () => undefined): Map<string, ServedModel> {
  const out = new Map<string, ServedModel>();
  const load = () => loadSamFile(spec.checkpoint, { config: spec.config }).model;
  const base = load();
  base.eval();
  out.set(BASE, { name: BASE, model: base, adapter: null, adapterDir: null });
  const sha = spec.adapters.length ? sha256File(spec.checkpoint) : '';
  for (const a of spec.adapters) {
    const [name, dir] = adapterName(a);
    if (!/^[A-Za-z0-9._-]{1,64}$/.test(name)) throw new Error(`--adapter ${a}: the name '${name}' must be 1-64 letters, digits, '.', '_' or '-' (give name=dir)`);
    if (out.has(name)) throw new Error(`--adapter ${a}: the name '${name}' is taken (give name=dir)`);
    let m: Sam | null = null;
    try {
      // The server answers clicks (points, boxes); a multi-class adapter segments whole images without prompts.
      const read = readAdapterConfig(dir);
      const cls = read.classes;
      if (cls) throw new Error(`a multi-class adapter (${cls.names.length} classes) is prompt-free and has no click-based use here; use naslora predict --adapter ${dir} --image <file>`);
      m = load();
      const { config } = loadAdapter(dir, m, { baseSha256: sha, config: read });
      m.eval();
      out.set(name, { name, model: m, adapter: config, adapterDir: dir });
      log(`adapter ${name}: ${config.method.name} from ${dir}`);
    } catch (e) {
      m?.dispose();
      for (const x of out.values()) x.model.dispose();
      throw new Error(`--adapter ${a}: ${(e as Error).message}`);
    }
  }
  return out;
}
