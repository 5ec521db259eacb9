// Data-parallel training on c10d/Gloo over loopback: 2 ranks × 2 samples train the same weights as
// 1 process × 4 samples (LoRA; Conv-LoRA with its gate noise off, whose load-balancing loss is taken
// over the global batch; NAS-LoRA through warm-up → search → fix), with the same losses and
// validation metrics; once with --nproc 2, once as two "nodes" (--nnodes 2 on 127.0.0.1). Then a
// worker killed with SIGKILL mid-run: the other stops within the timeout naming the lost rank, the
// last checkpoint loads, and --resume ends with the weights of an uninterrupted run.
import { before, test } from 'node:test';
import assert from 'node:assert/strict';
import { spawn, spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as net from 'node:net';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';
import { readSafetensors } from '../src/io/safetensors.js';

const here = path.dirname(fileURLToPath(import.meta.url));
const ROOT = path.resolve(here, '../..');
const CLI = path.join(ROOT, 'dist/src/cli/main.js');
const work = fs.mkdtempSync(path.join(os.tmpdir(), 'naslora-dist-'));
process.on('exit', () => fs.rmSync(work, { recursive: true, force: true }));

const TINY = {
  img_size: 32, patch_size: 8, embed_dim: 32, depth: 2, num_heads: 2, mlp_ratio: 2, window_size: 2, global_attn_indexes: [1],
  prompt_embed_dim: 16, mask_in_chans: 4, decoder_depth: 1, decoder_mlp_dim: 32, decoder_heads: 2, iou_head_hidden_dim: 8,
};
const modelConfig = path.join(work, 'tiny.json');

function args(method: string, out: string, steps = 10, extra: string[] = []): string[] {
  return ['train', '-c', method, '--set', `model.config=${modelConfig}`, '--set', 'model.checkpoint=null', '--set', 'model.pretrained=none',
    '--set', 'data.dir=null', '--set', 'data.synthetic={kind: target, n: 40, size: 32, seed: 3}', '--set', 'data.image_size=32',
    '--set', 'data.batch_size=4', '--set', 'data.splits.fractions=[0.6, 0.2, 0.2]', '--set', 'method.rank=4', '--set', 'method.experts=3',
    '--set', 'method.gate_noise=false', '--set', 'train.epochs=null', '--set', `train.steps=${steps}`, '--set', 'train.eval_every=5',
    '--set', 'train.log_every=2', '--set', `train.out_dir=${out}`, ...extra];
}

const cli = (a: string[], env: NodeJS.ProcessEnv = {}) => spawnSync(process.execPath, [CLI, ...a], { encoding: 'utf8', env: { ...process.env, ...env }, timeout: 180_000 });

function freePort(): Promise<number> {
  return new Promise((resolve) => {
    const s = net.createServer().listen(0, '127.0.0.1', () => { const p = (s.address() as net.AddressInfo).port; s.close(() => resolve(p)); });
  });
}

interface Events { losses: number[]; evals: Array<Record<string, number>> }
function events(dir: string): Events {
  const ev = fs.readFileSync(path.join(dir, 'events.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { type: string; loss?: number; metrics?: Record<string, number> });
  return { losses: ev.filter((e) => e.type === 'step').map((e) => e.loss!), evals: ev.filter((e) => e.type === 'eval').map((e) => e.metrics!) };
}

function weights(dir: string): Map<string, Float32Array> {
  const st = readSafetensors(path.join(dir, 'checkpoints/last/adapter.safetensors'));
  return new Map([...st.tensors.entries()].map(([k, t]) => {
    assert.equal(t.dtype, 'float32', k);
    const b = t.data as Uint8Array;
    return [k, new Float32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength))];
  }));
}

/**
 * ‖a−b‖ / ‖b‖ per tensor (‖b‖ at least 1e-3·√n, for tensors still near zero such as lora_B early
 * on), the worst over all. The norm, not the largest element: parameters whose exact gradient is
 * zero (an attention key bias: softmax ignores a shift) get rounding noise that Adam scales up to
 * lr-sized steps, differently for any change of summation order, in PyTorch's DDP too.
 */
function worstRel(a: Map<string, Float32Array>, b: Map<string, Float32Array>): { name: string; rel: number } {
  assert.deepEqual([...a.keys()].sort(), [...b.keys()].sort());
  let worst = { name: '', rel: 0 };
  for (const [k, x] of a) {
    const y = b.get(k)!;
    let d2 = 0, n2 = 0;
    for (let i = 0; i < x.length; i++) { d2 += (x[i]! - y[i]!) ** 2; n2 += y[i]! ** 2; }
    const rel = Math.sqrt(d2) / Math.max(Math.sqrt(n2), 1e-3 * Math.sqrt(x.length));
    if (process.env.DEBUG_DIST) console.log(k, 'rel', rel);
    if (rel > worst.rel) worst = { name: k, rel };
  }
  return worst;
}

function assertSameRun(dist: string, single: string, what: string): void {
  const w = worstRel(weights(dist), weights(single));
  assert.ok(w.rel < 1e-5, `${what}: ${w.name} differs by ${w.rel.toExponential(2)} relative`);
  const a = events(dist), b = events(single);
  assert.equal(a.losses.length, b.losses.length);
  a.losses.forEach((l, i) => assert.ok(Math.abs(l - b.losses[i]!) <= 1e-5 * Math.abs(b.losses[i]!), `${what}: step ${i + 1} loss ${l} vs ${b.losses[i]}`));
  assert.equal(a.evals.length, b.evals.length);
  a.evals.forEach((m, i) => { for (const k of Object.keys(b.evals[i]!)) assert.ok(Math.abs(m[k]! - b.evals[i]![k]!) <= 1e-6, `${what}: eval ${i} ${k} ${m[k]} vs ${b.evals[i]![k]}`); });
  const ma = JSON.parse(fs.readFileSync(path.join(dist, 'metrics.json'), 'utf8')) as { test: Record<string, number> };
  const mb = JSON.parse(fs.readFileSync(path.join(single, 'metrics.json'), 'utf8')) as { test: Record<string, number> };
  // The weights agree to 1e-5 (float32, another summation order); E-measure thresholds the map at
  // twice its mean, so a last-digit change moves it by ~1e-6 (measured 1.1e-6 on one host): 1e-5 here.
  for (const k of Object.keys(mb.test)) assert.ok(Math.abs(ma.test[k]! - mb.test[k]!) <= 1e-5, `${what}: test ${k} ${ma.test[k]} vs ${mb.test[k]}`);
}

before(() => fs.writeFileSync(modelConfig, JSON.stringify({ config: TINY })));

for (const method of ['lora', 'conv-lora', 'nas-lora']) {
  test(`${method}: 2 ranks × batch 2 (--nproc 2) train what 1 process × batch 4 trains`, () => {
    const single = path.join(work, `${method}-single`), two = path.join(work, `${method}-nproc2`);
    const a = cli(args(method, single));
    assert.equal(a.status, 0, a.stderr);
    const b = cli([...args(method, two), '--nproc', '2']);
    assert.equal(b.status, 0, b.stderr);
    assert.match(b.stderr + b.stdout, /data-parallel: 2 ranks, 2 samples each per batch/);
    if (method === 'nas-lora') {
      const stages = fs.readFileSync(path.join(two, 'events.jsonl'), 'utf8').match(/"type":"stage","step":\d+,"stage":"(\w+)"/g)!;
      assert.deepEqual(stages.map((s) => /"stage":"(\w+)"/.exec(s)![1]), ['warmup', 'search', 'fix']);
      assert.deepEqual(JSON.parse(fs.readFileSync(path.join(two, 'derived_ops.json'), 'utf8')).derived, JSON.parse(fs.readFileSync(path.join(single, 'derived_ops.json'), 'utf8')).derived);
    }
    assertSameRun(two, single, method);
  });
}

test('two "nodes" on 127.0.0.1 (--nnodes 2) train what one process trains', async () => {
  const single = path.join(work, 'nas-lora-single'), two = path.join(work, 'nas-lora-nnodes2');
  const port = String(await freePort());
  const node = (rank: number) => new Promise<{ code: number | null; err: string }>((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args('nas-lora', two), '--nnodes', '2', '--node-rank', String(rank), '--nproc', '1', '--master-addr', '127.0.0.1', '--master-port', port], { stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => { err += d; });
    p.on('exit', (code) => resolve({ code, err }));
  });
  const [n0, n1] = await Promise.all([node(0), node(1)]);
  assert.equal(n0.code, 0, n0.err);
  assert.equal(n1.code, 0, n1.err);
  assertSameRun(two, single, 'nnodes 2');
});

