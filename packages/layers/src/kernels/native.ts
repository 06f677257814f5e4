/**
 * The native engine: oneDNN kernels (`@svd-train/native`) registered on the tfjs wasm backend.
 *
 * Why the wasm backend and not cpu: the wasm backend keeps every tensor in one wasm heap, so oneDNN
 * reads and writes them in place through `typedArrayFromHeap` views (zero copies), and the ops we
 * leave alone (elementwise, reductions, softmax) stay in wasm SIMD. The cpu backend runs those in
 * plain JS: a probe found Mul, Relu and Step alone took ~900 ms of a 1 s step there.
 *
 * Views are taken after every `makeOutput` of the call (a heap growth detaches earlier views), and
 * the addon is synchronous, so no JS runs while oneDNN holds a pointer into the heap.
 *
 * What we do not handle (another dtype, NCHW, a batch broadcast oneDNN can't express) goes to the
 * kernel that was registered before ours, never to a crash; `unregisterNativeKernels` puts those
 * back (tests switch between 'native' and 'wasm' in one process).
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelConfig, KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';
import type { NativeAddon } from '@svd-train/native';
import type { WasmBackend } from './wasm-backend.js';
import { SCALE_PERMUTE, SCALE_PERMUTE_GRAD, operands, scalePermuteKernel, type ScalePermuteAttrs } from './scale-permute.js';

/** Kernel names of our own batch-norm and ReLU-gradient ops (used by batch-norm.ts and the Relu gradient below). */
export const BN_TRAIN = 'SvdBatchNormTrain';
export const BN_GRAD = 'SvdBatchNormGrad';
export const RELU_GRAD = 'SvdReluGrad';
/** y = x·scale + shift over the last axis, one pass (eval-mode batch norm); see `affine`. */
export const AFFINE = 'SvdAffine';
/**
 * y = t·w + shift (+ residual), then ReLU, over the last axis: a factored layer's 1×1 conv and the
 * eval-mode batch norm after it in one pass (`fused-inference.ts`). Inference only: no gradient.
 */
export const POINTWISE_AFFINE = 'SvdPointwiseAffine';
/**
 * The spatial decomposition's second conv (1×kw along the width, stride `strideW`, left padding
 * `padLeft`) and its eval-mode batch norm in one pass: inputs t [N,H,Win,R], w [kw,R,C] (the scale
 * folded in), shift [C], residual? [N,H,Wout,C]; attrs { outWidth, strideW, padLeft, relu }.
 */
export const ROW_CONV_AFFINE = 'SvdRowConvAffine';
/**
 * A whole spatially factored layer (kh×1 conv to the rank, 1×kw conv back) and its eval-mode batch
 * norm in one pass, the rank-space rows kept in cache: inputs x [N,H,W,Cin], k1 [kh,Cin,R], w2
 * [kw,R,C] (the scale folded in), shift [C], residual? [N,OH,OW,C]; attrs { strideH, padTop,
 * outHeight, strideW, padLeft, outWidth, relu }.
 */
export const SPATIAL_AFFINE = 'SvdSpatialAffine';
/**
 * Train-mode batch norm of t·p computed from the rank-space t, with the residual and ReLU, and its
 * gradient (`rank-space-batch-norm.ts`, packages/native/src/rank_bn.h).
 */
export const RANK_BN_TRAIN = 'SvdRankBnTrain';
export const RANK_BN_GRAD = 'SvdRankBnGrad';
/**
 * A whole model's inference in one call (`lanes-inference.ts`, packages/native/src/lanes_net.h):
 * input x [n, …]; attrs { steps, sizes, input, output, inFloats, outFloats, weights } as the
 * addon's `lanesNet` takes them (weights: Float32Arrays in JS memory, made once per change of the
 * model's variables). Output [n, outFloats]. Inference only: no gradient.
 */
export const LANES_NET = 'SvdLanesNet';
/**
 * The channel decomposition's first conv (`SVDConv2D.rankSpace`) in one kernel each way: inputs x,
 * v (V, [c·kh·kw, r]) and s; attrs Conv2D's strides and pad, and `dims` [c, kh, kw, r] and `perm`
 * [1, 2, 0, 3] (the filter is transpose(reshape(V·diag(s), dims), perm), scale-permute.ts). The
 * filter is built in the addon into a temporary, so the step records one kernel and saves x, v, s,
 * where SvdScalePermute and Conv2D were two kernels and four saved copies forward and three
 * kernels backward. With `branch`, a second output is x itself (the same buffer, no copy): where a
 * residual block's shortcut reads it, the gradient receives both of x's gradients and sums them in
 * the input gradient's pass (`fused-inference.ts`), instead of tfjs' separate Add of two [N,H,W,C]
 * tensors. `RANK_CONV_GRAD` takes dy, x, v, s and (branch) res, and gives dx, dv, ds (dv, ds
 * where the attr `inputGradient` is false, as RANK_CONV's caller sets it for the network's input).
 */
export const RANK_CONV = 'SvdRankConv2D';
export const RANK_CONV_GRAD = 'SvdRankConv2DGrad';
/**
 * Global average pooling of NHWC x [N,H,W,C] to [N,C] (tf.mean over axes 1 and 2), and its
 * gradient dx = dy / (H·W) broadcast over the pixels (attrs { inputShape }), where tfjs' Mean
 * gradient makes a ones tensor of x's shape, a Mul and a RealDiv.
 */
export const MEAN_POOL = 'SvdMeanPool';
export const MEAN_POOL_GRAD = 'SvdMeanPoolGrad';

type Conv4 = [number, number, number, number];

