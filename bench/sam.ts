// `naslora bench sam`: SAM ViT-B inference against PyTorch (bench/torch_sam.py, segment-anything's
// modeling code as re-implemented in test/py/sam_ref.py) in the same run, same thread count, the
// two sides alternating run by run (the twin is a server, see startTorchTwin). Both sides load the same synthetic ViT-B checkpoint (the release's 314 names and shapes, random
// values) written to a temp file, so they also run the same weights. Rows:
//   vit_b_load                   loadSamFile vs build_sam (build + torch.load + load_state_dict), with
//                                the peak memory of each (fresh process: RSS peak − RSS before, and
//                                for naslora libtorch's own peak bytes) against the file size
//   vit_b_image_encoder_1024     image-encoder forward of one 1024×1024 image (no autograd)
//   vit_b_prompt_mask_decoder_point  prompt encoder + mask decoder for one point, multimask
//   vit_b_encoder_fwd_bwd_1024_explicit / _sdpa  one training forward + backward of the image encoder
//                                (every weight trainable) with each attention path: time and the peak
//                                memory above what was live before (the engine's counting allocator on
//                                the CPU, the CUDA caching allocator's peak on a GPU); the sdpa row says
//                                "unavailable" on a libtorch without scaled_dot_product_attention (1.13).
//                                No PyTorch twin. NASLORA_BENCH_SAM_TRAIN=0 skips them (about 10 GB and
//                                a few minutes on the CPU); NASLORA_BENCH_SAM_TRAIN_DEPTH=n keeps n blocks.
// `bench sam --device cuda` (NASLORA_BENCH_DEVICE) runs the fwd+bwd rows alone, on the GPU;
// --precision bf16 (NASLORA_BENCH_PRECISION) runs them under autocast.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import {
  autocast, cudaIndex, cudaMemory, F, getNumThreads, manualSeed, memory, noGrad, randn, resetCudaPeakMemory, resetPeakMemory, resolveDevice, tensor, tidy,
  type DeviceSpec, type Precision,
} from '../src/engine/index.js';
import { toRaw } from '../src/adapters/index.js';
import { writePth } from '../src/io/pth_write.js';
import type { RawTensor } from '../src/io/raw.js';
import { buildSam, loadSamFile } from '../src/model/sam/build.js';
import { setAttentionImpl } from '../src/model/sam/image_encoder.js';
import type { Sam } from '../src/model/sam/sam.js';
import { benchSrcDir, median, PYTHON, round, row, startTwin, type BenchRow } from './common.js';

const ENCODER_RUNS = Number(process.env.NASLORA_BENCH_RUNS ?? 3);
const DECODER_RUNS = 20;
const MB = 2 ** 20;

/** The ViT-B state dict (names and shapes of sam_vit_b_01ec64.pth) with random values, as a .pth. */
function writeSyntheticVitB(file: string): number {
  manualSeed(0);
  const m = buildSam('vit_b');
  // PyTorch-default init leaves pos_embed and the rel-pos tables at 0: perturb every tensor.
  const tensors: Array<[string, RawTensor]> = tidy(() => [...m.stateDict()].map(([k, t]) => [k, toRaw(t.add(randn(t.shape).mul(0.02)))]));
  m.dispose();
  writePth(file, tensors);
  return fs.statSync(file).size;
}

interface LoadMemory { ms: number; rssBefore: number; rssPeak: number; enginePeak: number; modelBytes: number }

/**
 * loadSamFile in a fresh node process, so that the peak RSS is the load's own: VmHWM (the high-water
 * RSS of this process image; getrusage's maxrss would carry the parent's peak across spawn) against
 * the RSS once the engine is imported.
 */
function measureLoad(file: string): LoadMemory {
  const url = (p: string): string => JSON.stringify(new URL(p, import.meta.url).href);
  const script = `
    import * as fs from 'node:fs';
    import { memory, resetPeakMemory } from ${url('../src/engine/index.js')};
    import { loadSamFile } from ${url('../src/model/sam/build.js')};
    const hwm = () => Number(/VmHWM:\\s+(\\d+) kB/.exec(fs.readFileSync('/proc/self/status', 'utf8'))[1]) * 1024;
    const rssBefore = process.memoryUsage().rss;
    resetPeakMemory();
    const live0 = memory().liveBytes;
    const t0 = process.hrtime.bigint();
    const { model } = loadSamFile(${JSON.stringify(file)});
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const m = memory();
    console.log(JSON.stringify({ ms, rssBefore, rssPeak: hwm(), enginePeak: m.peakBytes - live0, modelBytes: m.liveBytes - live0 }));
    model.dispose();`;
  const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`load measurement failed: ${r.stderr.trim()}`);
  return JSON.parse(r.stdout.trim().split('\n').pop()!) as LoadMemory;
}

