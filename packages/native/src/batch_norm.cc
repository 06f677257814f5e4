// See batch_norm.h. The kernels are compiled for AVX-512F and for AVX2 + FMA (the pragmas below)
// and reached only after Applies() checked the CPU, as small_oc_conv.cc.
#include "batch_norm.h"

#include "prefetch.h"

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SVD_BN_X86 1
#endif

namespace svd_bn {

#ifdef SVD_BN_X86

namespace {

constexpr int64_t kBlock = 64;

// From the shifted column sums: mean and biased variance out, and each channel's scale and shift
// (y = x·scale + shift). Shared by the AVX-512 and AVX2 forwards.
void ScaleShift(const double* s, const double* s2, const float* k, const float* gamma, const float* beta, float* mean,
                float* var, float* scale, float* shift, int64_t m, int64_t c, double eps) {
  for (int64_t j = 0; j < c; j++) {
    const double d = s[j] / m, mu = k[j] + d;
    const double v = std::max(s2[j] / m - d * d, 0.0);
    mean[j] = static_cast<float>(mu);
    var[j] = static_cast<float>(v);
    const double a = gamma[j] / std::sqrt(v + eps);
    scale[j] = static_cast<float>(a);
    shift[j] = static_cast<float>(beta[j] - mu * a);
  }
}

// From Σ g and Σ g·(x − mean): dbeta and dgamma out, and the backward's dx = k1·g − k2 − k3·(x −
// mean) coefficients. Shared by the AVX-512 and AVX2 backwards.
void GradCoefficients(const double* sdy, const double* sdxc, const float* var, const float* gamma, float* dgamma,
                      float* dbeta, float* k1, float* k2, float* k3, int64_t m, int64_t c, double eps) {
  for (int64_t j = 0; j < c; j++) {
    const double inv = 1.0 / std::sqrt(static_cast<double>(var[j]) + eps);
    const float invf = static_cast<float>(inv);
    const double sdyx = sdxc[j] * invf;  // Σ dy·x̂, x̂ = (x − mean)·invstd
    dbeta[j] = static_cast<float>(sdy[j]);
    dgamma[j] = static_cast<float>(sdyx);
    const float scale = gamma[j] * invf;
    k1[j] = scale;
    k2[j] = static_cast<float>(scale * sdy[j] / m);
    k3[j] = static_cast<float>(scale * sdyx / m) * invf;
  }
}

// The kernels, written once over a 16-channel group G and its operations (below), and compiled
// twice: for AVX-512 (G one 16-lane register) and for AVX2 + FMA (G two 8-lane registers, for CPUs
// without AVX-512: many AMD EPYC and Ryzen, Intel client CPUs). Each channel's sums run in the same
// order in both.
#pragma GCC push_options
#pragma GCC target("avx512f")
namespace avx512 {
using G = __m512;
inline G Load(const float* p) { return _mm512_loadu_ps(p); }
inline void Store(float* p, G v) { _mm512_storeu_ps(p, v); }
inline G Zero() { return _mm512_setzero_ps(); }
inline G Add(G a, G b) { return _mm512_add_ps(a, b); }
inline G Sub(G a, G b) { return _mm512_sub_ps(a, b); }
inline G Mul(G a, G b) { return _mm512_mul_ps(a, b); }
inline G Max(G a, G b) { return _mm512_max_ps(a, b); }
inline G Fmadd(G a, G b, G c) { return _mm512_fmadd_ps(a, b, c); }
inline G Fnmadd(G a, G b, G c) { return _mm512_fnmadd_ps(a, b, c); }
// Bit j set where lane j is > 0.
inline uint16_t PositiveBits(G v) { return static_cast<uint16_t>(_mm512_cmp_ps_mask(v, _mm512_setzero_ps(), _CMP_GT_OQ)); }
// v where the bit of its lane is set, else 0.
inline G KeepBits(uint16_t bits, G v) { return _mm512_maskz_mov_ps(static_cast<__mmask16>(bits), v); }
// v where y > 0, else 0.
inline G KeepPositive(G y, G v) { return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(y, _mm512_setzero_ps(), _CMP_GT_OQ), v); }
#include "batch_norm_kernels.h"
}  // namespace avx512
#pragma GCC pop_options

#pragma GCC push_options
#pragma GCC target("avx2,fma")
namespace avx2 {
struct G {
  __m256 lo, hi;
};
inline G Load(const float* p) { return {_mm256_loadu_ps(p), _mm256_loadu_ps(p + 8)}; }
inline void Store(float* p, G v) { _mm256_storeu_ps(p, v.lo), _mm256_storeu_ps(p + 8, v.hi); }
inline G Zero() { return {_mm256_setzero_ps(), _mm256_setzero_ps()}; }
inline G Add(G a, G b) { return {_mm256_add_ps(a.lo, b.lo), _mm256_add_ps(a.hi, b.hi)}; }
inline G Sub(G a, G b) { return {_mm256_sub_ps(a.lo, b.lo), _mm256_sub_ps(a.hi, b.hi)}; }
inline G Mul(G a, G b) { return {_mm256_mul_ps(a.lo, b.lo), _mm256_mul_ps(a.hi, b.hi)}; }
inline G Max(G a, G b) { return {_mm256_max_ps(a.lo, b.lo), _mm256_max_ps(a.hi, b.hi)}; }
inline G Fmadd(G a, G b, G c) { return {_mm256_fmadd_ps(a.lo, b.lo, c.lo), _mm256_fmadd_ps(a.hi, b.hi, c.hi)}; }
inline G Fnmadd(G a, G b, G c) { return {_mm256_fnmadd_ps(a.lo, b.lo, c.lo), _mm256_fnmadd_ps(a.hi, b.hi, c.hi)}; }
inline __m256 Positive(__m256 v) { return _mm256_cmp_ps(v, _mm256_setzero_ps(), _CMP_GT_OQ); }
inline uint16_t PositiveBits(G v) {
  return static_cast<uint16_t>(_mm256_movemask_ps(Positive(v.lo)) | (_mm256_movemask_ps(Positive(v.hi)) << 8));
}
// 8 bits as lanes: all ones where the bit is set.
inline __m256 BitsToLanes(int bits) {
  const __m256i sel = _mm256_setr_epi32(1, 2, 4, 8, 16, 32, 64, 128);
  return _mm256_castsi256_ps(_mm256_cmpeq_epi32(_mm256_and_si256(_mm256_set1_epi32(bits), sel), sel));
}
inline G KeepBits(uint16_t bits, G v) {
  return {_mm256_and_ps(BitsToLanes(bits & 0xff), v.lo), _mm256_and_ps(BitsToLanes(bits >> 8), v.hi)};
}
inline G KeepPositive(G y, G v) { return {_mm256_and_ps(Positive(y.lo), v.lo), _mm256_and_ps(Positive(y.hi), v.hi)}; }
#include "batch_norm_kernels.h"
}  // namespace avx2
#pragma GCC pop_options

bool g_prefer_avx2 = false;
bool HasAvx512() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
}
bool HasAvx2() {
  static const bool ok = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma");
  return ok;
}
// Which kernels run: AVX-512 where the CPU has it (unless PreferAvx2), else AVX2 + FMA.
bool UseAvx512() { return HasAvx512() && !g_prefer_avx2; }
}  // namespace

