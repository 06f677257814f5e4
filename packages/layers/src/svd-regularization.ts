/**
 * The model-level SVD regularizer: λ_o·Σ orth + λ_s·Σ sparsity over every SVDConv2D/SVDDense layer
 * (Yang et al. 2020, eq. 5). Called inside `tf.variableGrads` by the worker's train step, so it reads
 * the layers' variables directly and builds a differentiable graph.
 */
import * as tf from '@tensorflow/tfjs';
import { SvdTrainError, type SparsityKind } from '@svd-train/core';
import { SVDConv2D } from './svd-conv2d.js';
import { SVDDense } from './svd-dense.js';
import { orthogonalityPenalty } from './orthogonality.js';
import { sparsityPenalty } from './sparsity.js';

export interface SvdRegularizationOptions {
  lambdaO: number;
  lambdaS: number;
  sparsity: SparsityKind;
}

export interface SvdRegularization {
  /** lambdaO·orth + lambdaS·sparsity. */
  total: tf.Scalar;
  /** Σ over SVD layers of the orthogonality penalty (before λ_o). */
  orth: tf.Scalar;
  /** Σ over SVD layers of the sparsity penalty (before λ_s; 0 for 'none'). */
  sparsity: tf.Scalar;
}

/** Every SVDConv2D/SVDDense layer of `model`, in layer order, recursing into nested models. */
export function svdLayers(model: tf.LayersModel | tf.layers.Layer): (SVDConv2D | SVDDense)[] {
  const out: (SVDConv2D | SVDDense)[] = [];
  const visit = (l: tf.layers.Layer): void => {
    if (l instanceof SVDConv2D || l instanceof SVDDense) out.push(l);
    const inner = (l as unknown as { layers?: tf.layers.Layer[] }).layers;
    if (Array.isArray(inner)) inner.forEach(visit);
  };
  visit(model);
  return out;
}

/** Refuses λs that are not finite numbers (both ways of computing the regularizer call it). */
export function checkRegularizationOptions(opts: SvdRegularizationOptions): void {
  if (!Number.isFinite(opts.lambdaO) || !Number.isFinite(opts.lambdaS)) {
    throw new SvdTrainError('CONFIG_INVALID', `svdRegularization: lambdaO ${opts.lambdaO}, lambdaS ${opts.lambdaS}; expected finite numbers`);
  }
}

/**
 * Regularizer of a model, as tf scalars the caller owns (the intermediates are freed).
 * A model without SVD layers gives zeros.
 */
export function svdRegularization(model: tf.LayersModel | tf.layers.Layer, opts: SvdRegularizationOptions): SvdRegularization {
  checkRegularizationOptions(opts);
  const layers = svdLayers(model);
  const res = tf.tidy(() => {
    const orthTerms: tf.Scalar[] = [];
    const sparseTerms: tf.Scalar[] = [];
    for (const l of layers) {
      orthTerms.push(orthogonalityPenalty(l.U.read(), l.V.read()));
      if (opts.sparsity !== 'none') sparseTerms.push(sparsityPenalty(opts.sparsity, l.s.read()));
    }
    const orth = (orthTerms.length ? tf.addN(orthTerms) : tf.scalar(0));
    const sparsity = (sparseTerms.length ? tf.addN(sparseTerms) : tf.scalar(0));
    const total = tf.add<tf.Scalar>(tf.mul(orth, opts.lambdaO), tf.mul(sparsity, opts.lambdaS));
    return { total, orth, sparsity };
  });
  return res;
}
