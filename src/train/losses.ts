// Task losses for binary segmentation (method.md, "Task set-up"). Every loss takes logits and binary
// targets, both float32 (B, 1, H, W), and returns a differentiable scalar. Intermediates are freed by
// tidy(); only the scalar survives (in the caller's scope).
import { F, tensor, tidy, type Device, type Tensor } from '../engine/index.js';

export type LossName = 'structure' | 'bce-dice' | 'balanced-bce';
export const LOSS_NAMES: readonly LossName[] = ['structure', 'bce-dice', 'balanced-bce'];

/** (logits, target) -> scalar loss. */
export type LossFn = (logits: Tensor, target: Tensor) => Tensor;

export interface BalanceOpts {
  /** Count positives / sum the Dice terms per image (default) or over the whole batch, as the
   *  SAM-Adapter / Conv-LoRA code does (the two agree for batch size 1). */
  perImage?: boolean;
}

function checkShapes(logits: Tensor, target: Tensor, who: string): void {
  const a = logits.shape, b = target.shape;
  if (a.length !== 4 || a.length !== b.length || a.some((d, i) => d !== b[i]))
    throw new Error(`${who}: logits [${a}] and target [${b}] must both be (B, 1, H, W) of the same size`);
}

/**
 * Structure loss of PraNet / Conv-LoRA: weighted BCE + weighted IoU with weights
 * w = 1 + 5·|avgpool31(y) − y| (large near edges). avg_pool2d keeps count_include_pad=True, as the
 * reference, so the zero padding pulls the average down along the image border too.
 * The BCE is per pixel (reduction 'none') and then weighted, as intended; PraNet's literal
 * `reduce='none'` is a legacy flag that torch reads as reduction 'mean', which would leave the BCE unweighted.
 */
export function structureLoss(logits: Tensor, target: Tensor): Tensor {
  checkShapes(logits, target, 'structureLoss');
  return tidy(() => {
    const weit = F.avgPool2d(target, 31, { stride: 1, padding: 15, countIncludePad: true }).sub(target).abs().mul(5).add(1);
    const bce = F.binaryCrossEntropyWithLogits(logits, target, { reduction: 'none' });
    const wbce = weit.mul(bce).sum([2, 3]).div(weit.sum([2, 3]));
    const pred = logits.sigmoid();
    const inter = pred.mul(target).mul(weit).sum([2, 3]);
    const union = pred.add(target).mul(weit).sum([2, 3]);
    const wiou = inter.add(1).div(union.sub(inter).add(1)).rsub(1);
    return wbce.add(wiou).mean();
  });
}

/**
 * Balanced BCE (shadow detection, Conv-LoRA's BBCE): positive pixels weighted by #neg/#total,
 * negative pixels by #pos/#total, then the mean over all pixels. Written as BCE with
 * pos_weight = #neg/#pos and weight = #pos/#total, as the reference; the 1e-10 keeps an image
 * without positives finite (its loss is then 0).
 */
export function balancedBceLoss(logits: Tensor, target: Tensor, o: BalanceOpts = {}): Tensor {
  checkShapes(logits, target, 'balancedBceLoss');
  return tidy(() => {
    const dims = (o.perImage ?? true) ? [1, 2, 3] : [0, 1, 2, 3];
    const pos = target.sum(dims, true).add(1e-10);
    const neg = target.rsub(1).sum(dims, true);
    return F.binaryCrossEntropyWithLogits(logits, target, { posWeight: neg.div(pos), weight: pos.div(pos.add(neg)) });
  });
}

/** Soft Dice loss on sigmoid(logits), smooth 1: 1 − (2·Σpy + 1) / (Σp + Σy + 1), per image then averaged. */
export function diceLoss(logits: Tensor, target: Tensor, o: BalanceOpts = {}): Tensor {
  checkShapes(logits, target, 'diceLoss');
  return tidy(() => {
    const dims = (o.perImage ?? true) ? [1, 2, 3] : [0, 1, 2, 3];
    const pred = logits.sigmoid();
    const inter = pred.mul(target).sum(dims);
    const denom = pred.add(target).sum(dims);
    return inter.mul(2).add(1).div(denom.add(1)).rsub(1).mean();
  });
}

