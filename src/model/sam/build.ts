// build_sam.py's role: build a Sam from a configuration, read the configuration off a checkpoint's
// tensor shapes, and load a checkpoint's weights (segment-anything or Hugging Face names) into
// the model, optionally for another input size than the checkpoint's.
//
// What the shapes tell (segment-anything names):
//   patch_size, embed_dim     patch_embed.proj.weight   (E, 3, P, P)
//   img_size                  pos_embed                 (1, S/P, S/P, E)
//   depth                     number of blocks
//   num_heads                 E / head_dim, head_dim = rel_pos_h.shape[1]
//   mlp_ratio                 blocks.0.mlp.lin1.weight  (E·ratio, E)
//   window_size, global_attn_indexes  rel_pos_h lengths: 2·S/P − 1 in global blocks, 2·ws − 1 in
//                             windowed ones; undecidable when all blocks have the global length
//   prompt_embed_dim          neck.0.weight; mask_in_chans: mask_downscaling.3.weight
//   decoder_depth, decoder_mlp_dim, iou_head_hidden_dim   the decoder's layer count and widths
// What they cannot tell: decoder_heads (the q/k/v projections have the same shapes for any head
// count), and the window layout when every rel-pos table has the global length. These come from, in
// order: the explicit config (--model-config, model.config); the checkpoint's own configuration,
// which naslora writes into every checkpoint it saves (SAM_CONFIG_KEY: safetensors `__metadata__`,
// or a string attribute of the .pth state dict); the official release's values, but only when the
// architecture is exactly ViT-B/L/H's (every shape-derived value but the input size). Anything else
// is refused: a silently guessed head count builds a model that loads and computes something else.
// A given config or metadata value that contradicts the shapes, or a given value that contradicts
// the metadata, is an error.
import { F, noGrad, Tensor } from '../../engine/index.js';
import { DTYPE_CODE } from '../../engine/dtype.js';
import { native } from '../../engine/native.js';
import { openCheckpoint } from '../../io/pth.js';
import type { LazyTensor, RawTensor, TensorSource } from '../../io/raw.js';
import { renameKeys, toSegmentAnything, type Naming } from './naming.js';
import { Sam, SAM_PRESETS, type SamConfig, type SamPresetName } from './sam.js';

export type SamTensors = TensorSource | Map<string, LazyTensor | RawTensor>;
type AnyTensor = LazyTensor | RawTensor;

/** Builds a SAM with fresh (PyTorch-default) weights. */
export function buildSam(config: SamConfig | SamPresetName): Sam {
  return Sam.fromConfig(typeof config === 'string' ? SAM_PRESETS[config] : config);
}

/** A checkpoint tensor (read now) as an engine tensor of the same dtype. */
export function toEngineTensor(t: AnyTensor): Tensor {
  const bytes = 'data' in t ? t.data : t.read();
  return new Tensor(native.fromBuffer(bytes, t.shape, DTYPE_CODE[t.dtype]));
}

/**
 * The checkpoint's tensors under segment-anything names (HF names are converted), and the naming
 * found. Names that fit neither naming (e.g. adapter weights) pass through unchanged; the loader
 * reports them if the model has no such tensor.
 */
export function samTensors(src: SamTensors): { tensors: Map<string, AnyTensor>; naming: Naming } {
  const all = src instanceof Map ? src : new Map(src.keys().map((k): [string, AnyTensor] => [k, src.get(k)!]));
  const keys = [...all.keys()];
  const notSam = new Set(renameKeys(keys, 'huggingface').unknown);
  const notHf = new Set(renameKeys(keys, 'segment-anything').unknown);
  const naming: Naming = notSam.size <= notHf.size ? 'segment-anything' : 'huggingface';
  const unknown = naming === 'segment-anything' ? notSam : notHf;
  const known = new Map([...all].filter(([k]) => !unknown.has(k)));
  const tensors = known.size ? toSegmentAnything<AnyTensor>(known) : new Map<string, AnyTensor>();
  for (const k of unknown) tensors.set(k, all.get(k)!);
  return { tensors, naming };
}

type CoreKey = Exclude<keyof SamConfig, 'pixel_mean' | 'pixel_std'>;
/** 'config': given explicitly; 'metadata': the checkpoint's own configuration; 'release X': the official ViT-X's value. */
export type ConfigSource = 'shapes' | 'config' | 'metadata' | `release ${SamPresetName}`;

