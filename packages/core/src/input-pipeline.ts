/**
 * Turns CIFAR-10 records (uint8, CHW planes per record) into normalized NHWC float batches.
 *
 * Runs on every worker for its slice of each step, so it is written as tight loops over
 * precomputed byte→float lookup tables (one per channel) and allocates nothing when given `out`.
 *
 * Augmentation matches torchvision `RandomCrop(32, padding=4)` + `RandomHorizontalFlip()` +
 * `Normalize(CIFAR_MEAN, CIFAR_STD)`: the padding is zero in *pixel* space, so a padded pixel
 * normalizes to −mean/std. Each sample's crop offset and flip are a pure function of
 * (seed, epoch, sample index) via `Rng.derive`, so any worker reproduces any sample no matter
 * which batch or slice it lands in. Optional Cutout (DeVries & Taylor 2017) then sets a square of
 * `cutout` pixels, centred anywhere and clipped at the border, to 0 (the mean after normalization);
 * its centre is drawn after the flip from the same stream, so crops and flips stay as without it.
 */
import type { Cifar10Split } from './cifar10.js';
import { SvdTrainError } from './errors.js';
import { Rng } from './rng.js';

/** Per-channel (R, G, B) mean of the CIFAR-10 training set in [0, 1] pixel units. */
export const CIFAR_MEAN = Object.freeze([0.4914, 0.4822, 0.4465] as const);
/** Per-channel (R, G, B) standard deviation of the CIFAR-10 training set. */
export const CIFAR_STD = Object.freeze([0.247, 0.2435, 0.2616] as const);

const SIZE = 32;
const PLANE = SIZE * SIZE;
const RECORD = 3 * PLANE;
/** Pixels of zero padding on each side before the random crop. */
export const CROP_PADDING = 4;

/** [3][256] table: LUT[c*256 + b] = (b/255 − mean_c)/std_c, rounded to float32 once. */
const LUT = (() => {
  const t = new Float32Array(3 * 256);
  for (let c = 0; c < 3; c++) {
    for (let b = 0; b < 256; b++) t[c * 256 + b] = (b / 255 - CIFAR_MEAN[c]) / CIFAR_STD[c];
  }
  return t;
})();

/** The normalized value of a zero (padding) pixel per channel: −mean/std. */
export const CIFAR_PAD_VALUE = Object.freeze([LUT[0], LUT[256], LUT[512]] as const);

/** Minimal view of a split that the pipeline needs (structurally a `Cifar10Split`). */
export type SplitLike = Pick<Cifar10Split, 'images' | 'labels' | 'count'>;

export interface AssembleOptions {
  seed: number;
  epoch: number;
  augment: boolean;
  /** With `augment`: side in pixels of the Cutout square (0 or absent: none). */
  cutout?: number;
  /** Optional destination buffers (at least n·3072 floats and n ints) to avoid allocation. */
  out?: { x: Float32Array; y: Int32Array };
}

export interface Batch {
  /** [n, 32, 32, 3] NHWC, normalized per channel. */
  x: Float32Array;
  /** [n] class ids. */
  y: Int32Array;
}

/** The augmentation drawn for one sample: output (h, w) reads source (h + dy, (flip ? 31 − w : w) + dx). */
export interface SampleAugmentation {
  /** Row shift in [−4, 4]. */
  dy: number;
  /** Column shift in [−4, 4]. */
  dx: number;
  flip: boolean;
  /** Cutout square: rows [cutTop, cutBottom) and columns [cutLeft, cutRight) of the output are 0 (empty when cutout is 0). */
  cutTop: number;
  cutBottom: number;
  cutLeft: number;
  cutRight: number;
}

/**
 * The crop offset, flip and Cutout square of sample `index` in `epoch`. Draw order mirrors torchvision
 * (crop top, crop left, then flip), then the Cutout centre (row, column) when `cutout` > 0, as in
 * DeVries & Taylor's code: rows [y − ⌊L/2⌋, y + ⌈L/2⌉) clipped to the image, columns likewise.
 */
