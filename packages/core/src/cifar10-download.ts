/**
 * Downloading CIFAR-10 safely: stream to a temp file while hashing, check the md5, extract into
 * a temp folder, verify the files, and only then rename into place. A failed or interrupted
 * download therefore never leaves a half dataset where `resolveDataDir` would find it.
 */
import { createHash } from 'node:crypto';
import { createWriteStream, existsSync, mkdirSync, mkdtempSync, readdirSync, renameSync, rmdirSync, rmSync, statSync } from 'node:fs';
import { basename, dirname, join, resolve } from 'node:path';
import { Readable, Transform } from 'node:stream';
import { pipeline } from 'node:stream/promises';
import type { ReadableStream as NodeReadableStream } from 'node:stream/web';
import * as tar from 'tar';
import { verifyCifar10 } from './cifar10.js';
import { hasCifar10Files, resolveDataDir, selectDataDir, type DataDirSource, type ResolveDataDirOptions } from './data-dir.js';
import { CIFAR10_DIRNAME, CIFAR10_TARBALL_MD5, CIFAR10_URL } from './defaults.js';
import { SvdTrainError, isSvdTrainError } from './errors.js';
import { ProgressBar } from './progress-bar.js';

export interface DownloadCifar10Options {
  /** Tarball URL (default the official cifar-10-binary.tar.gz). */
  url?: string;
  /** Expected md5 of the tarball (default the official one). */
  md5?: string;
  /** Called as bytes arrive; replaces the default progress bar on stderr. */
  onProgress?: (received: number, total: number | null) => void;
  /** No progress bar when no `onProgress` is given. */
  quiet?: boolean;
  /** fetch implementation (default global fetch). */
  fetchImpl?: typeof fetch;
}

export interface DownloadResult {
  /** Folder holding the six .bin files. */
  dir: string;
  /** false when a verified copy was already there. */
  downloaded: boolean;
}

const MANUAL_FIX = (url: string) =>
  `Fix: retry \`svd-coord download\`, or download ${url} yourself, extract it, and pass --data DIR/${CIFAR10_DIRNAME}.`;

/** Streams `url` into `file`, returning the md5 hex of the bytes written. */
async function fetchToFile(url: string, file: string, opts: DownloadCifar10Options): Promise<string> {
  const fetchImpl = opts.fetchImpl ?? fetch;
  let res: Response;
  try {
    res = await fetchImpl(url);
  } catch (e) {
    throw new SvdTrainError('DOWNLOAD_FAILED', `Cannot fetch ${url}: ${(e as Error).message}. ${MANUAL_FIX(url)}`, { url }, { cause: e });
  }
  if (!res.ok || !res.body) {
    throw new SvdTrainError(
      'DOWNLOAD_FAILED',
      `Fetching ${url} answered HTTP ${res.status} ${res.statusText}; expected 200 with the tarball. ${MANUAL_FIX(url)}`,
      { url, status: res.status },
    );
  }
  const header = Number(res.headers.get('content-length'));
  const total = Number.isFinite(header) && header > 0 ? header : null;
  const bar = opts.onProgress || opts.quiet ? null : new ProgressBar({ label: basename(new URL(url).pathname), total, unit: 'bytes' });
  const hash = createHash('md5');
  let received = 0;
  const meter = new Transform({
    transform(chunk: Buffer, _enc, cb) {
      hash.update(chunk);
      received += chunk.length;
      opts.onProgress?.(received, total);
      bar?.update(received);
      cb(null, chunk);
    },
  });
  try {
    await pipeline(Readable.fromWeb(res.body as unknown as NodeReadableStream<Uint8Array>), meter, createWriteStream(file));
  } catch (e) {
    throw new SvdTrainError(
      'DOWNLOAD_FAILED',
      `Download of ${url} broke off after ${received} bytes: ${(e as Error).message}. ${MANUAL_FIX(url)}`,
      { url, received },
      { cause: e },
    );
  } finally {
    bar?.done();
  }
  if (total !== null && received !== total) {
    throw new SvdTrainError(
      'DOWNLOAD_FAILED',
      `Download of ${url} got ${received} bytes; expected ${total} (Content-Length). ${MANUAL_FIX(url)}`,
      { url, received, total },
    );
  }
  return hash.digest('hex');
}

/**
 * Downloads and extracts CIFAR-10 so that `destDir` holds data_batch_1..5.bin, test_batch.bin
 * and batches.meta.txt. When `destDir` already holds a verified copy nothing is downloaded.
 * When `destDir` is a non-empty folder without the data, the data goes into
 * `destDir/cifar-10-batches-bin` (which `resolveDataDir` also accepts).
 * @throws SvdTrainError DOWNLOAD_FAILED (network, HTTP status, truncation),
 *   DATA_CORRUPT (md5 mismatch, a tarball without the expected files, a bad existing copy).
 */
