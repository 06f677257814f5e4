// See pointwise_affine.h. C a multiple of 16 up to 64 (ResNets' 16, 32, 64 channels) runs an
// AVX-512 kernel with the outputs of several pixels in registers, when the CPU has AVX-512F
// (checked at run time, as small_oc_conv.cc does); every other shape or CPU a plain loop that the
// compiler vectorizes over C.
//
// Each row of Q is split into the output columns whose taps all fall inside [0, Win) (blocks of
// several pixels, no bounds checks) and the few at the edges (one pixel at a time, the taps that
// fall in the padding skipped).
#include "pointwise_affine.h"

#include "prefetch.h"

#include "lanes_net.h"

#include <omp.h>

#include <algorithm>
#include <type_traits>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SVD_PW_X86 1
#endif

namespace svd_pointwise {

namespace {

// One output pixel from nt taps of [r, c] weights: t0 points at the first tap's input, tap j's
// `tap` floats further; yo and ro at the output and shortcut pixel (ro may be null).
void GenericPixel(const float* t0, int64_t tap, const float* w, int64_t nt, int64_t r, int64_t c, const float* shift,
                  float* yo, bool relu, const float* ro) {
  for (int64_t k = 0; k < c; k++) yo[k] = (shift ? shift[k] : 0.0f) + (ro ? ro[k] : 0.0f);
  for (int64_t j = 0; j < nt; j++) {
    const float* tj = t0 + j * tap;
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

#pragma GCC push_options
#pragma GCC target("avx512f")

// B consecutive output pixels from nt taps, C = 16·V outputs each: B·V accumulators and V weight
// vectors in the 32 registers. Each weight row is loaded once per B pixels; each t value is
// broadcast once. t0 points at pixel 0's first tap's input; pixel b's is `step` floats further,
// tap j's `tap` floats further; w holds nt taps of [r, C]. y gets B pixels of C floats.
template <int V, int B>
void Block(const float* t0, int64_t step, int64_t tap, const float* w, int64_t nt, int64_t r, const float* shift,
           float* y, bool relu, const float* res, uint16_t* mask) {
  constexpr int64_t C = 16 * V;
  __m512 acc[B][V];
  for (int v = 0; v < V; v++) {
    const __m512 s = shift ? _mm512_loadu_ps(shift + 16 * v) : _mm512_setzero_ps();
    for (int b = 0; b < B; b++) acc[b][v] = s;
  }
  for (int64_t j = 0; j < nt; j++) {
    const float* tj = t0 + j * tap;
    const float* wj = w + j * r * C;
    for (int64_t o = 0; o < r; o++) {
      __m512 wv[V];
      for (int v = 0; v < V; v++) wv[v] = _mm512_loadu_ps(wj + o * C + 16 * v);
#pragma GCC unroll 8
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
      svd_prefetch::ForWrite(y + off);
      __m512 out = acc[b][v];
      if (res) {
        svd_prefetch::ForRead(res + off);
        out = _mm512_add_ps(out, _mm512_loadu_ps(res + off));
      }
      if (mask) mask[b * V + v] = static_cast<uint16_t>(_mm512_cmp_ps_mask(out, zero, _CMP_GT_OQ));
      if (relu) out = _mm512_max_ps(out, zero);
      _mm512_storeu_ps(y + off, out);
    }
}

// Pixels [x, end) of one row, all taps inside, in blocks of B, then narrower ones (a 32-wide row
// has 30 interior columns for a 3-tap kernel: one pixel at a time would leave the FMA units waiting
// on each other). at(x) gives pixel x's first tap's input.
template <int V, typename At>
void Blocks(At at, int64_t x, int64_t end, int64_t step, int64_t tap, const float* w, int64_t nt, int64_t r,
            const float* shift, float* yrow, const float* rrow, bool relu, uint16_t* mrow = nullptr) {
  constexpr int B = V <= 2 ? 8 : 6;
  constexpr int64_t C = 16 * V;
  auto run = [&](auto width) {
    constexpr int Bw = decltype(width)::value;
    for (; x + Bw <= end; x += Bw)
      Block<V, Bw>(at(x), step, tap, w, nt, r, shift, yrow + x * C, relu, rrow ? rrow + x * C : nullptr, mrow ? mrow + x * V : nullptr);
  };
  run(std::integral_constant<int, B>{});
  if constexpr (B > 4) run(std::integral_constant<int, 4>{});
  run(std::integral_constant<int, 2>{});
  run(std::integral_constant<int, 1>{});
}

template <int V>
void Segment(const RowGeom& g, const float* trow, const float* w, const float* shift, float* yrow, const float* rrow,
             int64_t x0, int64_t x1, int64_t in0, int64_t in1, bool relu, uint16_t* mrow) {
  constexpr int64_t C = 16 * V;
  const int64_t r = g.r, step = g.sw * r;
  auto at = [&](int64_t x) { return trow + (x * g.sw - g.pl) * r; };
  auto edge = [&](int64_t x) {
    const int64_t first = x * g.sw - g.pl;
    const int64_t j0 = std::max<int64_t>(0, -first), j1 = std::max(j0, std::min<int64_t>(g.kw, g.win - first));
    Block<V, 1>(trow + (first + j0) * r, step, r, w + j0 * r * C, j1 - j0, r, shift, yrow + x * C, relu, rrow ? rrow + x * C : nullptr,
                mrow ? mrow + x * V : nullptr);
  };
  int64_t x = x0;
  for (; x < std::min(x1, in0); x++) edge(x);
  const int64_t end = std::max(x, std::min(x1, in1));
  Blocks<V>(at, x, end, step, r, w, g.kw, r, shift, yrow, rrow, relu, mrow);
  for (x = end; x < x1; x++) edge(x);
}

#pragma GCC pop_options

bool Fast(int64_t c) { return ::svd_lanes::Available() && c % 16 == 0 && c >= 16 && c <= 64; }

#endif

// Output columns [x0, x1) of row q. Columns [in0, in1) have every tap inside the row.
void RunSegment(const RowGeom& g, const float* t, const float* w, const float* shift, float* y, const float* res,
                int64_t q, int64_t x0, int64_t x1, int64_t in0, int64_t in1, bool relu, uint16_t* mask) {
  const float* trow = t + q * g.win * g.r;
  float* yrow = y + q * g.wout * g.c;
  const float* rrow = res ? res + q * g.wout * g.c : nullptr;
  const int64_t words = MaskWords(g.c);
  uint16_t* mrow = mask ? mask + q * g.wout * words : nullptr;
#ifdef SVD_PW_X86
  if (Fast(g.c)) {
    switch (g.c / 16) {
      case 1: return Segment<1>(g, trow, w, shift, yrow, rrow, x0, x1, in0, in1, relu, mrow);
      case 2: return Segment<2>(g, trow, w, shift, yrow, rrow, x0, x1, in0, in1, relu, mrow);
      case 3: return Segment<3>(g, trow, w, shift, yrow, rrow, x0, x1, in0, in1, relu, mrow);
      default: return Segment<4>(g, trow, w, shift, yrow, rrow, x0, x1, in0, in1, relu, mrow);
    }
  }
#endif
  (void)in0;
  (void)in1;
  for (int64_t x = x0; x < x1; x++) {
    const int64_t first = x * g.sw - g.pl;
    const int64_t j0 = std::max<int64_t>(0, -first), j1 = std::max(j0, std::min<int64_t>(g.kw, g.win - first));
    float* yo = yrow + x * g.c;
    GenericPixel(trow + (first + j0) * g.r, g.r, w + j0 * g.r * g.c, j1 - j0, g.r, g.c, shift, yo, relu, rrow ? rrow + x * g.c : nullptr);
    // The mask from the output (after the ReLU, y > 0 is the same test).
    if (mrow)
      for (int64_t k = 0; k < words; k++) {
        uint16_t bits = 0;
        for (int64_t l = 0; l < 16 && k * 16 + l < g.c; l++) bits |= static_cast<uint16_t>(yo[k * 16 + l] > 0.0f) << l;
        mrow[x * words + k] = bits;
      }
  }
}

}  // namespace

void RowConvAffine(const RowGeom& g, const float* t, const float* w, const float* shift, float* y, bool relu,
                   const float* res, uint16_t* mask) {
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
      RunSegment(g, t, w, shift, y, res, q, x0, x1, in0, std::min(in1, g.wout), relu, mask);
      p += x1 - x0;
    }
  }
}

namespace {

// Output row (n, oh) into yrow: the column conv's taps that fall inside the image into buf (R
// padded to Rp lanes, pl zero pixels before, the rest zero after), then the row conv from buf.
// kp is k1 with R padded to Rp (zeros), so the padded lanes of buf stay zero.
void SpatialRowGeneric(const SpatialGeom& g, const float* x, const float* kp, int64_t rp, const float* w2,
                       const float* shift, float* buf, int64_t n, int64_t oh, float* yrow, const float* rrow, bool relu) {
  const int64_t first = oh * g.sh - g.pt;
  const int64_t j0 = std::max<int64_t>(0, -first), j1 = std::max(j0, std::min<int64_t>(g.kh, g.h - first));
  const float* x0 = x + ((n * g.h + first + j0) * g.w) * g.cin;
  for (int64_t col = 0; col < g.w; col++)
    GenericPixel(x0 + col * g.cin, g.w * g.cin, kp + j0 * g.cin * rp, j1 - j0, g.cin, rp, nullptr, buf + (g.pl + col) * rp, false, nullptr);
  for (int64_t col = 0; col < g.ow; col++)
    GenericPixel(buf + col * g.sw * rp, rp, w2, g.kw, g.r, g.c, shift, yrow + col * g.c, relu, rrow ? rrow + col * g.c : nullptr);
}

#ifdef SVD_PW_X86
#pragma GCC push_options
#pragma GCC target("avx512f")

template <int V1, int V2>
void SpatialRowFast(const SpatialGeom& g, const float* x, const float* kp, const float* w2, const float* shift,
                    float* buf, int64_t n, int64_t oh, float* yrow, const float* rrow, bool relu) {
  constexpr int64_t Rp = 16 * V1;
  const int64_t first = oh * g.sh - g.pt;
  const int64_t j0 = std::max<int64_t>(0, -first), j1 = std::max(j0, std::min<int64_t>(g.kh, g.h - first));
  const float* x0 = x + ((n * g.h + first + j0) * g.w) * g.cin;
  // Column conv: every pixel of the row is interior (the kernel is one column wide).
  Blocks<V1>([&](int64_t col) { return x0 + col * g.cin; }, 0, g.w, g.cin, g.w * g.cin, kp + j0 * g.cin * Rp, j1 - j0,
             g.cin, nullptr, buf + g.pl * Rp, nullptr, false);
  // Row conv from the zero-padded buffer: no edges.
  Blocks<V2>([&](int64_t col) { return buf + col * g.sw * Rp; }, 0, g.ow, g.sw * Rp, Rp, w2, g.kw, g.r, shift, yrow,
             rrow, relu);
}

#pragma GCC pop_options

using SpatialRowFn = void (*)(const SpatialGeom&, const float*, const float*, const float*, const float*, float*,
                              int64_t, int64_t, float*, const float*, bool);

template <int V1>
SpatialRowFn PickV2(int64_t c) {
  switch (c / 16) {
    case 1: return SpatialRowFast<V1, 1>;
    case 2: return SpatialRowFast<V1, 2>;
    case 3: return SpatialRowFast<V1, 3>;
    default: return SpatialRowFast<V1, 4>;
  }
}

// The AVX-512 row function for R padded to Rp = 16·V1 (R <= 64) and C = 16·V2 (C in 16..64), or null.
SpatialRowFn FastSpatialRow(int64_t r, int64_t c) {
  if (!Fast(c) || r > 64) return nullptr;
  switch ((r + 15) / 16) {
    case 1: return PickV2<1>(c);
    case 2: return PickV2<2>(c);
    case 3: return PickV2<3>(c);
    default: return PickV2<4>(c);
  }
}
#endif

}  // namespace

void SpatialAffine(const SpatialGeom& g, const float* x, const float* k1, const float* w2, const float* shift, float* y,
                   bool relu, const float* res) {
#ifdef SVD_PW_X86
  const SpatialRowFn fast = FastSpatialRow(g.r, g.c);
#else
  const void* fast = nullptr;
#endif
  // R padded to whole vectors on the fast path (the padded lanes of k1, and so of t, are zero).
  const int64_t rp = fast ? (g.r + 15) / 16 * 16 : g.r;
  std::vector<float> kp(static_cast<size_t>(g.kh * g.cin * rp), 0.0f);
  for (int64_t i = 0; i < g.kh * g.cin; i++) std::copy(k1 + i * g.r, k1 + (i + 1) * g.r, kp.begin() + i * rp);
  // The buffer row: pl zero pixels, the W pixels of t, zeros up to what the last output's taps reach.
  const int64_t bw = std::max(g.pl + g.w, (g.ow - 1) * g.sw + g.kw);
  const int64_t rows = g.n * g.oh;
  if (rows == 0) return;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), rows * g.ow / 1024)));
  // One buffer row per thread, allocated here: an allocation failure inside the parallel region
  // could not reach the caller as an exception (it would end the process).
  std::vector<float> bufs(static_cast<size_t>(threads * bw * rp), 0.0f);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int id = omp_get_thread_num(), k = omp_get_num_threads();
    float* buf = bufs.data() + id * bw * rp;
    for (int64_t q = rows * id / k; q < rows * (id + 1) / k; q++) {
      const int64_t n = q / g.oh, oh = q % g.oh;
      float* yrow = y + q * g.ow * g.c;
      const float* rrow = res ? res + q * g.ow * g.c : nullptr;
#ifdef SVD_PW_X86
      if (fast) {
        fast(g, x, kp.data(), w2, shift, buf, n, oh, yrow, rrow, relu);
        continue;
      }
#endif
      SpatialRowGeneric(g, x, kp.data(), rp, w2, shift, buf, n, oh, yrow, rrow, relu);
    }
  }
}

void PointwiseAffine(const float* t, const float* w, const float* shift, float* y, int64_t m, int64_t r, int64_t c,
                     bool relu, const float* res, uint16_t* mask) {
  RowConvAffine(RowGeom{1, m, m, 1, 1, 0, r, c}, t, w, shift, y, relu, res, mask);
}

}  // namespace svd_pointwise