const CORE_KEYS: readonly CoreKey[] = [
  'img_size', 'patch_size', 'embed_dim', 'depth', 'num_heads', 'mlp_ratio', 'window_size', 'global_attn_indexes',
  'prompt_embed_dim', 'mask_in_chans', 'decoder_depth', 'decoder_mlp_dim', 'decoder_heads', 'iou_head_hidden_dim',
];

/** The metadata key under which naslora stores a checkpoint's full SAM configuration (JSON). */
export const SAM_CONFIG_KEY = 'naslora_sam_config';

/** Metadata entries that record `config` in a checkpoint (safetensors `__metadata__`, .pth attributes). */
export function samConfigMetadata(config: SamConfig): Record<string, string> {
  const c: Partial<SamConfig> = {};
  for (const k of [...CORE_KEYS, 'pixel_mean', 'pixel_std'] as const) if (config[k] !== undefined) (c as Record<string, unknown>)[k] = config[k];
  return { [SAM_CONFIG_KEY]: JSON.stringify(c) };
}

/** The SAM configuration a checkpoint carries in its metadata, or null when it carries none. */
export function samConfigFromMetadata(metadata: Readonly<Record<string, string>> | undefined): SamConfig | null {
  const text = metadata?.[SAM_CONFIG_KEY];
  if (text === undefined) return null;
  let j: unknown;
  try { j = JSON.parse(text); } catch (e) { throw new Error(`the checkpoint's ${SAM_CONFIG_KEY} metadata is not JSON (${(e as Error).message})`); }
  const o = j as Record<string, unknown>;
  const bad = CORE_KEYS.filter((k) => (k === 'global_attn_indexes' ? !(Array.isArray(o?.[k]) && (o[k] as unknown[]).every(Number.isInteger)) : typeof o?.[k] !== 'number'));
  if (typeof j !== 'object' || j === null || bad.length) throw new Error(`the checkpoint's ${SAM_CONFIG_KEY} metadata is not a SAM configuration (missing or invalid: ${bad.join(', ')})`);
  return j as SamConfig;
}

const SUPPLY = 'pass the configuration: --model-config <json> (eval, predict, export, inspect, convert) or model.config (train, compare), ' +
  'e.g. the model_config.json that `naslora pretrain` writes next to sam.safetensors';

export interface InferredConfig {
  config: SamConfig;
  /** Where each value came from. */
  sources: Record<CoreKey, ConfigSource>;
}

/**
 * The SAM configuration of a checkpoint, from its tensor shapes (segment-anything names) and
 * `given` for what shapes cannot tell. A given value that contradicts the shapes is an error.
 */
