/**
 * Inference-mode evaluation of samples of a CIFAR-10 split, the loop both sides of a run need: the
 * worker answers the coordinator's `eval` requests with it, and `svd-coord eval` and the pruning
 * pipeline measure test accuracy with it in the CLI's process.
 */
import type * as tf from '@tensorflow/tfjs';
import { SvdTrainError, assembleBatch, type SplitLike } from '@svd-train/core';
import { evaluate } from './train-step.js';

/** Counts over the evaluated samples; accuracy is correct / n, mean loss lossSum / n. */
export interface EvaluateResult {
  correct: number;
  /** Summed cross-entropy (natural log). */
  lossSum: number;
  n: number;
}

/**
 * Evaluates `model` (running BN statistics, no augmentation) on samples `indices` of `split`.
 * The images are assembled `chunk` at a time, never all at once, so the input of one call stays
 * within the same heap cap as a training slice (RunConfig `maxWorkerBatch`).
 * @param indices sample numbers into `split`, in any order, repeats allowed.
 */
export function evaluateSplit(model: tf.LayersModel, split: SplitLike, indices: ArrayLike<number>, chunk: number): EvaluateResult {
  if (!(Number.isInteger(chunk) && chunk > 0)) {
    throw new SvdTrainError('CONFIG_INVALID', `evaluateSplit: chunk ${chunk} is not a whole number of samples > 0; pass RunConfig maxWorkerBatch (default 256).`);
  }
  const idx = Int32Array.from(indices);
  let correct = 0;
  let lossSum = 0;
  let n = 0;
  for (let lo = 0; lo < idx.length; lo += chunk) {
    const { x, y } = assembleBatch(split, idx.subarray(lo, Math.min(idx.length, lo + chunk)), { seed: 0, epoch: 0, augment: false });
    const r = evaluate(model, x, y);
    correct += r.correct;
    lossSum += r.lossSum;
    n += r.n;
  }
  return { correct, lossSum, n };
}
