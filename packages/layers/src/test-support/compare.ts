/**
 * Relative-error comparison with labelled failure messages (llm.c `test_gpt2.c` style: say which
 * tensor, how far off, and where the worst element is).
 */
import * as tf from '@tensorflow/tfjs';
import type { RefTensor } from './reference.js';

export type Numeric = number | ArrayLike<number> | tf.Tensor | RefTensor;

function isRef(v: unknown): v is RefTensor {
  return typeof v === 'object' && v !== null && 'data' in v && 'shape' in v && !(v instanceof tf.Tensor);
}

/** Flattens any supported value into a Float64Array (reads tensors synchronously). */
export function toArray(v: Numeric): Float64Array {
  if (typeof v === 'number') return Float64Array.of(v);
  if (v instanceof tf.Tensor) return Float64Array.from(v.dataSync() as ArrayLike<number>);
  if (isRef(v)) return Float64Array.from(v.data);
  return Float64Array.from(v);
}

function shapeOf(v: Numeric): number[] | undefined {
  if (v instanceof tf.Tensor) return v.shape;
  if (isRef(v)) return v.shape;
  return undefined;
}

/** ‖a − b‖₂ / ‖b‖₂ (absolute ‖a − b‖₂ when b is all zeros). */
export function relErr(a: Numeric, b: Numeric): number {
  const x = toArray(a);
  const y = toArray(b);
  if (x.length !== y.length) throw new Error(`relErr: length ${x.length} vs ${y.length}`);
  let num = 0;
  let den = 0;
  for (let i = 0; i < x.length; i++) {
    const d = x[i] - y[i];
    num += d * d;
    den += y[i] * y[i];
  }
  return den === 0 ? Math.sqrt(num) : Math.sqrt(num / den);
}

/**
 * Throws unless relErr(actual, expected) ≤ tol. The message names the label, the relative error,
 * the largest absolute difference and its flat index with both values, so a failure in a 200-tensor
 * comparison says which tensor and where. Shapes are compared when both sides carry one.
 */
export function expectClose(label: string, actual: Numeric, expected: Numeric, tol: number): void {
  const sa = shapeOf(actual);
  const se = shapeOf(expected);
  if (sa && se && (sa.length !== se.length || sa.some((d, i) => d !== se[i]))) {
    throw new Error(`${label}: shape [${sa.join(',')}] != expected [${se.join(',')}]`);
  }
  const a = toArray(actual);
  const e = toArray(expected);
  if (a.length !== e.length) throw new Error(`${label}: ${a.length} values != expected ${e.length}`);
  let worst = -1;
  let maxAbs = 0;
  for (let i = 0; i < a.length; i++) {
    const d = Math.abs(a[i] - e[i]);
    if (!(d <= maxAbs)) {
      // NaN compares false, so a NaN difference always becomes the worst element.
      maxAbs = d;
      worst = i;
    }
  }
  const r = relErr(a, e);
  if (!(r <= tol)) {
    throw new Error(
      `${label}: rel err ${r.toExponential(3)} > tol ${tol.toExponential(1)}; ` +
        `max |diff| ${maxAbs.toExponential(3)} at index ${worst} (actual ${a[worst]}, expected ${e[worst]}), n=${a.length}`,
    );
  }
}
