import { describe, expect, it } from 'vitest';
import { assembleBatch, type SplitLike } from '@svd-train/core';
import { expectNoLeakedTensors } from './test-support/index.js';
import { buildResNet } from './resnet.js';
import { evaluate } from './train-step.js';
import { evaluateSplit } from './evaluate.js';

const tiny = () => buildResNet({ depth: 20, widths: [3, 4, 4], blocks: [1, 1, 1], strides: [1, 2, 2], seed: 5 });

/** `count` CIFAR-shaped records [3, 32, 32] uint8 with labels 0..9 from a fixed LCG. */
function split(count: number): SplitLike {
  let s = 17;
  const next = () => (s = (Math.imul(s, 1664525) + 1013904223) >>> 0);
  return { images: Uint8Array.from({ length: count * 3072 }, () => next() >>> 24), labels: Uint8Array.from({ length: count }, () => next() % 10), count };
}

/** One evaluate() of all `indices` assembled at once: what the chunked loop must add up to. */
function whole(model: ReturnType<typeof tiny>, data: SplitLike, indices: number[]) {
  const { x, y } = assembleBatch(data, indices, { seed: 0, epoch: 0, augment: false });
  return evaluate(model, x, y, indices.length);
}

describe('evaluateSplit', () => {
  it('x=[7,32,32,3] in chunks of 3 (a ragged last chunk) equals one batch of 7 and leaks nothing', async () => {
    const model = tiny();
    const data = split(7);
    const all = [0, 1, 2, 3, 4, 5, 6];
    const want = whole(model, data, all);
    const got = await expectNoLeakedTensors(() => evaluateSplit(model, data, Int32Array.from(all), 3), 'evaluateSplit');
    expect(got.n).toBe(7);
    expect(got.correct).toBe(want.correct);
    expect(got.lossSum).toBeCloseTo(want.lossSum, 4);
    // Seven 10-class samples from an untrained net: the summed loss is of the order 7·ln 10, not 0.
    expect(got.lossSum).toBeGreaterThan(1);
    model.dispose();
  });

  it('evaluates exactly the given samples, in their order, repeats included (indices [5,0,5,2], chunk 2)', () => {
    const model = tiny();
    const data = split(7);
    const want = whole(model, data, [5, 0, 5, 2]);
    const got = evaluateSplit(model, data, [5, 0, 5, 2], 2);
    expect(got.n).toBe(4);
    expect(got.correct).toBe(want.correct);
    expect(got.lossSum).toBeCloseTo(want.lossSum, 4);
    // Another subset gives another loss: the indices are used, not the first n samples.
    expect(got.lossSum).not.toBeCloseTo(whole(model, data, [0, 1, 2, 3]).lossSum, 4);
    model.dispose();
  });

  it('no indices: zero counts; a chunk that is not a whole number > 0 is refused', () => {
    const model = tiny();
    expect(evaluateSplit(model, split(2), [], 4)).toEqual({ correct: 0, lossSum: 0, n: 0 });
    expect(() => evaluateSplit(model, split(2), [0], 0)).toThrow(/chunk 0/);
    expect(() => evaluateSplit(model, split(2), [0], 1.5)).toThrow(/chunk 1\.5/);
    model.dispose();
  });
});
