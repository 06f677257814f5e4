/**
 * Deterministic uniform values in [offset − scale, offset + scale) from a 32-bit LCG: the same
 * inputs on every backend and every run, with no dependency.
 */
export function seededUniform(n: number, seed: number, scale = 1, offset = 0): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = offset + scale * (s / 2147483648 - 1);
  }
  return out;
}
