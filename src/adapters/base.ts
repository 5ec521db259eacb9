// What every encoder adapter is: a frozen base Linear plus a trainable low-rank branch,
//   h = W0·x + s·B·(g(A·x)),
// where g is the method's part (identity for LoRA, a searched cell for NAS-LoRA, experts for
// Conv-LoRA). The base weight and bias keep their names ('…qkv.weight', '…qkv.bias'), so a model
// with adapters still loads plain SAM checkpoints; adapter tensors live under their own names.
import { F, Linear, Module, noGrad, tidy, type Tensor } from '../engine/index.js';

export interface LowRankOpts { rank: number; alpha: number; dropout: number }

/** Which base output rows an adapter writes to: all of them, or the q and v slices of a fused qkv. */
export type OutSlice = { start: number; length: number };

export type LayerOpts = LowRankOpts & { qvOnly?: boolean };

export abstract class AdapterLayer<O extends LayerOpts = LayerOpts> extends Module {
  readonly base: Linear;
  readonly scale: number;
  /** The output slices the branch adds to (one branch per slice). */
  readonly slices: OutSlice[];
  readonly branches: LowRankBranch[];
  /** Child names of the branches: 'adapter', or 'q' and 'v' with qvOnly. */
  readonly branchNames: string[];
  merged = false;

  constructor(base: Linear, readonly opts: O) {
    super();
    this.base = base;
    this.param('weight', base.weight);
    if (base.bias) this.param('bias', base.bias);
    this.scale = opts.alpha / opts.rank;
    const out = base.outFeatures;
    if (opts.qvOnly && out % 3 !== 0) throw new Error(`qv_only needs a fused qkv layer (out ${out} is not divisible by 3)`);
    const d = out / 3;
    this.slices = opts.qvOnly ? [{ start: 0, length: d }, { start: 2 * d, length: d }] : [{ start: 0, length: out }];
    this.branchNames = opts.qvOnly ? ['q', 'v'] : ['adapter'];
    this.branches = this.slices.map((s, i) => this.child(this.branchNames[i], this.makeBranch(base.inFeatures, s.length)));
  }

  protected abstract makeBranch(inFeatures: number, outFeatures: number): LowRankBranch;

  forward(x: Tensor): Tensor {
    const h = F.linear(x, this.base.weight, this.base.bias);
    // merge() only sets the flag once W0 holds the branch (it refuses otherwise), so a merged layer
    // is W0 alone; re-checking mergeMatrix() here would rebuild B·M·A on every call.
    if (this.merged) return h;
    const xd = this.training && this.opts.dropout > 0 ? F.dropout(x, this.opts.dropout, true) : x;
    const deltas = this.branches.map((b) => b.forward(xd).mul(this.scale));
    if (this.slices.length === 1) return h.add(deltas[0]);
    // q and v slices: pad each delta into its place along the last dim.
    const out = h.shape[h.ndim - 1];
    let acc = h;
    this.slices.forEach((s, i) => {
      acc = acc.add(F.pad(deltas[i], [s.start, out - s.start - s.length]));
    });
    return acc;
  }

  /** This layer's adapter tensors (everything but the base weight and bias), named under prefix. */
  adapterParameters(prefix = ''): Array<[string, Tensor]> {
    return this.children().flatMap(([n, m]) => m.namedParameters(prefix ? `${prefix}.${n}` : n));
  }

  /** True when W0 can absorb the branch exactly (no spatial op remains). */
  mergeable(): boolean {
    return this.branches.every((b) => b.mergeMatrix() !== null);
  }

  /** W0 ← W0 + s·B·M·A for every branch; exact, refuses otherwise. */
  merge(): void {
    if (this.merged) return;
    if (!this.mergeable()) throw new Error('this adapter keeps a spatial branch and cannot be merged into W0');
    noGrad(() => tidy(() => {
      this.branches.forEach((b, i) => {
        const s = this.slices[i];
        const delta = b.mergeMatrix()!.mul(this.scale);  // (out_slice, in)
        this.base.weight.narrow(0, s.start, s.length).add_(delta);
      });
    }));
    this.merged = true;
  }

  /** Undoes merge() (W0 ← W0 − s·B·M·A). */
  unmerge(): void {
    if (!this.merged) return;
    noGrad(() => tidy(() => {
      this.branches.forEach((b, i) => {
        const s = this.slices[i];
        this.base.weight.narrow(0, s.start, s.length).add_(b.mergeMatrix()!.mul(-this.scale));
      });
    }));
    this.merged = false;
  }
}

/** One A → g → B branch. */
export abstract class LowRankBranch extends Module {
  readonly A: Linear;
  readonly B: Linear;
  constructor(readonly inFeatures: number, readonly outFeatures: number, readonly rank: number) {
    super();
    // A: Kaiming-uniform (a=√5) as nn.Linear's default; B: zeros, so training starts at W0.
    this.A = this.child('lora_A', new Linear(inFeatures, rank, false));
    this.B = this.child('lora_B', new Linear(rank, outFeatures, false));
    noGrad(() => this.B.weight.zero_());
  }

  /** x (…, in) → B·g(A·x) (…, out), unscaled. */
  forward(x: Tensor): Tensor {
    return this.B.forward(this.mid(this.A.forward(x)));
  }

  /** g: the part between A and B, on z = A·x of shape (…, r). */
  protected abstract mid(z: Tensor): Tensor;

  /** B·M·A as an (out, in) matrix when g is linear per token (M r×r), else null. */
  abstract mergeMatrix(): Tensor | null;
}

/** z (B, H, W, r) → (B, r, H, W) and back: the token grid as a feature map for spatial ops. */
export function toMap(z: Tensor): Tensor {
  if (z.ndim !== 4) throw new Error(`spatial adapters need a (batch, H, W, channels) token grid, got shape [${z.shape}]`);
  return z.permute(0, 3, 1, 2);
}
export function fromMap(m: Tensor): Tensor {
  return m.permute(0, 2, 3, 1);
}
