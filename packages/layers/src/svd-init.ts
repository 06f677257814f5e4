/**
 * SVD initialisation and import for the SVD layers (framework-agnostic: plain Float32Arrays).
 *
 * A layer stores U (m × r), s (r), V (p × r) with weight matrix M = U · diag(s) · Vᵀ (m × p). How M
 * maps to the PyTorch weight W depends on the decomposition (reference README "Matrix conventions"):
 *
 * | kind              | m      | p        | element of W (PyTorch layout)               |
 * |-------------------|--------|----------|---------------------------------------------|
 * | conv `channel`    | n      | c·kh·kw  | W[ni,ci,i,j] = M[ni, (ci*kh + i)*kw + j]     |
 * | conv `spatial`    | n·kw   | c·kh     | W[ni,ci,i,j] = M[ni*kw + j, ci*kh + i]       |
 * | dense             | out    | in       | W[o,k] = M[o,k]                              |
 *
 * We initialise from an exact SVD (ml-matrix, float64) of a He-normal full weight, so U and V are
 * orthonormal at step 0 and the orthogonality penalty starts at float32 round-off; the weight the
 * factors reconstruct has exactly the He-normal statistics a plain conv would have.
 */
import { Matrix, SingularValueDecomposition } from 'ml-matrix';
import { mulberry32, SvdTrainError, type Decomposition } from '@svd-train/core';

/** How a weight is split into a matrix: a conv's `Decomposition` (core), or `'dense'`. */
export type MatrixKind = Decomposition | 'dense';

/** The factors of one SVD layer, row-major. Identical in our (tfjs) layers and the PyTorch reference. */
export interface SvdFactors {
  /** m × r, row-major. */
  U: Float32Array;
  /** r singular values (descending at init). */
  s: Float32Array;
  /** p × r, row-major. */
  V: Float32Array;
  m: number;
  p: number;
  r: number;
}

/**
 * The weight geometry of a layer: conv weights are PyTorch (n, c, kh, kw); a dense weight is
 * (out, in), given here as n = out, c = in, kh = kw = 1.
 */
export interface WeightGeometry {
  n: number;
  c: number;
  kh: number;
  kw: number;
}

/** Matrix dimensions (m, p) of a layer's M for a decomposition. */
export function matrixDims(kind: MatrixKind, g: WeightGeometry): { m: number; p: number } {
  if (kind === 'spatial') return { m: g.n * g.kw, p: g.c * g.kh };
  return { m: g.n, p: g.c * g.kh * g.kw };
}

/** Full rank min(m, p) of a layer's matrix. */
export function fullRank(kind: MatrixKind, g: WeightGeometry): number {
  const { m, p } = matrixDims(kind, g);
  return Math.min(m, p);
}

/** Standard normal draws (Box–Muller over core's `mulberry32`: deterministic init across processes). */
export function seededNormal(seed: number): () => number {
  const u = mulberry32(seed);
  let spare: number | undefined;
  return () => {
    if (spare !== undefined) {
      const v = spare;
      spare = undefined;
      return v;
    }
    let a = u();
    while (a <= 1e-300) a = u();
    const b = u();
    const rad = Math.sqrt(-2 * Math.log(a));
    spare = rad * Math.sin(2 * Math.PI * b);
    return rad * Math.cos(2 * Math.PI * b);
  };
}

/**
 * He-normal full weight in PyTorch layout (n, c, kh, kw) (dense: (out, in)), std √(2 / fan_in),
 * fan_in = c·kh·kw, drawn from `seed`.
 */
export function heNormalWeight(g: WeightGeometry, seed: number): Float32Array {
  const fanIn = g.c * g.kh * g.kw;
  const std = Math.sqrt(2 / fanIn);
  const rand = seededNormal(seed);
  const w = new Float32Array(g.n * fanIn);
  for (let i = 0; i < w.length; i++) w[i] = std * rand();
  return w;
}

/**
 * Reshapes a PyTorch-layout weight (n, c, kh, kw) into the matrix M (m × p, row-major float64) of
 * `kind`. For `channel`/`dense` this is a plain reshape; `spatial` permutes to (n, kw, c, kh).
 */
