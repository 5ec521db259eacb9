// `naslora export`: a merged plain SAM checkpoint (only where merging is exact), the
// (re-parameterized) adapter, or the Hugging Face PEFT layout for LoRA.
import * as path from 'node:path';
import type { Command } from 'commander';
import { exportPeft, mergeAll, nasCells, saveAdapter, toRaw } from '../../adapters/index.js';
import { writeSafetensors } from '../../io/safetensors.js';
import { writePth } from '../../io/pth_write.js';
import type { RawTensor } from '../../io/raw.js';
import { loadCliModel } from './model_io.js';
import { samConfigMetadata } from '../../model/sam/build.js';
import { partOf } from '../../adapters/parts.js';

export function registerExport(program: Command): void {
  program
    .command('export')
    .description('export base + adapter: --format merged (plain SAM checkpoint, exact merges only), adapter (re-parameterized), peft (LoRA)')
    .requiredOption('--checkpoint <file>', 'base SAM checkpoint')
    .option('--model-config <json>', 'SAM config (for values the checkpoint shapes cannot tell)')
    .requiredOption('--adapter <dir>', 'adapter folder')
    .requiredOption('--format <f>', 'merged | adapter | peft')
    .requiredOption('-o, --out <path>', 'merged: a .safetensors or .pth file; adapter/peft: a folder')
    .action((o: { checkpoint: string; modelConfig?: string; adapter: string; format: string; out: string }) => {
      if (!['merged', 'adapter', 'peft'].includes(o.format)) throw new Error(`--format must be merged, adapter or peft, not '${o.format}'`);
      const m = loadCliModel({ checkpoint: o.checkpoint, modelConfig: o.modelConfig, adapter: o.adapter });
      const method = m.adapter!.method;
      const classes = m.adapter!.classes;
      try {
        // A multi-class model's K class heads (tokens + hypernetworks) have no place in an official
        // SAM checkpoint or in PEFT's layout: refuse rather than write a file that loses them or fails to load.
        if (classes && o.format !== 'adapter')
          throw new Error(`${o.adapter} is a multi-class adapter (${classes.names.length} classes: ${classes.names.join(', ')}); its class heads (mask_decoder.class_tokens, class_hypernetworks_mlps) cannot go into ${o.format === 'merged' ? 'a plain segment-anything checkpoint, which has one mask token per output and no class heads' : "PEFT's LoRA layout"}: use --format adapter, which keeps them`);
        if (o.format === 'merged') {
          mergeAll(m.layers);  // refuses, naming the layers, where a spatial branch remains
          const tensors: Array<[string, RawTensor]> = [...m.loaded.model.stateDict()]
            .filter(([n]) => !['lora', 'ops', 'alpha'].includes(partOf(n)))
            .map(([n, t]) => [n, toRaw(t)]);
          // The SAM configuration travels with the weights (safetensors metadata / .pth state-dict attribute).
          const meta = samConfigMetadata(m.loaded.checkpoint.config);
          if (o.out.endsWith('.pth')) writePth(o.out, tensors, { attributes: meta });
          else writeSafetensors(o.out, tensors, { format: 'pt', ...meta });
          console.log(`merged ${m.layers.length} adapter layer(s) into W0 exactly; wrote ${o.out} (segment-anything names, with its SAM configuration)`);
        } else if (o.format === 'adapter') {
          const cells = nasCells(m.layers);
          for (const { cell } of cells) cell.reparameterize();
          saveAdapter(o.out, m.loaded.model, method, { parts: m.adapter!.parts, baseSha256: m.adapter!.base.sha256, classes: classes ?? null, input: m.adapter!.input ?? null });
          const kept = cells.filter(({ cell }) => !cell.isPerToken()).map(({ path: p }) => p);
          console.log(cells.length
            ? `re-parameterized ${cells.length} cell(s) (conv-type ops collapsed into one kernel each); ${kept.length} keep a spatial branch: ${kept.join(', ') || 'none'}; wrote ${o.out}`
            : `wrote the adapter to ${o.out}`);
          if (classes) console.log(`multi-class: the ${classes.names.length} class heads (mask_decoder.class_tokens, class_hypernetworks_mlps) are kept in the adapter; load it with naslora (eval, predict), not as a plain SAM`);
        } else {
          exportPeft(o.out, m.loaded.model, method);
          console.log(`wrote ${path.join(o.out, 'adapter_model.safetensors')} and adapter_config.json (PEFT LoRA layout)`);
        }
      } finally {
        m.loaded.model.dispose();
      }
    });
}
