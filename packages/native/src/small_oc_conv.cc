// See small_oc_conv.h. The AVX-512 code is compiled for AVX-512F alone (the pragma below) and is
// reached only after Applies() checked the CPU, so the addon still loads and runs (on oneDNN) on
// an x86-64 without it, and elsewhere Applies() is always false.
#include "small_oc_conv.h"

#include "huge_pages.h"
#include "prefetch.h"

#include "lanes_net.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <utility>
#include <vector>

#if defined(__x86_64__) && defined(__GNUC__)
#include <cpuid.h>
#include <immintrin.h>
#define SVD_SMALL_OC_X86 1
#endif

namespace svd_small_oc {

#ifdef SVD_SMALL_OC_X86

#pragma GCC push_options
#pragma GCC target("avx512f")

#include "lanes.h"

namespace {

using svd_lanes::Chunks;
using svd_lanes::FromLanes;
using svd_lanes::ToLanes;

// One image's filter gradient for NU (tap, 16-channel block) units and the outputs [o0, o0 + FB),
// added into part [unit][o][16 lanes] (the group's units from its start): NU*FB accumulators, FB
// broadcasts of dy and one x vector in the 32 registers. NU and FB are compile-time, so the unit
// loop has no bound checks, and the pixels whose taps all fall inside the image (the interior of
// each row, on rows whose taps do) take no per-tap checks either.
template <int FB, int NU>
void UnitGroup(const Geom& g, const float* x, const float* dy, int64_t o0, float* part, int64_t n, const int64_t* ukh,
               const int64_t* ukw, const int64_t* uoff, bool stream) {
  const int64_t C = g.c, F = g.f;
  __m512 acc[NU][FB];
  for (int u = 0; u < NU; u++)
    for (int o = 0; o < FB; o++) acc[u][o] = _mm512_loadu_ps(part + (u * FB + o) * 16);
  // Output columns whose taps all fall inside [0, w): iw0 = ow·sw − pl >= 0 and iw0 + kw <= w.
  const int64_t ow_lo = std::min(g.ow, (g.pl + g.sw - 1) / g.sw);
  const int64_t ow_hi = std::max(ow_lo, std::min(g.ow, (g.w - g.kw + g.pl) / g.sw + 1));
  for (int64_t oh = 0; oh < g.oh; oh++) {
    const int64_t ih0 = oh * g.sh - g.pt;
    const bool rows_in = ih0 >= 0 && ih0 + g.kh <= g.h;
    const float* dyrow = dy + ((n * g.oh + oh) * g.ow) * F + o0;
    auto pixel = [&](int64_t ow, bool checked) __attribute__((always_inline)) {
      const int64_t iw0 = ow * g.sw - g.pl;
      const int64_t base = ((n * g.h + ih0) * g.w + iw0) * C;  // of tap (0, 0); may lie outside x
      // The first unit group streams the image from memory (the others find it in cache).
      if (stream) ::svd_prefetch::ForRead(x + ((n * g.h + oh * g.sh) * g.w + ow * g.sw) * C);
      const float* dyp = dyrow + ow * F;
      __m512 d[FB];
#pragma GCC unroll 8
      for (int o = 0; o < FB; o++) d[o] = _mm512_set1_ps(dyp[o]);
#pragma GCC unroll 20
      for (int u = 0; u < NU; u++) {
        if (checked) {
          const int64_t ih = ih0 + ukh[u], iw = iw0 + ukw[u];
          if (ih < 0 || ih >= g.h || iw < 0 || iw >= g.w) continue;
        }
        const __m512 xv = _mm512_loadu_ps(x + (base + uoff[u]));
#pragma GCC unroll 8
        for (int o = 0; o < FB; o++) acc[u][o] = _mm512_fmadd_ps(xv, d[o], acc[u][o]);
      }
    };
    if (!rows_in) {
      for (int64_t ow = 0; ow < g.ow; ow++) pixel(ow, true);
      continue;
    }
    for (int64_t ow = 0; ow < ow_lo; ow++) pixel(ow, true);
    for (int64_t ow = ow_lo; ow < ow_hi; ow++) pixel(ow, false);
    for (int64_t ow = ow_hi; ow < g.ow; ow++) pixel(ow, true);
  }
  for (int u = 0; u < NU; u++)
    for (int o = 0; o < FB; o++) _mm512_storeu_ps(part + (u * FB + o) * 16, acc[u][o]);
}

// UnitGroup for nu (1..U) units.
template <int FB, int... NUs>
void UnitGroupOf(int nu, std::integer_sequence<int, NUs...>, const Geom& g, const float* x, const float* dy, int64_t o0,
                 float* part, int64_t n, const int64_t* ukh, const int64_t* ukw, const int64_t* uoff, bool stream) {
  using Fn = void (*)(const Geom&, const float*, const float*, int64_t, float*, int64_t, const int64_t*, const int64_t*,
                      const int64_t*, bool);
  static constexpr Fn kBySize[] = {&UnitGroup<FB, NUs + 1>...};
  kBySize[nu - 1](g, x, dy, o0, part, n, ukh, ukw, uoff, stream);
}

// (tap, 16-channel block) units at most: Applies() takes at most 9 taps and 256 channels.
constexpr int64_t kMaxUnits = 9 * 16;

// Adds images [n_lo, n_hi)'s filter gradient for the outputs [o0, o0 + FB) (dy's rows are F = g.f
// floats apart) into part, laid out [unit][o][16 lanes] with unit = tap * CB + cb. For each image the
// (tap, 16-channel block) units are taken in groups of at most U (as equal as they come: 9 at U = 4
// is 3 + 3 + 3), so that U*FB accumulators, FB broadcasts of dy and one x vector fit the 32
// registers. The image is the outer loop: the unit groups re-read it from cache, not the whole batch
// from memory once per group (the first version, which made every group a pass over the batch, lost
// to oneDNN above 8 output channels). With the group's size a run-time bound, its unrolled loop
// checked it at every unit and the interior pixels their taps' bounds: 28 cycles a pixel at one
// output, where its 9 FMAs need 5 (a stage-1 layer's gradient 0.52 ms at rank 1, 1.0 at rank 5).
template <int FB>
void BackwardWeightsChunk(const Geom& g, const float* x, const float* dy, int64_t o0, float* part, int64_t n_lo,
                          int64_t n_hi) {
  constexpr int U = (20 / FB) > 0 ? 20 / FB : 1;
  const int64_t C = g.c, CB = C / 16, units = g.kh * g.kw * CB;
  const int64_t groups = (units + U - 1) / U, step = (units + groups - 1) / groups;
  // On the stack (this runs inside the parallel region, where a failed allocation could not reach
  // the caller): Applies() bounds the units at 9 taps x 16 channel blocks.
  int64_t ukh[kMaxUnits], ukw[kMaxUnits], uoff[kMaxUnits];
  if (units > kMaxUnits) std::abort();
  for (int64_t unit = 0; unit < units; unit++) {
    const int64_t t = unit / CB, cb = unit % CB;
    ukh[unit] = t / g.kw;
    ukw[unit] = t % g.kw;
    uoff[unit] = (ukh[unit] * g.w + ukw[unit]) * C + cb * 16;
  }
  for (int64_t n = n_lo; n < n_hi; n++) {
    for (int64_t u0 = 0; u0 < units; u0 += step) {
      const int nu = static_cast<int>(std::min<int64_t>(step, units - u0));
      UnitGroupOf<FB>(nu, std::make_integer_sequence<int, U>{}, g, x, dy, o0, part + u0 * FB * 16, n, ukh + u0, ukw + u0,
                      uoff + u0, u0 == 0);
    }
  }
}

using ChunkFn = void (*)(const Geom&, const float*, const float*, int64_t, float*, int64_t, int64_t);
constexpr ChunkFn kChunks[9] = {nullptr, BackwardWeightsChunk<1>, BackwardWeightsChunk<2>, BackwardWeightsChunk<3>,
                                BackwardWeightsChunk<4>, BackwardWeightsChunk<5>, BackwardWeightsChunk<6>,
                                BackwardWeightsChunk<7>, BackwardWeightsChunk<8>};

}  // namespace

// Groups of 16 images: NHWC in -> lanes, the convolution (lanes_net.cc's, the one the lanes network
// runs), lanes -> NHWC out. The two transposes cost a pass over x and y each, and buy vectors that
// need no reduction (measured 1.3-2.4x faster than the per-image kernel it replaced, which summed 16
// channel lanes per output). Scratch is per thread and kept between calls (it is at most 16 images
// of x: 1 MiB for 32x32x16), on a huge page (huge_pages.h: a pruned ResNet-20's step 1.06 ± 0.30 ms
// faster than on 4 KiB pages, in-process paired A/B at batch 64).
void Forward(const Geom& g, const float* x, const float* w, float* y) {
  const int64_t kin = g.h * g.w * g.c, kout = g.oh * g.ow * g.f, groups = (g.n + 15) / 16;
  const ::svd_lanes::Conv conv{0, 0, -1, g.h, g.w, g.c, g.f, g.kh, g.kw, g.oh, g.ow, g.sh, g.sw, g.pt, g.pl, w, nullptr, nullptr, false};
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), groups)));
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t gi = 0; gi < groups; gi++) {
    static thread_local ::svd_huge::Scratch xs, ys;
    float* xt = xs.Get(static_cast<size_t>(kin * 16));
    float* yt = ys.Get(static_cast<size_t>(kout * 16));
    const int64_t n0 = gi * 16;
    const int nr = static_cast<int>(std::min<int64_t>(16, g.n - n0));
    ToLanes(x + n0 * kin, kin, nr, kin, xt);
    ::svd_lanes::ConvGroup(conv, xt, yt);
    FromLanes(yt, kout, y + n0 * kout, kout, nr);
  }
}

