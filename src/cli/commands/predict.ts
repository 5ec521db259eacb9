// `naslora predict`: SamPredictor on one image from the command line. Everything is validated and
// computed before anything is written; the files are then written into a temporary sibling folder
// that is renamed to --out, so a failure never leaves partial output behind.
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { writeFileAtomic } from '../../io/atomic.js';
import { decodeImage, encodeClassOverlayPng, encodeClassPng, encodeMaskPng, encodeOverlayPng, type RgbImage } from '../../io/image.js';
import type { RawTensor } from '../../io/raw.js';
import { readSafetensors, writeSafetensors } from '../../io/safetensors.js';
import { SamPredictor } from '../../model/sam/predictor.js';
import { adapterClassSpec, loadCliModel, readCliAdapter, type CliModel } from './model_io.js';
import { autocast, noGrad, tensor, tidy } from '../../engine/index.js';
import { segmentClassLogits } from '../../model/sam/segment.js';
import { logitsToOriginal } from '../../eval/evaluate.js';
import { prepareSample } from '../../data/loader.js';
import { classColours, type ClassSpec } from '../../data/classes.js';
import type { Runtime } from '../../train/run.js';
import { addRuntimeOptions, commandRuntime, type RuntimeFlags } from '../runtime_options.js';

export const PREDICTION_FILE = 'prediction.safetensors';

export interface PointArg { x: number; y: number; label: number }
export type BoxArg = [number, number, number, number];

const collect = (v: string, prev: string[]): string[] => [...prev, v];

/** "a,b,c" → numbers; every field must be a finite number. */
function numbers(flag: string, v: string, n: number, form: string): number[] {
  const parts = v.split(',').map((s) => s.trim());
  const xs = parts.map(Number);
  if (parts.length !== n || parts.some((s) => s === '') || xs.some((x) => !Number.isFinite(x))) {
    throw new Error(`${flag} '${v}': expected ${form}`);
  }
  return xs;
}

export function parsePoint(v: string): PointArg {
  const [x, y, label] = numbers('--point', v, 3, 'x,y,label (pixels of the original image; label 1 foreground, 0 background, -1 padding)');
  if (![1, 0, -1].includes(label)) throw new Error(`--point '${v}': label must be 1 (foreground), 0 (background) or -1 (padding), not ${label}`);
  return { x, y, label };
}

export function parseBox(v: string): BoxArg {
  const b = numbers('--box', v, 4, 'x0,y0,x1,y1 (pixels of the original image)') as BoxArg;
  if (b[2] < b[0] || b[3] < b[1]) throw new Error(`--box '${v}': needs x0 <= x1 and y0 <= y1`);
  return b;
}

/** Coordinates are continuous pixel positions: [0, W] × [0, H] (a box may end on the border). */
function checkInside(what: string, xs: number[], ys: number[], img: RgbImage): void {
  if (xs.some((x) => x < 0 || x > img.width) || ys.some((y) => y < 0 || y > img.height)) {
    throw new Error(`${what} lies outside the ${img.width}×${img.height} image`);
  }
}

/** The low-res logits with the highest predicted IoU in an earlier prediction file (h×w). */
function bestLowRes(file: string, want: readonly [number, number]): Float32Array {
  if (!fs.existsSync(file)) throw new Error(`--mask-input ${file}: no such file`);
  const { tensors } = readSafetensors(file);
  const low = tensors.get('low_res_logits'), iou = tensors.get('iou_predictions');
  if (!low || !iou || low.dtype !== 'float32' || iou.dtype !== 'float32' || low.shape.length !== 3) {
    throw new Error(`--mask-input ${file}: not a prediction file (needs float32 low_res_logits N×h×w and iou_predictions)`);
  }
  const [n, h, w] = low.shape;
  if (h !== want[0] || w !== want[1]) throw new Error(`--mask-input ${file}: low-res logits are ${h}×${w}, this model takes ${want[0]}×${want[1]}`);
  // Copy into fresh buffers: Buffer#slice would share (and expose) the whole underlying memory.
  const f32 = (b: Uint8Array): Float32Array => new Float32Array(new Uint8Array(b).buffer);
  const ious = f32(iou.data);
  if (ious.length !== n) throw new Error(`--mask-input ${file}: ${ious.length} IoU predictions for ${n} masks`);
  const best = ious.indexOf(Math.max(...ious));
  return f32(low.data.subarray(best * h * w * 4, (best + 1) * h * w * 4));
}

const OUR_FILES = /^(mask_\d+\.png|overlay\.png|prediction\.safetensors|classes\.png|classes\.json)$/;