type Reply = Record<string, number>;

const startTorchTwin = (file: string) => startTwin<Reply>('torch_sam.py', ['--ckpt', file]);

/** Median ms of `runs` alternating runs of naslora (`ours`) and PyTorch (`cmd`), after `warmup` of each. */
async function alternate(ours: () => unknown, twin: Awaited<ReturnType<typeof startTorchTwin>>, cmd: string, runs: number, warmup: number): Promise<[number, number | null]> {
  const a: number[] = [], b: number[] = [];
  for (let i = 0; i < warmup + runs; i++) {
    const t0 = process.hrtime.bigint();
    tidy(() => { ours(); });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const t = twin ? (await twin.ask(cmd)).ms : null;
    if (i < warmup) continue;
    a.push(ms);
    if (t !== null) b.push(t);
  }
  return [median(a), b.length ? median(b) : null];
}

/**
 * One training forward + backward of the image encoder at 1024 (every weight trainable) with the
 * given attention path: milliseconds and the peak bytes above what was live before.
 */
function encoderTrainStep(model: Sam, device: string, precision: Precision, impl: 'explicit' | 'sdpa'): { ms: number; peakBytes: number; measuredBy: string } {
  const prev = setAttentionImpl(impl);
  const cuda = cudaIndex(device);
  try {
    for (const p of model.image_encoder.parameters()) p.grad = null;
    manualSeed(2);
    const img = randn([1, 3, 1024, 1024], { device: device as 'cpu' });
    let before: number;
    if (cuda !== null) {
      const m = cudaMemory(cuda);
      if (!m) throw new Error('this addon was built without CUDA memory statistics (cuda_runtime_api.h not found at build time)');
      resetCudaPeakMemory(cuda);
      before = m.allocated;
    } else {
      resetPeakMemory();
      before = memory().liveBytes;
    }
    const t0 = process.hrtime.bigint();
    tidy(() => {
      const out = autocast({ device, precision }, () => model.image_encoder.forward(img));
      F.mseLoss(out.float(), out.float().detach().mul(0.5)).backward();
      out.sum().item();  // waits for the device
    });
    const ms = Number(process.hrtime.bigint() - t0) / 1e6;
    const peak = cuda !== null ? cudaMemory(cuda)!.peak : memory().peakBytes;
    if (model.image_encoder.blocks.at(0).attn.lastImpl !== impl) throw new Error(`the encoder did not take the ${impl} path`);
    img.dispose();
    for (const p of model.image_encoder.parameters()) p.grad = null;
    return { ms, peakBytes: peak - before, measuredBy: cuda !== null ? 'CUDA caching allocator peak' : 'engine CPU allocator peak' };
  } finally {
    setAttentionImpl(prev);
  }
}

function trainRows(model: Sam, device: string, precision: Precision, log: (s: string) => void): BenchRow[] {
  const depth = process.env.NASLORA_BENCH_SAM_TRAIN_DEPTH ? Number(process.env.NASLORA_BENCH_SAM_TRAIN_DEPTH) : 12;
  if (depth < 12) {
    // Fewer blocks for a quick look (the rows say how many); the global blocks are kept where they fall.
    model.image_encoder.blocks.items.splice(depth);
  }
  model.train();
  const rows: BenchRow[] = [];
  const mb = (b: number): number => round(b / MB, 1);
  const sdpa = F.hasScaledDotProductAttention();
  for (const impl of ['explicit', 'sdpa'] as const) {
    const name = `vit_b_encoder_fwd_bwd_1024_${impl}`;
    if (impl === 'sdpa' && !sdpa) {
      rows.push({ name, naslora_ms: NaN, torch_ms: null, ratio: null, note: 'unavailable: this libtorch has no scaled_dot_product_attention (PyTorch 2.0 or later)' });
      continue;
    }
    log(`image encoder fwd+bwd at 1024, ${impl} attention, ${device}, ${precision}${depth < 12 ? `, ${depth} blocks` : ''}`);
    encoderTrainStep(model, device, precision, impl);  // warm-up (and allocator caches)
    const r = encoderTrainStep(model, device, precision, impl);
    rows.push(row(name, r.ms, null, { peak_mb: mb(r.peakBytes), measured_by: r.measuredBy, device, precision, blocks: depth }));
  }
  return rows;
}

