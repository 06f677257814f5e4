import { describe, it, expect, beforeAll, afterAll } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadNative } from '@svd-train/native';
import { batchNormTrain } from './batch-norm.js';
import { applyTraining, setFusedTraining, setShortcutGradientSum } from './fused-inference.js';
import { profileKernels } from './kernel-profile.js';
import { RANK_CONV } from './kernels/native.js';
import { rankSpaceBatchNormTrain } from './rank-space-batch-norm.js';
import { SVDConv2D } from './svd-conv2d.js';
import { computeGradients } from './train-step.js';
import { setNativeTrainingStep } from './native-step.js';
import { expectClose, expectNoLeakedTensors, onBackend, prunedTestModel, seededUniform, testTrainingBatch } from './test-support/index.js';

const native = loadNative();
const EPS = 1e-5;

/**
 * y, the batch stats and the gradients of Σ(y·R) for t, p, gamma, beta (and the residual), once by
 * rankSpaceBatchNormTrain and once as the layers compute it: the 1×1 product u = t·p, then
 * batchNormTrain on u. Inputs with a mean far from 0, so a stat taken without centring shows.
 */
function both(shape: number[], r: number, c: number, relu: boolean, withResidual: boolean, pTransposed = false) {
  const n = shape.reduce((a, b) => a * b, 1);
  const t = tf.tensor(seededUniform(n * r, 1, 2, 0.5), [...shape, r]);
  const p = tf.tensor2d(seededUniform(r * c, 2, 1, -0.5), [r, c]);
  const gamma = tf.tensor1d(seededUniform(c, 3, 1, 0.5));
  const beta = tf.tensor1d(seededUniform(c, 4, 1, -0.5));
  const res = tf.tensor(seededUniform(n * c, 5, 1, -0.5), [...shape, c]);
  const weights = tf.tensor(seededUniform(n * c, 6, 2, -1), [...shape, c]);
  const residual = withResidual ? res : undefined;
  const run = (fused: boolean) => {
    let stats: tf.Tensor[] = [];
    const f = (tt: tf.Tensor, pp: tf.Tensor, g: tf.Tensor, b: tf.Tensor, rr: tf.Tensor) => {
      const out = fused
        ? rankSpaceBatchNormTrain(tt, pTransposed ? tf.transpose(pp as tf.Tensor2D) : (pp as tf.Tensor2D), g, b, EPS, { relu, residual: withResidual ? rr : undefined, pTransposed })
        : batchNormTrain(tf.reshape(tf.matMul(tf.reshape(tt, [n, r]), pp), [...shape, c]), g, b, EPS, { relu, residual: withResidual ? rr : undefined });
      stats = [tf.keep(out.mean), tf.keep(out.variance)];
      return tf.sum(tf.mul(out.y, weights));
    };
    // tf.grads needs every argument on the path to the output: the residual only when used.
    const grads = withResidual ? tf.grads(f)([t, p, gamma, beta, res]) : tf.grads((a, b, c2, d) => f(a, b, c2, d, res))([t, p, gamma, beta]);
    const y = tf.tidy(() => {
      const out = fused
        ? rankSpaceBatchNormTrain(t, pTransposed ? tf.transpose(p) : p, gamma, beta, EPS, { relu, residual, pTransposed })
        : batchNormTrain(tf.reshape(tf.matMul(tf.reshape(t, [n, r]), p), [...shape, c]), gamma, beta, EPS, { relu, residual });
      return out.y;
    });
    const got = { y: y.dataSync(), mean: stats[0].dataSync(), variance: stats[1].dataSync(), grads: grads.map((g) => g.dataSync()) };
    tf.dispose([y, ...stats, ...grads]);
    return got;
  };
  try {
    return { fused: run(true), plain: run(false) };
  } finally {
    tf.dispose([t, p, gamma, beta, res, weights]);
  }
}

