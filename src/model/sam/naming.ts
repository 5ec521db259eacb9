// Tensor names of SAM under the two common namings: segment-anything's state dict (the released
// sam_vit_*.pth) and Hugging Face's SamModel (facebook/sam-vit-*). Every tensor has the same shape
// and bytes under both names (checked against fixtures/sam-reference: no transposition or reshape),
// so conversion is a pure rename, except that HF also stores the positional-encoding matrix a
// second time as the tied `shared_image_embedding.positional_embedding`.
import type { LazyTensor, RawTensor, TensorSource } from '../../io/raw.js';

export type Naming = 'segment-anything' | 'huggingface';

// [segment-anything, huggingface] name templates; {x} are placeholders that must be equal on both sides.
const PH: Record<string, string> = {
  i: '\\d+', k: '\\d', p: 'weight|bias', hw: 'h|w',
  attn: 'self_attn|cross_attn_token_to_image|cross_attn_image_to_token', proj: '[qkv]_proj|out_proj',
};
const RULES: Array<[string, string]> = [
  ['image_encoder.pos_embed', 'vision_encoder.pos_embed'],
  ['image_encoder.patch_embed.proj.{p}', 'vision_encoder.patch_embed.projection.{p}'],
  ['image_encoder.blocks.{i}.norm{k}.{p}', 'vision_encoder.layers.{i}.layer_norm{k}.{p}'],
  ['image_encoder.blocks.{i}.attn.rel_pos_{hw}', 'vision_encoder.layers.{i}.attn.rel_pos_{hw}'],
  ['image_encoder.blocks.{i}.attn.qkv.{p}', 'vision_encoder.layers.{i}.attn.qkv.{p}'],
  ['image_encoder.blocks.{i}.attn.proj.{p}', 'vision_encoder.layers.{i}.attn.proj.{p}'],
  ['image_encoder.blocks.{i}.mlp.lin{k}.{p}', 'vision_encoder.layers.{i}.mlp.lin{k}.{p}'],
  // neck = Sequential(conv 1x1, LayerNorm2d, conv 3x3, LayerNorm2d), convs without bias
  ['image_encoder.neck.0.weight', 'vision_encoder.neck.conv1.weight'],
  ['image_encoder.neck.1.{p}', 'vision_encoder.neck.layer_norm1.{p}'],
  ['image_encoder.neck.2.weight', 'vision_encoder.neck.conv2.weight'],
  ['image_encoder.neck.3.{p}', 'vision_encoder.neck.layer_norm2.{p}'],
  ['prompt_encoder.pe_layer.positional_encoding_gaussian_matrix', 'prompt_encoder.shared_embedding.positional_embedding'],
  ['prompt_encoder.point_embeddings.{i}.weight', 'prompt_encoder.point_embed.{i}.weight'],
  ['prompt_encoder.not_a_point_embed.weight', 'prompt_encoder.not_a_point_embed.weight'],
  ['prompt_encoder.no_mask_embed.weight', 'prompt_encoder.no_mask_embed.weight'],
  // mask_downscaling = Sequential(conv, LayerNorm2d, GELU, conv, LayerNorm2d, GELU, conv)
  ['prompt_encoder.mask_downscaling.0.{p}', 'prompt_encoder.mask_embed.conv1.{p}'],
  ['prompt_encoder.mask_downscaling.1.{p}', 'prompt_encoder.mask_embed.layer_norm1.{p}'],
  ['prompt_encoder.mask_downscaling.3.{p}', 'prompt_encoder.mask_embed.conv2.{p}'],
  ['prompt_encoder.mask_downscaling.4.{p}', 'prompt_encoder.mask_embed.layer_norm2.{p}'],
  ['prompt_encoder.mask_downscaling.6.{p}', 'prompt_encoder.mask_embed.conv3.{p}'],
  ['mask_decoder.transformer.layers.{i}.{attn}.{proj}.{p}', 'mask_decoder.transformer.layers.{i}.{attn}.{proj}.{p}'],
  ['mask_decoder.transformer.layers.{i}.norm{k}.{p}', 'mask_decoder.transformer.layers.{i}.layer_norm{k}.{p}'],
  ['mask_decoder.transformer.layers.{i}.mlp.lin{k}.{p}', 'mask_decoder.transformer.layers.{i}.mlp.lin{k}.{p}'],
  ['mask_decoder.transformer.final_attn_token_to_image.{proj}.{p}', 'mask_decoder.transformer.final_attn_token_to_image.{proj}.{p}'],
  ['mask_decoder.transformer.norm_final_attn.{p}', 'mask_decoder.transformer.layer_norm_final_attn.{p}'],
  ['mask_decoder.iou_token.weight', 'mask_decoder.iou_token.weight'],
  ['mask_decoder.mask_tokens.weight', 'mask_decoder.mask_tokens.weight'],
  // output_upscaling = Sequential(conv-transpose, LayerNorm2d, GELU, conv-transpose, GELU)
  ['mask_decoder.output_upscaling.0.{p}', 'mask_decoder.upscale_conv1.{p}'],
  ['mask_decoder.output_upscaling.1.{p}', 'mask_decoder.upscale_layer_norm.{p}'],
  ['mask_decoder.output_upscaling.3.{p}', 'mask_decoder.upscale_conv2.{p}'],
];

const compile = (t: string): RegExp =>
  new RegExp('^' + t.replace(/\./g, '\\.').replace(/\{(\w+)\}/g, (_, n: string) => `(?<${n}>${PH[n]})`) + '$');
const SAM_RE = RULES.map(([s]) => compile(s));
const HF_RE = RULES.map(([, h]) => compile(h));
const fill = (t: string, g: Record<string, string>): string => t.replace(/\{(\w+)\}/g, (_, n: string) => g[n]);

