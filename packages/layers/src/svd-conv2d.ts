/**
 * SVDConv2D: a 2-D convolution stored as the SVD factors of its weight matrix (Yang et al. 2020).
 *
 * Inputs and outputs are NHWC ([batch, height, width, channels]). Weights: `U` [m, r], `s` [r],
 * `V` [p, r] (and `bias` [filters] when `useBias`), with M = U · diag(s) · Vᵀ (m × p). How the rows
 * of U and V map onto the PyTorch weight W (n, c, kh, kw), n = filters, c = input channels:
 *
 * - `channel`: m = n, p = c·kh·kw. Row ni of U belongs to output channel ni; row (ci*kh + i)*kw + j
 *   of V belongs to input channel ci at kernel position (i, j): W[ni,ci,i,j] = M[ni, (ci*kh+i)*kw+j].
 * - `spatial`: m = n·kw, p = c·kh. Row ni*kw + j of U is (output channel ni, kernel column j); row
 *   ci*kh + i of V is (input channel ci, kernel row i): W[ni,ci,i,j] = M[ni*kw + j, ci*kh + i].
 *
 * U, s, V are therefore the very same matrices as the PyTorch reference's (no permutation is needed
 * to exchange them); only the reconstructed filter differs in layout: tfjs (kh, kw, c, n) =
 * W.transpose([2, 3, 1, 0]).
 *
 * Two forwards give the same result up to float32 rounding:
 * - `reconstruct`: build the (kh, kw, c, n) filter from the factors (reshape/transpose/matMul only,
 *   all of which have gradients in tfjs) and run one conv;
 * - `factored`: channel = kh×kw conv c→r with (V·diag(s))ᵀ, then 1×1 conv r→n with U; spatial =
 *   kh×1 conv (stride (sh,1), padding (ph,0)) with (V·diag(s))ᵀ, then 1×kw conv (stride (1,sw),
 *   padding (0,pw)) with K2[ni,ρ,0,j] = U[ni*kw + j, ρ].
 * `auto` picks the one with fewer multiply-adds for the actual rank, input size and batch: merged at
 * full rank (then it costs exactly the plain conv), factored once the rank is low enough. Pruning
 * keeps 'auto', so every layer at every rank runs its cheaper form.
 *
 * Padding is always explicit: PyTorch pads p on every side, whereas tfjs 'same' with stride 2 on an
 * even input pads 0 before and 1 after; a numeric padding here means the PyTorch convention.
 */
import * as tf from '@tensorflow/tfjs';
import { SvdTrainError, type Decomposition } from '@svd-train/core';
import { fullRank, matrixDims, matrixFromFactors, pytorchWeightFromMatrix, svdInit, type SvdFactors } from './svd-init.js';
import { readFactors, writeFactors } from './svd-dense.js';
import { chooseSvdForm, svdConvForwardCost } from './svd-form.js';
import { RANK_CONV } from './kernels/native.js';
import { scalePermute } from './kernels/scale-permute.js';

export { chooseSvdForm, svdConvForwardCost } from './svd-form.js';

type LayerArgs = NonNullable<ConstructorParameters<typeof tf.layers.Layer>[0]>;

import type { SvdForward } from './svd-dense.js';
export type { SvdForward } from './svd-dense.js';
/** `'same'` / `'valid'` as in tfjs; a number or [ph, pw] pads symmetrically as PyTorch does. */
export type SvdPadding = 'same' | 'valid' | number | [number, number];

/** Constructor arguments of `SVDConv2D`. */
export interface SVDConv2DArgs extends LayerArgs {
  /** Output channels n. */
  filters: number;
  /** Kernel size kh×kw (a number means square). */
  kernelSize: number | [number, number];
  /** Strides (default 1). */
  strides?: number | [number, number];
  /** Padding (default 'valid'); numbers are PyTorch-style symmetric explicit padding. */
  padding?: SvdPadding;
  /** Add a bias (default false: the ResNets put BN after every conv). */
  useBias?: boolean;
  /** How W is reshaped into a matrix before the SVD (default 'channel'). */
  decomposition?: Decomposition;
  /** Rank r (default full: min(m, p)). */
  rank?: number;
  /** Which forward to run (default 'auto'). */
  forward?: SvdForward;
  /** Seed of the He-normal draw that the SVD init factors (default: random). */
  seed?: number;
}

/** Explicit per-side padding of one forward. */
interface Pads {
  top: number;
  bottom: number;
  left: number;
  right: number;
}

