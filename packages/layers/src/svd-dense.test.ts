import { describe, it, expect } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import {
  TOL,
  loadReference,
  refToTensor,
  expectClose,
  gradCheck,
  expectNoLeakedTensors,
  forEachBackend,
  TEST_ENGINES,
  type RefTensor,
} from './test-support/index.js';
import { SVDDense } from './svd-dense.js';
import { svdFromWeight, svdInit, matrixFromFactors } from './svd-init.js';

interface DenseCase {
  name: string;
  config: { type: string; in_features: number; out_features: number; rank: number; bias: boolean };
  U: RefTensor;
  s: RefTensor;
  V: RefTensor;
  bias: RefTensor;
  weight: RefTensor;
  x: RefTensor;
  y: RefTensor;
  gy: RefTensor;
  grads: { dU: RefTensor; ds: RefTensor; dV: RefTensor; dbias: RefTensor; dx: RefTensor };
}

const cases = loadReference<DenseCase[]>('layers').filter((c) => c.config.type === 'dense');

function disposeLayer(l: tf.layers.Layer): void {
  for (const w of l.weights) w.dispose();
}

function layerFor(c: DenseCase, forward: 'auto' | 'reconstruct' | 'factored' = 'auto'): SVDDense {
  const l = new SVDDense({ units: c.config.out_features, rank: c.config.rank, useBias: true, seed: 1, forward });
  l.build([null, c.config.in_features]);
  l.setFactors({ U: c.U.data, s: c.s.data, V: c.V.data, m: c.U.shape[0]!, p: c.V.shape[0]!, r: c.s.shape[0]! });
  l.bias!.write(tf.tensor1d(c.bias.data));
  return l;
}

forEachBackend(TEST_ENGINES, (backend) => {
  describe('SVDDense golden vs PyTorch reference (layers.json)', () => {
    for (const c of cases) for (const forward of ['reconstruct', 'factored'] as const) {
      it(`${forward} x=[${c.x.shape}] in${c.config.in_features}→out${c.config.out_features} r=${c.config.rank} U=[${c.U.shape}] V=[${c.V.shape}] bias, one s<0: y, dU, ds, dV, dbias, dx`, () => {
        const l = layerFor(c, forward);
        expect(l.forwardFor(c.x.shape[0])).toBe(forward);
        const r = tf.tidy(() => {
          const x = refToTensor(c.x);
          const gy = refToTensor(c.gy);
          const y = l.apply(x) as tf.Tensor;
          const xv = tf.variable(x, true);
          const vars = [l.U, l.s, l.V, l.bias!].map((v) => v.read() as tf.Variable);
          const { grads } = tf.variableGrads(() => tf.sum(tf.mul(l.apply(xv) as tf.Tensor, gy)) as tf.Scalar, [...vars, xv]);
          const out = { y: y.dataSync(), g: [...vars, xv].map((v) => grads[v.name]!.dataSync()) };
          xv.dispose();
          return out;
        });
        const tag = `${backend}/${c.name}/${forward}`;
        expectClose(`${tag} y`, r.y, c.y, TOL.tensorRel);
        expectClose(`${tag} dU`, r.g[0]!, c.grads.dU, TOL.tensorRel);
        expectClose(`${tag} ds`, r.g[1]!, c.grads.ds, TOL.tensorRel);
        expectClose(`${tag} dV`, r.g[2]!, c.grads.dV, TOL.tensorRel);
        expectClose(`${tag} dbias`, r.g[3]!, c.grads.dbias, TOL.tensorRel);
        expectClose(`${tag} dx`, r.g[4]!, c.grads.dx, TOL.tensorRel);
        const k = l.reconstructKernel();
        const want = tf.tidy(() => refToTensor(c.weight).transpose());
        expectClose(`${tag} kernel = weightᵀ`, k, want, TOL.tensorRel);
        tf.dispose([k, want]);
        disposeLayer(l);
      });
    }

    it('forward + grads leak no tensors (x=[2,3,5] rank-3 input, in5→out4 r=2)', async () => {
      const l = new SVDDense({ units: 4, rank: 2, seed: 3 });
      l.build([null, 3, 5]);
      const x = tf.randomNormal([2, 3, 5], 0, 1, 'float32', 2);
      await expectNoLeakedTensors(() => {
        const { value, grads } = tf.variableGrads(() => tf.sum(l.apply(x) as tf.Tensor) as tf.Scalar);
        tf.dispose([value, ...Object.values(grads)]);
      }, 'SVDDense');
      const y = l.apply(x) as tf.Tensor;
      expect(y.shape).toEqual([2, 3, 4]);
      expect(l.computeOutputShape([2, 3, 5])).toEqual([2, 3, 4]);
      tf.dispose([x, y]);
      disposeLayer(l);
    });
  });
});

