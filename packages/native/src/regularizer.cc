// See regularizer.h.
#include "regularizer.h"

#include <cmath>
#include <vector>

namespace svd_reg {

namespace {

// a [rows, r]: returns ‖aᵀa − I‖²_F and writes grad = k·a·(aᵀa − I).
double Orth(const float* a, int64_t rows, int64_t r, double k, float* grad, MatMul matmul) {
  std::vector<float> g(static_cast<size_t>(r * r));
  matmul(a, a, g.data(), r, rows, r, true, false);
  double sum = 0.0;
  for (int64_t i = 0; i < r; i++)
    for (int64_t j = 0; j < r; j++) {
      float& d = g[static_cast<size_t>(i * r + j)];
      if (i == j) d -= 1.0f;
      sum += static_cast<double>(d) * d;
    }
  matmul(a, g.data(), grad, rows, r, r, false, false);
  const float kf = static_cast<float>(k);
  for (int64_t i = 0; i < rows * r; i++) grad[i] *= kf;
  return sum;
}

// Returns the penalty of s [r] and writes ds = λs·∂penalty/∂s. With a = ‖s‖₁ and b = ‖s‖₂², every
// kind's gradient is α·sign(s) + β·s (sign(0) = 0): L1 α = 1; Hoyer a/√b: α = 1/√b, β = −a/b^{3/2};
// Hoyer-square a²/b: α = 2a/b, β = −2a²/b².
double Sparse(const float* s, int64_t r, Sparsity kind, double lambda_s, float* ds) {
  double a = 0.0, b = 0.0;
  for (int64_t i = 0; i < r; i++) {
    a += std::fabs(static_cast<double>(s[i]));
    b += static_cast<double>(s[i]) * s[i];
  }
  double value = 0.0, alpha = 0.0, beta = 0.0;
  switch (kind) {
    case Sparsity::kNone:
      break;
    case Sparsity::kL1:
      value = a, alpha = 1.0;
      break;
    case Sparsity::kHoyer: {
      const double n2 = std::sqrt(b);
      value = a / n2, alpha = 1.0 / n2, beta = -a / (n2 * n2 * n2);
      break;
    }
    case Sparsity::kHoyerSquare:
      value = a * a / b, alpha = 2.0 * a / b, beta = -2.0 * a * a / (b * b);
      break;
  }
  for (int64_t i = 0; i < r; i++) {
    const double sign = s[i] > 0.0f ? 1.0 : s[i] < 0.0f ? -1.0 : 0.0;
    ds[i] = static_cast<float>(lambda_s * (alpha * sign + beta * s[i]));
  }
  return value;
}

}  // namespace

void Run(const Layer* layers, int64_t count, Sparsity kind, double lambda_o, double lambda_s, double* orth,
         double* sparsity, MatMul matmul) {
  double o = 0.0, sp = 0.0;
  for (int64_t l = 0; l < count; l++) {
    const Layer& L = layers[l];
    const double r2 = static_cast<double>(L.r) * L.r, k = 4.0 * lambda_o / r2;
    o += (Orth(L.u, L.m, L.r, k, L.du, matmul) + Orth(L.v, L.p, L.r, k, L.dv, matmul)) / r2;
    sp += Sparse(L.s, L.r, kind, lambda_s, L.ds);
  }
  *orth = o;
  *sparsity = sp;
}

}  // namespace svd_reg
