// The naslora tensor engine: libtorch through a native addon, with autograd and optimizers.
export * from './tensor.js';
export * from './runtime.js';
export {
  autocast, autocastActive, cudaAvailable, cudaIndex, cudaInfo, cudaMemory, cudaUnavailableReason, resetCudaPeakMemory, resolveDevice, setCudaDevice,
  DEVICE_SPECS, PRECISIONS, type CudaInfo, type CudaMemory, type DeviceSpec, type Precision, type ResolveOptions,
} from './device.js';
export * as F from './functional.js';
export type { DType } from './dtype.js';
export { Module, ModuleList, ModuleDict, Empty } from './nn/module.js';
export { Linear, Conv2d, ConvTranspose2d, LayerNorm, Embedding, kaimingUniform_, uniform_ } from './nn/layers.js';
export { Optimizer, type OptimizerState, type ParamGroup } from './optim/optimizer.js';
export { Adam, AdamW, type AdamHyper } from './optim/adam.js';
export { SGD, type SGDHyper } from './optim/sgd.js';
export { clipGradNorm } from './optim/clip.js';
export { Store, ProcessGroup, distBackends, DIST_DEFAULT_TIMEOUT_MS, type DistBackend, type ReduceOp, type StoreOptions, type ProcessGroupOptions, type CollectiveOptions } from './dist.js';
