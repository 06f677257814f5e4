import { describe, expect, it } from 'vitest';
import { resolveConfig } from '@svd-train/core';
import { coerceFlagValues } from './flag-values.js';

function resolveFlags(flags: Record<string, unknown>, file?: Record<string, unknown>) {
  return resolveConfig(coerceFlagValues(flags), file, {});
}

describe('coerceFlagValues (flag text → typed config values)', () => {
  it('converts by field kind', () => {
    const c = resolveFlags({ lr: '0.05', nesterov: 'false', milestones: '10,20', limitTrain: '500', limitTest: 'none', port: '0' });
    expect(c).toMatchObject({ lr: 0.05, nesterov: false, milestones: [10, 20], limitTrain: 500, limitTest: null, port: 0 });
  });

  it('reads pipeline flags: numbers, lists, and none for no pruning', () => {
    const c = resolveFlags({ pruneEnergy: '0.01', finetuneEpochs: '10', finetuneLr: '0.02', sweepEnergies: '0.01,0.05' });
    expect([c.pruneEnergy, c.finetuneEpochs, c.finetuneLr, c.sweepEnergies]).toEqual([0.01, 10, 0.02, [0.01, 0.05]]);
    expect(resolveFlags({ pruneEnergy: 'none' }).pruneEnergy).toBeNull();
    const m = resolveFlags({ pruneMacs: '13.6e6', finetuneEpochs: '2' });
    expect([m.pruneMacs, m.finetuneEpochs]).toEqual([13.6e6, 2]);
    expect(resolveFlags({ sweepEnergies: '[]' }).sweepEnergies).toEqual([]);
    const f = resolveFlags({ pruneMacs: '13.6e6', finetuneEpochs: '2', finetuneLambdaO: '0.1', finetuneWeightDecay: '1e-4' });
    expect([f.finetuneLambdaO, f.finetuneWeightDecay]).toEqual([0.1, 1e-4]);
    expect(resolveFlags({ finetuneWeightDecay: 'none' }).finetuneWeightDecay).toBeNull();
    const p = resolveFlags({ plainEpochs: '50', plainLr: '0.2' });
    expect([p.plainEpochs, p.plainLr]).toEqual([50, 0.2]);
    expect(resolveFlags({ plainLr: 'none' }).plainLr).toBeNull();
  });

  it('parses --ranks as JSON or module=rank pairs, and none as null (clearing the file\'s)', () => {
    expect(resolveFlags({ ranks: '{"fc": 4, "stem.0": 2}' }).ranks).toEqual({ fc: 4, 'stem.0': 2 });
    expect(resolveFlags({ ranks: 'stem.0=3, layers.0.conv1=4' }).ranks).toEqual({ 'stem.0': 3, 'layers.0.conv1': 4 });
    expect(resolveFlags({ ranks: 'none' }, { ranks: { fc: 2 } }).ranks).toBeNull();
  });

  it('passes text that does not parse through, so the error shows it as typed, with its flag', () => {
    expect(() => resolveFlags({ lr: 'fast' })).toThrow(/lr = "fast" \(from flag --lr\).*expected number/);
    expect(() => resolveFlags({ ranks: 'fc=x' })).toThrow('ranks = "fc=x"');
    expect(() => resolveFlags({ milestones: '10,ten' })).toThrow('milestones = "10,ten"');
    expect(() => resolveFlags({ nesterov: 'maybe' })).toThrow('nesterov = "maybe"');
  });

  it('leaves strings of string fields and non-strings alone', () => {
    expect(coerceFlagValues({ optimizer: 'adam', data: '/d/1', lr: 0.3, epochs: undefined })).toEqual({ optimizer: 'adam', data: '/d/1', lr: 0.3, epochs: undefined });
  });
});