/** Moves the finished temp folder to `out`; an existing `out` is replaced only if it holds nothing but an earlier prediction. */
function publish(tmp: string, out: string): void {
  if (fs.existsSync(out)) {
    if (!fs.statSync(out).isDirectory()) throw new Error(`--out ${out} exists and is not a folder`);
    const foreign = fs.readdirSync(out).filter((f) => !OUR_FILES.test(f));
    if (foreign.length) throw new Error(`--out ${out} exists and holds other files (${foreign.slice(0, 3).join(', ')}); choose an empty or new folder`);
    const old = `${tmp}.old`;
    fs.renameSync(out, old);
    fs.renameSync(tmp, out);
    fs.rmSync(old, { recursive: true, force: true });
  } else {
    fs.renameSync(tmp, out);
  }
}

interface PredictArgs extends RuntimeFlags {
  checkpoint: string; modelConfig?: string; adapter?: string; image: string;
  point: string[]; box: string[]; maskInput?: string; multimask?: boolean; out: string;
}

/** Writes the finished files into a temp sibling folder, then renames it to out (nothing partial is ever left). */
function writeOut(outArg: string, files: Array<[string, Buffer | Uint8Array | string]>, extra?: (tmp: string) => void): void {
  const out = path.resolve(outArg);
  const tmp = path.join(path.dirname(out), `.${path.basename(out)}.tmp-${process.pid}`);
  fs.rmSync(tmp, { recursive: true, force: true });
  try {
    fs.mkdirSync(tmp, { recursive: true });
    for (const [name, data] of files) writeFileAtomic(path.join(tmp, name), data);
    extra?.(tmp);
    publish(tmp, out);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/**
 * Prompt-free multi-class prediction: the image prepared as in training (the adapter's input size
 * and resize), K class maps mapped back to the original size, argmax → classes.png (class indices),
 * overlay.png (the classes in their colours over the image) and classes.json (names, colours, pixel shares).
 */
async function predictClasses(m: CliModel, spec: ClassSpec, img: RgbImage, imageFile: string, rt: Runtime, out: string): Promise<void> {
  const model = m.loaded.model;
  const S = m.loaded.config.img_size;
  const resize = m.adapter?.input?.resize ?? 'squash';
  if (!m.adapter?.input) console.error("note: this adapter does not record how training resized its images (an older file): using 'squash'");
  const { image } = await prepareSample({ id: 'image', width: img.width, height: img.height, rgb: img.data, mask: new Uint8Array(img.width * img.height) }, { imageSize: S, resize, classes: spec }, null);
  const pred = noGrad(() => tidy(() => {
    const x = tensor(image, [1, 3, S, S], { device: rt.device });
    const logits = autocast(rt, () => segmentClassLogits(model, x));
    return Uint8Array.from(logitsToOriginal(logits, S, img.height, img.width, resize).argmax(1).toFloat32Array());
  }));
  const colours = classColours(spec);
  const k = spec.names.length;
  const pixels = new Array<number>(k).fill(0);
  for (const c of pred) pixels[c]!++;
  const n = img.width * img.height;
  const summary = { image: imageFile, width: img.width, height: img.height, resize, input_size: S, classes: spec.names.map((name, i) => ({ index: i, name, colour: colours[i], pixels: pixels[i], share: pixels[i]! / n })) };
  writeOut(out, [
    ['classes.png', await encodeClassPng(pred, img.width, img.height)],
    ['overlay.png', await encodeClassOverlayPng(img, pred, colours)],
    ['classes.json', JSON.stringify(summary, null, 2) + '\n'],
  ]);
  spec.names.forEach((name, i) => console.log(`class ${i} ${name}: ${(100 * pixels[i]! / n).toFixed(2)}% of the image`));
  console.log(`wrote classes.png (class index per pixel), overlay.png and classes.json to ${out}`);
}

async function predict(o: PredictArgs): Promise<void> {
  // 1. Arguments, image and model: every check before any output.
  const rt = commandRuntime(o);
  const points = o.point.map(parsePoint);
  const boxes = o.box.map(parseBox);
  if (!fs.existsSync(o.checkpoint)) throw new Error(`--checkpoint ${o.checkpoint}: no such file`);
  const adapter = o.adapter ? readCliAdapter(o.adapter) : undefined;
  const spec = adapterClassSpec(adapter?.config ?? null);
  if (spec && (points.length || boxes.length || o.maskInput || o.multimask))
    throw new Error(`${o.adapter} is a multi-class adapter (${spec.names.length} classes), which segments the whole image without prompts: drop --point, --box, --mask-input and --multimask`);
  if (!spec && !points.length && !boxes.length && !o.maskInput) throw new Error('give at least one prompt: --point, --box or --mask-input');
  const img = await decodeImage(o.image);
  points.forEach((p) => checkInside(`--point ${p.x},${p.y},${p.label}`, [p.x], [p.y], img));
  boxes.forEach((b) => checkInside(`--box ${b.join(',')}`, [b[0], b[2]], [b[1], b[3]], img));
  const m = loadCliModel({ checkpoint: o.checkpoint, modelConfig: o.modelConfig, adapter });
  if (spec) {
    // Multi-class adapters are prompt-free: one map per class for the whole image.
    try {
      m.loaded.model.eval();
      m.loaded.model.to(rt.device);
      await predictClasses(m, spec, img, o.image, rt, o.out);
    } finally {
      m.loaded.model.dispose();
    }
    return;
  }
  const model = m.loaded.model;
  const predictor = new SamPredictor(model);
  try {
    model.eval();
    model.to(rt.device);  // once (no copy when already there); the predictor makes its inputs there
    const maskInput = o.maskInput ? bestLowRes(o.maskInput, model.prompt_encoder.maskInputSize) : undefined;

    // 2. Predict: one predictTorch call; several boxes are a batch of B prompts sharing the points.
    autocast(rt, () => predictor.setImage(img.data, img.height, img.width));
    const B = Math.max(1, boxes.length);
    const r = autocast(rt, () => predictor.predictPixels({ points, boxes, maskInput, multimask: o.multimask ?? false }));
    const N = r.iou.length, H = img.height, W = img.width, n = H * W;
    const emb = predictor.getImageEmbedding();
    const tensors: Array<[string, RawTensor]> = [
      ['masks', { dtype: 'uint8', shape: [N, H, W], data: r.masks }],
      ['mask_logits', { dtype: 'float32', shape: [N, H, W], data: r.maskLogits }],
      ['iou_predictions', { dtype: 'float32', shape: [N], data: new Uint8Array(r.iou.buffer) }],
      ['low_res_logits', { dtype: 'float32', shape: r.lowShape, data: r.lowRes }],
      ['image_embeddings', { dtype: 'float32', shape: emb.shape, data: emb.contiguous().toBytes() }],
    ];
    // Overlay: the best mask (highest predicted IoU) of each prompt, united.
    const overlay = new Uint8Array(n);
    for (let b = 0; b < N / r.perPrompt; b++) {
      const ious = [...r.iou.subarray(b * r.perPrompt, (b + 1) * r.perPrompt)];
      const k = b * r.perPrompt + ious.indexOf(Math.max(...ious));
      for (let i = 0; i < n; i++) overlay[i] |= r.masks[k * n + i];
    }
    const pngs = await Promise.all(Array.from({ length: N }, (_, k) => encodeMaskPng(r.masks.subarray(k * n, (k + 1) * n), W, H)));
    const overlayPng = await encodeOverlayPng(img, overlay);

    // 3. Write into a temp sibling folder, then rename it to --out.
    writeOut(o.out, [...pngs.map((png, k): [string, Buffer] => [`mask_${k}.png`, png]), ['overlay.png', overlayPng]], (tmp) =>
      writeSafetensors(path.join(tmp, PREDICTION_FILE), tensors, {
        format: 'pt', prompts: String(B), masks_per_prompt: String(r.perPrompt), image_size: `${H}x${W}`,
      }));
    for (let k = 0; k < N; k++) {
      let area = 0;
      for (let i = k * n; i < (k + 1) * n; i++) area += r.masks[i];
      console.log(`mask_${k}.png  predicted IoU ${r.iou[k].toFixed(4)}  area ${(100 * area / n).toFixed(2)}%`);
    }
    console.log(`wrote ${N} mask(s), overlay.png and ${PREDICTION_FILE} to ${o.out}`);
  } finally {
    predictor.dispose();
    model.dispose();
  }
}

export function registerPredict(program: Command): void {
  addRuntimeOptions(program
    .command('predict')
    .description('SAM masks for point/box prompts on one image: mask PNGs, an overlay and prediction.safetensors; with a multi-class adapter, prompt-free: classes.png (class indices), a colour overlay and classes.json')
    .requiredOption('--checkpoint <file>', 'SAM checkpoint (.pth or .safetensors, segment-anything or Hugging Face names)')
    .option('--model-config <json>', 'SAM config (or a fixture case file with a config field), for values the checkpoint shapes cannot tell')
    .option('--adapter <dir>', 'adapter folder (adapter_config.json + adapter.safetensors)')
    .requiredOption('--image <file>', 'input image')
    .option('--point <x,y,label>', 'a point in original-image pixels; label 1 foreground, 0 background, -1 padding (repeatable)', collect, [])
    .option('--box <x0,y0,x1,y1>', 'a box in original-image pixels (repeatable: several boxes are predicted in one batch)', collect, [])
    .option('--mask-input <file>', 'an earlier prediction.safetensors: its low-res logits with the highest predicted IoU are fed back')
    .option('--multimask', 'three masks per prompt instead of one')
    .requiredOption('-o, --out <dir>', 'output folder'), { defaults: true })
    .action(predict);
}
