/**
 * What one training step, one epoch and one evaluation measured, aggregated from the workers'
 * answers: sample-weighted loss and accuracy, images per second, and per worker its compute and
 * communication time (round trip minus compute). The coordinator writes these to metrics.jsonl
 * (metrics.ts) and hands them to onStep/onEpoch.
 */
import type { EvalResultMessage, GradientsMessage } from '@svd-train/core';
import type { Answer } from './job-scheduler.js';
import type { StepMetrics, WorkerTiming } from './metrics.js';

/** What `onStep` receives after each optimizer step. */
export interface StepEvent {
  step: number;
  epoch: number;
  stepInEpoch: number;
  stepsPerEpoch: number;
  totalSteps: number;
  lr: number;
  loss: StepMetrics['loss'];
  trainAcc: number;
  n: number;
  stepMs: number;
  imgPerSec: number;
  workers: number;
  /** Which worker computed which samples (after any re-assignment); for accounting and tests. */
  slices: { worker: string; indices: Int32Array }[];
}

/** Samples, correct predictions and loss terms of one step, over its non-empty slices. */
export interface StepTotals {
  n: number;
  correct: number;
  loss: StepMetrics['loss'];
}

/** Sums the answers of one step (`contribs`: the slices with n > 0). */
export function stepTotals(contribs: readonly GradientsMessage[]): StepTotals {
  let n = 0;
  let correct = 0;
  const loss: StepMetrics['loss'] = { ce: 0, orth: 0, sparsity: 0, total: 0 };
  let distill: number | null = null;
  for (const g of contribs) {
    n += g.n;
    correct += g.correct;
    // CE is a per-sample mean, so it is sample-weighted; the regularizers are functions of the
    // (shared) weights alone, so every worker reports the same value and we average equally.
    loss.ce += g.loss.ce * g.n;
    loss.orth += g.loss.orth;
    loss.sparsity += g.loss.sparsity;
    // Like CE, a per-sample mean.
    if (g.loss.distill !== undefined) distill = (distill ?? 0) + g.loss.distill * g.n;
  }
  if (distill !== null) loss.distill = distill / Math.max(1, n);
  loss.ce /= Math.max(1, n);
  loss.orth /= Math.max(1, contribs.length);
  loss.sparsity /= Math.max(1, contribs.length);
  loss.total = contribs.reduce((a, g) => a + g.loss.total * g.n, 0) / Math.max(1, n);
  return { n, correct, loss };
}

/** Per worker slice of a step: samples, compute time, and the rest of the round trip (serialization, transfer, queueing). */
export function workerTimings(answers: readonly Answer<{ readonly name: string }, GradientsMessage>[]): WorkerTiming[] {
  const out: WorkerTiming[] = [];
  for (const a of answers) {
    const g = a.result;
    if (!a.worker || g.n <= 0) continue;
    out.push({ worker: a.worker.name, n: g.n, computeMs: g.computeMs, commMs: Math.max(0, a.rttMs - g.computeMs) });
  }
  return out;
}

/** The metrics.jsonl line of one step. */
export function stepLine(
  at: { step: number; epoch: number; lr: number; momentum: number },
  totals: StepTotals,
  times: { stepMs: number; reduceMs: number },
  workers: WorkerTiming[],
): StepMetrics {
  return {
    kind: 'step',
    step: at.step,
    epoch: at.epoch,
    lr: at.lr,
    momentum: at.momentum,
    loss: totals.loss,
    trainAcc: totals.correct / Math.max(1, totals.n),
    n: totals.n,
    stepMs: times.stepMs,
    reduceMs: times.reduceMs,
    imgPerSec: totals.n / (times.stepMs / 1000),
    workers,
    time: new Date().toISOString(),
  };
}

