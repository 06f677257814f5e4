// See lanes_net.h. Compiled for AVX-512F alone (the pragma below) and reached only after
// Available() checked the CPU, as small_oc_conv.cc.
#include "lanes_net.h"

#include "huge_pages.h"
#include "prefetch.h"

#include <omp.h>

#include <algorithm>
#include <cstdlib>
#include <new>
#include <stdexcept>
#include <type_traits>

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SVD_LANES_X86 1
#endif

#ifdef SVD_LANES_X86

#pragma GCC push_options
#pragma GCC target("avx512f")

#include "lanes.h"

namespace svd_lanes {

namespace {

bool g_pairs = true;
int g_last_pairs = 0;

// Pixels per register block for FB output channels: P*FB accumulators, FB broadcast weights and
// one input vector within the 32 registers.
template <int FB>
constexpr int PixelsPerBlock() {
  return FB == 1 ? 8 : FB == 2 ? 6 : FB <= 4 ? 5 : FB <= 6 ? 4 : FB == 7 ? 3 : 2;
}

// Pixels per block of the 3-tap row path (below): P*FB accumulators and 3*FB weights in registers;
// wider blocks measured no faster (16 pixels at one output: slower).
template <int FB>
constexpr int RowPixels() {
  return FB == 1 ? 8 : FB <= 3 ? 6 : 4;
}

// Output channels [o0, o0 + FB) of one group's conv step, P output pixels of a row at a time:
// xt [h][w][c][16], yt and rt [oh][ow][f][16].
//
// With few outputs (FB <= 4) an input vector feeds only FB FMAs per tap, and a 3x3 conv's input
// rows (32 pixels x 16 channels x 16 lanes: 32 KiB each) do not fit L1 together, so reloading each
// input vector for each of its 3 horizontal taps made these convs bound by L2 (41-44 GMAC/s at 3
// outputs, 31 at 1, against 88 at 5). With `row3` (3 taps along the width, stride 1) each input
// vector of a block's row is loaded once and feeds the up-to-3 output pixels it touches.
// Which output rows a call makes, [oh0, oh1), and where rows live: in_ring / out_ring > 0 makes
// the input / output a ring of that many rows (row i at i mod ring), else the whole buffer.
struct Rows {
  int64_t oh0, oh1, in_ring, out_ring;
};

template <int FB, int P>
void ConvChunk(const Conv& g, const float* xt, float* yt, const float* rt, int64_t o0, const Rows& rows) {
  const int64_t C = g.c, F = g.f;
  const bool row3 = FB <= 4 && g.kw == 3 && g.sw == 1;
  __m512 sc[FB], sh[FB];
  for (int o = 0; o < FB; o++) {
    sc[o] = _mm512_set1_ps(g.scale ? g.scale[o0 + o] : 1.0f);
    sh[o] = _mm512_set1_ps(g.shift ? g.shift[o0 + o] : 0.0f);
  }
  const __m512 zero = _mm512_setzero_ps();
  const auto in_row = [&](int64_t ih) { return xt + (rows.in_ring ? ih % rows.in_ring : ih) * g.w * C * 16; };
  for (int64_t oh = rows.oh0; oh < rows.oh1; oh++) {
    const int64_t ih0 = oh * g.sh - g.pt;
    const int64_t yrow = rows.out_ring ? oh % rows.out_ring : oh;
    const int64_t kh_lo = std::max<int64_t>(0, -ih0), kh_hi = std::min<int64_t>(g.kh, g.h - ih0);
    for (int64_t ow0 = 0; ow0 < g.ow; ow0 += P) {
      const int np = static_cast<int>(std::min<int64_t>(P, g.ow - ow0));
      const int64_t iwb = ow0 * g.sw - g.pl;  // input column of pixel p, tap kw: iwb + p*sw + kw
      const bool inner = np == P && iwb >= 0 && iwb + (P - 1) * g.sw + g.kw <= g.w;
      __m512 acc[P][FB];
      for (int p = 0; p < P; p++)
        for (int o = 0; o < FB; o++) acc[p][o] = zero;
      if (row3) {
        if constexpr (FB <= 4) {
          // Input columns iwb + j, j in [jlo, jhi), lie inside the row; the others are the zero
          // padding (or past the last block's pixels) and are skipped. Blocks at the left and right
          // edges take this path too (the `edge` copy, with the check): sent to the per-tap path
          // below, they were a third to a half of a 32-wide row's pixels and made a one-output
          // conv slower than a two-output one.
          const int jlo = static_cast<int>(std::max<int64_t>(0, -iwb));
          const int jhi = static_cast<int>(std::min<int64_t>(P + 2, g.w - iwb));
          auto taps = [&](auto edge) {
            for (int64_t kh = kh_lo; kh < kh_hi; kh++) {
              const float* xrow = in_row(ih0 + kh);
              const float* wrow = g.weights + kh * 3 * C * F + o0;
              for (int64_t c = 0; c < C; c++) {
                __m512 wv[3][FB];
                for (int kw = 0; kw < 3; kw++)
                  for (int o = 0; o < FB; o++) wv[kw][o] = _mm512_set1_ps(wrow[(kw * C + c) * F + o]);
#pragma GCC unroll 18
                for (int j = 0; j < P + 2; j++) {
                  if constexpr (decltype(edge)::value) {
                    if (j < jlo || j >= jhi) continue;
                  }
                  const __m512 xv = _mm512_loadu_ps(xrow + ((iwb + j) * C + c) * 16);
#pragma GCC unroll 3
                  for (int kw = 0; kw < 3; kw++) {
                    const int p = j - kw;
                    if (p < 0 || p >= P) continue;
#pragma GCC unroll 4
                    for (int o = 0; o < FB; o++) acc[p][o] = _mm512_fmadd_ps(xv, wv[kw][o], acc[p][o]);
                  }
                }
              }
            }
          };
          if (inner)
            taps(std::false_type{});
          else
            taps(std::true_type{});
        }
      } else {
        for (int64_t kh = kh_lo; kh < kh_hi; kh++) {
          const float* xrow = in_row(ih0 + kh);
          for (int64_t kw = 0; kw < g.kw; kw++) {
            const float* wp = g.weights + (kh * g.kw + kw) * C * F + o0;
            // Pixel p reads input column iwb + kw + p*sw: inside the row for every p of an inner
            // block, for p in [plo, phi) at an edge (the `edge` copy checks; the weights stay in
            // registers for the block either way, where a per-pixel loop broadcast them per FMA).
            const int64_t col0 = iwb + kw;
            const int plo = static_cast<int>(col0 >= 0 ? 0 : (-col0 + g.sw - 1) / g.sw);
            const int phi = static_cast<int>(col0 >= g.w ? 0 : std::min<int64_t>(P, (g.w - col0 + g.sw - 1) / g.sw));
            auto taps = [&](auto edge) {
              for (int64_t c = 0; c < C; c++) {
                __m512 wv[FB];
#pragma GCC unroll 8
                for (int o = 0; o < FB; o++) wv[o] = _mm512_set1_ps(wp[c * F + o]);
#pragma GCC unroll 16
                for (int p = 0; p < P; p++) {
                  if constexpr (decltype(edge)::value) {
                    if (p < plo || p >= phi) continue;
                  }
                  const __m512 xv = _mm512_loadu_ps(xrow + ((col0 + p * g.sw) * C + c) * 16);
#pragma GCC unroll 8
                  for (int o = 0; o < FB; o++) acc[p][o] = _mm512_fmadd_ps(xv, wv[o], acc[p][o]);
                }
              }
            };
            if (inner)
              taps(std::false_type{});
            else
              taps(std::true_type{});
          }
        }
      }
      for (int p = 0; p < np; p++) {
        const int64_t base = ((oh * g.ow + ow0 + p) * F + o0) * 16, ybase = ((yrow * g.ow + ow0 + p) * F + o0) * 16;
        for (int o = 0; o < FB; o++) {
          __m512 v = _mm512_fmadd_ps(acc[p][o], sc[o], sh[o]);
          if (rt) v = _mm512_add_ps(v, _mm512_loadu_ps(rt + base + o * 16));
          if (g.relu) v = _mm512_max_ps(v, zero);
          _mm512_storeu_ps(yt + ybase + o * 16, v);
        }
      }
    }
  }
}

using ChunkFn = void (*)(const Conv&, const float*, float*, const float*, int64_t, const Rows&);
// By chunk width: the general blocking, and (FB <= 4) the 3-tap row path's wider blocks.
constexpr ChunkFn kChunks[9] = {nullptr, ConvChunk<1, PixelsPerBlock<1>()>, ConvChunk<2, PixelsPerBlock<2>()>,
                                ConvChunk<3, PixelsPerBlock<3>()>, ConvChunk<4, PixelsPerBlock<4>()>,
                                ConvChunk<5, PixelsPerBlock<5>()>, ConvChunk<6, PixelsPerBlock<6>()>,
                                ConvChunk<7, PixelsPerBlock<7>()>, ConvChunk<8, PixelsPerBlock<8>()>};
constexpr ChunkFn kRowChunks[5] = {nullptr, ConvChunk<1, RowPixels<1>()>, ConvChunk<2, RowPixels<2>()>,
                                   ConvChunk<3, RowPixels<3>()>, ConvChunk<4, RowPixels<4>()>};

void RunConv(const Conv& g, const float* xt, float* yt, const float* rt, const Rows& rows) {
  const Chunks chunks(g.f);
  for (int64_t ch = 0; ch < chunks.count; ch++) {
    const int64_t size = chunks.size(ch);
    (size <= 4 && g.kw == 3 && g.sw == 1 ? kRowChunks : kChunks)[size](g, xt, yt, rt, chunks.start(ch), rows);
  }
}

void RunConv(const Conv& g, const float* xt, float* yt, const float* rt) { RunConv(g, xt, yt, rt, Rows{0, g.oh, 0, 0}); }

// A 1x1 conv `a` (stride 1, no padding, no shortcut) whose output only the next step, `b`, reads
// (in a factored ResNet, the second half of a block's first layer with its batch norm and ReLU,
// then the block's second conv): a's rows go into a ring of b.kh rows just before b's output rows
// need them, and b reads them back from cache. Run apart, a wrote a whole buffer (1 MiB a group at
// 32x32x16) that b then read back: a pruned ResNet-20's inference 54.7 -> 51.2 ms at batch 256 in a
// C++ harness (stage 1's pairs 0.5-0.6 ms faster each; at 8x8 the buffers fit L2 and little changes).
void RunPair(const Conv& a, const Conv& b, const float* xa, float* ring, float* yb, const float* rb) {
  const int64_t ring_rows = b.kh;
  int64_t made = 0;  // a's rows [0, made) are in the ring (the last ring_rows of them)
  for (int64_t oh = 0; oh < b.oh; oh++) {
    const int64_t need = std::min<int64_t>(b.h, oh * b.sh - b.pt + b.kh);
    if (need > made) {
      RunConv(a, xa, ring, nullptr, Rows{made, need, 0, ring_rows});
      made = need;
    }
    RunConv(b, ring, yb, rb, Rows{oh, oh + 1, ring_rows, 0});
  }
}

// Whether steps i and i + 1 run as one RunPair (see there): a's output read by no later step
// before another step writes its buffer (buffers are reused: lanes-inference.ts; the network's
// output buffer too, so it counts only where no later step writes it), and b not writing the
// buffer a reads (in the pair a's rows are made while b runs).
bool Pairs(const Net& net, size_t i) {
  if (i + 1 >= net.steps.size() || net.steps[i].kind != Step::kConv || net.steps[i + 1].kind != Step::kConv) return false;
  const Conv& a = net.steps[i].conv;
  const Conv& b = net.steps[i + 1].conv;
  if (a.kh != 1 || a.kw != 1 || a.sh != 1 || a.sw != 1 || a.pt != 0 || a.pl != 0 || a.res >= 0 || a.oh != a.h ||
      a.ow != a.w) {
    return false;
  }
  if (b.in != a.out || b.res == a.out || b.out == a.in || b.h != a.oh || b.w != a.ow || b.c != a.f) return false;
  for (size_t j = i + 2; j < net.steps.size(); j++) {
    const Step& s = net.steps[j];
    if (s.kind == Step::kConv ? (s.conv.in == a.out || s.conv.res == a.out) : s.pool.in == a.out) return false;
    if ((s.kind == Step::kConv ? s.conv.out : s.pool.out) == a.out) return true;
  }
  // No later step writes the buffer: it must not be where the network's output is read from.
  return a.out != net.output;
}

void RunPool(const Pool& g, const float* xt, float* yt) {
  const __m512 inv = _mm512_set1_ps(1.0f / static_cast<float>(g.hw));
  for (int64_t c = 0; c < g.c; c++) {
    __m512 s = _mm512_setzero_ps();
    for (int64_t p = 0; p < g.hw; p++) s = _mm512_add_ps(s, _mm512_loadu_ps(xt + (p * g.c + c) * 16));
    _mm512_storeu_ps(yt + c * 16, _mm512_mul_ps(s, inv));
  }
}

}  // namespace

bool Available() {
  static const bool ok = __builtin_cpu_supports("avx512f");
  return ok;
}

void ConvGroup(const Conv& g, const float* xt, float* yt) { RunConv(g, xt, yt, nullptr); }

void SetPairs(bool on) { g_pairs = on; }

int LastPairs() { return g_last_pairs; }

void Run(const Net& net, const float* x, int64_t n, float* y) {
  const int64_t kin = net.in_size, kout = net.out_size, groups = (n + 15) / 16;
  std::vector<char> pair(net.steps.size(), 0);
  int64_t ring_size = 0;
  for (size_t i = 0; g_pairs && i < net.steps.size(); i++)
    if (Pairs(net, i)) {
      pair[i] = 1;
      const Conv& a = net.steps[i].conv;
      ring_size = std::max(ring_size, net.steps[i + 1].conv.kh * a.ow * a.f * 16);
      i++;
    }
  g_last_pairs = static_cast<int>(std::count(pair.begin(), pair.end(), 1));
  const int threads = static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), groups)));
  // An exception must not leave an OpenMP region (that terminates the process): a failed
  // allocation is noted and thrown after it, as addon.cc's callers expect.
  bool failed = false;
  // One group's buffers (16 images of each of net.sizes) at these offsets, in floats, of one
  // scratch; each a multiple of 16 floats, so that every buffer starts 64-byte aligned.
  std::vector<size_t> offset(net.sizes.size());
  size_t total = 0;
  for (size_t b = 0; b < net.sizes.size(); b++) {
    offset[b] = total;
    total += static_cast<size_t>((net.sizes[b] * 16 + 15) / 16 * 16);
  }
