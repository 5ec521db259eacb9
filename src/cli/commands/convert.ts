// `naslora convert`: a SAM checkpoint between namings (segment-anything ↔ Hugging Face) and
// containers (.pth ↔ .safetensors, by the output's extension). Tensors are renamed, never
// changed: converting back gives the same bytes for every tensor. The Hugging Face naming carries
// the tied `shared_image_embedding.positional_embedding` (a copy of the prompt encoder's matrix).
import * as fs from 'node:fs';
import * as path from 'node:path';
import type { Command } from 'commander';
import { openCheckpoint } from '../../io/pth.js';
import { writePth } from '../../io/pth_write.js';
import type { RawTensor } from '../../io/raw.js';
import { writeSafetensors } from '../../io/safetensors.js';
import { detectNaming, toHuggingFace, toSegmentAnything, type Naming } from '../../model/sam/naming.js';
import { checkpointConfig, samConfigMetadata } from '../../model/sam/build.js';
import type { SamConfig } from '../../model/sam/sam.js';
import { readModelConfig } from './model_io.js';

const NAMINGS: Naming[] = ['segment-anything', 'huggingface'];

/**
 * The output carries the full SAM configuration (safetensors metadata / .pth state-dict attribute):
 * the input's own, else what its shapes and `given` (--model-config) determine; a checkpoint whose
 * configuration cannot be determined is refused rather than written without one.
 */
export function convertCheckpoint(input: string, output: string, naming?: Naming, given?: Partial<SamConfig>): { from: Naming; to: Naming; tensors: number; config: SamConfig } {
  const ext = path.extname(output);
  if (ext !== '.pth' && ext !== '.safetensors') throw new Error(`${output}: the output must end in .pth or .safetensors (it picks the container)`);
  if (!fs.existsSync(input)) throw new Error(`${input}: no such file`);
  const src = openCheckpoint(input);
  try {
    const from = detectNaming(src.keys()); // throws, listing them, on names of neither naming
    const to = naming ?? from;
    const { config } = checkpointConfig(src, given);
    const meta = samConfigMetadata(config);
    const renamed = to === 'huggingface' ? toHuggingFace(src) : toSegmentAnything(src);
    // Read every tensor before writing, so that converting a file onto itself is safe.
    const tensors: Array<[string, RawTensor]> = [...renamed].map(([k, t]) => [k, { dtype: t.dtype, shape: t.shape, data: t.read() }]);
    if (ext === '.pth') writePth(output, tensors, { attributes: meta });
    else writeSafetensors(output, tensors, { format: 'pt', ...meta });
    return { from, to, tensors: tensors.length, config };
  } finally {
    src.close();
  }
}

export function registerConvert(program: Command): void {
  program
    .command('convert')
    .description('convert a SAM checkpoint between namings (segment-anything / huggingface) and containers (.pth / .safetensors by the out extension)')
    .argument('<in>', 'input checkpoint (.pth or .safetensors)')
    .argument('<out>', 'output checkpoint: .pth (torch.save layout) or .safetensors')
    .option('--naming <n>', 'segment-anything | huggingface (default: keep the input\'s)')
    .option('--model-config <json>', 'SAM config for values neither the shapes nor the checkpoint\'s metadata tell (written into the output)')
    .action((input: string, output: string, o: { naming?: string; modelConfig?: string }) => {
      if (o.naming !== undefined && !NAMINGS.includes(o.naming as Naming)) throw new Error(`--naming must be segment-anything or huggingface, not '${o.naming}'`);
      const r = convertCheckpoint(input, output, o.naming as Naming | undefined, readModelConfig(o.modelConfig));
      console.log(`wrote ${output}: ${r.tensors} tensors, ${r.from} → ${r.to} names`);
    });
}
