import { existsSync, mkdtempSync, readFileSync, rmSync, truncateSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import {
  CIFAR_FILES,
  CIFAR_MD5,
  CIFAR_PIXELS,
  CIFAR_RECORD_BYTES,
  readCifar10,
  verifyCifar10,
} from './cifar10.js';
import { SvdTrainError } from './errors.js';
import { writeSyntheticCifar10 } from './synthetic-cifar10.js';
import { thrown } from './test-support/thrown.js';

const tmp = mkdtempSync(join(tmpdir(), 'svd-cifar-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

describe('synthetic CIFAR-10 round trip', () => {
  const dir = join(tmp, 'synth');
  writeSyntheticCifar10(dir, { train: 53, test: 7, seed: 3 });

  it('writes the binary layout: train split over 5 files, test in one, meta file', () => {
    const sizes = CIFAR_FILES.map((f) => readFileSync(join(dir, f)).length / CIFAR_RECORD_BYTES);
    expect(sizes).toEqual([11, 11, 11, 10, 10, 7]);
    expect(readFileSync(join(dir, 'batches.meta.txt'), 'utf8').split('\n').slice(0, 3)).toEqual(['airplane', 'automobile', 'bird']);
  });

  it('reads back records in file order with labels 0..9', () => {
    const train = readCifar10(dir, 'train');
    expect(train.count).toBe(53);
    expect(train.images.length).toBe(53 * 3072);
    expect(train.labels.length).toBe(53);
    // Record 11 is the first record of data_batch_2.bin.
    const raw2 = readFileSync(join(dir, 'data_batch_2.bin'));
    expect(train.labels[11]).toBe(raw2[0]);
    expect(Array.from(train.images.subarray(11 * CIFAR_PIXELS, 11 * CIFAR_PIXELS + 16))).toEqual(Array.from(raw2.subarray(1, 17)));
    expect(Math.max(...train.labels)).toBeLessThan(10);
    expect(readCifar10(dir, 'test').count).toBe(7);
  });

  it('is deterministic in the seed', () => {
    const again = join(tmp, 'synth-again');
    const other = join(tmp, 'synth-other');
    writeSyntheticCifar10(again, { train: 53, test: 7, seed: 3 });
    writeSyntheticCifar10(other, { train: 53, test: 7, seed: 4 });
    for (const f of CIFAR_FILES) expect(readFileSync(join(again, f)).equals(readFileSync(join(dir, f)))).toBe(true);
    expect(readFileSync(join(other, 'test_batch.bin')).equals(readFileSync(join(dir, 'test_batch.bin')))).toBe(false);
  });

  it('is learnable: a nearest-class-mean classifier beats 90% on the test split', () => {
    const d = join(tmp, 'learnable');
    writeSyntheticCifar10(d, { train: 500, test: 200, seed: 1 });
    const train = readCifar10(d, 'train');
    const test = readCifar10(d, 'test');
    // Features: mean of each colour plane.
    const feat = (s: typeof train, i: number) =>
      [0, 1, 2].map((c) => {
        let sum = 0;
        for (let p = 0; p < 1024; p++) sum += s.images[i * 3072 + c * 1024 + p]!;
        return sum / 1024;
      });
    const means = Array.from({ length: 10 }, () => [0, 0, 0, 0]);
    for (let i = 0; i < train.count; i++) {
      const m = means[train.labels[i]!]!;
      feat(train, i).forEach((v, c) => (m[c]! += v));
      m[3]!++;
    }
    expect(means.every((m) => m[3]! > 0)).toBe(true);
    let correct = 0;
    for (let i = 0; i < test.count; i++) {
      const f = feat(test, i);
      let best = -1;
      let bestD = Infinity;
      means.forEach((m, k) => {
        const d2 = f.reduce((acc, v, c) => acc + (v - m[c]! / m[3]!) ** 2, 0);
        if (d2 < bestD) [best, bestD] = [k, d2];
      });
      if (best === test.labels[i]) correct++;
    }
    expect(correct / test.count).toBeGreaterThan(0.9);
  });

  it('refuses sizes that cannot fill five train files', () => {
    expect(thrown(() => writeSyntheticCifar10(join(tmp, 'bad'), { train: 4, test: 1 })).code).toBe('CONFIG_INVALID');
  });
});

describe('readCifar10 / verifyCifar10 errors', () => {
  it('names a missing file and says how to get the data', () => {
    const d = join(tmp, 'missing');
    writeSyntheticCifar10(d, { train: 5, test: 1 });
    rmSync(join(d, 'data_batch_3.bin'));
    const e = thrown(() => readCifar10(d, 'train'));
    expect(e.code).toBe('DATA_MISSING');
    expect(e.message).toContain('data_batch_3.bin');
    expect(e.message).toContain('svd-coord download');
    expect(thrown(() => verifyCifar10(d)).code).toBe('DATA_MISSING');
    expect(readCifar10(d, 'test').count).toBe(1);
  });

  it('names a truncated file with its size', () => {
    const d = join(tmp, 'truncated');
    writeSyntheticCifar10(d, { train: 10, test: 2 });
    truncateSync(join(d, 'test_batch.bin'), 3073 + 100);
    const e = thrown(() => readCifar10(d, 'test'));
    expect(e.code).toBe('DATA_CORRUPT');
    expect(e.message).toContain('test_batch.bin has 3173 bytes');
    expect(e.message).toContain('multiple of 3073');
    expect(thrown(() => verifyCifar10(d)).code).toBe('DATA_CORRUPT');
    writeFileSync(join(d, 'test_batch.bin'), new Uint8Array(0));
    expect(thrown(() => readCifar10(d, 'test')).code).toBe('DATA_CORRUPT');
  });

  it('names the file and record of a label out of range', () => {
    const d = join(tmp, 'badlabel');
    writeSyntheticCifar10(d, { train: 10, test: 2 });
    const p = join(d, 'data_batch_2.bin');
    const buf = readFileSync(p);
    buf[CIFAR_RECORD_BYTES] = 10; // label of record 1
    writeFileSync(p, buf);
    const e = thrown(() => readCifar10(d, 'train'));
    expect(e.code).toBe('DATA_CORRUPT');
    expect(e.message).toMatch(/data_batch_2\.bin, record 1 .*label 10; expected 0\.\.9/);
    expect(e.details).toMatchObject({ record: 1, label: 10 });
  });

  it('verifies synthetic files without md5 and official-size files with md5', () => {
    const d = join(tmp, 'verify');
    writeSyntheticCifar10(d, { train: 5, test: 1 });
    expect(verifyCifar10(d).map((r) => [r.records, r.md5])).toEqual(CIFAR_FILES.map(() => [1, null]));
    // An official-size file with the wrong bytes must fail the md5 check.
    writeFileSync(join(d, 'test_batch.bin'), new Uint8Array(10000 * CIFAR_RECORD_BYTES));
    const e = thrown(() => verifyCifar10(d));
    expect(e.code).toBe('DATA_CORRUPT');
    expect(e.message).toContain(`expected ${CIFAR_MD5['test_batch.bin']}`);
    expect(e.message).toContain('--data');
    expect(e.details).toMatchObject({ expected: CIFAR_MD5['test_batch.bin'] });
    expect((e.details as { actual: string }).actual).toMatch(/^[0-9a-f]{32}$/);
    expect(() => verifyCifar10(d, { md5: false })).not.toThrow();
  });
});

const REAL = '/work/shared/cifar-10-batches-bin';

describe.skipIf(!existsSync(REAL))('real CIFAR-10 at ' + REAL, () => {
  it('md5s verify', () => {
    const reports = verifyCifar10(REAL, { md5: true });
    expect(reports.map((r) => r.md5)).toEqual(CIFAR_FILES.map((f) => CIFAR_MD5[f]));
    expect(reports.every((r) => r.records === 10000)).toBe(true);
  });

  it('has 5000 of each class in train, 1000 in test, known first test labels and channel means', () => {
    const train = readCifar10(REAL, 'train');
    const test = readCifar10(REAL, 'test');
    expect(train.count).toBe(50000);
    expect(test.count).toBe(10000);
    const hist = (l: Uint8Array) => l.reduce((h, v) => (h[v]++, h), new Array<number>(10).fill(0));
    expect(hist(train.labels)).toEqual(new Array(10).fill(5000));
    expect(hist(test.labels)).toEqual(new Array(10).fill(1000));
    expect(Array.from(test.labels.subarray(0, 10))).toEqual([3, 8, 8, 0, 6, 6, 1, 6, 3, 1]);
    const sums = [0, 0, 0];
    for (let i = 0; i < train.count; i++) {
      const base = i * 3072;
      for (let c = 0; c < 3; c++) {
        let s = 0;
        for (let p = base + c * 1024, end = p + 1024; p < end; p++) s += train.images[p]!;
        sums[c]! += s;
      }
    }
    const mean = sums.map((s) => s / (train.count * 1024 * 255));
    expect(Math.abs(mean[0]! - 0.4914)).toBeLessThan(1e-3);
    expect(Math.abs(mean[1]! - 0.4822)).toBeLessThan(1e-3);
    expect(Math.abs(mean[2]! - 0.4465)).toBeLessThan(1e-3);
  });
});