void BackwardWeights(const Geom& g, const float* x, const float* dy, float* dw) {
  const int64_t C = g.c, CB = C / 16, units = g.kh * g.kw * CB, F = g.f, psize = units * F * 16;
  const Chunks chunks(F);
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), g.n)));
  std::vector<float> parts(threads * psize, 0.0f);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int id = omp_get_thread_num(), k = omp_get_num_threads();
    const int64_t lo = g.n * id / k, hi = g.n * (id + 1) / k;
    for (int64_t ch = 0; ch < chunks.count; ch++)
      kChunks[chunks.size(ch)](g, x, dy, chunks.start(ch), parts.data() + id * psize + units * chunks.start(ch) * 16, lo, hi);
  }
  // Chunk [unit][o][lane] summed over threads -> HWIO [tap][c = cb*16 + lane][o0 + o].
  for (int64_t ch = 0; ch < chunks.count; ch++) {
    const int64_t o0 = chunks.start(ch), fb = chunks.size(ch);
    for (int64_t unit = 0; unit < units; unit++) {
      const int64_t t = unit / CB, cb = unit % CB;
      for (int64_t o = 0; o < fb; o++)
        for (int lane = 0; lane < 16; lane++) {
          float s = 0.0f;
          for (int i = 0; i < threads; i++) s += parts[i * psize + units * o0 * 16 + (unit * fb + o) * 16 + lane];
          dw[(t * C + cb * 16 + lane) * F + o0 + o] = s;
        }
    }
  }
}

