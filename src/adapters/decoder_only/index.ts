// Decoder-only fine-tuning: no encoder adapter; only the mask decoder trains.
import { registerMethod } from '../registry.js';

registerMethod({ name: 'decoder-only', description: 'no encoder adapter; the mask decoder is fine-tuned', searchable: false });
