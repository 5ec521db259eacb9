// NAS-LoRA: h = W0·x + s·B·cell(A·x), the cell searched over spatial ops on the token map
// (per attention window in windowed blocks, over the whole grid in global blocks — whatever grid
// the wrapped qkv layer is called on). With partialChannels K > 1 this is NAS-PC-LoRA: only
// ⌈r/K⌉ channels go through the cell, the rest pass unchanged, then channels are shuffled.
import { cat, eye, noGrad, randn, tidy, type Conv2d, type Device, type Tensor } from '../../engine/index.js';
import { AdapterLayer, LowRankBranch, fromMap, toMap, type LayerOpts } from '../base.js';
import { MixedCell } from './cell.js';

/**
 * Initialisation of the cell's convolutions: 'default' = Kaiming-uniform (a=√5), as nn.Conv2d;
 * 'dirac' = the identity map (a centred one-hot kernel per channel, any dilation) plus Gaussian
 * noise of std DIRAC_NOISE, so that at α-uniform the cell equals `skip` and the search compares ops
 * that have learned something, not random kernels against a free identity.
 */
export type OpsInit = 'default' | 'dirac';
export const DIRAC_NOISE = 0.01;

export type NasOpts = LayerOpts & { ops: string[]; partialChannels: number; opsInit?: OpsInit };

export class NasBranch extends LowRankBranch {
  readonly cell: MixedCell;
  readonly cellChannels: number;
  /** The discretized per-token cell (skip, conv_1x1, or a PC shuffle of them) has been folded into B: mid() is the identity. */
  folded = false;
  constructor(inF: number, outF: number, rank: number, ops: string[], readonly k: number, opsInit: OpsInit = 'default') {
    super(inF, outF, rank);
    if (!Number.isInteger(k) || k < 1 || k > rank) throw new Error(`partial_channels K must be an integer in [1, rank=${rank}], got ${k}`);
    this.cellChannels = Math.ceil(rank / k);
    this.cell = this.child('cell', new MixedCell(this.cellChannels, ops));
    if (opsInit === 'dirac') diracInit(this.cell, this.cellChannels);
  }

  /**
   * The cheap fix stage: a discretized cell that acts per token (an r×r matrix M) is folded into
   * the up-projection, B ← B·M, and no longer computed, so the branch costs what LoRA's costs.
   * The function is unchanged; from here on B·M trains as one matrix. Returns false (and changes
   * nothing) for a spatial cell.
   */
  fold(): boolean {
    if (this.folded) return true;
    if (!this.cell.derived || !this.cell.isPerToken()) return false;
    noGrad(() => tidy(() => {
      const mT = this.mid(eye(this.rank, { device: this.B.weight.device as Device }).reshape(this.rank, 1, 1, this.rank)).reshape(this.rank, this.rank);  // row i = M·e_i
      this.B.weight.copy_(this.B.weight.matmul(mT.transpose(0, 1)));
    }));
    this.folded = true;
    this.cell.requiresGrad_(false);
    return true;
  }

  protected mid(z: Tensor): Tensor {
    if (this.folded) return z;
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
      const out = this.mid(eye(this.rank, { device: this.B.weight.device as Device }).reshape(this.rank, 1, 1, this.rank)).reshape(this.rank, this.rank);
      return this.B.weight.matmul(out.transpose(0, 1)).matmul(this.A.weight);
    }));
  }
}

function diracInit(cell: MixedCell, r: number): void {
  noGrad(() => {
    for (const op of cell.candidates) {
      if (!op.conv || op.name === 'skip') continue;
      const w = (cell.ops.get(op.name) as Conv2d).weight;
      const k = op.conv.k;
      const c = (k - 1) / 2;
      tidy(() => {
        w.copy_(randn(w.shape, { device: w.device as Device }).mul(DIRAC_NOISE));
        for (let i = 0; i < r; i++) w.select(0, i).select(0, i).select(0, c).select(0, c).add_(1);
      });
    }
  });
}

export class NasLoraLayer extends AdapterLayer<NasOpts> {
  protected makeBranch(i: number, o: number): LowRankBranch {
    return new NasBranch(i, o, this.opts.rank, this.opts.ops, this.opts.partialChannels, this.opts.opsInit);
  }
  cells(): MixedCell[] { return this.branches.map((b) => (b as NasBranch).cell); }
}