/** A download's temp folder untouched this long belongs to a process that died (a live one writes it). */
const STALE_DOWNLOAD_MS = 24 * 3600 * 1000;

/**
 * Removes the temp folders of earlier downloads into `parent`/`name` that a killed process left
 * (up to 163 MB each), once they are a day old: a download still running is never that old.
 */
function removeStaleDownloads(parent: string, name: string): void {
  const prefix = `.${name}.download-`;
  for (const entry of readdirSync(parent)) {
    if (!entry.startsWith(prefix)) continue;
    const path = join(parent, entry);
    try {
      if (Date.now() - statSync(path).mtimeMs > STALE_DOWNLOAD_MS) rmSync(path, { recursive: true, force: true });
    } catch {
      /* gone already, or not ours to remove: the new download does not need it gone */
    }
  }
}

export async function downloadCifar10(destDir: string, opts: DownloadCifar10Options = {}): Promise<DownloadResult> {
  const url = opts.url ?? CIFAR10_URL;
  const expectedMd5 = opts.md5 ?? CIFAR10_TARBALL_MD5;
  let target = resolve(destDir);
  if (existsSync(target) && !hasCifar10Files(target)) {
    if (readdirSync(target).length === 0) rmdirSync(target);
    else target = join(target, CIFAR10_DIRNAME);
  }
  if (hasCifar10Files(target)) {
    verifyCifar10(target, { md5: true });
    return { dir: target, downloaded: false };
  }
  if (existsSync(target)) {
    throw new SvdTrainError(
      'DATA_CORRUPT',
      `${target} exists but does not hold the CIFAR-10 files. Fix: delete it or choose another --data folder.`,
      { dir: target },
    );
  }

  const parent = dirname(target);
  mkdirSync(parent, { recursive: true });
  removeStaleDownloads(parent, basename(target));
  // The temp folder sits next to the target so the final rename stays on one filesystem (atomic).
  const tmp = mkdtempSync(join(parent, `.${basename(target)}.download-`));
  try {
    const part = join(tmp, 'cifar-10-binary.tar.gz.part');
    const md5 = await fetchToFile(url, part, opts);
    if (md5 !== expectedMd5) {
      throw new SvdTrainError(
        'DATA_CORRUPT',
        `The tarball from ${url} has md5 ${md5}; expected ${expectedMd5}. The download is damaged or the URL serves ` +
          `another file; nothing was kept. ${MANUAL_FIX(url)}`,
        { url, actual: md5, expected: expectedMd5 },
      );
    }
    const tarball = join(tmp, 'cifar-10-binary.tar.gz');
    renameSync(part, tarball);
    const extractDir = join(tmp, 'extract');
    mkdirSync(extractDir);
    try {
      await tar.x({ file: tarball, cwd: extractDir, strict: true });
    } catch (e) {
      throw new SvdTrainError(
        'DATA_CORRUPT',
        `Cannot extract the tarball from ${url}: ${(e as Error).message}. ${MANUAL_FIX(url)}`,
        { url },
        { cause: e },
      );
    }
    const extracted = join(extractDir, CIFAR10_DIRNAME);
    if (!hasCifar10Files(extracted)) {
      throw new SvdTrainError(
        'DATA_CORRUPT',
        `The tarball from ${url} does not hold ${CIFAR10_DIRNAME}/ with the six .bin files. ${MANUAL_FIX(url)}`,
        { url },
      );
    }
    verifyCifar10(extracted, { md5: true });
    try {
      renameSync(extracted, target);
    } catch (e) {
      // Another process may have finished the same download first; its copy is as good as ours.
      if (!hasCifar10Files(target)) throw e;
    }
    return { dir: target, downloaded: true };
  } finally {
    rmSync(tmp, { recursive: true, force: true });
  }
}

export interface EnsureCifar10Options extends ResolveDataDirOptions, DownloadCifar10Options {
  /** Download into the selected folder (flag, env or cache) when the data is missing. */
  download?: boolean;
}

/**
 * `resolveDataDir`, and when the data is missing and `download` is set, download it into the
 * folder that flag, env or cache select.
 */
export async function ensureCifar10(opts: EnsureCifar10Options = {}): Promise<{ dir: string; source: DataDirSource | 'download' }> {
  try {
    return resolveDataDir(opts);
  } catch (e) {
    if (!opts.download || !isSvdTrainError(e, 'DATA_MISSING')) throw e;
  }
  const { dir } = await downloadCifar10(selectDataDir(opts).dir, opts);
  return { dir, source: 'download' };
}
