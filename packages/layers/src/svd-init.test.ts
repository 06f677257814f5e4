import { describe, expect, it } from 'vitest';
import { seededNormal } from './svd-init.js';

describe('seededNormal', () => {
  it('seed 5: the same first five draws as before it moved onto core mulberry32 (initial weights unchanged)', () => {
    // Printed by the svd-init copy of mulberry32 that core's `mulberry32` replaced.
    const n = seededNormal(5);
    expect([n(), n(), n(), n(), n()]).toEqual([0.12273935033027801, -0.8530621039643037, -1.2449413209437818, -1.2167712134847524, -1.8577869161897862]);
  });
});