test('bad world sizes are clear errors', () => {
  const r = cli([...args('lora', path.join(work, 'bad3')), '--nproc', '3']);
  assert.notEqual(r.status, 0);
  assert.match(r.stderr, /data\.batch_size 4 is the global batch and must divide evenly over the 3 ranks/);
  const e = cli(args('lora', path.join(work, 'bad-env')), { WORLD_SIZE: '2', RANK: '0', NASLORA_WORKER: '1' });
  assert.notEqual(e.status, 0);
  assert.match(e.stderr, /WORLD_SIZE=2 but MASTER_(PORT|ADDR) is not set/);
});

test('kill -9 a worker: the other names the lost rank within the timeout; --resume ends with the uninterrupted weights', async () => {
  const steps = 40;
  const full = path.join(work, 'kill-full'), cut = path.join(work, 'kill-cut');
  const f = cli([...args('lora', full, steps), '--nproc', '2']);
  assert.equal(f.status, 0, f.stderr);
  // torchrun's variables: the test's processes are the workers themselves.
  const port = String(await freePort());
  const env = (rank: number) => ({ ...process.env, NASLORA_WORKER: '1', WORLD_SIZE: '2', RANK: String(rank), LOCAL_RANK: String(rank), MASTER_ADDR: '127.0.0.1', MASTER_PORT: port, NASLORA_DIST_TIMEOUT_S: '5' });
  const start = (rank: number, extra: string[] = []) => spawn(process.execPath, [CLI, ...args('lora', cut, steps), ...extra], { env: env(rank), stdio: ['ignore', 'pipe', 'pipe'] });
  const r0 = start(0), r1 = start(1);
  let err0 = '';
  r0.stderr.on('data', (d) => { err0 += d; });
  r1.stderr.resume();
  r0.stdout.resume();
  r1.stdout.resume();
  const exit0 = new Promise<number | null>((resolve) => r0.on('exit', (c) => resolve(c)));
  // Kill rank 1 once rank 0 has written a checkpoint past step 10.
  const ckpt = path.join(cut, 'checkpoints/last/trainer_state.json');
  for (let i = 0; i < 600; i++) {
    if (fs.existsSync(ckpt) && (JSON.parse(fs.readFileSync(ckpt, 'utf8')) as { step: number }).step >= 10) break;
    await new Promise((r) => setTimeout(r, 50));
  }
  r1.kill('SIGKILL');
  const t0 = Date.now();
  const code = await exit0;
  const took = (Date.now() - t0) / 1000;
  assert.notEqual(code, 0);
  assert.ok(took < 20, `rank 0 took ${took} s to stop`);
  assert.match(err0, /lost rank 1/, err0);
  const saved = JSON.parse(fs.readFileSync(ckpt, 'utf8')) as { step: number };
  assert.ok(saved.step >= 10 && saved.step < steps, `checkpoint at step ${saved.step}`);
  // Resume with the same world size: the run ends where the uninterrupted one did.
  const port2 = String(await freePort());
  const resume = (rank: number) => new Promise<{ code: number | null; err: string }>((resolve) => {
    const p = spawn(process.execPath, [CLI, ...args('lora', cut, steps), '--resume'], { env: { ...env(rank), MASTER_PORT: port2 }, stdio: ['ignore', 'pipe', 'pipe'] });
    let err = '';
    p.stderr.on('data', (d) => { err += d; });
    p.stdout.resume();
    p.on('exit', (c) => resolve({ code: c, err }));
  });
  const [a, b] = await Promise.all([resume(0), resume(1)]);
  assert.equal(a.code, 0, a.err);
  assert.equal(b.code, 0, b.err);
  const w = worstRel(weights(cut), weights(full));
  assert.ok(w.rel < 1e-6, `${w.name} differs by ${w.rel}`);
});

