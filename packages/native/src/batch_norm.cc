// See batch_norm.h. Compiled for AVX-512F alone (the pragma below) and reached only after
// Applies() checked the CPU, as small_oc_conv.cc.
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

#pragma GCC push_options
#pragma GCC target("avx512f")

// out[j] += Σ over the 16·V lanes of acc (float partials of one block) in double.
template <int V>
inline void Flush(const __m512 (&acc)[V], double* out) {
  alignas(64) float lanes[16 * V];
  for (int v = 0; v < V; v++) _mm512_store_ps(lanes + 16 * v, acc[v]);
  for (int j = 0; j < 16 * V; j++) out[j] += lanes[j];
}

// Σ (x − k) and Σ (x − k)² per column over all rows (double), k the mean of the first kBlock rows:
// one pass over x, and with k that near the mean the variance Σ(x − k)²/m − (Σ(x − k)/m)² loses
// nothing to cancellation (a two-pass version read x once more, ~0.15 ms of a 4 MiB activation).
template <int V>
void ShiftedSums(const float* x, int64_t m, float* k, double* s, double* s2) {
  constexpr int64_t C = 16 * V;
  const int64_t head = std::min(m, kBlock);
  double h[C] = {};
  for (int64_t r = 0; r < head; r++)
    for (int64_t j = 0; j < C; j++) h[j] += x[r * C + j];
  for (int64_t j = 0; j < C; j++) k[j] = static_cast<float>(h[j] / head);
  __m512 kv[V];
  for (int v = 0; v < V; v++) kv[v] = _mm512_loadu_ps(k + 16 * v);
  for (int64_t r0 = 0; r0 < m; r0 += kBlock) {
    const int64_t r1 = std::min(m, r0 + kBlock);
    __m512 a1[V], a2[V];
    for (int v = 0; v < V; v++) a1[v] = _mm512_setzero_ps(), a2[v] = _mm512_setzero_ps();
    for (int64_t r = r0; r < r1; r++) {
      const float* row = x + r * C;
      for (int v = 0; v < V; v++) svd_prefetch::ForRead(row + 16 * v);
      for (int v = 0; v < V; v++) {
        const __m512 d = _mm512_sub_ps(_mm512_loadu_ps(row + 16 * v), kv[v]);
        a1[v] = _mm512_add_ps(a1[v], d);
        a2[v] = _mm512_fmadd_ps(d, d, a2[v]);
      }
    }
    Flush<V>(a1, s);
    Flush<V>(a2, s2);
  }
}

template <int V>
void ForwardV(const float* x, const float* gamma, const float* beta, float* y, float* mean, float* var, int64_t m,
              double eps, const float* res, bool relu, uint16_t* mask) {
  constexpr int64_t C = 16 * V;
  double s[C] = {}, s2[C] = {};
  alignas(64) float k[C], scale[C], shift[C];
  ShiftedSums<V>(x, m, k, s, s2);
  for (int64_t j = 0; j < C; j++) {
    const double d = s[j] / m, mu = k[j] + d;
    const double v = std::max(s2[j] / m - d * d, 0.0);
    mean[j] = static_cast<float>(mu);
    var[j] = static_cast<float>(v);
    const double a = gamma[j] / std::sqrt(v + eps);
    scale[j] = static_cast<float>(a);
    shift[j] = static_cast<float>(beta[j] - mu * a);
  }
  __m512 a[V], b[V];
  for (int v = 0; v < V; v++) a[v] = _mm512_load_ps(scale + 16 * v), b[v] = _mm512_load_ps(shift + 16 * v);
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t r = 0; r < m; r++) {
    const float* row = x + r * C;
    float* out = y + r * C;
    for (int v = 0; v < V; v++) {
      svd_prefetch::ForRead(row + 16 * v);
      svd_prefetch::ForWrite(out + 16 * v);
      if (res) svd_prefetch::ForRead(res + r * C + 16 * v);
    }
    for (int v = 0; v < V; v++) {
      __m512 o = _mm512_fmadd_ps(_mm512_loadu_ps(row + 16 * v), a[v], b[v]);
      if (res) o = _mm512_add_ps(o, _mm512_loadu_ps(res + r * C + 16 * v));
      if (relu) o = _mm512_max_ps(o, zero);
      if (mask) mask[r * V + v] = static_cast<uint16_t>(_mm512_cmp_ps_mask(o, zero, _CMP_GT_OQ));
      _mm512_storeu_ps(out + 16 * v, o);
    }
  }
}

// dy at float offset off (a multiple of 16) masked by y > 0: by the forward's mask bits where given,
// else by y; neither: dy as it is.
inline __m512 Masked(const float* dy, const float* y, const uint16_t* mask, int64_t off) {
  const __m512 d = _mm512_loadu_ps(dy + off);
  if (mask) return _mm512_maskz_mov_ps(static_cast<__mmask16>(mask[off / 16]), d);
  if (!y) return d;
  return _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_loadu_ps(y + off), _mm512_setzero_ps(), _CMP_GT_OQ), d);
}