/** Elements from which a same-shape float32 Add runs natively (below, wasm's kernel is as fast and the call dominates). */
const ADD_MIN = 16384;

/** The addon's conv shape array for `info`. */
function convShape(info: tf.backend_util.Conv2DInfo): number[] {
  const p = info.padInfo;
  return [
    info.batchSize, info.inHeight, info.inWidth, info.inChannels, info.outChannels,
    info.filterHeight, info.filterWidth, info.outHeight, info.outWidth,
    info.strideHeight, info.strideWidth, info.dilationHeight, info.dilationWidth,
    p.top, p.left, p.bottom, p.right,
  ];
}

/** out += res (equal lengths), natively where the addon has `add`. */
export function addTo(addon: NativeAddon, out: Float32Array, res: Float32Array): void {
  if (addon.add) addon.add(out, res, out);
  else for (let i = 0; i < out.length; i++) out[i] += res[i];
}

/**
 * One pass of a convolution on raw NHWC arrays whose geometry has passed the kernels' checks:
 * (a, b) are (x, filter) forward, (dy, filter) for the input gradient, (x, dy) for the filter's.
 * `res`, of the output's length, is added to it (the input gradient's shortcut sum).
 */
export type ConvPass = (a: Float32Array, b: Float32Array, out: Float32Array, info: tf.backend_util.Conv2DInfo, res?: Float32Array) => void;

/**
 * The three conv passes on the addon: the Conv2D kernels' arithmetic once their checks pass, and
 * what the native training step (native-step.ts) calls on its own arrays. A 1×1 conv with stride 1
 * runs as a matmul over the pixels (`isPointwise`).
 */
export function convPasses(addon: NativeAddon): { forward: ConvPass; backpropInput: ConvPass; backpropFilter: ConvPass; backpropInputAdd?: ConvPass } {
  const pixels = (info: tf.backend_util.Conv2DInfo) => info.batchSize * info.outHeight * info.outWidth;
  const addInto = (out: Float32Array, res: Float32Array | undefined) => res && addTo(addon, out, res);
  return {
    // y[P, cout] = x[P, cin] · w[cin, cout]
    forward: (x, w, y, info, res) => {
      if (isPointwise(info)) addon.matmul(x, w, y, [1, 1, pixels(info), info.inChannels, info.outChannels, 0, 0]);
      else addon.conv2d(x, w, y, convShape(info));
      addInto(y, res);
    },
    // dx[P, cin] = dy[P, cout] · w[cin, cout]ᵀ
    backpropInput: (dy, w, dx, info, res) => {
      if (!isPointwise(info)) return addon.conv2dBackpropInput(dy, w, dx, convShape(info), res);
      addon.matmul(dy, w, dx, [1, 1, pixels(info), info.outChannels, info.inChannels, 0, 1]);
      addInto(dx, res);
    },
    // dw[cin, cout] = x[P, cin]ᵀ · dy[P, cout]
    backpropFilter: (x, dy, dw, info, res) => {
      if (isPointwise(info)) addon.matmul(x, dy, dw, [1, 1, info.inChannels, pixels(info), info.outChannels, 1, 0]);
      else addon.conv2dBackpropFilter(x, dy, dw, convShape(info));
      addInto(dw, res);
    },
    // dx += the input gradient, in place (addons built before it lack the call).
    ...(addon.conv2dBackpropInputAdd && { backpropInputAdd: (dy: Float32Array, w: Float32Array, dx: Float32Array, info: tf.backend_util.Conv2DInfo) => addon.conv2dBackpropInputAdd!(dy, w, dx, convShape(info)) }),
  };
}

const isNhwc = (f: unknown) => f === undefined || f === 'NHWC' || f === 'channelsLast';
const allF32 = (...ts: TensorInfo[]) => ts.every((t) => t.dtype === 'float32');
/** tfjs rejects negative padding, but a padded shape whose sides are negative can't run on oneDNN. */
const padOk = (info: tf.backend_util.Conv2DInfo) =>
  info.padInfo.top >= 0 && info.padInfo.left >= 0 && info.padInfo.bottom >= 0 && info.padInfo.right >= 0;

/**
 * A 1×1 convolution with stride 1, no padding and no dilation is a matmul over the pixels, and
 * runs as one: oneDNN's NHWC convolution takes a slow path when the input has few channels (a
 * 1×1 conv from 2 to 16 channels, the second half of a rank-2 factored layer, measured ~18×
 * slower than the same matmul), which made pruned models barely faster than full rank.
 */
function isPointwise(info: tf.backend_util.Conv2DInfo): boolean {
  const p = info.padInfo;
  return (
    info.filterHeight === 1 && info.filterWidth === 1 && info.strideHeight === 1 && info.strideWidth === 1 &&
    info.dilationHeight === 1 && info.dilationWidth === 1 && p.top === 0 && p.left === 0 && p.bottom === 0 && p.right === 0
  );
}

/** RANK_CONV's attrs: Conv2D's, the filter's layout as SvdScalePermute takes it, and whether x is a second output. */
interface RankConvAttrs extends ScalePermuteAttrs {
  strides: [number, number] | number;
  pad: tf.backend_util.ExplicitPadding | 'same' | 'valid' | number;
  branch: boolean;
  /**
   * Whether x needs a gradient (false: the network's input). RANK_CONV passes it to its gradient;
   * RANK_CONV_GRAD without it gives [dv, ds] only.
   */
  inputGradient?: boolean;
}

/** 16-bit words of a ReLU mask per row of c channels (pointwise_affine.h's MaskWords). */
export const maskWords = (c: number) => Math.ceil(c / 16);