bool Applies(int64_t c) { return (HasAvx512() || HasAvx2()) && (c == 16 || c == 32 || c == 64); }

bool PreferAvx2(bool on) {
  if (on && !HasAvx2()) return false;
  g_prefer_avx2 = on;
  return true;
}

void Forward(const float* x, const float* gamma, const float* beta, float* y, float* mean, float* var, int64_t m,
             int64_t c, double eps, const float* res, bool relu, uint16_t* mask) {
  if (UseAvx512()) return avx512::Forward(x, gamma, beta, y, mean, var, m, c, eps, res, relu, mask);
  avx2::Forward(x, gamma, beta, y, mean, var, m, c, eps, res, relu, mask);
}

void MaskOf(const float* y, int64_t m, int64_t c, uint16_t* mask) {
  if (UseAvx512()) return avx512::MaskOf(y, m, c, mask);
  avx2::MaskOf(y, m, c, mask);
}

void Backward(const float* x, const float* dy, const float* mean, const float* var, const float* gamma, float* dx,
              float* dgamma, float* dbeta, int64_t m, int64_t c, double eps, const float* y, float* dres,
              const uint16_t* mask) {
  if (UseAvx512()) return avx512::Backward(x, dy, mean, var, gamma, dx, dgamma, dbeta, m, c, eps, y, dres, mask);
  avx2::Backward(x, dy, mean, var, gamma, dx, dgamma, dbeta, m, c, eps, y, dres, mask);
}

#else  // not x86-64 with GCC/Clang: the generic loops run every shape

bool Applies(int64_t) { return false; }
bool PreferAvx2(bool on) { return !on; }
void Forward(const float*, const float*, const float*, float*, float*, float*, int64_t, int64_t, double, const float*, bool,
             uint16_t*) {
  std::abort();
}
void Backward(const float*, const float*, const float*, const float*, const float*, float*, float*, float*, int64_t,
              int64_t, double, const float*, float*, const uint16_t*) {
  std::abort();
}
void MaskOf(const float*, int64_t, int64_t, uint16_t*) { std::abort(); }

#endif

}  // namespace svd_bn
