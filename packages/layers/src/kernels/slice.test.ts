import { describe, it, expect } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { FAST_ENGINES, onBackend, seededUniform } from '../test-support/index.js';
import { sliceWasm } from './slice.js';

// Our block-copy Slice (wasm and native engines) against the cpu backend, on the cases that
// matter: the ZeroPadding2D gradient (inner axes whole), a slice of the innermost axis only,
// every axis cut, rank 1 and 2, an empty slice, and int32.
const CASES: { shape: number[]; begin: number[]; size: number[]; dtype?: 'int32' }[] = [
  { shape: [2, 6, 6, 3], begin: [0, 1, 1, 0], size: [2, 4, 4, 3] },
  { shape: [2, 5, 4, 6], begin: [0, 0, 0, 2], size: [2, 5, 4, 3] },
  { shape: [3, 5, 4, 6], begin: [1, 2, 1, 1], size: [2, 2, 3, 4] },
  { shape: [10], begin: [3], size: [5] },
  { shape: [4, 7], begin: [1, 0], size: [2, 7] },
  { shape: [4, 7], begin: [1, 2], size: [0, 3] },
  { shape: [3, 4, 5], begin: [0, 1, 0], size: [-1, 2, -1], dtype: 'int32' },
];

describe('Slice as block copies (wasm, native) matches the cpu backend', () => {
  for (const [i, c] of CASES.entries()) {
    for (const engine of FAST_ENGINES) {
      it(`[${engine}] x=[${c.shape}] begin=[${c.begin}] size=[${c.size}]${c.dtype ? ' int32' : ''}`, async () => {
        const run = () =>
          tf.tidy(() => {
            const n = c.shape.reduce((a, b) => a * b, 1);
            const data = c.dtype ? Int32Array.from(seededUniform(n, i), (v) => Math.round(v * 100)) : seededUniform(n, i);
            const r = tf.slice(tf.tensor(data, c.shape, c.dtype ?? 'float32'), c.begin, c.size);
            return { shape: r.shape, data: Array.from(r.dataSync()) };
          });
        const got = await onBackend(engine, () => {
          expect(tf.getKernel('Slice', 'wasm')?.kernelFunc).toBe(sliceWasm);
          return run();
        });
        expect(got).toEqual(await onBackend('cpu', run));
      });
    }
  }
});