template <int V>
void BackwardV(const float* x, const float* dy, const float* mean, const float* var, const float* gamma, float* dx,
               float* dgamma, float* dbeta, int64_t m, double eps, const float* y, float* dres, const uint16_t* mask) {
  constexpr int64_t C = 16 * V;
  __m512 mu[V];
  for (int v = 0; v < V; v++) mu[v] = _mm512_loadu_ps(mean + 16 * v);
  // Pass 1: Σ g and Σ g·(x − mean) (invstd applied after), g = dy masked, written to dres.
  double sdy[C] = {}, sdxc[C] = {};
  for (int64_t r0 = 0; r0 < m; r0 += kBlock) {
    const int64_t r1 = std::min(m, r0 + kBlock);
    __m512 a1[V], a2[V];
    for (int v = 0; v < V; v++) a1[v] = _mm512_setzero_ps(), a2[v] = _mm512_setzero_ps();
    for (int64_t r = r0; r < r1; r++) {
      const int64_t off = r * C;
      for (int v = 0; v < V; v++) {
        svd_prefetch::ForRead(x + off + 16 * v);
        svd_prefetch::ForRead(dy + off + 16 * v);
        if (y && !mask) svd_prefetch::ForRead(y + off + 16 * v);
        if (dres) svd_prefetch::ForWrite(dres + off + 16 * v);
      }
      for (int v = 0; v < V; v++) {
        const __m512 g = Masked(dy, y, mask, off + 16 * v);
        if (dres) _mm512_storeu_ps(dres + off + 16 * v, g);
        a1[v] = _mm512_add_ps(a1[v], g);
        a2[v] = _mm512_fmadd_ps(g, _mm512_sub_ps(_mm512_loadu_ps(x + off + 16 * v), mu[v]), a2[v]);
      }
    }
    Flush<V>(a1, sdy);
    Flush<V>(a2, sdxc);
  }
  alignas(64) float k1[C], k2[C], k3[C];
  for (int64_t j = 0; j < C; j++) {
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
  __m512 c1[V], c2[V], c3[V];
  for (int v = 0; v < V; v++)
    c1[v] = _mm512_load_ps(k1 + 16 * v), c2[v] = _mm512_load_ps(k2 + 16 * v), c3[v] = _mm512_load_ps(k3 + 16 * v);
  // Pass 2: dx = k1·g − k2 − k3·(x − mean), g read back from dres or masked again.
  for (int64_t r = 0; r < m; r++) {
    const int64_t off = r * C;
    for (int v = 0; v < V; v++) {
      const int64_t o = off + 16 * v;
      svd_prefetch::ForRead(x + o);
      svd_prefetch::ForWrite(dx + o);
      if (dres) {
        svd_prefetch::ForRead(dres + o);
      } else {
        svd_prefetch::ForRead(dy + o);
        if (y && !mask) svd_prefetch::ForRead(y + o);
      }
    }
    for (int v = 0; v < V; v++) {
      const __m512 g = dres ? _mm512_loadu_ps(dres + off + 16 * v) : Masked(dy, y, mask, off + 16 * v);
      const __m512 xc = _mm512_sub_ps(_mm512_loadu_ps(x + off + 16 * v), mu[v]);
      const __m512 o = _mm512_fnmadd_ps(c3[v], xc, _mm512_sub_ps(_mm512_mul_ps(c1[v], g), c2[v]));
      _mm512_storeu_ps(dx + off + 16 * v, o);
    }
  }
}

template <int V>
void MaskOfV(const float* y, int64_t m, uint16_t* mask) {
  const __m512 zero = _mm512_setzero_ps();
  for (int64_t i = 0; i < m * V; i++) mask[i] = static_cast<uint16_t>(_mm512_cmp_ps_mask(_mm512_loadu_ps(y + 16 * i), zero, _CMP_GT_OQ));
}

#pragma GCC pop_options

}  // namespace

bool Applies(int64_t c) {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok && (c == 16 || c == 32 || c == 64);
}

void Forward(const float* x, const float* gamma, const float* beta, float* y, float* mean, float* var, int64_t m,
             int64_t c, double eps, const float* res, bool relu, uint16_t* mask) {
  if (c == 16) return ForwardV<1>(x, gamma, beta, y, mean, var, m, eps, res, relu, mask);
  if (c == 32) return ForwardV<2>(x, gamma, beta, y, mean, var, m, eps, res, relu, mask);
  if (c == 64) return ForwardV<4>(x, gamma, beta, y, mean, var, m, eps, res, relu, mask);
  std::abort();  // Applies(c) is false
}

void MaskOf(const float* y, int64_t m, int64_t c, uint16_t* mask) {
  if (c == 16) return MaskOfV<1>(y, m, mask);
  if (c == 32) return MaskOfV<2>(y, m, mask);
  if (c == 64) return MaskOfV<4>(y, m, mask);
  std::abort();  // Applies(c) is false
}

void Backward(const float* x, const float* dy, const float* mean, const float* var, const float* gamma, float* dx,
              float* dgamma, float* dbeta, int64_t m, int64_t c, double eps, const float* y, float* dres,
              const uint16_t* mask) {
  if (c == 16) return BackwardV<1>(x, dy, mean, var, gamma, dx, dgamma, dbeta, m, eps, y, dres, mask);
  if (c == 32) return BackwardV<2>(x, dy, mean, var, gamma, dx, dgamma, dbeta, m, eps, y, dres, mask);
  if (c == 64) return BackwardV<4>(x, dy, mean, var, gamma, dx, dgamma, dbeta, m, eps, y, dres, mask);
  std::abort();  // Applies(c) is false
}

#else  // not x86-64 with GCC/Clang: the generic loops run every shape

bool Applies(int64_t) { return false; }
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
