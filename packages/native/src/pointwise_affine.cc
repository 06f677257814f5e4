// See pointwise_affine.h. C a multiple of 16 up to 64 (ResNets' 16, 32, 64 channels) runs an
// AVX-512 kernel with the outputs of several rows in registers, when the CPU has AVX-512F (checked
// at run time, as small_oc_conv.cc does); every other shape or CPU a plain loop that the compiler
// vectorizes over C.
#include "pointwise_affine.h"

#include <omp.h>

#include <algorithm>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SVD_PW_X86 1
#endif

namespace svd_pointwise {

namespace {

// Rows [i0, i1): one row at a time, C outputs accumulated in y itself.
void Generic(const float* t, const float* w, const float* shift, float* y, int64_t i0, int64_t i1, int64_t r, int64_t c,
             bool relu, const float* res) {
  for (int64_t i = i0; i < i1; i++) {
    const float* ti = t + i * r;
    float* yi = y + i * c;
    const float* ri = res ? res + i * c : nullptr;
    for (int64_t j = 0; j < c; j++) yi[j] = shift[j] + (ri ? ri[j] : 0.0f);
    for (int64_t o = 0; o < r; o++) {
      const float a = ti[o];
      const float* wo = w + o * c;
      for (int64_t j = 0; j < c; j++) yi[j] += a * wo[j];
    }
    if (relu)
      for (int64_t j = 0; j < c; j++) yi[j] = yi[j] > 0.0f ? yi[j] : 0.0f;
  }
}

#ifdef SVD_PW_X86

bool HasAvx512() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
}

#pragma GCC push_options
#pragma GCC target("avx512f")

// B rows at a time, C = 16·V outputs each: B·V accumulators and V weight vectors in the 32
// registers. Each weight row is loaded once per B rows; each t value is broadcast once.
template <int V, int B>
void Block(const float* t, const float* w, const float* shift, float* y, int64_t i, int64_t r, bool relu,
           const float* res) {
  constexpr int64_t C = 16 * V;
  __m512 acc[B][V];
  for (int v = 0; v < V; v++) {
    const __m512 s = _mm512_loadu_ps(shift + 16 * v);
    for (int b = 0; b < B; b++) acc[b][v] = s;
  }
  const float* tb = t + i * r;
  for (int64_t o = 0; o < r; o++) {
    __m512 wv[V];
    for (int v = 0; v < V; v++) wv[v] = _mm512_loadu_ps(w + o * C + 16 * v);
#pragma GCC unroll 8
    for (int b = 0; b < B; b++) {
      const __m512 a = _mm512_set1_ps(tb[b * r + o]);
      for (int v = 0; v < V; v++) acc[b][v] = _mm512_fmadd_ps(a, wv[v], acc[b][v]);
    }
  }
  const __m512 zero = _mm512_setzero_ps();
  for (int b = 0; b < B; b++)
    for (int v = 0; v < V; v++) {
      const int64_t off = (i + b) * C + 16 * v;
      __m512 out = acc[b][v];
      if (res) out = _mm512_add_ps(out, _mm512_loadu_ps(res + off));
      if (relu) out = _mm512_max_ps(out, zero);
      _mm512_storeu_ps(y + off, out);
    }
}

template <int V>
void Rows(const float* t, const float* w, const float* shift, float* y, int64_t i0, int64_t i1, int64_t r, bool relu,
          const float* res) {
  constexpr int B = V == 1 ? 8 : V == 2 ? 8 : V == 3 ? 6 : 4;
  int64_t i = i0;
  for (; i + B <= i1; i += B) Block<V, B>(t, w, shift, y, i, r, relu, res);
  for (; i < i1; i++) Block<V, 1>(t, w, shift, y, i, r, relu, res);
}

#pragma GCC pop_options

bool Fast(int64_t c) { return HasAvx512() && c % 16 == 0 && c >= 16 && c <= 64; }

void RunRows(const float* t, const float* w, const float* shift, float* y, int64_t i0, int64_t i1, int64_t r,
             int64_t c, bool relu, const float* res) {
  if (!Fast(c)) return Generic(t, w, shift, y, i0, i1, r, c, relu, res);
  switch (c / 16) {
    case 1: return Rows<1>(t, w, shift, y, i0, i1, r, relu, res);
    case 2: return Rows<2>(t, w, shift, y, i0, i1, r, relu, res);
    case 3: return Rows<3>(t, w, shift, y, i0, i1, r, relu, res);
    default: return Rows<4>(t, w, shift, y, i0, i1, r, relu, res);
  }
}

#else

void RunRows(const float* t, const float* w, const float* shift, float* y, int64_t i0, int64_t i1, int64_t r,
             int64_t c, bool relu, const float* res) {
  Generic(t, w, shift, y, i0, i1, r, c, relu, res);
}

#endif

}  // namespace

void PointwiseAffine(const float* t, const float* w, const float* shift, float* y, int64_t m, int64_t r, int64_t c,
                     bool relu, const float* res) {
  // Rows split evenly over the threads setThreads gave oneDNN (one by default: a worker per core).
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), m / 1024)));
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int id = omp_get_thread_num(), k = omp_get_num_threads();
    RunRows(t, w, shift, y, m * id / k, m * (id + 1) / k, r, c, relu, res);
  }
}

}  // namespace svd_pointwise