export function matrixFromPytorchWeight(w: ArrayLike<number>, kind: MatrixKind, g: WeightGeometry): Float64Array {
  const { m, p } = matrixDims(kind, g);
  checkLength(w.length, m * p, 'weight');
  const out = new Float64Array(m * p);
  if (kind !== 'spatial') {
    for (let i = 0; i < out.length; i++) out[i] = w[i]!;
    return out;
  }
  const { n, c, kh, kw } = g;
  for (let ni = 0; ni < n; ni++)
    for (let ci = 0; ci < c; ci++)
      for (let i = 0; i < kh; i++)
        for (let j = 0; j < kw; j++) out[(ni * kw + j) * p + ci * kh + i] = w[((ni * c + ci) * kh + i) * kw + j]!;
  return out;
}

/** Inverse of `matrixFromPytorchWeight`: M (m × p, row-major) to the PyTorch weight (n, c, kh, kw). */
export function pytorchWeightFromMatrix(mat: ArrayLike<number>, kind: MatrixKind, g: WeightGeometry): Float32Array {
  const { m, p } = matrixDims(kind, g);
  checkLength(mat.length, m * p, 'matrix');
  const out = new Float32Array(m * p);
  if (kind !== 'spatial') {
    for (let i = 0; i < out.length; i++) out[i] = mat[i]!;
    return out;
  }
  const { n, c, kh, kw } = g;
  for (let ni = 0; ni < n; ni++)
    for (let ci = 0; ci < c; ci++)
      for (let i = 0; i < kh; i++)
        for (let j = 0; j < kw; j++) out[((ni * c + ci) * kh + i) * kw + j] = mat[(ni * kw + j) * p + ci * kh + i]!;
  return out;
}

/** Row-major M = U · diag(s) · Vᵀ of a set of factors (float64 accumulation). */
export function matrixFromFactors(f: SvdFactors): Float64Array {
  const { m, p, r, U, s, V } = f;
  const out = new Float64Array(m * p);
  for (let a = 0; a < m; a++)
    for (let b = 0; b < p; b++) {
      let acc = 0;
      for (let k = 0; k < r; k++) acc += U[a * r + k] * s[k] * V[b * r + k];
      out[a * p + b] = acc;
    }
  return out;
}

/**
 * Exact SVD of M (m × p, row-major), truncated to the `rank` largest singular values.
 * @returns float32 factors, U (m × rank) and V (p × rank) orthonormal columns, s descending.
 */
export function svdOfMatrix(mat: ArrayLike<number>, m: number, p: number, rank = Math.min(m, p)): SvdFactors {
  if (!Number.isInteger(rank) || rank < 1 || rank > Math.min(m, p)) {
    throw new SvdTrainError(
      'CONFIG_INVALID',
      `rank ${rank} is out of range for a ${m}×${p} matrix; expected an integer in [1, ${Math.min(m, p)}]`,
    );
  }
  const M = new Matrix(m, p);
  for (let a = 0; a < m; a++) for (let b = 0; b < p; b++) M.set(a, b, mat[a * p + b]);
  const svd = new SingularValueDecomposition(M, {
    computeLeftSingularVectors: true,
    computeRightSingularVectors: true,
    autoTranspose: true,
  });
  const Uf = svd.leftSingularVectors;
  const Vf = svd.rightSingularVectors;
  const d = svd.diagonal;
  // ml-matrix returns them sorted descending already; sort defensively so truncation keeps the largest.
  const order = d.map((_, i) => i).sort((x, y) => d[y] - d[x]);
  const r = rank;
  const U = new Float32Array(m * r);
  const V = new Float32Array(p * r);
  const s = new Float32Array(r);
  for (let k = 0; k < r; k++) {
    const src = order[k];
    s[k] = d[src]!;
    for (let a = 0; a < m; a++) U[a * r + k] = Uf.get(a, src);
    for (let b = 0; b < p; b++) V[b * r + k] = Vf.get(b, src);
  }
  return { U, s, V, m, p, r };
}

/**
 * Seeded SVD initialisation: He-normal weight (std √(2/fan_in), fan_in = c·kh·kw), reshaped to M per
 * `kind`, exact SVD, truncated to `rank` (default full rank).
 */
export function svdInit(kind: MatrixKind, g: WeightGeometry, seed: number, rank?: number): SvdFactors {
  const w = heNormalWeight(g, seed);
  const { m, p } = matrixDims(kind, g);
  return svdOfMatrix(matrixFromPytorchWeight(w, kind, g), m, p, rank ?? Math.min(m, p));
}