namespace {

// Input gradient, stride 1: dx[n, ih, iw, :] (+ res) = Σ over taps and o of dy[n, ih + pt − kh,
// iw + pl − kw, o] · w[kh, kw, :, o]. The C input channels are V vectors, so nothing needs a
// transpose or a reduction: each (tap, o) is a broadcast of dy against a vector of the filter
// (rearranged to wt [tap][o][c] once per call). Each image's dy is first copied into a zero-bordered
// buffer (a few dozen KiB), so that every pixel is one case: no border checks, no slow edge path;
// the copy is channel-planar ([o][row][column]), so the dy values a block broadcasts for one o sit
// at fixed offsets from one pointer (read NHWC, at a stride of F, they took a register each and the
// compiler spilled the accumulators).
struct BackwardInputImageArgs {
  const Geom& g;
  const float* d;   // the padded dy image, [o][ph][pw]: row a, column b is dy[a − ta, b − la] (zero outside)
  int64_t ta, la, ph, pw;  // its top and left border, its height and width
  const float* wt;
  const float* res;  // this image's residual gradient or null
  float* dx;         // this image's dx
};

// P pixels from (ih, iw). For each (kh, o), the KW filter vectors are loaded once and each of the
// P + KW − 1 dy values the block reads is broadcast once and feeds every pixel it reaches (up to KW),
// so loads stay well under the FMAs (one broadcast per FMA, the obvious order, was capped by the
// machine's two loads a cycle at ~0.75 of this one's speed).
template <int V, int P, int KW>
void BackwardInputBlock(const BackwardInputImageArgs& a, int64_t ih, int64_t iw) {
  const Geom& g = a.g;
  const int64_t C = g.c, F = g.f, at = (ih * g.w + iw) * C;
  // Each output line's first store would wait for the line; a PREFETCHW has it there (4096 floats
  // beyond prefetch.h's kAhead: 24 KiB ahead, as measured with the rest at 8 KiB).
  for (int p = 0; p < P; p++)
    for (int v = 0; v < V; v++) {
      ::svd_prefetch::ForWrite(a.dx + at + p * C + v * 16 + 4096);
      if (a.res) ::svd_prefetch::ForRead(a.res + at + p * C + v * 16 + 4096);
    }
  __m512 acc[P][V];
  for (int p = 0; p < P; p++)
    for (int v = 0; v < V; v++) acc[p][v] = a.res ? _mm512_loadu_ps(a.res + at + p * C + v * 16) : _mm512_setzero_ps();
  for (int64_t kh = 0; kh < g.kh; kh++) {
    // d: dy's pixel (ih + pt − kh, iw + pl − (KW − 1)), the one tap (kh, KW − 1) of pixel 0 reads.
    const float* d0 = a.d + (ih + g.pt - kh + a.ta) * a.pw + iw + g.pl - (KW - 1) + a.la;
    const float* wk = a.wt + kh * KW * F * C;
    for (int64_t o = 0; o < F; o++) {
      const float* d = d0 + o * a.ph * a.pw;
      __m512 wv[KW][V];
      for (int kw = 0; kw < KW; kw++)
        for (int v = 0; v < V; v++) wv[kw][v] = _mm512_loadu_ps(wk + (kw * F + o) * C + v * 16);
#pragma GCC unroll 32
      for (int q = 0; q < P + KW - 1; q++) {
        const __m512 b = _mm512_set1_ps(d[q]);
#pragma GCC unroll 4
        for (int kw = 0; kw < KW; kw++) {
          const int p = q - (KW - 1) + kw;
          if (p < 0 || p >= P) continue;
          for (int v = 0; v < V; v++) acc[p][v] = _mm512_fmadd_ps(b, wv[kw][v], acc[p][v]);
        }
      }
    }
  }
  for (int p = 0; p < P; p++)
    for (int v = 0; v < V; v++) _mm512_storeu_ps(a.dx + at + p * C + v * 16, acc[p][v]);
}

template <int V, int KW, int P, int... Q>
void BackwardInputTail(const BackwardInputImageArgs& a, int64_t ih, int64_t iw, int count,
                       std::integer_sequence<int, P, Q...>) {
  if (P > 0 && count == P) return BackwardInputBlock<V, (P > 0 ? P : 1), KW>(a, ih, iw);
  if constexpr (sizeof...(Q) > 0) BackwardInputTail<V, KW>(a, ih, iw, count, std::integer_sequence<int, Q...>{});
}

template <int V, int P, int KW>
void BackwardInputImage(const BackwardInputImageArgs& a) {
  const int64_t w = a.g.w;
  for (int64_t ih = 0; ih < a.g.h; ih++) {
    int64_t iw = 0;
    for (; iw + P <= w; iw += P) BackwardInputBlock<V, P, KW>(a, ih, iw);
    if (iw < w) BackwardInputTail<V, KW>(a, ih, iw, static_cast<int>(w - iw), std::make_integer_sequence<int, P>{});
  }
}

// One row of dy, [ow][f] (f <= 16), into the channel-planar buffer: dst[o * plane + x] = src[x * f + o].
// 16 pixels at a time, transposed in registers (element by element this copy took a fifth of the
// kernel's time at f = 5).
void PlanarRow(const float* src, int64_t ow, int64_t f, float* dst, int64_t plane) {
  const int* col = svd_lanes::Perm().col;
  const __mmask16 fmask = static_cast<__mmask16>((1u << f) - 1u);
  int64_t x = 0;
  for (; x + 16 <= ow; x += 16) {
    __m512 r[16];
    for (int k = 0; k < 16; k++) r[k] = _mm512_maskz_loadu_ps(fmask, src + (x + k) * f);
    svd_lanes::Transpose16(r);
    for (int q = 0; q < 16; q++)
      if (col[q] < f) _mm512_storeu_ps(dst + col[q] * plane + x, r[q]);
  }
  for (; x < ow; x++)
    for (int64_t o = 0; o < f; o++) dst[o * plane + x] = src[x * f + o];
}

}  // namespace

