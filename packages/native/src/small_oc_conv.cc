// See small_oc_conv.h. The AVX-512 code is compiled for AVX-512F alone (the pragma below) and is
// reached only after Applies() checked the CPU, so the addon still loads and runs (on oneDNN) on
// an x86-64 without it, and elsewhere Applies() is always false.
#include "small_oc_conv.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SVD_SMALL_OC_X86 1
#endif

namespace svd_small_oc {

#ifdef SVD_SMALL_OC_X86

namespace {

bool HasAvx512() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
}

}  // namespace

#pragma GCC push_options
#pragma GCC target("avx512f")

namespace {

// Lane j of the result holds the sum of the 16 lanes of a[j]. Four levels of pairwise
// shuffle-and-add (15 adds for 16 sums, instead of a full reduction per output); the last level
// leaves accumulator 4k+q in lane 4q+k, which the final permutation undoes.
inline __m512 SumLanes16(const __m512* a) {
  __m512 b[8], c[4], d[2];
  for (int i = 0; i < 8; i++) {
    b[i] = _mm512_add_ps(_mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0x44), _mm512_shuffle_f32x4(a[2 * i], a[2 * i + 1], 0xEE));
  }
  for (int i = 0; i < 4; i++) {
    c[i] = _mm512_add_ps(_mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0x88), _mm512_shuffle_f32x4(b[2 * i], b[2 * i + 1], 0xDD));
  }
  for (int i = 0; i < 2; i++) {
    d[i] = _mm512_add_ps(_mm512_shuffle_ps(c[2 * i], c[2 * i + 1], 0x44), _mm512_shuffle_ps(c[2 * i], c[2 * i + 1], 0xEE));
  }
  const __m512 e = _mm512_add_ps(_mm512_shuffle_ps(d[0], d[1], 0x88), _mm512_shuffle_ps(d[0], d[1], 0xDD));
  const __m512i order = _mm512_setr_epi32(0, 4, 8, 12, 1, 5, 9, 13, 2, 6, 10, 14, 3, 7, 11, 15);
  return _mm512_permutexvar_ps(order, e);
}

// y of image n. wt is the filter as [tap][o][c] (c contiguous). A block is P = 16/F neighbouring
// output pixels of one row, whose P*F outputs are contiguous in NHWC y: one masked store.
template <int F>
void ForwardImage(const Geom& g, const float* x, const float* wt, float* y, int64_t n) {
  constexpr int P = F == 3 ? 4 : 16 / F;  // 5 pixels of 3 spilled registers (measured 1.6x slower)
  const int64_t C = g.c, CB = C / 16;
  const float* xn = x + n * g.h * g.w * C;
  float* yn = y + n * g.oh * g.ow * F;
  for (int64_t oh = 0; oh < g.oh; oh++) {
    const int64_t ih0 = oh * g.sh - g.pt;
    const int64_t kh_lo = std::max<int64_t>(0, -ih0), kh_hi = std::min<int64_t>(g.kh, g.h - ih0);
    for (int64_t ow0 = 0; ow0 < g.ow; ow0 += P) {
      const int np = static_cast<int>(std::min<int64_t>(P, g.ow - ow0));
      const int64_t iwb = ow0 * g.sw - g.pl;  // input column of pixel p, tap kw: iwb + p*sw + kw
      const bool inner = np == P && iwb >= 0 && iwb + (P - 1) * g.sw + g.kw <= g.w;
      __m512 acc[16];
      for (int j = 0; j < 16; j++) acc[j] = _mm512_setzero_ps();
      for (int64_t kh = kh_lo; kh < kh_hi; kh++) {
        const float* xrow = xn + (ih0 + kh) * g.w * C;
        for (int64_t kw = 0; kw < g.kw; kw++) {
          const float* wp = wt + (kh * g.kw + kw) * F * C;
          for (int64_t cb = 0; cb < CB; cb++) {
            __m512 wv[F];
#pragma GCC unroll 8
            for (int o = 0; o < F; o++) wv[o] = _mm512_loadu_ps(wp + o * C + cb * 16);
#pragma GCC unroll 16
            for (int p = 0; p < P; p++) {
              const int64_t iw = iwb + p * g.sw + kw;
              if (!inner && (p >= np || iw < 0 || iw >= g.w)) continue;
              const __m512 xv = _mm512_loadu_ps(xrow + iw * C + cb * 16);
#pragma GCC unroll 8
              for (int o = 0; o < F; o++) acc[p * F + o] = _mm512_fmadd_ps(xv, wv[o], acc[p * F + o]);
            }
          }
        }
      }
      const __mmask16 keep = static_cast<__mmask16>((1u << (np * F)) - 1u);
      _mm512_mask_storeu_ps(yn + (oh * g.ow + ow0) * F, keep, SumLanes16(acc));
    }
  }
}

