import { noGrad, type Linear } from '../../engine/index.js';
import { registerMethod, type AdapterConfig } from '../registry.js';
import { NasLoraLayer } from './layer.js';

export function createNasLayer(base: Linear, c: AdapterConfig, k: number): NasLoraLayer {
  const layer = new NasLoraLayer(base, { rank: c.rank, alpha: c.lora_alpha, dropout: c.dropout, qvOnly: c.qv_only, ops: c.ops, partialChannels: k, opsInit: c.ops_init ?? 'default' });
  if (c.alpha_init !== 0) noGrad(() => { for (const cell of layer.cells()) cell.alpha.fill_(c.alpha_init); });
  return layer;
}

registerMethod({
  name: 'nas-lora',
  description: 'NAS-LoRA: a searched cell of spatial ops between A and B',
  searchable: true,
  createLayer: (base, c) => createNasLayer(base, c, 1),
});
export { NasLoraLayer };
