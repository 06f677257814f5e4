// Train-mode batch norm of a channel-wise factored conv, from its rank-space output (see
// packages/layers/src/rank-space-batch-norm.ts for the algebra). The layer's output u = t·p, with
// t [M, R] the rank-space activations (NHWC flattened to rows) and p [R, C] the 1×1 conv, is never
// written: u's batch mean and variance follow from t's mean and covariance (R-dimensional),
//   mean(u) = mean(t)·p,  var(u) = diag(pᵀ·cov(t)·p),
// and y = act(t·(p·diag(scale)) + shift (+ res)) is svd_pointwise::PointwiseAffine, with
// scale = gamma/√(var(u) + eps), shift = beta − mean(u)·scale.
//
// Why: computed as layers, the 1×1 conv writes [M, C], batch norm reads it twice forward and
// three times backward, and the 1×1 conv's two gradients read the [M, C] gradient again. Here the
// forward reads t twice (R channels) and writes y once; the backward reads dy (and y, for the
// ReLU's mask) once where its one-pass path applies (AVX-512, C 16/32/64, R <= 16), twice
// otherwise, and t twice.
#pragma once
#include <cstdint>

namespace svd_rank_bn {

// matmul(a, b, out, rows, k, n, ta, tb): out [rows, n] = a ([rows, k], or [k, rows] when ta) ·
// b ([k, n], or [n, k] when tb): the caller's GEMM (oneDNN's in the addon).
using MatMul = void (*)(const float* a, const float* b, float* out, int64_t rows, int64_t k, int64_t n, bool ta, bool tb);

// Outputs: y [M, C]; mean, variance (biased) of u [C]; tmean [R], cov [R, R] (biased) of t;
// scale, invstd [C] (kept for the backward); with relu and mask not null, y > 0 as bits
// (svd_pointwise::MaskWords(C) words per row, pointwise_affine.h). res [M, C] or null.
void Forward(const float* t, const float* p, const float* gamma, const float* beta, const float* res, float* y,
             float* mean, float* variance, float* tmean, float* cov, float* scale, float* invstd, int64_t m,
             int64_t r, int64_t c, double eps, bool relu, MatMul matmul, uint16_t* mask = nullptr);

// The gradient for dy [M, C], from the forward's t, p, tmean, cov, scale, invstd, and its output y
// when it applied the ReLU (null otherwise; its mask is y > 0). Outputs: dt [M, R], dp [R, C],
// dgamma, dbeta [C], and dres [M, C] (the residual's gradient, the masked dy) unless null. mask,
// the forward's bits of y > 0 (or null), stands in for y where the one-pass path runs: a bit per
// value read instead of a float (a stage-1 layer of a pruned ResNet-20: 1.15 -> 0.84 ms).
void Backward(const float* dy, const float* y, const float* t, const float* p, const float* tmean, const float* cov,
              const float* scale, const float* invstd, float* dt, float* dp, float* dgamma, float* dbeta,
              float* dres, int64_t m, int64_t r, int64_t c, MatMul matmul, const uint16_t* mask = nullptr);

}  // namespace svd_rank_bn