// The MLP heads: segment-anything numbers all Linear layers (layers.0 .. layers.{L-1}), HF calls
// them proj_in, layers.0 .. layers.{L-3}, proj_out. L is read off the key set (3 in SAM).
const SAM_MLP = /^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.layers\.(\d+)\.(weight|bias)$/;
const HF_MLP = /^(mask_decoder\.(?:output_hypernetworks_mlps\.\d+|iou_prediction_head))\.(proj_in|proj_out|layers\.(\d+))\.(weight|bias)$/;

export const HF_TIED = 'shared_image_embedding.positional_embedding';
const HF_PE = 'prompt_encoder.shared_embedding.positional_embedding';

function mlpDepths(keys: string[], re: RegExp, count: (m: RegExpExecArray) => number): Map<string, number> {
  const depth = new Map<string, number>();
  for (const k of keys) {
    const m = re.exec(k);
    if (m) depth.set(m[1], Math.max(depth.get(m[1]) ?? 0, count(m)));
  }
  return depth;
}

/** Pairs [from, to] renaming `keys` into naming `to`; names that fit no rule are returned in `unknown`. */
export function renameKeys(keys: string[], to: Naming): { pairs: Array<[string, string]>; unknown: string[] } {
  const toHf = to === 'huggingface';
  const pairs: Array<[string, string]> = [];
  const unknown: string[] = [];
  // Number of Linear layers per MLP head.
  const depth = toHf
    ? mlpDepths(keys, SAM_MLP, (m) => Number(m[2]) + 1)
    : mlpDepths(keys, HF_MLP, (m) => (m[3] === undefined ? 2 : Number(m[3]) + 3));
  for (const k of keys) {
    if (!toHf && k === HF_TIED) continue; // dropped: a copy of prompt_encoder.shared_embedding
    const rules = toHf ? SAM_RE : HF_RE;
    const r = rules.findIndex((re) => re.test(k));
    if (r >= 0) {
      pairs.push([k, fill(RULES[r][toHf ? 1 : 0], rules[r].exec(k)!.groups ?? {})]);
      continue;
    }
    if (toHf) {
      const m = SAM_MLP.exec(k);
      if (m) {
        const i = Number(m[2]), L = depth.get(m[1])!;
        pairs.push([k, `${m[1]}.${i === 0 ? 'proj_in' : i === L - 1 ? 'proj_out' : `layers.${i - 1}`}.${m[3]}`]);
        continue;
      }
    } else {
      const m = HF_MLP.exec(k);
      if (m) {
        const i = m[2] === 'proj_in' ? 0 : m[2] === 'proj_out' ? depth.get(m[1])! - 1 : Number(m[3]) + 1;
        pairs.push([k, `${m[1]}.layers.${i}.${m[4]}`]);
        continue;
      }
    }
    unknown.push(k);
  }
  if (toHf) {
    const pe = pairs.find(([, h]) => h === HF_PE);
    if (pe) pairs.push([pe[0], HF_TIED]);
  }
  return { pairs, unknown };
}

/** Which naming `keys` use: the one under which every key is known (segment-anything if both). */
export function detectNaming(keys: Iterable<string>): Naming {
  const list = [...keys];
  const sam = renameKeys(list, 'huggingface').unknown; // unknown as segment-anything names
  const hf = renameKeys(list, 'segment-anything').unknown;
  if (sam.length === 0) return 'segment-anything';
  if (hf.length === 0) return 'huggingface';
  const [naming, unknown] = sam.length <= hf.length ? ['segment-anything', sam] : ['huggingface', hf];
  throw new Error(`unknown SAM tensor names (closest naming: ${naming}): ${unknown.slice(0, 20).join(', ')}${unknown.length > 20 ? `, ... (${unknown.length} in all)` : ''}`);
}

type Tensors<T> = TensorSource | Map<string, T>;

function convert<T extends RawTensor | LazyTensor>(src: Tensors<T>, to: Naming): Map<string, T> {
  const get = (k: string): T => (src instanceof Map ? src.get(k) : src.get(k)) as T;
  const keys = src instanceof Map ? [...src.keys()] : src.keys();
  const from = detectNaming(keys); // throws, listing them, on unknown names
  if (from === to) {
    const out = new Map(keys.map((k): [string, T] => [k, get(k)]));
    if (to === 'huggingface' && out.has(HF_PE) && !out.has(HF_TIED)) out.set(HF_TIED, out.get(HF_PE)!);
    return out;
  }
  const { pairs } = renameKeys(keys, to);
  if (to === 'segment-anything' && keys.includes(HF_TIED)) {
    // HF ties the two positional matrices; refuse a file where they were trained apart.
    const a = get(HF_TIED), b = keys.includes(HF_PE) ? get(HF_PE) : undefined;
    const bytes = (t: T): Uint8Array => ('data' in t ? t.data : t.read());
    if (!b) pairs.push([HF_TIED, 'prompt_encoder.pe_layer.positional_encoding_gaussian_matrix']);
    else if (!Buffer.from(bytes(a)).equals(Buffer.from(bytes(b)))) throw new Error(`${HF_TIED} differs from ${HF_PE}; they must be tied`);
  }
  return new Map(pairs.map(([f, t]): [string, T] => [t, get(f)]));
}

/** Tensors under segment-anything names (drops HF's tied copy of the positional matrix). */
export function toSegmentAnything<T extends RawTensor | LazyTensor = LazyTensor>(src: Tensors<T>): Map<string, T> {
  return convert(src, 'segment-anything');
}

/** Tensors under Hugging Face SamModel names, including the tied shared_image_embedding. */
export function toHuggingFace<T extends RawTensor | LazyTensor = LazyTensor>(src: Tensors<T>): Map<string, T> {
  return convert(src, 'huggingface');
}
