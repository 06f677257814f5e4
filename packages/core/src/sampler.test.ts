import fc from 'fast-check';
import { describe, expect, it } from 'vitest';
import { EpochSampler, epochPermutation, proportionalSizes, reassign, splitBatch } from './sampler.js';

describe('epochPermutation', () => {
  it('is a permutation, deterministic per (seed, epoch), different across epochs and seeds', () => {
    const a = epochPermutation(3, 0, 1000);
    expect(Array.from(a).sort((x, y) => x - y)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
    expect(epochPermutation(3, 0, 1000)).toEqual(a);
    expect(epochPermutation(3, 1, 1000)).not.toEqual(a);
    expect(epochPermutation(4, 0, 1000)).not.toEqual(a);
  });

  it('n=3: every ordering appears about equally often over seeds', () => {
    const counts = new Map<string, number>();
    for (let s = 0; s < 6000; s++) {
      const k = Array.from(epochPermutation(s, 0, 3)).join('');
      counts.set(k, (counts.get(k) ?? 0) + 1);
    }
    expect(counts.size).toBe(6);
    for (const c of counts.values()) expect(Math.abs(c - 1000)).toBeLessThan(150);
  });
});

describe('splitBatch', () => {
  it('golden: 10 samples, weights [1,1,1] -> 4,3,3; [2,1] -> 7,3 contiguous', () => {
    const idx = Int32Array.from([9, 8, 7, 6, 5, 4, 3, 2, 1, 0]);
    expect(splitBatch(idx, [1, 1, 1]).map((s) => Array.from(s))).toEqual([[9, 8, 7, 6], [5, 4, 3], [2, 1, 0]]);
    expect(proportionalSizes(10, [2, 1])).toEqual([7, 3]);
    expect(proportionalSizes(5, [0, 1, 1])).toEqual([0, 3, 2]);
    expect(() => splitBatch(idx, [])).toThrow(/0 weights/);
    expect(() => splitBatch(idx, [0, 0])).toThrow(/sum to 0/);
  });

  it('property: slices are contiguous, cover everything once, and are within 1 of the exact share', () => {
    fc.assert(
      fc.property(fc.integer({ min: 0, max: 600 }), fc.array(fc.integer({ min: 0, max: 20 }), { minLength: 1, maxLength: 9 }), (n, ws) => {
        fc.pre(ws.some((w) => w > 0));
        const idx = Int32Array.from({ length: n }, (_, i) => n - i);
        const slices = splitBatch(idx, ws);
        expect(slices.length).toBe(ws.length);
        const flat = slices.flatMap((s) => Array.from(s));
        expect(flat).toEqual(Array.from(idx));
        const sum = ws.reduce((a, b) => a + b, 0);
        slices.forEach((s, i) => {
          expect(Math.abs(s.length - (n * ws[i]) / sum)).toBeLessThan(1);
          if (ws[i] === 0) expect(s.length).toBe(0);
        });
      }),
      { numRuns: 300 },
    );
  });
});

describe('EpochSampler', () => {
  it('N=10 B=4: steps per epoch, partial last batch kept or dropped', () => {
    const keep = new EpochSampler({ size: 10, batch: 4, seed: 0 });
    expect(keep.stepsPerEpoch).toBe(3);
    expect([0, 1, 2, 3].map(() => keep.nextBatch()).map((b) => [b.epoch, b.stepInEpoch, b.step, b.indices.length])).toEqual([
      [0, 0, 0, 4], [0, 1, 1, 4], [0, 2, 2, 2], [1, 0, 3, 4],
    ]);
    const drop = new EpochSampler({ size: 10, batch: 4, seed: 0, dropLast: true });
    expect(drop.stepsPerEpoch).toBe(2);
    expect([0, 1, 2].map(() => drop.nextBatch()).map((b) => [b.epoch, b.indices.length])).toEqual([[0, 4], [0, 4], [1, 4]]);
    expect(() => new EpochSampler({ size: 3, batch: 4, seed: 0, dropLast: true })).toThrow(/dropLast/);
  });

  it('property: over worker-count changes, failures and checkpoint reloads, every sample of each epoch is trained exactly once', () => {
    fc.assert(
      fc.property(
        fc.integer({ min: 1, max: 300 }),
        fc.integer({ min: 1, max: 64 }),
        fc.boolean(),
        fc.integer({ min: 0, max: 1000 }),
        fc.array(fc.record({ workers: fc.array(fc.integer({ min: 1, max: 8 }), { minLength: 1, maxLength: 6 }), fail: fc.option(fc.nat()), reload: fc.boolean() }), { minLength: 1, maxLength: 40 }),
        (n, b, dropLast, seed, plan) => {
          fc.pre(!dropLast || b <= n);
          let sampler = new EpochSampler({ size: n, batch: b, seed, dropLast });
          const perEpoch = new Map<number, number[]>();
          const epochsToCheck = 2;
          const steps = sampler.stepsPerEpoch * epochsToCheck;
          for (let k = 0; k < steps; k++) {
            const p = plan[k % plan.length];
            if (p.reload) sampler = EpochSampler.fromState(JSON.parse(JSON.stringify(sampler.state())));
            const { epoch, shards, indices } = sampler.nextShards(p.workers);
            // contiguous, proportional
            expect(shards.flatMap((s) => Array.from(s))).toEqual(Array.from(indices));
            let done: Int32Array[] = shards.slice();
            if (p.fail !== null && p.workers.length > 1) {
              const f = p.fail % p.workers.length;
              const survivors = p.workers.filter((_, i) => i !== f);
              const extra = reassign(shards[f], survivors);
              expect(extra.flatMap((s) => Array.from(s))).toEqual(Array.from(shards[f]));
              done = shards.filter((_, i) => i !== f).concat(extra);
            }
            const seen = perEpoch.get(epoch) ?? [];
            for (const s of done) seen.push(...s);
            perEpoch.set(epoch, seen);
          }
          expect([...perEpoch.keys()]).toEqual([0, 1]);
          for (const seen of perEpoch.values()) {
            const expectedCount = dropLast ? Math.floor(n / b) * b : n;
            expect(seen.length).toBe(expectedCount);
            expect(new Set(seen).size).toBe(expectedCount);
            for (const i of seen) expect(i >= 0 && i < n).toBe(true);
          }
        },
      ),
      { numRuns: 150 },
    );
  });

  it("atEpochEnd: the last batch handed out ended an epoch (what a checkpoint's sampler state says)", () => {
    const state = (position: number, o: { size?: number; batch?: number; dropLast?: boolean; step?: number } = {}) => ({ size: o.size ?? 100, batch: o.batch ?? 32, seed: 0, dropLast: o.dropLast ?? false, epoch: 0, position, step: o.step ?? 4 });
    const atEnd = (s: ReturnType<typeof state>) => EpochSampler.fromState(s).atEpochEnd;
    expect(atEnd(state(100))).toBe(true);
    for (const position of [0, 32, 96, 99]) expect(atEnd(state(position))).toBe(false);
    // dropLast: the epoch is its whole batches only.
    expect(atEnd(state(96, { dropLast: true }))).toBe(true);
    expect(atEnd(state(64, { dropLast: true }))).toBe(false);
    // A fresh run has ended no epoch.
    expect(atEnd(state(100, { step: 0 }))).toBe(false);
    // A live sampler: true right after an epoch's last batch, false once the next one is handed out.
    const live = new EpochSampler({ size: 10, batch: 4, seed: 1 });
    const seen = Array.from({ length: 4 }, () => (live.nextBatch(), live.atEpochEnd));
    expect(seen).toEqual([false, false, true, false]);
  });

  it('state()/fromState() resumes the identical sequence; damaged state is refused', () => {
    const a = new EpochSampler({ size: 50, batch: 8, seed: 7 });
    for (let i = 0; i < 9; i++) a.nextBatch();
    const b = EpochSampler.fromState(a.state());
    for (let i = 0; i < 12; i++) expect(b.nextBatch()).toEqual(a.nextBatch());
    expect(() => EpochSampler.fromState({ ...a.state(), position: 51 })).toThrow(/damaged/);
  });
});
