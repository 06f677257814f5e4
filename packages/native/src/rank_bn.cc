// See rank_bn.h. The products over all rows (t's covariance, Σ t_i ⊗ g_i, g·wᵀ, t·mmatᵀ) are
// GEMMs of the caller's (oneDNN), except on AVX-512 at R <= 16: t's covariance in one pass
// (CovRowsFused) and, at C 16, 32 or 64, the backward's one-pass path (GradRowsFused, FinishFused). The row loops here mask, sum and centre: column sums run in float
// over blocks of kBlock rows and are flushed into double after each block, so a sum over 65,536
// rows keeps double accuracy without double-width inner loops. The covariance is taken about t's
// mean (centred first), so no variance comes from the difference of two large numbers. The loops
// are compiled for AVX-512, AVX2 and the baseline, picked at load time (target_clones).
//
// Measured (2 cores of an AMD EPYC, one thread, against the layers' batch-norm kernels alone, the
// 1×1 conv not counted): at [65,536 rows, R 5, C 16] forward 0.48 ms vs 0.59, backward 1.04 vs
// 0.82; at [4,096, R 38, C 64] 0.34 vs 0.09 and 0.58 vs 0.14. A pruned ResNet-20's step is
// 5-9% faster with it (`pnpm bench prune`); the small ranks of the wide early layers pay, the
// high ranks of the last stage do not. The one-pass backward (Intel Xeon, one thread, in a pruned
// ResNet-20's step): a stage-1 layer (65,536 rows, C 16) 1.2-1.4 ms at R 1-6 against 1.7-2.4 with
// the GEMMs, a stage-2 one (16,384 rows, C 32, R 5-13) 0.7-1.0 against 0.9-1.3; the forward of a
// stage-1 layer 1.0-1.2 ms against 1.2-1.4 with the covariance in one pass. These passes are
// compiled once per rank (1-16), so their rank-indexed accumulators stay in registers: the backward
// of [65,536, R 5, C 16] alone 0.81 -> 0.70 ms, a pruned step's rank-space backwards 13.7-14.2 ->
// 12.8-13.7 ms (three alternating pairs of runs).
#include "rank_bn.h"

#include <omp.h>

#include <algorithm>
#include <cmath>
#include <cstdlib>
#include <numeric>
#include <utility>
#include <vector>

#include "lanes_net.h"
#include "pointwise_affine.h"
#include "prefetch.h"

#if defined(__x86_64__) && defined(__GNUC__)
#include <immintrin.h>
#define SVD_RANK_BN_X86 1
#endif

