/**
 * Which samples each step trains on, and which worker computes which of them.
 *
 * The coordinator owns one `EpochSampler`: it walks a per-epoch permutation of the dataset in
 * global batches of `batch` samples. Every step it splits the global batch into contiguous
 * slices proportional to the live workers' weights (`splitBatch`), so re-sharding after a worker
 * joins or leaves simply happens at the next step: the sampler's position is global, so nothing
 * is dropped or repeated. When a worker fails inside a step, `reassign` splits its slice among
 * the survivors, so the step still covers exactly the same samples. The permutation is a pure
 * function of (seed, epoch), so `state()` (epoch, position, step) is all a checkpoint needs.
 */
import { SvdTrainError } from './errors.js';
import { Rng } from './rng.js';

/** Key tag that keeps the shuffle stream apart from the per-sample augmentation streams. */
const PERMUTATION_TAG = 0x5045524d; // 'PERM'

/** A uniformly random permutation of 0..n-1 for (seed, epoch): Fisher–Yates with rng.ts. */
export function epochPermutation(seed: number, epoch: number, n: number): Int32Array {
  const p = new Int32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  const r = Rng.derive(seed, epoch, PERMUTATION_TAG, n);
  for (let i = n - 1; i > 0; i--) {
    const j = r.nextInt(i + 1);
    const t = p[i];
    p[i] = p[j];
    p[j] = t;
  }
  return p;
}

/**
 * Slice sizes for `total` items proportional to `weights` (largest-remainder method; ties go to
 * the earlier weight). Sizes sum to `total` and each is within 1 of its exact share.
 */
export function proportionalSizes(total: number, weights: readonly number[]): number[] {
  if (weights.length === 0) {
    throw new SvdTrainError('SHAPE_MISMATCH', `splitBatch: got 0 weights for ${total} samples; expected at least one worker`);
  }
  let sum = 0;
  for (const w of weights) {
    if (!(w >= 0 && Number.isFinite(w))) {
      throw new SvdTrainError('NON_FINITE', `splitBatch: weight ${w} is not a finite non-negative number; weights are worker throughputs or 1 each`);
    }
    sum += w;
  }
  if (!(sum > 0)) throw new SvdTrainError('SHAPE_MISMATCH', `splitBatch: weights [${weights.join(', ')}] sum to 0; at least one must be positive`);
  const sizes = weights.map((w) => Math.floor((total * w) / sum));
  let left = total - sizes.reduce((a, b) => a + b, 0);
  const order = weights
    .map((w, i) => ({ i, rem: (total * w) / sum - sizes[i] }))
    .sort((a, b) => b.rem - a.rem || a.i - b.i);
  for (let k = 0; left > 0; k = (k + 1) % order.length) {
    if (weights[order[k].i] > 0) {
      sizes[order[k].i]++;
      left--;
    }
  }
  return sizes;
}

/**
 * Splits `indices` into contiguous slices proportional to `weights` (default: one equal slice per
 * weight). Every sample lands in exactly one slice; a zero weight gets an empty slice.
 * @returns views into `indices` when it is an Int32Array, else copies.
 */
export function splitBatch(indices: ArrayLike<number>, weights: readonly number[]): Int32Array[] {
  const arr = indices instanceof Int32Array ? indices : Int32Array.from(indices);
  const sizes = proportionalSizes(arr.length, weights);
  const out: Int32Array[] = [];
  let off = 0;
  for (const s of sizes) {
    out.push(arr.subarray(off, off + s));
    off += s;
  }
  return out;
}

/**
 * Re-assigns a failed worker's slice of the current step to the surviving workers, contiguously
 * and in proportion to their weights, so the step still covers every sample exactly once.
 */
export function reassign(failedSlice: ArrayLike<number>, survivors: readonly number[]): Int32Array[] {
  return splitBatch(failedSlice, survivors);
}

/** Everything a checkpoint needs to resume the sample order exactly. */
export interface SamplerState {
  /** Dataset size the permutation covers. */
  size: number;
  batch: number;
  seed: number;
  dropLast: boolean;
  /** Current epoch (0-based). */
  epoch: number;
  /** Samples of this epoch already handed out. */
  position: number;
  /** Global steps handed out so far (across epochs). */
  step: number;
}

export interface EpochSamplerOptions {
  /** Number of samples in the (possibly limited) training split. */
  size: number;
  /** Global batch size. */
  batch: number;
  seed: number;
  /** Drop the last partial batch of each epoch (default false: keep it). */
  dropLast?: boolean;
}

