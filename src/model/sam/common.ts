// segment_anything/modeling/common.py: MLPBlock and LayerNorm2d, plus the small pieces every SAM
// module shares (a forward-able layer type, nn.Sequential with PyTorch's index names).
import { F, Linear, Module, ones, tidy, zeros, type Tensor } from '../../engine/index.js';

/** A module with a one-tensor forward (Linear, Conv2d, an adapter wrapping a Linear, ...). */
export type Layer = Module & { forward(x: Tensor): Tensor };
export type Activation = 'gelu' | 'relu';

export function activate(x: Tensor, act: Activation): Tensor {
  return act === 'gelu' ? x.gelu() : x.relu();
}

/**
 * Base of the SAM modules: a child swapped with replaceChild (adapters wrap `qkv`, `lin1`, ...)
 * also replaces the field of the same name, so forward() uses the new module.
 */
export abstract class SamModule extends Module {
  override replaceChild(name: string, m: Module): void {
    if (typeof (m as unknown as { forward?: unknown }).forward !== 'function') throw new Error(`${this.constructor.name}.${name}: the replacement has no forward()`);
    super.replaceChild(name, m);
    if (name in this) (this as unknown as Record<string, Module>)[name] = m;
  }
}

/**
 * nn.Sequential: layers are named by their index, activations (no parameters) take an index too,
 * so names come out as PyTorch's (e.g. neck.0, neck.1, neck.2, neck.3; mask_downscaling.0/1/3/4/6).
 */
export class Sequential extends Module {
  constructor(readonly steps: Array<Layer | Activation>) {
    super();
    steps.forEach((s, i) => { if (typeof s !== 'string') this.child(String(i), s); });
  }
  /** Each step's intermediates, and the previous step's output, are freed once the step is done. */
  forward(x: Tensor): Tensor {
    let y = x;
    for (const s of this.steps) {
      const prev = y;
      y = tidy(() => (typeof s === 'string' ? activate(prev, s) : s.forward(prev)));
      if (prev !== x && prev !== y) prev.dispose();
    }
    return y;
  }
  override replaceChild(name: string, m: Module): void {
    super.replaceChild(name, m);
    this.steps[Number(name)] = m as Layer;
  }
}

export class MLPBlock extends SamModule {
  lin1: Layer;
  lin2: Layer;
  constructor(embeddingDim: number, mlpDim: number, readonly act: Activation = 'gelu') {
    super();
    this.lin1 = this.child('lin1', new Linear(embeddingDim, mlpDim));
    this.lin2 = this.child('lin2', new Linear(mlpDim, embeddingDim));
  }
  forward(x: Tensor): Tensor {
    return this.lin2.forward(activate(this.lin1.forward(x), this.act));
  }
}

/** LayerNorm over the channels of (B, C, H, W), written out as in SAM (not F.layer_norm). */
export class LayerNorm2d extends Module {
  weight: Tensor;
  bias: Tensor;
  constructor(numChannels: number, readonly eps = 1e-6) {
    super();
    this.weight = this.param('weight', ones([numChannels]));
    this.bias = this.param('bias', zeros([numChannels]));
  }
  /** Inside autocast a bf16 input is normalized in fp32 (F.layerNorm's policy). */
  forward(x: Tensor): Tensor {
    x = F.fp32UnderAutocast(x);
    const u = x.mean(1, true);
    const d = x.sub(u);
    const s = d.pow(2).mean(1, true);
    const n = d.div(s.add(this.eps).sqrt());
    return this.weight.view(-1, 1, 1).mul(n).add(this.bias.view(-1, 1, 1));
  }
}