/** The rank-space batch norm's int32 `mask` tensor as the addon's Uint16Array of m·maskWords(c) words. */
function maskView(be: WasmBackend, mask: TensorInfo, m: number, c: number): Uint16Array {
  const words = be.typedArrayFromHeap(mask) as unknown as Int32Array;
  if (words.length * 2 < m * maskWords(c)) throw new Error(`native ${RANK_BN_GRAD}: mask has ${words.length * 2} words; expected ${m * maskWords(c)}`);
  return new Uint16Array(words.buffer, words.byteOffset, m * maskWords(c));
}

/** Length of the rank-space batch norm's `state` output for rank r and c channels. */
export const rankBnStateSize = (r: number, c: number) => r + r * r + 2 * c;

/** Views of `state`'s parts: tmean [r], cov [r, r], scale [c], invstd [c]. */
function rankBnState(state: Float32Array, r: number, c: number): [Float32Array, Float32Array, Float32Array, Float32Array] {
  return [state.subarray(0, r), state.subarray(r, r + r * r), state.subarray(r + r * r, r + r * r + c), state.subarray(r + r * r + c, r + r * r + 2 * c)];
}

function makeKernels(addon: NativeAddon, fallback: (name: string) => KernelFunc): KernelConfig[] {
  /**
   * The three convolution kernels differ only in which two tensors go in, where the x and filter
   * shapes come from, and which addon call runs; the checks, the geometry and the fallback are one.
   */
  const passes = convPasses(addon);
  const convKernel = (
    name: string,
    inputNames: [string, string],
    geometry: (ins: Record<string, TensorInfo>, attrs: Record<string, unknown>) => { x: number[]; filter: number[]; dilations: number | [number, number] },
    outShape: (info: tf.backend_util.Conv2DInfo) => number[],
    pass: ConvPass,
    /** An input of the output's shape added to it (RANK_CONV_GRAD's res): `pass` takes it, or the fallback's output gets it. */
    sumName?: string,
  ): KernelFunc => (args) => {
    const be = args.backend as unknown as WasmBackend;
    const ins = args.inputs as Record<string, TensorInfo>;
    const attrs = args.attrs as unknown as tf.Conv2DAttrs & Record<string, unknown>;
    const [a, b] = [ins[inputNames[0]], ins[inputNames[1]]];
    const sum = sumName ? ins[sumName] : undefined;
    const g = geometry(ins, attrs);
    const stock = () => {
      const out = fallback(name)(args) as TensorInfo;
      if (sum) addTo(addon, be.typedArrayFromHeap(out), be.typedArrayFromHeap(sum));
      return out;
    };
    if (!isNhwc(attrs.dataFormat) || !allF32(a, b, ...(sum ? [sum] : [])) || g.x.length !== 4 || g.filter.length !== 4) return stock();
    const info = tf.backend_util.computeConv2DInfo(g.x as Conv4, g.filter as Conv4, attrs.strides, g.dilations, attrs.pad, attrs.dimRoundingMode, false, 'channelsLast');
    if (!padOk(info) || info.outHeight < 1 || info.outWidth < 1) return stock();
    const shape = outShape(info);
    if (sum && (sum.shape.length !== shape.length || sum.shape.some((d, i) => d !== shape[i]))) {
      throw new Error(`native ${name}: res has shape [${sum.shape.join(',')}]; expected the output's [${shape.join(',')}]`);
    }
    const out = be.makeOutput(shape, 'float32');
    const [va, vb, vo] = [be.typedArrayFromHeap(a), be.typedArrayFromHeap(b), be.typedArrayFromHeap(out)];
    pass(va, vb, vo, info, sum ? be.typedArrayFromHeap(sum) : undefined);
    return out;
  };

  const conv2d = convKernel(
    'Conv2D', ['x', 'filter'],
    (ins, attrs) => ({ x: ins.x.shape, filter: ins.filter.shape, dilations: (attrs as unknown as tf.Conv2DAttrs).dilations }),
    (info) => info.outShape,
    passes.forward,
  );
  const backpropInput = (sumName?: string) =>
    convKernel(
      'Conv2DBackpropInput', ['dy', 'filter'],
      (ins, attrs) => ({ x: [...(attrs as unknown as tf.Conv2DBackpropInputAttrs).inputShape], filter: ins.filter.shape, dilations: 1 }),
      (info) => [info.batchSize, info.inHeight, info.inWidth, info.inChannels],
      passes.backpropInput,
      sumName,
    );
  const conv2dBackpropInput = backpropInput();
  const conv2dBackpropInputSum = backpropInput('res');

  const conv2dBackpropFilter = convKernel(
    'Conv2DBackpropFilter', ['x', 'dy'],
    (ins, attrs) => ({ x: ins.x.shape, filter: [...(attrs as unknown as tf.Conv2DBackpropFilterAttrs).filterShape], dilations: 1 }),
    (info) => [info.filterHeight, info.filterWidth, info.inChannels, info.outChannels],
    passes.backpropFilter,
  );

  /** The filter transpose(reshape(v·diag(s), dims), perm) as a temporary tensor (the caller disposes it). */
  const rankFilter = (be: WasmBackend, v: TensorInfo, s: TensorInfo, at: RankConvAttrs): TensorInfo => {
    operands(RANK_CONV, v, s, at);
    const filter = be.makeOutput(at.perm.map((k) => at.dims[k]), 'float32');
    addon.scalePermute!(be.typedArrayFromHeap(v), be.typedArrayFromHeap(s), be.typedArrayFromHeap(filter), at.dims, at.perm);
    return filter;
  };
  const rankConv: KernelFunc = (args) => {
    const be = args.backend as unknown as WasmBackend;
    const { x, v, s } = args.inputs as Record<'x' | 'v' | 's', TensorInfo>;
    const at = args.attrs as unknown as RankConvAttrs;
    const filter = rankFilter(be, v, s, at);
    try {
      const y = conv2d({ ...args, inputs: { x, filter } }) as TensorInfo;
      if (!at.branch) return y;
      be.incRef(x.dataId);
      return [y, { dataId: x.dataId, shape: x.shape, dtype: x.dtype }];
    } finally {
      be.disposeData(filter.dataId);
    }
  };
  const rankConvGrad: KernelFunc = (args) => {
    const be = args.backend as unknown as WasmBackend;
    const { dy, x, v, s, res } = args.inputs as Record<'dy' | 'x' | 'v' | 's', TensorInfo> & { res?: TensorInfo };
    const at = args.attrs as unknown as RankConvAttrs;
    const filter = rankFilter(be, v, s, at);
    const filterShape = at.perm.map((k) => at.dims[k]);
    let dw: TensorInfo | undefined;
    try {
      const inputAttrs = { ...args.attrs, inputShape: x.shape } as unknown as NamedAttrMap;
      const dx = !at.inputGradient
        ? undefined
        : res
          ? (conv2dBackpropInputSum({ ...args, inputs: { dy, filter, res }, attrs: inputAttrs }) as TensorInfo)
          : (conv2dBackpropInput({ ...args, inputs: { dy, filter }, attrs: inputAttrs }) as TensorInfo);
      dw = conv2dBackpropFilter({ ...args, inputs: { x, dy }, attrs: { ...args.attrs, filterShape } }) as TensorInfo;
      const dv = be.makeOutput([...v.shape], 'float32');
      const ds = be.makeOutput([...s.shape], 'float32');
      const [vw, vv, vs, vdv, vds] = [dw, v, s, dv, ds].map((t) => be.typedArrayFromHeap(t));
      addon.scalePermuteGrad!(vw, vv, vs, vdv, vds, at.dims, at.perm);
      return dx ? [dx, dv, ds] : [dv, ds];
    } finally {
      be.disposeData(filter.dataId);
      if (dw) be.disposeData(dw.dataId);
    }
  };

  /**
   * tfjs-layers' Conv2D runs `FusedConv2D` (conv, optional bias, optional activation). oneDNN does
   * the conv; the bias and a ReLU, when asked for, are one native pass over the output. Other
   * activations (and PReLU weights) go to the wasm kernel.
   */
  const fusedConv2d: KernelFunc = (args) => {
    const ins = args.inputs as Record<string, TensorInfo | undefined>;
    const { activation, dataFormat } = args.attrs as unknown as { activation?: string; dataFormat?: string };
    const act = activation ?? 'linear';
    const f = ins.filter!.shape[3];
    // The bias pass below runs over the last axis, so it needs NHWC; and a bias must be one value
    // per output channel (or one for all). Anything else is the wasm kernel's to handle.
    const biasSize = ins.bias ? ins.bias.shape.reduce((p, d) => p * d, 1) : 0;
    const biasOk = !ins.bias || (ins.bias.dtype === 'float32' && (biasSize === f || biasSize === 1));
    if ((act !== 'linear' && act !== 'relu') || ins.preluActivationWeights || !biasOk || !isNhwc(dataFormat)) return fallback('FusedConv2D')(args);
    const y = conv2d({ ...args, inputs: { x: ins.x!, filter: ins.filter! } }) as TensorInfo;
    if (ins.bias || act === 'relu') {
      const be = args.backend as unknown as WasmBackend;
      const out = be.typedArrayFromHeap(y);
      // A single bias value for all channels becomes one per channel: the addon takes C or none.
      const bias = ins.bias ? be.typedArrayFromHeap(ins.bias) : new Float32Array(0);
      const shift = bias.length === 1 && f !== 1 ? new Float32Array(f).fill(bias[0]) : bias;
      addon.affine(out, new Float32Array(0), shift, out, [out.length / f, f, act === 'relu' ? 1 : 0]);
    }
    return y;
  };

  const batchMatMul: KernelFunc = (args) => {
    const { inputs, backend, attrs } = args;
    const be = backend as unknown as WasmBackend;
    const { a, b } = inputs as { a: TensorInfo; b: TensorInfo };
    const { transposeA, transposeB } = attrs as unknown as tf.BatchMatMulAttrs;
    const ra = a.shape.length;
    const rb = b.shape.length;
    if (!allF32(a, b) || ra < 2 || rb < 2) return fallback('BatchMatMul')(args);
    const outerA = a.shape.slice(0, -2);
    const outerB = b.shape.slice(0, -2);
    const batchA = outerA.reduce((p, d) => p * d, 1);
    const batchB = outerB.reduce((p, d) => p * d, 1);
    // Equal batches, or one side a single matrix: what oneDNN's matmul broadcasts. Anything
    // fancier (partial broadcasting across several batch dims) goes to the stock kernel.
    const sameOuter = outerA.length === outerB.length && outerA.every((d, i) => d === outerB[i]);
    if (!sameOuter && batchA !== 1 && batchB !== 1) return fallback('BatchMatMul')(args);
    const m = transposeA ? a.shape[ra - 1] : a.shape[ra - 2];
    const k = transposeA ? a.shape[ra - 2] : a.shape[ra - 1];
    const kb = transposeB ? b.shape[rb - 1] : b.shape[rb - 2];
    const n = transposeB ? b.shape[rb - 2] : b.shape[rb - 1];
    if (k !== kb) return fallback('BatchMatMul')(args); // the stock kernel throws tfjs' own message
    if (m * n === 0) return fallback('BatchMatMul')(args);
    const outer = batchA >= batchB ? outerA : outerB;
    const c = be.makeOutput([...outer, m, n], 'float32');
    if (k === 0) return c;
    addon.matmul(be.typedArrayFromHeap(a), be.typedArrayFromHeap(b), be.typedArrayFromHeap(c), [
      batchA, batchB, m, k, n, transposeA ? 1 : 0, transposeB ? 1 : 0,
    ]);
    return c;
  };

  // Batch norm's optional fusions (attrs `relu`, input `residual`): y = relu(bn(x) + residual).
  const none = new Float32Array(0);
  const bnTrain: KernelFunc = ({ inputs, backend, attrs }) => {
    const be = backend as unknown as WasmBackend;
    const { x, gamma, beta, residual } = inputs as { x: TensorInfo; gamma: TensorInfo; beta: TensorInfo; residual?: TensorInfo };
    const { epsilon, relu } = attrs as unknown as { epsilon: number; relu?: boolean };
    const c = x.shape[x.shape.length - 1];
    const m = x.shape.reduce((p, d) => p * d, 1) / c;
    const y = be.makeOutput([...x.shape], 'float32');
    const mean = be.makeOutput([c], 'float32');
    const variance = be.makeOutput([c], 'float32');
    const v = (t: TensorInfo) => be.typedArrayFromHeap(t);
    addon.batchNormForward(v(x), v(gamma), v(beta), v(y), v(mean), v(variance), [m, c], epsilon, residual ? v(residual) : none, relu ? 1 : 0);
    return [y, mean, variance];
  };

  const bnGrad: KernelFunc = ({ inputs, backend, attrs }) => {
    const be = backend as unknown as WasmBackend;
    // y: the fused forward's output, present when it applied a ReLU (its gradient masks dy).
    const { x, dy, mean, variance, gamma, y } = inputs as Record<'x' | 'dy' | 'mean' | 'variance' | 'gamma', TensorInfo> & { y?: TensorInfo };
    const { epsilon, residual } = attrs as unknown as { epsilon: number; residual?: boolean };
    const c = x.shape[x.shape.length - 1];
    const m = x.shape.reduce((p, d) => p * d, 1) / c;
    const dx = be.makeOutput([...x.shape], 'float32');
    const dg = be.makeOutput([c], 'float32');
    const db = be.makeOutput([c], 'float32');
    const dres = residual ? be.makeOutput([...x.shape], 'float32') : undefined;
    const v = (t: TensorInfo) => be.typedArrayFromHeap(t);
    addon.batchNormBackward(v(x), v(dy), v(mean), v(variance), v(gamma), v(dx), v(dg), v(db), [m, c], epsilon, y ? v(y) : none, dres ? v(dres) : none);
    return dres ? [dx, dg, db, dres] : [dx, dg, db];
  };

  const reluGrad: KernelFunc = ({ inputs, backend }) => {
    const be = backend as unknown as WasmBackend;
    const { dy, x } = inputs as { dy: TensorInfo; x: TensorInfo };
    const dx = be.makeOutput([...x.shape], 'float32');
    addon.reluGrad(be.typedArrayFromHeap(dy), be.typedArrayFromHeap(x), be.typedArrayFromHeap(dx));
    return dx;
  };

  /**
   * Add of two float32 tensors of one shape and at least ADD_MIN elements (the gradient sums at a
   * residual block's input); broadcasts, other dtypes and small tensors stay on wasm's kernel.
   */
  const add: KernelFunc = (args) => {
    const { a, b } = args.inputs as { a: TensorInfo; b: TensorInfo };
    const size = a.shape.reduce((p, d) => p * d, 1);
    if (!allF32(a, b) || size < ADD_MIN || a.shape.length !== b.shape.length || a.shape.some((d, i) => d !== b.shape[i])) return fallback('Add')(args);
    const be = args.backend as unknown as WasmBackend;
    const out = be.makeOutput([...a.shape], 'float32');
    addon.add!(be.typedArrayFromHeap(a), be.typedArrayFromHeap(b), be.typedArrayFromHeap(out));
    return out;
  };

  const affine: KernelFunc = ({ inputs, backend, attrs }) => {
    const be = backend as unknown as WasmBackend;
    const { x, scale, shift, residual } = inputs as Record<'x' | 'scale' | 'shift', TensorInfo> & { residual?: TensorInfo };
    const { relu } = (attrs ?? {}) as { relu?: boolean };
    const c = x.shape[x.shape.length - 1];
    const y = be.makeOutput([...x.shape], 'float32');
    const v = (t: TensorInfo) => be.typedArrayFromHeap(t);
    addon.affine(v(x), v(scale), v(shift), v(y), [x.shape.reduce((p, d) => p * d, 1) / c, c, relu ? 1 : 0], residual ? v(residual) : none);
    return y;
  };

  const pointwiseAffine: KernelFunc = ({ inputs, backend, attrs }) => {
    const be = backend as unknown as WasmBackend;
    const { t, w, shift, residual } = inputs as Record<'t' | 'w' | 'shift', TensorInfo> & { residual?: TensorInfo };
    const { relu } = (attrs ?? {}) as { relu?: boolean };
    const [r, c] = w.shape as [number, number];
    const y = be.makeOutput([...t.shape.slice(0, -1), c], 'float32');
    const v = (x: TensorInfo) => be.typedArrayFromHeap(x);
    addon.pointwiseAffine(v(t), v(w), v(shift), v(y), [t.shape.reduce((p, d) => p * d, 1) / r, r, c, relu ? 1 : 0], residual ? v(residual) : none);
    return y;
  };

  const rowConvAffine: KernelFunc = ({ inputs, backend, attrs }) => {
    const be = backend as unknown as WasmBackend;
    const { t, w, shift, residual } = inputs as Record<'t' | 'w' | 'shift', TensorInfo> & { residual?: TensorInfo };
    const { outWidth, strideW, padLeft, relu } = attrs as unknown as { outWidth: number; strideW: number; padLeft: number; relu?: boolean };
    const [kw, r, c] = w.shape as [number, number, number];
    const [n, h, win] = t.shape as [number, number, number, number];
    const y = be.makeOutput([n, h, outWidth, c], 'float32');
    const v = (x: TensorInfo) => be.typedArrayFromHeap(x);
    addon.rowConvAffine(v(t), v(w), v(shift), v(y), [n * h, win, outWidth, kw, strideW, padLeft, r, c, relu ? 1 : 0], residual ? v(residual) : none);
    return y;
  };

  const spatialAffine: KernelFunc = ({ inputs, backend, attrs }) => {
    const be = backend as unknown as WasmBackend;
    const { x, k1, w2, shift, residual } = inputs as Record<'x' | 'k1' | 'w2' | 'shift', TensorInfo> & { residual?: TensorInfo };
    const a = attrs as unknown as { strideH: number; padTop: number; outHeight: number; strideW: number; padLeft: number; outWidth: number; relu?: boolean };
    const [n, h, w, cin] = x.shape as [number, number, number, number];
    const [kh, , r] = k1.shape as [number, number, number];
    const [kw, , c] = w2.shape as [number, number, number];
    const y = be.makeOutput([n, a.outHeight, a.outWidth, c], 'float32');
    const v = (t: TensorInfo) => be.typedArrayFromHeap(t);
    addon.spatialAffine(
      v(x), v(k1), v(w2), v(shift), v(y),
      [n, h, w, cin, kh, a.strideH, a.padTop, a.outHeight, r, kw, a.strideW, a.padLeft, a.outWidth, c, a.relu ? 1 : 0],
      residual ? v(residual) : none,
    );
    return y;
  };

  /**
   * Outputs y, mean, variance, `state` = [tmean (r) | cov (r·r) | scale (c) | invstd (c)] (what the
   * gradient needs from the forward in one tensor: tfjs copies every tensor a gradient saves
   * through an Identity kernel and a tape node; four small ones were ~60 µs a layer) and `mask`,
   * with relu y > 0 as bits (int32, two 16-bit words each), which the backward reads instead of y.
   */
  const rankBnTrain: KernelFunc = ({ inputs, backend, attrs }) => {
    const be = backend as unknown as WasmBackend;
    const { t, p, gamma, beta, residual } = inputs as Record<'t' | 'p' | 'gamma' | 'beta', TensorInfo> & { residual?: TensorInfo };
    const { epsilon, relu, pTransposed } = attrs as unknown as { epsilon: number; relu?: boolean; pTransposed?: boolean };
    const [r, c] = (pTransposed ? [...p.shape].reverse() : p.shape) as [number, number];
    const m = t.shape.reduce((a, d) => a * d, 1) / r;
    const out = (shape: number[]) => be.makeOutput(shape, 'float32');
    const y = out([...t.shape.slice(0, -1), c]);
    const [mean, variance, state] = [out([c]), out([c]), out([rankBnStateSize(r, c)])];
    const mask = be.makeOutput([relu ? Math.ceil((m * maskWords(c)) / 2) : 1], 'int32');
    const v = (x: TensorInfo) => be.typedArrayFromHeap(x);
    const [tmean, cov, scale, invstd] = rankBnState(v(state), r, c);
    addon.rankBnForward(
      v(t), v(p), v(gamma), v(beta), v(y), v(mean), v(variance), tmean, cov, scale, invstd, [m, r, c, relu ? 1 : 0, pTransposed ? 1 : 0],
      epsilon, residual ? v(residual) : none, relu ? maskView(be, mask, m, c) : undefined,
    );
    return [y, mean, variance, state, mask];
  };

  const rankBnGrad: KernelFunc = ({ inputs, backend, attrs }) => {
    const be = backend as unknown as WasmBackend;
    // y: the forward's output, present when it applied a ReLU (its gradient masks dy).
    const { dy, t, p, state, y, mask } = inputs as Record<'dy' | 't' | 'p' | 'state', TensorInfo> & { y?: TensorInfo; mask?: TensorInfo };
    const { residual, pTransposed } = (attrs ?? {}) as { residual?: boolean; pTransposed?: boolean };
    const [r, c] = (pTransposed ? [...p.shape].reverse() : p.shape) as [number, number];
    const m = t.shape.reduce((a, d) => a * d, 1) / r;
    const stateSize = state.shape.reduce((a, d) => a * d, 1);
    if (stateSize !== rankBnStateSize(r, c)) throw new Error(`native ${RANK_BN_GRAD}: state has ${stateSize} values; expected ${rankBnStateSize(r, c)} for rank ${r}, ${c} channels`);
    const dt = be.makeOutput([...t.shape], 'float32');
    const dp = be.makeOutput([...p.shape], 'float32');
    const dg = be.makeOutput([c], 'float32');
    const db = be.makeOutput([c], 'float32');
    const dres = residual ? be.makeOutput([...dy.shape], 'float32') : undefined;
    const v = (x: TensorInfo) => be.typedArrayFromHeap(x);
    const [tmean, cov, scale, invstd] = rankBnState(v(state), r, c);
    // p (and dp) as [c, r] when pTransposed (a layer's U as stored): the addon transposes.
    addon.rankBnBackward(
      v(dy), y ? v(y) : none, v(t), v(p), tmean, cov, scale, invstd, v(dt), v(dp), v(dg), v(db), dres ? v(dres) : none, [m, r, c, pTransposed ? 1 : 0],
      y && mask ? maskView(be, mask, m, c) : undefined,
    );
    return dres ? [dt, dp, dg, db, dres] : [dt, dp, dg, db];
  };

  const lanesNet: KernelFunc = ({ inputs, backend, attrs }) => {
    const be = backend as unknown as WasmBackend;
    const a = attrs as unknown as { steps: number[]; sizes: number[]; input: number; output: number; inFloats: number; outFloats: number; weights: Float32Array[] };
    const x = inputs.x!;
    const y = be.makeOutput([x.shape[0], a.outFloats], 'float32');
    // Views after makeOutput: a heap growth there would have detached earlier ones.
    addon.lanesNet!(be.typedArrayFromHeap(x), be.typedArrayFromHeap(y), [x.shape[0], a.input, a.output, a.inFloats, a.outFloats], a.sizes, a.steps, a.weights);
    return y;
  };

  const meanPool: KernelFunc = ({ inputs, backend }) => {
    const be = backend as unknown as WasmBackend;
    const { x } = inputs as { x: TensorInfo };
    const [n, h, w, c] = x.shape as [number, number, number, number];
    const y = be.makeOutput([n, c], 'float32');
    addon.meanPool!(be.typedArrayFromHeap(x), be.typedArrayFromHeap(y), [n, h * w, c]);
    return y;
  };
  const meanPoolGrad: KernelFunc = ({ inputs, backend, attrs }) => {
    const be = backend as unknown as WasmBackend;
    const { dy } = inputs as { dy: TensorInfo };
    const [n, h, w, c] = (attrs as unknown as { inputShape: [number, number, number, number] }).inputShape;
    const dx = be.makeOutput([n, h, w, c], 'float32');
    addon.meanPoolGrad!(be.typedArrayFromHeap(dy), be.typedArrayFromHeap(dx), [n, h * w, c]);
    return dx;
  };

  /** SvdScalePermute and its gradient (scale-permute.ts) with the loops in the addon instead of JS. */
  const scalePermute = scalePermuteKernel(false, (v, at) => addon.scalePermute!(v.a, v.s, v.y, at.dims, at.perm));
  const scalePermuteGrad = scalePermuteKernel(true, (v, at) => addon.scalePermuteGrad!(v.y, v.a, v.s, v.da, v.ds, at.dims, at.perm));

  const k = (kernelName: string, kernelFunc: KernelFunc): KernelConfig => ({ kernelName, backendName: 'wasm', kernelFunc });
  return [
    k('Conv2D', conv2d),
    k('FusedConv2D', fusedConv2d),
    k('Conv2DBackpropInput', conv2dBackpropInput),
    k('Conv2DBackpropFilter', conv2dBackpropFilter),
    ...(typeof addon.scalePermute === 'function' && typeof addon.scalePermuteGrad === 'function'
      ? [k(SCALE_PERMUTE, scalePermute), k(SCALE_PERMUTE_GRAD, scalePermuteGrad), k(RANK_CONV, rankConv), k(RANK_CONV_GRAD, rankConvGrad)]
      : []),
    ...(typeof addon.meanPool === 'function' && typeof addon.meanPoolGrad === 'function' ? [k(MEAN_POOL, meanPool), k(MEAN_POOL_GRAD, meanPoolGrad)] : []),
    k('BatchMatMul', batchMatMul),
    k(BN_TRAIN, bnTrain),
    k(BN_GRAD, bnGrad),
    k(RELU_GRAD, reluGrad),
    ...(typeof addon.add === 'function' ? [k('Add', add)] : []),
    k(AFFINE, affine),
    // An addon built before pointwiseAffine existed still runs; inference then takes the separate ops.
    ...(typeof addon.pointwiseAffine === 'function' ? [k(POINTWISE_AFFINE, pointwiseAffine)] : []),
    ...(typeof addon.rowConvAffine === 'function' ? [k(ROW_CONV_AFFINE, rowConvAffine)] : []),
    ...(typeof addon.spatialAffine === 'function' ? [k(SPATIAL_AFFINE, spatialAffine)] : []),
    ...(typeof addon.rankBnForward === 'function' ? [k(RANK_BN_TRAIN, rankBnTrain), k(RANK_BN_GRAD, rankBnGrad)] : []),
    // Only on CPUs with AVX-512F (the addon exports it only there); elsewhere inference runs per op.
    ...(typeof addon.lanesNet === 'function' ? [k(LANES_NET, lanesNet)] : []),
  ];
}

