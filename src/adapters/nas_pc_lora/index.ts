// NAS-PC-LoRA: NAS-LoRA with partial channels (after PC-DARTS): ⌈r/K⌉ channels through the cell.
import { registerMethod } from '../registry.js';
import { createNasLayer } from '../nas_lora/index.js';

registerMethod({
  name: 'nas-pc-lora',
  description: 'NAS-PC-LoRA: NAS-LoRA with partial channels (⌈r/K⌉ through the cell, then shuffled)',
  searchable: true,
  createLayer: (base, c) => createNasLayer(base, c, c.pc_k),
});
