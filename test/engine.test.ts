// Engine tests: values against known results, finite-difference gradients for every op family,
// optimizers against hand-computed updates, errors, and flat memory over thousands of steps.
import { test } from 'node:test';
import assert from 'node:assert/strict';
import * as v8 from 'node:v8';
import * as vm from 'node:vm';
import {
  tensor, tidy, noGrad, zeros, ones, arange, randn, cat, stack, where, einsum, manualSeed, memory, F,
  Linear, AdamW, Adam, SGD, clipGradNorm, Tensor, engineInfo, full,
} from '../src/engine/index.js';

const close = (a: ArrayLike<number>, b: ArrayLike<number>, tol = 1e-5) => {
  assert.equal(a.length, b.length, 'length');
  for (let i = 0; i < a.length; i++) {
    assert.ok(Math.abs(a[i] - b[i]) <= tol * Math.max(1, Math.abs(b[i])), `index ${i}: ${a[i]} vs ${b[i]}`);
  }
};

test('values: arithmetic, broadcasting, reductions, views', () => tidy(() => {
  const a = tensor([1, 2, 3, 4, 5, 6], [2, 3]);
  const b = tensor([10, 20, 30], [3]);
  close(a.add(b).toArray(), [11, 22, 33, 14, 25, 36]);
  close(a.mul(2).sub(1).toArray(), [1, 3, 5, 7, 9, 11]);
  close(a.div(b).toArray(), [0.1, 0.1, 0.1, 0.4, 0.25, 0.2]);
  close(a.sum(1).toArray(), [6, 15]);
  close(a.mean(0).toArray(), [2.5, 3.5, 4.5]);
  close(a.max(1).toArray(), [3, 6]);
  assert.deepEqual([...a.argmax(1).toArray<'int64'>()], [2n, 2n]);
  close(a.var(1).toArray(), [1, 1]);
  close([a.norm().item()], [Math.sqrt(91)]);
  close(a.transpose(0, 1).contiguous().toArray(), [1, 4, 2, 5, 3, 6]);
  close(a.permute(1, 0).reshape(6).toArray(), [1, 4, 2, 5, 3, 6]);
  close(a.narrow(1, 1, 2).contiguous().toArray(), [2, 3, 5, 6]);
  close(a.slice(1, 0, null, 2).contiguous().toArray(), [1, 3, 4, 6]);
  close(a.indexSelect(1, tensor([2, 0], [2], { dtype: 'int64' })).toArray(), [3, 1, 6, 4]);
  close(a.gather(1, tensor([0, 0, 1, 2], [2, 2], { dtype: 'int64' })).toArray(), [1, 1, 5, 6]);
  close(cat([a, a], 0).sum().toArray(), [42]);
  assert.deepEqual(stack([a, a], 1).shape, [2, 2, 3]);
  assert.deepEqual(a.split(1, 1).map((t) => t.shape), [[2, 1], [2, 1], [2, 1]]);
  close(F.pad(tensor([1, 2], [1, 2]), [1, 1], 0).toArray(), [0, 1, 2, 0]);
  close(tensor([1, 2], [2]).repeat(2).toArray(), [1, 2, 1, 2]);
  close(tensor([1, 2], [2, 1]).expand(2, 2).contiguous().toArray(), [1, 1, 2, 2]);
  close(where(a.gt(3), a, zeros([1])).toArray(), [0, 0, 0, 4, 5, 6]);
  close(a.matmul(a.transpose(0, 1)).toArray(), [14, 32, 32, 77]);
  close(einsum('ij,ij->i', a, a).toArray(), [14, 77]);
  close(tensor([0, 1], [2]).gelu().toArray(), [0, 0.8413447]);
  close(tensor([1, 2, 3], [3]).softmax(0).toArray(), [0.09003057, 0.24472847, 0.66524096]);
  const [v, i] = tensor([3, 1, 2], [3]).topk(2);
  close(v.toArray(), [3, 2]);
  assert.deepEqual([...i.toArray<'int64'>()], [0n, 2n]);
  assert.deepEqual([...tensor([2, 0], [2], { dtype: 'int64' }).oneHot(3).toArray<'int64'>()], [0n, 0n, 1n, 1n, 0n, 0n]);
  close(F.binaryCrossEntropyWithLogits(tensor([0], [1]), tensor([1], [1])).toArray(), [Math.log(2)]);
  assert.equal(tensor([1, 2], [2], { dtype: 'float64' }).dtype, 'float64');
  assert.equal(tensor(new Uint8Array([1, 0]), [2], { dtype: 'bool' }).dtype, 'bool');
  assert.equal(a.to('bfloat16').dtype, 'bfloat16');
  assert.equal(a.to('float16').to('float32').sum().item(), 21);
}));

