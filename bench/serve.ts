// `naslora bench serve`: the interactive path of `naslora serve` against segment-anything's
// SamPredictor in PyTorch (bench/torch_serve.py: predictor.py and ResizeLongestSide on the modeling
// code of test/py/sam_ref.py), in the same run, the same thread count, the two sides alternating call
// by call (the twin is a server). Both load the same synthetic ViT-B checkpoint (the release's 314
// names and shapes, random values; bench sam's), so both run the same weights. Rows:
//   serve_set_image_vit_b_<S>        the image encoder as the server runs it on an upload:
//                                    SamPredictor.setImage of a 1280×960 RGB image (resize to the long
//                                    side, preprocess, encoder) vs PyTorch's set_image. ViT-B's weights
//                                    at encoder input S = 512 (NASLORA_BENCH_SERVE_IMG), pos_embed and
//                                    the global blocks' rel-pos resized on both sides as SAM fine-tuning
//                                    code does (naslora's loader, sam_ref.resize_for): at ViT-B's own
//                                    1024 one forward takes 20-30 s per side on one thread, too slow to
//                                    repeat here (bench sam has the 1024 encoder row, 3 runs)
//   serve_predict_point              a cached embedding, what POST /v1/predict computes per request:
//   serve_predict_point_multimask    SamPredictor.useEmbedding + predictPixelMasks (+ resetImage) vs
//   serve_predict_box                PyTorch's SamPredictor.predict with the embedding already set
//                                    (features, original and input size assigned, as set_image leaves
//                                    them). ViT-B at 1024, as released: a 64×64 embedding, 256×256
//                                    low-res masks upscaled to the 1280×960 image. The embedding is
//                                    random N(0, 1) and the same on both sides (the decoder's cost does
//                                    not depend on its values), so the answers can be compared:
//                                    iou_max_diff is the largest |naslora − PyTorch| predicted IoU.
//                                    One foreground point with one mask is the server's default request.
//   serve_http_predict_point         naslora alone: the whole request through createServer(...)
//                                    .app.inject (JSON, validation, decoder, PNG encoding, base64 JSON
//                                    answer; no socket). The embedding cache is filled by a first,
//                                    untimed request whose encoder run is stubbed to return the shared
//                                    embedding (a real one is the row above, at 512). With random
//                                    weights the mask is noise, whose PNG is large and slow to encode
//                                    (answer_kb; about 40 ms of the row): a real mask, a few blobs,
//                                    encodes in about 4 ms.
// Runs: NASLORA_BENCH_RUNS (default 3) encoder runs per side after 1 warm-up; 30 decoder runs per
// side after 3 warm-ups. The whole suite takes about a minute on the 2-core machine.
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { manualSeed, noGrad, randn, tidy, type Tensor } from '../src/engine/index.js';
import { toRaw } from '../src/adapters/index.js';
import { encodeRgbPng } from '../src/io/image.js';
import { writePth } from '../src/io/pth_write.js';
import type { RawTensor } from '../src/io/raw.js';
import { buildSam, loadSamFile } from '../src/model/sam/build.js';
import { SamPredictor, type PixelPrompts } from '../src/model/sam/predictor.js';
import { getPreprocessShape } from '../src/model/sam/transforms.js';
import { createServer } from '../src/serve/server.js';
import { BASE } from '../src/serve/models.js';
import { median, round, startTwin, type BenchRow, type Twin } from './common.js';

const ENCODER_IMG = Number(process.env.NASLORA_BENCH_SERVE_IMG ?? 512);
const ENCODER_RUNS = Number(process.env.NASLORA_BENCH_RUNS ?? 3);
const DECODER_RUNS = 30;
const DECODER_WARMUP = 3;
/** The image: a 4:3 photo's size. */
const W = 1280, H = 960;

/** The decoder cases, the same on both sides (bench/torch_serve.py CASES). */
const CASES: Record<string, PixelPrompts> = {
  serve_predict_point: { points: [{ x: 700, y: 420, label: 1 }], multimask: false },
  serve_predict_point_multimask: { points: [{ x: 700, y: 420, label: 1 }], multimask: true },
  serve_predict_box: { boxes: [[300, 200, 1000, 800]], multimask: false },
};

