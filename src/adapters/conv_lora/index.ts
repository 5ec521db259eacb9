import { registerMethod } from '../registry.js';
import { ConvLoraLayer } from './layer.js';

registerMethod({
  name: 'conv-lora',
  description: 'Conv-LoRA: LoRA with a noisy top-1 mixture of multi-scale conv experts (not mergeable)',
  searchable: false,
  createLayer: (base, c) => new ConvLoraLayer(base, {
    rank: c.rank, alpha: c.lora_alpha, dropout: c.dropout, qvOnly: c.qv_only,
    experts: c.experts, lossCoef: c.moe_loss_weight, noisyGating: c.gate_noise,
  }),
});
export { ConvLoraLayer };
