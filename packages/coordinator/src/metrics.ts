/**
 * metrics.jsonl: one JSON object per line, appended as training goes (a crash loses at most the
 * current line). Step lines carry loss terms, lr, step time and per-worker compute/communication
 * time; epoch lines carry train/test accuracy. `kind` tells them apart.
 */
import { appendFileSync, mkdirSync } from 'node:fs';
import { dirname } from 'node:path';

export interface WorkerTiming {
  worker: string;
  n: number;
  computeMs: number;
  /** Round-trip time minus compute time: serialization, transfer and queueing. */
  commMs: number;
}

export interface StepMetrics {
  kind: 'step';
  step: number;
  epoch: number;
  lr: number;
  /** SGD momentum (Adam β1) of this step: the one-cycle value when momentum cycles. */
  momentum: number;
  loss: { ce: number; orth: number; sparsity: number; total: number };
  trainAcc: number;
  n: number;
  stepMs: number;
  reduceMs: number;
  imgPerSec: number;
  workers: WorkerTiming[];
  time: string;
}

/** End of an epoch: what `onEpoch` receives and (with `kind` and `time`) what metrics.jsonl keeps. */
export interface EpochEvent {
  epoch: number;
  step: number;
  trainLoss: number;
  trainAcc: number;
  testLoss?: number;
  testAcc?: number;
  epochMs: number;
  /**
   * Per SVD layer (PyTorch module name), the effective rank at energy 0.01 of its singular values
   * after the epoch: what `svd-coord prune --energy 0.01` would keep. Empty without SVD layers.
   */
  effectiveRanks: Record<string, number>;
}

export interface EpochMetrics extends EpochEvent {
  kind: 'epoch';
  time: string;
}

export type MetricsLine = StepMetrics | EpochMetrics;

/** Appends metrics lines to `path`; a null path keeps nothing (tests, benchmarks). */
export class MetricsWriter {
  constructor(private readonly path: string | null) {
    if (path) mkdirSync(dirname(path), { recursive: true });
  }

  write(line: MetricsLine): void {
    if (this.path) appendFileSync(this.path, `${JSON.stringify(line)}\n`);
  }
}