namespace svd_rank_bn {

namespace {

// Rows per block of a float partial sum.
constexpr int64_t kBlock = 64;

#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define SVD_CLONES __attribute__((target_clones("arch=skylake-avx512", "avx2", "default")))
#else
#define SVD_CLONES
#endif

int Threads(int64_t m) {
  return static_cast<int>(std::max<int64_t>(1, std::min<int64_t>(omp_get_max_threads(), m / 1024)));
}

// Scratch buffer k (0-2) of at least n floats, kept between calls (the kernels run on one JS thread).
float* Scratch(int k, int64_t n) {
  static std::vector<float> bufs[3];
  auto& b = bufs[k];
  if (b.size() < static_cast<size_t>(n)) b.resize(static_cast<size_t>(n));
  return b.data();
}

// Column sums of t's rows [i0, i1) into sum [R] (double).
SVD_CLONES void ColumnSums(const float* t, int64_t i0, int64_t i1, int64_t r, double* sum) {
  std::vector<float> acc(static_cast<size_t>(r));
  for (int64_t b0 = i0; b0 < i1; b0 += kBlock) {
    const int64_t b1 = std::min(i1, b0 + kBlock);
    std::fill(acc.begin(), acc.end(), 0.0f);
    for (int64_t i = b0; i < b1; i++) {
      const float* ti = t + i * r;
#pragma omp simd
      for (int64_t o = 0; o < r; o++) acc[o] += ti[o];
    }
    for (int64_t o = 0; o < r; o++) sum[o] += acc[o];
  }
}

// tc = t − mean over rows [i0, i1).
SVD_CLONES void Centre(const float* t, const float* mean, float* tc, int64_t i0, int64_t i1, int64_t r) {
  for (int64_t i = i0; i < i1; i++) {
#pragma omp simd
    for (int64_t o = 0; o < r; o++) tc[i * r + o] = t[i * r + o] - mean[o];
  }
}

// Over rows [i0, i1): g_i = dy_i masked by y_i > 0 (dy_i where there is no y), written to g, and
// dbeta [C] += Σ g_i (double). Vectorized over C.
SVD_CLONES void MaskAndSum(const float* __restrict dy, const float* __restrict y, float* __restrict g, int64_t i0,
                           int64_t i1, int64_t c, double* dbeta) {
  std::vector<float> db(static_cast<size_t>(c));
  float* __restrict acc = db.data();
  for (int64_t b0 = i0; b0 < i1; b0 += kBlock) {
    const int64_t b1 = std::min(i1, b0 + kBlock);
    std::fill(db.begin(), db.end(), 0.0f);
    for (int64_t i = b0; i < b1; i++) {
      const float* d = dy + i * c;
      float* gi = g + i * c;
      for (int64_t j = 0; j < c; j += 16) {
        svd_prefetch::ForWrite(gi + j);
        svd_prefetch::ForRead(d + j);
        if (y) svd_prefetch::ForRead(y + i * c + j);
      }
      if (y) {
        const float* yi = y + i * c;
#pragma omp simd
        for (int64_t j = 0; j < c; j++) {
          const float v = yi[j] > 0.0f ? d[j] : 0.0f;
          gi[j] = v;
          acc[j] += v;
        }
      } else {
#pragma omp simd
        for (int64_t j = 0; j < c; j++) {
          gi[j] = d[j];
          acc[j] += d[j];
        }
      }
    }
    for (int64_t j = 0; j < c; j++) dbeta[j] += acc[j];
  }
}

// dt[i, :] += bias − tm[i, :] over rows [i0, i1).
SVD_CLONES void Finish(float* dt, const float* tm, const float* bias, int64_t i0, int64_t i1, int64_t r) {
  for (int64_t i = i0; i < i1; i++) {
    float* di = dt + i * r;
    const float* mi = tm + i * r;
#pragma omp simd
    for (int64_t o = 0; o < r; o++) di[o] += bias[o] - mi[o];
  }
}

// The backward's pass over the C-channel rows in one go (C = 16·V, R·V <= 16), for AVX-512: each
// row of dy (and y) is read once, g_i = dy_i masked by y_i > 0 is kept in registers (and written to
// g only when the residual wants it), dbeta [C] += Σ g_i and gc [R, C] += Σ (t_i − tmean) ⊗ g_i
// (float per kBlock rows, then double), and dt's first term g_i·wᵀ [R] from 16 rows transposed at a
// time (16 columns of g against broadcast weights, then transposed back). The GEMM version reads g
// back twice and writes a centred copy of t: on a stage-1 layer of a pruned ResNet-20 (65,536 rows,
// 16 channels) it took 1.7-2.4 ms, mostly memory.
bool FusedApplies(int64_t r, int64_t c) {
  const int64_t v = c / 16;
  return ::svd_lanes::Available() && c % 16 == 0 && (v == 1 || v == 2 || v == 4) && r <= 16 && r * v <= 64;
}

// One row the plain way (the rows left over after the 16-row blocks), into the same accumulators.
void GradRow(const float* dy, const float* y, const uint16_t* mask, const float* t, const float* tmean, const float* w,
             float* g, float* dt, int64_t i, int64_t r, int64_t c, double* dbeta, double* gc) {
  for (int64_t o = 0; o < r; o++) dt[i * r + o] = 0.0f;
  const int64_t words = svd_pointwise::MaskWords(c);
  for (int64_t j = 0; j < c; j++) {
    const bool on = mask ? ((mask[i * words + j / 16] >> (j % 16)) & 1) != 0 : !y || y[i * c + j] > 0.0f;
    const float v = on ? dy[i * c + j] : 0.0f;
    if (g) g[i * c + j] = v;
    dbeta[j] += v;
    for (int64_t o = 0; o < r; o++) {
      gc[o * c + j] += static_cast<double>(t[i * r + o] - tmean[o]) * v;
      dt[i * r + o] += v * w[o * c + j];
    }
  }
}

#ifdef SVD_RANK_BN_X86
#pragma GCC push_options
#pragma GCC target("avx512f")

#include "lanes.h"

// 16 values of dy at off masked by the ReLU (mask bits word `word`, or y > 0, or none), also
// stored to g at off when g is not null.
inline __m512 MaskedRow(const float* dy, const float* y, const uint16_t* mask, float* g, int64_t off, int64_t word) {
  svd_prefetch::ForRead(dy + off);
  __m512 gk = _mm512_loadu_ps(dy + off);
  if (mask) {
    gk = _mm512_maskz_mov_ps(static_cast<__mmask16>(mask[word]), gk);
  } else if (y) {
    svd_prefetch::ForRead(y + off);
    gk = _mm512_maskz_mov_ps(_mm512_cmp_ps_mask(_mm512_loadu_ps(y + off), _mm512_setzero_ps(), _CMP_GT_OQ), gk);
  }
  if (g) {
    svd_prefetch::ForWrite(g + off);
    _mm512_storeu_ps(g + off, gk);
  }
  return gk;
}

// agc[o·V + v] += tc[o]·gk for the R columns of one row's centred t (tc).
template <int V, int R>
inline void AddGc(const float* tc, __m512 gk, int v, __m512* agc) {
  for (int o = 0; o < R; o++) agc[o * V + v] = _mm512_fmadd_ps(_mm512_set1_ps(tc[o]), gk, agc[o * V + v]);
}

// R is a template argument (GradRowsFused below picks the instance): with a run-time rank the
// accumulators agc and adt, indexed by the rank, lived on the stack, and every FMA went through a
// store and a load (0.81 ms for a stage-1 layer at R 5; compiled per rank, see the header).
//
// Where kFlatDt (R <= 10, C 16 or 32), dt's 16-row block leaves as R full vectors of the flat
// array, each gathered from the adt columns by ceil(R / 2) two-source permutes, in place of a
// second Transpose16 (64 shuffles) and 16 masked row stores; and t's block is centred once into an
// L1 buffer, so each gc FMA takes its t from a broadcast load. On an AMD EPYC (Zen 5, one thread),
// this pass at 65,536 rows, C 16: R 1 0.25 -> 0.18 ms, R 3 0.34 -> 0.24, R 5 0.28 -> 0.25, R 8
// 0.48 -> 0.42 (no gain at R 13-16, or at C 64, where the first transpose is shared by fewer rows).
template <int V, int R>
void GradRowsFusedR(const float* dy, const float* y, const uint16_t* mask, const float* t, const float* tmean,
                    const float* w, float* g, float* dt, int64_t i0, int64_t i1, double* dbeta, double* gc) {
  constexpr int64_t c = 16 * V, r = R;
  const int* col = svd_lanes::Perm().col;
  // wp[(o·V + v)·16 + q] = w[o][v·16 + col[q]]: the weight of the column Transpose16 leaves in row q.
  float wp[16 * c];
  for (int64_t o = 0; o < r; o++)
    for (int v = 0; v < V; v++)
      for (int q = 0; q < 16; q++) wp[(o * V + v) * 16 + q] = w[o * c + v * 16 + col[q]];
  const __m512 zero = _mm512_setzero_ps();
  const __mmask16 rmask = static_cast<__mmask16>((1u << r) - 1u);
  float fdb[c], fgc[16 * c];
  constexpr bool kFlatDt = R <= 10 && V <= 2;
  // At C 32 (and kFlatDt) the two passes over each 16-row block below: at 16,384 rows, one thread,
  // R 5 0.15 -> 0.09 ms, R 7 0.26 -> 0.17, R 8 0.27 -> 0.17, R 9-10 even; at C 16 no different.
  constexpr bool kSplit = kFlatDt && V == 2;
  constexpr int P = (R + 1) / 2;
  // tpat[j] lane l: the mean of the column of element 16j + l of a 16-row block of t (flat).
  alignas(64) float tpat[R][16];
  // pidx[j][p], pm[j][p]: vector j of dt's block (lane l: element e = 16j + l, row e / R, column
  // o = e mod R, which is adt[o] lane e / R) takes columns 2p and 2p + 1 by one permute.
  alignas(64) int32_t pidx[R][P][16];
  __mmask16 pm[R][P];
  alignas(64) float tcb[16 * R];
  if (kFlatDt) {
    for (int j = 0; j < R; j++)
      for (int l = 0; l < 16; l++) tpat[j][l] = tmean[(16 * j + l) % R];
    for (int j = 0; j < R; j++)
      for (int p = 0; p < P; p++) {
        unsigned bits = 0;
        for (int l = 0; l < 16; l++) {
          const int e = 16 * j + l, o = e % R;
          pidx[j][p][l] = e / R + (o == 2 * p + 1 ? 16 : 0);
          if (o / 2 == p) bits |= 1u << l;
        }
        pm[j][p] = static_cast<__mmask16>(bits);
      }
  }
  int64_t i = i0;
  while (i + 16 <= i1) {
    const int64_t b1 = std::min(i1, i + kBlock);
    __m512 adb[V], agc[R * V];
    for (int v = 0; v < V; v++) adb[v] = zero;
    for (int64_t k = 0; k < r * V; k++) agc[k] = zero;
    for (; i + 16 <= b1; i += 16) {
      __m512 adt[16];
      for (int o = 0; o < 16; o++) adt[o] = zero;
      if (kFlatDt)
        for (int j = 0; j < R; j++)
          _mm512_store_ps(tcb + 16 * j, _mm512_sub_ps(_mm512_loadu_ps(t + i * r + 16 * j), _mm512_load_ps(tpat[j])));
      if (kSplit) {
        // Pass A: each row's V masked vectors (into gb, an L1 buffer), dbeta's and gc's sums;
        // pass B: each group of 16 columns transposed from gb, and dt's first term. Kept apart,
        // neither pass holds the other's accumulators in registers: in one, at C 32 they spilled.
        alignas(64) float gb[V][16][16];
        for (int k = 0; k < 16; k++) {
          const float* tc = tcb + k * r;
          for (int v = 0; v < V; v++) {
            const int64_t off = (i + k) * c + v * 16;
            __m512 gk = MaskedRow(dy, y, mask, g, off, (i + k) * V + v);
            adb[v] = _mm512_add_ps(adb[v], gk);
            AddGc<V, R>(tc, gk, v, agc);
            _mm512_store_ps(gb[v][k], gk);
          }
        }
        // dt's first term as in the loop below (kept in place: as one helper for both, the C 64
        // path, which does not split, measured ~6% slower at rank 4).
        for (int v = 0; v < V; v++) {
          __m512 rows[16];
          for (int k = 0; k < 16; k++) rows[k] = _mm512_load_ps(gb[v][k]);
          svd_lanes::Transpose16(rows);
          for (int q = 0; q < 16; q++)
            for (int64_t o = 0; o < r; o++)
              adt[o] = _mm512_fmadd_ps(rows[q], _mm512_set1_ps(wp[(o * V + v) * 16 + q]), adt[o]);
        }
      }
      for (int v = 0; v < V && !kSplit; v++) {
        __m512 rows[16];
        for (int k = 0; k < 16; k++) {
          const int64_t off = (i + k) * c + v * 16;
          __m512 gk = MaskedRow(dy, y, mask, g, off, (i + k) * V + v);
          adb[v] = _mm512_add_ps(adb[v], gk);
          if (kFlatDt) {
            AddGc<V, R>(tcb + k * r, gk, v, agc);
          } else {
            const float* ti = t + (i + k) * r;
            for (int64_t o = 0; o < r; o++)
              agc[o * V + v] = _mm512_fmadd_ps(_mm512_set1_ps(ti[o] - tmean[o]), gk, agc[o * V + v]);
          }
          rows[k] = gk;
        }
        svd_lanes::Transpose16(rows);
        for (int q = 0; q < 16; q++)
          for (int64_t o = 0; o < r; o++)
            adt[o] = _mm512_fmadd_ps(rows[q], _mm512_set1_ps(wp[(o * V + v) * 16 + q]), adt[o]);
      }
      // adt[o] holds dt[i + k][o] in lane k.
      if (kFlatDt) {
        for (int j = 0; j < R; j++) {
          __m512 out = zero;
          for (int p = 0; p < P; p++) {
            const __m512i ix = _mm512_load_si512(pidx[j][p]);
            const __m512 two = 2 * p + 1 < R ? _mm512_permutex2var_ps(adt[2 * p], ix, adt[2 * p + 1]) : _mm512_permutexvar_ps(ix, adt[2 * p]);
            out = _mm512_mask_mov_ps(out, pm[j][p], two);
          }
          _mm512_storeu_ps(dt + i * r + 16 * j, out);
        }
      } else {
        // Transposed, row q holds dt[i + col[q]][0..15].
        svd_lanes::Transpose16(adt);
        for (int q = 0; q < 16; q++) _mm512_mask_storeu_ps(dt + (i + col[q]) * r, rmask, adt[q]);
      }
    }
    for (int v = 0; v < V; v++) _mm512_storeu_ps(fdb + v * 16, adb[v]);
    for (int64_t k = 0; k < r * V; k++) _mm512_storeu_ps(fgc + k * 16, agc[k]);
    for (int64_t j = 0; j < c; j++) dbeta[j] += fdb[j];
    // agc[o·V + v] lane l is gc[o][v·16 + l].
    for (int64_t k = 0; k < r * c; k++) gc[k] += fgc[k];
  }
  for (; i < i1; i++) GradRow(dy, y, mask, t, tmean, w, g, dt, i, r, c, dbeta, gc);
}

// GradRowsFusedR for the rank r (1-16).
template <int V, int... Rs>
void GradRowsFusedAt(int64_t r, std::integer_sequence<int, Rs...>, const float* dy, const float* y, const uint16_t* mask,
                     const float* t, const float* tmean, const float* w, float* g, float* dt, int64_t i0, int64_t i1,
                     double* dbeta, double* gc) {
  using Fn = void (*)(const float*, const float*, const uint16_t*, const float*, const float*, const float*, float*,
                      float*, int64_t, int64_t, double*, double*);
  static constexpr Fn kByRank[] = {&GradRowsFusedR<V, Rs + 1>...};
  kByRank[r - 1](dy, y, mask, t, tmean, w, g, dt, i0, i1, dbeta, gc);
}

template <int V>
void GradRowsFused(const float* dy, const float* y, const uint16_t* mask, const float* t, const float* tmean,
                   const float* w, float* g, float* dt, int64_t i0, int64_t i1, int64_t r, double* dbeta, double* gc) {
  GradRowsFusedAt<V>(r, std::make_integer_sequence<int, 16>{}, dy, y, mask, t, tmean, w, g, dt, i0, i1, dbeta, gc);
}

// dt[i, :] += bias − t[i, :]·mmatᵀ over rows [i0, i1), R <= 16: 16 rows of t transposed at a time
// (one column per vector), R² FMAs against broadcast entries of mmat, transposed back. Replaces a
// GEMM with an inner dimension of R (1-16), which ran far below the machine's rate, and the pass
// that added its result.
template <int R>
void FinishFusedR(float* dt, const float* t, const float* mmat, const float* bias, int64_t i0, int64_t i1) {
  constexpr int64_t r = R;
  const int* col = svd_lanes::Perm().col;
  const __mmask16 rmask = static_cast<__mmask16>((1u << r) - 1u);
  // mp[o·16 + q] = mmat[o][col[q]] (zero past R): the entry for the column Transpose16 leaves in row q.
  float mp[16 * 16];
  for (int64_t o = 0; o < r; o++)
    for (int q = 0; q < 16; q++) mp[o * 16 + q] = col[q] < r ? mmat[o * r + col[q]] : 0.0f;
  int64_t i = i0;
  for (; i + 16 <= i1; i += 16) {
    __m512 cols[16], out[16];
    for (int k = 0; k < 16; k++) cols[k] = _mm512_maskz_loadu_ps(rmask, t + (i + k) * r);
    svd_lanes::Transpose16(cols);
    for (int64_t o = 0; o < 16; o++) out[o] = _mm512_setzero_ps();
    for (int q = 0; q < 16; q++) {
      if (col[q] >= r) continue;
      for (int64_t o = 0; o < r; o++) out[o] = _mm512_fnmadd_ps(cols[q], _mm512_set1_ps(mp[o * 16 + q]), out[o]);
    }
    // out[o] lane k: −(t·mmatᵀ)[i + k][o]; transposed, row q holds row i + col[q].
    svd_lanes::Transpose16(out);
    // All 16 rows read before any is written: a masked load right after a masked store to the same
    // cache line waits for the store (no forwarding), which made this 3x slower at R = 1.
    const __m512 b = _mm512_maskz_loadu_ps(rmask, bias);
    for (int q = 0; q < 16; q++)
      out[q] = _mm512_add_ps(_mm512_add_ps(_mm512_maskz_loadu_ps(rmask, dt + (i + col[q]) * r), b), out[q]);
    for (int q = 0; q < 16; q++) _mm512_mask_storeu_ps(dt + (i + col[q]) * r, rmask, out[q]);
  }
  for (; i < i1; i++)
    for (int64_t o = 0; o < r; o++) {
      float s = 0.0f;
      for (int64_t q = 0; q < r; q++) s += t[i * r + q] * mmat[o * r + q];
      dt[i * r + o] += bias[o] - s;
    }
}

// FinishFusedR for R <= 6 without transposes: a 16-row block of t and of dt is R vectors of the
// flat array. Lane l of dt's vector j is element e = 16j + l (row e / R, column o = e mod R), and
// (t·mmatᵀ)[row][o] = Σ_q t[row][q]·mmat[o][q], whose t[row][q] sits d = q − o elements on from e;
// so vector j is a sum over the 2R − 1 shifts d of t's block moved d lanes (a two-source permute of
// two of t's vectors, lanes whose row it leaves zeroed) times a vector of mmat's entries per lane.
// R(2R − 1) permutes per 16 rows against FinishFusedR's two Transpose16 (128 shuffles) and masked
// row loads and stores. AMD EPYC (Zen 5), one thread, 65,536 rows: R 1 0.30 -> 0.01 ms, R 3 0.33
// -> 0.04, R 5 0.28 -> 0.10, R 6 0.40 -> 0.26; even at R 7, behind from 8.
template <int R>
void FinishShiftR(float* dt, const float* t, const float* mmat, const float* bias, int64_t i0, int64_t i1) {
  constexpr int D = 2 * R - 1;
  // For vector j and shift index di (d = di − (R − 1)): the lanes whose row holds t[row][o + d]
  // (lm), mmat's entry there, negated (coef), and the permute taking it from tvz[lower],
  // tvz[lower + 1] (pidx).
  alignas(64) float coef[R][D][16];
  alignas(64) float bpat[R][16];
  alignas(64) int32_t pidx[R][D][16];
  __mmask16 lm[R][D];
  for (int j = 0; j < R; j++)
    for (int di = 0; di < D; di++) {
      const int start = 16 * j + di - (R - 1);
      // tvz[0] and tvz[R + 1] are zero, tvz[1 + k] is t's vector k: the lower source of lanes
      // start..start + 15 is tvz[j] (start < 16j) or tvz[j + 1].
      const int lower = di >= R - 1 ? j + 1 : j;
      unsigned bits = 0;
      for (int l = 0; l < 16; l++) {
        const int o = (16 * j + l) % R, q = o + di - (R - 1);
        const bool in = q >= 0 && q < R;
        coef[j][di][l] = in ? -mmat[o * R + q] : 0.0f;
        if (in) bits |= 1u << l;
        pidx[j][di][l] = start + l - 16 * (lower - 1);
        if (di == 0) bpat[j][l] = bias[o];
      }
      lm[j][di] = static_cast<__mmask16>(bits);
    }
  int64_t i = i0;
  for (; i + 16 <= i1; i += 16) {
    const float* tb = t + i * R;
    float* db = dt + i * R;
    __m512 tvz[R + 2];
    tvz[0] = tvz[R + 1] = _mm512_setzero_ps();
    for (int j = 0; j < R; j++) tvz[j + 1] = _mm512_loadu_ps(tb + 16 * j);
    for (int j = 0; j < R; j++) {
      __m512 acc = _mm512_add_ps(_mm512_loadu_ps(db + 16 * j), _mm512_load_ps(bpat[j]));
#pragma GCC unroll 16
      for (int di = 0; di < D; di++) {
        const int lower = di >= R - 1 ? j + 1 : j;
        const __m512 moved = _mm512_maskz_permutex2var_ps(lm[j][di], tvz[lower], _mm512_load_si512(pidx[j][di]), tvz[lower + 1]);
        acc = _mm512_fmadd_ps(moved, _mm512_load_ps(coef[j][di]), acc);
      }
      _mm512_storeu_ps(db + 16 * j, acc);
    }
  }
  for (; i < i1; i++)
    for (int64_t o = 0; o < R; o++) {
      float s = 0.0f;
      for (int64_t q = 0; q < R; q++) s += t[i * R + q] * mmat[o * R + q];
      dt[i * R + o] += bias[o] - s;
    }
}

template <int... Rs>
void FinishFused(float* dt, const float* t, const float* mmat, const float* bias, int64_t i0, int64_t i1, int64_t r,
                 std::integer_sequence<int, Rs...>) {
  using Fn = void (*)(float*, const float*, const float*, const float*, int64_t, int64_t);
  static constexpr Fn kByRank[] = {&FinishFusedR<Rs + 1>...};
  static constexpr Fn kShift[] = {&FinishShiftR<1>, &FinishShiftR<2>, &FinishShiftR<3>, &FinishShiftR<4>, &FinishShiftR<5>, &FinishShiftR<6>};
  (r <= 6 ? kShift : kByRank)[r - 1](dt, t, mmat, bias, i0, i1);
}

// cov [R, R] += Σ (t_i − tmean) ⊗ (t_i − tmean) over rows [i0, i1), R <= 16 (double, from float
// partials over kCovBlock rows): 16 centred rows transposed at a time, so that each product of two
// columns is one FMA over 16 rows. Replaces writing a centred copy of t and a GEMM whose output is
// only R x R (which ran far below the machine's rate at R 1-16).
constexpr int64_t kCovBlock = 256;
template <int R>
void CovRowsFusedR(const float* t, const float* tmean, int64_t i0, int64_t i1, double* cov) {
  constexpr int64_t r = R;
  const int* col = svd_lanes::Perm().col;
  const __mmask16 rmask = static_cast<__mmask16>((1u << r) - 1u);
  int pos[16];  // pos[o]: the row Transpose16 leaves column o in
  for (int q = 0; q < 16; q++) pos[col[q]] = q;
  const __m512 mv = _mm512_maskz_loadu_ps(rmask, tmean);
  const int64_t pairs = r * (r + 1) / 2;
  __m512 acc[R * (R + 1) / 2];
  float lanes[16];
  int64_t i = i0;
  while (i + 16 <= i1) {
    const int64_t b1 = std::min(i1, i + kCovBlock);
    for (int64_t k = 0; k < pairs; k++) acc[k] = _mm512_setzero_ps();
    for (; i + 16 <= b1; i += 16) {
      __m512 cols[16];
      for (int k = 0; k < 16; k++) cols[k] = _mm512_maskz_sub_ps(rmask, _mm512_maskz_loadu_ps(rmask, t + (i + k) * r), mv);
      svd_lanes::Transpose16(cols);
      int64_t k = 0;
      for (int64_t o = 0; o < r; o++)
        for (int64_t q = o; q < r; q++, k++) acc[k] = _mm512_fmadd_ps(cols[pos[o]], cols[pos[q]], acc[k]);
    }
    int64_t k = 0;
    for (int64_t o = 0; o < r; o++)
      for (int64_t q = o; q < r; q++, k++) {
        _mm512_storeu_ps(lanes, acc[k]);
        double sum = 0.0;
        for (int l = 0; l < 16; l++) sum += lanes[l];
        cov[o * r + q] += sum;
        if (q != o) cov[q * r + o] += sum;
      }
  }
  for (; i < i1; i++)
    for (int64_t o = 0; o < r; o++)
      for (int64_t q = 0; q < r; q++)
        cov[o * r + q] += static_cast<double>(t[i * r + o] - tmean[o]) * (t[i * r + q] - tmean[q]);
}

template <int... Rs>
void CovRowsFused(const float* t, const float* tmean, int64_t i0, int64_t i1, int64_t r, double* cov,
                  std::integer_sequence<int, Rs...>) {
  using Fn = void (*)(const float*, const float*, int64_t, int64_t, double*);
  static constexpr Fn kByRank[] = {&CovRowsFusedR<Rs + 1>...};
  kByRank[r - 1](t, tmean, i0, i1, cov);
}

// Column sums of t's rows [i0, i1) into sum [R] (double), R <= 16, reading the rows as one flat
// array: element e (from row i0's first) is in column e mod R, so the lanes of vector k (elements
// 16k..16k+15) fall in columns (16k + l) mod R, a pattern that repeats every P = R / gcd(R, 16)
// vectors. P accumulators take the vectors in turn, flushed to double every kFlatBlock vectors each.
// The row-by-row loop spent its time on loop overhead at R 1-7 (0.09-0.1 ms for 65,536 rows, here
// 0.004-0.02 ms from cache; the same sums to 1e-7).
constexpr int64_t kFlatBlock = 64;
void ColumnSumsFlat(const float* t, int64_t i0, int64_t i1, int64_t r, double* sum) {
  const int64_t p = r / std::gcd<int64_t, int64_t>(r, 16);
  const float* base = t + i0 * r;
  const int64_t n = (i1 - i0) * r, nvec = n / 16;
  double dacc[16 * 16] = {};
  float lanes[16];
  for (int64_t k0 = 0; k0 < nvec; k0 += kFlatBlock * p) {
    const int64_t k1 = std::min(nvec, k0 + kFlatBlock * p);
    __m512 acc[16];
    for (int64_t q = 0; q < p; q++) acc[q] = _mm512_setzero_ps();
    for (int64_t k = k0; k < k1; k += p)
      for (int64_t q = 0; q < p && k + q < k1; q++) acc[q] = _mm512_add_ps(acc[q], _mm512_loadu_ps(base + (k + q) * 16));
    // Vector k's accumulator is k mod p: the block starts at a multiple of p.
    for (int64_t q = 0; q < p; q++) {
      _mm512_storeu_ps(lanes, acc[q]);
      for (int l = 0; l < 16; l++) dacc[q * 16 + l] += lanes[l];
    }
  }
  for (int64_t q = 0; q < p; q++)
    for (int l = 0; l < 16; l++) sum[(16 * q + l) % r] += dacc[q * 16 + l];
  for (int64_t e = nvec * 16; e < n; e++) sum[e % r] += base[e];
}

#pragma GCC pop_options
#endif

// Column sums of t's rows [i0, i1) into sum [R] (double): flat where R <= 16 on AVX-512.
void Sums(const float* t, int64_t i0, int64_t i1, int64_t r, double* sum) {
#ifdef SVD_RANK_BN_X86
  if (::svd_lanes::Available() && r <= 16) return ColumnSumsFlat(t, i0, i1, r, sum);
#endif
  ColumnSums(t, i0, i1, r, sum);
}

// Rows [i0, i1) of the fused pass (FusedApplies(r, c) must hold).
void GradRows(const float* dy, const float* y, const uint16_t* mask, const float* t, const float* tmean, const float* w,
              float* g, float* dt, int64_t i0, int64_t i1, int64_t r, int64_t c, double* dbeta, double* gc) {
#ifdef SVD_RANK_BN_X86
  if (c == 16) return GradRowsFused<1>(dy, y, mask, t, tmean, w, g, dt, i0, i1, r, dbeta, gc);
  if (c == 32) return GradRowsFused<2>(dy, y, mask, t, tmean, w, g, dt, i0, i1, r, dbeta, gc);
  if (c == 64) return GradRowsFused<4>(dy, y, mask, t, tmean, w, g, dt, i0, i1, r, dbeta, gc);
#endif
  for (int64_t i = i0; i < i1; i++) GradRow(dy, y, mask, t, tmean, w, g, dt, i, r, c, dbeta, gc);
}

// dt[i, :] += bias − t[i, :]·mmatᵀ over rows [i0, i1) of the fused path (FusedApplies held).
void FinishRows(float* dt, const float* t, const float* mmat, const float* bias, int64_t i0, int64_t i1, int64_t r) {
#ifdef SVD_RANK_BN_X86
  FinishFused(dt, t, mmat, bias, i0, i1, r, std::make_integer_sequence<int, 16>{});
#else
  (void)dt, (void)t, (void)mmat, (void)bias, (void)i0, (void)i1, (void)r;
  std::abort();  // FusedApplies is false off x86-64
#endif
}

// Per-thread double accumulators of length n, summed into out after the parallel region.
struct Partials {
  std::vector<std::vector<double>> per;
  Partials(int threads, size_t n) : per(static_cast<size_t>(threads), std::vector<double>(n, 0.0)) {}
  std::vector<double> Sum() const {
    std::vector<double> out(per[0].size(), 0.0);
    for (const auto& v : per)
      for (size_t k = 0; k < v.size(); k++) out[k] += v[k];
    return out;
  }
};

}  // namespace

void Forward(const float* t, const float* p, const float* gamma, const float* beta, const float* res, float* y,
             float* mean, float* variance, float* tmean, float* cov, float* scale, float* invstd, int64_t m,
             int64_t r, int64_t c, double eps, bool relu, MatMul matmul, uint16_t* mask) {
  const int threads = Threads(m);
  const double n = static_cast<double>(m);
  Partials sums(threads, static_cast<size_t>(r));
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int id = omp_get_thread_num(), k = omp_get_num_threads();
    Sums(t, m * id / k, m * (id + 1) / k, r, sums.per[static_cast<size_t>(id)].data());
  }
  const std::vector<double> tm = sums.Sum();
  for (int64_t o = 0; o < r; o++) tmean[o] = static_cast<float>(tm[o] / n);
  // cov = tcᵀ·tc / n with tc = t − tmean (centred first, so no variance is the difference of two
  // large numbers): in one pass over t where R <= 16 on AVX-512, else a centred copy and a GEMM.
#ifdef SVD_RANK_BN_X86
  if (::svd_lanes::Available() && r <= 16) {
    Partials cs(threads, static_cast<size_t>(r * r));
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
      const int id = omp_get_thread_num(), k = omp_get_num_threads();
      CovRowsFused(t, tmean, m * id / k, m * (id + 1) / k, r, cs.per[static_cast<size_t>(id)].data(), std::make_integer_sequence<int, 16>{});
    }
    const std::vector<double> raw = cs.Sum();
    for (int64_t k = 0; k < r * r; k++) cov[k] = static_cast<float>(raw[k]);
  } else
