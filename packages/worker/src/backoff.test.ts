import { describe, expect, it } from 'vitest';
import { backoffDelay } from './backoff.js';

describe('backoffDelay', () => {
  it('grows exponentially up to the cap (random = 1 gives the ceiling)', () => {
    const d = [0, 1, 2, 3, 10, 40].map((k) => backoffDelay(k, { baseMs: 100, capMs: 1000, random: () => 1 }));
    expect(d).toEqual([100, 200, 400, 800, 1000, 1000]);
  });
  it('is jittered within [base/4, ceiling] and never zero', () => {
    for (let k = 0; k < 20; k++) {
      const v = backoffDelay(k, { baseMs: 100, capMs: 1000 });
      expect(v).toBeGreaterThanOrEqual(25);
      expect(v).toBeLessThanOrEqual(1000);
    }
    expect(backoffDelay(5, { baseMs: 100, capMs: 1000, random: () => 0 })).toBe(25);
  });
});