export function inferSamConfig(shapes: Map<string, readonly number[]>, given: Partial<SamConfig> = {}, metadata: SamConfig | null = null): InferredConfig {
  const shape = (k: string): readonly number[] => {
    const s = shapes.get(k);
    if (!s) throw new Error(`cannot infer the SAM configuration: the checkpoint has no '${k}'`);
    return s;
  };
  const count = (re: RegExp): number => {
    const ids = new Set<number>();
    for (const k of shapes.keys()) { const m = re.exec(k); if (m) ids.add(Number(m[1])); }
    return ids.size;
  };
  const c: Partial<SamConfig> = {};
  const sources = {} as Record<CoreKey, ConfigSource>;
  const set = <K extends CoreKey>(k: K, v: SamConfig[K], from: ConfigSource): void => { c[k] = v; sources[k] = from; };

  const [E, , P, P2] = shape('image_encoder.patch_embed.proj.weight');
  if (P !== P2) throw new Error(`non-square patches (${P}×${P2}) are not supported`);
  set('patch_size', P, 'shapes');
  set('embed_dim', E, 'shapes');
  const [, G, G2] = shape('image_encoder.pos_embed');
  if (G !== G2) throw new Error(`non-square pos_embed grid (${G}×${G2}) is not supported`);
  set('img_size', G * P, 'shapes');
  const depth = count(/^image_encoder\.blocks\.(\d+)\./);
  set('depth', depth, 'shapes');
  const headDim = shape('image_encoder.blocks.0.attn.rel_pos_h')[1];
  if (E % headDim !== 0) throw new Error(`rel_pos head dim ${headDim} does not divide embed_dim ${E}`);
  set('num_heads', E / headDim, 'shapes');
  set('mlp_ratio', shape('image_encoder.blocks.0.mlp.lin1.weight')[0] / E, 'shapes');

  // Windowed vs global blocks from the rel-pos table lengths.
  const lengths = Array.from({ length: depth }, (_, i) => shape(`image_encoder.blocks.${i}.attn.rel_pos_h`)[0]);
  const globalLen = 2 * G - 1;
  const windowed = lengths.filter((l) => l !== globalLen);
  if (windowed.length) {
    if (windowed.some((l) => l !== windowed[0])) throw new Error(`windowed blocks have rel-pos tables of different lengths (${[...new Set(windowed)]}); one window size is supported`);
    set('window_size', (windowed[0] + 1) / 2, 'shapes');
    set('global_attn_indexes', lengths.flatMap((l, i) => (l === globalLen ? [i] : [])), 'shapes');
  }
  set('prompt_embed_dim', shape('image_encoder.neck.0.weight')[0], 'shapes');
  set('mask_in_chans', shape('prompt_encoder.mask_downscaling.3.weight')[0], 'shapes');
  set('decoder_depth', count(/^mask_decoder\.transformer\.layers\.(\d+)\./), 'shapes');
  set('decoder_mlp_dim', shape('mask_decoder.transformer.layers.0.mlp.lin1.weight')[0], 'shapes');
  set('iou_head_hidden_dim', shape('mask_decoder.iou_prediction_head.layers.0.weight')[0], 'shapes');

  // The metadata describes this very file: it must agree with every shape, or the file is inconsistent.
  if (metadata) {
    for (const k of Object.keys(c) as CoreKey[]) {
      if (JSON.stringify(metadata[k]) !== JSON.stringify(c[k]))
        throw new Error(`the checkpoint is inconsistent: its ${SAM_CONFIG_KEY} metadata says ${k} = ${JSON.stringify(metadata[k])}, its shapes ${JSON.stringify(c[k])}`);
    }
    for (const k of CORE_KEYS) {
      if (given[k] !== undefined && JSON.stringify(given[k]) !== JSON.stringify(metadata[k]))
        throw new Error(`config ${k} = ${JSON.stringify(given[k])} contradicts the checkpoint's own configuration (${k} = ${JSON.stringify(metadata[k])} in its metadata)` +
          (k === 'img_size' ? '; use the imgSize option to run at another input size' : ''));
    }
  }
  // The official release's values apply only to its exact architecture (any input size).
  const release = (Object.keys(SAM_PRESETS) as SamPresetName[]).find((n) =>
    (Object.keys(c) as CoreKey[]).every((k) => k === 'img_size' || JSON.stringify(SAM_PRESETS[n][k]) === JSON.stringify(c[k])));
  const unknown = (what: string, why: string): never => {
    throw new Error(`cannot tell ${what} from the checkpoint: ${why}. It carries no SAM configuration in its metadata ` +
      `(naslora writes one into every checkpoint it saves), and its shapes are not those of a released SAM (ViT-B/L/H), ` +
      `whose values would apply; ${SUPPLY}`);
  };
  if (!windowed.length) {
    if (given.window_size !== undefined && given.global_attn_indexes) {
      set('window_size', given.window_size, 'config');
      set('global_attn_indexes', [...given.global_attn_indexes], 'config');
    } else if (metadata) {
      set('window_size', metadata.window_size, 'metadata');
      set('global_attn_indexes', [...metadata.global_attn_indexes], 'metadata');
    } else if (release) {
      set('window_size', SAM_PRESETS[release].window_size, `release ${release}`);
      set('global_attn_indexes', [...SAM_PRESETS[release].global_attn_indexes], `release ${release}`);
    } else {
      unknown('windowed from global blocks (window_size, global_attn_indexes)',
        `every rel-pos table has the global length ${globalLen} (window size = grid size ${G}, or all global)`);
    }
  }
  if (given.decoder_heads !== undefined) set('decoder_heads', given.decoder_heads, 'config');
  else if (metadata) set('decoder_heads', metadata.decoder_heads, 'metadata');
  else if (release) set('decoder_heads', SAM_PRESETS[release].decoder_heads, `release ${release}`);
  else unknown('decoder_heads', 'the attention projections have the same shapes for any head count');

  // What SAM fixes: check it rather than build something else silently.
  const D = c.prompt_embed_dim!;
  if (shape('mask_decoder.mask_tokens.weight')[0] !== 4) throw new Error(`expected 4 mask tokens (3 multimask outputs), got ${shape('mask_decoder.mask_tokens.weight')[0]}`);
  if (count(/^mask_decoder\.iou_prediction_head\.layers\.(\d+)\./) !== 3) throw new Error('expected an IoU head of depth 3');
  if (shape('mask_decoder.transformer.final_attn_token_to_image.q_proj.weight')[0] !== D / 2) throw new Error('expected an attention downsample rate of 2 in the mask decoder');
  if (!shapes.has('image_encoder.blocks.0.attn.qkv.bias')) throw new Error('expected qkv bias in the image encoder');

  for (const k of Object.keys(given) as Array<keyof SamConfig>) {
    if (k === 'pixel_mean' || k === 'pixel_std') continue;
    if (JSON.stringify(given[k]) !== JSON.stringify(c[k])) {
      throw new Error(`config ${k} = ${JSON.stringify(given[k])} contradicts the checkpoint (${JSON.stringify(c[k])} from ${sources[k]})` +
        (k === 'img_size' ? '; use the imgSize option to run at another input size' : ''));
    }
  }
  const pixelMean = given.pixel_mean ?? metadata?.pixel_mean;
  const pixelStd = given.pixel_std ?? metadata?.pixel_std;
  if (pixelMean) c.pixel_mean = pixelMean;
  if (pixelStd) c.pixel_std = pixelStd;
  return { config: c as SamConfig, sources };
}

