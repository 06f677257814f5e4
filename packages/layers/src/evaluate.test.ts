import { describe, expect, it } from 'vitest';
import { assembleBatch, type SplitLike } from '@svd-train/core';
import { expectNoLeakedTensors } from './test-support/index.js';
import { buildResNet } from './resnet.js';
import * as tf from '@tensorflow/tfjs';
import { evaluate } from './train-step.js';
import { evaluateSplit, recalibrateBatchNorm } from './evaluate.js';
import { SVDBatchNorm } from './batch-norm.js';
import { getBuffers, getParameters, setBuffers } from './parameter-names.js';

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

describe('recalibrateBatchNorm', () => {
  /** Running statistics far from anything the data gives: what a pruned model's stale ones stand for. */
  const spoil = (model: ReturnType<typeof tiny>) =>
    setBuffers(model, getBuffers(model).map((b) => ({ ...b, data: b.data.map((_, i) => (b.name.endsWith('Mean') ? 5 + i : 40 + i)) })));
  const logits = (model: ReturnType<typeof tiny>, x: Float32Array, n: number, training: boolean) =>
    tf.tidy(() => (model.apply(tf.tensor4d(x, [n, 32, 32, 3]), { training }) as tf.Tensor).dataSync() as Float32Array);

  it('on one chunk of 8 images: eval mode then gives what train mode gives on those images; weights untouched', async () => {
    const model = tiny();
    const data = split(8);
    const idx = [0, 1, 2, 3, 4, 5, 6, 7];
    const { x } = assembleBatch(data, idx, { seed: 0, epoch: 0, augment: false });
    spoil(model);
    const weights = getParameters(model);
    const before = logits(model, x, 8, false);
    const want = logits(model, x, 8, true);
    spoil(model); // the train-mode call above moved the running statistics
    const maxDiff = (a: Float32Array, b: Float32Array) => Math.max(...a.map((v, i) => Math.abs(v - b[i]!)));
    expect(maxDiff(before, want)).toBeGreaterThan(0.1);
    const used = await expectNoLeakedTensors(() => recalibrateBatchNorm(model, data, Int32Array.from(idx), 8, { augment: false }), 'recalibrateBatchNorm');
    expect(used).toBe(8);
    // Running variance is the unbiased one (×n/(n−1), n ≥ 8·8·8 here), so equal to ~1e-3.
    expect(maxDiff(logits(model, x, 8, false), want)).toBeLessThan(1e-2 * Math.max(1, ...want.map(Math.abs)));
    expect(getParameters(model)).toEqual(weights);
    for (const l of model.layers) if (l instanceof SVDBatchNorm) expect(l.momentumOverride).toBeNull();
    model.dispose();
  });

  it('by default on the images as training augments them (crop + flip, seed 0, epoch 0): eval mode then gives train mode on those', () => {
    const model = tiny();
    const data = split(8);
    const idx = [0, 1, 2, 3, 4, 5, 6, 7];
    const aug = assembleBatch(data, idx, { seed: 0, epoch: 0, augment: true }).x;
    const plain = assembleBatch(data, idx, { seed: 0, epoch: 0, augment: false }).x;
    const wantAug = logits(model, aug, 8, true);
    const wantPlain = logits(model, plain, 8, true);
    const maxDiff = (a: Float32Array, b: Float32Array) => Math.max(...a.map((v, i) => Math.abs(v - b[i]!)));
    const scale = Math.max(1, ...wantAug.map(Math.abs));
    spoil(model);
    recalibrateBatchNorm(model, data, Int32Array.from(idx), 8);
    expect(maxDiff(logits(model, aug, 8, false), wantAug)).toBeLessThan(1e-2 * scale);
    const augStats = getBuffers(model);
    spoil(model);
    recalibrateBatchNorm(model, data, Int32Array.from(idx), 8, { augment: false });
    expect(maxDiff(logits(model, plain, 8, false), wantPlain)).toBeLessThan(1e-2 * scale);
    // The two sets of statistics differ: the option is not ignored.
    expect(getBuffers(model).some((t, k) => t.data.some((v, i) => Math.abs(v - augStats[k]!.data[i]!) > 1e-3))).toBe(true);
    model.dispose();
  });

  it('with cutout: on the images as a Cutout run trains on them, which differ from crop + flip alone', () => {
    const model = tiny();
    const data = split(8);
    const idx = [0, 1, 2, 3, 4, 5, 6, 7];
    const cut = assembleBatch(data, idx, { seed: 0, epoch: 0, augment: true, cutout: 16 }).x;
    const want = logits(model, cut, 8, true);
    const maxDiff = (a: Float32Array, b: Float32Array) => Math.max(...a.map((v, i) => Math.abs(v - b[i]!)));
    spoil(model);
    recalibrateBatchNorm(model, data, Int32Array.from(idx), 8, { cutout: 16 });
    expect(maxDiff(logits(model, cut, 8, false), want)).toBeLessThan(1e-2 * Math.max(1, ...want.map(Math.abs)));
    const cutStats = getBuffers(model);
    spoil(model);
    recalibrateBatchNorm(model, data, Int32Array.from(idx), 8);
    expect(getBuffers(model).some((t, k) => t.data.some((v, i) => Math.abs(v - cutStats[k]!.data[i]!) > 1e-3))).toBe(true);
    model.dispose();
  });

  it('over chunks A and B: the running statistics are the mean of what A alone and B alone give', () => {
    const model = tiny();
    const data = split(8);
    const stats = (idx: number[], chunk: number) => {
      spoil(model);
      recalibrateBatchNorm(model, data, Int32Array.from(idx), chunk);
      return getBuffers(model);
    };
    const a = stats([0, 1, 2, 3], 4);
    const b = stats([4, 5, 6, 7], 4);
    const ab = stats([0, 1, 2, 3, 4, 5, 6, 7], 4);
    expect(ab.length).toBeGreaterThan(0);
    ab.forEach((t, k) => t.data.forEach((v, i) => expect(v).toBeCloseTo((a[k]!.data[i]! + b[k]!.data[i]!) / 2, 4)));
    model.dispose();
  });

  it('a last chunk of one image is left out of the count and the statistics; a chunk that is not a whole number > 0 is refused', () => {
    const model = tiny();
    const data = split(5);
    spoil(model);
    expect(recalibrateBatchNorm(model, data, [0, 1, 2, 3, 4], 2)).toBe(4);
    const twoChunks = getBuffers(model);
    spoil(model);
    recalibrateBatchNorm(model, data, [0, 1, 2, 3], 2);
    expect(getBuffers(model)).toEqual(twoChunks);
    expect(() => recalibrateBatchNorm(model, split(2), [0, 1], 0)).toThrow(/chunk 0/);
    model.dispose();
  });
});
