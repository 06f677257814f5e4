import { describe, expect, it } from 'vitest';
import { formatDuration, median, quantile, runMetrics, runSeconds, workerTimings } from './run-metrics.js';

describe('runMetrics', () => {
  it('reads the coordinator format and the old flat one (ce, percent accuracy, no kind, no time)', () => {
    const { steps, epochs, startMs } = runMetrics([
      { kind: 'step', step: 0, epoch: 0, lr: 0.1, loss: { ce: 2, orth: 0.1, sparsity: 3, total: 2.5 }, trainAcc: 0.25, stepMs: 1000, reduceMs: 4, imgPerSec: 128, workers: [{ worker: 'w0', n: 64, computeMs: 900, commMs: 20 }], time: '2026-01-01T00:00:02.000Z' },
      { step: 1, ce: 1.5, acc: 50 },
      { kind: 'epoch', epoch: 0, step: 2, trainAcc: 0.5, testAcc: 55, testLoss: 1.1, effectiveRanks: { a: 3, b: 'x' } },
      { kind: 'eval', step: 9 },
    ]);
    expect(steps.map((s) => [s.step, s.ce, s.trainAcc])).toEqual([[0, 2, 0.25], [1, 1.5, 0.5]]);
    expect(steps[0]!.workers).toEqual([{ worker: 'w0', n: 64, computeMs: 900, commMs: 20 }]);
    expect(steps[1]!.workers).toEqual([]);
    expect(Number.isNaN(steps[1]!.timeMs)).toBe(true);
    expect(epochs).toEqual([{ epoch: 0, step: 2, trainLoss: NaN, trainAcc: 0.5, testAcc: 0.55, testLoss: 1.1, effectiveRanks: { a: 3 }, timeMs: NaN, epochMs: NaN, evalMs: NaN }]);
    // the first step started stepMs before its line was written
    expect(startMs).toBe(Date.parse('2026-01-01T00:00:01.000Z'));
  });
});

describe('runSeconds: how long a run took', () => {
  const epoch = (e: number, epochMs: number, evalMs?: number) => ({ kind: 'epoch', epoch: e, step: 10 * (e + 1), epochMs, ...(evalMs === undefined ? {} : { evalMs }) });
  it('sums each epoch\'s steps and evaluation once, the last record of an epoch a resume redid winning', () => {
    const { epochs } = runMetrics([epoch(0, 60_000, 3_000), epoch(1, 61_000, 2_000), epoch(1, 65_000, 4_000), epoch(2, 62_000)]);
    // 63 + 69 (the redone epoch 1) + 62 (not evaluated) seconds
    expect(runSeconds(epochs)).toBe(194);
  });
  it('is NaN when no epoch recorded its time (a run of an old version, or none finished)', () => {
    expect(Number.isNaN(runSeconds([]))).toBe(true);
    expect(Number.isNaN(runSeconds(runMetrics([{ kind: 'epoch', epoch: 0, step: 1, testAcc: 0.5 }]).epochs))).toBe(true);
  });
});

describe('formatDuration', () => {
  it('12 s, 4 min 10 s, 1 h 23 min; 59.6 minutes past the hour round up to the next hour; – for no time', () => {
    expect(formatDuration(12_000)).toBe('12 s');
    expect(formatDuration(250_000)).toBe('4 min 10 s');
    expect(formatDuration((3600 + 23 * 60) * 1000)).toBe('1 h 23 min');
    expect(formatDuration((3600 + 59 * 60 + 40) * 1000)).toBe('2 h 0 min');
    expect(formatDuration(NaN)).toBe('–');
    expect(formatDuration(-1)).toBe('–');
  });
});

describe('median / quantile', () => {
  it('[3, 1, 2, NaN] -> median 2; [1, 2, 3, 4] -> median 2.5, p90 3.7; [] -> NaN', () => {
    expect(median([3, 1, 2, NaN])).toBe(2);
    expect(median([1, 2, 3, 4])).toBe(2.5);
    expect(quantile([1, 2, 3, 4], 0.9)).toBeCloseTo(3.7, 12);
    expect(Number.isNaN(median([]))).toBe(true);
  });
});

describe('workerTimings', () => {
  it('summarizes each worker over the steps it took part in, ordered w2 before w10', () => {
    const step = (reduceMs: number, workers: [string, number, number][]) => ({ reduceMs, workers: workers.map(([worker, computeMs, commMs]) => ({ worker, n: 64, computeMs, commMs })) });
    const rows = runMetrics([
      { kind: 'step', step: 0, ...step(5, [['w10', 100, 10], ['w2', 300, 30]]) },
      { kind: 'step', step: 1, ...step(7, [['w10', 200, 20]]) }, // w2 dropped
      { kind: 'step', step: 2, ...step(9, [['w10', 300, 30], ['w2', 500, 50]]) },
    ]).steps;
    const t = workerTimings(rows);
    expect(t.map((w) => w.worker)).toEqual(['w2', 'w10']);
    expect(t[0]).toMatchObject({ worker: 'w2', steps: 2, n: 64, computeMs: { median: 400 }, commMs: { median: 40 }, reduceMs: { median: 7 } });
    expect(t[1]).toMatchObject({ worker: 'w10', steps: 3, computeMs: { median: 200 }, commMs: { median: 20 }, reduceMs: { median: 7 } });
  });
});