function pair(v: number | [number, number], what: string): [number, number] {
  const p: [number, number] = typeof v === 'number' ? [v, v] : [v[0], v[1]];
  if (!p.every((x) => Number.isInteger(x) && x >= 0)) {
    throw new SvdTrainError('CONFIG_INVALID', `SVDConv2D ${what} [${p}]; expected non-negative integers`);
  }
  return p;
}

export class SVDConv2D extends tf.layers.Layer {
  static className = 'SVDConv2D';

  readonly filters: number;
  readonly kernelSize: [number, number];
  readonly strides: [number, number];
  readonly padding: SvdPadding;
  readonly useBias: boolean;
  readonly decomposition: Decomposition;
  readonly forward: SvdForward;
  readonly seed: number;
  private readonly rankArg: number | undefined;
  /** Resolved rank and input channels (set by build). */
  rank = 0;
  inChannels = 0;

  U!: tf.LayerVariable;
  s!: tf.LayerVariable;
  V!: tf.LayerVariable;
  bias: tf.LayerVariable | null = null;

  constructor(args: SVDConv2DArgs) {
    super(args);
    if (!Number.isInteger(args.filters) || args.filters < 1) {
      throw new SvdTrainError('CONFIG_INVALID', `SVDConv2D filters ${args.filters}; expected a positive integer`);
    }
    this.filters = args.filters;
    this.kernelSize = pair(args.kernelSize, 'kernelSize');
    if (this.kernelSize.some((k) => k < 1)) throw new SvdTrainError('CONFIG_INVALID', `SVDConv2D kernelSize [${this.kernelSize}] must be ≥ 1`);
    this.strides = pair(args.strides ?? 1, 'strides');
    if (this.strides.some((k) => k < 1)) throw new SvdTrainError('CONFIG_INVALID', `SVDConv2D strides [${this.strides}] must be ≥ 1`);
    const pad = args.padding ?? 'valid';
    if (pad !== 'same' && pad !== 'valid') pair(pad, 'padding');
    this.padding = Array.isArray(pad) ? [pad[0], pad[1]] : pad;
    this.useBias = args.useBias ?? false;
    this.decomposition = args.decomposition ?? 'channel';
    if (this.decomposition !== 'channel' && this.decomposition !== 'spatial') {
      throw new SvdTrainError('CONFIG_INVALID', `SVDConv2D decomposition '${String(this.decomposition)}'; expected 'channel' or 'spatial'`);
    }
    this.forward = args.forward ?? 'auto';
    if (!['auto', 'reconstruct', 'factored'].includes(this.forward)) {
      throw new SvdTrainError('CONFIG_INVALID', `SVDConv2D forward '${String(this.forward)}'; expected 'auto', 'reconstruct' or 'factored'`);
    }
    this.rankArg = args.rank ?? undefined;
    this.seed = args.seed ?? Math.floor(Math.random() * 2 ** 31);
  }

  override build(inputShape: tf.Shape | tf.Shape[]): void {
    const shape = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
    const c = shape[3];
    if (shape.length !== 4 || c == null) {
      throw new SvdTrainError('SHAPE_MISMATCH', `${this.name}: input shape [${shape}]; expected NHWC with known channels`);
    }
    this.inChannels = c;
    const g = this.geometry();
    const { m, p } = matrixDims(this.decomposition, g);
    const r = this.rankArg ?? fullRank(this.decomposition, g);
    const f = svdInit(this.decomposition, g, this.seed, r);
    this.rank = r;
    this.U = this.addWeight('U', [m, r], 'float32', tf.initializers.zeros());
    this.s = this.addWeight('s', [r], 'float32', tf.initializers.zeros());
    this.V = this.addWeight('V', [p, r], 'float32', tf.initializers.zeros());
    if (this.useBias) this.bias = this.addWeight('bias', [this.filters], 'float32', tf.initializers.zeros());
    writeFactors(this.name, this, f);
    this.built = true;
  }

  /** PyTorch weight geometry (n, c, kh, kw). Valid once built. */
  geometry(): { n: number; c: number; kh: number; kw: number } {
    return { n: this.filters, c: this.inChannels, kh: this.kernelSize[0], kw: this.kernelSize[1] };
  }

  /** Replaces U, s, V (e.g. from `svdFromWeight`); shapes must match the built layer. */
  setFactors(f: SvdFactors): void {
    writeFactors(this.name, this, f);
  }

