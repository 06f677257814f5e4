/**
 * `Slice` for the wasm backend as contiguous block copies. The stock kernel copies element by
 * element through wasm; the gradient of a zero-padding layer (tfjs-layers' ZeroPadding2D, which
 * the plain ResNet uses before each conv) is a Slice of the padded activations, and took ~200 ms
 * of a 540 ms plain ResNet-20 step at batch 128. Here each run of elements that is contiguous in
 * both tensors (the innermost sliced axis and every full axis inside it) is one `TypedArray.set`.
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, KernelFunc, TensorInfo } from '@tensorflow/tfjs';
import type { WasmBackend } from './wasm-backend.js';

/** Copies x[begin : begin + size] (row-major) into out. Exported for tests. */
export function sliceInto(
  x: Float32Array | Int32Array | Uint8Array, shape: readonly number[],
  begin: readonly number[], size: readonly number[], out: Float32Array | Int32Array | Uint8Array,
): void {
  const rank = shape.length;
  // Axes from `inner` on are copied as one run: every axis after it is taken whole.
  let inner = rank - 1;
  while (inner > 0 && size[inner] === shape[inner]) inner--;
  let run = 1;
  for (let a = inner; a < rank; a++) run *= size[a];
  const strides = new Array<number>(rank);
  strides[rank - 1] = 1;
  for (let a = rank - 2; a >= 0; a--) strides[a] = strides[a + 1] * shape[a + 1];
  const idx = new Array<number>(inner).fill(0);
  const runs = out.length / Math.max(run, 1);
  for (let r = 0, o = 0; r < runs; r++, o += run) {
    let src = begin[inner] * strides[inner];
    for (let a = 0; a < inner; a++) src += (begin[a] + idx[a]) * strides[a];
    out.set(x.subarray(src, src + run), o);
    for (let a = inner - 1; a >= 0; a--) {
      if (++idx[a] < size[a]) break;
      idx[a] = 0;
    }
  }
}

let stock: KernelFunc | undefined;

export const sliceWasm: KernelFunc = (args) => {
  const be = args.backend as unknown as WasmBackend;
  const { x } = args.inputs as { x: TensorInfo };
  const { begin, size } = args.attrs as unknown as tf.SliceAttrs;
  if (x.dtype === 'string' || x.dtype === 'complex64' || x.shape.length === 0) return stock!(args);
  const [b, s] = tf.slice_util.parseSliceParams(x, begin, size) as [number[], number[]];
  const out = be.makeOutput(s, x.dtype);
  if (s.some((d) => d === 0)) return out;
  // Views after the allocation: a heap growth detaches earlier ones.
  sliceInto(be.typedArrayFromHeap(x), x.shape, b, s, be.typedArrayFromHeap(out));
  return out;
};

/** Registers over the stock kernel, keeping it for the dtypes we pass on. */
export function sliceWasmConfig(): KernelConfig {
  const cur = tf.getKernel('Slice', 'wasm');
  if (cur && cur.kernelFunc !== sliceWasm) stock = cur.kernelFunc;
  return { kernelName: 'Slice', backendName: 'wasm', kernelFunc: sliceWasm };
}
