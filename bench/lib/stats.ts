/**
 * Helpers the benchmark scripts share (bench/lib is not itself a benchmark: scripts/bench.mjs runs
 * only the .ts files directly in bench/).
 */

/** The median of `xs` (the mean of the two middle values for an even count). */
export function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  const m = s.length >> 1;
  return s.length % 2 ? s[m]! : (s[m - 1]! + s[m]!) / 2;
}

/** `n` deterministic values in [-1, 1) from a 32-bit LCG seeded with `seed`: a CIFAR-sized input. */
export function rand(n: number, seed: number): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = s / 2147483648 - 1;
  }
  return out;
}