  /** U, s, V as plain arrays; identical to the PyTorch reference's `U`, `s`, `V` (see module doc). */
  getFactors(): SvdFactors {
    return readFactors(this);
  }

  /** The reconstructed weight in PyTorch layout (n, c, kh, kw), row-major, computed in float64. */
  pytorchWeight(): Float32Array {
    return pytorchWeightFromMatrix(matrixFromFactors(this.getFactors()), this.decomposition, this.geometry());
  }

  /** Explicit padding for an input of height h, width w. */
  private pads(h: number, w: number): Pads {
    const [kh, kw] = this.kernelSize;
    const [sh, sw] = this.strides;
    if (this.padding === 'valid') return { top: 0, bottom: 0, left: 0, right: 0 };
    if (this.padding === 'same') {
      // tfjs/TF 'same': total = max((ceil(h/s) − 1)·s + k − h, 0), the smaller half before.
      const th = Math.max((Math.ceil(h / sh) - 1) * sh + kh - h, 0);
      const tw = Math.max((Math.ceil(w / sw) - 1) * sw + kw - w, 0);
      return { top: Math.floor(th / 2), bottom: th - Math.floor(th / 2), left: Math.floor(tw / 2), right: tw - Math.floor(tw / 2) };
    }
    const [ph, pw] = pair(this.padding, 'padding');
    return { top: ph, bottom: ph, left: pw, right: pw };
  }

  private outSize(h: number, w: number): [number, number] {
    const p = this.pads(h, w);
    const [kh, kw] = this.kernelSize;
    const [sh, sw] = this.strides;
    return [Math.floor((h + p.top + p.bottom - kh) / sh) + 1, Math.floor((w + p.left + p.right - kw) / sw) + 1];
  }

  override computeOutputShape(inputShape: tf.Shape | tf.Shape[]): tf.Shape {
    const shape = (Array.isArray(inputShape[0]) ? inputShape[0] : inputShape) as tf.Shape;
    const [b, h, w] = shape;
    if (h == null || w == null) return [b ?? null, null, null, this.filters];
    const [oh, ow] = this.outSize(h, w);
    return [b ?? null, oh, ow, this.filters];
  }

  /** Per-image MACs of both forwards for an input of height h, width w (see `svdConvForwardCost`). */
  forwardCost(h: number, w: number): { reconstruct: number; factored: number; rebuild: number } {
    const [outH, outW] = this.outSize(h, w);
    const { n, c, kh, kw } = this.geometry();
    return svdConvForwardCost({ decomposition: this.decomposition, n, c, kh, kw, r: this.rank, inW: w, outH, outW });
  }

  /**
   * Which forward `call` runs for a batch of `batch` inputs of height h, width w: the configured
   * one, or with 'auto' the one with fewer MACs (`chooseSvdForm`; default batch: the merged filter
   * reused, as inference and the stock export run it).
   */
  forwardFor(h: number, w: number, batch = Infinity): 'reconstruct' | 'factored' {
    if (this.forward !== 'auto') return this.forward;
    return chooseSvdForm(this.forwardCost(h, w), batch);
  }

  /** Output height and width for an input of height h, width w. */
  outputSize(h: number, w: number): [number, number] {
    return this.outSize(h, w);
  }

  /** The explicit [top, bottom, left, right] padding for an input of height h, width w. */
  explicitPadding(h: number, w: number): [number, number, number, number] {
    const p = this.pads(h, w);
    return [p.top, p.bottom, p.left, p.right];
  }

  /**
   * The tfjs conv filter (kh, kw, c, n) = PyTorch W.transpose([2, 3, 1, 0]), built from the factors
   * with `scalePermute` (V·diag(s)), matMul, reshape and transpose only (differentiable; no slicing).
   */
  reconstructWeight(): tf.Tensor4D {
    return tf.tidy(() => {
      const { n, c, kh, kw } = this.geometry();
      // Mᵀ = V·diag(s)·Uᵀ (p × m); reshaping Mᵀ rather than M puts n last, as the filter wants.
      const V = this.V.read() as tf.Tensor2D;
      const Vs = scalePermute<tf.Rank.R2>(V, this.s.read() as tf.Tensor1D, [...V.shape], [0, 1]);
      const Mt = tf.matMul(Vs, this.U.read(), false, true);
      if (this.decomposition === 'channel') {
        // Mᵀ[(ci*kh+i)*kw+j, ni] → [c, kh, kw, n] → [kh, kw, c, n].
        return tf.transpose<tf.Tensor4D>(tf.reshape(Mt, [c, kh, kw, n]), [1, 2, 0, 3]);
      }
      // Mᵀ[ci*kh+i, ni*kw+j] → [c, kh, n, kw] → [kh, kw, c, n].
      return tf.transpose<tf.Tensor4D>(tf.reshape(Mt, [c, kh, n, kw]), [1, 3, 0, 2]);
    });
  }