export type PosEmbedResize = 'bilinear' | 'bicubic';

export interface LoadWeightsOptions {
  /** How pos_embed is resized to another grid: bilinear as SAMed / SAM-Med2D (default), or bicubic. */
  posEmbedMode?: PosEmbedResize;
  /** Model tensors that may be absent from the checkpoint (e.g. adapter weights). */
  allowMissing?: (name: string) => boolean;
}

/**
 * Copies checkpoint tensors into the model's parameters, one tensor at a time. Keys and shapes
 * are all checked before anything is read. Shapes may differ only where the input size changes:
 * the absolute pos_embed and the rel-pos tables of the model's global blocks (by block index),
 * which are interpolated. Returns the names that were resized.
 */
export function loadSamWeights(model: Sam, src: SamTensors, o: LoadWeightsOptions = {}): { resized: string[] } {
  const { tensors } = samTensors(src);
  const own = model.stateDict();
  const missing = [...own.keys()].filter((k) => !tensors.has(k) && !o.allowMissing?.(k));
  const unexpected = [...tensors.keys()].filter((k) => !own.has(k));
  const blocks = model.image_encoder.blocks;
  const resizable = (k: string): boolean => {
    if (k === 'image_encoder.pos_embed') return true;
    const m = /^image_encoder\.blocks\.(\d+)\.attn\.rel_pos_[hw]$/.exec(k);
    return m !== null && Number(m[1]) < blocks.length && blocks.at(Number(m[1])).windowSize === 0;
  };
  const bad: string[] = [];
  const resized: string[] = [];
  for (const [k, t] of own) {
    const s = tensors.get(k);
    if (!s || s.shape.join() === t.shape.join()) continue;
    if (resizable(k) && s.shape.length === t.shape.length) resized.push(k);
    else bad.push(`${k}: checkpoint [${s.shape}] vs model [${t.shape}]`);
  }
  const problems = [
    missing.length ? `missing from the checkpoint (${missing.length}): ${list(missing)}` : '',
    unexpected.length ? `not in the model (${unexpected.length}): ${list(unexpected)}` : '',
    bad.length ? `shape mismatch (${bad.length}): ${list(bad)}` : '',
  ].filter(Boolean);
  if (problems.length) throw new Error(`checkpoint does not fit the model: ${problems.join('; ')}`);

  noGrad(() => {
    for (const [k, t] of own) {
      const s = tensors.get(k);
      if (!s) continue;
      let v = toEngineTensor(s);
      if (resized.includes(k)) {
        const f32 = v.float();
        const r = k === 'image_encoder.pos_embed' ? resizePosEmbed(f32, t.shape[1], t.shape[2], o.posEmbedMode) : resizeRelPos(f32, t.shape[0]);
        v.dispose(); f32.dispose();
        v = r;
      }
      t.copy_(v);
      v.dispose();
    }
  });
  return { resized };
}

