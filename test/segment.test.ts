// The batched prompt-free forward used for fine-tuning equals SAM's per-image decoding.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import { manualSeed, randn, tidy, cat, noGrad } from '../src/engine/index.js';
import { Sam } from '../src/model/sam/sam.js';
import { segmentLogits } from '../src/model/sam/segment.js';

test('prompt-free batched decoding equals per-image decoding; prompted path runs per image', () => noGrad(() => tidy(() => {
  manualSeed(0);
  const sam = Sam.fromConfig({
    img_size: 64, patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2, mlp_ratio: 2, window_size: 4, global_attn_indexes: [1],
    prompt_embed_dim: 32, mask_in_chans: 8, decoder_depth: 2, decoder_mlp_dim: 64, decoder_heads: 2, iou_head_hidden_dim: 16,
  });
  const x = randn([3, 3, 64, 64]);
  const batched = segmentLogits(sam, x);
  assert.deepEqual(batched.shape, [3, 1, 32, 32]);
  const emb = sam.image_encoder.forward(x);
  const pe = sam.prompt_encoder.getDensePe();
  const per = cat([0, 1, 2].map((i) => {
    const [sp, de] = sam.prompt_encoder.forward(null, null, null);
    return sam.mask_decoder.forward(emb.narrow(0, i, 1), pe, sp, de, false)[0];
  }), 0);
  const err = batched.sub(per).abs().max().item() / per.abs().max().item();
  assert.ok(err < 1e-5, `batched decoding differs by ${err}`);
  const boxes = new Float32Array([0, 0, 32, 32, 10, 10, 60, 60, 5, 5, 20, 40]);
  assert.deepEqual(segmentLogits(sam, x, { boxes, pointCoords: null, pointLabels: null }).shape, [3, 1, 32, 32]);
  sam.dispose();
})));
