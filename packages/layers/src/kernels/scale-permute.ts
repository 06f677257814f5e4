/**
 * `SvdScalePermute` for the wasm backend: out = transpose(reshape(a·diag(s), dims), perm), and its
 * gradient `SvdScalePermuteGrad` (da = the inverse permutation of dout, times s; ds = Σ over a's
 * rows of that times a).
 *
 * Why: an SVD layer builds its conv filters from its factors every step (`rankFilter`,
 * `columnFilter`, the merged filter's V·diag(s)). As tfjs ops that is a Mul, a Reshape and a
 * Transpose forward and a Transpose, a Reshape, two Muls and a Sum backward, each a taped kernel
 * call of a few thousand elements whose cost is dispatch (~20 µs) more than arithmetic: some 170
 * calls per ResNet-20 step. One kernel each way does the same with an index map computed once per
 * (dims, perm) and cached.
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs';
import type { WasmBackend } from './wasm-backend.js';

export const SCALE_PERMUTE = 'SvdScalePermute';
export const SCALE_PERMUTE_GRAD = 'SvdScalePermuteGrad';

export interface ScalePermuteAttrs {
  /** The shape a·diag(s) is read as (row-major), before the permutation. */
  dims: number[];
  /** tf.transpose's perm over `dims`. */
  perm: number[];
}

const maps = new Map<string, Int32Array>();
/** Distinct (dims, perm) pairs kept: a ResNet has a few dozen; beyond this the cache starts over. */
const MAX_MAPS = 512;

function checkAttrs(name: string, size: number, { dims, perm }: ScalePermuteAttrs): void {
  const n = dims.length;
  const seen = new Set(perm);
  if (perm.length !== n || seen.size !== n || perm.some((p) => !Number.isInteger(p) || p < 0 || p >= n)) {
    throw new Error(`${name}: perm [${perm}] is not a permutation of the ${n} axes of dims [${dims}]`);
  }
  if (dims.some((d) => !Number.isInteger(d) || d < 1) || dims.reduce((p, d) => p * d, 1) !== size) {
    throw new Error(`${name}: dims [${dims}] do not hold the ${size} elements of its input`);
  }
}

/**
 * For each element of a row-major tensor of shape `dims`, in order, its index in
 * transpose(·, perm). Cached per (dims, perm).
 */
export function permuteIndex(dims: readonly number[], perm: readonly number[]): Int32Array {
  const key = `${dims.join(',')}|${perm.join(',')}`;
  const hit = maps.get(key);
  if (hit) return hit;
  const n = dims.length;
  const outDims = perm.map((k) => dims[k]);
  const outStride = new Array<number>(n);
  for (let k = n - 1, s = 1; k >= 0; k--) {
    outStride[k] = s;
    s *= outDims[k];
  }
  // Input axis perm[k] is output axis k: moving one step along it moves outStride[k] in the output.
  const inStride = new Array<number>(n);
  for (let k = 0; k < n; k++) inStride[perm[k]] = outStride[k]!;
  const size = dims.reduce((p, d) => p * d, 1);
  const map = new Int32Array(size);
  const idx = new Array<number>(n).fill(0);
  let off = 0;
  for (let e = 0; e < size; e++) {
    map[e] = off;
    for (let j = n - 1; j >= 0; j--) {
      idx[j]++;
      off += inStride[j];
      if (idx[j] < dims[j]) break;
      off -= inStride[j] * dims[j];
      idx[j] = 0;
    }
  }
  if (maps.size >= MAX_MAPS) maps.clear();
  maps.set(key, map);
  return map;
}

/** Checks a [rows, r], s [r] and the attrs of either kernel (the native engine's too); returns rows and r. */
export function operands(name: string, a: TensorInfo, s: TensorInfo, attrs: ScalePermuteAttrs): { rows: number; r: number } {
  if (a.shape.length !== 2 || a.dtype !== 'float32' || s.dtype !== 'float32' || s.shape.length !== 1 || s.shape[0] !== a.shape[1]) {
    throw new Error(`${name}: expected float32 a [rows, r] and s [r], got ${a.dtype} [${a.shape}] and ${s.dtype} [${s.shape}]`);
  }
  checkAttrs(name, a.shape[0] * a.shape[1], attrs);
  return { rows: a.shape[0], r: a.shape[1] };
}