// SvdAffine's gradient, registered once for every backend (only the native engine has the kernel):
// what tfjs would give for relu(x·scale + shift + residual) with scale and shift broadcast over the
// last axis (the ReLU's mask from the saved output, as tfjs' Relu gradient takes it from x > 0).
tf.registerGradient({
  kernelName: AFFINE,
  inputsToSave: ['x', 'scale'],
  outputsToSave: [true],
  gradFunc: (dy, saved, attrs) => {
    const [x, scale, y] = saved as [tf.Tensor, tf.Tensor, tf.Tensor];
    const relu = (attrs as { relu?: boolean } | undefined)?.relu === true;
    const g = relu ? tf.mul(dy as tf.Tensor, tf.step(y)) : (dy as tf.Tensor);
    const outer = g.shape.slice(0, -1).map((_, i) => i);
    return { x: () => tf.mul(g, scale), scale: () => tf.sum(tf.mul(g, x), outer), shift: () => tf.sum(g, outer), residual: () => g };
  },
});

// RANK_CONV's gradient: one RANK_CONV_GRAD call for dx (with, for a branch, the second output's
// gradient summed in), dv and ds. Where the forward said x needs no gradient (`inputGradient`
// false: the network's input image), the call skips dx (at the stem, a conv back to 3 channels,
// ~0.8 ms a step); asked for it anyway, dx comes from a second call.
tf.registerGradient({
  kernelName: RANK_CONV,
  inputsToSave: ['x', 'v', 's'],
  gradFunc: (dys, saved, attrs) => {
    const [dy, dx2] = Array.isArray(dys) ? dys : [dys];
    const [x, v, s] = saved;
    const run = (inputGradient: boolean) => {
      const ins: Record<string, tf.Tensor> = { dy, x, v, s };
      if (dx2) ins.res = dx2;
      return tf.engine().runKernel<tf.Tensor[]>(RANK_CONV_GRAD, ins, { ...attrs, inputGradient });
    };
    const withDx = (attrs as { inputGradient?: boolean }).inputGradient !== false;
    const out = run(withDx);
    const [dv, ds] = withDx ? out.slice(1) : out;
    return { x: () => (withDx ? out[0] : run(true)[0]), v: () => dv, s: () => ds };
  },
});

