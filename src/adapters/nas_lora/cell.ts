// The searchable cell between A and B: Σ_i softmax(α)_i · O_i(z) on the r-channel token map.
// Three states: searching (all ops, α-weighted), discretized (the arg-max op alone, weight 1, the
// others no longer computed), re-parameterized (the conv-type ops summed into one kernel).
import { F, Module, ModuleDict, noGrad, rand, tensor, tidy, zeros, type Device, type Tensor } from '../../engine/index.js';
import { denseKernel, embedKernel, getOp, span, type CandidateOp } from './ops.js';

/** One dense kernel for the conv-type ops, plus the other ops (pools) as weighted terms. */
interface Reparam { kernel: Tensor | null; size: number; others: Array<{ op: CandidateOp; w: number }> }

/**
 * How a searching cell computes its output while training:
 *  - 'mixed' (DARTS): every op, weighted by softmax(α);
 *  - 'gumbel' (GDAS, Dong & Yang, CVPR 2019): one op per step, sampled from Gumbel-softmax(α / τ);
 *    only that op is computed; its output is multiplied by 1 + y_k − stop_grad(y_k) (value 1), so
 *    α receives the straight-through gradient ⟨∂L/∂out, O_k(z)⟩·∂y_k/∂α.
 * In eval mode a 'gumbel' cell computes its current arg-max op alone (the architecture it would
 * derive), a 'mixed' cell the weighted mix.
 */
export type Sampling = 'mixed' | 'gumbel';

export class MixedCell extends Module {
  readonly alpha: Tensor;
  readonly ops: ModuleDict;
  readonly candidates: CandidateOp[];
  /** The arg-max op once discretized. */
  derived: string | null = null;
  reparam: Reparam | null = null;
  /** Search-mode speed-up: fold the conv-type ops into one kernel (exact up to float rounding). */
  fuseConvs = true;
  sampling: Sampling = 'mixed';
  /** Gumbel-softmax temperature (set by the trainer's schedule). */
  tau = 1;
  /** Ops still in the search (progressive shrinking drops the others: weight 0, never computed). */
  active: boolean[];
  /** The op computed at the last sampled forward (tests, reports). */
  lastSampled: string | null = null;

  constructor(readonly channels: number, opNames: string[]) {
    super();
    if (!opNames.length) throw new Error('a NAS-LoRA cell needs at least one candidate op');
    this.candidates = opNames.map(getOp);
    this.alpha = this.param('alpha', zeros([opNames.length]));  // α = 0: the uniform mix
    this.ops = this.child('ops', new ModuleDict(this.candidates.map((o) => [o.name, o.build(channels)])));
    this.active = this.candidates.map(() => true);
  }

  /** α with the dropped ops at −∞ (their softmax weight is exactly 0, their α gets no gradient). */
  logits(): Tensor {
    if (this.active.every((a) => a)) return this.alpha;
    return this.alpha.add(tensor(Float32Array.from(this.active, (a) => (a ? 0 : -Infinity)), undefined, { device: this.alpha.device as Device }));
  }

  /** Current mixing weights (softmax of α over the active ops), or one-hot once discretized. */
  weights(): number[] {
    if (this.derived) return this.candidates.map((o) => (o.name === this.derived ? 1 : 0));
    return this.softmax();
  }

  /** softmax(α) over the active ops, as numbers. */
  private softmax(): number[] {
    return noGrad(() => tidy(() => [...this.logits().softmax(0).toArray()]));
  }

  /** Drops all but the `keep` highest-weight active ops; returns the names dropped. */
  shrink(keep: number): string[] {
    if (this.derived) return [];
    const w = this.weights();
    const order = this.candidates.map((_, i) => i).filter((i) => this.active[i]).sort((a, b) => w[b] - w[a] || a - b);
    const drop = order.slice(Math.max(1, keep));
    for (const i of drop) {
      this.active[i] = false;
      this.ops.get(this.candidates[i].name)!.requiresGrad_(false);
    }
    return drop.map((i) => this.candidates[i].name);
  }

  forward(z: Tensor): Tensor {
    if (this.reparam) return this.forwardReparam(z, this.reparam);
    if (this.derived) {
      const op = this.candidates.find((o) => o.name === this.derived)!;
      return op.apply(z, this.ops.get(op.name)!);
    }
    if (this.sampling === 'gumbel') return this.forwardSampled(z);
    const w = this.logits().softmax(0);
    // Σ_i w_i·conv(z, K_i) = conv(z, Σ_i w_i·K_i) for convs of one dilation (kernels zero-padded to
    // the group's largest): the same function and gradients, one convolution over the data per
    // dilation instead of one per op. 1×1 kernels (skip, conv_1x1) join any group.
    const groups = new Map<number, Array<{ op: CandidateOp; i: number }>>();
    if (this.fuseConvs) {
      this.candidates.forEach((op, i) => {
        if (op.conv) {
          const d = op.conv.k === 1 ? 0 : op.conv.dilation;
          groups.set(d, [...(groups.get(d) ?? []), { op, i }]);
        }
      });
      const ones = groups.get(0);
      if (ones) {  // put the 1×1 ops into the dilation-1 group, else any group
        groups.delete(0);
        const target = groups.has(1) ? 1 : groups.size ? [...groups.keys()][0] : 1;
        groups.set(target, [...(groups.get(target) ?? []), ...ones]);
      }
      for (const [d, g] of groups) if (g.length < 2) groups.delete(d);
    }
    for (const [d, g] of groups) {
      const on = g.filter((e) => this.active[e.i]);
      if (on.length < 2) groups.delete(d);
      else groups.set(d, on);
    }
    const fused = new Set([...groups.values()].flat().map((e) => e.i));
    let out: Tensor | null = null;
    const add = (y: Tensor) => { out = out ? out.add(y) : y; };
    this.candidates.forEach((op, i) => {
      if (!fused.has(i) && this.active[i]) add(op.apply(z, this.ops.get(op.name)!).mul(w.select(0, i)));
    });
    for (const [d, g] of groups) {
      const K = Math.max(...g.map((e) => e.op.conv!.k));
      let kernel: Tensor | null = null;
      for (const { op, i } of g) {
        const k = embedKernel(op.conv!.weight(this.ops.get(op.name)!, this.channels, this.alpha.device as Device), 1, K).mul(w.select(0, i));
        kernel = kernel ? kernel.add(k) : k;
      }
      add(F.conv2d(z, kernel!, null, { padding: (d * (K - 1)) / 2, dilation: d }));
    }
    return out!;
  }

