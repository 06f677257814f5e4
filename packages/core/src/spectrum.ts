/**
 * Singular-value spectra in plain numbers: what the coordinator logs per epoch and what the report
 * and `svd-coord prune` print, without TensorFlow.js.
 */

/**
 * The energy rule, the one copy that pruning (layers' `pruneByEnergy`), the per-epoch effective
 * ranks and the report all use: with w = s², keep the smallest k whose top-k energy is at least
 * (1 − e)·Σw, i.e. remove at most a fraction e of the energy. Uses |s| because s is a free
 * parameter and can change sign during training. e = 0 keeps every value: the float64 partial sums
 * reach Σw before the last values of a steep spectrum are added, and dropping those would change
 * the shapes (and the numbers) of a prune that promises to remove nothing. An all-zero vector keeps
 * one value, so that a pruned layer still has a well-formed (rank ≥ 1) shape.
 * Checked against PyTorch's prune.json (layers' prune.test.ts).
 * @param s singular values [r], any order, any sign.
 * @param energy fraction e ∈ [0, 1) of the energy that may be removed.
 * @returns k and the kept positions in the original `s`, ascending.
 */
export function selectRankByEnergy(s: ArrayLike<number>, energy: number): { k: number; keptIndices: number[] } {
  const n = s.length;
  if (energy === 0) return { k: n, keptIndices: Array.from({ length: n }, (_, i) => i) };
  // float64 accumulation: the reference keeps every threshold ≥ 1e-5·Σw from the partial sums.
  const w = Array.from(s, (v) => v * v);
  const order = w.map((_, i) => i).sort((a, b) => w[b] - w[a] || a - b);
  const total = w.reduce((a, b) => a + b, 0);
  const target = (1 - energy) * total;
  let k = 0;
  let acc = 0;
  while (k < n && (acc < target || k === 0)) {
    acc += w[order[k]];
    k++;
  }
  const keptIndices = order.slice(0, k).sort((a, b) => a - b);
  return { k, keptIndices };
}

/**
 * Effective rank at energy e: how many singular values `selectRankByEnergy(s, e)` keeps, which is
 * what `svd-coord prune --energy e` would leave the layer with (1 for an all-zero vector, the
 * length of `s` at e = 0).
 */
export function effectiveRank(s: ArrayLike<number>, e = 0.01): number {
  return selectRankByEnergy(s, e).k;
}

/**
 * The singular-value vectors of a parameter set: each parameter named `<layer>.s` (or just `s`),
 * with its layer name, in parameter order.
 */
export function singularValues<T extends ArrayLike<number>>(params: Iterable<{ name: string; data: T }>): { layer: string; s: T }[] {
  const out: { layer: string; s: T }[] = [];
  for (const p of params) if (/(^|\.)s$/.test(p.name)) out.push({ layer: p.name.replace(/\.s$/, ''), s: p.data });
  return out;
}

/** Effective rank of every SVD layer of a parameter set, by layer name, in parameter order. */
export function effectiveRanks(params: Iterable<{ name: string; data: ArrayLike<number> }>, e = 0.01): Record<string, number> {
  return Object.fromEntries(singularValues(params).map(({ layer, s }) => [layer, effectiveRank(s, e)]));
}
