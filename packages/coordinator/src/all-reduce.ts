/**
 * Sample-weighted averaging of the workers' gradients and BN running stats.
 *
 * Each worker sends the mean gradient over its n_w samples; the global-batch mean gradient is
 * sum_w n_w * g_w / sum_w n_w. The same weighting applied to the BN running stats equals
 * `running = 0.9 * running + 0.1 * avg_w(batch_stat_w)` because the update is linear (see
 * CONTRACTS.md, "BN statistics across workers").
 *
 * Sums are kept in float64: a float32 accumulator overflows to Infinity as soon as n_w·g_w passes
 * 3.4e38, so one finite but huge contribution (an authenticated worker sent 3e38) turned every
 * parameter non-finite. In float64 the sum of any number of finite float32 values times a sample
 * count stays finite, and the average is rounded to float32 once. `finish` reports the first
 * element whose average still is not finite in float32, so the caller can refuse the step. Scratch
 * arrays are allocated once per manifest, so a round allocates nothing proportional to the model.
 */
import type { TensorSpec, WireTensor } from '@svd-train/core';
import { shapeSize } from '@svd-train/core';

/** Where an average is not finite (as float32): tensor name, flat index and value. */
export interface NonFinite {
  name: string;
  index: number;
  value: number;
}

/** Accumulates weighted sums for one tensor list (gradients or buffers) in manifest order. */
export class WeightedSum {
  readonly specs: readonly TensorSpec[];
  /** The averages after `finish`; one float32 array per spec, same order. */
  readonly out: Float32Array[];
  private readonly acc: Float64Array[];
  private weight = 0;

  constructor(specs: readonly TensorSpec[]) {
    this.specs = specs;
    this.out = specs.map((s) => new Float32Array(shapeSize(s.shape)));
    this.acc = specs.map((s) => new Float64Array(shapeSize(s.shape)));
  }

  reset(): void {
    for (const a of this.acc) a.fill(0);
    this.weight = 0;
  }

  /** Adds `w * tensors[i]` to the sums; tensors must already be validated against the manifest. */
  add(tensors: readonly WireTensor[], w: number): void {
    for (let i = 0; i < this.acc.length; i++) {
      const acc = this.acc[i];
      const d = tensors[i].data;
      for (let j = 0; j < acc.length; j++) acc[j] += w * d[j];
    }
    this.weight += w;
  }

  /**
   * Divides the sums by the total weight into the float32 `out` arrays.
   * @returns the first element whose float32 average is NaN or ±Infinity, else null.
   */
  finish(): NonFinite | null {
    const inv = this.weight > 0 ? 1 / this.weight : 0;
    let bad: NonFinite | null = null;
    for (let i = 0; i < this.acc.length; i++) {
      const a = this.acc[i];
      const o = this.out[i];
      for (let j = 0; j < a.length; j++) o[j] = a[j] * inv;
      if (bad === null) {
        for (let j = 0; j < o.length; j++) {
          // x - x is NaN for NaN and ±Infinity, 0 otherwise.
          if (o[j] - o[j] !== 0) {
            bad = { name: this.specs[i].name, index: j, value: o[j] };
            break;
          }
        }
      }
    }
    return bad;
  }

  get totalWeight(): number {
    return this.weight;
  }
}

/** One worker's contribution to a round, with the weight (its sample count). */
export interface Contribution {
  n: number;
  grads: readonly WireTensor[];
  buffers: readonly WireTensor[];
}

/** L2 norm (in float64) of a tensor list: the size of one worker's gradient, for fault attribution. */
export function l2Norm(tensors: readonly WireTensor[]): number {
  let s = 0;
  for (const t of tensors) {
    const d = t.data;
    for (let j = 0; j < d.length; j++) s += d[j] * d[j];
  }
  return Math.sqrt(s);
}

/**
 * Reduces a round's contributions in the given order (callers pass them sorted by slice offset,
 * so the summation order, and hence the result, does not depend on arrival order or on which
 * worker computed which slice).
 */
export class AllReduce {
  readonly grads: WeightedSum;
  readonly buffers: WeightedSum;

  constructor(params: readonly TensorSpec[], buffers: readonly TensorSpec[]) {
    this.grads = new WeightedSum(params);
    this.buffers = new WeightedSum(buffers);
  }

  /** `nonFinite` names the first average that is not finite in float32 (the step must not be applied). */
  reduce(contribs: readonly Contribution[]): { grads: Float32Array[]; buffers: Float32Array[]; n: number; nonFinite: NonFinite | null } {
    this.grads.reset();
    this.buffers.reset();
    let n = 0;
    for (const c of contribs) {
      if (c.n === 0) continue;
      this.grads.add(c.grads, c.n);
      this.buffers.add(c.buffers, c.n);
      n += c.n;
    }
    const g = this.grads.finish();
    const b = this.buffers.finish();
    return { grads: this.grads.out, buffers: this.buffers.out, n, nonFinite: g ?? b };
  }
}
