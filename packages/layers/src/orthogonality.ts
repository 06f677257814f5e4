/**
 * Singular-vector orthogonality penalty (Yang et al. 2020, eq. 3): keeps U and V close to
 * orthonormal so that s stays a meaningful spectrum and pruning small |s| is safe.
 */
import * as tf from '@tensorflow/tfjs';

/**
 * (‖UᵀU − I‖²_F + ‖VᵀV − I‖²_F) / r², differentiable (∂/∂U = 4U(UᵀU − I)/r²).
 * @param U [m, r] left singular vectors.
 * @param V [p, r] right singular vectors (same r).
 * @returns a scalar; intermediates are freed (the custom-gradient op runs in its own scope).
 */
export function orthogonalityPenalty(U: tf.Tensor, V: tf.Tensor): tf.Scalar {
  return orthogonalityOp(U, V);
}

/**
 * One custom-gradient op instead of about thirty taped ones (matMul, sub, square, sum, add, div and
 * their gradients, and a saved copy for each), for every SVD layer of every step: the gradient is
 * the closed form 4·A·(AᵀA − I)/r² for A = U and V.
 */
const orthogonalityOp = tf.customGrad((...args) => {
  const [U, V, save] = args as unknown as [tf.Tensor2D, tf.Tensor2D, tf.GradSaveFunc];
  const r = U.shape[1];
  const eye = tf.eye(r);
  const du = tf.sub(tf.matMul(U, U, true, false), eye);
  const dv = tf.sub(tf.matMul(V, V, true, false), eye);
  save([U, V, du, dv]);
  return {
    value: tf.div<tf.Scalar>(tf.add(tf.sum(tf.square(du)), tf.sum(tf.square(dv))), r * r),
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [sU, sV, sdu, sdv] = saved as tf.Tensor2D[];
      const k = tf.mul(dy, 4 / (r * r));
      return [tf.mul(tf.matMul(sU, sdu), k), tf.mul(tf.matMul(sV, sdv), k)];
    },
  };
});