// MEAN_POOL's gradient: dy / (H·W) over every pixel, in one kernel.
tf.registerGradient({
  kernelName: MEAN_POOL,
  gradFunc: (dy, _saved, attrs) => ({ x: () => tf.engine().runKernel<tf.Tensor>(MEAN_POOL_GRAD, { dy: dy as tf.Tensor }, attrs) }),
});

/**
 * tf.mean(x, [1, 2]) of a float32 NHWC x [N,H,W,C] as MEAN_POOL where the active backend has it,
 * else tf.mean itself.
 */
export function meanPool(x: tf.Tensor4D): tf.Tensor2D {
  if (x.dtype !== 'float32' || x.rank !== 4 || tf.getKernel(MEAN_POOL, tf.getBackend()) == null) return tf.mean(x, [1, 2]);
  return tf.engine().runKernel<tf.Tensor2D>(MEAN_POOL, { x }, { inputShape: x.shape });
}

/** The kernels ours replaced (undefined: there was none), to restore and to fall back on. */
let saved: Map<string, KernelConfig | undefined> | undefined;
let ours: KernelConfig[] = [];
let stockReluGrad: tf.GradConfig | undefined;

/**
 * The Relu gradient as one kernel where the active backend has `SvdReluGrad`, else tfjs' own
 * formula (dy · step(x)). Registered while the native kernels are; the registry is global, so the
 * fallback keeps every other backend's result exactly as before.
 */
