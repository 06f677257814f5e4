/**
 * Rank pruning of trained SVD layers (Yang et al. 2020, §3.3): after training with Hoyer
 * sparsification most singular values are near zero, and dropping them shrinks U, s, V
 * physically, so the pruned model is smaller and faster in the factored forward.
 */

/**
 * The energy rule: with w = s², keep the smallest k whose top-k energy is at least (1 − e)·Σw,
 * i.e. remove at most a fraction e of the energy. Uses |s| because s is a free parameter and can
 * change sign during training.
 * @param s singular values [r], any order, any sign.
 * @param energy fraction e ∈ [0, 1) of the energy that may be removed.
 * @returns k and the kept positions in the original `s`, ascending.
 */
export function selectRankByEnergy(s: ArrayLike<number>, energy: number): { k: number; keptIndices: number[] } {
  const n = s.length;
  // float64 accumulation: the reference keeps every threshold ≥ 1e-5·Σw from the partial sums.
  const w = Array.from(s, (v) => v * v);
  const order = w.map((_, i) => i).sort((a, b) => w[b]! - w[a]! || a - b);
  const total = w.reduce((a, b) => a + b, 0);
  const target = (1 - energy) * total;
  let k = 0;
  let acc = 0;
  while (k < n && (acc < target || k === 0)) {
    acc += w[order[k]!]!;
    k++;
  }
  // An all-zero layer keeps one value so the layer still has a well-formed (rank ≥ 1) shape.
  if (n > 0 && k === 0) k = 1;
  const keptIndices = order.slice(0, k).sort((a, b) => a - b);
  return { k, keptIndices };
}

/** Keeps the singular values with |s| > tau (at least one, the largest, so shapes stay valid). */
export function selectRankByThreshold(s: ArrayLike<number>, tau: number): { k: number; keptIndices: number[] } {
  const kept: number[] = [];
  let best = 0;
  for (let i = 0; i < s.length; i++) {
    if (Math.abs(s[i]!) > tau) kept.push(i);
    if (Math.abs(s[i]!) > Math.abs(s[best]!)) best = i;
  }
  if (kept.length === 0 && s.length > 0) kept.push(best);
  return { k: kept.length, keptIndices: kept };
}
