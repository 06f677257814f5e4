/**
 * `@svd-train/native`: loads the optional oneDNN addon (src/addon.cc) and describes it with types.
 *
 * Framework-free on purpose: the addon works on Float32Arrays and shape arrays, and
 * `@svd-train/layers` turns it into tfjs kernels on the wasm backend (so tfjs stays a dependency of
 * layers only). Loading never throws: where the addon is missing, disabled or broken the result
 * says why in one line and how to fix it, and the caller falls back to wasm.
 *
 * Every function is synchronous and returns only after oneDNN has finished, so the arrays may be
 * views into memory that JS can move later (the tfjs wasm heap) — but only for the call's duration.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/**
 * Convolution shape, in this order: [N, H, W, C, F, KH, KW, OH, OW, SH, SW, DH, DW, PT, PL, PB, PR].
 * x is NHWC [N,H,W,C], the filter HWIO [KH,KW,C,F], y NHWC [N,OH,OW,F]; DH/DW are dilations as tfjs
 * counts them (1 = none); PT/PL/PB/PR the zero padding on each side.
 */
export type ConvShape = readonly number[];

/** The addon's functions. Errors are JS Errors with `code` NATIVE_DNNL_ERROR or NATIVE_BAD_ARGUMENT. */
export interface NativeAddon {
  /** y = conv(x, filter). */
  conv2d(x: Float32Array, filter: Float32Array, y: Float32Array, shape: ConvShape): void;
  /**
   * dx = ∂(conv)/∂x · dy, plus `res` (same length as dx) when given: a residual block's shortcut
   * gradient to the same input, summed in the kernel's pass where our few-channel kernel runs the
   * shape (stride 1, 16 or 32 input channels, at most 16 outputs, kw 1 or 3), else after oneDNN's.
   */
  conv2dBackpropInput(dy: Float32Array, filter: Float32Array, dx: Float32Array, shape: ConvShape, res?: Float32Array): void;
  /**
   * dx += ∂(conv)/∂x · dy, in place: the second of two convs reading the same input adding its share
   * (a downsampling block's 1×1 shortcut after its 3×3 conv). A 1×1 conv without padding touches
   * only the pixels it samples; other shapes go through a scratch and an add. Absent from addons
   * built before it.
   */
  conv2dBackpropInputAdd?(dy: Float32Array, filter: Float32Array, dx: Float32Array, shape: ConvShape): void;
  /** dFilter = ∂(conv)/∂filter · dy, HWIO. */
  conv2dBackpropFilter(x: Float32Array, dy: Float32Array, dFilter: Float32Array, shape: ConvShape): void;
  /**
   * c [B,M,N] = op(a) · op(b) with shape [BA, BB, M, K, N, transposeA, transposeB] (0/1 flags);
   * a is [BA,M,K] ([BA,K,M] when transposed), b [BB,K,N] ([BB,N,K]); a batch of 1 broadcasts.
   */
  matmul(a: Float32Array, b: Float32Array, c: Float32Array, shape: readonly number[]): void;
  /**
   * Train-mode batch norm over a row-major [M, C] view: y, batch mean and biased variance; y gets
   * `residual` added and then max(·, 0) when relu is 1 (a residual block's bn + shortcut + ReLU).
   * `mask` (M·ceil(C/16) words), where given, gets y > 0 as bits for `batchNormBackward` (addons
   * built before it ignore it).
   */
  batchNormForward(
    x: Float32Array, gamma: Float32Array, beta: Float32Array,
    y: Float32Array, mean: Float32Array, variance: Float32Array, shape: readonly [number, number], eps: number,
    residual?: Float32Array, relu?: 0 | 1, mask?: Uint16Array,
  ): void;
  /**
   * The batch-norm gradient given the forward's mean and variance: dx, dgamma, dbeta. With `y`, the
   * output of a forward with relu, dy is first masked by y > 0; `dResidual` receives the (masked)
   * dy, the gradient of a residual the forward added. Empty arrays stand for none. `mask`, the
   * forward's, stands in for reading y where the AVX-512 kernel runs (y must still be given).
   */
  batchNormBackward(
    x: Float32Array, dy: Float32Array, mean: Float32Array, variance: Float32Array, gamma: Float32Array,
    dx: Float32Array, dGamma: Float32Array, dBeta: Float32Array, shape: readonly [number, number], eps: number,
    y?: Float32Array, dResidual?: Float32Array, mask?: Uint16Array,
  ): void;
  /** dx = x > 0 ? dy : 0, elementwise; all three the same length. */
  reluGrad(dy: Float32Array, x: Float32Array, dx: Float32Array): void;
  /** out = a + b elementwise (equal lengths). Absent from addons built before it. */
  add?(a: Float32Array, b: Float32Array, out: Float32Array): void;
  /** [write, read] (0 or 1): whether the streaming kernels prefetch their output and input lines ahead (both on by default). For benchmarks. */
  setPrefetch?(flags: [number, number]): void;
  /** [on] (0, 1 or 2): whether training batch norm runs on batch_norm.cc's kernels for 16, 32 or 64 channels (1, the default: AVX-512, or AVX2 + FMA where the CPU lacks AVX-512), the generic loops (0), or the AVX2 kernels even on an AVX-512 CPU (2; throws on a CPU without AVX2 + FMA). For benchmarks and tests. Absent from addons built before it. */
  setFastBatchNorm?(flags: [number]): void;
  /**
   * y[i, j] = x[i, j]·scale[j] + shift[j] (+ residual[i, j]) over [M, C], then max(·, 0) when relu
   * is 1; scale or shift may be empty (none). One pass; y may be x.
   */
  affine(x: Float32Array, scale: Float32Array, shift: Float32Array, y: Float32Array, shape: readonly [number, number, number], residual?: Float32Array): void;
  /**
   * y[i, :] = t[i, :]·w + shift (+ residual[i, :]), then max(·, 0) when relu is 1; t [M, R], w [R, C],
   * shift [C], y and residual [M, C]: a factored layer's 1×1 conv and the eval-mode batch norm after
   * it (its scale folded into w) in one pass.
   */
  pointwiseAffine(t: Float32Array, w: Float32Array, shift: Float32Array, y: Float32Array, shape: readonly [number, number, number, number], residual?: Float32Array): void;
  /**
   * The spatial decomposition's 1×kw conv along the width with the eval-mode batch norm after it:
   * y[q, x, :] = Σ_j t[q, x·sw + j − pl, :]·w[j] + shift (+ residual[q, x, :]), then max(·, 0) when
   * relu is 1; t [Q, Win, R], w [kw, R, C], shift [C], y and residual [Q, Wout, C], columns outside
   * the row read as zero. shape [Q, Win, Wout, kw, sw, pl, R, C, relu].
   */
  rowConvAffine(
    t: Float32Array, w: Float32Array, shift: Float32Array, y: Float32Array,
    shape: readonly [number, number, number, number, number, number, number, number, number], residual?: Float32Array,
  ): void;
  /**
   * A whole spatially factored layer with the eval-mode batch norm after it: t = the kh×1 conv of x
   * [N,H,W,Cin] with k1 [kh,Cin,R] (stride sh, top padding pt), then y [N,OH,OW,C] = the 1×kw conv
   * of t with w2 [kw,R,C] (stride sw, left padding pl) + shift (+ residual), max(·, 0) when relu is
   * 1; t is never written to memory. shape [N, H, W, Cin, kh, sh, pt, OH, R, kw, sw, pl, OW, C, relu].
   */
  spatialAffine(
    x: Float32Array, k1: Float32Array, w2: Float32Array, shift: Float32Array, y: Float32Array,
    shape: readonly [number, number, number, number, number, number, number, number, number, number, number, number, number, number, number],
    residual?: Float32Array,
  ): void;
  /**
   * out = transpose(reshape(a·diag(s), dims), perm) for a [rows, r], s [r] (an SVD layer's filter
   * from V and s), and its gradient: da = dy permuted back times s, ds = Σ over a's rows of that
   * times a. dims: 1-6 axes whose product is a's length; perm a permutation of them. Absent from
   * addons built before them.
   */
  scalePermute?(a: Float32Array, s: Float32Array, out: Float32Array, dims: readonly number[], perm: readonly number[]): void;
  scalePermuteGrad?(dy: Float32Array, a: Float32Array, s: Float32Array, da: Float32Array, ds: Float32Array, dims: readonly number[], perm: readonly number[]): void;
  /**
   * Global average pooling, y [N, C] = the mean of x [N, P, C] over its P pixels, and its gradient
   * dx [N, P, C] = dy / P. shape [N, P, C]. Absent from addons built before them.
   */
  meanPool?(x: Float32Array, y: Float32Array, shape: readonly [number, number, number]): void;
  meanPoolGrad?(dy: Float32Array, dx: Float32Array, shape: readonly [number, number, number]): void;
  /**
   * Train-mode batch norm of u = t·p from the rank-space t [M, R] (p [R, C]): y = act(bn(u) (+ residual)),
   * u's batch mean and biased variance, and what the backward needs (t's mean [R] and covariance
   * [R, R], scale = gamma·invstd and invstd [C]). shape [M, R, C, relu, pT]: p is [R, C], or with
   * pT 1 its transpose [C, R] (a channel-factored layer's U as stored). mask, with relu: y > 0 as
   * bits, M·ceil(C/16) 16-bit words (bit l of word k: channel 16k + l), for rankBnBackward.
   */
  rankBnForward(
    t: Float32Array, p: Float32Array, gamma: Float32Array, beta: Float32Array, y: Float32Array, mean: Float32Array, variance: Float32Array,
    tmean: Float32Array, cov: Float32Array, scale: Float32Array, invstd: Float32Array, shape: readonly [number, number, number, number, number], eps: number, residual?: Float32Array,
    mask?: Uint16Array,
  ): void;
  /**
   * rankBnForward's gradient: dt, dp, dgamma, dbeta and (dres non-empty) the residual's; y empty when
   * the forward had no ReLU. shape [M, R, C, pT]: with pT 1, p and dp are [C, R]. mask: the
   * forward's bits of y > 0 (M·ceil(C/16) words), read instead of y where the one-pass path runs.
   */
  rankBnBackward(
    dy: Float32Array, y: Float32Array, t: Float32Array, p: Float32Array, tmean: Float32Array, cov: Float32Array, scale: Float32Array, invstd: Float32Array,
    dt: Float32Array, dp: Float32Array, dgamma: Float32Array, dbeta: Float32Array, dres: Float32Array, shape: readonly [number, number, number, number],
    mask?: Uint16Array,
  ): void;
  /**
   * The SVD regularizer of every layer and its gradient in one call (packages/native/src/regularizer.h):
   * `dims` holds [m, p, r] per layer, `factors` each layer's U [m, r], V [p, r], s [r] in turn, and
   * `grads` receives their λ-weighted gradients in the same layout. kind: 0 none, 1 L1, 2 Hoyer, 3
   * Hoyer-square. Returns [Σ orth, Σ sparsity] before the λs. Absent from addons built before it.
   */
  svdRegularizer?(factors: Float32Array, grads: Float32Array, dims: readonly number[], kind: readonly [number], lambdaO: number, lambdaS: number): [number, number];
  /** OpenMP threads oneDNN uses in this process (default 1: one worker per core). */
  setThreads(threads: readonly [number]): void;
  getThreads(): number;
  /** The linked oneDNN's version, e.g. "2.6.3". */
  version(): string;
  /**
   * The CPU as the kernels see it (CPUID): AVX-512F (our own kernels, the lanes network), AVX2 and
   * FMA (training batch norm's second set), and whether it is an AMD Zen 5 or later (wider small-OC
   * limits). Absent from addons built before it.
   */
  cpuFeatures?(): { avx512f: boolean; avx2: boolean; fma: boolean; zen5OrLater: boolean };
  /**
   * Which oneDNN implementation each cached convolution runs (e.g. "brg:avx512_core"), by shape key
   * ("svd:small_oc_avx512" for ours), and under "lanesNet pairs" how many conv pairs the last lanesNet
   * call ran row by row through a ring (setLanesPairs).
   */
  implementations(): Record<string, string>;
  /**
   * Whether the lanes network makes a 1×1 conv's output row by row into a small ring just before
   * the next conv reads it (where only that conv reads it), [1] (the default), or writes it whole,
   * [0]. For benchmarks and tests. Absent from addons built before it.
   */
  setLanesPairs?(on: readonly [number]): void;
  /**
   * 1 (the default): convolutions from a multiple of 16 input channels to at most 8 output channels
   * run their forward, and to at most 8–48 (by taps) their filter gradient, on our AVX-512 kernels (oneDNN
   * computes output channels 16 at a time); 0: always oneDNN. For benchmarks and tests.
   */
  setSmallOcKernels(on: readonly [number]): void;
  /**
   * A zeroed Float32Array of n floats on 2 MiB-aligned memory advised as transparent huge pages
   * (Linux; a hint the system may refuse), freed when collected: the native training step's large
   * buffers. Absent from addons built before it.
   */
  hugeFloat32?(n: readonly [number]): Float32Array;
  /**
   * A whole network's inference, 16 images at a time with every activation in the lanes layout
   * (packages/native/src/lanes_net.h): y [n, outFloats] from x [n, inFloats], header [n, input,
   * output, inFloats, outFloats] (input, output: buffers). `sizes` gives each buffer's floats per image; `steps` has 20 integers per step, a conv
   * `[0, in, out, shortcut + 1 (0: none), h, w, c, f, kh, kw, oh, ow, sh, sw, padTop, padLeft, relu,
   * filter, scale + 1, shift + 1 (0: none)]` (out = relu?(conv·scale + shift + shortcut), filter
   * HWIO) or a global average pool `[1, in, out, 0, hw, c, 0, …]`; filter, scale and shift index
   * `weights`. Absent where the CPU lacks AVX-512F, and from addons built before it.
   */
  lanesNet?(
    x: Float32Array, y: Float32Array, header: readonly [number, number, number, number, number], sizes: readonly number[], steps: readonly number[], weights: readonly Float32Array[],
  ): void;
}