  override call(inputs: tf.Tensor | tf.Tensor[]): tf.Tensor {
    return tf.tidy(() => {
      const x = (Array.isArray(inputs) ? inputs[0] : inputs) as tf.Tensor4D;
      if (x.rank !== 4 || x.shape[3] !== this.inChannels) {
        throw new SvdTrainError('SHAPE_MISMATCH', `${this.name}: input [${x.shape}]; expected NHWC with ${this.inChannels} channels`);
      }
      const [batch, h, w] = x.shape;
      const mode = this.forwardFor(h, w, batch);
      let y = mode === 'reconstruct' ? this.callReconstruct(x) : this.callFactored(x);
      if (this.bias) y = tf.add(y, this.bias.read());
      return y;
    });
  }

  /**
   * The first half of the channel-wise factored forward: the k×k conv from c channels to the rank,
   * with filter (V·s)ᵀ (PyTorch (r, c, kh, kw), tfjs (kh, kw, c, r)). Its output times
   * `pointwiseMatrix()` over the channels is the layer's output (before the bias). Channel
   * decomposition only. `inputGradient` false says that x needs no gradient (the network's input):
   * on the native engine the backward then skips it.
   */
  rankSpace(x: tf.Tensor4D, inputGradient = true): tf.Tensor4D {
    if (this.decomposition !== 'channel') {
      throw new SvdTrainError('CONFIG_INVALID', `${this.name}: rankSpace is the channel decomposition's first conv; this layer is '${this.decomposition}'`);
    }
    if (tf.getKernel(RANK_CONV, tf.getBackend()) != null) return this.rankConv(x, false, inputGradient) as tf.Tensor4D;
    return tf.tidy(() => {
      const p = this.pads(x.shape[1], x.shape[2]);
      return tf.conv2d(x, this.rankFilter(), this.strides, [[0, 0], [p.top, p.bottom], [p.left, p.right], [0, 0]]);
    });
  }

  /**
   * `rankSpace(x)` and x again as a second output, from one `RANK_CONV` kernel (only where the
   * backend has it: the native engine): where x is also a residual block's shortcut and the block
   * reads it from this second output, x's two gradients are summed in the conv's input-gradient
   * pass (no separate Add).
   */
  rankSpaceBranch(x: tf.Tensor4D): [tf.Tensor4D, tf.Tensor4D] {
    if (this.decomposition !== 'channel') {
      throw new SvdTrainError('CONFIG_INVALID', `${this.name}: rankSpaceBranch is the channel decomposition's first conv; this layer is '${this.decomposition}'`);
    }
    return this.rankConv(x, true, true) as [tf.Tensor4D, tf.Tensor4D];
  }

  /** The RANK_CONV kernel: the filter built from V and s inside it (native engine). */
  private rankConv(x: tf.Tensor4D, branch: boolean, inputGradient: boolean): tf.Tensor | tf.Tensor[] {
    const p = this.pads(x.shape[1], x.shape[2]);
    const attrs = {
      strides: this.strides, pad: [[0, 0], [p.top, p.bottom], [p.left, p.right], [0, 0]], dataFormat: 'NHWC', dilations: [1, 1],
      ...this.rankFilterLayout(), branch, inputGradient,
    };
    return tf.engine().runKernel(RANK_CONV, { x, v: this.V.read(), s: this.s.read() }, attrs);
  }

  /** V·diag(s) read as [c, kh, kw, r] and permuted to the filter's (kh, kw, c, r): `rankFilter`'s and RANK_CONV's layout. */
  private rankFilterLayout(): { dims: number[]; perm: number[] } {
    const { c, kh, kw } = this.geometry();
    return { dims: [c, kh, kw, this.rank], perm: [1, 2, 0, 3] };
  }

  /** The channel decomposition's k×k conv from c channels to the rank, tfjs filter (kh, kw, c, r) = (V·s)ᵀ. */
  rankFilter(): tf.Tensor4D {
    return tf.tidy(() => {
      const { dims, perm } = this.rankFilterLayout();
      return scalePermute<tf.Rank.R4>(this.V.read() as tf.Tensor2D, this.s.read() as tf.Tensor1D, dims, perm);
    });
  }

