// Training batch norm over a row-major [M, C] view (NHWC, M = N·H·W) for C 16, 32 or 64 (the
// ResNets' channels) on AVX-512, or on AVX2 + FMA where the CPU lacks AVX-512 (one source,
// batch_norm_kernels.h, compiled for both): the forward (statistics, the affine map, the shortcut
// and the ReLU) and its gradient, with every channel's accumulators in registers (on AVX2 at 64
// channels, 16 registers of 8 lanes hold less than the sums need: some spill).
//
// Why: the generic loops in addon.cc keep their per-channel sums in arrays indexed by a run-time C,
// so each row is a load, an add and a store per 16 channels, and the backward makes a third pass to
// mask dy. A plain ResNet-20's or a full-rank SVD-ResNet-20's step spends about a fifth of its
// kernel time in batch norm (Intel Xeon, batch 64: 31 of 133 ms).
//
// Column sums run in float over blocks of kBlock rows, flushed into double (as the generic loops).
// The forward takes the mean and variance in one pass about the mean of the first kBlock rows (the
// generic loops: the mean, then a second pass for the variance about it), so no variance is the
// difference of two large sums either way.
//
// mask (MaskWords(c) 16-bit words per row, pointwise_affine.h's layout), where given: the forward
// writes y > 0 into it, and the backward masks dy with it instead of reading y (a 4 MiB stream of a
// ResNet's first stage becomes 0.25 MiB).
#pragma once
#include <cstdint>

namespace svd_bn {

// Whether the kernels below take C channels on this CPU (else the caller's generic loops run).
bool Applies(int64_t c);

// on: the AVX2 kernels even where the CPU has AVX-512 (for tests and benchmarks); off: the best the
// CPU has. False, changing nothing, where on is asked of a CPU without AVX2 + FMA.
bool PreferAvx2(bool on);

// y = (x − mean)·invstd·gamma + beta (+ res), then max(·, 0) when relu; mean and biased variance
// per channel out. res and mask may be null.
void Forward(const float* x, const float* gamma, const float* beta, float* y, float* mean, float* var, int64_t m,
             int64_t c, double eps, const float* res, bool relu, uint16_t* mask);

// The gradient: dy masked by y > 0 first where y is given (the forward's output with relu; null
// without; the forward's mask stands in for it where given), dres (or null) receives the masked dy
// (the shortcut's gradient), dbeta = Σ dy, dgamma = Σ dy·x̂, dx = gamma·invstd/M·(M·dy − Σ dy −
// x̂·Σ dy·x̂).
void Backward(const float* x, const float* dy, const float* mean, const float* var, const float* gamma, float* dx,
              float* dgamma, float* dbeta, int64_t m, int64_t c, double eps, const float* y, float* dres,
              const uint16_t* mask);

// mask <- y > 0 as bits (Applies(c) must hold): what Forward writes with its mask, for a forward
// that ran elsewhere (the generic loops) while a later Backward here may read the mask.
void MaskOf(const float* y, int64_t m, int64_t c, uint16_t* mask);

}  // namespace svd_bn
