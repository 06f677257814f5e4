// batch_norm.cc's kernels, written once over a 16-channel group G: included twice by it, inside a
// target pragma and a namespace that define G and its operations (Load, Store, Zero, Add, Sub, Mul,
// Max, Fmadd, Fnmadd, PositiveBits, KeepBits, KeepPositive) for AVX-512 and for AVX2 + FMA, after
// kBlock, ScaleShift and GradCoefficients. No include guard, on purpose.

// out[j] += Σ over the 16·V lanes of acc (float partials of one block) in double.
template <int V>
inline void Flush(const G (&acc)[V], double* out) {
  alignas(64) float lanes[16 * V];
  for (int v = 0; v < V; v++) Store(lanes + 16 * v, acc[v]);
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
  G kv[V];
  for (int v = 0; v < V; v++) kv[v] = Load(k + 16 * v);
  for (int64_t r0 = 0; r0 < m; r0 += kBlock) {
    const int64_t r1 = std::min(m, r0 + kBlock);
    G a1[V], a2[V];
    for (int v = 0; v < V; v++) a1[v] = Zero(), a2[v] = Zero();
    for (int64_t r = r0; r < r1; r++) {
      const float* row = x + r * C;
      for (int v = 0; v < V; v++) svd_prefetch::ForRead(row + 16 * v);
      for (int v = 0; v < V; v++) {
        const G d = Sub(Load(row + 16 * v), kv[v]);
        a1[v] = Add(a1[v], d);
        a2[v] = Fmadd(d, d, a2[v]);
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
  ScaleShift(s, s2, k, gamma, beta, mean, var, scale, shift, m, C, eps);
  G a[V], b[V];
  for (int v = 0; v < V; v++) a[v] = Load(scale + 16 * v), b[v] = Load(shift + 16 * v);
  const G zero = Zero();
  for (int64_t r = 0; r < m; r++) {
    const float* row = x + r * C;
    float* out = y + r * C;
    for (int v = 0; v < V; v++) {
      svd_prefetch::ForRead(row + 16 * v);
      svd_prefetch::ForWrite(out + 16 * v);
      if (res) svd_prefetch::ForRead(res + r * C + 16 * v);
    }
    for (int v = 0; v < V; v++) {
      G o = Fmadd(Load(row + 16 * v), a[v], b[v]);
      if (res) o = Add(o, Load(res + r * C + 16 * v));
      if (relu) o = Max(o, zero);
      if (mask) mask[r * V + v] = PositiveBits(o);
      Store(out + 16 * v, o);
    }
  }
}

// dy at float offset off (a multiple of 16) masked by y > 0: by the forward's mask bits where given,
// else by y; neither: dy as it is.
inline G Masked(const float* dy, const float* y, const uint16_t* mask, int64_t off) {
  const G d = Load(dy + off);
  if (mask) return KeepBits(mask[off / 16], d);
  if (!y) return d;
  return KeepPositive(Load(y + off), d);
}

template <int V>
void BackwardV(const float* x, const float* dy, const float* mean, const float* var, const float* gamma, float* dx,
               float* dgamma, float* dbeta, int64_t m, double eps, const float* y, float* dres, const uint16_t* mask) {
  constexpr int64_t C = 16 * V;
  G mu[V];
  for (int v = 0; v < V; v++) mu[v] = Load(mean + 16 * v);
  // Pass 1: Σ g and Σ g·(x − mean) (invstd applied after), g = dy masked, written to dres.
  double sdy[C] = {}, sdxc[C] = {};
  for (int64_t r0 = 0; r0 < m; r0 += kBlock) {
    const int64_t r1 = std::min(m, r0 + kBlock);
    G a1[V], a2[V];
    for (int v = 0; v < V; v++) a1[v] = Zero(), a2[v] = Zero();
    for (int64_t r = r0; r < r1; r++) {
      const int64_t off = r * C;
      for (int v = 0; v < V; v++) {
        svd_prefetch::ForRead(x + off + 16 * v);
        svd_prefetch::ForRead(dy + off + 16 * v);
        if (y && !mask) svd_prefetch::ForRead(y + off + 16 * v);
        if (dres) svd_prefetch::ForWrite(dres + off + 16 * v);
      }
      for (int v = 0; v < V; v++) {
        const G g = Masked(dy, y, mask, off + 16 * v);
        if (dres) Store(dres + off + 16 * v, g);
        a1[v] = Add(a1[v], g);
        a2[v] = Fmadd(g, Sub(Load(x + off + 16 * v), mu[v]), a2[v]);
      }
    }
    Flush<V>(a1, sdy);
    Flush<V>(a2, sdxc);
  }
  alignas(64) float k1[C], k2[C], k3[C];
  GradCoefficients(sdy, sdxc, var, gamma, dgamma, dbeta, k1, k2, k3, m, C, eps);
  G c1[V], c2[V], c3[V];
  for (int v = 0; v < V; v++) c1[v] = Load(k1 + 16 * v), c2[v] = Load(k2 + 16 * v), c3[v] = Load(k3 + 16 * v);
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
      const G g = dres ? Load(dres + off + 16 * v) : Masked(dy, y, mask, off + 16 * v);
      const G xc = Sub(Load(x + off + 16 * v), mu[v]);
      Store(dx + off + 16 * v, Fnmadd(c3[v], xc, Sub(Mul(c1[v], g), c2[v])));
    }
  }
}

template <int V>
void MaskOfV(const float* y, int64_t m, uint16_t* mask) {
  for (int64_t i = 0; i < m * V; i++) mask[i] = PositiveBits(Load(y + 16 * i));
}

// The entry points for C = 16·V, V 1, 2 or 4 (any other C aborts: Applies(c) was false).
inline void Forward(const float* x, const float* gamma, const float* beta, float* y, float* mean, float* var, int64_t m,
                    int64_t c, double eps, const float* res, bool relu, uint16_t* mask) {
  if (c == 16) return ForwardV<1>(x, gamma, beta, y, mean, var, m, eps, res, relu, mask);
  if (c == 32) return ForwardV<2>(x, gamma, beta, y, mean, var, m, eps, res, relu, mask);
  if (c == 64) return ForwardV<4>(x, gamma, beta, y, mean, var, m, eps, res, relu, mask);
  std::abort();
}

inline void MaskOf(const float* y, int64_t m, int64_t c, uint16_t* mask) {
  if (c == 16) return MaskOfV<1>(y, m, mask);
  if (c == 32) return MaskOfV<2>(y, m, mask);
  if (c == 64) return MaskOfV<4>(y, m, mask);
  std::abort();
}

inline void Backward(const float* x, const float* dy, const float* mean, const float* var, const float* gamma, float* dx,
                     float* dgamma, float* dbeta, int64_t m, int64_t c, double eps, const float* y, float* dres,
                     const uint16_t* mask) {
  if (c == 16) return BackwardV<1>(x, dy, mean, var, gamma, dx, dgamma, dbeta, m, eps, y, dres, mask);
  if (c == 32) return BackwardV<2>(x, dy, mean, var, gamma, dx, dgamma, dbeta, m, eps, y, dres, mask);
  if (c == 64) return BackwardV<4>(x, dy, mean, var, gamma, dx, dgamma, dbeta, m, eps, y, dres, mask);
  std::abort();
}