test('values: conv, pool, interpolate, layer norm against hand results', () => tidy(() => {
  const x = arange(16, undefined, 1, { dtype: 'float32' }).reshape(1, 1, 4, 4);
  const w = ones([1, 1, 3, 3]);
  close(F.conv2d(x, w, null, { padding: 0 }).toArray(), [45, 54, 81, 90]);
  close(F.conv2d(x, w, null, { stride: 2, padding: 1 }).toArray(), [10, 24, 51, 90]);
  close(F.conv2d(x, w, null, { dilation: 2, padding: 2 }).shape, [1, 1, 4, 4]);
  close(F.avgPool2d(x, 2).toArray(), [2.5, 4.5, 10.5, 12.5]);
  close(F.maxPool2d(x, 2).toArray(), [5, 7, 13, 15]);
  // count_include_pad=False at the corner: mean of {0,1,4,5}
  close([F.avgPool2d(x, 3, { stride: 1, padding: 1, countIncludePad: false }).toArray()[0]], [2.5]);
  close(F.interpolate(tensor([1, 2, 3, 4], [1, 1, 2, 2]), { size: [4, 4], mode: 'nearest' }).toArray().slice(0, 4), [1, 1, 2, 2]);
  close(F.interpolate(tensor([0, 1], [1, 1, 1, 2]), { size: [1, 3], mode: 'bilinear', alignCorners: true }).toArray(), [0, 0.5, 1]);
  const ln = F.layerNorm(tensor([1, 2, 3], [1, 3]), [3], null, null, 0);
  close(ln.toArray(), [-1.2247449, 0, 1.2247449]);
  const ct = F.convTranspose2d(ones([1, 1, 2, 2]), ones([1, 1, 2, 2]), null, { stride: 2 });
  close(ct.toArray(), new Array(16).fill(1));
}));

// Central-difference gradient check in float64 of f(inputs) · r for a fixed random r.
function gradcheck(name: string, fn: (...xs: Tensor[]) => Tensor, shapes: number[][], opts: { positive?: boolean } = {}) {
  tidy(() => {
    manualSeed(7);
    const xs = shapes.map((s) => {
      let t = randn(s, { dtype: 'float64' });
      if (opts.positive) t = t.abs().add(0.5);
      return t.requiresGrad_(true);
    });
    const out0 = fn(...xs);
    const r = randn(out0.shape, { dtype: 'float64' });
    out0.mul(r).sum().backward();
    const eps = 1e-6;
    xs.forEach((x, k) => {
      const analytic = x.grad!.toArray<'float64'>();
      const base = x.detach().toArray<'float64'>();
      const numeric = new Float64Array(base.length);
      noGrad(() => {
        for (let i = 0; i < base.length; i++) {
          const eval1 = (d: number) => tidy(() => {
            const b = Float64Array.from(base);
            b[i] += d;
            const xi = tensor(b, x.shape);
            const args = xs.map((o, j) => (j === k ? xi : o.detach()));
            return fn(...args).mul(r).sum().item();
          });
          numeric[i] = (eval1(eps) - eval1(-eps)) / (2 * eps);
        }
      });
      for (let i = 0; i < base.length; i++) {
        assert.ok(Math.abs(analytic[i] - numeric[i]) <= 1e-5 * Math.max(1, Math.abs(numeric[i])),
          `${name}: input ${k} element ${i}: analytic ${analytic[i]} vs numeric ${numeric[i]}`);
      }
    });
  });
}

