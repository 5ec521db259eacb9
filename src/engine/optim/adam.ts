// Adam and AdamW, the same arithmetic as torch.optim's single-tensor implementation.
import { zerosLike, type Tensor } from '../tensor.js';
import { Optimizer, type GroupInput } from './optimizer.js';

export interface AdamHyper { lr: number; betas: [number, number]; eps: number; weightDecay: number }

abstract class AdamBase extends Optimizer<AdamHyper> {
  protected abstract readonly decoupled: boolean;
  protected initState(p: Tensor): Record<string, Tensor> {
    return { expAvg: zerosLike(p).keep(), expAvgSq: zerosLike(p).keep() };
  }
  protected update(p: Tensor, grad: Tensor, s: Record<string, Tensor>, step: number, h: AdamHyper): void {
    const [b1, b2] = h.betas;
    if (h.weightDecay !== 0) {
      if (this.decoupled) p.mul_(1 - h.lr * h.weightDecay);  // AdamW: decay the weights directly
      else grad = grad.add(p, h.weightDecay);  // Adam: L2 term in the gradient
    }
    s.expAvg.lerp_(grad, 1 - b1);
    s.expAvgSq.mul_(b2).addcmul_(grad, grad, 1 - b2);
    const bc1 = 1 - b1 ** step;
    const bc2Sqrt = Math.sqrt(1 - b2 ** step);
    const denom = s.expAvgSq.sqrt().div_(bc2Sqrt).add_(h.eps);
    p.addcdiv_(s.expAvg, denom, -h.lr / bc1);
  }
}

export class Adam extends AdamBase {
  protected readonly decoupled = false;
  constructor(params: GroupInput<AdamHyper>, o: Partial<AdamHyper> = {}) {
    super(params, { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 0, ...o });
  }
}

export class AdamW extends AdamBase {
  protected readonly decoupled = true;
  constructor(params: GroupInput<AdamHyper>, o: Partial<AdamHyper> = {}) {
    super(params, { lr: 1e-3, betas: [0.9, 0.999], eps: 1e-8, weightDecay: 1e-2, ...o });
  }
}