/** Mean BCE with logits + Dice loss (equal weights). */
export function bceDiceLoss(logits: Tensor, target: Tensor, o: BalanceOpts = {}): Tensor {
  checkShapes(logits, target, 'bceDiceLoss');
  return tidy(() => F.binaryCrossEntropyWithLogits(logits, target).add(diceLoss(logits, target, o)));
}

/** The loss named by the run config's `loss` key. */
export function lossByName(name: LossName): LossFn {
  switch (name) {
    case 'structure': return structureLoss;
    case 'bce-dice': return (x, y) => bceDiceLoss(x, y);
    case 'balanced-bce': return (x, y) => balancedBceLoss(x, y);
    default: throw new Error(`unknown loss '${String(name)}' (known: ${LOSS_NAMES.join(', ')})`);
  }
}

export interface MulticlassLossOpts {
  /** Per-class weights of the cross-entropy (PyTorch's `weight`: the mean is weighted too). */
  weight?: readonly number[] | null;
  /** Target value whose pixels count nowhere (e.g. 255). */
  ignoreIndex?: number | null;
  /** Adds this times (1 − mean soft Dice over classes) to the cross-entropy (0: none). */
  diceWeight?: number;
}

/**
 * Multi-class loss: cross-entropy over K classes on logits (B, K, H, W) and class-index targets
 * (B, H, W, int64), as torch.nn.functional.cross_entropy(weight, ignore_index) computes it —
 * Σ w[t]·(−log p_t) / Σ w[t] over the valid pixels — plus optionally a soft Dice over the classes
 * (softmax probabilities against the one-hot target, valid pixels only, mean over classes).
 */
export function multiclassLoss(logits: Tensor, target: Tensor, o: MulticlassLossOpts = {}): Tensor {
  const [B, K, H, W] = logits.shape;
  const t = target.shape;
  if (logits.shape.length !== 4 || t.length !== 3 || t[0] !== B || t[1] !== H || t[2] !== W)
    throw new Error(`multiclassLoss: logits (B, K, H, W) [${logits.shape}] and targets (B, H, W) [${t}] do not match`);
  if (o.weight && o.weight.length !== K) throw new Error(`multiclassLoss: ${o.weight.length} class weights for ${K} classes`);
  return tidy(() => {
    const valid = o.ignoreIndex === null || o.ignoreIndex === undefined ? null : target.ne(o.ignoreIndex);
    const safe = valid ? target.mul(valid.to('int64')) : target;  // ignored pixels point at class 0, then weigh 0
    const logp = logits.logSoftmax(1);
    const nll = logp.gather(1, safe.unsqueeze(1)).squeeze(1).neg();  // (B, H, W)
    let w = o.weight ? tensor(Float32Array.from(o.weight), [K], { device: logits.device as Device }).indexSelect(0, safe.flatten()).view(B, H, W) : null;
    if (valid) w = w ? w.mul(valid.float()) : valid.float();
    const ce = w ? nll.mul(w).sum().div(w.sum()) : nll.mean();
    if (!o.diceWeight) return ce;
    const p = logits.softmax(1);
    let y = safe.oneHot(K).permute(0, 3, 1, 2).float();  // (B, K, H, W)
    let q = p;
    if (valid) {
      const v = valid.unsqueeze(1).float();
      y = y.mul(v);
      q = p.mul(v);
    }
    const inter = q.mul(y).sum([0, 2, 3]);
    const denom = q.sum([0, 2, 3]).add(y.sum([0, 2, 3]));
    const dice = inter.mul(2).add(1e-6).div(denom.add(1e-6)).mean();
    return ce.add(dice.rsub(1).mul(o.diceWeight));
  });
}
