import { mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SvdTrainError } from '@svd-train/core';
import { cacheFolderFor, ensureDataset, md5Hex } from './data-cache.js';

const files = { 'a.bin': new Uint8Array([1, 2, 3]), 'b.bin': new Uint8Array(1000).fill(7) };
const info = { trainCount: 1, testCount: 1, md5s: Object.fromEntries(Object.entries(files).map(([k, v]) => [k, md5Hex(v)])) };

describe('ensureDataset', () => {
  it('uses a local folder whose md5s match, fetching nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dc-'));
    for (const [k, v] of Object.entries(files)) writeFileSync(join(dir, k), v);
    const fetched: string[] = [];
    const got = await ensureDataset(info, { localDir: dir, cacheRoot: join(dir, 'cache'), fetch: async (f) => (fetched.push(f), files[f as 'a.bin']) });
    expect(got).toBe(dir);
    expect(fetched).toEqual([]);
  });

  it('fetches a mismatching dataset once, then serves it from the cache', async () => {
    const local = mkdtempSync(join(tmpdir(), 'dc-'));
    writeFileSync(join(local, 'a.bin'), new Uint8Array([9]));
    const cacheRoot = mkdtempSync(join(tmpdir(), 'dc-cache-'));
    const fetched: string[] = [];
    const fetch = async (f: string) => (fetched.push(f), files[f as 'a.bin']);
    const dir = await ensureDataset(info, { localDir: local, cacheRoot, fetch });
    expect(dir).toBe(cacheFolderFor(cacheRoot, info));
    expect(fetched.sort()).toEqual(['a.bin', 'b.bin']);
    expect(new Uint8Array(readFileSync(join(dir, 'b.bin')))).toEqual(files['b.bin']);
    await ensureDataset(info, { cacheRoot, fetch });
    expect(fetched.length).toBe(2);
  });

  it('refuses a transfer whose md5 is wrong, with DATA_CORRUPT', async () => {
    const cacheRoot = mkdtempSync(join(tmpdir(), 'dc-cache-'));
    const err = await ensureDataset(info, { cacheRoot, fetch: async () => new Uint8Array([0]) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SvdTrainError);
    expect((err as SvdTrainError).code).toBe('DATA_CORRUPT');
    expect((err as Error).message).toContain(info.md5s['a.bin']);
  });
});
