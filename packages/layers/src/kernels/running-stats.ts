/**
 * `SvdRunningStats` for the wasm backend: batch norm's running-statistics update,
 *   mean' = (1 − momentum)·mean + momentum·batchMean,
 *   var'  = (1 − momentum)·var + momentum·batchVar·unbias,
 * one kernel call where the tfjs ops are seven (three Muls and an Add per statistic, and the
 * unbiasing Mul): some 150 calls of a few dozen elements per ResNet-20 step, each ~5-10 µs of
 * dispatch. Not differentiable (the statistics are buffers, not parameters).
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs';
import type { WasmBackend } from './wasm-backend.js';

export const RUNNING_STATS = 'SvdRunningStats';

const runningStatsWasm: KernelFunc = ({ inputs, backend, attrs }) => {
  const be = backend as unknown as WasmBackend;
  const ins = inputs as Record<'mean' | 'variance' | 'batchMean' | 'batchVariance', TensorInfo>;
  const { momentum, unbias } = attrs as unknown as { momentum: number; unbias: number };
  const c = ins.mean.shape[0];
  for (const t of Object.values(ins)) {
    if (t.dtype !== 'float32' || t.shape.length !== 1 || t.shape[0] !== c) {
      throw new Error(`${RUNNING_STATS}: expected four float32 [${c}] vectors, got ${t.dtype} [${t.shape}]`);
    }
  }
  const mean = be.makeOutput([c], 'float32');
  const variance = be.makeOutput([c], 'float32');
  const [m, v, bm, bv, om, ov] = [ins.mean, ins.variance, ins.batchMean, ins.batchVariance, mean, variance].map((t) => be.typedArrayFromHeap(t));
  runningStatsInto(m, v, bm, bv, momentum, unbias, om, ov);
  return [mean, variance];
};

/**
 * The update's arithmetic on arrays: om = (1 − momentum)·m + momentum·bm, ov = (1 − momentum)·v +
 * momentum·bv·unbias. The kernel's, and the native training step's (`SVDBatchNorm.updateRunningStatsFrom`).
 */
export function runningStatsInto(
  m: ArrayLike<number>, v: ArrayLike<number>, bm: ArrayLike<number>, bv: ArrayLike<number>, momentum: number, unbias: number, om: Float32Array, ov: Float32Array,
): void {
  for (let j = 0; j < om.length; j++) {
    om[j] = (1 - momentum) * m[j] + momentum * bm[j];
    ov[j] = (1 - momentum) * v[j] + momentum * (bv[j] * unbias);
  }
}

export const runningStatsWasmConfig: KernelConfig = { kernelName: RUNNING_STATS, backendName: 'wasm', kernelFunc: runningStatsWasm };

/**
 * The updated running mean and variance: our kernel where the backend has it, the tfjs ops
 * elsewhere (the same arithmetic). `unbias` multiplies the batch variance (n/(n−1), or 1).
 */
export function runningStats(mean: tf.Tensor1D, variance: tf.Tensor1D, batchMean: tf.Tensor1D, batchVariance: tf.Tensor1D, momentum: number, unbias: number): [tf.Tensor1D, tf.Tensor1D] {
  if (tf.getKernel(RUNNING_STATS, tf.getBackend()) != null) {
    return tf.engine().runKernel<tf.Tensor1D[]>(RUNNING_STATS, { mean, variance, batchMean, batchVariance }, { momentum, unbias }) as [tf.Tensor1D, tf.Tensor1D];
  }
  return tf.tidy(() => {
    const unbiased = unbias === 1 ? batchVariance : tf.mul<tf.Tensor1D>(batchVariance, unbias);
    return [
      tf.add<tf.Tensor1D>(tf.mul(mean, 1 - momentum), tf.mul(batchMean, momentum)),
      tf.add<tf.Tensor1D>(tf.mul(variance, 1 - momentum), tf.mul(unbiased, momentum)),
    ];
  });
}
