// `--device cpu|cuda|auto` and `--precision fp32|bf16`, shared by every command that computes. On
// commands with a run config (train, pretrain, compare) they are overrides of runtime.device and
// runtime.precision (applied after the config's own value and --set); eval, predict and bench take
// them directly. A device this libtorch cannot give fails before anything is loaded.
import { Option, type Command } from 'commander';
import { DEVICE_SPECS, PRECISIONS, resolveDevice, type Device, type DeviceSpec, type Precision } from '../engine/index.js';

export interface RuntimeFlags { device?: DeviceSpec; precision?: Precision }

export function addRuntimeOptions(cmd: Command, o: { defaults?: boolean } = {}): Command {
  const dev = new Option('--device <device>', o.defaults
    ? 'where to compute: cpu, cuda (a CUDA build of libtorch with a visible GPU), or auto (cuda when there is one)'
    : 'where to compute: cpu, cuda or auto (overrides runtime.device; default: the config\'s, cpu)').choices([...DEVICE_SPECS]);
  const prec = new Option('--precision <precision>', o.defaults
    ? 'fp32, or bf16 (autocast: matmuls and convolutions in bfloat16, softmax/norms/loss in fp32)'
    : 'fp32 or bf16 autocast (overrides runtime.precision; default: the config\'s, fp32)').choices([...PRECISIONS]);
  if (o.defaults) {
    dev.default('cpu');
    prec.default('fp32');
  }
  return cmd.addOption(dev).addOption(prec);
}

/** The flags as run-config overrides (after --set, so they win). */
export function runtimeOverrides(f: RuntimeFlags): string[] {
  return [...(f.device ? [`runtime.device=${f.device}`] : []), ...(f.precision ? [`runtime.precision=${f.precision}`] : [])];
}

/** The device for a command without a run config (one process): fails at once where it cannot be had. */
export function commandRuntime(f: RuntimeFlags): { device: Device; precision: Precision } {
  return { device: resolveDevice(f.device ?? 'cpu', { what: '--device' }), precision: f.precision ?? 'fp32' };
}
