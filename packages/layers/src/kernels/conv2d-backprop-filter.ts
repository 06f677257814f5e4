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
import type { WasmBackend } from './wasm-backend.js';

/**
 * 'auto' (default): the conv formulation at stride 1, im2col + matmul otherwise (at stride 2 the
 * conv path transposes all of x although only a quarter is used, and measured 1.1-7x slower).
 */
export type FilterGradAlgorithm = 'auto' | 'conv' | 'im2col';
let algo: FilterGradAlgorithm = 'auto';
/** Forces an algorithm (tests check both on every shape); returns the previous setting. */
export function setFilterGradAlgorithm(a: FilterGradAlgorithm): FilterGradAlgorithm {
  const prev = algo;
  algo = a;
  return prev;
}

/** Calls another registered wasm kernel by name; the caller owns (and must dispose) the result. */
function call(name: string, backend: WasmBackend, inputs: Record<string, TensorInfo>, attrs: NamedAttrMap): TensorInfo {
  const k = tf.getKernel(name, 'wasm');
  if (!k) throw new Error(`wasm kernel ${name} is not registered; Conv2DBackpropFilter needs it`);
  const out = k.kernelFunc({ inputs, backend, attrs });
  return Array.isArray(out) ? (out[0]) : (out);
}

/**
 * Writes colsᵀ [kh·kw·C, N·Ho·Wo] of NHWC `x` (zero padding implied by `top`/`left`) into `out`.
 * Rows are contiguous so that the following matmul needs no transpose: both wasm's transposeA
 * path and its Transpose kernel are ~10x slower than a plain matmul of this size. The loops read x
 * sequentially (C contiguous floats per pixel) and write C row streams; the opposite order (one
 * output row at a time) re-streams all of x for each of the kh·kw·C rows and was 5x slower.
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
      const rowBase = (i * kw + j) * c * m;
      // Output columns whose input column lies inside x; outside them the value is padding (0).
      const owLo = Math.min(wo, Math.max(0, Math.ceil((left - j) / sw)));
      const owHi = Math.max(owLo, Math.min(wo, Math.floor((w - 1 + left - j) / sw) + 1));
      for (let b = 0; b < n; b++) {
        for (let oh = 0; oh < ho; oh++) {
          const col0 = rowBase + (b * ho + oh) * wo;
          const ih = oh * sh - top + i;
          if (ih < 0 || ih >= h) {
            for (let ci = 0; ci < c; ci++) out.fill(0, col0 + ci * m, col0 + ci * m + wo);
            continue;
          }
          for (let ci = 0; ci < c; ci++) {
            const r = col0 + ci * m;
            if (owLo > 0) out.fill(0, r, r + owLo);
            if (owHi < wo) out.fill(0, r + owHi, r + wo);
          }
          let src = ((b * h + ih) * w + (owLo * sw - left + j)) * c;
          const step = sw * c;
          for (let ow = owLo; ow < owHi; ow++, src += step) {
            let d = col0 + ow;
            for (let ci = 0; ci < c; ci++, d += m) out[d] = x[src + ci]!;
          }
        }
      }
    }
  }
}

/**
 * dW[i, j, c, f] = Σ_{n,oh,ow} xpad[n, oh·sh+i, ow·sw+j, c]·dy[n, oh, ow, f] is itself a
 * convolution: of x laid out as [C, H, W, N] (batch C, channels N) with dy as the filter
 * [Ho, Wo, N, F] dilated by the stride, giving [C, ≥kh, ≥kw, F] (rows past kh/kw only appear when
 * the forward dropped input rows, and are cropped). The backend's XNNPACK Conv2D runs it, and the
 * JS work is two transposes the size of x and dy instead of an im2col kh·kw times larger
 * (1.4-2x faster than im2col + matmul at stride 1).
 */
