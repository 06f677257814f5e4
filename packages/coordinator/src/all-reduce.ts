/**
 * Sample-weighted averaging of the workers' gradients and BN running stats.
 *
 * Each worker sends the mean gradient over its n_w samples; the global-batch mean gradient is
 * sum_w n_w * g_w / sum_w n_w. The same weighting applied to the BN running stats equals
 * `running = 0.9 * running + 0.1 * avg_w(batch_stat_w)` because the update is linear (see
 * CONTRACTS.md, "BN statistics across workers"). Sums go into Float32Arrays allocated once per
 * manifest, so a round allocates nothing proportional to the model.
 */
import type { TensorSpec, WireTensor } from '@svd-train/core';
import { shapeSize } from '@svd-train/core';

/** Accumulates weighted sums for one tensor list (gradients or buffers) in manifest order. */
export class WeightedSum {
  readonly specs: readonly TensorSpec[];
  /** Running sums, then (after `finish`) the averages; one array per spec, same order. */
  readonly out: Float32Array[];
  private weight = 0;

  constructor(specs: readonly TensorSpec[]) {
    this.specs = specs;
    this.out = specs.map((s) => new Float32Array(shapeSize(s.shape)));
  }

  reset(): void {
    for (const a of this.out) a.fill(0);
    this.weight = 0;
  }

  /** Adds `w * tensors[i]` to the sums; tensors must already be validated against the manifest. */
  add(tensors: readonly WireTensor[], w: number): void {
    for (let i = 0; i < this.out.length; i++) {
      const acc = this.out[i];
      const d = tensors[i].data;
      for (let j = 0; j < acc.length; j++) acc[j] += w * d[j];
    }
    this.weight += w;
  }

  /** Divides the sums by the total weight; returns the averages (the `out` arrays). */
  finish(): Float32Array[] {
    const inv = this.weight > 0 ? 1 / this.weight : 0;
    for (const a of this.out) for (let j = 0; j < a.length; j++) a[j] *= inv;
    return this.out;
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

/**
 * Reduces a round's contributions in the given order (callers pass them sorted by slice offset,
 * so the float32 summation order, and hence the result, does not depend on arrival order).
 */
export class AllReduce {
  readonly grads: WeightedSum;
  readonly buffers: WeightedSum;

  constructor(params: readonly TensorSpec[], buffers: readonly TensorSpec[]) {
    this.grads = new WeightedSum(params);
    this.buffers = new WeightedSum(buffers);
  }

  reduce(contribs: readonly Contribution[]): { grads: Float32Array[]; buffers: Float32Array[]; n: number } {
    this.grads.reset();
    this.buffers.reset();
    let n = 0;
    for (const c of contribs) {
      if (c.n === 0) continue;
      this.grads.add(c.grads, c.n);
      this.buffers.add(c.buffers, c.n);
      n += c.n;
    }
    return { grads: this.grads.finish(), buffers: this.buffers.finish(), n };
  }
}
