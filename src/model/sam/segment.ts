// SAM as a binary segmenter for fine-tuning: images (already normalized, S×S) in, one low-res
// mask logit map per image out. Prompt-free (the Conv-LoRA protocol: no points or boxes, dense
// embedding = no_mask_embed, the single-mask token) or prompted with boxes/points per image.
import { cat, tensor, type Tensor } from '../../engine/index.js';
import type { Sam } from './sam.js';

export interface ImagePrompts {
  /** B×4 boxes (x0, y0, x1, y1) in input pixels, or null. */
  boxes: Float32Array | null;
  /** B×n×2 points in input pixels and B×n labels (1/0/−1), or null. */
  pointCoords: Float32Array | null;
  pointLabels: Int32Array | null;
}

export function segmentLogits(sam: Sam, images: Tensor, prompts: ImagePrompts | null = null): Tensor {
  const B = images.shape[0];
  const emb = sam.image_encoder.forward(images);
  const pe = sam.prompt_encoder.getDensePe();
  if (!prompts?.boxes && !prompts?.pointLabels) {
    // Prompt-free: every image has the same (empty) prompt, so the decoder runs on the whole batch.
    const [sparse, dense] = sam.prompt_encoder.forward(null, null, null);
    return sam.mask_decoder.forward(emb, pe, sparse.expand(B, -1, -1), dense.expand(B, -1, -1, -1), false, true)[0];
  }
  const out: Tensor[] = [];
  const n = prompts?.pointLabels ? prompts.pointLabels.length / B : 0;
  for (let i = 0; i < B; i++) {
    const box = prompts?.boxes ? tensor(prompts.boxes.subarray(4 * i, 4 * i + 4), [1, 4]) : null;
    const points = n > 0
      ? { coords: tensor(prompts!.pointCoords!.subarray(2 * n * i, 2 * n * (i + 1)), [1, n, 2]), labels: tensor(Array.from(prompts!.pointLabels!.subarray(n * i, n * (i + 1))), [1, n]) }
      : null;
    const [sparse, dense] = sam.prompt_encoder.forward(points, box, null);
    const [lowRes] = sam.mask_decoder.forward(emb.narrow(0, i, 1), pe, sparse, dense, false);
    out.push(lowRes);
  }
  return cat(out, 0);
}