#endif
  {
    float* tc = Scratch(0, m * r);
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
      const int id = omp_get_thread_num(), k = omp_get_num_threads();
      Centre(t, tmean, tc, m * id / k, m * (id + 1) / k, r);
    }
    matmul(tc, tc, cov, r, m, r, true, false);
  }
  std::vector<double> s(static_cast<size_t>(r * r));
  for (int64_t o = 0; o < r; o++)
    for (int64_t q = 0; q < r; q++) s[o * r + q] = 0.5 * (static_cast<double>(cov[o * r + q]) + cov[q * r + o]) / n;
  for (int64_t k = 0; k < r * r; k++) cov[k] = static_cast<float>(s[k]);
  // u's statistics, the affine map, and w = p·diag(scale), in double: sp = s·p, then
  // var_j = Σ_o p[o, j]·sp[o, j]. Loops run along C, which vectorizes (R²·C terms: ~0.1 ms per
  // layer at R 41, C 64 as dot products down p's columns).
  std::vector<double> sp(static_cast<size_t>(r * c), 0.0), mus(static_cast<size_t>(c), 0.0),
      vars(static_cast<size_t>(c), 0.0);
  for (int64_t o = 0; o < r; o++) {
    double* spo = sp.data() + o * c;
    for (int64_t q = 0; q < r; q++) {
      const double so = s[o * r + q];
      const float* pq = p + q * c;
#pragma omp simd
      for (int64_t j = 0; j < c; j++) spo[j] += so * pq[j];
    }
    const double tmo = tm[o] / n;
    const float* po = p + o * c;
#pragma omp simd
    for (int64_t j = 0; j < c; j++) {
      mus[j] += tmo * po[j];
      vars[j] += po[j] * spo[j];
    }
  }
  std::vector<float> w(static_cast<size_t>(r * c)), shift(static_cast<size_t>(c));
  for (int64_t j = 0; j < c; j++) {
    const double mu = mus[j], var = std::max(vars[j], 0.0);
    const double is = 1.0 / std::sqrt(var + eps);
    const double a = gamma[j] * is;
    mean[j] = static_cast<float>(mu);
    variance[j] = static_cast<float>(var);
    invstd[j] = static_cast<float>(is);
    scale[j] = static_cast<float>(a);
    shift[j] = static_cast<float>(beta[j] - mu * a);
    for (int64_t o = 0; o < r; o++) w[o * c + j] = static_cast<float>(p[o * c + j] * a);
  }
  svd_pointwise::PointwiseAffine(t, w.data(), shift.data(), y, m, r, c, relu, res, relu ? mask : nullptr);
}

