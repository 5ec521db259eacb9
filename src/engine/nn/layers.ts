// Standard layers with PyTorch's default initialisation, so fresh models start where PyTorch's do.
import * as F from '../functional.js';
import { empty, ones, zeros, noGrad, type Tensor } from '../tensor.js';
import { Module } from './module.js';

/** kaiming_uniform_(a=√5) as nn.Linear/nn.Conv2d use: bound = 1/√fan_in. */
export function kaimingUniform_(t: Tensor, fanIn: number): Tensor {
  const bound = 1 / Math.sqrt(fanIn);
  noGrad(() => t.uniform_(-bound, bound));
  return t;
}

export function uniform_(t: Tensor, bound: number): Tensor {
  noGrad(() => t.uniform_(-bound, bound));
  return t;
}

export class Linear extends Module {
  weight: Tensor;
  bias: Tensor | null;
  constructor(readonly inFeatures: number, readonly outFeatures: number, bias = true) {
    super();
    this.weight = this.param('weight', kaimingUniform_(empty([outFeatures, inFeatures]), inFeatures));
    this.bias = bias ? this.param('bias', uniform_(empty([outFeatures]), 1 / Math.sqrt(inFeatures))) : null;
  }
  forward(x: Tensor): Tensor { return F.linear(x, this.weight, this.bias); }
}

export interface Conv2dOpts { stride?: number; padding?: number; dilation?: number; groups?: number; bias?: boolean }
export class Conv2d extends Module {
  weight: Tensor;
  bias: Tensor | null;
  readonly opts: Required<Omit<Conv2dOpts, 'bias'>>;
  constructor(readonly inChannels: number, readonly outChannels: number, readonly kernelSize: number, o: Conv2dOpts = {}) {
    super();
    this.opts = { stride: o.stride ?? 1, padding: o.padding ?? 0, dilation: o.dilation ?? 1, groups: o.groups ?? 1 };
    const fanIn = (inChannels / this.opts.groups) * kernelSize * kernelSize;
    this.weight = this.param('weight', kaimingUniform_(empty([outChannels, inChannels / this.opts.groups, kernelSize, kernelSize]), fanIn));
    this.bias = o.bias === false ? null : this.param('bias', uniform_(empty([outChannels]), 1 / Math.sqrt(fanIn)));
  }
  forward(x: Tensor): Tensor { return F.conv2d(x, this.weight, this.bias, this.opts); }
}

export class ConvTranspose2d extends Module {
  weight: Tensor;
  bias: Tensor | null;
  constructor(readonly inChannels: number, readonly outChannels: number, readonly kernelSize: number, readonly stride = 1, bias = true) {
    super();
    // PyTorch computes fan_in from weight.size(1) * k * k for transposed convs.
    const fanIn = outChannels * kernelSize * kernelSize;
    this.weight = this.param('weight', kaimingUniform_(empty([inChannels, outChannels, kernelSize, kernelSize]), fanIn));
    this.bias = bias ? this.param('bias', uniform_(empty([outChannels]), 1 / Math.sqrt(fanIn))) : null;
  }
  forward(x: Tensor): Tensor { return F.convTranspose2d(x, this.weight, this.bias, { stride: this.stride }); }
}

export class LayerNorm extends Module {
  weight: Tensor;
  bias: Tensor;
  constructor(readonly dim: number, readonly eps = 1e-5) {
    super();
    this.weight = this.param('weight', ones([dim]));
    this.bias = this.param('bias', zeros([dim]));
  }
  forward(x: Tensor): Tensor { return F.layerNorm(x, [this.dim], this.weight, this.bias, this.eps); }
}

export class Embedding extends Module {
  weight: Tensor;
  constructor(readonly num: number, readonly dim: number) {
    super();
    const w = empty([num, dim]);
    noGrad(() => w.normal_(0, 1));
    this.weight = this.param('weight', w);
  }
}