/** Views of a kernel's tensors, taken after its outputs are allocated (a heap growth detaches earlier ones). */
export interface ScalePermuteViews {
  a: Float32Array;
  s: Float32Array;
  /** The forward's output, or the gradient's dy. */
  y: Float32Array;
  /** The gradient's outputs (empty in the forward). */
  da: Float32Array;
  ds: Float32Array;
}

/**
 * SvdScalePermute (grad false) or its gradient as a kernel around `fill`, which does the
 * arithmetic on the views: the JS loops here, or the addon's (native.ts). The checks and the
 * outputs are the same for both.
 */
export function scalePermuteKernel(grad: boolean, fill: (v: ScalePermuteViews, at: ScalePermuteAttrs, rows: number, r: number) => void): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const be = backend as unknown as WasmBackend;
    const { a, s, dy } = inputs as { a: TensorInfo; s: TensorInfo; dy?: TensorInfo };
    const at = attrs as unknown as ScalePermuteAttrs;
    const { rows, r } = operands(grad ? SCALE_PERMUTE_GRAD : SCALE_PERMUTE, a, s, at);
    if (grad) checkGradDy(dy!, at);
    const outs = grad ? [be.makeOutput([rows, r], 'float32'), be.makeOutput([r], 'float32')] : [be.makeOutput(at.perm.map((k) => at.dims[k]), 'float32')];
    const view = (t: TensorInfo) => be.typedArrayFromHeap(t);
    const none = new Float32Array(0);
    fill({ a: view(a), s: view(s), y: view(grad ? dy! : outs[0]), da: grad ? view(outs[0]) : none, ds: grad ? view(outs[1]) : none }, at, rows, r);
    return grad ? outs : outs[0];
  };
}

/** Checks dy against the forward's output shape. */
function checkGradDy(dy: TensorInfo, attrs: ScalePermuteAttrs): void {
  if (dy.shape.length !== attrs.dims.length || dy.shape.some((d, k) => d !== attrs.dims[attrs.perm[k]])) {
    throw new Error(`${SCALE_PERMUTE_GRAD}: dy [${dy.shape}] is not the forward's output shape`);
  }
}

const scalePermuteWasm = scalePermuteKernel(false, (v, at, rows, r) => {
  const map = permuteIndex(at.dims, at.perm);
  for (let i = 0, e = 0; i < rows; i++) for (let j = 0; j < r; j++, e++) v.y[map[e]] = v.a[e] * v.s[j];
});

const scalePermuteGradWasm = scalePermuteKernel(true, (v, at, rows, r) => {
  const map = permuteIndex(at.dims, at.perm);
  const acc = new Float64Array(r);
  for (let i = 0, e = 0; i < rows; i++) {
    for (let j = 0; j < r; j++, e++) {
      const g = v.y[map[e]];
      v.da[e] = g * v.s[j];
      acc[j] += g * v.a[e];
    }
  }
  for (let j = 0; j < r; j++) v.ds[j] = acc[j];
});

export const scalePermuteWasmConfigs: KernelConfig[] = [
  { kernelName: SCALE_PERMUTE, backendName: 'wasm', kernelFunc: scalePermuteWasm },
  { kernelName: SCALE_PERMUTE_GRAD, backendName: 'wasm', kernelFunc: scalePermuteGradWasm },
];

export const scalePermuteGradConfig: tf.GradConfig = {
  kernelName: SCALE_PERMUTE,
  inputsToSave: ['a', 's'],
  gradFunc: (dy, saved, attrs) => {
    const [a, s] = saved as [tf.Tensor, tf.Tensor];
    const [da, ds] = tf.engine().runKernel<tf.Tensor[]>(SCALE_PERMUTE_GRAD, { dy: dy as tf.Tensor, a, s }, attrs);
    return { a: () => da, s: () => ds };
  },
};

/**
 * transpose(reshape(a·diag(s), dims), perm), differentiable in a and s: one kernel each way where
 * the backend has ours (wasm, and so the native engine), the tfjs ops elsewhere.
 */
export function scalePermute<R extends tf.Rank>(a: tf.Tensor2D, s: tf.Tensor1D, dims: number[], perm: number[]): tf.Tensor<R> {
  if (tf.getKernel(SCALE_PERMUTE, tf.getBackend()) != null) {
    return tf.engine().runKernel<tf.Tensor<R>>(SCALE_PERMUTE, { a, s }, { dims, perm });
  }
  const shaped: tf.Tensor = tf.reshape(tf.mul(a, s), dims);
  return tf.transpose(shaped, perm) as tf.Tensor<R>;
}