  /** One op sampled from Gumbel-softmax(α/τ) while training; the arg-max op in eval mode. */
  private forwardSampled(z: Tensor): Tensor {
    if (!this.training) {
      const w = this.weights();
      const op = this.candidates[w.indexOf(Math.max(...w))];
      this.lastSampled = op.name;
      return op.apply(z, this.ops.get(op.name)!);
    }
    const logits = this.logits();
    // g = −log(−log u): Gumbel noise from libtorch's generator (re-seeded per step: exact resume).
    const u = rand(logits.shape, { device: logits.device as Device }).clamp(1e-10, 1 - 1e-7);
    const y = logits.add(u.log().neg().log().neg()).div(this.tau).softmax(0);
    const k = y.argmax().item();
    const op = this.candidates[k];
    this.lastSampled = op.name;
    const yk = y.select(0, k);
    return op.apply(z, this.ops.get(op.name)!).mul(yk.sub(yk.detach()).add(1));
  }

  /** Weight of the arg-max op minus the runner-up's (1 when only one op is left). */
  margin(): number {
    const w = [...this.weights()].sort((a, b) => b - a);
    return w[0] - (w[1] ?? 0);
  }

  /**
   * Keeps only the arg-max op; α and the other ops' weights stop receiving gradients. With
   * tieMargin > 0, the cheapest op whose weight is within tieMargin of the maximum wins instead:
   * when the search cannot tell ops apart, do not pay for a spatial one.
   */
  discretize(tieMargin = 0): string {
    const w = this.weights();
    const max = Math.max(...w);
    const near = this.candidates.map((o, i) => ({ o, i })).filter(({ i }) => w[i] > 0 && w[i] >= max - tieMargin);
    const best = this.derived
      ? this.candidates.findIndex((o) => o.name === this.derived)
      : near.reduce((a, b) => (b.o.cost(this.channels) < a.o.cost(this.channels) || (b.o.cost(this.channels) === a.o.cost(this.channels) && w[b.i] > w[a.i]) ? b : a)).i;
    this.derived = this.candidates[best].name;
    this.alpha.requiresGrad = false;
    for (const op of this.candidates) {
      if (op.name !== this.derived) this.ops.get(op.name)!.requiresGrad_(false);
    }
    return this.derived;
  }

  /**
   * Collapses the conv-type ops (convs, dilated convs, skip) into one dense kernel, weighted as
   * now (softmax(α), or the derived op alone). Pools stay as their own weighted terms; exact.
   */
  reparameterize(): void {
    const w = this.weights();
    const convs = this.candidates.map((o, i) => ({ o, w: w[i] })).filter(({ o, w: wi }) => o.kind === 'conv' && wi !== 0);
    const size = Math.max(1, ...convs.map(({ o }) => span(o)));
    const kernel = convs.length
      ? noGrad(() => tidy(() => {
        let k: Tensor | null = null;
        for (const { o, w: wi } of convs) {
          const t = denseKernel(o, this.ops.get(o.name)!, this.channels, size, this.alpha.device as Device).mul(wi);
          k = k ? k.add(t) : t;
        }
        return k!;
      })).keep()
      : null;
    const others = this.candidates.map((op, i) => ({ op, w: w[i] })).filter(({ op, w: wi }) => op.kind !== 'conv' && op.kind !== 'zero' && wi !== 0);
    this.reparam?.kernel?.dispose();
    this.reparam = { kernel, size, others };
  }

  private forwardReparam(z: Tensor, r: Reparam): Tensor {
    let out: Tensor | null = r.kernel ? F.conv2d(z, r.kernel, null, { padding: (r.size - 1) / 2 }) : null;
    for (const { op, w } of r.others) {
      const y = op.apply(z, this.ops.get(op.name)!).mul(w);
      out = out ? out.add(y) : y;
    }
    return out ?? z.mul(0);
  }

  /** True when every op that still contributes acts per token (the cell is an r×r matrix). */
  isPerToken(): boolean {
    const w = this.weights();
    return this.candidates.every((o, i) => w[i] === 0 || o.perToken);
  }

  /** What the cell is now, for reports. */
  describe(): { state: 'search' | 'discretized' | 'reparameterized'; derived: string | null; weights: Record<string, number> } {
    const w = this.weights();
    return {
      state: this.reparam ? 'reparameterized' : this.derived ? 'discretized' : 'search',
      derived: this.derived,
      weights: Object.fromEntries(this.candidates.map((o, i) => [o.name, w[i]])),
    };
  }

  /** softmax(α) over the active ops, whatever the state (discretized cells included): what the search concluded. */
  searchWeights(): Record<string, number> {
    const w = this.softmax();
    return Object.fromEntries(this.candidates.map((o, i) => [o.name, w[i]]));
  }

  protected override deviceTensors(): Tensor[] { return this.reparam?.kernel ? [this.reparam.kernel] : []; }

  override dispose(): void {
    this.reparam?.kernel?.dispose();
    super.dispose();
  }
}
