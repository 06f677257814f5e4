/**
 * metrics.jsonl: one JSON object per line, appended as training goes (a crash loses at most the
 * current line; a resume drops what the killed run wrote past its checkpoint). Step lines carry loss terms, lr, step time and per-worker compute/communication
 * time; epoch lines carry train/test accuracy. `kind` tells them apart.
 */
import { appendFileSync, existsSync, mkdirSync, readFileSync } from 'node:fs';
import { dirname } from 'node:path';
import { replaceFile } from '@svd-train/core';

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
  /** `distill` (T²·KL to the teacher, sample-weighted) only while the run distills. */
  loss: { ce: number; orth: number; sparsity: number; total: number; distill?: number };
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
  /** Wall time of the epoch's steps (carried across a resume), without its evaluation. */
  epochMs: number;
  /** Wall time of the epoch's test evaluation; absent when it was not evaluated. */
  evalMs?: number;
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
  /** Lines not yet on disk because a write failed; retried before each later line. */
  private pending: string[] = [];
  private failing = false;

  /**
   * @param onError told once when writing starts failing (e.g. EMFILE: too many open files) and once
   *   when it recovers. Training goes on meanwhile and the lines wait in memory: losing the run over
   *   its metrics would be worse, and silently losing the metrics is what used to happen.
   */
  constructor(
    private readonly path: string | null,
    private readonly onError: (level: 'warn' | 'error', msg: string) => void = () => {},
  ) {
    if (path) mkdirSync(dirname(path), { recursive: true });
  }

  /**
   * Resuming at a checkpoint of `step` steps: drops the lines the killed run wrote past it (step
   * lines of steps >= step, epoch lines ending after it), so that every step appears once. The file
   * is rewritten through a temp file and a rename, so a crash here leaves the old or the new one.
   */
  truncateAfter(step: number): number {
    if (!this.path || !existsSync(this.path)) return 0;
    const lines = readFileSync(this.path, 'utf8').split('\n').filter((l) => l.trim());
    const keep = lines.filter((l) => {
      try {
        const r = JSON.parse(l) as Partial<MetricsLine>;
        return r.kind === 'step' ? (r.step ?? 0) < step : r.kind === 'epoch' ? (r.step ?? 0) <= step : true;
      } catch {
        return false; // a torn last line from the kill
      }
    });
    replaceFile(this.path, keep.map((l) => `${l}\n`).join(''));
    return lines.length - keep.length;
  }

  write(line: MetricsLine): void {
    if (!this.path) return;
    this.pending.push(`${JSON.stringify(line)}\n`);
    try {
      appendFileSync(this.path, this.pending.join(''));
      if (this.failing) this.onError('warn', `metrics: writing ${this.path} works again; ${this.pending.length} delayed line(s) written`);
      this.pending = [];
      this.failing = false;
    } catch (e) {
      if (!this.failing) {
        const err = e as NodeJS.ErrnoException;
        this.onError(
          'error',
          `metrics: cannot append to ${this.path} (${err.code ?? ''} ${err.message}); training goes on and the lines are kept in memory and retried at each step. ` +
            (err.code === 'EMFILE' || err.code === 'ENFILE' ? 'Fix: raise the open-file limit (ulimit -n) or find what holds so many connections.' : 'Fix: check the disk and the permissions of the run folder.'),
        );
      }
      this.failing = true;
    }
  }
}
