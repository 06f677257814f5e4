/**
 * Singular-value spectra in plain numbers: what the coordinator logs per epoch and what the report
 * and `svd-coord prune` print, without TensorFlow.js.
 */

/**
 * Effective rank at energy e: the fewest leading singular values (by magnitude) whose squares hold
 * at least (1 − e) of Σs². The rule `pruneByEnergy(model, e)` keeps; 0 for an all-zero vector.
 */
export function effectiveRank(s: ArrayLike<number>, e = 0.01): number {
  const sq = Array.from(s, (v) => v * v).sort((a, b) => b - a);
  const total = sq.reduce((a, b) => a + b, 0);
  if (total === 0) return 0;
  let acc = 0;
  for (let i = 0; i < sq.length; i++) {
    acc += sq[i]!;
    if (acc >= (1 - e) * total) return i + 1;
  }
  return sq.length;
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
