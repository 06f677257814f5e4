// The second half of a factored SVD layer at inference, with the batch norm that follows it.
//
// Channel decomposition (PointwiseAffine), a 1×1 conv:
//   y[i, :] = act(t[i, :] · w + shift (+ res[i, :]))
// t [M, R] (the rank-space activations, NHWC flattened to rows), w [R, C] (the 1×1 conv's matrix
// with batch norm's per-channel scale already folded into its columns), shift [C], res [M, C] or
// null (a residual block's shortcut), act = max(·, 0) when relu.
//
// Spatial decomposition (RowConvAffine), a 1×kw conv along the width:
//   y[q, x, :] = act(Σ_j t[q, x·sw + j − pl, :] · w[j] + shift (+ res[q, x, :]))
// t [Q, Win, R] (Q = batch·height rows of the k×1 conv's output), w [kw, R, C], y and res
// [Q, Wout, C]; columns outside [0, Win) are the conv's zero padding. PointwiseAffine is the case
// Q = 1, kw = 1, sw = 1, pl = 0.
//
// Why: run separately, the conv writes [M, C] and batch norm's affine pass reads it back and
// writes it again; a pruned ResNet-20 spent about a third of its inference there (profile of
// batch 256: 32 ms of 1×1 convs and 40 ms of affine passes out of 188 ms). Here the C outputs of
// a pixel stay in registers from the first FMA to the store, so a layer costs one read of t and
// res and one write of y.
#pragma once
#include <cstdint>

namespace svd_pointwise {

// mask, unless null, gets y > 0 as bits: MaskWords(c) 16-bit words per output pixel, bit l of word
// k for channel 16·k + l (what a training backward masks dy with, instead of reading y again).
constexpr int64_t MaskWords(int64_t c) { return (c + 15) / 16; }

void PointwiseAffine(const float* t, const float* w, const float* shift, float* y, int64_t m, int64_t r, int64_t c,
                     bool relu, const float* res, uint16_t* mask = nullptr);

struct RowGeom {
  int64_t q, win, wout, kw, sw, pl, r, c;
};

void RowConvAffine(const RowGeom& g, const float* t, const float* w, const float* shift, float* y, bool relu,
                   const float* res, uint16_t* mask = nullptr);

// A whole spatially factored layer at inference, with its batch norm (SpatialAffine):
//   t = conv_kh×1(x, k1) (stride sh, top padding pt), y = act(conv_1×kw(t, w2) + shift (+ res))
// x [N, H, W, Cin], k1 [kh, Cin, R], w2 [kw, R, C] (scale folded in), y and res [N, OH, OW, C].
// Each output row's t row is computed into a small per-thread buffer (zero-padded at both ends)
// and consumed at once, so t, which a separate first conv writes to memory and the second reads
// back, never leaves the cache.
struct SpatialGeom {
  int64_t n, h, w, cin, kh, sh, pt, oh, r, kw, sw, pl, ow, c;
};

void SpatialAffine(const SpatialGeom& g, const float* x, const float* k1, const float* w2, const float* shift, float* y,
                   bool relu, const float* res);

}  // namespace svd_pointwise
