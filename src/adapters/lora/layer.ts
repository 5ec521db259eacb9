// LoRA (Hu et al. 2021): h = W0·x + s·B·A·x. Merges into W0 exactly.
import type { Tensor } from '../../engine/index.js';
import { AdapterLayer, LowRankBranch } from '../base.js';

export class LoraBranch extends LowRankBranch {
  protected mid(z: Tensor): Tensor { return z; }
  mergeMatrix(): Tensor { return this.B.weight.matmul(this.A.weight); }
}

export class LoraLayer extends AdapterLayer {
  protected makeBranch(i: number, o: number): LowRankBranch { return new LoraBranch(i, o, this.opts.rank); }
}
