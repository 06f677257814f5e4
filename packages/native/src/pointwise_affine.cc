// See pointwise_affine.h. C a multiple of 16 up to 64 (ResNets' 16, 32, 64 channels) runs an
// AVX-512 kernel with the outputs of several pixels in registers, when the CPU has AVX-512F
// (checked at run time, as small_oc_conv.cc does); every other shape or CPU a plain loop that the
// compiler vectorizes over C.
//
// Each row of Q is split into the output columns whose taps all fall inside [0, Win) (blocks of
// several pixels, no bounds checks) and the few at the edges (one pixel at a time, the taps that
// fall in the padding skipped).
#include "pointwise_affine.h"

#include <omp.h>

#include <algorithm>
#include <type_traits>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SVD_PW_X86 1
#endif

namespace svd_pointwise {

namespace {

// One output pixel from taps [j0, j1): t0 points at tap 0's input pixel (which may lie in the
// padding; only taps j0..j1-1 are read), yo and ro at the output and shortcut pixel.
void GenericPixel(const RowGeom& g, const float* t0, const float* w, const float* shift, float* yo, int64_t j0,
                  int64_t j1, bool relu, const float* ro) {
  const int64_t r = g.r, c = g.c;
  for (int64_t k = 0; k < c; k++) yo[k] = shift[k] + (ro ? ro[k] : 0.0f);
  for (int64_t j = j0; j < j1; j++) {
    const float* tj = t0 + j * r;
    for (int64_t o = 0; o < r; o++) {
      const float a = tj[o];
      const float* wo = w + (j * r + o) * c;
      for (int64_t k = 0; k < c; k++) yo[k] += a * wo[k];
    }
  }
  if (relu)
    for (int64_t k = 0; k < c; k++) yo[k] = yo[k] > 0.0f ? yo[k] : 0.0f;
}

#ifdef SVD_PW_X86

bool HasAvx512() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
}

#pragma GCC push_options
#pragma GCC target("avx512f")

// B consecutive output pixels from taps [j0, j1), C = 16·V outputs each: B·V accumulators and V
// weight vectors in the 32 registers. Each weight row is loaded once per B pixels; each t value is
// broadcast once. t0 points at pixel 0's tap-0 input; pixel b's is `step` floats further (sw·R).
template <int V, int B>
void Block(const float* t0, int64_t step, const float* w, const float* shift, float* y, int64_t j0, int64_t j1,
           int64_t r, bool relu, const float* res) {
  constexpr int64_t C = 16 * V;
  __m512 acc[B][V];
  for (int v = 0; v < V; v++) {
    const __m512 s = _mm512_loadu_ps(shift + 16 * v);
    for (int b = 0; b < B; b++) acc[b][v] = s;
  }
  for (int64_t j = j0; j < j1; j++) {
    const float* tj = t0 + j * r;
    const float* wj = w + j * r * C;
    for (int64_t o = 0; o < r; o++) {
      __m512 wv[V];
      for (int v = 0; v < V; v++) wv[v] = _mm512_loadu_ps(wj + o * C + 16 * v);
#pragma GCC unroll 16
      for (int b = 0; b < B; b++) {
        const __m512 a = _mm512_set1_ps(tj[b * step + o]);
        for (int v = 0; v < V; v++) acc[b][v] = _mm512_fmadd_ps(a, wv[v], acc[b][v]);
      }
    }
  }
  const __m512 zero = _mm512_setzero_ps();
  for (int b = 0; b < B; b++)
    for (int v = 0; v < V; v++) {
      const int64_t off = b * C + 16 * v;
      __m512 out = acc[b][v];
      if (res) out = _mm512_add_ps(out, _mm512_loadu_ps(res + off));
      if (relu) out = _mm512_max_ps(out, zero);
      _mm512_storeu_ps(y + off, out);
    }
}

template <int V>
void Segment(const RowGeom& g, const float* trow, const float* w, const float* shift, float* yrow, const float* rrow,
             int64_t x0, int64_t x1, int64_t in0, int64_t in1, bool relu) {
  constexpr int B = V == 1 ? 8 : V == 2 ? 8 : 6;
  constexpr int64_t C = 16 * V;
  const int64_t r = g.r, step = g.sw * r;
  auto at = [&](int64_t x) { return trow + (x * g.sw - g.pl) * r; };
  auto edge = [&](int64_t x) {
    const int64_t first = x * g.sw - g.pl;
    const int64_t j0 = std::max<int64_t>(0, -first), j1 = std::min<int64_t>(g.kw, g.win - first);
    Block<V, 1>(at(x), step, w, shift, yrow + x * C, j0, std::max(j0, j1), r, relu, rrow ? rrow + x * C : nullptr);
  };
  int64_t x = x0;
  for (; x < std::min(x1, in0); x++) edge(x);
  const int64_t end = std::min(x1, in1);
  auto blocks = [&](auto width) {
    constexpr int Bw = decltype(width)::value;
    for (; x + Bw <= end; x += Bw) Block<V, Bw>(at(x), step, w, shift, yrow + x * C, 0, g.kw, r, relu, rrow ? rrow + x * C : nullptr);
  };
  // The widest block first, then narrower ones for the rest of the row (a 32-wide row has 30
  // interior columns): one pixel at a time would leave the FMA units waiting on each other.
  blocks(std::integral_constant<int, B>{});
  if constexpr (B > 8) blocks(std::integral_constant<int, 8>{});
  if constexpr (B > 4) blocks(std::integral_constant<int, 4>{});
  blocks(std::integral_constant<int, 2>{});
  blocks(std::integral_constant<int, 1>{});
  for (; x < x1; x++) edge(x);
}

#pragma GCC pop_options

bool Fast(int64_t c) { return HasAvx512() && c % 16 == 0 && c >= 16 && c <= 64; }

#endif

// Output columns [x0, x1) of row q. Columns [in0, in1) have every tap inside the row.
void RunSegment(const RowGeom& g, const float* t, const float* w, const float* shift, float* y, const float* res,
                int64_t q, int64_t x0, int64_t x1, int64_t in0, int64_t in1, bool relu) {
  const float* trow = t + q * g.win * g.r;
  float* yrow = y + q * g.wout * g.c;
  const float* rrow = res ? res + q * g.wout * g.c : nullptr;
#ifdef SVD_PW_X86
  if (Fast(g.c)) {
    switch (g.c / 16) {
      case 1: return Segment<1>(g, trow, w, shift, yrow, rrow, x0, x1, in0, in1, relu);
      case 2: return Segment<2>(g, trow, w, shift, yrow, rrow, x0, x1, in0, in1, relu);
      case 3: return Segment<3>(g, trow, w, shift, yrow, rrow, x0, x1, in0, in1, relu);
      default: return Segment<4>(g, trow, w, shift, yrow, rrow, x0, x1, in0, in1, relu);
    }
  }
#endif
  (void)in0;
  (void)in1;
  for (int64_t x = x0; x < x1; x++) {
    const int64_t first = x * g.sw - g.pl;
    const int64_t j0 = std::max<int64_t>(0, -first), j1 = std::max(j0, std::min<int64_t>(g.kw, g.win - first));
    GenericPixel(g, trow + first * g.r, w, shift, yrow + x * g.c, j0, j1, relu, rrow ? rrow + x * g.c : nullptr);
  }
}

}  // namespace

