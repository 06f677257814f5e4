/**
 * Train-mode batch norm of a channel-wise factored conv, computed from its rank-space output.
 *
 * A factored layer's output is u = t·P: t [n, r] is the k×k conv's output in rank space, P [r, c]
 * the 1×1 conv (Uᵀ). The batch norm after it needs only u's per-channel mean and variance, and
 * both follow from t's, which are r-dimensional: with m = mean(t) and Σ = cov(t) (biased),
 *   mean(u) = m·P,  var(u) = diag(Pᵀ·Σ·P).
 * So the 1×1 conv, the normalisation, the shortcut and the ReLU are one pass,
 *   y = relu?(t·(P·diag(a)) + (β − mean(u)·a) + residual),  a = γ/√(var(u) + eps),
 * the `SvdPointwiseAffine` kernel that fused inference runs, and u itself is never written. The
 * backward, from the usual batch-norm gradient du = a·(g − Σg/n − û·Σ(g·û)/n) (g: dy through the
 * ReLU's mask, û the normalised u), never forms du either:
 *   dβ = Σg,  G = tcᵀ·g (tc = t − m),  dγ = colsum(P ⊙ G)/σ,  K = a·dγ/(n·σ),
 *   dt = g·(P·diag(a))ᵀ − tc·(P·diag(K)·Pᵀ) − (a·dβ)ᵀ·Pᵀ/n,
 *   dP = G·diag(a) − n·Σ·P·diag(K),  dresidual = g.
 * (tc = t − m). The passes over the c-channel activations go from about ten (the 1×1 conv's
 * output, the two of batch norm forward and backward, the 1×1 conv's two gradients) to three (y
 * written; dy, and y for the ReLU's mask, read twice), or two where the backward runs in one pass
 * (AVX-512, c 16/32/64, r ≤ 16; rank_bn.cc); what is added works on the r-channel t,
 * which for a pruned layer is a fraction of the size.
 *
 * Both directions are one native kernel each (`SvdRankBnTrain`, `SvdRankBnGrad`,
 * packages/native/src/rank_bn.cc): written as tfjs ops, the same algebra took about 30% longer per
 * step than the unfused layers (some 800 more kernel calls and broadcast passes on the wasm
 * backend). So only where the engine has them (the native engine); the result is the same function
 * as the layers' own (batch-norm.ts) up to float rounding.
 */
import * as tf from '@tensorflow/tfjs';
import { RANK_BN_GRAD, RANK_BN_TRAIN } from './kernels/native.js';

export interface RankSpaceBatchNormResult {
  /** relu?(batchnorm(t·P) + residual), t's shape with c channels. */
  y: tf.Tensor;
  /** Batch mean of u = t·P per channel, [c]. Not differentiable. */
  mean: tf.Tensor1D;
  /** Biased batch variance of u per channel, [c]. Not differentiable. */
  variance: tf.Tensor1D;
}

/** Whether the active backend runs `rankSpaceBatchNormTrain` (the native engine's kernels). */
export function rankSpaceBatchNormAvailable(): boolean {
  const be = tf.getBackend();
  return tf.getKernel(RANK_BN_TRAIN, be) != null && tf.getKernel(RANK_BN_GRAD, be) != null;
}

/**
 * @param t the rank-space activations [N, H, W, r] (or [n, r])
 * @param p the 1×1 conv's matrix [r, c], or with `opts.pTransposed` its transpose [c, r] (a
 *   channel-factored layer's U as it is stored, which spares the taped Transpose each way)
 * @param gamma, beta [c]
 * @param opts.residual added after the normalisation (shape of the output), before the ReLU
 */
export function rankSpaceBatchNormTrain(
  t: tf.Tensor,
  p: tf.Tensor2D,
  gamma: tf.Tensor,
  beta: tf.Tensor,
  eps: number,
  opts: { residual?: tf.Tensor; relu?: boolean; pTransposed?: boolean } = {},
): RankSpaceBatchNormResult {
  const relu = opts.relu === true;
  const residual = opts.residual !== undefined;
  const pTransposed = opts.pTransposed === true;
  const inputs: Record<string, tf.Tensor> = { t, p, gamma, beta };
  if (opts.residual) inputs.residual = opts.residual;
  const [y, mean, variance, state, mask] = tf.engine().runKernel<tf.Tensor[]>(RANK_BN_TRAIN, inputs, { epsilon: eps, relu, residual, pTransposed });
  // The gradient keeps its own references to state and mask (the tape saves them); nobody else reads them.
  state.dispose();
  mask.dispose();
  return { y, mean: mean as tf.Tensor1D, variance: variance as tf.Tensor1D };
}

// The gradient of RANK_BN_TRAIN, registered once (only the native engine has the kernel): one
// RANK_BN_GRAD call from what the forward saved, t, p, y and the ReLU's mask as bits (which the
// one-pass backward reads instead of y) and its packed state. A registered gradient, not tf.customGrad: tfjs copies every saved tensor through an
// Identity kernel and a tape node, and customGrad's output statistics needed two more clones.
tf.registerGradient({
  kernelName: RANK_BN_TRAIN,
  inputsToSave: ['t', 'p'],
  outputsToSave: [true, false, false, true, true],
  gradFunc: (dys, saved, attrs) => {
    const [dy] = dys as tf.Tensor[];
    const [t, p, y, state, mask] = saved;
    const { relu, residual, pTransposed } = attrs as unknown as { relu: boolean; residual: boolean; pTransposed: boolean };
    const gin: Record<string, tf.Tensor> = { dy, t, p, state };
    if (relu) Object.assign(gin, { y, mask });
    const [dt, dp, dgamma, dbeta, dres] = tf.engine().runKernel<tf.Tensor[]>(RANK_BN_GRAD, gin, { residual, pTransposed });
    return { t: () => dt, p: () => dp, gamma: () => dgamma, beta: () => dbeta, residual: () => dres };
  },
});
