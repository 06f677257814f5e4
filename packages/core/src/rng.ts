/**
 * Seedable, counter-addressable pseudo-random numbers.
 *
 * Data-parallel workers must reproduce the augmentation of any sample without replaying the
 * stream that produced earlier samples, so every stream is *derived* from a key such as
 * (seed, epoch, sampleIndex) by hashing, instead of being advanced sequentially from a global
 * state. The generator itself is splitmix32 (a 32-bit Weyl counter through a murmur3-style
 * finalizer): tiny, fast in JS (Math.imul only), and good enough for shuffling and augmentation.
 */

const GOLDEN = 0x9e3779b9;

/** murmur3 fmix32: a bijective 32-bit avalanche mix. */
export function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/**
 * Hashes a sequence of integers (each taken modulo 2^32; values ≥ 2^32 also mix in their high
 * part) into one 32-bit key. Order matters: hashKey(1, 2) ≠ hashKey(2, 1).
 */
export function hashKey(...parts: number[]): number {
  let h = 0x6a09e667;
  for (const p of parts) {
    const lo = p >>> 0;
    const hi = Math.floor(p / 4294967296) >>> 0;
    h = mix32((h ^ lo) + GOLDEN);
    if (hi !== 0) h = mix32((h ^ hi) + GOLDEN);
  }
  return h;
}

/** Serializable generator state (a single 32-bit counter). */
export interface RngState {
  s: number;
}

/** splitmix32 generator. Sequential use is fine; derive independent streams with `Rng.derive`. */
export class Rng {
  private s: number;

  constructor(seed: number) {
    this.s = seed >>> 0;
  }

  /** An independent stream for the key (e.g. `Rng.derive(seed, epoch, sampleIndex)`). */
  static derive(...key: number[]): Rng {
    return new Rng(hashKey(...key));
  }

  /** Uniform integer in [0, 2^32). */
  nextU32(): number {
    this.s = (this.s + GOLDEN) >>> 0;
    return mix32(this.s);
  }

  /** Uniform float in [0, 1) with 32 bits of resolution. */
  nextFloat(): number {
    return this.nextU32() / 4294967296;
  }

  /** Uniform integer in [0, n) for 1 ≤ n ≤ 2^32 (multiply-shift; bias < n / 2^32, negligible here). */
  nextInt(n: number): number {
    return Math.floor((this.nextU32() / 4294967296) * n);
  }

  state(): RngState {
    return { s: this.s };
  }

  static fromState(st: RngState): Rng {
    return new Rng(st.s);
  }
}

/**
 * mulberry32: a tiny sequential PRNG returning floats in [0, 1). It is the stream that synthetic
 * CIFAR-10 (`writeSyntheticCifar10`) and layers' initial SVD weights (`seededNormal`) draw from,
 * kept separate from `Rng` because changing either generator would change every synthetic file and
 * every initial weight, and with them the golden values that tests and parity checks pin.
 */
export function mulberry32(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