  /** Uᵀ, [r, n]: the 1×1 conv from the rank back to the n output channels (channel decomposition). */
  pointwiseMatrix(): tf.Tensor2D {
    return tf.transpose(this.U.read() as tf.Tensor2D);
  }

  /** U itself, [n, r]: `pointwiseMatrix()` untransposed, for kernels that take it that way (no taped Transpose). */
  pointwiseFactor(): tf.Tensor2D {
    return this.U.read() as tf.Tensor2D;
  }

  private callReconstruct(x: tf.Tensor4D): tf.Tensor4D {
    const p = this.pads(x.shape[1], x.shape[2]);
    return tf.conv2d(x, this.reconstructWeight(), this.strides, [[0, 0], [p.top, p.bottom], [p.left, p.right], [0, 0]]);
  }

  private callFactored(x: tf.Tensor4D): tf.Tensor4D {
    const { n, kw } = this.geometry();
    const r = this.rank;
    if (this.decomposition === 'channel') {
      return tf.conv2d(this.rankSpace(x), tf.reshape<tf.Rank.R4>(this.pointwiseMatrix(), [1, 1, r, n]), 1, 'valid');
    }
    const p = this.pads(x.shape[1], x.shape[2]);
    const k2 = tf.reshape<tf.Rank.R4>(this.rowFilter(), [1, kw, r, n]);
    return tf.conv2d(this.columnSpace(x), k2, [1, this.strides[1]], [[0, 0], [0, 0], [p.left, p.right], [0, 0]]);
  }

  /**
   * The first half of the spatial factored forward: the kh×1 conv (stride along the height only)
   * from c channels to the rank, filter K1 (r, c, kh, 1) = (V·s)ᵀ, tfjs (kh, 1, c, r). Its output,
   * convolved along the width with `rowFilter()` (stride and left/right padding of the layer), is
   * the layer's output (before the bias). Spatial decomposition only.
   */
  columnSpace(x: tf.Tensor4D): tf.Tensor4D {
    if (this.decomposition !== 'spatial') {
      throw new SvdTrainError('CONFIG_INVALID', `${this.name}: columnSpace is the spatial decomposition's first conv; this layer is '${this.decomposition}'`);
    }
    return tf.tidy(() => {
      const { c, kh } = this.geometry();
      const p = this.pads(x.shape[1], x.shape[2]);
      const k1 = tf.reshape<tf.Rank.R4>(this.columnFilter(), [kh, 1, c, this.rank]);
      return tf.conv2d(x, k1, [this.strides[0], 1], [[0, 0], [p.top, p.bottom], [0, 0], [0, 0]]);
    });
  }

  /** The spatial decomposition's kh×1 conv from c channels to the rank, as [kh, c, r] (tfjs filter (kh, 1, c, r)). */
  columnFilter(): tf.Tensor3D {
    return tf.tidy(() => {
      const { c, kh } = this.geometry();
      return scalePermute<tf.Rank.R3>(this.V.read() as tf.Tensor2D, this.s.read() as tf.Tensor1D, [c, kh, this.rank], [1, 0, 2]);
    });
  }

  /**
   * The spatial decomposition's 1×kw conv from the rank back to the n output channels, as [kw, r, n]
   * (tfjs filter (1, kw, r, n)): K2[ni, ρ, 0, j] = U[ni·kw + j, ρ].
   */
  rowFilter(): tf.Tensor3D {
    return tf.tidy(() => {
      const { n, kw } = this.geometry();
      return tf.transpose(tf.reshape(this.U.read(), [n, kw, this.rank]), [1, 2, 0]);
    });
  }

  override getConfig(): tf.serialization.ConfigDict {
    return {
      ...super.getConfig(),
      filters: this.filters,
      kernelSize: [...this.kernelSize],
      strides: [...this.strides],
      padding: typeof this.padding === 'object' ? [...this.padding] : this.padding,
      useBias: this.useBias,
      decomposition: this.decomposition,
      rank: this.rank || (this.rankArg ?? null),
      forward: this.forward,
      seed: this.seed,
    };
  }
}
tf.serialization.registerClass(SVDConv2D);

/**
 * The factors of a layer in the PyTorch reference layout. They are the same matrices (see the module
 * doc), so this is a copy; it exists so export code states the mapping rather than assuming it.
 */
export function referenceFactors(layer: SVDConv2D | { getFactors(): SvdFactors }): SvdFactors {
  return layer.getFactors();
}
