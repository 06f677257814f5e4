import { describe, expect, it } from 'vitest';
import { Rng, hashKey, mix32 } from './rng.js';

describe('rng', () => {
  it('is deterministic per key and differs across keys', () => {
    const a = Rng.derive(0, 1, 2);
    const b = Rng.derive(0, 1, 2);
    const seqA = Array.from({ length: 8 }, () => a.nextU32());
    expect(Array.from({ length: 8 }, () => b.nextU32())).toEqual(seqA);
    const c = Rng.derive(0, 2, 1);
    expect(Array.from({ length: 8 }, () => c.nextU32())).not.toEqual(seqA);
    expect(hashKey(1, 2)).not.toBe(hashKey(2, 1));
    expect(hashKey(2 ** 32)).not.toBe(hashKey(0));
  });

  it('mix32 is a bijection on a sample (no collisions among 1e5 inputs)', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 100_000; i++) seen.add(mix32(i));
    expect(seen.size).toBe(100_000);
  });

  it('nextFloat is roughly uniform and nextInt stays in range', () => {
    const r = new Rng(123);
    const bins = new Array(10).fill(0);
    for (let i = 0; i < 100_000; i++) {
      const f = r.nextFloat();
      expect(f >= 0 && f < 1).toBe(true);
      bins[Math.floor(f * 10)]++;
    }
    for (const b of bins) expect(Math.abs(b - 10_000)).toBeLessThan(500);
    for (let i = 0; i < 1000; i++) {
      const k = r.nextInt(9);
      expect(Number.isInteger(k) && k >= 0 && k < 9).toBe(true);
    }
  });

  it('state round-trips', () => {
    const r = new Rng(7);
    r.nextU32();
    const s = r.state();
    const x = r.nextU32();
    expect(Rng.fromState(s).nextU32()).toBe(x);
  });
});
