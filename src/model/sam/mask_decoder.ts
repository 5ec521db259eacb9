// segment_anything/modeling/mask_decoder.py: predicts masks (and their IoU) from the image
// embedding and the prompt embeddings with the two-way transformer and hypernetwork MLPs.
import { callOp, cat, ConvTranspose2d, Embedding, Linear, ModuleList, noGrad, stack, tidy, type Tensor } from '../../engine/index.js';
import { LayerNorm2d, SamModule, Sequential, type Activation } from './common.js';
import type { TwoWayTransformer } from './transformer.js';

export interface MaskDecoderOpts {
  numMultimaskOutputs?: number;
  activation?: Activation;
  iouHeadDepth?: number;
  iouHeadHiddenDim?: number;
}

export class MaskDecoder extends SamModule {
  readonly numMultimaskOutputs: number;
  readonly numMaskTokens: number;
  iou_token: Embedding;
  mask_tokens: Embedding;
  output_upscaling: Sequential;
  output_hypernetworks_mlps: ModuleList<MLP>;
  iou_prediction_head: MLP;
  /** Multi-class heads (addClassHeads): one output token and hypernetwork MLP per class, or null. */
  class_tokens: Embedding | null = null;
  class_hypernetworks_mlps: ModuleList<MLP> | null = null;

  constructor(readonly transformerDim: number, public transformer: TwoWayTransformer, o: MaskDecoderOpts = {}) {
    super();
    this.child('transformer', transformer);
    this.numMultimaskOutputs = o.numMultimaskOutputs ?? 3;
    const act = o.activation ?? 'gelu';
    this.iou_token = this.child('iou_token', new Embedding(1, transformerDim));
    this.numMaskTokens = this.numMultimaskOutputs + 1;
    this.mask_tokens = this.child('mask_tokens', new Embedding(this.numMaskTokens, transformerDim));
    const d4 = Math.floor(transformerDim / 4), d8 = Math.floor(transformerDim / 8);
    this.output_upscaling = this.child('output_upscaling', new Sequential([
      new ConvTranspose2d(transformerDim, d4, 2, 2),
      new LayerNorm2d(d4),
      act,
      new ConvTranspose2d(d4, d8, 2, 2),
      act,
    ]));
    this.output_hypernetworks_mlps = this.child('output_hypernetworks_mlps', new ModuleList(
      Array.from({ length: this.numMaskTokens }, () => new MLP(transformerDim, transformerDim, d8, 3))));
    this.iou_prediction_head = this.child('iou_prediction_head',
      new MLP(transformerDim, o.iouHeadHiddenDim ?? 256, this.numMaskTokens, o.iouHeadDepth ?? 3));
  }

  /**
   * Masks (B, 3 or 1, 4h, 4w) low-res logits and IoU predictions (B, 3 or 1). With
   * multimaskOutput the three multimask tokens' masks, else the single-mask token's.
   * batchedImages: imageEmbeddings holds one image per prompt set (fine-tuning on a batch of
   * images), instead of one image shared by every prompt set (the predictor).
   */
  forward(imageEmbeddings: Tensor, imagePe: Tensor, sparsePromptEmbeddings: Tensor, densePromptEmbeddings: Tensor, multimaskOutput: boolean, batchedImages = false): [Tensor, Tensor] {
    const [masks, iouPred] = this.predictMasks(imageEmbeddings, imagePe, sparsePromptEmbeddings, densePromptEmbeddings, batchedImages);
    const [start, end] = multimaskOutput ? [1, null] : [0, 1];
    return [masks.slice(1, start, end), iouPred.slice(1, start, end)];
  }

  /**
   * Multi-class semantic segmentation (SAMed's approach): K extra output tokens, each with its own
   * hypernetwork MLP, predicting K class maps at once. Each starts as a copy of SAM's single-mask
   * token and its MLP, so a pretrained checkpoint loads unchanged and every class starts from the
   * mask SAM would predict; the class tokens then learn apart (their targets differ).
   */
  addClassHeads(k: number): void {
    if (!(Number.isInteger(k) && k >= 2)) throw new Error(`addClassHeads: need K >= 2 classes, got ${k}`);
    if (this.class_tokens) throw new Error('addClassHeads: the class heads are already there');
    const dim = this.transformerDim, d8 = Math.floor(dim / 8);
    const tokens = new Embedding(k, dim);
    const mlps = new ModuleList(Array.from({ length: k }, () => new MLP(dim, dim, d8, 3)));
    noGrad(() => {
      const single = this.mask_tokens.weight.narrow(0, 0, 1);
      tokens.weight.copy_(single.expand(k, dim));
      const src = this.output_hypernetworks_mlps.items[0]!;
      for (const m of mlps.items) m.layers.items.forEach((l, i) => {
        l.weight.copy_(src.layers.items[i]!.weight);
        l.bias!.copy_(src.layers.items[i]!.bias!);
      });
    });
    this.class_tokens = this.child('class_tokens', tokens);
    this.class_hypernetworks_mlps = this.child('class_hypernetworks_mlps', mlps);
  }

  get numClasses(): number { return this.class_tokens?.num ?? 0; }

