import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { COLUMN_SUM, columnSum, columnSumInto } from './column-sum.js';
import { TOL, expectClose, expectNoLeakedTensors, onBackend, seededUniform } from '../test-support/index.js';

/** Float64 reference. */
function reference(x: Float32Array, m: number, c: number): Float64Array {
  const out = new Float64Array(c);
  for (let r = 0; r < m; r++) for (let j = 0; j < c; j++) out[j] += x[r * c + j]!;
  return out;
}

// Column counts on both sides of the 8-wide blocks, and BN-sized matrices.
const SHAPES: [number, number][] = [[1, 1], [5, 3], [7, 8], [9, 13], [33, 17], [4096, 16], [2048, 64], [100, 10]];

describe('columnSumInto (plain JS)', () => {
  for (const [m, c] of SHAPES) {
    it(`[${m}, ${c}] equals the float64 column sums`, () => {
      const x = seededUniform(m * c, m * 31 + c);
      const out = new Float32Array(c);
      columnSumInto(x, m, c, out);
      expectClose(`colsum [${m},${c}]`, out, reference(x, m, c), 1e-6);
    });
  }
});

describe('SvdColumnSum on wasm vs tf.sum(x, 0) on cpu', () => {
  for (const [m, c] of SHAPES) {
    it(`[${m}, ${c}]`, async () => {
      const x = seededUniform(m * c, m * 7 + c);
      const want = await onBackend('cpu', () => tf.tidy(() => tf.sum(tf.tensor2d(x, [m, c]), 0).dataSync().slice()));
      const got = await onBackend('wasm', () => {
        expect(tf.getKernel(COLUMN_SUM, 'wasm')).toBeDefined();
        return tf.tidy(() => columnSum(tf.tensor2d(x, [m, c])).dataSync().slice());
      });
      expectClose(`SvdColumnSum [${m},${c}]`, got, want, TOL.backendRel);
    });
  }

  it('leaks no tensors and refuses a non-matrix input', async () => {
    await onBackend('wasm', () => {
      expectNoLeakedTensors(() => {
        tf.tidy(() => {
          columnSum(tf.ones([300, 12]));
        });
      });
      const cube = tf.ones([2, 2, 2]);
      expect(() => tf.engine().runKernel(COLUMN_SUM, { x: cube }, {})).toThrow(/expected a float32 \[M, C\] matrix/);
      cube.dispose();
    });
  });
});
