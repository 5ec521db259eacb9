// Gradient clipping by global L2 norm, as torch.nn.utils.clip_grad_norm_.
import { noGrad, stack, tidy, type Tensor } from '../tensor.js';

/** Scales all gradients so their global norm is at most maxNorm; returns the norm before clipping. */
export function clipGradNorm(params: Tensor[], maxNorm: number): number {
  return noGrad(() => tidy(() => {
    const grads = params.map((p) => p.grad).filter((g): g is Tensor => g !== null);
    if (!grads.length) return 0;
    const total = stack(grads.map((g) => g.norm(2))).norm(2);
    const totalNorm = total.item();
    const coef = maxNorm / (totalNorm + 1e-6);
    if (coef < 1) for (const g of grads) g.mul_(coef);
    return totalNorm;
  }));
}
