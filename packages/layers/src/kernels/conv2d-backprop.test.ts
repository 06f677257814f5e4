import { describe, it, expect, beforeAll } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initEngine } from '../engine.js';
import { conv2dBackpropFilterWasm, setFilterGradAlgorithm } from './conv2d-backprop-filter.js';
import { conv2dBackpropInputWasm } from './conv2d-backprop-input.js';
import { TOL, expectClose, expectNoLeakedTensors, onBackend, seededUniform } from '../test-support/index.js';

type Pad = 'same' | 'valid' | number | [[number, number], [number, number], [number, number], [number, number]];
interface Case {
  x: [number, number, number, number];
  k: [number, number];
  f: number;
  s: [number, number];
  pad: Pad;
}

/** dL/dW and dL/dx for L = Σ conv2d(x, w) · dy, on the active backend. */
function convGrads(c: Case, xd: Float32Array, wd: Float32Array, seed: number): { dw: Float32Array; dx: Float32Array } {
  return tf.tidy(() => {
    const x = tf.tensor4d(xd, c.x);
    const w = tf.tensor4d(wd, [c.k[0], c.k[1], c.x[3], c.f]);
    const y = tf.conv2d(x, w, c.s, c.pad as 'same');
    const dy = tf.tensor(seededUniform(y.size, seed + 2), y.shape);
    const [dx, dw] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.s, c.pad as 'same'), dy)))([x, w]);
    return { dw: dw!.dataSync() as Float32Array, dx: dx!.dataSync() as Float32Array };
  });
}

const p = (t: number, b: number, l: number, r: number): Pad => [[0, 0], [t, b], [l, r], [0, 0]];
const CASES: Case[] = [
  { x: [2, 8, 8, 3], k: [3, 3], f: 4, s: [1, 1], pad: p(1, 1, 1, 1) },
  { x: [2, 8, 8, 3], k: [3, 3], f: 5, s: [2, 2], pad: p(1, 1, 1, 1) },
  { x: [2, 7, 9, 4], k: [3, 3], f: 6, s: [2, 2], pad: p(1, 1, 1, 1) },
  { x: [1, 6, 10, 4], k: [3, 1], f: 3, s: [2, 1], pad: p(1, 1, 0, 0) },
  { x: [1, 6, 10, 4], k: [1, 3], f: 3, s: [1, 2], pad: p(0, 0, 1, 1) },
  { x: [3, 8, 8, 8], k: [1, 1], f: 16, s: [2, 2], pad: p(0, 0, 0, 0) },
  { x: [2, 5, 6, 2], k: [1, 1], f: 3, s: [1, 1], pad: 'valid' },
  { x: [2, 9, 6, 3], k: [3, 3], f: 2, s: [1, 1], pad: 'same' },
  { x: [2, 8, 6, 3], k: [3, 3], f: 2, s: [2, 2], pad: 'same' },
  { x: [2, 9, 7, 3], k: [3, 3], f: 2, s: [2, 2], pad: 'valid' },
  { x: [1, 6, 6, 2], k: [3, 3], f: 2, s: [1, 1], pad: 1 },
  { x: [2, 11, 10, 3], k: [5, 3], f: 4, s: [3, 2], pad: p(2, 1, 0, 2) },
  // 'valid' with stride 2 on an even input drops the last row/column (Ho = 4 from 10).
  { x: [2, 10, 10, 3], k: [3, 3], f: 2, s: [2, 2], pad: 'valid' },
  { x: [2, 10, 8, 3], k: [1, 1], f: 5, s: [2, 2], pad: 'valid' },
];
const name = (c: Case) =>
  `x=[${c.x}] f=[${c.k},${c.x[3]},${c.f}] s=[${c.s}] pad=${typeof c.pad === 'object' ? JSON.stringify(c.pad.slice(1, 3)) : c.pad}`;

describe('Conv2DBackpropFilter and Conv2DBackpropInput (wasm, ours) match the cpu backend', () => {
  beforeAll(async () => {
    await initEngine({ backend: 'wasm' });
  });

  it('our kernels are the registered ones', () => {
    expect(tf.getKernel('Conv2DBackpropFilter', 'wasm')?.kernelFunc).toBe(conv2dBackpropFilterWasm);
    expect(tf.getKernel('Conv2DBackpropInput', 'wasm')?.kernelFunc).toBe(conv2dBackpropInputWasm);
  });

  it.each(CASES.map((c, i) => [name(c), c, i] as const))('%s', async (_n, c, i) => {
    const xd = seededUniform(c.x.reduce((a, b) => a * b, 1), 100 + i);
    const wd = seededUniform(c.k[0] * c.k[1] * c.x[3] * c.f, 200 + i);
    const ref = await onBackend('cpu', () => convGrads(c, xd, wd, i));
    const got = await onBackend('wasm', () => convGrads(c, xd, wd, i));
    expectClose(`dW ${name(c)}`, got.dw, ref.dw, TOL.backendRel);
    // The default picks one algorithm per stride; check both on every shape.
    for (const algo of ['conv', 'im2col'] as const) {
      const prev = setFilterGradAlgorithm(algo);
      try {
        const forced = await onBackend('wasm', () => convGrads(c, xd, wd, i));
        expectClose(`dW (${algo}) ${name(c)}`, forced.dw, ref.dw, TOL.backendRel);
      } finally {
        setFilterGradAlgorithm(prev);
      }
    }
    expectClose(`dx ${name(c)}`, got.dx, ref.dx, TOL.backendRel);
  });

  it('leaks no tensors or wasm buffers', async () => {
    await initEngine({ backend: 'wasm' });
    const c = CASES[2]!;
    const x = tf.tensor4d(seededUniform(2 * 7 * 9 * 4, 1), c.x);
    const w = tf.tensor4d(seededUniform(3 * 3 * 4 * 6, 2), [3, 3, 4, 6]);
    await expectNoLeakedTensors(() => {
      const g = tf.grad((b: tf.Tensor) => tf.conv2d(x, b as tf.Tensor4D, c.s, c.pad as 'same').sum())(w);
      expect(g.shape).toEqual([3, 3, 4, 6]);
      g.dispose();
      const gx = tf.grad((a: tf.Tensor) => tf.conv2d(a as tf.Tensor4D, w, c.s, c.pad as 'same').sum())(x);
      expect(gx.shape).toEqual(c.x);
      gx.dispose();
    }, 'conv2d filter and input gradients');
    tf.dispose([x, w]);
  });
});
