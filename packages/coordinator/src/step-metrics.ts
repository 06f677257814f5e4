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
