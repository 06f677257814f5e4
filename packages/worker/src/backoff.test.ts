import { describe, expect, it } from 'vitest';
import { MAX_TIMER_MS } from '@svd-train/core';
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
  it('never exceeds setTimeout\'s longest delay, which Node would fire after 1 ms (capMs 3e9, baseMs 1e10)', () => {
    expect(backoffDelay(40, { baseMs: 100, capMs: 3e9, random: () => 1 })).toBe(MAX_TIMER_MS);
    expect(backoffDelay(0, { baseMs: 1e10, capMs: 1e11, random: () => 0 })).toBe(MAX_TIMER_MS);
  });
});