test('compare --nproc 2: every run data-parallel, the same results as one process; pretrain --nproc 2 writes its checkpoint', () => {
  const base = {
    model: { pretrained: 'none', checkpoint: null, config: modelConfig },
    data: { dir: null, synthetic: { kind: 'target', n: 40, size: 32, seed: 3 }, image_size: 32, batch_size: 4, splits: { seed: 0, fractions: [0.6, 0.2, 0.2], arch_frac: 0.15 } },
    method: { rank: 4 }, train: { epochs: null, steps: 6, eval_every: 3, log_every: 2 },
  };
  const results: Array<{ methods: Array<{ method: string; dice_mean: number; iou_mean: number }> }> = [];
  for (const [name, extra] of [['one', []], ['two', ['--nproc', '2']]] as const) {
    const file = path.join(work, `compare-${name}.yaml`);
    fs.writeFileSync(file, JSON.stringify({ base, methods: ['lora', 'nas-lora'], seeds: [0], out_dir: path.join(work, `compare-${name}`) }));
    const r = cli(['compare', '-c', file, '--json', ...extra]);
    assert.equal(r.status, 0, r.stderr);
    results.push(JSON.parse(r.stdout) as (typeof results)[number]);
  }
  assert.equal(results[1]!.methods.length, 2);
  results[1]!.methods.forEach((m, i) => {
    assert.ok(Math.abs(m.dice_mean - results[0]!.methods[i]!.dice_mean) <= 1e-6, `${m.method} dice`);
    assert.ok(Math.abs(m.iou_mean - results[0]!.methods[i]!.iou_mean) <= 1e-6, `${m.method} iou`);
  });
  const pre = path.join(work, 'pretrain2');
  const p = cli(['pretrain', '-c', 'decoder-only', '--set', `model.config=${modelConfig}`, '--set', 'model.checkpoint=null', '--set', 'model.pretrained=none',
    '--set', 'data.dir=null', '--set', 'data.synthetic={kind: source, n: 24, size: 32, seed: 0}', '--set', 'data.image_size=32', '--set', 'data.batch_size=4',
    '--set', 'train.epochs=null', '--set', 'train.steps=4', '--set', `train.out_dir=${pre}`, '--nproc', '2']);
  assert.equal(p.status, 0, p.stderr);
  assert.ok(fs.existsSync(path.join(pre, 'sam.safetensors')));
  assert.doesNotMatch(p.stderr, /\[rank 1\].*pretrained in/);  // rank 1 stays quiet
});
