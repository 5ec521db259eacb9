// SGD with momentum, dampening, Nesterov and L2 weight decay, as torch.optim.SGD.
import type { Tensor } from '../tensor.js';
import { Optimizer, type GroupInput } from './optimizer.js';

export interface SGDHyper { lr: number; momentum: number; dampening: number; weightDecay: number; nesterov: boolean }

export class SGD extends Optimizer<SGDHyper> {
  constructor(params: GroupInput<SGDHyper>, o: Partial<SGDHyper> = {}) {
    super(params, { lr: 1e-2, momentum: 0, dampening: 0, weightDecay: 0, nesterov: false, ...o });
  }
  protected initState(): Record<string, Tensor> { return {}; }
  protected update(p: Tensor, grad: Tensor, s: Record<string, Tensor>, step: number, h: SGDHyper): void {
    let d = h.weightDecay !== 0 ? grad.add(p, h.weightDecay) : grad;
    if (h.momentum !== 0) {
      if (!s.momentumBuffer) s.momentumBuffer = d.detach().clone().keep();  // first step: buf = d
      else s.momentumBuffer.mul_(h.momentum).add_(d, 1 - h.dampening);
      d = h.nesterov ? d.add(s.momentumBuffer, h.momentum) : s.momentumBuffer;
    }
    p.add_(d, -h.lr);
  }
}