template <int F>
void ForwardAll(const Geom& g, const float* x, const float* w, float* y) {
  // HWIO [t][c][o] -> [t][o][c], so that one load gives 16 input channels of one output channel.
  const int64_t T = g.kh * g.kw, C = g.c;
  std::vector<float> wt(T * F * C);
  for (int64_t t = 0; t < T; t++)
    for (int64_t c = 0; c < C; c++)
      for (int o = 0; o < F; o++) wt[(t * F + o) * C + c] = w[(t * C + c) * F + o];
  const int threads = omp_get_max_threads();
#pragma omp parallel for schedule(static) if (threads > 1 && g.n > 1)
  for (int64_t n = 0; n < g.n; n++) ForwardImage<F>(g, x, wt.data(), y, n);
}

// Adds images [n_lo, n_hi)'s filter gradient into part, laid out [tap][cb][o][16 lanes]. The
// (tap, 16-channel block) units are taken U at a time, so that U*F accumulators, F broadcasts of
// dy and one x vector fit the 32 registers; each group reads the images once more.
template <int F>
void BackwardWeightsImages(const Geom& g, const float* x, const float* dy, float* part, int64_t n_lo, int64_t n_hi) {
  constexpr int U = (20 / F) > 0 ? 20 / F : 1;
  const int64_t C = g.c, CB = C / 16, units = g.kh * g.kw * CB;
  for (int64_t u0 = 0; u0 < units; u0 += U) {
    const int nu = static_cast<int>(std::min<int64_t>(U, units - u0));
    int64_t ukh[U], ukw[U], uoff[U];
    for (int u = 0; u < U; u++) {
      const int64_t unit = std::min<int64_t>(u0 + u, units - 1), t = unit / CB, cb = unit % CB;
      ukh[u] = t / g.kw;
      ukw[u] = t % g.kw;
      uoff[u] = (ukh[u] * g.w + ukw[u]) * C + cb * 16;
    }
    __m512 acc[U][F];
    for (int u = 0; u < U; u++)
      for (int o = 0; o < F; o++) acc[u][o] = _mm512_setzero_ps();
    for (int64_t n = n_lo; n < n_hi; n++) {
      for (int64_t oh = 0; oh < g.oh; oh++) {
        const int64_t ih0 = oh * g.sh - g.pt;
        const bool rows_in = ih0 >= 0 && ih0 + g.kh <= g.h;
        for (int64_t ow = 0; ow < g.ow; ow++) {
          const int64_t iw0 = ow * g.sw - g.pl;
          const bool inner = rows_in && iw0 >= 0 && iw0 + g.kw <= g.w;
          const int64_t base = ((n * g.h + ih0) * g.w + iw0) * C;  // of tap (0, 0); may lie outside x
          const float* dyp = dy + ((n * g.oh + oh) * g.ow + ow) * F;
          __m512 d[F];
#pragma GCC unroll 8
          for (int o = 0; o < F; o++) d[o] = _mm512_set1_ps(dyp[o]);
#pragma GCC unroll 20
          for (int u = 0; u < U; u++) {
            if (u >= nu) break;
            if (!inner) {
              const int64_t ih = ih0 + ukh[u], iw = iw0 + ukw[u];
              if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) continue;
            }
            const __m512 xv = _mm512_loadu_ps(x + (base + uoff[u]));
#pragma GCC unroll 8
            for (int o = 0; o < F; o++) acc[u][o] = _mm512_fmadd_ps(xv, d[o], acc[u][o]);
          }
        }
      }
    }
    for (int u = 0; u < nu; u++)
      for (int o = 0; o < F; o++) {
        float* dst = part + ((u0 + u) * F + o) * 16;
        _mm512_storeu_ps(dst, _mm512_add_ps(_mm512_loadu_ps(dst), acc[u][o]));
      }
  }
}