  /** K class logit maps (B, K, 4h, 4w) for prompt-free multi-class segmentation (addClassHeads first). */
  classMasks(imageEmbeddings: Tensor, imagePe: Tensor, sparsePromptEmbeddings: Tensor, densePromptEmbeddings: Tensor, batchedImages = false): Tensor {
    if (!this.class_tokens || !this.class_hypernetworks_mlps) throw new Error('classMasks: the decoder has no class heads (addClassHeads)');
    const k = this.class_tokens.num;
    const outputTokens = cat([this.iou_token.weight, this.mask_tokens.weight, this.class_tokens.weight], 0)
      .unsqueeze(0).expand(sparsePromptEmbeddings.shape[0], -1, -1);
    const tokens = cat([outputTokens, sparsePromptEmbeddings], 1);
    const [src, posSrc] = perPromptSet(imageEmbeddings, imagePe, densePromptEmbeddings, tokens.shape[0], batchedImages);
    const [b, c, h, w] = src.shape;
    const [hs, srcOut] = this.transformer.forward(src, posSrc, tokens);
    const classOut = hs.slice(1, 1 + this.numMaskTokens, 1 + this.numMaskTokens + k);
    const upscaled = this.output_upscaling.forward(srcOut.transpose(1, 2).reshape(b, c, h, w));
    const hyperIn = stack(this.class_hypernetworks_mlps.items.map((mlp, i) => mlp.forward(classOut.select(1, i))), 1);
    const [ub, uc, uh, uw] = upscaled.shape;
    return hyperIn.matmul(upscaled.view(ub, uc, uh * uw)).view(ub, k, uh, uw);
  }

  /** All numMaskTokens masks and IoU predictions. */
  predictMasks(imageEmbeddings: Tensor, imagePe: Tensor, sparsePromptEmbeddings: Tensor, densePromptEmbeddings: Tensor, batchedImages = false): [Tensor, Tensor] {
    // Intermediates are freed as soon as they are dead (see transformer.ts for why).
    return tidy(() => {
      // Concatenate the output tokens (IoU token, mask tokens) with the prompt tokens.
      const tokens = tidy(() => cat([
        cat([this.iou_token.weight, this.mask_tokens.weight], 0).unsqueeze(0).expand(sparsePromptEmbeddings.shape[0], -1, -1),
        sparsePromptEmbeddings,
      ], 1));
      const [src, posSrc] = perPromptSet(imageEmbeddings, imagePe, densePromptEmbeddings, tokens.shape[0], batchedImages);
      const [b, c, h, w] = src.shape;

      const [hs, srcOut] = this.transformer.forward(src, posSrc, tokens);
      src.dispose();
      posSrc.dispose();
      const iouTokenOut = hs.select(1, 0);
      const maskTokensOut = hs.slice(1, 1, 1 + this.numMaskTokens);

      // Upscale the mask embeddings and predict masks with the hypernetwork outputs.
      const upscaled = tidy(() => this.output_upscaling.forward(srcOut.transpose(1, 2).reshape(b, c, h, w)));
      srcOut.dispose();
      const hyperIn = tidy(() => stack(this.output_hypernetworks_mlps.items.map((mlp, i) => mlp.forward(maskTokensOut.select(1, i))), 1));
      const [ub, uc, uh, uw] = upscaled.shape;
      const masks = hyperIn.matmul(upscaled.view(ub, uc, uh * uw)).view(ub, -1, uh, uw);
      return [masks, this.iou_prediction_head.forward(iouTokenOut)];
    });
  }
}

/**
 * The decoder's image inputs, one per prompt set: src = image embedding + dense prompt embedding and
 * the positional encoding, either one image per prompt set (batchedImages) or the one image repeated
 * n times. With n = 1 the repeat would be a copy of the data as it is: skipped (the encoding is made
 * contiguous, a no-op for getDensePe's, so the transformer's ops see the layouts the copy had: they
 * decide which kernels run, and so the summation order).
 */
function perPromptSet(imageEmbeddings: Tensor, imagePe: Tensor, dense: Tensor, n: number, batchedImages: boolean): [Tensor, Tensor] {
  if (batchedImages && imageEmbeddings.shape[0] !== n) throw new Error(`batchedImages: ${imageEmbeddings.shape[0]} images for ${n} prompt sets`);
  if (batchedImages) return [imageEmbeddings.add(dense), imagePe.expand(n, -1, -1, -1)];
  if (n === 1) return [imageEmbeddings.add(dense), imagePe.contiguous()];
  return [tidy(() => repeatInterleave(imageEmbeddings, n).add(dense)), repeatInterleave(imagePe, n)];
}

function repeatInterleave(x: Tensor, n: number): Tensor {
  return callOp('aten::repeat_interleave.self_int', x, n, 0, null) as Tensor;
}

/** A plain MLP: numLayers Linear layers with ReLU between them (MaskFormer's). */
export class MLP extends SamModule {
  layers: ModuleList<Linear>;
  constructor(inputDim: number, hiddenDim: number, outputDim: number, readonly numLayers: number, readonly sigmoidOutput = false) {
    super();
    const h = Array<number>(numLayers - 1).fill(hiddenDim);
    const ins = [inputDim, ...h], outs = [...h, outputDim];
    this.layers = this.child('layers', new ModuleList(ins.map((n, i) => new Linear(n, outs[i]))));
  }
  forward(x: Tensor): Tensor {
    this.layers.items.forEach((layer, i) => { x = i < this.numLayers - 1 ? layer.forward(x).relu() : layer.forward(x); });
    return this.sigmoidOutput ? x.sigmoid() : x;
  }
}
