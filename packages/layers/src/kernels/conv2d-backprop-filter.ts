/**
 * `Conv2DBackpropFilter` for the wasm backend, which ships without one (so without this no conv
 * layer can be trained on wasm).
 *
 * dW[i, j, c, f] = Σ_{n, oh, ow} xpad[n, oh·sh + i, ow·sw + j, c] · dy[n, oh, ow, f]
 *
 * We build the im2col matrix of the padded input once, cols [N·Ho·Wo, kh·kw·C] with column index
 * (i·kw + j)·C + c (exactly the row-major flattening of the filter [kh, kw, C, F]), and compute
 * dW = colsᵀ · dy with the backend's own BatchMatMul, which is SIMD-vectorised. Everything runs as
 * direct calls of registered wasm kernel functions on TensorInfos (not tf ops: we are inside a
 * kernel, where the engine does not track tensors), so every intermediate is freed with
 * `backend.disposeData`. NHWC and dilation 1 only, as required by the conv2d gradient in tfjs.
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, KernelFunc, TensorInfo, NamedAttrMap } from '@tensorflow/tfjs';

interface BackendLike {
  disposeData(dataId: object, force?: boolean): boolean;
}

/** Calls another registered wasm kernel by name; the caller owns (and must dispose) the result. */
function call(name: string, backend: BackendLike, inputs: Record<string, TensorInfo>, attrs: NamedAttrMap): TensorInfo {
  const k = tf.getKernel(name, 'wasm');
  if (!k) throw new Error(`wasm kernel ${name} is not registered; Conv2DBackpropFilter needs it`);
  const out = k.kernelFunc({ inputs, backend: backend as never, attrs });
  return Array.isArray(out) ? (out[0] as TensorInfo) : (out as TensorInfo);
}

export const conv2dBackpropFilterWasm: KernelFunc = ({ inputs, backend, attrs }) => {
  const be = backend as unknown as BackendLike;
  const { x, dy } = inputs as { x: TensorInfo; dy: TensorInfo };
  const { strides, pad, dataFormat, dimRoundingMode, filterShape } = attrs as unknown as tf.Conv2DBackpropFilterAttrs;
  if (dataFormat !== undefined && dataFormat !== 'NHWC') {
    throw new Error(`Conv2DBackpropFilter (wasm): only NHWC is supported, got dataFormat=${dataFormat}`);
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
  const n = x.shape[0]!;
  const { outHeight: ho, outWidth: wo, strideHeight: sh, strideWidth: sw } = conv;
  const { top, left, bottom, right } = conv.padInfo;
  const owned: TensorInfo[] = [];
  const keep = (t: TensorInfo): TensorInfo => (owned.push(t), t);
  try {
    let xp = x;
    if (top > 0 || bottom > 0 || left > 0 || right > 0) {
      // Negative "padding" cannot occur: computeConv2DInfo only yields crops for dimRoundingMode
      // 'floor' via the output size, which the slices below handle by not reading past the end.
      xp = keep(
        call('PadV2', be, { x }, {
          paddings: [[0, 0], [Math.max(top, 0), Math.max(bottom, 0)], [Math.max(left, 0), Math.max(right, 0)], [0, 0]],
          constantValue: 0,
        } as unknown as NamedAttrMap),
      );
    }
    const taps: TensorInfo[] = [];
    for (let i = 0; i < kh; i++) {
      for (let j = 0; j < kw; j++) {
        const t =
          sh === 1 && sw === 1
            ? call('Slice', be, { x: xp }, { begin: [0, i, j, 0], size: [n, ho, wo, c] } as unknown as NamedAttrMap)
            : call('StridedSlice', be, { x: xp }, {
                begin: [0, i, j, 0],
                end: [n, i + (ho - 1) * sh + 1, j + (wo - 1) * sw + 1, c],
                strides: [1, sh, sw, 1],
                beginMask: 0,
                endMask: 0,
                ellipsisMask: 0,
                newAxisMask: 0,
                shrinkAxisMask: 0,
              } as unknown as NamedAttrMap);
        taps.push(keep(t));
      }
    }
    const cols4 = taps.length === 1 ? taps[0]! : keep(call('Concat', be, Object.fromEntries(taps.map((t, k) => [k, t])), { axis: 3 }));
    const m = n * ho * wo;
    const cols = keep(call('Reshape', be, { x: cols4 }, { shape: [1, m, kh * kw * c] }));
    const dy3 = keep(call('Reshape', be, { x: dy }, { shape: [1, m, f] }));
    const dw3 = keep(
      call('BatchMatMul', be, { a: cols, b: dy3 }, { transposeA: true, transposeB: false } as unknown as NamedAttrMap),
    );
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
