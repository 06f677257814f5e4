/**
 * Central-difference gradient check (PyTorch `gradcheck`; tfjs has none).
 *
 * We check the vector-Jacobian product for a fixed random cotangent r: L(x) = Σ f(x)·r, so one
 * numeric derivative per input element suffices whatever the output shape. tfjs has no float64,
 * so the numeric side is float32 forward passes; we reduce L in float64 in JS and divide by the
 * step actually taken (fround(x+eps) − fround(x−eps)), which keeps the noise at the level of f's
 * own float32 round-off. For big inputs a deterministic sample of elements is checked.
 */
import * as tf from '@tensorflow/tfjs';
import { TOL } from './tolerances.js';
import { relErr } from './compare.js';

export interface GradCheckOptions {
  /** Finite-difference step (default TOL.gradcheckEps). */
  eps?: number;
  /** Max ‖analytic − numeric‖ / ‖numeric‖ over the checked elements (default TOL.gradcheckRel). */
  tol?: number;
  /** Elements checked per input at most (default 48), chosen deterministically. */
  maxPerInput?: number;
  /** Seed of the cotangent r and of the element sample. */
  seed?: number;
  /** Prefix for failure messages. */
  label?: string;
}

export interface GradCheckResult {
  /** Relative error per input. */
  relErrs: number[];
}

function lcg(seed: number): () => number {
  let s = (seed >>> 0) || 1;
  return () => {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    return s / 4294967296;
  };
}

/**
 * Checks tf's gradient of `f` against central differences, for every input.
 * `f` maps the inputs to one tensor of any shape; it must be differentiable near `inputs`.
 * @throws Error naming the input index and the relative error when a check fails.
 */
export function gradCheck(
  f: (...xs: tf.Tensor[]) => tf.Tensor,
  inputs: tf.Tensor[],
  opts: GradCheckOptions = {},
): GradCheckResult {
  const eps = opts.eps ?? TOL.gradcheckEps;
  const tol = opts.tol ?? TOL.gradcheckRel;
  const maxPer = opts.maxPerInput ?? 48;
  const rand = lcg(opts.seed ?? 12345);
  const label = opts.label ?? 'gradCheck';

  const outShape = tf.tidy(() => f(...inputs).shape);
  const r = new Float64Array(outShape.reduce((a, b) => a * b, 1)).map(() => 2 * rand() - 1);
  const rT = tf.tensor(Float32Array.from(r), outShape);
  const lossValue = (xs: tf.Tensor[]): number => {
    const y = tf.tidy(() => f(...xs));
    const d = y.dataSync();
    y.dispose();
    let s = 0;
    for (let i = 0; i < d.length; i++) s += d[i] * r[i];
    return s;
  };
  const analytic = tf.tidy(() => tf.grads((...xs: tf.Tensor[]) => tf.sum(tf.mul(f(...xs), rT)))(inputs));
  const relErrs: number[] = [];
  try {
    inputs.forEach((x, k) => {
      const base = Float32Array.from(x.dataSync() as Float32Array);
      const n = base.length;
      const idx: number[] = [];
      if (n <= maxPer) for (let i = 0; i < n; i++) idx.push(i);
      else for (let i = 0; i < maxPer; i++) idx.push(Math.floor(rand() * n));
      const num: number[] = [];
      const ana = analytic[k].dataSync();
      const anaSel: number[] = [];
      for (const i of idx) {
        const v = base[i];
        const up = Math.fround(v + eps);
        const dn = Math.fround(v - eps);
        const at = (val: number): number => {
          const p = base.slice();
          p[i] = val;
          const xp = tf.tensor(p, x.shape, x.dtype);
          const xs = inputs.map((t, j) => (j === k ? xp : t));
          const l = lossValue(xs);
          xp.dispose();
          return l;
        };
        num.push((at(up) - at(dn)) / (up - dn));
        anaSel.push(ana[i]);
      }
      const e = relErr(anaSel, num);
      relErrs.push(e);
      if (!(e <= tol)) {
        let worst = 0;
        for (let j = 0; j < num.length; j++) {
          if (Math.abs(anaSel[j] - num[j]) > Math.abs(anaSel[worst] - num[worst])) worst = j;
        }
        throw new Error(
          `${label}: input ${k} (shape [${x.shape.join(',')}]) gradient rel err ${e.toExponential(3)} > ${tol}; ` +
            `worst element ${idx[worst]}: analytic ${anaSel[worst]} vs numeric ${num[worst]}`,
        );
      }
    });
  } finally {
    tf.dispose(analytic);
    rT.dispose();
  }
  return { relErrs };
}