function viaConv(
  be: WasmBackend, x: TensorInfo, dy: TensorInfo,
  n: number, h: number, w: number, c: number, kh: number, kw: number, ho: number, wo: number,
  sh: number, sw: number, f: number,
  pad: { top: number; bottom: number; left: number; right: number },
  owned: TensorInfo[],
): TensorInfo {
  const xT = be.makeOutput([c, h, w, n], 'float32');
  owned.push(xT);
  const dyT = be.makeOutput([ho, wo, n, f], 'float32');
  owned.push(dyT);
  {
    const xs = be.typedArrayFromHeap(x);
    const xd = be.typedArrayFromHeap(xT);
    const plane = h * w * n;
    let s = 0;
    for (let b = 0; b < n; b++)
      for (let p = 0; p < h * w; p++, s += c) {
        let d = p * n + b;
        for (let ci = 0; ci < c; ci++, d += plane) xd[d] = xs[s + ci]!;
      }
    const ds = be.typedArrayFromHeap(dy);
    const dd = be.typedArrayFromHeap(dyT);
    let t = 0;
    for (let b = 0; b < n; b++)
      for (let p = 0; p < ho * wo; p++, t += f) {
        const o = (p * n + b) * f;
        for (let q = 0; q < f; q++) dd[o + q] = ds[t + q]!;
      }
  }
  const conv2d = tf.getKernel('Conv2D', 'wasm').kernelFunc;
  const r = conv2d({
    inputs: { x: xT, filter: dyT },
    backend: be,
    attrs: {
      strides: [1, 1],
      pad: [[0, 0], [pad.top, pad.bottom], [pad.left, pad.right], [0, 0]],
      dataFormat: 'NHWC',
      dilations: [sh, sw],
    },
  }) as TensorInfo;
  owned.push(r);
  const [, rh, rw] = r.shape as [number, number, number, number];
  if (rh < kh || rw < kw) {
    throw new Error(`Conv2DBackpropFilter (wasm): internal conv gave [${r.shape}], expected [${c},${kh},${kw},${f}]`);
  }
  const dw = be.makeOutput([kh, kw, c, f], 'float32');
  const rs = be.typedArrayFromHeap(r);
  const wd = be.typedArrayFromHeap(dw);
  for (let ci = 0; ci < c; ci++)
    for (let i = 0; i < kh; i++)
      for (let j = 0; j < kw; j++) {
        const so = ((ci * rh + i) * rw + j) * f;
        const o = ((i * kw + j) * c + ci) * f;
        for (let q = 0; q < f; q++) wd[o + q] = rs[so + q]!;
      }
  return dw;
}

export const conv2dBackpropFilterWasm: KernelFunc = ({ inputs, backend, attrs }) => {
  const be = backend as unknown as WasmBackend;
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
    filterShape,
    strides,
    1,
    pad,
    dimRoundingMode,
    false,
    'channelsLast',
  );
  const [kh, kw, c, f] = filterShape;
  const [n, h, w] = x.shape as [number, number, number, number];
  const { outHeight: ho, outWidth: wo, strideHeight: sh, strideWidth: sw } = conv;
  const m = n * ho * wo;
  const k = kh * kw * c;
  const owned: TensorInfo[] = [];
  try {
    if (algo === 'conv' || (algo === 'auto' && sh === 1 && sw === 1)) return viaConv(be, x, dy, n, h, w, c, kh, kw, ho, wo, sh, sw, f, conv.padInfo, owned);
    const colsT = be.makeOutput([1, k, m], 'float32');
    owned.push(colsT);
    // Views are taken after the allocation: a heap growth detaches earlier views.
    im2colT(be.typedArrayFromHeap(x), be.typedArrayFromHeap(colsT), n, h, w, c, kh, kw, ho, wo, sh, sw, conv.padInfo.top, conv.padInfo.left);
    const dy3 = call('Reshape', be, { x: dy }, { shape: [1, m, f] });
    owned.push(dy3);
    const dw3 = call('BatchMatMul', be, { a: colsT, b: dy3 }, { transposeA: false, transposeB: false });
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