export function sampleAugmentation(seed: number, epoch: number, index: number, cutout = 0): SampleAugmentation {
  if (!(Number.isInteger(cutout) && cutout >= 0 && cutout <= SIZE)) {
    throw new SvdTrainError('CONFIG_INVALID', `cutout ${cutout}; expected an integer side in pixels in [0, ${SIZE}]`);
  }
  const r = Rng.derive(seed, epoch, index);
  const top = r.nextInt(2 * CROP_PADDING + 1);
  const left = r.nextInt(2 * CROP_PADDING + 1);
  const flip = r.nextFloat() < 0.5;
  const aug = { dy: top - CROP_PADDING, dx: left - CROP_PADDING, flip, cutTop: 0, cutBottom: 0, cutLeft: 0, cutRight: 0 };
  if (cutout > 0) {
    const half = Math.floor(cutout / 2);
    const cy = r.nextInt(SIZE);
    const cx = r.nextInt(SIZE);
    aug.cutTop = Math.max(0, cy - half);
    aug.cutBottom = Math.min(SIZE, cy - half + cutout);
    aug.cutLeft = Math.max(0, cx - half);
    aug.cutRight = Math.min(SIZE, cx - half + cutout);
  }
  return aug;
}

/**
 * Assembles the samples `indices` (dataset record indices) of `split` into one batch.
 * @returns x: [n, 32, 32, 3] NHWC normalized float32 (a view of `out.x` when given), y: [n] int32.
 */
export function assembleBatch(split: SplitLike, indices: ArrayLike<number>, opts: AssembleOptions): Batch {
  const n = indices.length;
  const x = opts.out ? opts.out.x.subarray(0, n * RECORD) : new Float32Array(n * RECORD);
  const y = opts.out ? opts.out.y.subarray(0, n) : new Int32Array(n);
  if (x.length < n * RECORD || y.length < n) {
    throw new SvdTrainError(
      'SHAPE_MISMATCH',
      `assembleBatch: out buffers hold ${opts.out!.x.length} floats / ${opts.out!.y.length} labels, need ${n * RECORD} / ${n} for ${n} samples; allocate larger buffers or omit out`,
    );
  }
  const images = split.images;
  const labels = split.labels;
  const pad0 = CIFAR_PAD_VALUE[0];
  const pad1 = CIFAR_PAD_VALUE[1];
  const pad2 = CIFAR_PAD_VALUE[2];
  for (let s = 0; s < n; s++) {
    const idx = indices[s];
    if (!(idx >= 0 && idx < split.count && Number.isInteger(idx))) {
      throw new SvdTrainError('SHAPE_MISMATCH', `assembleBatch: sample index ${idx} at position ${s} is outside the split of ${split.count} records; indices must be integers in [0, ${split.count})`);
    }
    y[s] = labels[idx];
    const src = idx * RECORD;
    let o = s * RECORD;
    if (!opts.augment) {
      for (let p = 0; p < PLANE; p++, o += 3) {
        x[o] = LUT[images[src + p]];
        x[o + 1] = LUT[256 + images[src + PLANE + p]];
        x[o + 2] = LUT[512 + images[src + 2 * PLANE + p]];
      }
      continue;
    }
    const { dy, dx, flip, cutTop, cutBottom, cutLeft, cutRight } = sampleAugmentation(opts.seed, opts.epoch, idx, opts.cutout ?? 0);
    const sampleStart = o;
    // Source column for output w is a + b·w; valid output columns are those with 0 ≤ a + b·w < 32.
    const a = flip ? SIZE - 1 + dx : dx;
    const b = flip ? -1 : 1;
    let wLo: number;
    let wHi: number; // valid output columns [wLo, wHi)
    if (flip) {
      wLo = Math.max(0, a - (SIZE - 1));
      wHi = Math.min(SIZE, a + 1);
    } else {
      wLo = Math.max(0, -a);
      wHi = Math.min(SIZE, SIZE - a);
    }
    for (let h = 0; h < SIZE; h++) {
      const sh = h + dy;
      if (sh < 0 || sh >= SIZE) {
        for (let w = 0; w < SIZE; w++, o += 3) {
          x[o] = pad0;
          x[o + 1] = pad1;
          x[o + 2] = pad2;
        }
        continue;
      }
      const row = src + sh * SIZE;
      let w = 0;
      for (; w < wLo; w++, o += 3) {
        x[o] = pad0;
        x[o + 1] = pad1;
        x[o + 2] = pad2;
      }
      for (; w < wHi; w++, o += 3) {
        const p = row + a + b * w;
        x[o] = LUT[images[p]];
        x[o + 1] = LUT[256 + images[p + PLANE]];
        x[o + 2] = LUT[512 + images[p + 2 * PLANE]];
      }
      for (; w < SIZE; w++, o += 3) {
        x[o] = pad0;
        x[o + 1] = pad1;
        x[o + 2] = pad2;
      }
    }
    for (let h = cutTop; h < cutBottom; h++) x.fill(0, sampleStart + (h * SIZE + cutLeft) * 3, sampleStart + (h * SIZE + cutRight) * 3);
  }
  return { x, y };
}
