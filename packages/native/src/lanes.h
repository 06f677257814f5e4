// The "lanes" layout of the few-output-channel kernels (small_oc_conv.cc) and the lanes network
// (lanes_net.cc): 16 images side by side, so that one AVX-512 vector holds one value of 16 images,
// [h][w][c][16 images] for an NHWC activation. ToLanes / FromLanes convert 16 rows (one per image)
// to and from it, 16x16 blocks at a time.
//
// Include inside a `#pragma GCC target("avx512f")` region, after <immintrin.h> and (at file scope)
// prefetch.h; the functions are inline, so each file that includes it compiles its own copy for
// AVX-512.
#pragma once

namespace svd_lanes {

// r[i] <- column i of the 16 rows r[0..15], up to the lane order kLanePerm gives. Three levels of
// unpack/shuffle; the rows come out permuted, and ToLanes/FromLanes store each to where it belongs.
inline void Transpose16(__m512 r[16]) {
  __m512 t[16];
  for (int i = 0; i < 8; i++) {
    t[2 * i] = _mm512_unpacklo_ps(r[2 * i], r[2 * i + 1]);
    t[2 * i + 1] = _mm512_unpackhi_ps(r[2 * i], r[2 * i + 1]);
  }
  for (int i = 0; i < 4; i++) {
    r[4 * i] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0x44);
    r[4 * i + 1] = _mm512_shuffle_ps(t[4 * i], t[4 * i + 2], 0xEE);
    r[4 * i + 2] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0x44);
    r[4 * i + 3] = _mm512_shuffle_ps(t[4 * i + 1], t[4 * i + 3], 0xEE);
  }
  for (int i = 0; i < 2; i++)
    for (int j = 0; j < 4; j++) {
      t[8 * i + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0x88);
      t[8 * i + 4 + j] = _mm512_shuffle_f32x4(r[8 * i + j], r[8 * i + 4 + j], 0xDD);
    }
  for (int j = 0; j < 8; j++) {
    r[j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0x88);
    r[8 + j] = _mm512_shuffle_f32x4(t[j], t[8 + j], 0xDD);
  }
}

// Which column of the input Transpose16 leaves in r[i]: found once by transposing a known block,
// so the shuffle sequence above and this table cannot disagree.
struct LanePerm {
  int col[16];
  LanePerm() {
    __m512 r[16];
    for (int i = 0; i < 16; i++) r[i] = _mm512_setr_ps(0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15);
    Transpose16(r);
    float lane0[16];
    for (int i = 0; i < 16; i++) {
      _mm512_storeu_ps(lane0, r[i]);
      col[i] = static_cast<int>(lane0[0]);
    }
  }
};
inline const LanePerm& Perm() {
  static const LanePerm p;
  return p;
}

// rows: nrows (<= 16) rows of k floats, `stride` apart (one image each); rows past nrows read as
// zero. out [k][16]: element j of out[i] is rows[j][i], so one vector holds one value of 16 images.
inline void ToLanes(const float* rows, int64_t stride, int nrows, int64_t k, float* out) {
  const int* col = Perm().col;
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    __m512 r[16];
    for (int j = 0; j < 16; j++) r[j] = j < nrows ? _mm512_loadu_ps(rows + j * stride + i) : _mm512_setzero_ps();
    Transpose16(r);
    for (int q = 0; q < 16; q++) _mm512_storeu_ps(out + (i + col[q]) * 16, r[q]);
  }
  for (; i < k; i++)
    for (int j = 0; j < 16; j++) out[i * 16 + j] = j < nrows ? rows[j * stride + i] : 0.0f;
}

// The inverse: in [k][16] -> rows j < nrows of k floats, `stride` apart.
inline void FromLanes(const float* in, int64_t k, float* rows, int64_t stride, int nrows) {
  const int* col = Perm().col;
  int64_t i = 0;
  for (; i + 16 <= k; i += 16) {
    __m512 r[16];
    for (int q = 0; q < 16; q++) r[q] = _mm512_loadu_ps(in + (i + q) * 16);
    Transpose16(r);
    for (int q = 0; q < 16; q++)
      if (col[q] < nrows) {
        ::svd_prefetch::ForWrite(rows + col[q] * stride + i);
        _mm512_storeu_ps(rows + col[q] * stride + i, r[q]);
      }
  }
  for (; i < k; i++)
    for (int j = 0; j < nrows; j++) rows[j * stride + i] = in[i * 16 + j];
}

// F outputs in ceil(F / 8) chunks of nearly equal size (13 -> 7 + 6), each run by its own kernel:
// chunk ch starts at output start(ch) and holds size(ch) of them.
struct Chunks {
  int64_t f, count;
  explicit Chunks(int64_t f_) : f(f_), count((f_ + 7) / 8) {}
  int64_t size(int64_t ch) const { return f / count + (ch < f % count ? 1 : 0); }
  int64_t start(int64_t ch) const { return ch * (f / count) + (ch < f % count ? ch : f % count); }
};

}  // namespace svd_lanes
