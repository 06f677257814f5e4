/**
 * Singular-value sparsity penalties (Yang et al. 2020, sec. 3.2). They act on |s| because s is a
 * free parameter during training and can change sign. All compute inside tidy and are
 * differentiable; at s = 0 the subgradient sign(0) = 0 is used (tfjs abs' gradient).
 */
import * as tf from '@tensorflow/tfjs';
import type { SparsityKind } from '@svd-train/core';

/** ‖s‖₁ for s [r]; ∂/∂s = sign(s). */
export function l1(s: tf.Tensor): tf.Scalar {
  return tf.tidy(() => tf.sum<tf.Scalar>(tf.abs(s)));
}

/**
 * Hoyer measure ‖s‖₁ / ‖s‖₂ (scale-invariant, so it sparsifies without shrinking every value);
 * ∂/∂s = sign(s)/‖s‖₂ − ‖s‖₁·s/‖s‖₂³.
 */
export function hoyer(s: tf.Tensor): tf.Scalar {
  return tf.tidy(() => tf.div<tf.Scalar>(tf.sum(tf.abs(s)), tf.sqrt(tf.sum(tf.square(s)))));
}

/** Hoyer-square ‖s‖₁² / ‖s‖₂² (the paper's DeepHoyer variant; smoother near sparse optima). */
export function hoyerSquare(s: tf.Tensor): tf.Scalar {
  return tf.tidy(() => tf.div<tf.Scalar>(tf.square(tf.sum(tf.abs(s))), tf.sum(tf.square(s))));
}

/** The penalty named by a config's `sparsity` field ('none' gives 0, still a differentiable scalar). */
export function sparsityPenalty(kind: SparsityKind, s: tf.Tensor): tf.Scalar {
  switch (kind) {
    case 'hoyer':
      return hoyer(s);
    case 'l1':
      return l1(s);
    case 'hoyer2':
      return hoyerSquare(s);
    case 'none':
      return tf.scalar(0);
  }
}