void BackwardInput(const Geom& g, const float* dy, const float* w, const float* res, float* dx) {
  const int64_t C = g.c, F = g.f, taps = g.kh * g.kw;
  std::vector<float> wt(static_cast<size_t>(taps * F * C));
  for (int64_t t = 0; t < taps; t++)
    for (int64_t c = 0; c < C; c++)
      for (int64_t o = 0; o < F; o++) wt[(t * F + o) * C + c] = w[(t * C + c) * F + o];
  // The padded image: dy row a − ta at row a; rows the taps reach run from ih + pt − (KH − 1) >= −ta
  // to h − 1 + pt, so ta = max(0, KH − 1 − pt) and ph = h + pt + ta (at least oh + ta), likewise
  // the columns.
  const int64_t ta = std::max<int64_t>(0, g.kh - 1 - g.pt), la = std::max<int64_t>(0, g.kw - 1 - g.pl);
  const int64_t ph = std::max(g.h + g.pt, g.oh) + ta, pw = std::max(g.w + g.pl, g.ow) + la;
  const auto run = C == 16 ? (g.kw == 3 ? BackwardInputImage<1, 16, 3> : BackwardInputImage<1, 16, 1>)
                           : (g.kw == 3 ? BackwardInputImage<2, 8, 3> : BackwardInputImage<2, 8, 1>);
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), g.n)));
  // One padded image per thread, allocated here: an allocation failure inside the parallel region
  // could not reach the caller as an exception (it would end the process).
  const size_t pad_size = static_cast<size_t>(ph * pw * F);
  std::vector<float> pads(pad_size * static_cast<size_t>(threads), 0.0f);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    float* pad = pads.data() + pad_size * static_cast<size_t>(omp_get_thread_num());
