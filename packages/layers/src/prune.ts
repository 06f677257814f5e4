/**
 * Rank pruning of trained SVD layers (Yang et al. 2020, §3.3): after training with Hoyer
 * sparsification most singular values are near zero, and dropping them shrinks U, s, V
 * physically. Every layer keeps the 'auto' forward, so it runs whichever form (merged or factored)
 * is cheaper at its new rank: a layer's MACs never grow by pruning, and energy 0 changes nothing.
 */
import * as tf from '@tensorflow/tfjs';
import { selectRankByEnergy, SvdTrainError } from '@svd-train/core';
import { SVDConv2D } from './svd-conv2d.js';
import { SVDDense } from './svd-dense.js';
import { countMacs, macsPerRank, type ComputeForm } from './macs.js';
import { moduleNameFor } from './parameter-names.js';

/** Keeps the singular values with |s| > tau (at least one, the largest, so shapes stay valid). */
export function selectRankByThreshold(s: ArrayLike<number>, tau: number): { k: number; keptIndices: number[] } {
  const kept: number[] = [];
  let best = 0;
  for (let i = 0; i < s.length; i++) {
    if (Math.abs(s[i]) > tau) kept.push(i);
    if (Math.abs(s[i]) > Math.abs(s[best])) best = i;
  }
  if (kept.length === 0 && s.length > 0) kept.push(best);
  return { k: kept.length, keptIndices: kept };
}

/**
 * Current rank of every SVD layer by PyTorch module name ('layers.3.conv1' → 5), in the model's
 * layer order. `buildResNet({ ..., ranks: svdRanks(pruned) })` builds a model with the pruned
 * model's shapes, which is how a pruned checkpoint is fine-tuned.
 */
export function svdRanks(model: tf.LayersModel): Record<string, number> {
  const out: Record<string, number> = {};
  for (const layer of model.layers) if (isSvdLayer(layer)) out[moduleNameFor(layer.name)] = layer.rank;
  return out;
}

/** What pruning did to one SVD layer. */
export interface PruneLayerReport {
  /** tfjs layer name. */
  name: string;
  rankBefore: number;
  rankAfter: number;
  paramsBefore: number;
  paramsAfter: number;
  /** MACs per image in the form each model runs (see macs.ts). */
  macsBefore: number;
  macsAfter: number;
  /** The form the layer runs in before and after: merged (one conv) or factored (two). */
  formBefore: ComputeForm;
  formAfter: ComputeForm;
}

export interface PruneResult {
  /** A new model: SVD layers with physically smaller U, s, V, each in its cheaper form. */
  model: tf.LayersModel;
  report: PruneLayerReport[];
}

function isSvdLayer(layer: tf.layers.Layer): layer is SVDConv2D | SVDDense {
  return layer instanceof SVDConv2D || layer instanceof SVDDense;
}

/**
 * Rebuilds `model` with each SVD layer keeping only the singular triplets `select` picks, and
 * copies every other weight (BN gamma/beta/running stats, biases, plain layers) unchanged. The new
 * model computes what the old one computes with the dropped singular values set to zero.
 */
export function pruneModel(
  model: tf.LayersModel,
  select: (s: Float32Array, layerName: string) => { k: number; keptIndices: number[] },
): PruneResult {
  const kept = new Map<string, number[]>();
  for (const layer of model.layers) {
    if (!isSvdLayer(layer)) continue;
    const s = layer.s.read().dataSync() as Float32Array;
    kept.set(layer.name, select(s, layer.name).keptIndices);
  }
  // Rebuild from the config with the new ranks: the functional graph and every other layer's
  // configuration stay exactly as they were.
  const config = model.getConfig() as unknown as { layers: { className?: string; class_name?: string; config: Record<string, unknown> }[] };
  const cfg = JSON.parse(JSON.stringify(config)) as typeof config;
  for (const l of cfg.layers) {
    const idx = kept.get(l.config.name as string);
    if (!idx) continue;
    l.config.rank = idx.length;
  }
  const fromConfig = (tf.LayersModel as unknown as { fromConfig: (cls: unknown, c: unknown) => tf.LayersModel }).fromConfig;
  const pruned = fromConfig(tf.LayersModel, cfg);
  for (const layer of model.layers) {
    if (layer.weights.length === 0) continue;
    const target = pruned.getLayer(layer.name);
    const idx = kept.get(layer.name);
    if (!idx || !isSvdLayer(layer)) {
      target.setWeights(layer.getWeights());
      continue;
    }
    const idxT = tf.tensor1d(Int32Array.from(idx), 'int32');
    const values = layer.weights.map((w) => {
      const suffix = w.originalName.split('/').pop();
      const v = w.read();
      if (suffix === 'U' || suffix === 'V') return tf.gather(v, idxT, 1);
      if (suffix === 's') return tf.gather(v, idxT, 0);
      return tf.clone(v);
    });
    target.setWeights(values);
    tf.dispose([idxT, ...values]);
  }
  const before = countMacs(model).perLayer;
  const after = new Map(countMacs(pruned).perLayer.map((p) => [p.name, p]));
  const report: PruneLayerReport[] = [];
  for (const b of before) {
    const layer = model.getLayer(b.name);
    if (!isSvdLayer(layer)) continue;
    const a = after.get(b.name)!;
    report.push({
      name: b.name,
      rankBefore: layer.rank,
      rankAfter: (pruned.getLayer(b.name) as SVDConv2D | SVDDense).rank,
      paramsBefore: b.params,
      paramsAfter: a.params,
      macsBefore: b.macs,
      macsAfter: a.macs,
      formBefore: b.form,
      formAfter: a.form,
    });
  }
  return { model: pruned, report };
}

