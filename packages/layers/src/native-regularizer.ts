/**
 * The SVD regularizer (λ_o·Σ orth + λ_s·Σ sparsity) and its gradient for every U, s and V in one
 * native call, for the training step on the native engine (`computeGradients`).
 *
 * Why: `svdRegularization` builds the two penalties of every layer as tfjs ops on the autograd tape.
 * They are small (U and V have r columns, s r entries) but each layer's come to some 14 kernel calls
 * forward and back, and tfjs' dispatch costs tens of µs per call whatever the size: taking the
 * regularizer out of a ResNet-20 step saved 10–11 ms of it at full rank and when pruned alike, a
 * tenth of a pruned step (three runs each way). Computing the same penalties with their
 * closed-form gradients as untaped tfjs ops saved nothing measurable (as many kernel calls). The
 * addon's `svdRegularizer` takes every layer's factors in one array and writes every gradient in
 * one pass (its products on oneDNN); the same formulas as orthogonality.ts and sparsity.ts.
 */
import * as tf from '@tensorflow/tfjs';
import { loadNative } from '@svd-train/native';
import { SvdTrainError, type SparsityKind } from '@svd-train/core';
import { RANK_BN_TRAIN } from './kernels/native.js';
import { checkRegularizationOptions, svdLayers, type SvdRegularizationOptions } from './svd-regularization.js';

const KIND: Record<SparsityKind, number> = { none: 0, l1: 1, hoyer: 2, hoyer2: 3 };

let enabled = true;

/** Turns the native regularizer on or off (benchmarks and tests; on by default). */
export function setNativeRegularizer(on: boolean): void {
  enabled = on;
}

/** Whether `computeGradients` takes the regularizer from the addon: the native engine is the active one and its addon has it. */
export function nativeRegularizerAvailable(): boolean {
  if (!enabled || tf.getKernel(RANK_BN_TRAIN, tf.getBackend()) == null) return false;
  const nat = loadNative();
  return nat.ok && typeof nat.addon.svdRegularizer === 'function';
}

export interface NativeRegularization {
  /** Σ over SVD layers of the orthogonality penalty (before λ_o). */
  orth: number;
  /** Σ over SVD layers of the sparsity penalty (before λ_s). */
  sparsity: number;
  /** λ-weighted d(λ_o·orth + λ_s·sparsity)/d variable for every SVD layer's U, s and V. */
  grads: Map<tf.LayerVariable, Float32Array>;
}

/** The regularizer of `model` and its gradients, by the addon (check `nativeRegularizerAvailable` first). */
export function nativeRegularization(
  model: tf.LayersModel | tf.layers.Layer,
  opts: SvdRegularizationOptions,
  /** How to read a variable's values (default a copy through dataSync; the native step passes views of the heap). */
  read: (v: tf.LayerVariable) => Float32Array = (v) => v.read().dataSync() as Float32Array,
): NativeRegularization {
  checkRegularizationOptions(opts);
  const nat = loadNative();
  if (!nat.ok || !nat.addon.svdRegularizer) throw new SvdTrainError('CONFIG_INVALID', 'nativeRegularization: the native addon has no svdRegularizer; check nativeRegularizerAvailable() first');
  const layers = svdLayers(model);
  const grads = new Map<tf.LayerVariable, Float32Array>();
  if (layers.length === 0) return { orth: 0, sparsity: 0, grads };
  const vars = layers.flatMap((l) => [l.U, l.V, l.s]);
  const dims = layers.flatMap((l) => [l.U.shape[0]!, l.V.shape[0]!, l.U.shape[1]!]);
  const sizes = vars.map((v) => v.shape.reduce((a, b) => a! * b!, 1)!);
  const factors = new Float32Array(sizes.reduce((a, b) => a + b, 0));
  const out = new Float32Array(factors.length);
  let off = 0;
  vars.forEach((v, i) => {
    factors.set(read(v), off);
    grads.set(v, out.subarray(off, off + sizes[i]));
    off += sizes[i];
  });
  const [orth, sparsity] = nat.addon.svdRegularizer(factors, out, dims, [KIND[opts.sparsity]], opts.lambdaO, opts.lambdaS);
  return { orth, sparsity, grads };
}