test('gradients: elementwise and comparisons/where', () => {
  gradcheck('add/mul/div broadcast', (a, b) => a.add(b).mul(a).div(b.abs().add(1)), [[2, 3], [3]]);
  gradcheck('pow/exp/log/sqrt', (a) => a.pow(3).add(a.exp()).add(a.log()).add(a.sqrt()).add(a.rsqrt()), [[5]], { positive: true });
  gradcheck('tanh/sigmoid/gelu/erf/softplus', (a) => a.tanh().add(a.sigmoid()).add(a.gelu()).add(a.erf()).add(a.softplus()), [[6]]);
  gradcheck('clamp/abs/maximum', (a, b) => a.clamp(-0.3, 0.3).add(a.maximum(b)).add(a.abs()), [[6], [6]]);
  gradcheck('where', (a, b) => where(a.gt(0), a.mul(2), b), [[6], [6]]);
});

test('gradients: reductions', () => {
  gradcheck('sum/mean', (a) => a.sum(1).add(a.mean(1)), [[3, 4]]);
  gradcheck('max/amax', (a) => a.max(1).add(a.amax(0).sum()), [[3, 4]]);
  gradcheck('var/std/norm', (a) => a.var(1).add(a.std(1)).add(a.norm(2, 1)), [[3, 4]]);
  gradcheck('logsumexp', (a) => a.logsumexp(1), [[3, 4]]);
});

test('gradients: views and joins', () => {
  gradcheck('reshape/permute/transpose', (a) => a.reshape(4, 3).permute(1, 0).transpose(0, 1).mul(a.reshape(4, 3)), [[3, 4]]);
  gradcheck('narrow/slice/select', (a) => cat([a.narrow(1, 1, 2), a.slice(1, 0, null, 2)], 1).add(a.select(1, 0).unsqueeze(1)), [[3, 4]]);
  gradcheck('indexSelect/gather', (a) => tidy(() => {
    const i = tensor([2, 0], [2], { dtype: 'int64' });
    return a.indexSelect(1, i).add(a.gather(1, tensor([0, 3, 1, 1, 2, 0], [3, 2], { dtype: 'int64' })));
  }), [[3, 4]]);
  gradcheck('stack/split/pad/repeat/expand', (a) => {
    const [p, q] = a.split(2, 1);
    return stack([p, q], 0).sum(0).add(F.pad(a, [1, 1, 0, 0]).narrow(1, 0, 2)).repeat(2, 1).add(a.sum(1, true).expand(3, 2).repeat(2, 1));
  }, [[3, 4]]);
});

test('gradients: matmul, bmm, linear', () => {
  gradcheck('matmul', (a, b) => a.matmul(b), [[3, 4], [4, 2]]);
  gradcheck('bmm', (a, b) => a.bmm(b), [[2, 3, 4], [2, 4, 2]]);
  gradcheck('linear', (x, w, b) => F.linear(x, w, b), [[3, 4], [5, 4], [5]]);
});

test('gradients: conv2d (stride, padding, dilation, groups) and conv_transpose2d', () => {
  gradcheck('conv2d', (x, w, b) => F.conv2d(x, w, b, { stride: 2, padding: 1 }), [[1, 2, 5, 5], [3, 2, 3, 3], [3]]);
  gradcheck('conv2d dilated grouped', (x, w) => F.conv2d(x, w, null, { padding: 2, dilation: 2, groups: 2 }), [[1, 4, 5, 5], [4, 2, 3, 3]]);
  gradcheck('conv_transpose2d', (x, w, b) => F.convTranspose2d(x, w, b, { stride: 2 }), [[1, 2, 3, 3], [2, 3, 2, 2], [3]]);
});

test('gradients: pools, interpolate, layer_norm, softmax, BCE', () => {
  gradcheck('avg/max pool', (x) => F.avgPool2d(x, 3, { stride: 1, padding: 1, countIncludePad: false }).add(F.maxPool2d(x, 3, { stride: 1, padding: 1 })), [[1, 2, 4, 4]]);
  gradcheck('bilinear', (x) => F.interpolate(x, { size: [7, 5], mode: 'bilinear' }), [[1, 2, 3, 3]]);
  gradcheck('bicubic align_corners', (x) => F.interpolate(x, { size: [6, 6], mode: 'bicubic', alignCorners: true }), [[1, 1, 3, 3]]);
  gradcheck('bilinear antialias', (x) => F.interpolate(x, { size: [3, 2], mode: 'bilinear', antialias: true }), [[1, 1, 7, 5]]);
  gradcheck('nearest', (x) => F.interpolate(x, { size: [6, 6], mode: 'nearest' }), [[1, 1, 3, 3]]);
  gradcheck('layer_norm', (x, w, b) => F.layerNorm(x, [4], w, b, 1e-6), [[3, 4], [4], [4]]);
  gradcheck('softmax/log_softmax', (x) => x.softmax(1).add(x.logSoftmax(0)), [[3, 4]]);
  gradcheck('bce with logits', (x) => tidy(() => {
    const y = tensor(new Float64Array(12).map((_, i) => (i % 5) / 4), [3, 4]);
    return F.binaryCrossEntropyWithLogits(x, y, { weight: y.add(1), posWeight: full([4], 2, { dtype: 'float64' }), reduction: 'none' });
  }), [[3, 4]]);
});

