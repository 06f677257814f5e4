/**
 * Singular-value sparsity penalties (Yang et al. 2020, sec. 3.2). They act on |s| because s is a
 * free parameter during training and can change sign. All free their intermediates and are
 * differentiable; at s = 0 the subgradient sign(0) = 0 is used (tf.sign, as in PyTorch's abs gradient).
 */
import * as tf from '@tensorflow/tfjs';
import type { SparsityKind } from '@svd-train/core';

/**
 * ‖s‖₁ for s [r]; ∂/∂s = sign(s), 0 at s = 0 as PyTorch's abs gradient (tfjs' own Abs gradient
 * gives −1 there, so it is a custom-gradient op).
 */
export function l1(s: tf.Tensor): tf.Scalar {
  return l1Op(s);
}

const l1Op = tf.customGrad((...args) => {
  const [s, save] = args as unknown as [tf.Tensor, tf.GradSaveFunc];
  save([s]);
  return { value: tf.sum<tf.Scalar>(tf.abs(s)), gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => [tf.mul(tf.sign(saved[0]), dy)] };
});

/**
 * Hoyer measure ‖s‖₁ / ‖s‖₂ (scale-invariant, so it sparsifies without shrinking every value);
 * ∂/∂s = sign(s)/‖s‖₂ − ‖s‖₁·s/‖s‖₂³.
 */
export function hoyer(s: tf.Tensor): tf.Scalar {
  return hoyerOp(s);
}

/** Hoyer-square ‖s‖₁² / ‖s‖₂² (the paper's DeepHoyer variant; smoother near sparse optima). */
export function hoyerSquare(s: tf.Tensor): tf.Scalar {
  return hoyerSquareOp(s);
}

/**
 * The Hoyer ratios as custom-gradient ops, with their closed-form gradients: a handful of kernels
 * each way instead of a dozen taped ones per SVD layer and step. With a = ‖s‖₁, b = ‖s‖₂²:
 * ∂(a/√b)/∂s = sign(s)/√b − a·s/b^{3/2};  ∂(a²/b)/∂s = 2a·sign(s)/b − 2a²·s/b².
 */
const hoyerOp = tf.customGrad((...args) => {
  const [s, save] = args as unknown as [tf.Tensor, tf.GradSaveFunc];
  const a = tf.sum(tf.abs(s));
  const n2 = tf.sqrt(tf.sum(tf.square(s)));
  save([s, a, n2]);
  return {
    value: tf.div<tf.Scalar>(a, n2),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [ss, sa, sn] = saved as [tf.Tensor, tf.Scalar, tf.Scalar];
      const g = tf.sub(tf.div(tf.sign(ss), sn), tf.mul(ss, tf.div(sa, tf.pow(sn, 3))));
      return [tf.mul(g, dy)];
    },
  };
});

const hoyerSquareOp = tf.customGrad((...args) => {
  const [s, save] = args as unknown as [tf.Tensor, tf.GradSaveFunc];
  const a = tf.sum(tf.abs(s));
  const b = tf.sum(tf.square(s));
  save([s, a, b]);
  return {
    value: tf.div<tf.Scalar>(tf.square(a), b),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [ss, sa, sb] = saved as [tf.Tensor, tf.Scalar, tf.Scalar];
      const g = tf.sub(tf.mul(tf.sign(ss), tf.div(tf.mul(sa, 2), sb)), tf.mul(ss, tf.div(tf.mul(tf.square(sa), 2), tf.square(sb))));
      return [tf.mul(g, dy)];
    },
  };
});

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
