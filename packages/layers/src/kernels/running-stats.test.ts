import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { RUNNING_STATS, runningStats } from './running-stats.js';
import { expectClose, expectNoLeakedTensors, onBackend, seededUniform } from '../test-support/index.js';

function run(c: number, momentum: number, unbias: number) {
  const t = [1, 2, 3, 4].map((k) => tf.tensor1d(seededUniform(c, k * 11 + c, 2, 0.1)));
  try {
    const [m, v] = runningStats(t[0]!, t[1]!, t[2]!, t[3]!, momentum, unbias);
    const got = { m: m.dataSync().slice(), v: v.dataSync().slice() };
    tf.dispose([m, v]);
    return got;
  } finally {
    tf.dispose(t);
  }
}

describe('SvdRunningStats on wasm vs the tfjs ops on cpu', () => {
  for (const [c, momentum, unbias] of [[16, 0.1, 65536 / 65535], [64, 0.5, 1], [3, 1, 4 / 3]] as const) {
    it(`C ${c}, momentum ${momentum}, unbias ${unbias.toFixed(5)}`, async () => {
      const want = await onBackend('cpu', () => run(c, momentum, unbias));
      const got = await onBackend('wasm', () => {
        expect(tf.getKernel(RUNNING_STATS, 'wasm')).toBeDefined();
        return expectNoLeakedTensors(() => run(c, momentum, unbias));
      });
      expectClose('running mean', got.m, want.m, 1e-6);
      expectClose('running variance', got.v, want.v, 1e-6);
      // The reference arithmetic, so a kernel that swapped the two statistics would fail.
      const x = [1, 2, 3, 4].map((k) => seededUniform(c, k * 11 + c, 2, 0.1));
      expectClose('mean formula', got.m, x[0]!.map((v, j) => (1 - momentum) * v + momentum * x[2]![j]!), 1e-6);
      expectClose('variance formula', got.v, x[1]!.map((v, j) => (1 - momentum) * v + momentum * x[3]![j]! * unbias), 1e-6);
    });
  }

  it('refuses vectors of different lengths', async () => {
    await onBackend('wasm', () => {
      const [a, b] = [tf.zeros([4]) as tf.Tensor1D, tf.zeros([5]) as tf.Tensor1D];
      try {
        expect(() => runningStats(a, a, a, b, 0.1, 1)).toThrow(/expected four float32 \[4\] vectors/);
      } finally {
        tf.dispose([a, b]);
      }
    });
  });
});
