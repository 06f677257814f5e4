import { describe, expect, it } from 'vitest';
import { effectiveRank, effectiveRanks, selectRankByEnergy, singularValues } from './spectrum.js';

describe('effectiveRank', () => {
  it('s=[3,2,1] (energies 9,4,1 of 14): e=0.01 -> 3, e=0.3 -> 2, e=0.5 -> 1', () => {
    expect(effectiveRank([1, 3, 2], 0.01)).toBe(3);
    expect(effectiveRank([1, 3, 2], 0.3)).toBe(2);
    expect(effectiveRank([1, 3, 2], 0.5)).toBe(1);
  });
  it('an all-zero vector: rank 1 for every e, the one value pruning keeps so the layer keeps a shape', () => {
    // Pruning and the effective rank used to disagree here (prune kept 1, the rank said 0); they
    // are one rule now, so the logged rank is what `prune --energy e` leaves.
    for (const e of [0.01, 0.5]) {
      expect(selectRankByEnergy([0, 0, 0], e)).toEqual({ k: 1, keptIndices: [0] });
      expect(effectiveRank([0, 0, 0], e)).toBe(1);
    }
    expect(effectiveRank([0, 0, 0], 0)).toBe(3);
    expect(selectRankByEnergy([], 0.01)).toEqual({ k: 0, keptIndices: [] });
  });
  it('e=0 keeps every value even where the float64 partial sums reach the total early', () => {
    expect(effectiveRank([1, 1e-9, 0], 0)).toBe(3);
    expect(selectRankByEnergy([1, 1e-9, 0], 0).keptIndices).toEqual([0, 1, 2]);
  });
  it('uses |s| (negative singular values count by magnitude)', () => {
    expect(effectiveRank([-3, 0.001], 0.01)).toBe(1);
  });
});

describe('effectiveRanks', () => {
  it('one entry per `<layer>.s` parameter, by module name, ignoring U, V and biases', () => {
    const params = [
      { name: 'stem.0.U', data: [1, 2] },
      { name: 'stem.0.s', data: [10, 1, 0.1] },
      { name: 'layers.0.conv1.s', data: [1, 1, 1, 1] },
      { name: 'fc.bias', data: [5] },
    ];
    expect(effectiveRanks(params, 0.05)).toEqual({ 'stem.0': 1, 'layers.0.conv1': 4 });
    expect(effectiveRanks(params, 0.001)).toEqual({ 'stem.0': 2, 'layers.0.conv1': 4 });
    expect(effectiveRanks([{ name: 'fc.weight', data: [1] }])).toEqual({});
  });
});

describe('singularValues', () => {
  it('picks `<layer>.s` and a bare `s`, not names that merely end in s', () => {
    const params = [{ name: 'a.s', data: [1] }, { name: 's', data: [2] }, { name: 'a.bias', data: [3] }, { name: 'a.Us', data: [4] }];
    expect(singularValues(params)).toEqual([{ layer: 'a', s: [1] }, { layer: 's', s: [2] }]);
  });
});
