import { registerMethod } from '../registry.js';
import { LoraLayer } from './layer.js';

registerMethod({
  name: 'lora',
  description: 'LoRA: h = W0·x + s·B·A·x (merges into W0 exactly)',
  searchable: false,
  createLayer: (base, c) => new LoraLayer(base, { rank: c.rank, alpha: c.lora_alpha, dropout: c.dropout, qvOnly: c.qv_only }),
});
export { LoraLayer };
