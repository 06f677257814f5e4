// The second half of a factored SVD layer at inference, with the batch norm that follows it:
//   y[i, :] = act(t[i, :] · w + shift (+ res[i, :]))
// t [M, R] (the rank-space activations, NHWC flattened to rows), w [R, C] (the 1×1 conv's matrix
// with batch norm's per-channel scale already folded into its columns), shift [C], res [M, C] or
// null (a residual block's shortcut), act = max(·, 0) when relu.
//
// Why: run separately, the 1×1 conv writes [M, C] and batch norm's affine pass reads it back and
// writes it again; a pruned ResNet-20 spent about a third of its inference there (profile of
// batch 256: 32 ms of 1×1 convs and 40 ms of affine passes out of 188 ms). Here the C outputs of
// a row stay in registers from the first FMA to the store, so a layer costs one read of t and res
// and one write of y.
#pragma once
#include <cstdint>

namespace svd_pointwise {

void PointwiseAffine(const float* t, const float* w, const float* shift, float* y, int64_t m, int64_t r, int64_t c,
                     bool relu, const float* res);

}  // namespace svd_pointwise
