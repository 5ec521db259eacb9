// Shared by the commands that load a SAM checkpoint (and optionally an adapter) from the CLI.
import * as fs from 'node:fs';
import { findAdapters, loadAdapter, sha256File, type AdapterFileConfig, type InjectedLayer } from '../../adapters/index.js';
import { loadSamFile, type LoadedSam } from '../../model/sam/build.js';
import type { SamConfig } from '../../model/sam/sam.js';

export interface CliModel { loaded: LoadedSam; adapter: AdapterFileConfig | null; layers: InjectedLayer[] }

/** A config object or a fixture-style file with a `config` field. */
export function readModelConfig(file: string | undefined): Partial<SamConfig> | undefined {
  if (!file) return undefined;
  if (!fs.existsSync(file)) throw new Error(`--model-config ${file}: no such file`);
  let j: unknown;
  try { j = JSON.parse(fs.readFileSync(file, 'utf8')); } catch (e) { throw new Error(`--model-config ${file}: not JSON (${(e as Error).message})`); }
  const o = j as { config?: Partial<SamConfig> } & Partial<SamConfig>;
  return o.config ?? o;
}

export function loadCliModel(o: { checkpoint: string; modelConfig?: string; adapter?: string; imageSize?: number }): CliModel {
  if (!fs.existsSync(o.checkpoint)) throw new Error(`--checkpoint ${o.checkpoint}: no such file`);
  const loaded = loadSamFile(o.checkpoint, { config: readModelConfig(o.modelConfig), imgSize: o.imageSize });
  if (!o.adapter) return { loaded, adapter: null, layers: [] };
  try {
    const { config, layers } = loadAdapter(o.adapter, loaded.model, { baseSha256: sha256File(o.checkpoint) });
    return { loaded, adapter: config, layers };
  } catch (e) {
    loaded.model.dispose();
    throw e;
  }
}

export { findAdapters };