template <int F>
void BackwardWeightsAll(const Geom& g, const float* x, const float* dy, float* dw) {
  const int64_t C = g.c, CB = C / 16, T = g.kh * g.kw, psize = T * CB * F * 16;
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), g.n)));
  std::vector<float> parts(threads * psize, 0.0f);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int id = omp_get_thread_num(), k = omp_get_num_threads();
    const int64_t lo = g.n * id / k, hi = g.n * (id + 1) / k;
    BackwardWeightsImages<F>(g, x, dy, parts.data() + id * psize, lo, hi);
  }
  // [tap][cb][o][lane] summed over threads -> HWIO [tap][c = cb*16 + lane][o].
  for (int64_t t = 0; t < T; t++)
    for (int64_t cb = 0; cb < CB; cb++)
      for (int o = 0; o < F; o++)
        for (int lane = 0; lane < 16; lane++) {
          float s = 0.0f;
          for (int i = 0; i < threads; i++) s += parts[i * psize + ((t * CB + cb) * F + o) * 16 + lane];
          dw[(t * C + cb * 16 + lane) * F + o] = s;
        }
}

}  // namespace

void Forward(const Geom& g, const float* x, const float* w, float* y) {
  switch (g.f) {
    case 1: return ForwardAll<1>(g, x, w, y);
    case 2: return ForwardAll<2>(g, x, w, y);
    case 3: return ForwardAll<3>(g, x, w, y);
    case 4: return ForwardAll<4>(g, x, w, y);
    case 5: return ForwardAll<5>(g, x, w, y);
    case 6: return ForwardAll<6>(g, x, w, y);
    case 7: return ForwardAll<7>(g, x, w, y);
    case 8: return ForwardAll<8>(g, x, w, y);
    default: std::abort();  // Applies() said no; addon.cc never calls it then
  }
}

void BackwardWeights(const Geom& g, const float* x, const float* dy, float* dw) {
  switch (g.f) {
    case 1: return BackwardWeightsAll<1>(g, x, dy, dw);
    case 2: return BackwardWeightsAll<2>(g, x, dy, dw);
    case 3: return BackwardWeightsAll<3>(g, x, dy, dw);
    case 4: return BackwardWeightsAll<4>(g, x, dy, dw);
    case 5: return BackwardWeightsAll<5>(g, x, dy, dw);
    case 6: return BackwardWeightsAll<6>(g, x, dy, dw);
    case 7: return BackwardWeightsAll<7>(g, x, dy, dw);
    case 8: return BackwardWeightsAll<8>(g, x, dy, dw);
    default: std::abort();
  }
}

#pragma GCC pop_options

bool Applies(const Geom& g, int64_t dh, int64_t dw, bool forward) {
  return HasAvx512() && dh == 1 && dw == 1 && g.c % 16 == 0 && g.c <= 256 && g.f >= 1 &&
         g.f <= (forward ? kSmallOcMaxFForward : kSmallOcMaxFFilter) && g.kh * g.kw <= 9;
}

#else  // not x86-64 with GCC/Clang: oneDNN runs every shape

bool Applies(const Geom&, int64_t, int64_t, bool) { return false; }
void Forward(const Geom&, const float*, const float*, float*) { std::abort(); }
void BackwardWeights(const Geom&, const float*, const float*, float*) { std::abort(); }

#endif

}  // namespace svd_small_oc
