// Shared by the commands that load a SAM checkpoint (and optionally an adapter) from the CLI.
import * as fs from 'node:fs';
import * as path from 'node:path';
import { ADAPTER_FILE, findAdapters, loadAdapter, readAdapterConfig, sha256File, type AdapterFileConfig, type InjectedLayer } from '../../adapters/index.js';
import type { ClassSpec } from '../../data/classes.js';
import { loadSamFile, type LoadedSam } from '../../model/sam/build.js';
import type { SamConfig } from '../../model/sam/sam.js';

export interface CliModel { loaded: LoadedSam; adapter: AdapterFileConfig | null; layers: InjectedLayer[]; /** The adapter folder used (see resolveAdapterDir). */ adapterDir: string | null }

/** A config object or a fixture-style file with a `config` field. */
export function readModelConfig(file: string | undefined): Partial<SamConfig> | undefined {
  if (!file) return undefined;
  if (!fs.existsSync(file)) throw new Error(`--model-config ${file}: no such file`);
  let j: unknown;
  try { j = JSON.parse(fs.readFileSync(file, 'utf8')); } catch (e) { throw new Error(`--model-config ${file}: not JSON (${(e as Error).message})`); }
  const o = j as { config?: Partial<SamConfig> } & Partial<SamConfig>;
  return o.config ?? o;
}

/**
 * An adapter folder as given, except that `<run>/checkpoints/best` of a run that never evaluated
 * periodically (no val split, so no best) falls back to `<run>/checkpoints/last`, with a note.
 */
export function resolveAdapterDir(dir: string, note: (msg: string) => void = (m) => console.error(m)): string {
  if (fs.existsSync(dir) || path.basename(path.resolve(dir)) !== 'best') return dir;
  const last = path.join(path.dirname(dir), 'last');
  if (!fs.existsSync(path.join(last, ADAPTER_FILE))) return dir;
  note(`note: ${dir} does not exist (the run had no split to evaluate on during training, so no best checkpoint was picked); using ${last}, the end of training`);
  return last;
}

/** A multi-class adapter's classes as a ClassSpec (null: a binary adapter, or none). */
export function adapterClassSpec(a: AdapterFileConfig | null): ClassSpec | null {
  const c = a?.classes;
  return c ? { names: [...c.names], colours: c.colours, ignoreIndex: c.ignore_index } : null;
}

/** An adapter folder (resolved as resolveAdapterDir does) with its adapter_config.json, read once. */
export interface CliAdapter { dir: string; config: AdapterFileConfig }

export function readCliAdapter(arg: string): CliAdapter {
  const dir = resolveAdapterDir(arg);
  return { dir, config: readAdapterConfig(dir) };
}

/**
 * SAM from --checkpoint, with the adapter when given (a folder, or one readCliAdapter already read).
 * The input size: --image-size, else the size the adapter was trained at (adapter_config.json
 * `input`, said on stderr when it differs from the checkpoint's), else the checkpoint's.
 */
export function loadCliModel(o: { checkpoint: string; modelConfig?: string; adapter?: string | CliAdapter; imageSize?: number }): CliModel {
  if (!fs.existsSync(o.checkpoint)) throw new Error(`--checkpoint ${o.checkpoint}: no such file`);
  const adapter = typeof o.adapter === 'string' ? readCliAdapter(o.adapter) : o.adapter ?? null;
  const trainedAt = adapter && o.imageSize === undefined ? adapter.config.input?.image_size : undefined;
  const loaded = loadSamFile(o.checkpoint, { config: readModelConfig(o.modelConfig), imgSize: o.imageSize ?? trainedAt });
  if (trainedAt !== undefined && loaded.resized.length) console.error(`note: input size ${trainedAt}, as the adapter was trained (adapter_config.json input.image_size; --image-size sets another)`);
  if (!adapter) return { loaded, adapter: null, layers: [], adapterDir: null };
  try {
    const { config, layers } = loadAdapter(adapter.dir, loaded.model, { baseSha256: sha256File(o.checkpoint), config: adapter.config });
    return { loaded, adapter: config, layers, adapterDir: adapter.dir };
  } catch (e) {
    loaded.model.dispose();
    throw e;
  }
}

export { findAdapters };
