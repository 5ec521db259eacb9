// Conv-LoRA: h = W0·x + s·B·(z + E_k(z)), z = A·x as a token map. Not mergeable: the experts stay.
import type { Tensor } from '../../engine/index.js';
import { AdapterLayer, LowRankBranch, fromMap, toMap, type LayerOpts } from '../base.js';
import { ScaleMoE } from './moe.js';

export type ConvLoraOpts = LayerOpts & { experts: number; lossCoef: number; noisyGating: boolean };

export class ConvLoraBranch extends LowRankBranch {
  readonly moe: ScaleMoE;
  constructor(inF: number, outF: number, rank: number, experts: number, lossCoef: number, noisy: boolean) {
    super(inF, outF, rank);
    this.moe = this.child('moe', new ScaleMoE(rank, experts, lossCoef, noisy));
  }
  protected mid(z: Tensor): Tensor { return fromMap(this.moe.forward(toMap(z))); }
  mergeMatrix(): null { return null; }
}

export class ConvLoraLayer extends AdapterLayer<ConvLoraOpts> {
  protected makeBranch(i: number, o: number): LowRankBranch {
    return new ConvLoraBranch(i, o, this.opts.rank, this.opts.experts, this.opts.lossCoef, this.opts.noisyGating);
  }
  /** Sum of this layer's load-balancing losses from the last training forward. */
  auxLoss(): Tensor | null {
    let s: Tensor | null = null;
    for (const b of this.branches) {
      const l = (b as ConvLoraBranch).moe.auxLoss;
      if (l) s = s ? s.add(l) : l;
    }
    return s;
  }
}
