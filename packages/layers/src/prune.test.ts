import { describe, it, expect } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadReference, expectClose, type RefTensor } from './test-support/index.js';
import { selectRankByEnergy } from '@svd-train/core';
import { selectRankByThreshold, pruneByEnergy, pruneByThreshold, svdRanks, energyForMacs, layerEnergies } from './prune.js';
import { buildResNet } from './resnet.js';
import { namedParameters, getBuffers, setBuffers, getParameters, setParameters } from './parameter-names.js';
import { SVDConv2D } from './svd-conv2d.js';
import { SVDDense } from './svd-dense.js';
import { countMacs, macsPerRank } from './macs.js';

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

describe('pruneByEnergy / pruneByThreshold on a ResNet-8', () => {
  const arch = { depth: 20, widths: [4, 8, 16], blocks: [1, 1, 1], strides: [1, 2, 2] } as const;
  const build = (decomposition: 'channel' | 'spatial' = 'channel') =>
    buildResNet({ ...arch, widths: [...arch.widths], blocks: [...arch.blocks], strides: [...arch.strides], decomposition, seed: 5 });

  function randomise(model: tf.LayersModel): void {
    // Non-trivial BN statistics and a decaying spectrum so the energy rule drops something.
    setBuffers(model, getBuffers(model).map((b, i) => ({
      ...b,
      data: b.data.map((_, j) => (b.name.endsWith('running_var') ? 0.5 + ((i * 7 + j * 3) % 5) / 5 : (((i + j) % 7) - 3) / 10)),
    })));
    for (const p of namedParameters(model)) {
      if (!p.name.endsWith('.s')) continue;
      const s = p.variable.read().dataSync() as Float32Array;
      tf.tidy(() => {
        p.variable.write(tf.tensor1d(s.map((v, j) => v * Math.pow(0.6, j))));
      });
    }
  }

  it('keeps what the energy rule says and equals the model with the dropped s set to zero', () => {
    const model = build();
    randomise(model);
    const x = tf.randomNormal([2, 32, 32, 3], 0, 1, 'float32', 9);
    const { model: pruned, report } = pruneByEnergy(model, 0.1);
    expect(report.length).toBe(namedParameters(model).filter((p) => p.name.endsWith('.s')).length);
    for (const r of report) {
      const s = (model.getLayer(r.name) as unknown as { s: tf.LayerVariable }).s.read().dataSync() as Float32Array;
      const { k, keptIndices } = selectRankByEnergy(s, 0.1);
      expect([r.name, r.rankAfter]).toEqual([r.name, k]);
      expect(r.paramsAfter).toBeLessThanOrEqual(r.paramsBefore);
      // Zero the dropped values in the original: its output must then equal the pruned model's.
      const kept = new Set(keptIndices);
      tf.tidy(() => {
        (model.getLayer(r.name) as unknown as { s: tf.LayerVariable }).s.write(tf.tensor1d(s.map((v, j) => (kept.has(j) ? v : 0))));
      });
    }
    expect(report.some((r) => r.rankAfter < r.rankBefore)).toBe(true);
    const want = model.predict(x) as tf.Tensor;
    const got = pruned.predict(x) as tf.Tensor;
    expectClose('pruned logits', got, want, 1e-5);
    // BN statistics were copied, not re-initialised.
    expect(getBuffers(pruned)).toEqual(getBuffers(model));
    tf.dispose([x, want, got]);
    model.dispose();
    pruned.dispose();
  });

  /** energyForMacs at MAC weight w meets `target`, and just below its energy the budget is not met: it is the smallest (to the rounding). */
  function expectSmallestEnergy(model: tf.LayersModel, target: number, w: number): void {
    const { energy, macs } = energyForMacs(model, target, { macWeight: w });
    const at = (e: number) => {
      const { model: m } = pruneByEnergy(model, e, w);
      const t = countMacs(m).total;
      m.dispose();
      return t;
    };
    expect(macs).toBe(at(energy));
    expect(macs).toBeLessThanOrEqual(target);
    expect(at(energy * 0.98)).toBeGreaterThan(target);
  }

  it('energyForMacs finds the smallest energy that meets a MAC budget', () => {
    const model = build();
    randomise(model);
    const full = countMacs(model).total;
    const target = Math.round(full * 0.6);
    expectSmallestEnergy(model, target, 0);
    expect(energyForMacs(model, full)).toEqual({ energy: 0, macs: full });
    const err = (() => { try { energyForMacs(model, 10); } catch (e) { return e as { code: string; message: string }; } return null; })();
    expect(err?.code).toBe('CONFIG_INVALID');
    expect(err?.message).toMatch(/below what pruning can reach/);
    model.dispose();
  });

  it('macsPerRank: a layer\'s factored MACs per unit of rank, from the shapes it runs on', () => {
    const model = build();
    const cost = macsPerRank(model);
    const svd = model.layers.filter((l) => l instanceof SVDConv2D || l instanceof SVDDense);
    expect([...cost.keys()]).toEqual(svd.map((l) => l.name));
    // The stem: 3×3 conv from 3 channels to rank r, then 1×1 to 4 channels, on 32×32 outputs.
    expect(cost.get(svd[0].name)).toBe(32 * 32 * (3 * 3 * 3 + 4));
    // The dense layer after global pooling: (16 inputs + 10 outputs) per unit of rank.
    expect(cost.get(svd[svd.length - 1].name)).toBe(16 + 10);
    model.dispose();
  });

  it('MAC weight: each layer gives up e·(its MACs per rank / the costliest layer\'s)^α, and prunes by that', () => {
    const model = build();
    randomise(model);
    const cost = macsPerRank(model);
    const max = Math.max(...cost.values());
    expect([...layerEnergies(model, 0.2).values()].every((e) => e === 0.2)).toBe(true);
    const energies = layerEnergies(model, 0.2, 0.5);
    for (const [name, c] of cost) expect(energies.get(name)).toBeCloseTo(0.2 * Math.sqrt(c / max), 12);
    expect(Math.max(...energies.values())).toBe(0.2);
    // The cheapest layer (the dense one) gives up the least.
    expect(Math.min(...energies.values())).toBe(energies.get([...cost].sort((a, b) => a[1] - b[1])[0][0]));
    const { model: pruned, report } = pruneByEnergy(model, 0.2, 0.5);
    for (const r of report) {
      const s = (model.getLayer(r.name) as unknown as { s: tf.LayerVariable }).s.read().dataSync() as Float32Array;
      expect(r.rankAfter).toBe(selectRankByEnergy(s, energies.get(r.name)!).k);
    }
    // Less energy removed in the cheap layers: they keep at least the ranks of the unweighted prune.
    const { model: plainRule, report: unweighted } = pruneByEnergy(model, 0.2);
    report.forEach((r, i) => expect(r.rankAfter).toBeGreaterThanOrEqual(unweighted[i].rankAfter));
    expect(report.some((r, i) => r.rankAfter > unweighted[i].rankAfter)).toBe(true);
    expect(() => layerEnergies(model, 0.2, -1)).toThrow(/MAC weight -1; expected a number ≥ 0/);
    for (const m of [model, pruned, plainRule]) m.dispose();
  });

  it('energyForMacs with a MAC weight meets the budget at the smallest energy of that weighting', () => {
    const model = build();
    randomise(model);
    expectSmallestEnergy(model, Math.round(countMacs(model).total * 0.6), 0.5);
    model.dispose();
  });

  it('threshold pruning: ranks equal the count of |s| > tau, no layer costs more, a cut rank costs less or switches form', () => {
    const model = build();
    randomise(model);
    const { model: pruned, report } = pruneByThreshold(model, 0.05);
    report.forEach((r) => {
      const s = (model.getLayer(r.name) as unknown as { s: tf.LayerVariable }).s.read().dataSync() as Float32Array;
      expect(r.rankAfter).toBe(selectRankByThreshold(s, 0.05).k);
      expect(r.macsAfter).toBeLessThanOrEqual(r.macsBefore);
      if (r.formAfter === 'factored') expect(r.macsAfter).toBeLessThan(r.macsBefore);
    });
    expect(report.some((r) => r.rankAfter < r.rankBefore)).toBe(true);
    model.dispose();
    pruned.dispose();
  });

  for (const decomposition of ['channel', 'spatial'] as const) {
    it(`${decomposition}: energy 0 changes no number (ranks, params, MACs, forms) and no output`, () => {
      const model = build(decomposition);
      randomise(model);
      const { model: pruned, report } = pruneByEnergy(model, 0);
      for (const r of report) {
        expect([r.name, r.rankAfter, r.paramsAfter, r.macsAfter, r.formAfter]).toEqual([r.name, r.rankBefore, r.paramsBefore, r.macsBefore, r.formBefore]);
      }
      expect(countMacs(pruned)).toEqual(countMacs(model));
      const x = tf.randomNormal([2, 32, 32, 3], 0, 1, 'float32', 3);
      const [a, b] = [model.predict(x) as tf.Tensor, pruned.predict(x) as tf.Tensor];
      expectClose('energy-0 logits', b, a, 0);
      tf.dispose([x, a, b]);
      model.dispose();
      pruned.dispose();
    });
  }

  it('a full-rank ResNet-8 runs every SVD layer merged; at low rank the convs switch to factored', () => {
    const model = build();
    randomise(model);
    const { model: pruned, report } = pruneByEnergy(model, 0.3);
    expect(report.every((r) => r.formBefore === 'merged')).toBe(true);
    expect(report.some((r) => r.formAfter === 'factored')).toBe(true);
    for (const r of report) {
      const layer = pruned.getLayer(r.name) as SVDConv2D | SVDDense;
      expect([r.name, layer.forward]).toEqual([r.name, 'auto']);
    }
    model.dispose();
    pruned.dispose();
  });

  for (const decomposition of ['channel', 'spatial'] as const) {
    it(`${decomposition}: buildResNet({ ranks: svdRanks(pruned) }) has the pruned shapes and, loaded with its weights, its outputs`, () => {
      const model = build(decomposition);
      randomise(model);
      const { model: pruned, report } = pruneByEnergy(model, 0.1);
      const ranks = svdRanks(pruned);
      // Module names (not tfjs layer names), one per SVD layer, equal to the report's ranks.
      expect(Object.keys(ranks).sort()).toEqual(report.map((r) => r.name.replace(/_/g, '.')).sort());
      for (const r of report) expect(ranks[r.name.replace(/_/g, '.')]).toBe(r.rankAfter);
      expect(report.some((r) => r.rankAfter < r.rankBefore)).toBe(true);

      const rebuilt = buildResNet({ ...arch, widths: [...arch.widths], blocks: [...arch.blocks], strides: [...arch.strides], decomposition, ranks, seed: 77 });
      const shapes = (m: tf.LayersModel) => getParameters(m).map((p) => [p.name, ...p.shape]);
      expect(shapes(rebuilt)).toEqual(shapes(pruned));
      expect(svdRanks(rebuilt)).toEqual(ranks);
      // Every SVD layer keeps 'auto' (its cheaper form at its rank), as pruneModel leaves them.
      for (const l of rebuilt.layers) if (l instanceof SVDConv2D || l instanceof SVDDense) expect([l.name, l.forward]).toEqual([l.name, 'auto']);

      setParameters(rebuilt, getParameters(pruned));
      setBuffers(rebuilt, getBuffers(pruned));
      const x = tf.randomNormal([2, 32, 32, 3], 0, 1, 'float32', 11);
      const want = pruned.predict(x) as tf.Tensor;
      const got = rebuilt.predict(x) as tf.Tensor;
      expectClose('rebuilt pruned logits', got, want, 1e-6);
      tf.dispose([x, want, got]);
      model.dispose();
      pruned.dispose();
      rebuilt.dispose();
    });
  }
});