void RowConvAffine(const RowGeom& g, const float* t, const float* w, const float* shift, float* y, bool relu,
                   const float* res) {
  // The interior columns: x·sw − pl >= 0 and x·sw − pl + kw − 1 < Win.
  const int64_t in0 = (g.pl + g.sw - 1) / g.sw;
  const int64_t in1 = std::max(in0, g.win - g.kw + g.pl >= 0 ? (g.win - g.kw + g.pl) / g.sw + 1 : 0);
  // The Q·Wout output pixels split evenly over the threads setThreads gave oneDNN (one by default:
  // a worker per core), each thread's share walked row by row.
  const int64_t total = g.q * g.wout;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), total / 1024)));
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int id = omp_get_thread_num(), k = omp_get_num_threads();
    const int64_t p0 = total * id / k, p1 = total * (id + 1) / k;
    for (int64_t p = p0; p < p1;) {
      const int64_t q = p / g.wout, x0 = p % g.wout, x1 = std::min(g.wout, x0 + (p1 - p));
      RunSegment(g, t, w, shift, y, res, q, x0, x1, in0, std::min(in1, g.wout), relu);
      p += x1 - x0;
    }
  }
}

void PointwiseAffine(const float* t, const float* w, const float* shift, float* y, int64_t m, int64_t r, int64_t c,
                     bool relu, const float* res) {
  RowConvAffine(RowGeom{1, m, m, 1, 1, 0, r, c}, t, w, shift, y, relu, res);
}

}  // namespace svd_pointwise
