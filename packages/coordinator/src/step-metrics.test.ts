import { describe, it, expect } from 'vitest';
import type { GradientsMessage } from '@svd-train/core';
import { EpochTotals, evalTotals, stepTotals, workerTimings } from './step-metrics.js';

const g = (n: number, correct: number, loss: { ce: number; orth: number; sparsity: number; total: number; distill?: number }, computeMs = 0): GradientsMessage => ({
  type: 'gradients',
  step: 0,
  attempt: 1,
  n,
  grads: [],
  buffers: [],
  loss,
  correct,
  computeMs,
});

describe('step metrics', () => {
  it('CE and total loss are sample-weighted, the regularizers averaged per slice (n=3 and n=1)', () => {
    const t = stepTotals([g(3, 2, { ce: 1, orth: 0.5, sparsity: 2, total: 4 }), g(1, 1, { ce: 5, orth: 0.5, sparsity: 2, total: 8 })]);
    expect(t.n).toBe(4);
    expect(t.correct).toBe(3);
    expect(t.loss).toEqual({ ce: (3 * 1 + 5) / 4, orth: 0.5, sparsity: 2, total: (3 * 4 + 8) / 4 });
  });

  it('the distillation term, when the workers report one, is sample-weighted like CE; absent otherwise', () => {
    const t = stepTotals([g(3, 2, { ce: 1, orth: 0.5, sparsity: 0, total: 4, distill: 2 }), g(1, 1, { ce: 5, orth: 0.5, sparsity: 0, total: 8, distill: 6 })]);
    expect(t.loss.distill).toBe((3 * 2 + 6) / 4);
    expect('distill' in stepTotals([g(2, 1, { ce: 1, orth: 0, sparsity: 0, total: 1 })]).loss).toBe(false);
  });

  it('no slices: zeros, not NaN', () => {
    expect(stepTotals([])).toEqual({ n: 0, correct: 0, loss: { ce: 0, orth: 0, sparsity: 0, total: 0 } });
    expect(evalTotals([])).toEqual({ acc: 0, loss: 0, n: 0 });
  });

  it('per worker: communication is the round trip minus compute (never negative); empty slices are left out', () => {
    const answers = [
      { worker: { name: 'w0' }, indices: Int32Array.of(0, 1), rttMs: 50, result: g(2, 0, { ce: 0, orth: 0, sparsity: 0, total: 0 }, 30) },
      { worker: { name: 'w1' }, indices: Int32Array.of(2), rttMs: 10, result: g(1, 0, { ce: 0, orth: 0, sparsity: 0, total: 0 }, 12) },
      { worker: null, indices: new Int32Array(0), rttMs: 0, result: g(0, 0, { ce: 0, orth: 0, sparsity: 0, total: 0 }) },
    ];
    expect(workerTimings(answers)).toEqual([
      { worker: 'w0', n: 2, computeMs: 30, commMs: 20 },
      { worker: 'w1', n: 1, computeMs: 12, commMs: 0 },
    ]);
  });

  it('an epoch sums sample-weighted CE and accuracy over its steps, and reset() starts a new one and its clock', () => {
    let clock = 100;
    const e = new EpochTotals(() => clock);
    e.add(stepTotals([g(3, 3, { ce: 1, orth: 0, sparsity: 0, total: 1 })]));
    e.add(stepTotals([g(1, 0, { ce: 5, orth: 0, sparsity: 0, total: 5 })]));
    clock = 160;
    expect(e.summary()).toEqual({ trainLoss: 2, trainAcc: 0.75, epochMs: 60 });
    e.reset();
    clock = 170;
    expect(e.summary()).toEqual({ trainLoss: 0, trainAcc: 0, epochMs: 10 });
  });

  it('a checkpoint\'s epoch totals restore the epoch so far: sums, counts and the wall time already spent', () => {
    let clock = 100;
    const a = new EpochTotals(() => clock);
    a.add(stepTotals([g(3, 2, { ce: 1.5, orth: 0, sparsity: 0, total: 1.5 })]));
    clock = 130;
    const saved = JSON.parse(JSON.stringify(a.state()));
    expect(saved).toEqual({ loss: 4.5, correct: 2, n: 3, ms: 30 });
    clock = 1000;
    const b = new EpochTotals(() => clock);
    expect(b.restore(saved, 8)).toBeNull();
    for (const e of [a, b]) e.add(stepTotals([g(1, 1, { ce: 0.5, orth: 0, sparsity: 0, total: 0.5 })]));
    clock = 1010;
    expect(b.summary()).toEqual({ trainLoss: 5 / 4, trainAcc: 3 / 4, epochMs: 40 });
    expect(b.summary().trainLoss).toBe(a.summary().trainLoss);
  });

  it.each([
    ['missing', undefined],
    ['not an object', 'totals'],
    ['a negative sum', { loss: -1, correct: 0, n: 1, ms: 0 }],
    ['NaN', { loss: Number.NaN, correct: 0, n: 1, ms: 0 }],
    ['a fractional count', { loss: 1, correct: 0.5, n: 1, ms: 0 }],
    ['more correct than images', { loss: 1, correct: 3, n: 2, ms: 0 }],
    ['more images than the steps so far can hold', { loss: 1, correct: 3, n: 9, ms: 0 }],
  ])('refuses epoch totals that are %s, and keeps the totals empty', (_, state) => {
    const e = new EpochTotals(() => 5);
    expect(e.restore(state, 8)).toMatch(/epoch totals/);
    expect(e.state()).toEqual({ loss: 0, correct: 0, n: 0, ms: 0 });
  });

  it('evaluation accuracy and mean loss over all slices', () => {
    expect(
      evalTotals([
        { type: 'eval-result', evalId: 1, n: 4, correct: 3, lossSum: 2 },
        { type: 'eval-result', evalId: 2, n: 4, correct: 1, lossSum: 6 },
      ]),
    ).toEqual({ acc: 0.5, loss: 1, n: 8 });
  });
});
