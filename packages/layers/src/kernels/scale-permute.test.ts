import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { SCALE_PERMUTE, permuteIndex, scalePermute } from './scale-permute.js';
import { loadNative } from '@svd-train/native';
import { expectClose, expectNoLeakedTensors, onBackend, seededUniform } from '../test-support/index.js';

// The layouts the SVD layers ask for (channel and spatial filters, the plain scaling) and a
// 2-D transpose; rows × r = the product of dims.
const CASES: { rows: number; r: number; dims: number[]; perm: number[] }[] = [
  { rows: 27, r: 5, dims: [3, 3, 3, 5], perm: [1, 2, 0, 3] },
  { rows: 144, r: 7, dims: [16, 3, 3, 7], perm: [1, 2, 0, 3] },
  { rows: 48, r: 13, dims: [16, 3, 13], perm: [1, 0, 2] },
  { rows: 64, r: 10, dims: [64, 10], perm: [0, 1] },
  { rows: 9, r: 4, dims: [9, 4], perm: [1, 0] },
  { rows: 6, r: 4, dims: [2, 3, 2, 2], perm: [3, 1, 0, 2] },
];

/** The value and the gradients of Σ(out·w) with respect to a and s, on the active backend. */
function run(rows: number, r: number, dims: number[], perm: number[]) {
  const a = tf.tensor2d(seededUniform(rows * r, rows + r, 2, -1), [rows, r]);
  const s = tf.tensor1d(seededUniform(r, 3 * r + 1, 1, 0.5));
  const outSize = rows * r;
  const w = tf.tensor(seededUniform(outSize, 17, 2, -1), perm.map((k) => dims[k]!));
  try {
    const f = (aa: tf.Tensor, ss: tf.Tensor) => tf.sum(tf.mul(scalePermute(aa as tf.Tensor2D, ss as tf.Tensor1D, dims, perm), w));
    const { value, grads } = tf.valueAndGrads(f)([a, s]);
    const out = tf.tidy(() => scalePermute(a, s, dims, perm));
    const got = { shape: out.shape, out: out.dataSync().slice(), value: value.dataSync()[0], da: grads[0]!.dataSync().slice(), ds: grads[1]!.dataSync().slice() };
    tf.dispose([value, ...grads, out]);
    return got;
  } finally {
    tf.dispose([a, s, w]);
  }
}

// On the native engine the same kernels run their loops in the addon (scalePermute, scalePermuteGrad).
const native = loadNative();
const nativeScalePermute = native.ok && typeof native.addon.scalePermute === 'function';

describe('SvdScalePermute on wasm (and the addon on native) vs transpose(reshape(a·s)) on cpu', () => {
  for (const engine of ['wasm', 'native'] as const) {
    for (const { rows, r, dims, perm } of CASES) {
      it.skipIf(engine === 'native' && !nativeScalePermute)(`${engine}: [${rows}, ${r}] as [${dims}], perm [${perm}]: output and both gradients`, async () => {
        const want = await onBackend('cpu', () => run(rows, r, dims, perm));
        const addon = native.ok ? native.addon : undefined;
        const [fwd, bwd] = [addon?.scalePermute, addon?.scalePermuteGrad];
        const calls = [0, 0];
        if (addon && fwd && bwd) {
          addon.scalePermute = (...args) => (calls[0]++, fwd(...args));
          addon.scalePermuteGrad = (...args) => (calls[1]++, bwd(...args));
        }
        try {
          const got = await onBackend(engine, () => {
            expect(tf.getKernel(SCALE_PERMUTE, 'wasm')).toBeDefined();
            return expectNoLeakedTensors(() => run(rows, r, dims, perm));
          });
          expect(got.shape).toEqual(want.shape);
          expectClose('out', got.out, want.out, 1e-6);
          expectClose('value', [got.value!], [want.value!], 1e-5);
          expectClose('da', got.da, want.da, 1e-6);
          expectClose('ds', got.ds, want.ds, 1e-5);
          // run(): two forwards (under the tape, then alone) and one gradient.
          expect(calls, 'addon calls (forward, gradient)').toEqual(engine === 'native' ? [2, 1] : [0, 0]);
        } finally {
          if (addon && fwd && bwd) Object.assign(addon, { scalePermute: fwd, scalePermuteGrad: bwd });
        }
      });
    }
  }

  it('permuteIndex sends each element where tf.transpose puts it', () => {
    const dims = [2, 3, 4];
    const perm = [2, 0, 1];
    const map = permuteIndex(dims, perm);
    const src = Float32Array.from({ length: 24 }, (_, i) => i);
    const want = tf.tidy(() => tf.transpose(tf.tensor(src, dims), perm).dataSync().slice());
    const out = new Float32Array(24);
    for (let e = 0; e < 24; e++) out[map[e]!] = src[e]!;
    expect(Array.from(out)).toEqual(Array.from(want));
    expect(permuteIndex(dims, perm)).toBe(map); // cached
  });

  it('refuses dims that do not hold the input, a perm that is not a permutation, and an s of the wrong length', async () => {
    await onBackend('wasm', () => {
      const a = tf.zeros([4, 3]) as tf.Tensor2D;
      const s = tf.ones([3]) as tf.Tensor1D;
      try {
        expect(() => scalePermute(a, s, [5, 3], [0, 1])).toThrow(/dims \[5,3\] do not hold the 12 elements/);
        expect(() => scalePermute(a, s, [4, 3], [0, 0])).toThrow(/not a permutation/);
        expect(() => scalePermute(a, tf.ones([4]) as tf.Tensor1D, [4, 3], [0, 1])).toThrow(/expected float32 a \[rows, r\] and s \[r\]/);
      } finally {
        tf.dispose([a, s]);
      }
    });
  });
});