/**
 * The energy each SVD layer may give up when the model is pruned at energy e with MAC weight α:
 * e·(c_L / c_max)^α, where c_L is what one unit of the layer's rank costs in MACs per image
 * (`macsPerRank`) and c_max the largest c_L of the model. α = 0 is the paper's rule, every layer e;
 * with α > 0 the layers whose ranks cost the most MACs (large activations and many channels: stage 1's convolutions)
 * give up the most energy, and the cheap ones (stage 3, the dense layer) keep more of theirs, so a
 * MAC budget is met with less energy removed where it is cheap to keep. No layer gives up more than e.
 */
export function layerEnergies(model: tf.LayersModel, energy: number, macWeight = 0): Map<string, number> {
  if (!(macWeight >= 0 && Number.isFinite(macWeight))) {
    throw new SvdTrainError('CONFIG_INVALID', `prune MAC weight ${macWeight}; expected a number ≥ 0 (0: every layer gives up the same fraction of its energy)`);
  }
  const cost = macsPerRank(model);
  const max = Math.max(...cost.values());
  // At α = 0 every factor is exactly 1 (x ** 0), so each layer gets e itself.
  return new Map([...cost].map(([name, c]) => [name, energy * (c / max) ** macWeight]));
}

/**
 * Prunes every SVD layer with the energy rule (`selectRankByEnergy`): a fraction e of its energy
 * removed at most, or with `macWeight` α > 0 the fraction `layerEnergies` gives it.
 */
export function pruneByEnergy(model: tf.LayersModel, energy: number, macWeight = 0): PruneResult {
  if (!(energy >= 0 && energy < 1)) {
    throw new SvdTrainError('CONFIG_INVALID', `prune energy ${energy}; expected a fraction in [0, 1)`);
  }
  const energies = layerEnergies(model, energy, macWeight);
  return pruneModel(model, (s, name) => selectRankByEnergy(s, energies.get(name)!));
}

/** Prunes every SVD layer to the singular values with |s| > tau (at least one kept per layer). */
export function pruneByThreshold(model: tf.LayersModel, tau: number): PruneResult {
  if (!(tau >= 0)) throw new SvdTrainError('CONFIG_INVALID', `prune threshold ${tau}; expected a number ≥ 0`);
  return pruneModel(model, (s) => selectRankByThreshold(s, tau));
}

/**
 * The smallest pruning energy whose pruned model (at MAC weight `macWeight`, see `layerEnergies`)
 * costs at most `targetMacs` per image (counted as `countMacs` counts, in the form each layer runs). MACs only fall as the energy grows, so this
 * bisects on e in [0, 1) to within a fraction `relTol` of e (relative, because trained spectra are so
 * sparse that the answer can be far below any fixed step, e.g. 1e-6), down to e = 1e-12. Throws CONFIG_INVALID when even the cheapest prune that
 * keeps the fewest singular values (one per layer at MAC weight 0) costs more than the target,
 * naming that cost.
 */
/** The largest energy pruning takes: every SVD layer keeps one singular value (with MAC weight 0). */
export const FLOOR_ENERGY = 1 - 1e-9;

/** MACs per image of `model` pruned at energy e (and MAC weight, see pruneByEnergy), the pruned copy disposed. */
export function macsAfterPruning(model: tf.LayersModel, energy: number, macWeight = 0): number {
  const { model: pruned } = pruneByEnergy(model, energy, macWeight);
  const m = countMacs(pruned).total;
  pruned.dispose();
  return m;
}

export function energyForMacs(model: tf.LayersModel, targetMacs: number, opts: { relTol?: number; macWeight?: number } = {}): { energy: number; macs: number } {
  const { relTol = 1e-3, macWeight = 0 } = opts;
  if (!(targetMacs > 0)) throw new SvdTrainError('CONFIG_INVALID', `MAC target ${targetMacs}; expected a positive number of MACs per image`);
  const macsAt = (e: number): number => macsAfterPruning(model, e, macWeight);
  const full = countMacs(model).total;
  if (full <= targetMacs) return { energy: 0, macs: full };
  let lo = 0;
  let hi = FLOOR_ENERGY;
  const floor = macsAt(hi);
  if (floor > targetMacs) {
    throw new SvdTrainError(
      'CONFIG_INVALID',
      `MAC target ${targetMacs} per image is below what pruning can reach (${floor} MACs ${macWeight === 0 ? 'with one singular value per layer' : `at MAC weight ${macWeight}, where only the costliest layers go down to one singular value`}; the unpruned model costs ${full}). Fix: raise the target${macWeight === 0 ? '' : ', lower the MAC weight'}, or give an energy instead.`,
    );
  }
  let hiMacs = floor;
  while (hi - lo > relTol * hi && hi > 1e-12) {
    const mid = (lo + hi) / 2;
    const m = macsAt(mid);
    if (m <= targetMacs) {
      hi = mid;
      hiMacs = m;
    } else lo = mid;
  }
  // Rounded up to 3 significant digits, for logs and file names: a larger energy prunes at least
  // as much, so it still meets the target.
  const unit = 10 ** (Math.floor(Math.log10(hi)) - 2);
  const short = Number((Math.ceil(hi / unit) * unit).toPrecision(3));
  if (short >= hi && short < 1) return { energy: short, macs: macsAt(short) };
  return { energy: hi, macs: hiMacs };
}