test('autograd controls: requiresGrad, zeroing, detach, noGrad', () => tidy(() => {
  const x = tensor([1, 2], [2], { requiresGrad: true });
  x.mul(x).sum().backward();
  close(x.grad!.toArray(), [2, 4]);
  x.mul(x).sum().backward();  // accumulates
  close(x.grad!.toArray(), [4, 8]);
  x.grad = null;
  assert.equal(x.grad, null);
  const y = noGrad(() => x.mul(3));
  assert.equal(y.requiresGrad, false);
  assert.equal(x.mul(3).detach().requiresGrad, false);
  assert.throws(() => y.sum().backward(), /does not require grad/);
}));

test('optimizers: AdamW, Adam, SGD against hand-computed updates; groups; state round trip', () => tidy(() => {
  // One AdamW step: m = 0.1 g, v = 0.001 g², m̂ = g, v̂ = g², p ← p(1 − lr·wd) − lr·g/(|g|+eps)
  const p = tensor([1, -2], [2], { requiresGrad: true });
  const opt = new AdamW([p], { lr: 0.1, weightDecay: 0.5 });
  p.grad = tensor([0.5, -4], [2]);
  opt.step();
  close(p.toArray(), [1 * (1 - 0.05) - 0.1, -2 * (1 - 0.05) + 0.1], 1e-6);
  // Second step by hand.
  p.grad = tensor([1, 1], [2]);
  const m = [0.9 * 0.05 + 0.1 * 1, 0.9 * -0.4 + 0.1 * 1];
  const v = [0.999 * 0.00025 + 0.001, 0.999 * 0.016 + 0.001];
  const before = p.toArray();
  opt.step();
  const expect = [0, 1].map((i) => before[i] * 0.95 - 0.1 * (m[i] / (1 - 0.81)) / (Math.sqrt(v[i] / (1 - 0.998001)) + 1e-8));
  close(p.toArray(), expect, 1e-6);

  const q = tensor([1], [1], { requiresGrad: true });
  const adam = new Adam([q], { lr: 0.01, weightDecay: 0.1 });
  q.grad = tensor([2], [1]);
  adam.step();  // g' = 2 + 0.1 = 2.1 → step −lr·sign
  close(q.toArray(), [1 - 0.01], 1e-6);

  const s = tensor([1], [1], { requiresGrad: true });
  const sgd = new SGD([s], { lr: 0.1, momentum: 0.9 });
  s.grad = tensor([1], [1]);
  sgd.step();
  sgd.step();  // buf = 1, then 0.9 + 1 = 1.9
  close(s.toArray(), [1 - 0.1 - 0.19], 1e-6);

  // Parameter groups with their own lr, changeable between steps.
  const a = tensor([0], [1], { requiresGrad: true });
  const b = tensor([0], [1], { requiresGrad: true });
  const g = new SGD([{ params: [a], lr: 1 }, { params: [b], lr: 0.5 }]);
  a.grad = tensor([1], [1]); b.grad = tensor([1], [1]);
  g.step();
  g.groups[1].hyper.lr = 2;
  g.step();
  close([a.item(), b.item()], [-2, -2.5]);

  // Save and restore: two optimizers continuing from the same state give identical parameters.
  const saved = opt.stateDict();
  const p2 = p.detach().clone().requiresGrad_(true);
  const opt2 = new AdamW([p2], { lr: 0.1, weightDecay: 0.5 });
  opt2.loadStateDict(saved);
  for (const [pp, oo] of [[p, opt], [p2, opt2]] as const) { pp.grad = tensor([0.3, -0.7], [2]); oo.step(); }
  assert.deepEqual([...p.toArray()], [...p2.toArray()]);
}));

