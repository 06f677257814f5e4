// The SVD regularizer of a whole model and its gradient in one call (Yang et al. 2020, eq. 5):
// for every layer, orth = (‖UᵀU − I‖²_F + ‖VᵀV − I‖²_F)/r² with ∂/∂U = 4·U·(UᵀU − I)/r² (V alike),
// and the sparsity of s (L1 ‖s‖₁, Hoyer ‖s‖₁/‖s‖₂ or Hoyer-square ‖s‖₁²/‖s‖₂², or none) with its
// closed-form gradient (sign(0) = 0), the same formulas as packages/layers/src/orthogonality.ts and
// sparsity.ts. Why one call: as tfjs ops each layer's two penalties and their gradients are some 14
// kernel calls of a few elements each, whose dispatch (tens of µs apiece) cost a ResNet-20 step
// 10-11 ms at any rank, a tenth of a pruned step.
#pragma once
#include <cstdint>

namespace svd_reg {

// matmul(a, b, out, rows, k, n, ta, tb): out [rows, n] = a ([rows, k], or [k, rows] when ta) ·
// b ([k, n], or [n, k] when tb): the caller's GEMM (oneDNN's in the addon).
using MatMul = void (*)(const float* a, const float* b, float* out, int64_t rows, int64_t k, int64_t n, bool ta, bool tb);

enum class Sparsity { kNone = 0, kL1 = 1, kHoyer = 2, kHoyerSquare = 3 };

// One layer: U [m, r], V [p, r], s [r] and where their λ-weighted gradients go (same shapes).
struct Layer {
  const float *u, *v, *s;
  float *du, *dv, *ds;
  int64_t m, p, r;
};

// Writes every layer's du = λo·∂orth/∂U, dv, ds = λs·∂sparsity/∂s; returns the sums over layers of
// orth and sparsity (unweighted) in *orth and *sparsity.
void Run(const Layer* layers, int64_t count, Sparsity kind, double lambda_o, double lambda_s, double* orth,
         double* sparsity, MatMul matmul);

}  // namespace svd_reg
