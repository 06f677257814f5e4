/**
 * The one place where test tolerances live (STYLE.md: "Keep tolerances in one place").
 * Values follow ../shared/reference/README.md "Suggested tolerances (float32 implementations)".
 */
export const TOL = {
  /** Per-tensor ‖a − b‖₂ / ‖b‖₂ for forward outputs, logits, gradients, running stats. */
  tensorRel: 1e-4,
  /** Relative error for scalar losses and regularizer values. */
  scalarRel: 1e-5,
  /** Two float32 implementations of the same op on different backends (summation order differs). */
  backendRel: 1e-5,
  /**
   * Central-difference gradient check in float32: ‖analytic − numeric‖₂ / ‖numeric‖₂.
   * With step eps the numeric side carries ~u·|L|/eps round-off (u = 6e-8) plus O(eps²) truncation;
   * eps = 1e-2 on O(1) inputs keeps both near 1e-4, so 5e-3 is a real check, not a formality.
   */
  gradcheckRel: 5e-3,
  /** Default finite-difference step for `gradCheck` (float32). */
  gradcheckEps: 1e-2,
} as const;
