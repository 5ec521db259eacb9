// SAM as a binary segmenter for fine-tuning: images (already normalized, S×S) in, one low-res
// mask logit map per image out. Prompt-free (the Conv-LoRA protocol: no points or boxes, dense
// embedding = no_mask_embed, the single-mask token) or prompted with boxes/points per image.
import { cat, tensor, type Device, type Tensor } from '../../engine/index.js';
import type { Sam } from './sam.js';

export interface ImagePrompts {
  /** B×4 boxes (x0, y0, x1, y1) in input pixels, or null. */
  boxes: Float32Array | null;
  /** B×n×2 points in input pixels and B×n labels (1/0/−1), or null. */
  pointCoords: Float32Array | null;
  pointLabels: Int32Array | null;
}

/**
 * Low-res mask logits (B, 1, h, w), float32 whatever precision the model computed in (autocast's
 * bf16 stops here: losses and metrics are computed in fp32). Prompts become tensors on the images'
 * device.
 */
export function segmentLogits(sam: Sam, images: Tensor, prompts: ImagePrompts | null = null): Tensor {
  return segmentLogitsAnyDtype(sam, onModelDevice(sam, images), prompts).float();
}

/** Callers make the batch on the model's device; one made elsewhere is moved (once) rather than failing. */
function onModelDevice(sam: Sam, images: Tensor): Tensor {
  return images.device === sam.device ? images : images.to(sam.device as Device);
}

/** The decoder's inputs for a prompt-free batch: image embeddings, dense PE, and the empty prompt's sparse / dense embeddings per image. */
function promptFreeInputs(sam: Sam, images: Tensor): [Tensor, Tensor, Tensor, Tensor] {
  const B = images.shape[0];
  const emb = sam.image_encoder.forward(images);
  const [sparse, dense] = sam.prompt_encoder.forward(null, null, null);
  return [emb, sam.prompt_encoder.getDensePe(), sparse.expand(B, -1, -1), dense.expand(B, -1, -1, -1)];
}

function segmentLogitsAnyDtype(sam: Sam, images: Tensor, prompts: ImagePrompts | null): Tensor {
  if (!prompts?.boxes && !prompts?.pointLabels) {
    // Prompt-free: every image has the same (empty) prompt, so the decoder runs on the whole batch.
    const [emb, pe, sparse, dense] = promptFreeInputs(sam, images);
    return sam.mask_decoder.forward(emb, pe, sparse, dense, false, true)[0];
  }
  const B = images.shape[0];
  const emb = sam.image_encoder.forward(images);
  const pe = sam.prompt_encoder.getDensePe();
  const out: Tensor[] = [];
  const n = prompts?.pointLabels ? prompts.pointLabels.length / B : 0;
  const device = images.device as Device;
  for (let i = 0; i < B; i++) {
    const box = prompts?.boxes ? tensor(prompts.boxes.subarray(4 * i, 4 * i + 4), [1, 4], { device }) : null;
    const points = n > 0
      ? { coords: tensor(prompts!.pointCoords!.subarray(2 * n * i, 2 * n * (i + 1)), [1, n, 2], { device }), labels: tensor(Array.from(prompts!.pointLabels!.subarray(n * i, n * (i + 1))), [1, n], { device }) }
      : null;
    const [sparse, dense] = sam.prompt_encoder.forward(points, box, null);
    const [lowRes] = sam.mask_decoder.forward(emb.narrow(0, i, 1), pe, sparse, dense, false);
    out.push(lowRes);
  }
  return cat(out, 0);
}

/**
 * Prompt-free multi-class logits (B, K, h, w), float32: the decoder's class heads (addClassHeads),
 * one map per class, the whole batch through the decoder at once.
 */
export function segmentClassLogits(sam: Sam, images: Tensor): Tensor {
  const [emb, pe, sparse, dense] = promptFreeInputs(sam, onModelDevice(sam, images));
  return sam.mask_decoder.classMasks(emb, pe, sparse, dense, true).float();
}
