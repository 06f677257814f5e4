/**
 * A trained plain network as the start of SVD training: every conv and dense kernel of a plain
 * ResNet written into the SVD model of the same architecture as its exact SVD (at full rank the same
 * function, up to float32 round-off; at a lower rank the best rank-r approximation, Eckart–Young),
 * every other weight (batch norm, biases, running statistics) copied as it is.
 */
import type * as tf from '@tensorflow/tfjs';
import { SvdTrainError } from '@svd-train/core';
import { getBuffers, getParameters, namedParameters, setBuffers, setParameters } from './parameter-names.js';
import { SVDConv2D } from './svd-conv2d.js';
import { SVDDense } from './svd-dense.js';
import { svdFromWeight } from './svd-init.js';

/** One SVD layer as `decomposeInto` wrote it: the singular values kept and their share of the weight's energy. */
export interface DecomposedLayer {
  name: string;
  rank: number;
  fullRank: number;
  /** Σ of the kept s² over Σ of all s² of the plain weight (1 at full rank). */
  energyKept: number;
}

/**
 * Writes the weights of `plain` (a model without SVD layers) into `svd` (the same architecture with
 * SVD layers, each built at the rank it should get). Layers pair by name; a layer or weight of one
 * model that the other lacks, or a shape that differs, is an error naming it; `svd` may then be
 * partly written (build a fresh one to retry).
 */
export function decomposeInto(plain: tf.LayersModel, svd: tf.LayersModel): DecomposedLayer[] {
  const plainLayers = new Map(plain.layers.map((l) => [l.name, l]));
  const report: DecomposedLayer[] = [];
  for (const layer of svd.layers) {
    if (!(layer instanceof SVDConv2D) && !(layer instanceof SVDDense)) continue;
    const source = plainLayers.get(layer.name);
    const kernel = source?.weights.find((w) => /(^|\/)kernel$/.test(w.originalName));
    if (!source || !kernel || source instanceof SVDConv2D || source instanceof SVDDense) {
      throw new SvdTrainError(
        'SHAPE_MISMATCH',
        `SVD layer '${layer.name}' has no plain conv or dense layer of that name with a kernel in the source model; expected a plain (svd: false) model of the same architecture`,
      );
    }
    const want = layer instanceof SVDConv2D ? (({ n, c, kh, kw }) => [kh, kw, c, n])(layer.geometry()) : [layer.inFeatures, layer.units];
    if (kernel.shape.length !== want.length || kernel.shape.some((d, i) => d !== want[i])) {
      throw new SvdTrainError(
        'SHAPE_MISMATCH',
        `layer '${layer.name}': the plain kernel has shape [${kernel.shape.join(',')}], the SVD layer needs [${want.join(',')}]; expected a plain model of the same architecture (depth, widths)`,
      );
    }
    const value = kernel.read();
    const factors = svdFromWeight(value, { layout: 'tfjs', decomposition: layer instanceof SVDConv2D ? layer.decomposition : 'dense', rank: layer.rank });
    layer.setFactors(factors);
    // Σ of all s² is ‖W‖²_F, so the energy kept needs no second SVD or the dropped values.
    const total = (value.dataSync() as Float32Array).reduce((a, w) => a + w * w, 0);
    const kept = factors.s.reduce((a, v) => a + v * v, 0);
    const full = Math.min(factors.m, factors.p);
    report.push({ name: layer.name, rank: factors.r, fullRank: full, energyKept: factors.r === full || total === 0 ? 1 : Math.min(kept / total, 1) });
  }
  // Everything but the SVD factors keeps its PyTorch name in both models: copy by name.
  const factorNames = new Set(namedParameters(svd).filter((p) => /\.(U|s|V)$/.test(p.name)).map((p) => p.name));
  const plainParams = new Map(getParameters(plain).map((t) => [t.name, t]));
  const current = getParameters(svd);
  const rest = current.map((t) => {
    if (factorNames.has(t.name)) return t;
    const from = plainParams.get(t.name);
    if (!from) throw new SvdTrainError('SHAPE_MISMATCH', `parameter '${t.name}' of the SVD model has no counterpart in the plain model`);
    return from;
  });
  setParameters(svd, rest);
  setBuffers(svd, getBuffers(plain));
  return report;
}