/** The ViT-B state dict (names and shapes of sam_vit_b_01ec64.pth) with random values, as a .pth (as bench sam writes it). */
function writeSyntheticVitB(file: string): void {
  manualSeed(0);
  const m = buildSam('vit_b');
  // PyTorch-default init leaves pos_embed and the rel-pos tables at 0: perturb every tensor.
  const tensors: Array<[string, RawTensor]> = tidy(() => [...m.stateDict()].map(([k, t]) => [k, toRaw(t.add(randn(t.shape).mul(0.02)))]));
  m.dispose();
  writePth(file, tensors);
}

/** A photo-like RGB image: smooth gradients with some texture (the encoder's cost does not depend on it). */
function syntheticImage(): Uint8Array {
  const rgb = new Uint8Array(W * H * 3);
  for (let y = 0; y < H; y++) {
    for (let x = 0; x < W; x++) {
      const i = 3 * (y * W + x), t = ((x * 31 + y * 17) % 23) - 11;
      rgb[i] = Math.max(0, Math.min(255, (x * 255) / W + t));
      rgb[i + 1] = Math.max(0, Math.min(255, (y * 255) / H - t));
      rgb[i + 2] = Math.max(0, Math.min(255, 128 + 100 * Math.sin(x / 90) * Math.cos(y / 70)));
    }
  }
  return rgb;
}

type Reply = { ms: number; iou?: number[] };

/**
 * Median ms of `runs` alternating calls of naslora (`ours`, sync or async) and the twin (`cmd`),
 * after `warmup` of each; the twin's last reply too.
 */
async function alternate(ours: () => unknown, twin: Twin<Reply> | null, cmd: string, runs: number, warmup: number): Promise<{ ms: number; torchMs: number | null; last: Reply | null }> {
  const a: number[] = [], b: number[] = [];
  let last: Reply | null = null;
  for (let i = 0; i < warmup + runs; i++) {
    const t0 = process.hrtime.bigint();
    await ours();
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    last = twin ? await twin.ask(cmd) : null;
    if (i < warmup) continue;
    a.push(ms);
    if (last) b.push(last.ms);
  }
  return { ms: median(a), torchMs: b.length ? median(b) : null, last };
}

function benchRow(name: string, ms: number, torchMs: number | null, extra: Record<string, number | string> = {}): BenchRow {
  return { name, naslora_ms: round(ms), torch_ms: torchMs === null ? null : round(torchMs), ratio: torchMs ? round(ms / torchMs, 3) : null, ...extra };
}

