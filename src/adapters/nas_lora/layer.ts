// NAS-LoRA: h = W0·x + s·B·cell(A·x), the cell searched over spatial ops on the token map
// (per attention window in windowed blocks, over the whole grid in global blocks — whatever grid
// the wrapped qkv layer is called on). With partialChannels K > 1 this is NAS-PC-LoRA: only
// ⌈r/K⌉ channels go through the cell, the rest pass unchanged, then channels are shuffled.
import { cat, eye, noGrad, tidy, type Tensor } from '../../engine/index.js';
import { AdapterLayer, LowRankBranch, fromMap, toMap, type LayerOpts } from '../base.js';
import { MixedCell } from './cell.js';

export type NasOpts = LayerOpts & { ops: string[]; partialChannels: number };

export class NasBranch extends LowRankBranch {
  readonly cell: MixedCell;
  readonly cellChannels: number;
  constructor(inF: number, outF: number, rank: number, ops: string[], readonly k: number) {
    super(inF, outF, rank);
    if (!Number.isInteger(k) || k < 1 || k > rank) throw new Error(`partial_channels K must be an integer in [1, rank=${rank}], got ${k}`);
    this.cellChannels = Math.ceil(rank / k);
    this.cell = this.child('cell', new MixedCell(this.cellChannels, ops));
  }

  protected mid(z: Tensor): Tensor {
    const m = toMap(z);  // (B, r, H, W)
    if (this.k === 1) return fromMap(this.cell.forward(m));
    const c = this.cellChannels;
    let y = cat([this.cell.forward(m.narrow(1, 0, c)), m.narrow(1, c, this.rank - c)], 1);
    if (this.rank % this.k === 0) {
      // PC-DARTS channel shuffle: (B, K, r/K, H, W) → swap the two channel axes.
      const [b, r, h, w] = y.shape;
      y = y.reshape(b, this.k, r / this.k, h, w).transpose(1, 2).reshape(b, r, h, w);
    }
    return fromMap(y);
  }

  mergeMatrix(): Tensor | null {
    if (!this.cell.isPerToken()) return null;
    // A per-token map is an r×r matrix M; read it off by sending the basis vectors through mid()
    // as 1×1 token grids (row i of the result is M·e_i).
    return noGrad(() => tidy(() => {
      const out = this.mid(eye(this.rank).reshape(this.rank, 1, 1, this.rank)).reshape(this.rank, this.rank);
      return this.B.weight.matmul(out.transpose(0, 1)).matmul(this.A.weight);
    }));
  }
}

export class NasLoraLayer extends AdapterLayer<NasOpts> {
  protected makeBranch(i: number, o: number): LowRankBranch {
    return new NasBranch(i, o, this.opts.rank, this.opts.ops, this.opts.partialChannels);
  }
  cells(): MixedCell[] { return this.branches.map((b) => (b as NasBranch).cell); }
}
