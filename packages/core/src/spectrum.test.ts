import { describe, expect, it } from 'vitest';
import { effectiveRank, effectiveRanks, singularValues } from './spectrum.js';

describe('effectiveRank', () => {
  it('s=[3,2,1] (energies 9,4,1 of 14): e=0.01 -> 3, e=0.3 -> 2, e=0.5 -> 1', () => {
    expect(effectiveRank([1, 3, 2], 0.01)).toBe(3);
    expect(effectiveRank([1, 3, 2], 0.3)).toBe(2);
    expect(effectiveRank([1, 3, 2], 0.5)).toBe(1);
    expect(effectiveRank([0, 0], 0.01)).toBe(0);
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