/** The `onStep` event of a step: its metrics line, where it sits in the run, and who computed which samples. */
export function stepEvent(
  at: { stepInEpoch: number; stepsPerEpoch: number; totalSteps: number },
  line: StepMetrics,
  liveWorkers: number,
  answers: readonly { worker: { readonly name: string } | null; indices: Int32Array }[],
): StepEvent {
  return {
    step: line.step,
    epoch: line.epoch,
    stepInEpoch: at.stepInEpoch,
    stepsPerEpoch: at.stepsPerEpoch,
    totalSteps: at.totalSteps,
    lr: line.lr,
    loss: line.loss,
    trainAcc: line.trainAcc,
    n: line.n,
    stepMs: line.stepMs,
    imgPerSec: line.imgPerSec,
    workers: liveWorkers,
    slices: answers.filter((a) => a.indices.length > 0).map((a) => ({ worker: a.worker?.name ?? '?', indices: a.indices })),
  };
}

/** What a checkpoint keeps of EpochTotals: CE sum, correct and images so far, and the wall time so far. */
export interface EpochTotalsState {
  loss: number;
  correct: number;
  n: number;
  ms: number;
}

/** Running totals of the current epoch (train loss and accuracy, sample-weighted, and its wall time). */
export class EpochTotals {
  private loss = 0;
  private correct = 0;
  private n = 0;
  private t0: number;

  constructor(private readonly now: () => number) {
    this.t0 = now();
  }

  add(t: StepTotals): void {
    this.loss += t.loss.ce * t.n;
    this.correct += t.correct;
    this.n += t.n;
  }

  summary(): { trainLoss: number; trainAcc: number; epochMs: number } {
    return { trainLoss: this.loss / Math.max(1, this.n), trainAcc: this.correct / Math.max(1, this.n), epochMs: this.now() - this.t0 };
  }

  /**
   * The totals so far, for a checkpoint: a run resumed from it mid-epoch reports the whole epoch,
   * not just the steps after the resume (`ms`: the epoch's wall time so far).
   */
  state(): EpochTotalsState {
    return { loss: this.loss, correct: this.correct, n: this.n, ms: this.now() - this.t0 };
  }

  /**
   * Continues the epoch a checkpoint's `state()` describes. The value comes from a checkpoint file:
   * anything but finite, non-negative sums with integer counts, `correct` ≤ `n` ≤ `maxN` (the
   * images the epoch's steps so far can hold) is refused with the reason, and the totals stay empty.
   */
  restore(state: unknown, maxN: number): string | null {
    const st = state as Partial<EpochTotalsState> | null;
    if (typeof st !== 'object' || st === null) return 'no epoch totals in the checkpoint';
    const { loss, correct, n, ms } = st;
    const count = (v: unknown): v is number => Number.isSafeInteger(v) && (v as number) >= 0;
    const amount = (v: unknown): v is number => Number.isFinite(v) && (v as number) >= 0;
    if (!count(correct) || !count(n) || !amount(loss) || !amount(ms) || correct > n || n > maxN) {
      return `the checkpoint's epoch totals ${JSON.stringify(st).slice(0, 200)} are not valid (expected finite non-negative sums, correct ≤ n ≤ ${maxN})`;
    }
    this.loss = loss;
    this.correct = correct;
    this.n = n;
    this.t0 = this.now() - ms;
    return null;
  }

  /** Starts the next epoch (its clock starts now, after any end-of-epoch evaluation). */
  reset(): void {
    this.loss = 0;
    this.correct = 0;
    this.n = 0;
    this.t0 = this.now();
  }
}

/** Accuracy and mean loss of an evaluation, over all its slices. */
export function evalTotals(results: readonly EvalResultMessage[]): { acc: number; loss: number; n: number } {
  let n = 0;
  let correct = 0;
  let lossSum = 0;
  for (const r of results) {
    n += r.n;
    correct += r.correct;
    lossSum += r.lossSum;
  }
  return { acc: correct / Math.max(1, n), loss: lossSum / Math.max(1, n), n };
}