#pragma omp parallel for schedule(static) num_threads(threads) if (threads > 1)
  for (int64_t gi = 0; gi < groups; gi++) {
    // Per thread, kept between calls (a few MiB for ResNet-20), on huge pages (huge_pages.h): on
    // 4 KiB pages, each buffer a std::vector, a pruned ResNet-20's inference of 256 images took
    // 4.24 ± 0.20 ms longer (55.4 against 51.2), full rank's 3.92 ± 0.35 (paired A/B in one process).
    static thread_local ::svd_huge::Scratch all, ring_scratch;
    float* base = nullptr;
    float* ring = nullptr;
    try {
      base = all.Get(std::max<size_t>(total, 16));
      ring = ring_scratch.Get(std::max<size_t>(static_cast<size_t>(ring_size), 16));
    } catch (const std::bad_alloc&) {
#pragma omp atomic write
      failed = true;
      continue;
    }
    const auto bufs = [&](int b) { return base + offset[static_cast<size_t>(b)]; };
    const int64_t n0 = gi * 16;
    const int nr = static_cast<int>(std::min<int64_t>(16, n - n0));
    ToLanes(x + n0 * kin, kin, nr, kin, bufs(net.input));
    for (size_t i = 0; i < net.steps.size(); i++) {
      const Step& s = net.steps[i];
      if (pair[i]) {
        const Conv& a = s.conv;
        const Conv& b = net.steps[++i].conv;
        RunPair(a, b, bufs(a.in), ring, bufs(b.out), b.res >= 0 ? bufs(b.res) : nullptr);
        continue;
      }
      if (s.kind == Step::kConv) {
        const Conv& g = s.conv;
        RunConv(g, bufs(g.in), bufs(g.out), g.res >= 0 ? bufs(g.res) : nullptr);
      } else {
        RunPool(s.pool, bufs(s.pool.in), bufs(s.pool.out));
      }
    }
    FromLanes(bufs(net.output), kout, y + n0 * kout, kout, nr);
  }
  if (failed) throw std::runtime_error("could not allocate its buffers (16 images of every buffer in sizes)");
}

}  // namespace svd_lanes

#pragma GCC pop_options

#else  // not x86-64 with GCC/Clang

namespace svd_lanes {
bool Available() { return false; }
void ConvGroup(const Conv&, const float*, float*) { std::abort(); }
void SetPairs(bool) {}
int LastPairs() { return 0; }
void Run(const Net&, const float*, int64_t, float*) { std::abort(); }
}  // namespace svd_lanes

#endif