#pragma omp for schedule(static)
    for (int64_t n = 0; n < g.n; n++) {
      // The border stays zero from the fill; each image overwrites the inside.
      for (int64_t oh = 0; oh < g.oh; oh++) PlanarRow(dy + (n * g.oh + oh) * g.ow * F, g.ow, F, pad + (oh + ta) * pw + la, ph * pw);
      const int64_t image = g.h * g.w * C;
      run({g, pad, ta, la, ph, pw, wt.data(), res ? res + n * image : nullptr, dx + n * image});
    }
  }
}

namespace {

// P consecutive output pixels of one row (input pixels `step` floats apart) of PointBackwardInputAdd:
// their P·V accumulators start from dx and take each output channel's row of wt ([F][C]) against
// its broadcast dy value, P·V FMA chains side by side (one pixel alone waited on one chain: F
// dependent FMAs).
template <int V, int P>
void PointAddBlock(const float* dy, int64_t f, const float* wt, float* x, int64_t step) {
  constexpr int64_t C = 16 * V;
  __m512 acc[P][V];
  for (int p = 0; p < P; p++)
    for (int v = 0; v < V; v++) acc[p][v] = _mm512_loadu_ps(x + p * step + v * 16);
  for (int64_t o = 0; o < f; o++) {
    __m512 wv[V];
    for (int v = 0; v < V; v++) wv[v] = _mm512_loadu_ps(wt + o * C + v * 16);
    for (int p = 0; p < P; p++) {
      const __m512 b = _mm512_set1_ps(dy[p * f + o]);
      for (int v = 0; v < V; v++) acc[p][v] = _mm512_fmadd_ps(b, wv[v], acc[p][v]);
    }
  }
  for (int p = 0; p < P; p++)
    for (int v = 0; v < V; v++) _mm512_storeu_ps(x + p * step + v * 16, acc[p][v]);
}

template <int V>
void PointAddImages(const Geom& g, const float* dy, const float* wt, float* dx, int64_t n0, int64_t n1) {
  constexpr int64_t C = 16 * V;
  constexpr int P = 8 / V;
  const int64_t F = g.f, step = g.sw * C;
  for (int64_t n = n0; n < n1; n++)
    for (int64_t i = 0; i < g.oh; i++) {
      const float* d = dy + ((n * g.oh + i) * g.ow) * F;
      float* x = dx + ((n * g.h + i * g.sh) * g.w) * C;
      int64_t j = 0;
      for (; j + P <= g.ow; j += P) PointAddBlock<V, P>(d + j * F, F, wt, x + j * step, step);
      for (; j < g.ow; j++) PointAddBlock<V, 1>(d + j * F, F, wt, x + j * step, step);
    }
}

}  // namespace

void PointBackwardInputAdd(const Geom& g, const float* dy, const float* wt, float* dx, int64_t n0, int64_t n1) {
  (g.c == 16 ? PointAddImages<1> : g.c == 32 ? PointAddImages<2> : PointAddImages<4>)(g, dy, wt, dx, n0, n1);
}

