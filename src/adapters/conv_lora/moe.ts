// Conv-LoRA's mixture of scale experts (Zhong et al., ICLR 2024, reference implementation):
// expert i upsamples the r-channel map bicubically by i (1 = as is), applies a 3×3 conv (bias 0)
// and GELU, and resizes back; a noisy top-1 gate picks one expert per image (per window in
// windowed blocks). The expert output is NOT scaled by its gate value — the gate learns only
// through the load-balancing loss, 0.01·(cv²(importance) + cv²(load)).
import { Conv2d, F, Module, ModuleList, noGrad, randnLike, tensor, zeros, zerosLike, type Device, type Tensor } from '../../engine/index.js';

export class ScaleExpert extends Module {
  readonly conv: Conv2d;
  constructor(r: number, readonly factor: number) {
    super();
    this.conv = this.child('conv', new Conv2d(r, r, 3, { padding: 1 }));
    noGrad(() => this.conv.bias!.zero_());
  }
  forward(m: Tensor): Tensor {
    const [, , h, w] = m.shape;
    const up = this.factor === 1 ? m : F.interpolate(m, { size: [h * this.factor, w * this.factor], mode: 'bicubic' });
    const y = this.conv.forward(up).gelu();
    return this.factor === 1 ? y : F.interpolate(y, { size: [h, w], mode: 'bicubic' });
  }
}

/** cv² = var/mean² (unbiased var), 0 for a single expert. */
export function cvSquared(x: Tensor): Tensor {
  if (x.shape[0] === 1) return zeros([], { device: x.device as Device });
  return x.var().div(x.mean().square().add(1e-10));
}

const NOISE_EPS = 1e-2;

/**
 * Data-parallel training: the load-balancing loss is a function of the importance and load summed
 * over the whole global batch, not of one rank's share (cv² is not additive). When set, `sum`
 * adds a tensor across ranks in place; the loss is then computed on the global sums, with the
 * gradient flowing into this rank's own terms (x + (Σx − x).detach()), so the ranks' gradients
 * add up to the single-process gradient. Set by the data-parallel trainer, null otherwise.
 */
export const crossReplica: { sum: ((t: Tensor) => void) | null } = { sum: null };

function globalSum(x: Tensor): Tensor {
  if (!crossReplica.sum) return x;
  const total = noGrad(() => x.detach().clone());
  crossReplica.sum(total);
  return x.add(total.sub(x.detach()));
}
const normalCdf = (x: Tensor) => x.div(Math.SQRT2).erf().add(1).mul(0.5);

export class ScaleMoE extends Module {
  readonly wGate: Tensor;
  readonly wNoise: Tensor;
  readonly experts: ModuleList<ScaleExpert>;
  /**
   * The load-balancing loss of the last training forward. Owned by this module (forward may run
   * inside a block's own tidy scope): replaced at the next forward, freed with the module.
   */
  auxLoss: Tensor | null = null;
  /** Routing counts of the last forward, per expert (for reports). */
  lastLoad: number[] = [];
  /** Replaceable noise source (tests inject PyTorch's draws). */
  noise: (like: Tensor) => Tensor = randnLike;

  constructor(readonly r: number, readonly numExperts: number, readonly lossCoef = 1e-2, readonly noisy = true, readonly topK = 1) {
    super();
    this.wGate = this.param('w_gate', zeros([r, numExperts]));
    this.wNoise = this.param('w_noise', zeros([r, numExperts]));
    this.experts = this.child('experts', new ModuleList(Array.from({ length: numExperts }, (_, i) => new ScaleExpert(r, i + 1))));
  }

  /** m (N, r, H, W) → m + E_k(m), with k the top-1 expert of each of the N maps. */
  forward(m: Tensor): Tensor {
    // The gate in fp32 (inside autocast the two products come back bf16): its statistics feed a loss.
    const g = F.fp32UnderAutocast(m).mean([2, 3]);  // (N, r) global average pool
    const clean = F.fp32UnderAutocast(g.matmul(this.wGate));
    let logits = clean;
    let noiseStd: Tensor | null = null;
    if (this.training && this.noisy) {
      noiseStd = F.fp32UnderAutocast(g.matmul(this.wNoise)).softplus().add(NOISE_EPS);
      logits = clean.add(this.noise(clean).mul(noiseStd));
    }
    const M = this.numExperts;
    const [topLogits, topIdx] = logits.topk(Math.min(this.topK + 1, M), 1);
    const kIdx = topIdx.narrow(1, 0, this.topK);
    const kGates = topLogits.narrow(1, 0, this.topK).softmax(1);
    const gates = zerosLike(logits).scatter(1, kIdx, kGates);

    this.auxLoss?.dispose();
    this.auxLoss = null;
    if (this.training) {
      const importance = globalSum(gates.sum(0));
      const load = globalSum(noiseStd && this.topK < M
        ? this.probInTopK(clean, logits, noiseStd, topLogits).sum(0)
        : gates.gt(0).float().sum(0));
      this.auxLoss = cvSquared(importance).add(cvSquared(load)).mul(this.lossCoef).keep();
    }

    // Dispatch each map to its expert; add the expert output (unscaled) to the map.
    const choice = kIdx.select(1, 0).toArray<'int64'>();
    const byExpert = new Map<number, number[]>();
    choice.forEach((e, n) => { const k = Number(e); byExpert.set(k, [...(byExpert.get(k) ?? []), n]); });
    this.lastLoad = Array.from({ length: M }, (_, e) => byExpert.get(e)?.length ?? 0);
    let out = m;
    for (const [e, rows] of byExpert) {
      const idx = tensor(rows, [rows.length], { dtype: 'int64', device: m.device as Device });
      out = out.indexAdd(0, idx, this.experts.at(e).forward(m.indexSelect(0, idx)));
    }
    return out;
  }

  override dispose(): void {
    this.auxLoss?.dispose();
    this.auxLoss = null;
    super.dispose();
  }

  /** P(expert in top-k) under the gate noise (Shazeer et al. 2017), differentiable in the logits. */
  private probInTopK(clean: Tensor, noisy: Tensor, noiseStd: Tensor, top: Tensor): Tensor {
    const k = this.topK;
    const thresholdIn = top.narrow(1, k, 1);
    const thresholdOut = top.narrow(1, k - 1, 1);
    const isIn = noisy.gt(thresholdIn);
    const pIn = normalCdf(clean.sub(thresholdIn).div(noiseStd));
    const pOut = normalCdf(clean.sub(thresholdOut).div(noiseStd));
    return pIn.mul(isIn.float()).add(pOut.mul(isIn.logicalNot().float()));
  }
}
