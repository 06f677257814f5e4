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
  let keptMean: tf.Tensor1D | undefined;
  let keptVar: tf.Tensor1D | undefined;
  const op = tf.customGrad((...args) => {
    const save = args[args.length - 1] as unknown as tf.GradSaveFunc;
    const [tIn, pIn, g, b] = args as tf.Tensor[];
    const inputs: Record<string, tf.Tensor> = { t: tIn, p: pIn, gamma: g, beta: b };
    if (residual) inputs.residual = args[4] as tf.Tensor;
    const [y, mean, variance, tmean, cov, scale, invstd] = tf.engine().runKernel<tf.Tensor[]>(RANK_BN_TRAIN, inputs, { epsilon: eps, relu, pTransposed });
    keptMean = tf.keep(mean as tf.Tensor1D);
    keptVar = tf.keep(variance as tf.Tensor1D);
    // The output is saved for the ReLU's mask: the next layer keeps it anyway (it is its input).
    save(relu ? [tIn, pIn, tmean, cov, scale, invstd, y] : [tIn, pIn, tmean, cov, scale, invstd]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
        const [st, sp, stm, scov, ssc, sinv, sy] = saved;
        const gin: Record<string, tf.Tensor> = { dy, t: st, p: sp, tmean: stm, cov: scov, scale: ssc, invstd: sinv };
        if (sy) gin.y = sy;
        return tf.engine().runKernel<tf.Tensor[]>(RANK_BN_GRAD, gin, { residual, pTransposed });
      },
    };
  });
  const y = residual ? op(t, p, gamma, beta, opts.residual!) : op(t, p, gamma, beta);
  const mean = tf.clone(keptMean!);
  const variance = tf.clone(keptVar!);
  keptMean!.dispose();
  keptVar!.dispose();
  return { y, mean, variance };
}
