import { mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { cacheRoot, defaultCacheDir, missingCifar10Files, resolveDataDir } from './data-dir.js';
import { md5Hex, md5File } from './cifar10.js';
import { SvdTrainError } from './errors.js';
import { writeSyntheticCifar10 } from './synthetic-cifar10.js';
import { thrown } from './test-support/thrown.js';

const tmp = mkdtempSync(join(tmpdir(), 'svd-datadir-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
const flagDir = join(tmp, 'flag');
const envDir = join(tmp, 'env');
const cacheDir = join(tmp, 'cache');
for (const d of [flagDir, envDir, cacheDir]) writeSyntheticCifar10(d, { train: 5, test: 1 });

describe('defaultCacheDir', () => {
  it('honours XDG_CACHE_HOME, else ~/.cache', () => {
    expect(defaultCacheDir({ XDG_CACHE_HOME: '/xdg' })).toBe('/xdg/svd-train/cifar-10-batches-bin');
    expect(defaultCacheDir({ HOME: '/home/u' })).toBe('/home/u/.cache/svd-train/cifar-10-batches-bin');
  });
  it('one cache root for CLI and worker: SVD_TRAIN_CACHE wins over XDG_CACHE_HOME, a relative XDG is ignored', () => {
    expect(cacheRoot({ SVD_TRAIN_CACHE: '/c', XDG_CACHE_HOME: '/xdg', HOME: '/home/u' })).toBe('/c');
    expect(defaultCacheDir({ SVD_TRAIN_CACHE: '/c' })).toBe('/c/cifar-10-batches-bin');
    expect(cacheRoot({ XDG_CACHE_HOME: '/xdg', HOME: '/home/u' })).toBe('/xdg/svd-train');
    expect(cacheRoot({ XDG_CACHE_HOME: 'rel', HOME: '/home/u' })).toBe('/home/u/.cache/svd-train');
    expect(cacheRoot({ SVD_TRAIN_CACHE: '', HOME: '/home/u' })).toBe('/home/u/.cache/svd-train');
  });
});

describe('md5Hex', () => {
  it('RFC 1321 vectors for bytes and strings; md5File agrees on the same bytes', () => {
    expect(md5Hex('')).toBe('d41d8cd98f00b204e9800998ecf8427e');
    expect(md5Hex('abc')).toBe('900150983cd24fb0d6963f7d28e17f72');
    expect(md5Hex(new TextEncoder().encode('abc'))).toBe('900150983cd24fb0d6963f7d28e17f72');
    expect(md5File(join(flagDir, 'test_batch.bin'))).toBe(md5Hex(readFileSync(join(flagDir, 'test_batch.bin'))));
  });
});

describe('resolveDataDir', () => {
  it('prefers the flag, then SVD_TRAIN_DATA, then the cache', () => {
    const env = { SVD_TRAIN_DATA: envDir };
    expect(resolveDataDir({ flag: flagDir, env, cacheDir })).toEqual({ dir: flagDir, source: 'flag' });
    expect(resolveDataDir({ env, cacheDir })).toEqual({ dir: envDir, source: 'env' });
    expect(resolveDataDir({ env: envDir, cacheDir })).toEqual({ dir: envDir, source: 'env' });
    expect(resolveDataDir({ env: {}, cacheDir })).toEqual({ dir: cacheDir, source: 'cache' });
    const xdgData = join(tmp, 'xdg', 'svd-train', 'cifar-10-batches-bin');
    writeSyntheticCifar10(xdgData, { train: 5, test: 1 });
    expect(resolveDataDir({ env: { XDG_CACHE_HOME: join(tmp, 'xdg') } })).toEqual({ dir: xdgData, source: 'cache' });
  });

  it('resolves relative paths against cwd and accepts the parent of cifar-10-batches-bin', () => {
    const parent = join(tmp, 'parent');
    writeSyntheticCifar10(join(parent, 'cifar-10-batches-bin'), { train: 5, test: 1 });
    expect(resolveDataDir({ flag: 'parent', env: {}, cwd: tmp })).toEqual({ dir: join(parent, 'cifar-10-batches-bin'), source: 'flag' });
  });

  it('throws DATA_MISSING saying where it looked and how to get the data', () => {
    const empty = join(tmp, 'empty');
    mkdirSync(empty);
    const e = thrown(() => resolveDataDir({ flag: empty, env: {}, cwd: tmp }));
    expect(e.code).toBe('DATA_MISSING');
    expect(e.message).toContain(`CIFAR-10 not found in ${empty} (given by --data)`);
    // The hint names the download command's real flag (--dir) and the folder that was given.
    expect(e.message).toContain(`svd-coord download --dir ${empty}`);
    expect(e.message).not.toContain('download --data');
    expect(e.message).toContain('--data DIR');
    expect(e.message).toContain('../shared/cifar-10-batches-bin');
    // An explicit folder without data is an error, not a fallback to the cache.
    expect(thrown(() => resolveDataDir({ flag: empty, env: {}, cacheDir })).code).toBe('DATA_MISSING');
    const e2 = thrown(() => resolveDataDir({ env: { XDG_CACHE_HOME: join(tmp, 'nocache') }, cwd: tmp }));
    expect(e2.message).toContain('the default cache folder');
    expect(e2.message).toContain('svd-coord download --dir DIR');
    expect(e2.message).toContain(join(tmp, 'nocache', 'svd-train', 'cifar-10-batches-bin'));
  });

  it('points at a copy it finds nearby', () => {
    const work = join(tmp, 'work', 'main');
    mkdirSync(work, { recursive: true });
    writeSyntheticCifar10(join(tmp, 'work', 'shared', 'cifar-10-batches-bin'), { train: 5, test: 1 });
    const e = thrown(() => resolveDataDir({ env: {}, cacheDir: join(tmp, 'none'), cwd: work }));
    expect(e.message).toContain(`A copy exists at ${join(tmp, 'work', 'shared', 'cifar-10-batches-bin')}`);
  });

  it('lists missing files', () => {
    expect(missingCifar10Files(flagDir)).toEqual([]);
    expect(missingCifar10Files(join(tmp, 'nowhere'))).toHaveLength(6);
  });
});
