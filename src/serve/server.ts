// `naslora serve`: SAM as people use it — click, drag, watch the mask — over HTTP with fastify
// (schema-free JSON routes validated with zod, body limits and content-type parsing built in, and a
// graceful close that finishes in-flight requests). The image encoder runs once per (image,
// adapter) and its embedding is cached; a prompt then costs the prompt encoder and mask decoder.
// Encoder runs are queued one at a time (bounded: over the bound → 503 with Retry-After), with a
// turn of the event loop between them so decoder requests go on meanwhile.
import { createHash, randomUUID } from 'node:crypto';
import * as fs from 'node:fs';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import Fastify, { type FastifyInstance, type FastifyReply, type FastifyRequest } from 'fastify';
import { z } from 'zod';
import { memory } from '../engine/index.js';
import { decodeImage, encodeMaskPng, ImageDecodeError, ImageTooLargeError, MAX_IMAGE_PIXELS } from '../io/image.js';
import { SamPredictor, type PixelMasks } from '../model/sam/predictor.js';
import { EmbeddingCache, LruBytes, type Embedding, type StoredImage } from './cache.js';
import { BASE, type ServedModel } from './models.js';
import { rleEncode, type CocoRle } from './rle.js';

export class HttpError extends Error {
  constructor(readonly status: number, message: string, readonly headers: Record<string, string> = {}) { super(message); }
}

export interface ServeOptions {
  models: Map<string, ServedModel>;
  /** Largest request body (default 32 MB). */
  bodyLimit?: number;
  /** Largest image, in decoded pixels (default io/image's MAX_IMAGE_PIXELS); checked on the header. */
  maxPixels?: number;
  /** Byte budgets of the decoded-image store and the embedding cache (default 512 MB each). */
  imageBytes?: number;
  embeddingBytes?: number;
  /** Byte budget of the low-res logits kept for `mask_input` (default 64 MB). */
  maskBytes?: number;
  /** Encoder runs waiting at most (default 8); more → 503. */
  encoderQueue?: number;
  log?: (msg: string) => void;
}

/** Runs encoder jobs one at a time, yielding to other requests between them; refuses past `max` waiting. */
export class EncoderQueue {
  private chain: Promise<unknown> = Promise.resolve();
  waiting = 0;
  runs = 0;
  constructor(readonly max: number) {}
  run<T>(job: () => T): Promise<T> {
    if (this.waiting >= this.max) throw new HttpError(503, `the image encoder queue is full (${this.max} waiting); retry shortly`, { 'retry-after': '1' });
    this.waiting++;
    const p = this.chain.then(async () => {
      await new Promise((r) => setImmediate(r));  // let decoder requests that arrived meanwhile run first
      try {
        this.runs++;
        return job();
      } finally {
        this.waiting--;
      }
    });
    this.chain = p.catch(() => undefined);
    return p;
  }
}

const Coord = z.number().finite();
const PredictBody = z.strictObject({
  image_id: z.string().regex(/^[0-9a-f]{64}$/, 'image_id: 64 hex digits, as POST /v1/images returned it'),
  adapter: z.string().max(64).optional(),
  points: z.array(z.tuple([Coord, Coord, z.number().refine((v) => v === 1 || v === 0 || v === -1, 'a point label is 1 (foreground), 0 (background) or -1 (padding)')])).max(64).optional(),
  boxes: z.array(z.tuple([Coord, Coord, Coord, Coord])).max(16).optional(),
  mask_input: z.string().max(64).optional(),
  multimask: z.boolean().optional(),
  format: z.enum(['png', 'rle']).optional(),
});
export type PredictRequest = z.infer<typeof PredictBody>;

export interface PredictAnswer { masks: Array<string | CocoRle>; iou_predictions: number[]; mask_id: string; width: number; height: number; adapter: string }

function here(): string { return path.dirname(fileURLToPath(import.meta.url)); }

/** The page and its script: web/index.html and the compiled dist/web/app.js (see web/tsconfig.json). */
function pageFiles(): { html: string; js: string } {
  const root = path.resolve(here(), '../../..');
  const html = path.join(root, 'web/index.html'), js = path.join(root, 'dist/web/app.js');
  for (const f of [html, js]) if (!fs.existsSync(f)) throw new Error(`${f}: missing (npm run build compiles the page)`);
  return { html: fs.readFileSync(html, 'utf8'), js: fs.readFileSync(js, 'utf8') };
}