describe('SVDDense gradient check, init, import, config (cpu)', () => {
  it('central differences x=[2,5] in5→out4 r=3: d/dU, ds, dV, bias, dx', async () => {
    await tf.setBackend('cpu');
    const l = new SVDDense({ units: 4, rank: 3, seed: 5 });
    l.build([null, 5]);
    const inputs = [l.U, l.s, l.V].map((v) => v.read().clone());
    inputs.push(tf.randomNormal([4], 0, 0.5, 'float32', 8), tf.randomNormal([2, 5], 0, 1, 'float32', 9));
    const f = (U: tf.Tensor, s: tf.Tensor, V: tf.Tensor, b: tf.Tensor, x: tf.Tensor): tf.Tensor =>
      tf.add(tf.matMul(tf.mul(tf.matMul(x as tf.Tensor2D, V as tf.Tensor2D), s), U as tf.Tensor2D, false, true), b);
    // The layer must compute exactly f (checked here), and f's tf gradient must match central differences.
    const yl = tf.tidy(() => {
      l.bias!.write(inputs[3]!);
      return l.apply(inputs[4]!) as tf.Tensor;
    });
    const yf = f(...(inputs as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor]));
    expectClose('layer = x·V·diag(s)·Uᵀ + b', yl, yf, 1e-6);
    gradCheck((...xs) => f(...(xs as [tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor, tf.Tensor])), inputs, { label: 'SVDDense' });
    tf.dispose([...inputs, yl, yf]);
    disposeLayer(l);
  });

  it('init: orthonormal U [10,10], V [64,10] and He scale std √(2/64) of the weight [10,64]', () => {
    const f = svdInit('dense', { n: 10, c: 64, kh: 1, kw: 1 }, 17);
    for (const [A, rows] of [
      [f.U, f.m],
      [f.V, f.p],
    ] as const) {
      for (let a = 0; a < f.r; a++)
        for (let b = 0; b < f.r; b++) {
          let d = 0;
          for (let i = 0; i < rows; i++) d += A[i * f.r + a]! * A[i * f.r + b]!;
          expect(Math.abs(d - (a === b ? 1 : 0))).toBeLessThan(1e-5);
        }
    }
    const W = matrixFromFactors(f);
    const std = Math.sqrt(W.reduce((acc, v) => acc + v * v, 0) / W.length);
    expect(Math.abs(std / Math.sqrt(2 / 64) - 1)).toBeLessThan(0.1);
  });

  for (const c of cases) {
    it(`svdFromWeight reproduces dense weight [${c.weight.shape}] at full rank (pytorch and tfjs layouts); rank 4 is the best rank-4 fit`, () => {
      const f = svdFromWeight(c.weight.data, c.weight.shape, { layout: 'pytorch' });
      expectClose('pytorch layout', matrixFromFactors(f), c.weight, 1e-5);
      const wt = new Float32Array(c.weight.data.length);
      const [o, i] = c.weight.shape as [number, number];
      for (let a = 0; a < o; a++) for (let b = 0; b < i; b++) wt[b * o + a] = c.weight.data[a * i + b]!;
      const f2 = svdFromWeight(wt, [i, o], { layout: 'tfjs' });
      expectClose('tfjs layout', matrixFromFactors(f2), c.weight, 1e-5);
      const f4 = svdFromWeight(c.weight.data, c.weight.shape, { layout: 'pytorch', rank: 4 });
      expect([f4.m, f4.p, f4.r]).toEqual([o, i, 4]);
      // Eckart–Young: the residual energy is the sum of the dropped σ².
      const M4 = matrixFromFactors(f4);
      let res = 0;
      for (let k = 0; k < M4.length; k++) res += (M4[k]! - c.weight.data[k]!) ** 2;
      let dropped = 0;
      for (let k = 4; k < f.r; k++) dropped += f.s[k]! ** 2;
      expect(Math.abs(res - dropped) / dropped).toBeLessThan(1e-4);
    });
  }

  it('getConfig/fromConfig round trip (units, useBias, rank, seed, name)', () => {
    const l = new SVDDense({ units: 7, useBias: false, rank: 3, seed: 21, name: 'fc_x' });
    l.build([null, 9]);
    const cfg = l.getConfig();
    expect(cfg).toMatchObject({ units: 7, useBias: false, rank: 3, seed: 21, name: 'fc_x' });
    const l2 = SVDDense.fromConfig(SVDDense, cfg) as SVDDense;
    expect(l2.getConfig()).toEqual(cfg);
    l2.build([null, 9]);
    expectClose('V after round trip', l2.getFactors().V, l.getFactors().V, 0);
    expect(l2.bias).toBeNull();
    disposeLayer(l);
    disposeLayer(l2);
  });

  it('rejects bad args and mismatched factors with typed errors', () => {
    expect(() => new SVDDense({ units: 0 })).toThrow(/units/);
    const l = new SVDDense({ units: 3, rank: 2, seed: 1 });
    l.build([null, 4]);
    expect(() => l.setFactors(svdInit('dense', { n: 3, c: 4, kh: 1, kw: 1 }, 1))).toThrow(/rank 3/);
    disposeLayer(l);
  });
});