export async function benchSam(): Promise<BenchRow[]> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-bench-sam-'));
  const file = path.join(dir, 'sam_vit_b_synthetic.pth');
  const log = (s: string): void => { process.stderr.write(`bench sam: ${s}\n`); };
  const device = resolveDevice((process.env.NASLORA_BENCH_DEVICE ?? 'cpu') as DeviceSpec, { what: '--device' });
  const precision = (process.env.NASLORA_BENCH_PRECISION ?? 'fp32') as Precision;
  const withTrain = process.env.NASLORA_BENCH_SAM_TRAIN !== '0';
  try {
    log('writing a synthetic ViT-B checkpoint');
    const fileBytes = writeSyntheticVitB(file);
    if (device !== 'cpu') {
      // On a GPU only the fwd+bwd rows: the PyTorch twin (and the other rows) compare CPU against CPU.
      log(`${device}: the fwd+bwd rows only (the other rows compare against PyTorch on the CPU)`);
      const { model } = loadSamFile(file);
      try {
        model.to(device);
        return trainRows(model, device, precision, log);
      } finally {
        model.dispose();
      }
    }
    log('measuring the load in a fresh process');
    const load = measureLoad(file);
    log('starting the PyTorch twin');
    const twin = await startTorchTwin(file);
    const torch: Reply = twin ? await twin.ask('load') : {};

    const { model } = loadSamFile(file);
    model.eval();
    manualSeed(1);
    const img = randn([1, 3, 1024, 1024]).keep();
    log(`image encoder: ${ENCODER_RUNS} runs after 1 warm-up on each side, alternating (~25 s each on one thread)`);
    const [encoderMs, torchEncoderMs] = await alternate(() => noGrad(() => model.image_encoder.forward(img)), twin, 'encoder', ENCODER_RUNS, 1);
    const features = tidy(() => noGrad(() => model.image_encoder.forward(img))).keep();
    // One foreground point (in the 1024 frame); SAM appends a padding point when there is no box.
    const coords = tensor([512, 400], [1, 1, 2]).keep(), labels = tensor(Int32Array.from([1]), [1, 1]).keep();
    log(`prompt encoder + mask decoder: ${DECODER_RUNS} runs`);
    const [decoderMs, torchDecoderMs] = await alternate(() => noGrad(() => {
      const pe = model.prompt_encoder;
      const [sparse, dense] = pe.forward({ coords, labels }, null, null);
      return model.mask_decoder.forward(features, pe.getDensePe(), sparse, dense, true);
    }), twin, 'decoder', DECODER_RUNS, 3);
    twin?.close();
    for (const t of [img, features, coords, labels]) t.dispose();
    const train = withTrain ? trainRows(model, device, precision, log) : [];
    model.dispose();
    if (torchEncoderMs !== null) torch.vit_b_image_encoder_1024 = torchEncoderMs;
    if (torchDecoderMs !== null) torch.vit_b_prompt_mask_decoder_point = torchDecoderMs;

    const mb = (b: number): number => round(b / MB, 1);
    return [
      row('vit_b_load', load.ms, torch, {
        file_mb: mb(fileBytes), model_mb: mb(load.modelBytes),
        rss_delta_mb: mb(load.rssPeak - load.rssBefore), rss_peak_mb: mb(load.rssPeak), engine_peak_mb: mb(load.enginePeak),
        torch_rss_delta_mb: torch.vit_b_load_rss_delta_mb ?? '-', torch_rss_peak_mb: torch.vit_b_load_rss_peak_mb ?? '-',
      }),
      row('vit_b_image_encoder_1024', encoderMs, torch, { runs: ENCODER_RUNS }),
      row('vit_b_prompt_mask_decoder_point', decoderMs, torch, { runs: DECODER_RUNS }),
      ...train,
    ];
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}
