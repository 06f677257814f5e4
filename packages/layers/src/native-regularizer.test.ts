import { describe, it, expect } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadNative } from '@svd-train/native';
import { SPARSITIES } from '@svd-train/core';
import { nativeRegularization, nativeRegularizerAvailable, setNativeRegularizer } from './native-regularizer.js';
import { svdLayers, svdRegularization } from './svd-regularization.js';
import { SVDConv2D } from './svd-conv2d.js';
import { SVDDense } from './svd-dense.js';
import { computeGradients } from './train-step.js';
import { errorCodeOf, expectClose, expectNoLeakedTensors, onBackend, prunedTestModel, seededUniform, testTrainingBatch } from './test-support/index.js';

const native = loadNative();

/** Channel and spatial convs (one at rank 1) and a dense layer, U perturbed off orthonormal, one s entry 0 and one negative. */
function model(): tf.LayersModel {
  const input = tf.input({ shape: [6, 6, 2] });
  let h = new SVDConv2D({ filters: 3, kernelSize: 3, padding: 1, decomposition: 'spatial', seed: 1 }).apply(input) as tf.SymbolicTensor;
  h = new SVDConv2D({ filters: 4, kernelSize: 3, padding: 1, seed: 2 }).apply(h) as tf.SymbolicTensor;
  h = new SVDConv2D({ filters: 5, kernelSize: 1, rank: 1, seed: 5 }).apply(h) as tf.SymbolicTensor;
  h = tf.layers.flatten().apply(h) as tf.SymbolicTensor;
  h = new SVDDense({ units: 5, seed: 3 }).apply(h) as tf.SymbolicTensor;
  const m = tf.model({ inputs: input, outputs: h });
  svdLayers(m).forEach((l, i) => {
    tf.tidy(() => {
      l.U.write(tf.add(l.U.read(), tf.randomNormal(l.U.shape as number[], 0, 0.1, 'float32', 4 + i)));
      const s = l.s.read().dataSync().slice();
      s[0] = -s[0]!;
      if (s.length > 2) s[2] = 0;
      l.s.write(tf.tensor1d(s));
    });
  });
  return m;
}

describe.skipIf(!native.ok || !native.addon.svdRegularizer)('native regularizer (the addon\'s svdRegularizer, native engine)', () => {
  for (const kind of SPARSITIES) {
    it(`gives svdRegularization's value and tape gradients for every U, s and V (${kind})`, async () => {
      await onBackend('native', async () => {
        const m = model();
        try {
          const opts = { lambdaO: 0.7, lambdaS: 0.07, sparsity: kind };
          expect(nativeRegularizerAvailable()).toBe(true);
          const got = await expectNoLeakedTensors(() => nativeRegularization(m, opts), 'nativeRegularization');
          tf.tidy(() => {
            const ref = svdRegularization(m, opts);
            expectClose('orth', [got.orth], [ref.orth.dataSync()[0]!], 1e-5);
            expectClose('sparsity', [got.sparsity], [ref.sparsity.dataSync()[0]!], 1e-5);
            const { grads } = tf.variableGrads(() => svdRegularization(m, opts).total);
            for (const l of svdLayers(m)) {
              for (const v of [l.U, l.s, l.V]) {
                const mine = got.grads.get(v)!;
                // The taped 'none' penalty leaves s untouched: no gradient there, the native one is 0.
                const taped = grads[(v.read() as tf.Variable).name]?.dataSync() ?? new Float32Array(mine.length);
                expect(mine.length).toBe(taped.length);
                expectClose(`${kind} ${v.name}`, mine, taped, 1e-5);
              }
            }
          });
        } finally {
          m.dispose();
        }
      });
    });
  }

  it('computeGradients gives the same losses and gradients with it as with the taped regularizer', async () => {
    const { x, y, reg } = testTrainingBatch(4, 11, 7, 0.07);
    const run = (on: boolean) => {
      setNativeRegularizer(on);
      const m = prunedTestModel();
      try {
        expect(nativeRegularizerAvailable()).toBe(on);
        return computeGradients(m, x, y, reg);
      } finally {
        setNativeRegularizer(true);
        m.dispose();
      }
    };
    const { on, off } = await onBackend('native', () => ({ on: run(true), off: run(false) }));
    expect(off.orth).toBeGreaterThan(0);
    for (const k of ['ce', 'orth', 'sparsity', 'data', 'total'] as const) expectClose(k, [on[k]], [off[k]], 1e-5);
    for (let i = 0; i < off.grads.length; i++) expectClose(`gradient of ${off.grads[i]!.name}`, on.grads[i]!.data, off.grads[i]!.data, 1e-4);
  });

  it('is not used where the native engine is not the active one', async () => {
    expect(await onBackend('wasm', () => nativeRegularizerAvailable())).toBe(false);
    expect(await onBackend('cpu', () => nativeRegularizerAvailable())).toBe(false);
  });

  it('the addon refuses bad arguments with NATIVE_BAD_ARGUMENT', () => {
    const f = native.ok ? native.addon.svdRegularizer! : () => [0, 0];
    // One layer, U [2, 1], V [3, 1], s [1]: 6 floats.
    const ok = () => f(new Float32Array(6).fill(0.5), new Float32Array(6), [2, 3, 1], [2], 1, 0.1);
    expect(ok()).toHaveLength(2);
    const refused = (what: RegExp, call: () => unknown) => expect(errorCodeOf(() => void call())).toMatch(new RegExp(`^NATIVE_BAD_ARGUMENT: svdRegularizer: ${what.source}`));
    refused(/factors has 5 elements; expected 6/, () => f(new Float32Array(5), new Float32Array(6), [2, 3, 1], [2], 1, 0.1));
    refused(/grads has 7 elements; expected 6/, () => f(new Float32Array(6), new Float32Array(7), [2, 3, 1], [2], 1, 0.1));
    refused(/dims has 2 entries/, () => f(new Float32Array(6), new Float32Array(6), [2, 3], [2], 1, 0.1));
    refused(/dims of layer 0 must be/, () => f(new Float32Array(6), new Float32Array(6), [2, 3, 0], [2], 1, 0.1));
    refused(/kind = 4/, () => f(new Float32Array(6), new Float32Array(6), [2, 3, 1], [4], 1, 0.1));
    refused(/lambdaO nan/, () => f(new Float32Array(6), new Float32Array(6), [2, 3, 1], [2], Number.NaN, 0.1));
    refused(/a tensor of .* elements is too large/, () => f(new Float32Array(6), new Float32Array(6), [2 ** 40, 2 ** 40, 1], [2], 1, 0.1));
  });
});
