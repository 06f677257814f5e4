import { describe, it, expect } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadNative } from '@svd-train/native';
import { applyInference, fusedInference, setFusedInference } from './fused-inference.js';
import { setLanesInference } from './lanes-inference.js';
import { buildResNet } from './resnet.js';
import { evaluate } from './train-step.js';
import { countKernelCalls, expectClose, expectNoLeakedTensors, onBackend, prunedTestModel, seededUniform } from './test-support/index.js';
import { POINTWISE_AFFINE, ROW_CONV_AFFINE, SPATIAL_AFFINE } from './kernels/native.js';
import { SVDConv2D } from './svd-conv2d.js';

const native = loadNative();


const X_SHAPE: [number, number, number, number] = [5, 16, 16, 3];

describe.skipIf(!native.ok)('fused inference (factored conv + batch norm as one kernel, native engine)', () => {
  for (const [fuseBatchNorm, decomposition] of [[true, 'channel'], [false, 'channel'], [true, 'spatial'], [false, 'spatial']] as const) {
    it(`gives model.apply's eval-mode output, on the cpu backend too, with every factored conv fused (${decomposition}, fuseBatchNorm ${fuseBatchNorm})`, async () => {
      const x = seededUniform(X_SHAPE.reduce((a, b) => a * b, 1), 7, 2, -1);
      const run = () => {
        const model = prunedTestModel({ fuseBatchNorm, decomposition });
        const xt = tf.tensor4d(x, X_SHAPE);
        // A spatial layer takes the whole-layer kernel above SPATIAL_MIN_RANK, the row kernel at or below.
        const names = decomposition === 'spatial' ? [SPATIAL_AFFINE, ROW_CONV_AFFINE] : [POINTWISE_AFFINE];
        // Per op: the lanes network (lanes-inference.test.ts) would take the whole model in one call.
        setLanesInference(false);
        try {
          const plain = tf.tidy(() => model.apply(xt, { training: false }) as tf.Tensor);
          const { result: fused, calls } = countKernelCalls(names, () => fusedInference(model, xt));
          const counts = Object.fromEntries(Object.entries(calls).filter(([, n]) => n > 0));
          const out = { plain: plain.dataSync() as Float32Array, fused: fused ? (fused.dataSync() as Float32Array) : null, calls: Object.values(calls).reduce((a, b) => a + b, 0), counts };
          tf.dispose([plain, fused ?? []]);
          const factored = model.layers.filter((l) => l instanceof SVDConv2D && l.forwardFor(16, 16, X_SHAPE[0]) === 'factored').length;
          return { ...out, factored };
        } finally {
          setLanesInference(true);
          xt.dispose();
          model.dispose();
        }
      };
      const want = await onBackend('cpu', run);
      const got = await onBackend('native', run);
      expect(want.fused, 'no fused kernel on the cpu backend').toBeFalsy();
      expect(got.fused, 'the native engine fuses').toBeTruthy();
      // The pruned model has factored layers, and with fuseBatchNorm false (separate ReLU and Add
      // layers) each is still followed by its batch norm, so every one is fused.
      expect(got.factored).toBeGreaterThan(5);
      expect(got.calls).toBe(got.factored);
      // Both spatial paths ran: the test model's ranks lie on both sides of SPATIAL_MIN_RANK.
      if (decomposition === 'spatial') expect(Object.keys(got.counts).sort()).toEqual([ROW_CONV_AFFINE, SPATIAL_AFFINE].sort());
      expect(got.plain.every(Number.isFinite) && want.plain.every(Number.isFinite), 'finite logits').toBe(true);
      expectClose('fused vs model.apply (native)', got.fused!, got.plain, 1e-5);
      expectClose('fused (native) vs model.apply (cpu)', got.fused!, want.plain, 1e-4);
    });
  }

  it('evaluate() takes the fused path and counts what model.apply counts; nothing leaks', async () => {
    await onBackend('native', async () => {
      const model = prunedTestModel();
      try {
        const n = 12;
        const x = seededUniform(n * 16 * 16 * 3, 9, 2, -1);
        const y = Int32Array.from({ length: n }, (_, i) => i % 10);
        const want = tf.tidy(() => {
          const logits = model.apply(tf.tensor4d(x, [n, 16, 16, 3]), { training: false }) as tf.Tensor;
          return { correct: tf.sum(tf.equal(tf.argMax(logits, 1), tf.tensor1d(y, 'int32')).asType('int32')).dataSync()[0]! };
        });
        const got = await expectNoLeakedTensors(() => evaluate(model, x, y, 5), 'evaluate');
        expect(got.correct).toBe(want.correct);
        await expectNoLeakedTensors(() => tf.tidy(() => void applyInference(model, tf.tensor4d(x, [n, 16, 16, 3])).dataSync()), 'applyInference');
      } finally {
        model.dispose();
      }
    });
  });

  it('full rank gives model.apply\'s output, and a model it cannot walk falls back to model.apply', async () => {
    await onBackend('native', () => {
      const full = buildResNet({ depth: 20, svd: true, decomposition: 'channel', seed: 5, inputShape: [16, 16, 3] });
      // A layer called twice (a shared layer) is not a graph this walk takes: model.apply runs it.
      const inp = tf.input({ shape: [4] });
      const dense = tf.layers.dense({ units: 4 });
      const shared = tf.model({ inputs: inp, outputs: dense.apply(dense.apply(inp)) as tf.SymbolicTensor });
      try {
        tf.tidy(() => {
          const xt = tf.tensor4d(seededUniform(X_SHAPE.reduce((a, b) => a * b, 1), 3), X_SHAPE);
          // At full rank each layer runs its cheaper form for this batch (merged, or factored and fused).
          expectClose('full rank', applyInference(full, xt), full.apply(xt, { training: false }) as tf.Tensor, 1e-5);
          // Switched off (benchmarks compare the two): model.apply's path.
          setFusedInference(false);
          try {
            expect(fusedInference(full, xt)).toBeNull();
          } finally {
            setFusedInference(true);
          }
          const v = tf.tensor2d(seededUniform(8, 4), [2, 4]);
          expect(fusedInference(shared, v)).toBeNull();
          expectClose('shared layer', applyInference(shared, v), shared.apply(v) as tf.Tensor, 0);
        });
      } finally {
        full.dispose();
        shared.dispose();
      }
    });
  });
});
