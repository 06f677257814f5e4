import { existsSync, mkdtempSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { SvdTrainError } from '@svd-train/core';
import { md5Hex } from '@svd-train/core';
import { cacheFolderFor, ensureDataset } from './data-cache.js';

const files = { 'data_batch_1.bin': new Uint8Array([1, 2, 3]), 'test_batch.bin': new Uint8Array(1000).fill(7) };
const info = { trainCount: 1, testCount: 1, md5s: Object.fromEntries(Object.entries(files).map(([k, v]) => [k, md5Hex(v)])) };

describe('ensureDataset', () => {
  it('uses a local folder whose md5s match, fetching nothing', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'dc-'));
    for (const [k, v] of Object.entries(files)) writeFileSync(join(dir, k), v);
    const fetched: string[] = [];
    const got = await ensureDataset(info, { localDir: dir, cacheRoot: join(dir, 'cache'), fetch: async (f) => (fetched.push(f), files[f as 'data_batch_1.bin']) });
    expect(got).toBe(dir);
    expect(fetched).toEqual([]);
  });

  it('fetches a mismatching dataset once, then serves it from the cache', async () => {
    const local = mkdtempSync(join(tmpdir(), 'dc-'));
    writeFileSync(join(local, 'data_batch_1.bin'), new Uint8Array([9]));
    const cacheRoot = mkdtempSync(join(tmpdir(), 'dc-cache-'));
    const fetched: string[] = [];
    const fetch = async (f: string) => (fetched.push(f), files[f as 'data_batch_1.bin']);
    const dir = await ensureDataset(info, { localDir: local, cacheRoot, fetch });
    expect(dir).toBe(cacheFolderFor(cacheRoot, info));
    expect(fetched.sort()).toEqual(['data_batch_1.bin', 'test_batch.bin']);
    expect(new Uint8Array(readFileSync(join(dir, 'test_batch.bin')))).toEqual(files['test_batch.bin']);
    await ensureDataset(info, { cacheRoot, fetch });
    expect(fetched.length).toBe(2);
  });

  it('refuses a transfer whose md5 is wrong, with DATA_CORRUPT', async () => {
    const cacheRoot = mkdtempSync(join(tmpdir(), 'dc-cache-'));
    const err = await ensureDataset(info, { cacheRoot, fetch: async () => new Uint8Array([0]) }).catch((e: unknown) => e);
    expect(err).toBeInstanceOf(SvdTrainError);
    expect((err as SvdTrainError).code).toBe('DATA_CORRUPT');
    expect((err as Error).message).toContain(info.md5s['data_batch_1.bin']);
  });

  it('refuses traversal and unknown names before writing anything, with PROTOCOL_INVALID', async () => {
    const root = mkdtempSync(join(tmpdir(), 'dc-evil-'));
    const cacheRoot = join(root, 'a', 'b', 'c');
    for (const name of ['../../../pwned.txt', '/tmp/pwned.txt', 'data_batch_1.bin/../../x', 'evil.bin', 'data_batch_1.bin\0']) {
      const evil = { trainCount: 1, testCount: 1, md5s: { 'data_batch_1.bin': md5Hex(files['data_batch_1.bin']), [name]: md5Hex(new Uint8Array([1])) } };
      const fetched: string[] = [];
      const err = await ensureDataset(evil, { cacheRoot, fetch: async (f) => (fetched.push(f), new Uint8Array([1])) }).catch((e: unknown) => e);
      expect((err as SvdTrainError).code, name).toBe('PROTOCOL_INVALID');
      expect(fetched).toEqual([]);
    }
    expect(existsSync(join(root, 'pwned.txt'))).toBe(false);
    expect(readdirSync(root)).toEqual([]);
  });

  it('names a refused file name escaped: a newline, a C1 CSI or a line separator cannot forge log lines', async () => {
    const name = 'x\n[worker] data ok\u009b2J\u2028';
    const evil = { trainCount: 1, testCount: 1, md5s: { [name]: md5Hex(new Uint8Array([1])) } };
    const err = await ensureDataset(evil, { cacheRoot: mkdtempSync(join(tmpdir(), 'dc-evil-')), fetch: async () => new Uint8Array([1]) }).catch((e: unknown) => e);
    expect((err as Error).message).toContain("coordinator named dataset file 'x\\x0a[worker] data ok\\x9b2J\\u2028'");
    expect((err as Error).message).not.toMatch(/[\n\u009b\u2028]/);
  });
});