export interface Server {
  app: FastifyInstance;
  /** What the server holds now (tests, /v1/health). */
  stats(): { images: number; image_bytes: number; embeddings: number; embedding_bytes: number; masks: number; mask_bytes: number; encoder_runs: number; live_tensors: number; hits: number; misses: number };
  close(): Promise<void>;
}

export async function createServer(o: ServeOptions): Promise<Server> {
  const log = o.log ?? (() => undefined);
  const maxPixels = o.maxPixels ?? MAX_IMAGE_PIXELS;
  const images = new LruBytes<StoredImage>(o.imageBytes ?? 512 * 1024 * 1024);
  const embeddings = new EmbeddingCache(o.embeddingBytes ?? 512 * 1024 * 1024);
  const lowRes = new LruBytes<{ logits: Float32Array; shape: [number, number] }>(o.maskBytes ?? 64 * 1024 * 1024);
  const queue = new EncoderQueue(o.encoderQueue ?? 8);
  const predictors = new Map([...o.models].map(([k, m]) => [k, new SamPredictor(m.model)]));
  const page = pageFiles();

  const app = Fastify({ bodyLimit: o.bodyLimit ?? 32 * 1024 * 1024, logger: false, forceCloseConnections: 'idle', return503OnClosing: true });
  // Image uploads arrive as raw bytes.
  const raw = (_req: FastifyRequest, body: Buffer | string, done: (e: Error | null, b?: Buffer | string) => void) => done(null, body);
  app.addContentTypeParser('application/octet-stream', { parseAs: 'buffer' }, raw);
  app.addContentTypeParser(/^image\/[\w.+-]+$/, { parseAs: 'buffer' }, raw);

  app.setErrorHandler((err: Error & { statusCode?: number; code?: string }, _req: FastifyRequest, reply: FastifyReply) => {
    if (err instanceof HttpError) return reply.code(err.status).headers(err.headers).send({ error: err.message });
    if (err instanceof z.ZodError) return reply.code(400).send({ error: err.issues.map((i) => `${i.path.join('.') || 'body'}: ${i.message}`).join('; ') });
    if (err.code === 'FST_ERR_CTP_BODY_TOO_LARGE') return reply.code(413).send({ error: `request body larger than ${o.bodyLimit ?? 32 * 1024 * 1024} bytes` });
    if (err.statusCode && err.statusCode >= 400 && err.statusCode < 500) return reply.code(err.statusCode).send({ error: err.message });
    log(`internal error: ${err.stack ?? err.message}`);
    return reply.code(500).send({ error: 'internal error (see the server log)' });
  });
  app.setNotFoundHandler((req, reply) => reply.code(404).send({ error: `no route ${req.method} ${req.url.split('?')[0]}` }));

  const modelOf = (name: string | undefined): ServedModel => {
    const m = o.models.get(name ?? BASE);
    if (!m) throw new HttpError(404, `unknown adapter '${name}': GET /v1/adapters lists them`);
    return m;
  };

  const embeddingOf = <T>(img: StoredImage, m: ServedModel, use: (e: Embedding) => T) =>
    embeddings.with(EmbeddingCache.key(img.id, m.name), () => queue.run(() => {
      const p = new SamPredictor(m.model);
      p.setImage(img.rgb, img.height, img.width);
      return { ...p.takeEmbedding(), users: 0, evicted: false };
    }), use);

  app.get('/', (_req, reply) => reply.type('text/html; charset=utf-8').send(page.html));
  app.get('/app.js', (_req, reply) => reply.type('text/javascript; charset=utf-8').send(page.js));

  app.get('/favicon.ico', (_req, reply) => reply.code(204).send());
  app.get('/v1/health', () => ({ status: 'ok', models: [...o.models.keys()] }));

  app.get('/v1/adapters', () => ({
    adapters: [...o.models.values()].map((m) => ({
      name: m.name, method: m.adapter?.method.name ?? null,
      derived_ops: m.adapter ? Object.fromEntries(m.adapter.cells.filter((c) => c.derived).map((c) => [c.path, c.derived])) : null,
    })),
  }));

  app.post('/v1/images', async (req) => {
    const body = req.body;
    if (!(body instanceof Uint8Array) || body.length === 0) throw new HttpError(400, 'send the image bytes as the body (Content-Type: application/octet-stream or image/*)');
    const id = createHash('sha256').update(body).digest('hex');
    let img = images.get(id);
    if (!img) {
      try {
        const d = await decodeImage(body, { maxPixels });
        img = { id, rgb: d.data, width: d.width, height: d.height };
      } catch (e) {
        if (e instanceof ImageTooLargeError) throw new HttpError(413, e.message);
        if (e instanceof ImageDecodeError) throw new HttpError(400, `not a readable image: ${e.message}`);
        throw new HttpError(400, `not a readable image: ${(e as Error).message}`);
      }
      images.set(id, img, img.rgb.length);
    }
    return { image_id: id, width: img.width, height: img.height };
  });

  app.post('/v1/predict', async (req) => {
    if (req.body === null || typeof req.body !== 'object' || Array.isArray(req.body)) throw new HttpError(400, 'send a JSON object (Content-Type: application/json)');
    const r = PredictBody.parse(req.body);
    const img = images.get(r.image_id);
    if (!img) throw new HttpError(404, `unknown image_id (upload it with POST /v1/images; the server may have dropped it from its cache)`);
    const m = modelOf(r.adapter);
    const points = (r.points ?? []).map(([x, y, label]) => ({ x, y, label }));
    const boxes = r.boxes ?? [];
    for (const p of points) if (p.x < 0 || p.x > img.width || p.y < 0 || p.y > img.height) throw new HttpError(400, `point [${p.x}, ${p.y}] lies outside the ${img.width}×${img.height} image`);
    for (const b of boxes) {
      if (b[2] < b[0] || b[3] < b[1]) throw new HttpError(400, `box [${b.join(', ')}]: needs x0 <= x1 and y0 <= y1`);
      if (b.some((v, i) => v < 0 || v > (i % 2 ? img.height : img.width))) throw new HttpError(400, `box [${b.join(', ')}] lies outside the ${img.width}×${img.height} image`);
    }
    let maskInput: Float32Array | undefined;
    if (r.mask_input !== undefined) {
      const mi = lowRes.get(r.mask_input);
      if (!mi) throw new HttpError(404, `unknown mask_input '${r.mask_input}' (a mask_id of an earlier answer; the server keeps the recent ones)`);
      const want = m.model.prompt_encoder.maskInputSize;
      if (mi.shape[0] !== want[0] || mi.shape[1] !== want[1]) throw new HttpError(400, `mask_input is ${mi.shape.join('×')}, adapter '${m.name}' takes ${want.join('×')}`);
      maskInput = mi.logits;
    }
    if (!points.length && !boxes.length && !maskInput) throw new HttpError(400, 'give at least one prompt: points, boxes or mask_input');
    const pred = await embeddingOf(img, m, (e) => {
      const p = predictors.get(m.name)!;
      p.useEmbedding(e.features, e.originalSize, e.inputSize);
      try {
        return p.predictPixelMasks({ points, boxes, maskInput, multimask: r.multimask ?? false });
      } finally {
        p.resetImage();
      }
    });
    return answer(pred, r.format ?? 'png', m.name);
  });

  /** The JSON answer; the best mask's low-res logits are kept under mask_id for a later mask_input. */
  async function answer(p: PixelMasks, format: 'png' | 'rle', adapter: string): Promise<PredictAnswer> {
    const best = p.iou.indexOf(Math.max(...p.iou));
    const [h, w] = p.lowShape.slice(1) as [number, number];
    const all = new Float32Array(p.lowRes.buffer, p.lowRes.byteOffset, p.lowRes.byteLength / 4);
    const id = randomUUID();
    lowRes.set(id, { logits: Float32Array.from(all.subarray(best * h * w, (best + 1) * h * w)), shape: [h, w] }, h * w * 4);
    const n = p.width * p.height;
    const raw = Array.from({ length: p.count }, (_, k) => p.masks.subarray(k * n, (k + 1) * n));
    const masks = format === 'rle'
      ? raw.map((m) => rleEncode(m, p.width, p.height))
      : await Promise.all(raw.map(async (m) => (await encodeMaskPng(m, p.width, p.height)).toString('base64')));
    return { masks, iou_predictions: [...p.iou], mask_id: id, width: p.width, height: p.height, adapter };
  }

  return {
    app,
    stats: () => ({
      images: images.size, image_bytes: images.bytes, embeddings: embeddings.size, embedding_bytes: embeddings.bytes, masks: lowRes.size, mask_bytes: lowRes.bytes, encoder_runs: queue.runs,
      live_tensors: memory().liveTensors, hits: embeddings.hits, misses: embeddings.misses,
    }),
    async close() {
      await app.close();
      embeddings.clear();
      for (const p of predictors.values()) p.dispose();
    },
  };
}
