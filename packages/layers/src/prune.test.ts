import { describe, it, expect } from 'vitest';
import { loadReference, type RefTensor } from './test-support/index.js';
import { selectRankByEnergy, selectRankByThreshold } from './prune.js';

interface PruneCase {
  name: string;
  s: RefTensor;
  results: { energy: number; k: number; kept_indices: number[] }[];
}

describe('selectRankByEnergy matches prune.json exactly', () => {
  const ref = loadReference<{ cases: PruneCase[] }>('prune');
  for (const c of ref.cases) {
    for (const r of c.results) {
      it(`${c.name} e=${r.energy}`, () => {
        const got = selectRankByEnergy(c.s.data, r.energy);
        expect(got.k).toBe(r.k);
        expect(got.keptIndices).toEqual(r.kept_indices);
      });
    }
  }
});

describe('selectRankByThreshold', () => {
  it('keeps |s| > tau, including negative s', () => {
    expect(selectRankByThreshold([3, -2, 0.01, -0.5], 0.1)).toEqual({ k: 3, keptIndices: [0, 1, 3] });
  });
  it('keeps the largest value when all are below tau', () => {
    expect(selectRankByThreshold([0.01, -0.05, 0.02], 1)).toEqual({ k: 1, keptIndices: [1] });
  });
});
