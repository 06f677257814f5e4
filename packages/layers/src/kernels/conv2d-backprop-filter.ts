/**
 * `Conv2DBackpropFilter` for the wasm backend, which ships without one (so without this no conv
 * layer can be trained on wasm).
 *
 * dW[i, j, c, f] = Σ_{n, oh, ow} xpad[n, oh·sh + i, ow·sw + j, c] · dy[n, oh, ow, f]
 *
 * We write the transposed im2col matrix colsᵀ [kh·kw·C, N·Ho·Wo] straight into the wasm heap in
 * one JS pass (row index (i·kw + j)·C + c, exactly the row-major flattening of the filter
 * [kh, kw, C, F]) and compute dW = colsᵀ · dy with the backend's own SIMD BatchMatMul. Other
 * kernels are called directly on TensorInfos (not as tf ops: inside a kernel the engine tracks no
 * tensors), so every intermediate is freed with `backend.disposeData`. NHWC and dilation 1 only,
 * as required by the conv2d gradient in tfjs.
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, KernelFunc, TensorInfo, NamedAttrMap } from '@tensorflow/tfjs';

/** The parts of tfjs-backend-wasm's BackendWasm we use (it is not exported as a type we can import). */
interface BackendLike {
  disposeData(dataId: object, force?: boolean): boolean;
  makeOutput(shape: number[], dtype: 'float32'): TensorInfo;
  typedArrayFromHeap(t: TensorInfo): Float32Array;
}

/** Calls another registered wasm kernel by name; the caller owns (and must dispose) the result. */
function call(name: string, backend: BackendLike, inputs: Record<string, TensorInfo>, attrs: NamedAttrMap): TensorInfo {
  const k = tf.getKernel(name, 'wasm');
  if (!k) throw new Error(`wasm kernel ${name} is not registered; Conv2DBackpropFilter needs it`);
  const out = k.kernelFunc({ inputs, backend: backend as never, attrs });
  return Array.isArray(out) ? (out[0] as TensorInfo) : (out as TensorInfo);
}

/**
 * Writes colsᵀ [kh·kw·C, N·Ho·Wo] of NHWC `x` (zero padding implied by `top`/`left`) into `out`.
 * Rows are contiguous so that the following matmul needs no transpose: both wasm's transposeA
 * path and its Transpose kernel are ~10x slower than a plain matmul of this size.
 */
function im2colT(
  x: Float32Array, out: Float32Array,
  n: number, h: number, w: number, c: number,
  kh: number, kw: number, ho: number, wo: number,
  sh: number, sw: number, top: number, left: number,
): void {
  const m = n * ho * wo;
  for (let i = 0; i < kh; i++) {
    for (let j = 0; j < kw; j++) {
      // Output columns whose input column lies inside x; outside them the value is padding (0).
      const owLo = Math.max(0, Math.ceil((left - j) / sw));
      const owHi = Math.min(wo, Math.floor((w - 1 + left - j) / sw) + 1);
      for (let ci = 0; ci < c; ci++) {
        let o = ((i * kw + j) * c + ci) * m;
        for (let b = 0; b < n; b++) {
          for (let oh = 0; oh < ho; oh++) {
            const ih = oh * sh - top + i;
            if (ih < 0 || ih >= h || owHi <= owLo) {
              out.fill(0, o, o + wo);
              o += wo;
              continue;
            }
            if (owLo > 0) out.fill(0, o, o + owLo);
            let src = ((b * h + ih) * w + (owLo * sw - left + j)) * c + ci;
            const step = sw * c;
            for (let ow = owLo; ow < owHi; ow++, src += step) out[o + ow] = x[src]!;
            if (owHi < wo) out.fill(0, o + Math.max(owHi, owLo), o + wo);
            o += wo;
          }
        }
      }
    }
  }
}

export const conv2dBackpropFilterWasm: KernelFunc = ({ inputs, backend, attrs }) => {
  const be = backend as unknown as BackendLike;
  const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
  const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as unknown as tf.Conv2DBackpropFilterAttrs;
  if (dataFormat !== undefined && dataFormat !== 'NHWC') {
    throw new Error(`Conv2DBackpropFilter (wasm): only NHWC is supported, got dataFormat=${dataFormat}`);
  }
  if (x.dtype !== 'float32' || dy.dtype !== 'float32') {
    throw new Error(`Conv2DBackpropFilter (wasm): float32 only, got x ${x.dtype}, dy ${dy.dtype}`);
  }
  const conv = tf.backend_util.computeConv2DInfo(
    x.shape as [number, number, number, number],
    filterShape as [number, number, number, number],
    strides,
    1,
    pad,
    dimRoundingMode,
    false,
    'channelsLast',
  );
  const [kh, kw, c, f] = filterShape as [number, number, number, number];
  const [n, h, w] = x.shape as [number, number, number, number];
  const { outHeight: ho, outWidth: wo, strideHeight: sh, strideWidth: sw } = conv;
  const m = n * ho * wo;
  const k = kh * kw * c;
  const owned: TensorInfo[] = [];
  try {
    const colsT = be.makeOutput([1, k, m], 'float32');
    owned.push(colsT);
    // Views are taken after the allocation: a heap growth detaches earlier views.
    im2colT(be.typedArrayFromHeap(x), be.typedArrayFromHeap(colsT), n, h, w, c, kh, kw, ho, wo, sh, sw, conv.padInfo.top, conv.padInfo.left);
    const dy3 = call('Reshape', be, { x: dy }, { shape: [1, m, f] });
    owned.push(dy3);
    const dw3 = call('BatchMatMul', be, { a: colsT, b: dy3 }, { transposeA: false, transposeB: false } as unknown as NamedAttrMap);
    owned.push(dw3);
    return call('Reshape', be, { x: dw3 }, { shape: [kh, kw, c, f] });
  } finally {
    for (const t of owned) be.disposeData(t.dataId);
  }
};

export const conv2dBackpropFilterWasmConfig: KernelConfig = {
  kernelName: 'Conv2DBackpropFilter',
  backendName: 'wasm',
  kernelFunc: conv2dBackpropFilterWasm,
};