test('gradient clipping by global norm', () => tidy(() => {
  const a = tensor([0, 0], [2], { requiresGrad: true });
  const b = tensor([0], [1], { requiresGrad: true });
  a.grad = tensor([3, 0], [2]);
  b.grad = tensor([4], [1]);
  const n = clipGradNorm([a, b], 1);
  close([n], [5]);
  close(a.grad!.toArray(), [0.6, 0], 1e-5);
  close(b.grad!.toArray(), [0.8], 1e-5);
}));

test('errors: libtorch errors become JS errors with its message; the process survives', () => tidy(() => {
  const a = tensor([1, 2, 3, 4], [2, 2]);
  assert.throws(() => a.matmul(tensor([1, 2, 3], [3])), /size mismatch|shapes cannot be multiplied|mat1 and mat2|must match/i);
  assert.throws(() => a.add(tensor([1, 2, 3], [3])), /must match the size/);
  assert.throws(() => a.matmul(tensor([1, 2, 3, 4], [2, 2], { dtype: 'int64' })), /expected.*(scalar type|dtype)|same dtype/i);
  assert.throws(() => a.indexSelect(0, tensor([5], [1], { dtype: 'int64' })), /out of range|index/i);
  assert.throws(() => a.reshape(3, 3), /invalid for input of size/);
  const d = tensor([1], [1]);
  d.dispose();
  assert.throws(() => d.add(1), /used after dispose/);
  assert.throws(() => F.conv2d(tensor([1], [1]), ones([1, 1, 3, 3])), /Expected|expected|dimension/);
  assert.throws(() => tensor(new Float32Array(3), [2, 2]), /needs 16/);
  assert.equal(a.sum().item(), 10);  // still alive and well
}));

// A forced collection, so that malloc readings do not depend on when wrappers are finalized.
v8.setFlagsFromString('--expose-gc');
const gc = vm.runInNewContext('gc') as () => void;
const settle = async () => {
  gc();
  await new Promise((r) => setTimeout(r, 100));
  gc();
};

test('lifetimes: tidy frees temporaries, keeps results; a training loop stays flat for 2000 steps', async () => {
  const before = memory();
  const kept = tidy(() => {
    const t = randn([100]);
    t.mul(2);
    return { out: t.add(1) };
  });
  assert.equal(memory().liveTensors, before.liveTensors + 1);
  kept.out.dispose();
  assert.equal(memory().liveTensors, before.liveTensors);

  manualSeed(0);
  const l1 = new Linear(32, 64);
  const l2 = new Linear(64, 1);
  const opt = new AdamW([...l1.parameters(), ...l2.parameters()], { lr: 1e-3 });
  const x = randn([16, 32]);
  const y = randn([16, 1]);
  let mark = memory();
  for (let step = 0; step < 2000; step++) {
    tidy(() => {
      const loss = F.mseLoss(l2.forward(l1.forward(x).gelu()), y);
      opt.zeroGrad();
      loss.backward();
      clipGradNorm(opt.allParams(), 1);
      opt.step();
    });
    if (step === 10) {
      await settle();
      mark = memory();
    }
  }
  await settle();
  const end = memory();
  assert.equal(end.liveTensors, mark.liveTensors, 'live tensor handles grew');
  assert.equal(end.liveBytes, mark.liveBytes, 'live native bytes grew');
  // Everything else the binding and Node allocate (wrappers, argument vectors, autograd nodes):
  // glibc's count of bytes in use grows by less than 64 bytes a step.
  console.log(`training loop: malloc in use ${((end.mallocInUse - mark.mallocInUse) / 1990).toFixed(1)} bytes a step over 1990 steps`);
  if (mark.mallocInUse >= 0) assert.ok(end.mallocInUse - mark.mallocInUse < 64 * 1990, `malloc in use grew ${end.mallocInUse - mark.mallocInUse} bytes over 1990 steps`);
  for (const t of [x, y]) t.dispose();
  l1.dispose(); l2.dispose(); opt.dispose();
});

test('engine info: libtorch version, BLAS, threads', () => {
  const i = engineInfo();
  assert.match(i.libtorch, /^\d+\.\d+/);
  assert.ok(i.threads >= 1);
  assert.ok(i.devices.includes('cpu'));
});