/** The part of a tf.Tensor that `svdFromWeight` reads (keeps this module free of a tfjs import). */
export interface TensorLike {
  shape: number[];
  dataSync(): ArrayLike<number>;
}

/** Options of `svdFromWeight`. */
export interface SvdFromWeightOptions {
  /**
   * `'pytorch'`: conv (n, c, kh, kw), dense (out, in). `'tfjs'`: conv filter (kh, kw, c, n),
   * dense kernel (in, out).
   */
  layout: 'pytorch' | 'tfjs';
  /** `'channel' | 'spatial'` for 4-D conv weights; ignored (and `'dense'` assumed) for 2-D weights. */
  decomposition?: MatrixKind;
  /** Rank to keep (default full); the best rank-r approximation in Frobenius norm (Eckart–Young). */
  rank?: number;
}

/**
 * Imports a pretrained full-rank weight: reshapes it to M per the decomposition and returns its
 * (truncated) SVD factors, ready for `SVDConv2D.setFactors` / `SVDDense.setFactors`.
 * @param weight flat values with the given `shape` (4-D conv or 2-D dense, in `opts.layout`).
 */
export function svdFromWeight(weight: ArrayLike<number>, shape: readonly number[], opts: SvdFromWeightOptions): SvdFactors;
/** Same, reading values and shape from a tensor (e.g. a tfjs Conv2D kernel with `layout: 'tfjs'`). */
export function svdFromWeight(weight: TensorLike, opts: SvdFromWeightOptions): SvdFactors;
export function svdFromWeight(
  w: ArrayLike<number> | TensorLike,
  shapeOrOpts: readonly number[] | SvdFromWeightOptions,
  maybeOpts?: SvdFromWeightOptions,
): SvdFactors {
  const isTensor = !Array.isArray(shapeOrOpts);
  const weight = isTensor ? (w as TensorLike).dataSync() : (w as ArrayLike<number>);
  const shape = isTensor ? (w as TensorLike).shape : (shapeOrOpts as readonly number[]);
  const opts = isTensor ? (shapeOrOpts as SvdFromWeightOptions) : maybeOpts!;
  let g: WeightGeometry;
  let pt: ArrayLike<number> = weight;
  let kind: MatrixKind;
  checkLength(weight.length, shape.reduce((a, b) => a * b, 1), 'weight');
  if (shape.length === 2) {
    kind = 'dense';
    if (opts.layout === 'pytorch') g = { n: shape[0], c: shape[1], kh: 1, kw: 1 };
    else {
      // tfjs dense kernel (in, out) is Wᵀ.
      const [inF, outF] = [shape[0], shape[1]];
      g = { n: outF, c: inF, kh: 1, kw: 1 };
      const t = new Float32Array(weight.length);
      for (let k = 0; k < inF; k++) for (let o = 0; o < outF; o++) t[o * inF + k] = weight[k * outF + o]!;
      pt = t;
    }
  } else if (shape.length === 4) {
    kind = opts.decomposition ?? 'channel';
    if (kind === 'dense') kind = 'channel';
    if (opts.layout === 'pytorch') g = { n: shape[0], c: shape[1], kh: shape[2], kw: shape[3] };
    else {
      // tfjs filter F[i, j, ci, ni] = W[ni, ci, i, j].
      const [kh, kw, c, n] = [shape[0], shape[1], shape[2], shape[3]];
      g = { n, c, kh, kw };
      const t = new Float32Array(weight.length);
      for (let i = 0; i < kh; i++)
        for (let j = 0; j < kw; j++)
          for (let ci = 0; ci < c; ci++)
            for (let ni = 0; ni < n; ni++) t[((ni * c + ci) * kh + i) * kw + j] = weight[((i * kw + j) * c + ci) * n + ni]!;
      pt = t;
    }
  } else {
    throw new SvdTrainError(
      'SHAPE_MISMATCH',
      `svdFromWeight: weight shape [${shape.join(',')}] has rank ${shape.length}; expected a 4-D conv or 2-D dense weight`,
    );
  }
  const { m, p } = matrixDims(kind, g);
  return svdOfMatrix(matrixFromPytorchWeight(pt, kind, g), m, p, opts.rank ?? Math.min(m, p));
}

function checkLength(actual: number, expected: number, what: string): void {
  if (actual !== expected) {
    throw new SvdTrainError('SHAPE_MISMATCH', `${what} has ${actual} values; expected ${expected} for the given shape`);
  }
}