void Backward(const float* dy, const float* y, const float* t, const float* p, const float* tmean, const float* cov,
              const float* scale, const float* invstd, float* dt, float* dp, float* dgamma, float* dbeta,
              float* dres, int64_t m, int64_t r, int64_t c, MatMul matmul, const uint16_t* mask) {
  const int threads = Threads(m);
  const double n = static_cast<double>(m);
  // w = p·diag(scale), dt's first term g·wᵀ.
  std::vector<float> w(static_cast<size_t>(r * c));
  for (int64_t o = 0; o < r; o++)
    for (int64_t j = 0; j < c; j++) w[o * c + j] = p[o * c + j] * scale[j];
  const bool fused = FusedApplies(r, c);
  // gc = Σ (t_i − tmean) ⊗ g_i and dbeta = Σ g_i, g = dy masked (into dres when the residual wants
  // it): fused, one pass that also gives g·wᵀ; otherwise a pass for g and dbeta, then a GEMM.
  std::vector<double> gc(static_cast<size_t>(r * c)), db(static_cast<size_t>(c));
  float* g = dres;
  if (fused) {
    Partials red(threads, static_cast<size_t>(c + r * c));
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
      const int id = omp_get_thread_num(), k = omp_get_num_threads();
      double* part = red.per[static_cast<size_t>(id)].data();
      GradRows(dy, y, mask, t, tmean, w.data(), dres, dt, m * id / k, m * (id + 1) / k, r, c, part, part + c);
    }
    const std::vector<double> sums = red.Sum();
    std::copy(sums.begin(), sums.begin() + c, db.begin());
    std::copy(sums.begin() + c, sums.end(), gc.begin());
  } else {
    if (!g) g = Scratch(1, m * c);
    Partials red(threads, static_cast<size_t>(c));
    float* tc = Scratch(0, m * r);
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
      const int id = omp_get_thread_num(), k = omp_get_num_threads();
      MaskAndSum(dy, y, g, m * id / k, m * (id + 1) / k, c, red.per[static_cast<size_t>(id)].data());
      Centre(t, tmean, tc, m * id / k, m * (id + 1) / k, r);
    }
    db = red.Sum();
    std::vector<float> gcf(static_cast<size_t>(r * c));
    matmul(tc, g, gcf.data(), r, m, c, true, false);
    std::copy(gcf.begin(), gcf.end(), gc.begin());
  }
  // gc = Σ (t_i − tmean) ⊗ g_i; dgamma = colsum(p ⊙ gc)·invstd; kv = scale·dgamma·invstd / n.
  std::vector<double> kv(static_cast<size_t>(c));
  for (int64_t j = 0; j < c; j++) {
    double d = 0.0;
    for (int64_t o = 0; o < r; o++) d += p[o * c + j] * gc[o * c + j];
    d *= invstd[j];
    dgamma[j] = static_cast<float>(d);
    dbeta[j] = static_cast<float>(db[j]);
    kv[j] = scale[j] * d * invstd[j] / n;
  }
  // mmat = p·diag(kv)·pᵀ [R, R]; bias = mmat·tmean − p·(scale·dbeta)/n;
  // dp = gc·diag(scale) − n·cov·p·diag(kv).
  // (R²·C terms each: the sums over C as vector reductions, cov·p along C.)
  std::vector<float> mmat(static_cast<size_t>(r * r)), bias(static_cast<size_t>(r));
  std::vector<double> pk(static_cast<size_t>(c)), cp(static_cast<size_t>(c));
  for (int64_t o = 0; o < r; o++) {
    const float* po = p + o * c;
    double row = 0.0;
#pragma omp simd reduction(+ : row)
    for (int64_t j = 0; j < c; j++) {
      row += po[j] * scale[j] * db[j];
      pk[j] = static_cast<double>(po[j]) * kv[j];
    }
    double b = -row / n;
    for (int64_t q = 0; q < r; q++) {
      const float* pq = p + q * c;
      double mq = 0.0;
#pragma omp simd reduction(+ : mq)
      for (int64_t j = 0; j < c; j++) mq += pk[j] * pq[j];
      mmat[o * r + q] = static_cast<float>(mq);
      b += mq * tmean[q];
    }
    bias[o] = static_cast<float>(b);
    std::fill(cp.begin(), cp.end(), 0.0);
    for (int64_t q = 0; q < r; q++) {
      const double cq = cov[o * r + q];
      const float* pq = p + q * c;
#pragma omp simd
      for (int64_t j = 0; j < c; j++) cp[j] += cq * pq[j];
    }
#pragma omp simd
    for (int64_t j = 0; j < c; j++) dp[o * c + j] = static_cast<float>(gc[o * c + j] * scale[j] - n * cp[j] * kv[j]);
  }
  // dt = g·wᵀ − t·mmatᵀ + bias: the first term from the fused pass or a GEMM, then one GEMM and
  // one pass over the R-channel result.
  if (fused) {
#pragma omp parallel num_threads(threads) if (threads > 1)
    {
      const int id = omp_get_thread_num(), k = omp_get_num_threads();
      FinishRows(dt, t, mmat.data(), bias.data(), m * id / k, m * (id + 1) / k, r);
    }
    return;
  }
  matmul(g, w.data(), dt, m, c, r, false, true);
  float* tm = Scratch(2, m * r);
  matmul(t, mmat.data(), tm, m, r, r, false, true);
#pragma omp parallel num_threads(threads) if (threads > 1)
  {
    const int id = omp_get_thread_num(), k = omp_get_num_threads();
    Finish(dt, tm, bias.data(), m * id / k, m * (id + 1) / k, r);
  }
}

}  // namespace svd_rank_bn