describe.skipIf(!native.ok)('rankSpaceBatchNormTrain (batch norm of t·P from the rank-space t, native engine)', () => {
  // A shape smaller than one block of rows, with odd sizes; and several blocks, C a multiple of 16
  // (the vectorized paths of the fused affine pass) and a rank above 16. The backward's one-pass
  // path (AVX-512; C 16, 32 or 64, R <= 16): rank 1, rank 16, C 64, and row counts that leave rows
  // after the last 16-row block, on one thread and (below) on two: the kernels split rows from
  // 2,048 on, and the 2,523 rows here leave a remainder in each thread's share.
  const shapes: [number[], number, number][] = [
    [[3, 5, 4], 3, 8],
    [[2, 16, 19], 7, 32],
    [[1, 9, 9], 21, 64],
    [[2, 9, 11], 1, 16],
    [[2, 9, 11], 5, 16],
    [[1, 8, 17], 16, 16],
    [[3, 7, 7], 13, 32],
    [[3, 7, 7], 4, 64],
    [[3, 29, 29], 5, 16],
  ];
  for (const [relu, withResidual] of [[false, false], [true, false], [true, true], [false, true]] as const) {
    for (const [shape, r, c] of shapes) it(`matches batch norm of the 1×1 product: output, batch stats and every gradient (t [${shape},${r}], C ${c}, relu ${relu}, residual ${withResidual})`, async () => {
      const got = await onBackend('native', () => expectNoLeakedTensors(() => both(shape, r, c, relu, withResidual)));
      expectClose('y', got.fused.y, got.plain.y, 1e-4);
      expectClose('mean', got.fused.mean, got.plain.mean, 1e-5);
      expectClose('variance', got.fused.variance, got.plain.variance, 1e-4);
      const names = ['dt', 'dp', 'dgamma', 'dbeta', 'dresidual'];
      expect(got.fused.grads.length).toBe(withResidual ? 5 : 4);
      got.plain.grads.forEach((g, i) => expectClose(names[i], got.fused.grads[i], g, 1e-4));
    });
  }
  // p given as its transpose [c, r] (a layer's U, as the training walk passes it): the kernels
  // transpose it and dp back; the tape's Transpose of p carries dp to the test's p.
  for (const [shape, r, c] of [[[3, 5, 4], 3, 8], [[2, 9, 11], 5, 16], [[1, 9, 9], 21, 64]] as const) {
    it(`matches it with p given transposed (t [${shape},${r}], C ${c}, relu, residual)`, async () => {
      const got = await onBackend('native', () => expectNoLeakedTensors(() => both([...shape], r, c, true, true, true)));
      expectClose('y', got.fused.y, got.plain.y, 1e-4);
      got.plain.grads.forEach((g, i) => expectClose(['dt', 'dp', 'dgamma', 'dbeta', 'dresidual'][i]!, got.fused.grads[i], g, 1e-4));
    });
  }
  // The one-pass backward is compiled per rank, and ranks 1-10 at C 16 and 32 write dt by permutes
  // from the flat block (1-6 finish it by shifts): every rank 1-16 at both, with ReLU and residual,
  // over 12 blocks of 16 rows and 6 rows after them.
  for (const c of [16, 32]) {
    it(`matches it at every rank 1-16 the one-pass backward is compiled for (t [2,9,11,R], C ${c}, relu, residual)`, async () => {
      for (let r = 1; r <= 16; r++) {
        const got = await onBackend('native', () => expectNoLeakedTensors(() => both([2, 9, 11], r, c, true, true)));
        got.plain.grads.forEach((g, i) => expectClose(`R ${r}: ${['dt', 'dp', 'dgamma', 'dbeta', 'dresidual'][i]!}`, got.fused.grads[i], g, 1e-4));
      }
    });
  }
  for (const [shape, r, c] of [[[3, 29, 29], 5, 16], [[3, 29, 29], 13, 32]] as const) {
    it(`matches it on two threads too, each thread's partial sums added (t [${shape},${r}], C ${c}, relu, residual)`, async () => {
      // Inside onBackend: starting the engine sets its thread count.
      const got = await onBackend('native', () => {
        if (native.ok) native.addon.setThreads([2]);
        try {
          return expectNoLeakedTensors(() => both([...shape], r, c, true, true));
        } finally {
          if (native.ok) native.addon.setThreads([1]);
        }
      });
      expectClose('y', got.fused.y, got.plain.y, 1e-4);
      expectClose('variance', got.fused.variance, got.plain.variance, 1e-4);
      got.plain.grads.forEach((g, i) => expectClose(['dt', 'dp', 'dgamma', 'dbeta', 'dresidual'][i]!, got.fused.grads[i], g, 1e-4));
    });
  }
});