function list(xs: string[]): string {
  return xs.slice(0, 10).join(', ') + (xs.length > 10 ? `, … (${xs.length} in all)` : '');
}

/** pos_embed (1, G, G, C) → (1, h, w, C) by 2-D interpolation of the grid (align_corners=False). */
export function resizePosEmbed(posEmbed: Tensor, h: number, w: number, mode: PosEmbedResize = 'bilinear'): Tensor {
  const m = posEmbed.permute(0, 3, 1, 2);
  const r = F.interpolate(m, { size: [h, w], mode, alignCorners: false });
  const out = r.permute(0, 2, 3, 1).contiguous();
  m.dispose(); r.dispose();
  return out;
}

/**
 * A rel-pos table (L, C) → (length, C), linear along L (align_corners=False): what get_rel_pos
 * would do at run time, and what SAM fine-tuning code does at load time (bilinear on (1, 1, L, C)).
 */
export function resizeRelPos(relPos: Tensor, length: number): Tensor {
  const x = relPos.reshape(1, 1, relPos.shape[0], relPos.shape[1]);
  const r = F.interpolate(x, { size: [length, relPos.shape[1]], mode: 'bilinear', alignCorners: false });
  const out = r.reshape(length, relPos.shape[1]);
  x.dispose(); r.dispose();
  return out;
}

export interface LoadSamOptions extends LoadWeightsOptions {
  /** Values the shapes cannot tell (decoder_heads; window layout when ambiguous); checked against the rest. */
  config?: Partial<SamConfig>;
  /** Build for this input size instead of the checkpoint's (a multiple of the patch size). */
  imgSize?: number;
}

export interface LoadedSam {
  model: Sam;
  /** The configuration the model was built with (img_size = imgSize when given). */
  config: SamConfig;
  /** The checkpoint's own configuration, and where each value came from. */
  checkpoint: InferredConfig;
  naming: Naming;
  /** Tensors interpolated to the new input size. */
  resized: string[];
}

/** Builds a Sam that fits a checkpoint and loads its weights. */
export function loadSam(src: SamTensors, o: LoadSamOptions = {}): LoadedSam {
  const { tensors, naming } = samTensors(src);
  const metadata = src instanceof Map ? null : samConfigFromMetadata(src.metadata);
  const checkpoint = inferSamConfig(new Map([...tensors].map(([k, t]) => [k, t.shape])), o.config, metadata);
  const config: SamConfig = { ...checkpoint.config };
  if (o.imgSize !== undefined) {
    if (!Number.isInteger(o.imgSize) || o.imgSize <= 0 || o.imgSize % config.patch_size !== 0) {
      throw new Error(`imgSize ${o.imgSize} must be a positive multiple of the patch size ${config.patch_size}`);
    }
    config.img_size = o.imgSize;
  }
  const model = Sam.fromConfig(config);
  try {
    const { resized } = loadSamWeights(model, tensors, o);
    return { model, config, checkpoint, naming, resized };
  } catch (e) {
    model.dispose();
    throw e;
  }
}

/** The configuration of an opened checkpoint (shapes, its metadata, `given`), reading no weights. */
export function checkpointConfig(src: TensorSource, given: Partial<SamConfig> = {}): InferredConfig & { naming: Naming; fromMetadata: boolean } {
  const { tensors, naming } = samTensors(src);
  const metadata = samConfigFromMetadata(src.metadata);
  return { ...inferSamConfig(new Map([...tensors].map(([k, t]) => [k, t.shape])), given, metadata), naming, fromMetadata: metadata !== null };
}

/** loadSam from a .pth or .safetensors file. */
export function loadSamFile(file: string, o: LoadSamOptions = {}): LoadedSam {
  const src = openCheckpoint(file);
  try {
    return loadSam(src, o);
  } finally {
    src.close();
  }
}
