/**
 * Singular-vector orthogonality penalty (Yang et al. 2020, eq. 3): keeps U and V close to
 * orthonormal so that s stays a meaningful spectrum and pruning small |s| is safe.
 */
import * as tf from '@tensorflow/tfjs';

/**
 * (‖UᵀU − I‖²_F + ‖VᵀV − I‖²_F) / r², differentiable (∂/∂U = 4U(UᵀU − I)/r²).
 * @param U [m, r] left singular vectors.
 * @param V [p, r] right singular vectors (same r).
 * @returns a scalar; intermediates are freed (computed inside tidy).
 */
export function orthogonalityPenalty(U: tf.Tensor, V: tf.Tensor): tf.Scalar {
  return tf.tidy(() => {
    const r = U.shape[1]!;
    const eye = tf.eye(r);
    const gram = (A: tf.Tensor): tf.Tensor => tf.sum(tf.square(tf.sub(tf.matMul(A as tf.Tensor2D, A as tf.Tensor2D, true, false), eye)));
    return tf.div<tf.Scalar>(tf.add(gram(U), gram(V)), r * r);
  });
}
