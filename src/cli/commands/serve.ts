// `naslora serve`: the adapted SAM in the browser and over HTTP (src/serve/).
import * as fs from 'node:fs';
import type { Command } from 'commander';
import { createServer } from '../../serve/server.js';
import { loadModels } from '../../serve/models.js';
import { readModelConfig } from './model_io.js';

const collect = (v: string, acc: string[]) => [...acc, v];

function positive(flag: string, v: string): number {
  const n = Number(v);
  if (!(n > 0) || !Number.isFinite(n)) throw new Error(`${flag} must be a positive number, got '${v}'`);
  return n;
}

export function registerServe(program: Command): void {
  program
    .command('serve')
    .description('interactive segmentation: a web page (click points, drag boxes) and a JSON API, with the base SAM and your adapters')
    .requiredOption('--checkpoint <file>', 'SAM checkpoint (.pth or .safetensors)')
    .option('--model-config <json>', 'SAM config, as predict takes it')
    .option('--adapter <[name=]dir>', 'an adapter folder to serve (repeatable); requests name it (name, or the folder name)', collect, [])
    .option('--host <host>', 'address to listen on (only this machine by default)', '127.0.0.1')
    .option('--port <port>', 'TCP port', '8080')
    .option('--body-limit-mb <mb>', 'largest request body', '32')
    .option('--max-pixels <n>', 'largest image in decoded pixels (checked on the header, before decoding)', String(8192 * 8192))
    .option('--cache-mb <mb>', 'memory for image embeddings (and as much again for decoded images), least recently used first out', '512')
    .option('--mask-cache-mb <mb>', 'memory for the low-res masks that later requests may send back as mask_input (by mask_id), least recently used first out', '64')
    .option('--encoder-queue <n>', 'image encoder runs allowed to wait; more get 503 with Retry-After', '8')
    .action(async (o: { checkpoint: string; modelConfig?: string; adapter: string[]; host: string; port: string; bodyLimitMb: string; maxPixels: string; cacheMb: string; maskCacheMb: string; encoderQueue: string }) => {
      const port = Number(o.port);
      if (!Number.isInteger(port) || port < 0 || port > 65535) throw new Error(`--port must be a TCP port, got '${o.port}'`);
      if (!fs.existsSync(o.checkpoint)) throw new Error(`--checkpoint ${o.checkpoint}: no such file`);
      // Every number checked before the (slow) model load.
      const mb = (flag: string, v: string) => Math.round(positive(flag, v) * 1024 * 1024);
      const limits = {
        bodyLimit: mb('--body-limit-mb', o.bodyLimitMb), maxPixels: Math.round(positive('--max-pixels', o.maxPixels)),
        imageBytes: mb('--cache-mb', o.cacheMb), embeddingBytes: mb('--cache-mb', o.cacheMb), maskBytes: mb('--mask-cache-mb', o.maskCacheMb),
        encoderQueue: Math.round(positive('--encoder-queue', o.encoderQueue)),
      };
      const models = loadModels({ checkpoint: o.checkpoint, config: readModelConfig(o.modelConfig), adapters: o.adapter }, (m) => console.error(m));
      const server = await createServer({ models, ...limits, log: (m) => console.error(m) });
      const address = await server.app.listen({ host: o.host, port });
      console.error(`naslora serve: ${address} (models: ${[...models.keys()].join(', ')}); Ctrl-C or SIGTERM to stop`);
      const stop = (sig: string) => {
        console.error(`${sig}: finishing the requests in flight, then stopping`);
        server.close().then(() => {
          for (const m of models.values()) m.model.dispose();
          process.exit(0);
        }, (e: Error) => { console.error(`naslora: ${e.message}`); process.exit(1); });
      };
      process.once('SIGTERM', () => stop('SIGTERM'));
      process.once('SIGINT', () => stop('SIGINT'));
    });
}