function reluGradConfig(stock: tf.GradConfig): tf.GradConfig {
  return {
    kernelName: 'Relu',
    inputsToSave: ['x'],
    gradFunc: (dy, saved, attrs) => {
      if (tf.getKernel(RELU_GRAD, tf.getBackend()) == null || dy instanceof Array) return stock.gradFunc(dy, saved, attrs);
      const [x] = saved as [tf.Tensor];
      return { x: () => tf.engine().runKernel<tf.Tensor>(RELU_GRAD, { dy, x }, {}) };
    },
  };
}

function replace(cfg: KernelConfig): void {
  if (tf.getKernel(cfg.kernelName, cfg.backendName) != null) tf.unregisterKernel(cfg.kernelName, cfg.backendName);
  tf.registerKernel(cfg);
}

/**
 * Puts the native kernels on the wasm backend, over whatever is registered (stock or ours from
 * register.ts, which must run first). Idempotent.
 */
export function registerNativeKernels(addon: NativeAddon): void {
  if (saved) return;
  const before = new Map<string, KernelConfig | undefined>();
  const fallback = (name: string): KernelFunc => {
    const cfg = before.get(name);
    if (!cfg) throw new Error(`native ${name}: this case needs the stock wasm kernel, and none is registered`);
    return cfg.kernelFunc;
  };
  ours = makeKernels(addon, fallback);
  for (const cfg of ours) before.set(cfg.kernelName, tf.getKernel(cfg.kernelName, 'wasm') ?? undefined);
  for (const cfg of ours) replace(cfg);
  saved = before;
  const stock = tf.getGradient('Relu');
  if (stock) {
    stockReluGrad = stock;
    tf.registerGradient(reluGradConfig(stock));
  }
}

/** Restores the kernels that `registerNativeKernels` replaced (the plain wasm engine). */
export function unregisterNativeKernels(): void {
  if (!saved) return;
  for (const cfg of ours) {
    tf.unregisterKernel(cfg.kernelName, 'wasm');
    const prev = saved.get(cfg.kernelName);
    if (prev) tf.registerKernel(prev);
  }
  saved = undefined;
  ours = [];
  if (stockReluGrad) tf.registerGradient(stockReluGrad);
  stockReluGrad = undefined;
}

/** Whether the native kernels are what the wasm backend runs now. */
export function nativeKernelsActive(): boolean {
  return saved !== undefined && tf.getBackend() === 'wasm';
}