/** One global step's samples. */
export interface SampledBatch {
  epoch: number;
  /** Global step number of this batch (0-based). */
  step: number;
  /** Step within the epoch (0-based). */
  stepInEpoch: number;
  /** Dataset record indices, in permutation order. */
  indices: Int32Array;
}

/**
 * Steps in an epoch of `size` samples at `batch` per step: the last partial batch counts unless
 * `dropLast`. The coordinator's sampler and every worker derive the step count from this one rule.
 */
export function stepsPerEpoch(size: number, batch: number, dropLast = false): number {
  return dropLast ? Math.floor(size / batch) : Math.ceil(size / batch);
}

/** Walks epochs of shuffled global batches; see the module header. */
export class EpochSampler {
  readonly size: number;
  readonly batch: number;
  readonly seed: number;
  readonly dropLast: boolean;
  private epoch = 0;
  private position = 0;
  private step = 0;
  private perm: Int32Array | null = null;
  private permEpoch = -1;

  constructor(opts: EpochSamplerOptions) {
    if (!(Number.isInteger(opts.size) && opts.size > 0)) throw new SvdTrainError('CONFIG_INVALID', `EpochSampler: dataset size ${opts.size} must be a positive integer`);
    if (!(Number.isInteger(opts.batch) && opts.batch > 0)) throw new SvdTrainError('CONFIG_INVALID', `EpochSampler: batch ${opts.batch} must be a positive integer`);
    const dropLast = opts.dropLast ?? false;
    if (dropLast && opts.batch > opts.size) {
      throw new SvdTrainError('CONFIG_INVALID', `EpochSampler: batch ${opts.batch} > dataset size ${opts.size} with dropLast leaves no step per epoch; lower --batch or keep the last batch`);
    }
    this.size = opts.size;
    this.batch = opts.batch;
    this.seed = opts.seed;
    this.dropLast = dropLast;
  }

  /** Steps per epoch (the last partial batch counts unless dropLast). */
  get stepsPerEpoch(): number {
    return stepsPerEpoch(this.size, this.batch, this.dropLast);
  }

  /** Samples each epoch actually uses. */
  private get epochLength(): number {
    return this.dropLast ? this.stepsPerEpoch * this.batch : this.size;
  }

  /** Whether the last batch handed out ended an epoch (its every sample handed out, not yet rolled over). */
  get atEpochEnd(): boolean {
    return this.step > 0 && this.position >= this.epochLength;
  }

  /** The epoch the next batch belongs to. */
  get currentEpoch(): number {
    return this.position >= this.epochLength ? this.epoch + 1 : this.epoch;
  }

  private permutation(epoch: number): Int32Array {
    if (this.permEpoch !== epoch || this.perm === null) {
      this.perm = epochPermutation(this.seed, epoch, this.size);
      this.permEpoch = epoch;
    }
    return this.perm;
  }

  /** The next global batch; rolls over to the next epoch when this one is exhausted. */
  nextBatch(): SampledBatch {
    if (this.position >= this.epochLength) {
      this.epoch++;
      this.position = 0;
    }
    const perm = this.permutation(this.epoch);
    const end = Math.min(this.position + this.batch, this.epochLength);
    const out: SampledBatch = {
      epoch: this.epoch,
      step: this.step,
      stepInEpoch: Math.floor(this.position / this.batch),
      indices: perm.slice(this.position, end),
    };
    this.position = end;
    this.step++;
    return out;
  }

  /** The next global batch split among the current workers' weights (re-shards each step). */
  nextShards(weights: readonly number[]): SampledBatch & { shards: Int32Array[] } {
    const b = this.nextBatch();
    return { ...b, shards: splitBatch(b.indices, weights) };
  }

  state(): SamplerState {
    return { size: this.size, batch: this.batch, seed: this.seed, dropLast: this.dropLast, epoch: this.epoch, position: this.position, step: this.step };
  }

  static fromState(s: SamplerState): EpochSampler {
    const sm = new EpochSampler({ size: s.size, batch: s.batch, seed: s.seed, dropLast: s.dropLast });
    const len = sm.epochLength;
    if (!(Number.isInteger(s.epoch) && s.epoch >= 0 && Number.isInteger(s.position) && s.position >= 0 && s.position <= len && Number.isInteger(s.step) && s.step >= 0)) {
      throw new SvdTrainError('CHECKPOINT_CORRUPT', `EpochSampler.fromState: epoch ${s.epoch}, position ${s.position}, step ${s.step} are not valid for an epoch of ${len} samples; the checkpoint's sampler state is damaged`);
    }
    sm.epoch = s.epoch;
    sm.position = s.position;
    sm.step = s.step;
    return sm;
  }
}
