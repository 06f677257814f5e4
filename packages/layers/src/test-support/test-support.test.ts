import { describe, it, expect, beforeAll } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initEngine } from '../engine.js';
import { TOL, relErr, expectClose, gradCheck, expectNoLeakedTensors, loadReference, type RefTensor } from './index.js';

beforeAll(async () => {
  await initEngine({ backend: 'cpu' });
});

describe('test-support', () => {
  it('relErr is ‖a−b‖/‖b‖', () => {
    expect(relErr([3, 4], [3, 4])).toBe(0);
    expect(relErr([3, 5], [3, 4])).toBeCloseTo(1 / 5, 12);
  });

  it('expectClose passes within tol and names label, index and values when it fails', () => {
    expectClose('ok', [1, 2, 3], [1, 2, 3.0001], 1e-4);
    expect(() => expectClose('layers.0.U', [1, 2, 3.5], [1, 2, 3], 1e-4)).toThrow(
      /layers\.0\.U: rel err .* max \|diff\| 5\.000e-1 at index 2 \(actual 3\.5, expected 3\)/,
    );
    expect(() => expectClose('nan', [NaN], [1], 1)).toThrow(/nan: rel err/);
    expect(() => expectClose('shape', tf.zeros([2, 3]), tf.zeros([3, 2]), 1)).toThrow(/shape \[2,3\] != expected \[3,2\]/);
  });

  it('gradCheck accepts a correct gradient and rejects a wrong one', () => {
    const x = tf.tensor([0.3, -1.2, 0.7, 2.0], [2, 2]);
    const w = tf.tensor([0.5, -0.4], [2, 1]);
    const { relErrs } = gradCheck((a, b) => tf.matMul(tf.sin(a), b).square(), [x, w]);
    expect(relErrs.every((e) => e < TOL.gradcheckRel)).toBe(true);
    // d(a²)/da is 2a; this claims a.
    const wrong = tf.customGrad((...args) => {
      const a = args[0] as tf.Tensor;
      return { value: tf.square(a), gradFunc: (dy: tf.Tensor) => dy.mul(a) };
    });
    expect(() => gradCheck((a) => (wrong as (t: tf.Tensor) => tf.Tensor)(a!), [x], { label: 'wrong' })).toThrow(/wrong: input 0/);
    tf.dispose([x, w]);
  });

  it('expectNoLeakedTensors detects a leaked tensor', async () => {
    await expectNoLeakedTensors(() => tf.tidy(() => tf.ones([3]).add(1)).dispose());
    let leaked: tf.Tensor | undefined;
    await expect(expectNoLeakedTensors(() => void (leaked = tf.ones([2])), 'leaky')).rejects.toThrow(/leaky leaked 1 tensor/);
    leaked?.dispose();
  });

  it('loadReference parses tensors into Float32Array with their shapes', () => {
    const cases = loadReference<Array<{ name: string; x: RefTensor }>>('layers');
    expect(cases.length).toBe(6);
    const x = cases[0]!.x;
    expect(x.data).toBeInstanceOf(Float32Array);
    expect(x.data.length).toBe(x.shape.reduce((a, b) => a * b, 1));
    expect(x.shape).toEqual([2, 3, 8, 8]);
  });
});
