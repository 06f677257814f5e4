import { describe, expect, it } from 'vitest';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Rng, hashKey, mix32, mulberry32 } from './rng.js';
import { CIFAR_FILES, md5File } from './cifar10.js';
import { writeSyntheticCifar10 } from './synthetic-cifar10.js';

describe('rng', () => {
  it('is deterministic per key and differs across keys', () => {
    const a = Rng.derive(0, 1, 2);
    const b = Rng.derive(0, 1, 2);
    const seqA = Array.from({ length: 8 }, () => a.nextU32());
    expect(Array.from({ length: 8 }, () => b.nextU32())).toEqual(seqA);
    const c = Rng.derive(0, 2, 1);
    expect(Array.from({ length: 8 }, () => c.nextU32())).not.toEqual(seqA);
    expect(hashKey(1, 2)).not.toBe(hashKey(2, 1));
    expect(hashKey(2 ** 32)).not.toBe(hashKey(0));
  });

  it('mix32 is a bijection on a sample (no collisions among 1e5 inputs)', () => {
    const seen = new Set<number>();
    for (let i = 0; i < 100_000; i++) seen.add(mix32(i));
    expect(seen.size).toBe(100_000);
  });

  it('nextFloat is roughly uniform and nextInt stays in range', () => {
    const r = new Rng(123);
    const bins = new Array(10).fill(0);
    for (let i = 0; i < 100_000; i++) {
      const f = r.nextFloat();
      expect(f >= 0 && f < 1).toBe(true);
      bins[Math.floor(f * 10)]++;
    }
    for (const b of bins) expect(Math.abs(b - 10_000)).toBeLessThan(500);
    for (let i = 0; i < 1000; i++) {
      const k = r.nextInt(9);
      expect(Number.isInteger(k) && k >= 0 && k < 9).toBe(true);
    }
  });

  it('state round-trips', () => {
    const r = new Rng(7);
    r.nextU32();
    const s = r.state();
    const x = r.nextU32();
    expect(Rng.fromState(s).nextU32()).toBe(x);
  });
});

describe('mulberry32 (the stream behind synthetic CIFAR-10 and the initial SVD weights)', () => {
  // Golden values printed by the copies that synthetic-cifar10.ts and layers' svd-init.ts each
  // had before they became this one function: a change here changes data and initial weights.
  it('seeds 0, 42, 2^32-1: first three outputs × 2^32', () => {
    const golden: [number, number[]][] = [
      [0, [1144304738, 1416247, 958946056]],
      [42, [2581720956, 1925393290, 3661312704]],
      [2 ** 32 - 1, [3850105811, 813802916, 3073704848]],
    ];
    for (const [seed, want] of golden) {
      const r = mulberry32(seed);
      expect(want.map(() => r() * 4294967296), `seed ${seed}`).toEqual(want);
    }
  });

  it('synthetic CIFAR-10 train=10 test=2 seed=7 writes the same bytes as before the move (md5 per file)', () => {
    const d = mkdtempSync(join(tmpdir(), 'svd-mulberry-'));
    try {
      writeSyntheticCifar10(d, { train: 10, test: 2, seed: 7 });
      expect(Object.fromEntries(CIFAR_FILES.map((f) => [f, md5File(join(d, f))]))).toEqual({
        'data_batch_1.bin': 'f967edf5e89ed7636289a955862a121e',
        'data_batch_2.bin': '6df02aef1f255703d7243d2e9aa0d7a0',
        'data_batch_3.bin': '136e615a290675233a402009a9e288d2',
        'data_batch_4.bin': '138495785117acfb42e2d254475e0751',
        'data_batch_5.bin': 'e256503e8d411f7d543afc8d0b1acfb7',
        'test_batch.bin': '4cf27ed037e55173bdb5a232e304d88f',
      });
    } finally {
      rmSync(d, { recursive: true, force: true });
    }
  });
});
