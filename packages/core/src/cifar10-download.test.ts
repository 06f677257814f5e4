import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, mkdtempSync, readdirSync, readFileSync, rmSync, utimesSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tar from 'tar';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { CIFAR_FILES, readCifar10 } from './cifar10.js';
import { downloadCifar10, ensureCifar10 } from './cifar10-download.js';
import { SvdTrainError } from './errors.js';
import { writeSyntheticCifar10 } from './synthetic-cifar10.js';

const tmp = mkdtempSync(join(tmpdir(), 'svd-download-'));
const src = join(tmp, 'src', 'cifar-10-batches-bin');
let tarball: Buffer;
let md5: string;
let server: Server;
let base: string;
let requests = 0;

beforeAll(async () => {
  writeSyntheticCifar10(src, { train: 25, test: 5, seed: 9 });
  const file = join(tmp, 'cifar-10-binary.tar.gz');
  await tar.c({ gzip: true, file, cwd: join(tmp, 'src') }, ['cifar-10-batches-bin']);
  tarball = readFileSync(file);
  md5 = createHash('md5').update(tarball).digest('hex');
  const junk = Buffer.from('not a tarball at all');
  // A tiny static server on loopback: no test touches the internet.
  server = createServer((req, res) => {
    requests++;
    if (req.url === '/cifar.tar.gz') {
      res.writeHead(200, { 'content-length': tarball.length });
      // Two chunks so progress is reported more than once.
      res.write(tarball.subarray(0, 1000));
      setTimeout(() => res.end(tarball.subarray(1000)), 5);
    } else if (req.url === '/junk.tar.gz') {
      res.writeHead(200, { 'content-length': junk.length });
      res.end(junk);
    } else if (req.url === '/truncated.tar.gz') {
      res.writeHead(200, { 'content-length': tarball.length });
      res.write(tarball.subarray(0, 500), () => res.destroy());
    } else {
      res.writeHead(404).end('not found');
    }
  });
  await new Promise<void>((ok) => server.listen(0, '127.0.0.1', ok));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}`;
});

afterAll(async () => {
  await new Promise((ok) => server.close(ok));
  rmSync(tmp, { recursive: true, force: true });
});

async function rejection(p: Promise<unknown>): Promise<SvdTrainError> {
  try {
    await p;
  } catch (e) {
    expect(e).toBeInstanceOf(SvdTrainError);
    return e as SvdTrainError;
  }
  throw new Error('expected a rejection');
}

/** The parent folder holds nothing but what the test put there: no temp folders, no partial data. */
function leftovers(parent: string): string[] {
  return existsSync(parent) ? readdirSync(parent) : [];
}

describe('downloadCifar10 from a local server', () => {
  it('streams, checks md5, extracts and renames into place', async () => {
    const dest = join(tmp, 'ok', 'cifar-10-batches-bin');
    const progress: [number, number | null][] = [];
    const r = await downloadCifar10(dest, { url: `${base}/cifar.tar.gz`, md5, onProgress: (n, t) => progress.push([n, t]) });
    expect(r).toEqual({ dir: dest, downloaded: true });
    for (const f of [...CIFAR_FILES, 'batches.meta.txt']) {
      expect(readFileSync(join(dest, f)).equals(readFileSync(join(src, f)))).toBe(true);
    }
    expect(readCifar10(dest, 'train').count).toBe(25);
    expect(progress.length).toBeGreaterThanOrEqual(2);
    expect(progress.at(-1)).toEqual([tarball.length, tarball.length]);
    expect(leftovers(join(tmp, 'ok'))).toEqual(['cifar-10-batches-bin']);
  });

  it("removes a killed download's day-old temp folder before downloading, and leaves a recent one (a download in progress)", async () => {
    const parent = join(tmp, 'stale');
    mkdirSync(join(parent, '.cifar-10-batches-bin.download-old'), { recursive: true });
    writeFileSync(join(parent, '.cifar-10-batches-bin.download-old', 'cifar-10-binary.tar.gz.part'), 'half');
    const twoDaysAgo = new Date(Date.now() - 2 * 24 * 3600 * 1000);
    utimesSync(join(parent, '.cifar-10-batches-bin.download-old'), twoDaysAgo, twoDaysAgo);
    mkdirSync(join(parent, '.cifar-10-batches-bin.download-live'));
    const r = await downloadCifar10(join(parent, 'cifar-10-batches-bin'), { url: `${base}/cifar.tar.gz`, md5, quiet: true });
    expect(r.downloaded).toBe(true);
    expect(leftovers(parent).sort()).toEqual(['.cifar-10-batches-bin.download-live', 'cifar-10-batches-bin']);
  });

  it('does not download again when a verified copy is there', async () => {
    const dest = join(tmp, 'ok', 'cifar-10-batches-bin');
    const failingFetch = (() => Promise.reject(new Error('must not fetch'))) as typeof fetch;
    expect(await downloadCifar10(dest, { url: `${base}/cifar.tar.gz`, md5, fetchImpl: failingFetch })).toEqual({ dir: dest, downloaded: false });
  });

  it('refuses a wrong md5 and leaves no partial dataset', async () => {
    const parent = join(tmp, 'badmd5');
    const e = await rejection(downloadCifar10(join(parent, 'cifar-10-batches-bin'), { url: `${base}/cifar.tar.gz`, md5: '0'.repeat(32), quiet: true }));
    expect(e.code).toBe('DATA_CORRUPT');
    expect(e.message).toContain(`has md5 ${md5}; expected ${'0'.repeat(32)}`);
    expect(e.message).toContain('--data');
    expect(leftovers(parent)).toEqual([]);
  });

  it('refuses something that is not a tarball', async () => {
    const parent = join(tmp, 'junk');
    const junkMd5 = createHash('md5').update('not a tarball at all').digest('hex');
    const e = await rejection(downloadCifar10(join(parent, 'd'), { url: `${base}/junk.tar.gz`, md5: junkMd5, quiet: true }));
    expect(e.code).toBe('DATA_CORRUPT');
    expect(leftovers(parent)).toEqual([]);
  });

  it('reports HTTP errors and truncated bodies as DOWNLOAD_FAILED', async () => {
    const parent = join(tmp, 'http');
    const e404 = await rejection(downloadCifar10(join(parent, 'd'), { url: `${base}/nope.tar.gz`, md5, quiet: true }));
    expect(e404.code).toBe('DOWNLOAD_FAILED');
    expect(e404.message).toContain('HTTP 404');
    const eCut = await rejection(downloadCifar10(join(parent, 'd'), { url: `${base}/truncated.tar.gz`, md5, quiet: true }));
    expect(eCut.code).toBe('DOWNLOAD_FAILED');
    expect(leftovers(parent)).toEqual([]);
  });

  it('puts the data in a cifar-10-batches-bin subfolder of a non-empty folder', async () => {
    const dest = join(tmp, 'busy');
    mkdirSync(dest);
    writeFileSync(join(dest, 'notes.txt'), 'keep me');
    const r = await downloadCifar10(dest, { url: `${base}/cifar.tar.gz`, md5, quiet: true });
    expect(r.dir).toBe(join(dest, 'cifar-10-batches-bin'));
    expect(readFileSync(join(dest, 'notes.txt'), 'utf8')).toBe('keep me');
  });
});

describe('ensureCifar10', () => {
  it('downloads into the cache folder only when allowed', async () => {
    const cacheDir = join(tmp, 'cache', 'svd-train', 'cifar-10-batches-bin');
    const opts = { env: {}, cacheDir, url: `${base}/cifar.tar.gz`, md5, quiet: true };
    expect((await rejection(ensureCifar10(opts))).code).toBe('DATA_MISSING');
    const before = requests;
    expect(await ensureCifar10({ ...opts, download: true })).toEqual({ dir: cacheDir, source: 'download' });
    expect(requests).toBe(before + 1);
    expect(await ensureCifar10({ ...opts, download: true })).toEqual({ dir: cacheDir, source: 'cache' });
    expect(requests).toBe(before + 1);
  });
});