describe.skipIf(!native.ok)('training with rank-space batch norm (applyTraining, native engine)', () => {
  // The tape's walk: computeGradients would otherwise take the native step (native-step.test.ts).
  beforeAll(() => setNativeTrainingStep(false));
  afterAll(() => setNativeTrainingStep(true));
  it('computeGradients gives the same loss, gradients and running statistics as with the fusion off', async () => {
    const batch = 6;
    const { x, y, reg } = testTrainingBatch(batch, 7, 3, 0.01);
    const run = (fused: boolean) => {
      setFusedTraining(fused);
      const model = prunedTestModel();
      try {
        const factored = model.layers.filter((l) => l instanceof SVDConv2D && l.forwardFor(16, 16, batch) === 'factored').length;
        const r = computeGradients(model, x, y, reg);
        return { factored, total: r.total, grads: r.grads, buffers: r.buffers };
      } finally {
        setFusedTraining(true);
        model.dispose();
      }
    };
    const { on, off } = await onBackend('native', () => ({ on: run(true), off: run(false) }));
    expect(on.factored, 'the pruned model has factored layers for the fusion to take').toBeGreaterThan(5);
    expectClose('total loss', [on.total], [off.total], 1e-5);
    for (let i = 0; i < off.grads.length; i++) expectClose(`gradient of ${off.grads[i].name}`, on.grads[i].data, off.grads[i].data, 1e-4);
    for (let i = 0; i < off.buffers.length; i++) expectClose(`buffer ${off.buffers[i].name}`, on.buffers[i].data, off.buffers[i].data, 1e-4);
  });

  it("sums a residual block input's two gradients in its conv's input-gradient kernel: same gradients, an Add fewer per branch", async () => {
    const { x, y, reg } = testTrainingBatch(4, 17, 7, 0.01);
    const addon = native.ok ? native.addon : undefined;
    const stock = addon!.conv2dBackpropInput;
    const run = (on: boolean) => {
      setShortcutGradientSum(on);
      const model = prunedTestModel();
      let sums = 0;
      addon!.conv2dBackpropInput = (...args) => ((sums += args[4] ? 1 : 0), stock(...args));
      try {
        const p = profileKernels(() => computeGradients(model, x, y, reg));
        const calls = (k: string) => p.kernels.find((e) => e.kernel === k)?.calls ?? 0;
        return { r: p.result, sums, adds: calls('Add'), rankConvs: calls(RANK_CONV) };
      } finally {
        addon!.conv2dBackpropInput = stock;
        setShortcutGradientSum(true);
        model.dispose();
      }
    };
    const { on, off } = await onBackend('native', () => ({ on: run(true), off: run(false) }));
    // The identity blocks whose first conv is factored (the plan's branch steps).
    expect(on.sums, 'input gradients given the shortcut gradient, with the sum on').toBeGreaterThan(2);
    expect(off.sums, 'none with it off').toBe(0);
    expect(off.adds - on.adds, 'the Adds they replace').toBe(on.sums);
    expect(on.rankConvs, 'every factored first conv one kernel, on or off').toBe(off.rankConvs);
    expectClose('total loss', [on.r.total], [off.r.total], 1e-6);
    for (let i = 0; i < off.r.grads.length; i++) expectClose(`gradient of ${off.r.grads[i].name}`, on.r.grads[i].data, off.r.grads[i].data, 1e-4);
  });

  it('falls back to model.apply where the engine has no fused kernel (cpu backend)', async () => {
    const out = await onBackend('cpu', () => {
      const model = prunedTestModel();
      try {
        const xt = tf.tensor4d(seededUniform(2 * 16 * 16 * 3, 9, 2, -1), [2, 16, 16, 3]);
        const a = tf.tidy(() => applyTraining(model, xt));
        const b = tf.tidy(() => model.apply(xt, { training: true }) as tf.Tensor);
        const got = { a: a.dataSync(), b: b.dataSync() };
        tf.dispose([a, b, xt]);
        return got;
      } finally {
        model.dispose();
      }
    });
    expectClose('logits', out.a, out.b, 1e-6);
  });
});
