// Adapters on SAM. Each method folder registers itself; add a method by adding a folder and its
// import line here.
import './lora/index.js';
import './nas_lora/index.js';
import './nas_pc_lora/index.js';
import './conv_lora/index.js';
import './decoder_only/index.js';

export * from './registry.js';
export * from './base.js';
export * from './parts.js';
export * from './inject.js';
export { LoraLayer } from './lora/layer.js';
export { NasLoraLayer, NasBranch } from './nas_lora/layer.js';
export { MixedCell } from './nas_lora/cell.js';
export { OPS, DEFAULT_OPS, registerOp, cachedPlacements, type CandidateOp } from './nas_lora/ops.js';
export { ConvLoraLayer, ConvLoraBranch } from './conv_lora/layer.js';
export { ScaleMoE, ScaleExpert, crossReplica } from './conv_lora/moe.js';
export * from './io.js';