export type NativeLoad =
  | { ok: true; addon: NativeAddon; version: string }
  | { ok: false; reason: string; fix: string };

const root = join(dirname(fileURLToPath(import.meta.url)), '..');
const ADDON = join(root, 'build', 'Release', 'svd_native.node');
const FIX_BUILD = 'on Debian/Ubuntu run `apt-get install -y libdnnl-dev g++ make python3` then `pnpm rebuild @svd-train/native`';

let cached: NativeLoad | undefined;

/**
 * Loads the addon once per process. `SVD_TRAIN_NATIVE=0` turns it off (CI uses that to prove the
 * fallback). Never throws.
 */
export function loadNative(): NativeLoad {
  if (cached) return cached;
  cached = load();
  return cached;
}

function load(): NativeLoad {
  if (process.env.SVD_TRAIN_NATIVE === '0') {
    return { ok: false, reason: 'disabled by SVD_TRAIN_NATIVE=0', fix: 'unset SVD_TRAIN_NATIVE' };
  }
  if (!existsSync(ADDON)) {
    const why = join(root, 'build', 'unavailable.txt');
    const reason = existsSync(why) ? `not built: ${readFileSync(why, 'utf8').trim()}` : 'not built';
    return { ok: false, reason, fix: FIX_BUILD };
  }
  try {
    const addon = createRequire(import.meta.url)(ADDON) as NativeAddon;
    return { ok: true, addon, version: addon.version() };
  } catch (e) {
    // Typically libdnnl.so missing at run time ("cannot open shared object file").
    const m = (e instanceof Error ? e.message : String(e)).split('\n')[0] ?? '';
    return { ok: false, reason: `failed to load: ${m.length > 200 ? `${m.slice(0, 200)}…` : m}`, fix: FIX_BUILD };
  }
}
