/**
 * `SvdColumnSum` for the wasm backend: Σ over the rows of a [M, C] float32 matrix, as [C].
 *
 * Batch norm needs four such sums per layer and step (mean and variance forward, Σdy and Σdy·x̂
 * backward) over M = N·H·W rows. wasm's Sum/Mean over axis 0 transposes the whole input first:
 * 4.4 ms for [65536, 16], about 15% of a ResNet-20 training step in all. Summing in JS, 8
 * columns at a time in float64 locals (`columnSumInto`), took the BN sums of a step from 233 to
 * 38 ms, and is more accurate.
 * (A ones[1, M] · x matmul was tried too and was no faster than the stock reduction.)
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs';
import type { WasmBackend } from './wasm-backend.js';

export const COLUMN_SUM = 'SvdColumnSum';

/**
 * Σ_r x[r, c] for a row-major [m, c] matrix, accumulated in float64. Columns go in blocks of 8
 * held in locals (registers): V8 does not vectorize, and an accumulator array costs a load and a
 * store per element, about 2× slower.
 */
export function columnSumInto(x: Float32Array, m: number, c: number, out: Float32Array): void {
  let j = 0;
  for (; j + 8 <= c; j += 8) {
    let a0 = 0, a1 = 0, a2 = 0, a3 = 0, a4 = 0, a5 = 0, a6 = 0, a7 = 0;
    for (let o = j, end = m * c; o < end; o += c) {
      a0 += x[o]; a1 += x[o + 1]; a2 += x[o + 2]; a3 += x[o + 3];
      a4 += x[o + 4]; a5 += x[o + 5]; a6 += x[o + 6]; a7 += x[o + 7];
    }
    out[j] = a0; out[j + 1] = a1; out[j + 2] = a2; out[j + 3] = a3;
    out[j + 4] = a4; out[j + 5] = a5; out[j + 6] = a6; out[j + 7] = a7;
  }
  for (; j < c; j++) {
    let a = 0;
    for (let o = j, end = m * c; o < end; o += c) a += x[o];
    out[j] = a;
  }
}

export const columnSumWasm: KernelFunc = ({ inputs, backend }) => {
  const be = backend as unknown as WasmBackend;
  const { x } = inputs as { x: TensorInfo };
  if (x.shape.length !== 2 || x.dtype !== 'float32') {
    throw new Error(`${COLUMN_SUM} (wasm): expected a float32 [M, C] matrix, got ${x.dtype} [${x.shape}]`);
  }
  const [m, c] = x.shape as [number, number];
  const out = be.makeOutput([c], 'float32');
  // Views are taken after the allocation: a heap growth detaches earlier views.
  columnSumInto(be.typedArrayFromHeap(x), m, c, be.typedArrayFromHeap(out));
  return out;
};

export const columnSumWasmConfig: KernelConfig = { kernelName: COLUMN_SUM, backendName: 'wasm', kernelFunc: columnSumWasm };

/**
 * Σ over the rows of a [M, C] matrix, as [C]: our kernel on wasm, the backend's own reduction
 * elsewhere. Not differentiable (batch norm calls it inside its custom gradient only).
 */
export function columnSum(x2: tf.Tensor2D): tf.Tensor1D {
  if (tf.getBackend() === 'wasm' && tf.getKernel(COLUMN_SUM, 'wasm') != null) {
    return tf.engine().runKernel<tf.Tensor1D>(COLUMN_SUM, { x: x2 }, {});
  }
  return tf.sum(x2, 0);
}