#pragma GCC pop_options

bool Zen5OrLater() {
#if defined(__x86_64__) && defined(__GNUC__)
  static const bool zen5 = [] {
    unsigned a = 0, b = 0, c = 0, d = 0;
    if (!__get_cpuid(0, &a, &b, &c, &d)) return false;
    // "AuthenticAMD" in ebx, edx, ecx.
    if (b != 0x68747541u || d != 0x69746e65u || c != 0x444d4163u) return false;
    if (!__get_cpuid(1, &a, &b, &c, &d)) return false;
    const unsigned base = (a >> 8) & 0xFu, family = base == 0xFu ? base + ((a >> 20) & 0xFFu) : base;
    return family >= 0x1Au;
  }();
  return zen5;
#else
  return false;
#endif
}

// The most output channels a kernel takes for this shape (see small_oc_conv.h); 0: none.
static int64_t MaxF(const Geom& g, bool forward) {
  const int64_t taps = g.kh * g.kw;
  const bool zen5 = Zen5OrLater();
  if (forward) {
    if (taps == 1) return 0;
    // oneDNN computes outputs 16 at a time: at a multiple of 16 it wastes nothing and stays.
    const bool wide = g.c >= 64 && taps == 9 && g.sh == 1 && g.sw == 1 && g.f % 16 != 0;
    // On Zen 5 the wider limit holds for 3x3 convs and from 32 channels; a 3x1 from 16 channels
    // stays at 8 (at 13 outputs ours 0.83 ms against oneDNN's 0.64, at 9 even).
    const bool zen5_wide = zen5 && (taps == 9 || g.c >= 32);
    return wide ? kSmallOcMaxFForwardWide : zen5_wide ? kSmallOcMaxFForwardZen5 : kSmallOcMaxFForward;
  }
  if (taps == 1 || g.sh > 1 || g.sw > 1) return kSmallOcMaxFFilterOther;
  if (taps <= 3) return kSmallOcMaxFFilter3Taps;
  if (zen5) return g.c >= 64 ? kSmallOcMaxFFilter9TapsZen5Wide : kSmallOcMaxFFilter9TapsZen5;
  return kSmallOcMaxFFilter9Taps;
}

bool Applies(const Geom& g, int64_t dh, int64_t dw, bool forward) {
  return ::svd_lanes::Available() && dh == 1 && dw == 1 && g.c % 16 == 0 && g.c <= 256 && g.f >= 1 && g.f <= MaxF(g, forward) &&
         g.kh * g.kw <= 9;
}

bool AppliesPointBackwardInputAdd(const Geom& g, int64_t dh, int64_t dw) {
  // Every output pixel's input pixel inside the image (no bottom or right padding either: Geom
  // carries those only through oh and ow).
  return ::svd_lanes::Available() && dh == 1 && dw == 1 && g.kh == 1 && g.kw == 1 && g.pt == 0 && g.pl == 0 &&
         (g.oh - 1) * g.sh < g.h && (g.ow - 1) * g.sw < g.w && (g.c == 16 || g.c == 32 || g.c == 64);
}

bool AppliesBackwardInput(const Geom& g, int64_t dh, int64_t dw, bool with_res) {
  return ::svd_lanes::Available() && dh == 1 && dw == 1 && g.sh == 1 && g.sw == 1 && (g.c == 16 || g.c == 32) &&
         (g.kw == 1 || g.kw == 3) && g.f >= 1 &&
         g.f <= (with_res ? kSmallOcMaxFBackwardInput : kSmallOcMaxFBackwardInputAlone) && g.kh * g.kw <= 9;
}

#else  // not x86-64 with GCC/Clang: oneDNN runs every shape

bool Applies(const Geom&, int64_t, int64_t, bool) { return false; }
bool AppliesBackwardInput(const Geom&, int64_t, int64_t, bool) { return false; }
bool AppliesPointBackwardInputAdd(const Geom&, int64_t, int64_t) { return false; }
void PointBackwardInputAdd(const Geom&, const float*, const float*, float*, int64_t, int64_t) { std::abort(); }
void BackwardInput(const Geom&, const float*, const float*, const float*, float*) { std::abort(); }
void Forward(const Geom&, const float*, const float*, float*) { std::abort(); }
void BackwardWeights(const Geom&, const float*, const float*, float*) { std::abort(); }

#endif

}  // namespace svd_small_oc