export async function benchServe(): Promise<BenchRow[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-bench-serve-'));
  const log = (s: string): void => { process.stderr.write(`bench serve: ${s}\n`); };
  const ckpt = path.join(dir, 'sam_vit_b_synthetic.pth');
  const embFile = path.join(dir, 'embedding.f32'), imgFile = path.join(dir, 'image.rgb');
  const rows: BenchRow[] = [];
  let twin: Twin<Reply> | null = null;
  const owned: Array<{ dispose(): void }> = [];
  try {
    log('writing a synthetic ViT-B checkpoint, an image and an embedding');
    writeSyntheticVitB(ckpt);
    const rgb = syntheticImage();
    fs.writeFileSync(imgFile, rgb);
    manualSeed(1);
    const embedding = randn([1, 256, 64, 64]).keep();
    owned.push(embedding);
    fs.writeFileSync(embFile, embedding.toBytes());

    log(`starting the PyTorch twin (ViT-B at 1024 and at ${ENCODER_IMG})`);
    twin = await startTwin<Reply>('torch_serve.py', ['--ckpt', ckpt, '--encoder-img', String(ENCODER_IMG), '--image', imgFile, '--height', String(H), '--width', String(W), '--embedding', embFile]);
    const big = loadSamFile(ckpt).model;
    owned.push(big);
    big.eval();

    // 1. The image encoder on an upload (setImage), at ENCODER_IMG.
    {
      const small = loadSamFile(ckpt, { imgSize: ENCODER_IMG }).model;
      try {
        small.eval();
        const p = new SamPredictor(small);
        log(`image encoder at ${ENCODER_IMG}: ${ENCODER_RUNS} runs after 1 warm-up on each side, alternating`);
        const r = await alternate(() => p.setImage(rgb, H, W), twin, 'set_image', ENCODER_RUNS, 1);
        p.dispose();
        rows.push(benchRow(`serve_set_image_vit_b_${ENCODER_IMG}`, r.ms, r.torchMs, { runs: ENCODER_RUNS, image: `${W}x${H}` }));
      } finally {
        small.dispose();
      }
    }

    // 2. Predictions on the cached embedding, as POST /v1/predict computes them.
    const inputSize = getPreprocessShape(H, W, big.imgSize);
    const p = new SamPredictor(big);
    for (const [name, prompts] of Object.entries(CASES)) {
      log(`${name}: ${DECODER_RUNS} runs after ${DECODER_WARMUP} warm-ups on each side, alternating`);
      const got: { iou: Float32Array | null } = { iou: null };
      const r = await alternate(() => noGrad(() => {
        p.useEmbedding(embedding, [H, W], inputSize);
        try {
          got.iou = p.predictPixelMasks(prompts).iou;
        } finally {
          p.resetImage();
        }
      }), twin, `predict ${name}`, DECODER_RUNS, DECODER_WARMUP);
      const ours = got.iou, theirs = r.last?.iou;
      const diff = ours && theirs ? Math.max(...Array.from(ours, (v, i) => Math.abs(v - theirs[i]))) : null;
      rows.push(benchRow(name, r.ms, r.torchMs, { runs: DECODER_RUNS, iou_max_diff: diff === null ? '-' : Number(diff.toExponential(2)) }));
    }
    p.dispose();
    twin?.close();
    twin = null;

    // 3. The whole request through the server (no twin).
    log(`serve_http_predict_point: ${DECODER_RUNS} requests after ${DECODER_WARMUP} warm-ups`);
    const server = await createServer({ models: new Map([[BASE, { name: BASE, model: big, adapter: null, adapterDir: null }]]) });
    try {
      const up = await server.app.inject({ method: 'POST', url: '/v1/images', headers: { 'content-type': 'image/png' }, payload: await encodeRgbPng({ data: rgb, width: W, height: H, channels: 3 }) });
      if (up.statusCode !== 200) throw new Error(`upload: ${up.statusCode} ${up.body}`);
      const imageId = (up.json() as { image_id: string }).image_id;
      const pt = CASES.serve_predict_point.points![0];
      const request = () => server.app.inject({ method: 'POST', url: '/v1/predict', payload: { image_id: imageId, points: [[pt.x, pt.y, pt.label]] } });
      // Fill the embedding cache: the first request's encoder run returns the shared embedding.
      const enc = big.image_encoder as unknown as { forward: (x: Tensor) => Tensor };
      enc.forward = () => embedding.clone();
      try {
        const first = await request();
        if (first.statusCode !== 200) throw new Error(`predict: ${first.statusCode} ${first.body}`);
      } finally {
        delete (enc as Partial<typeof enc>).forward;  // the class's own forward again
      }
      let answerBytes = 0;
      const r = await alternate(async () => {
        const res = await request();
        if (res.statusCode !== 200) throw new Error(`predict: ${res.statusCode} ${res.body}`);
        answerBytes = res.rawPayload.length;
      }, null, '', DECODER_RUNS, DECODER_WARMUP);
      if (server.stats().encoder_runs !== 1) throw new Error(`the timed requests ran the encoder (${server.stats().encoder_runs} runs)`);
      rows.push(benchRow('serve_http_predict_point', r.ms, null, { runs: DECODER_RUNS, answer_kb: round(answerBytes / 1024, 1), note: 'naslora only: app.inject, PNG answer' }));
    } finally {
      await server.close();
    }
    return rows;
  } finally {
    twin?.close();
    for (const o of owned) o.dispose();
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
