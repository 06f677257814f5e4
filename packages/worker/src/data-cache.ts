/**
 * The worker's copy of the coordinator's dataset.
 *
 * The coordinator owns the data and announces it in `welcome.datasetInfo` (file names, sizes,
 * md5s). A worker uses a local folder whose files match those md5s (its --data flag, or a copy it
 * cached on an earlier run); otherwise it asks the coordinator for each file in chunks, checks the
 * md5 and caches it under a folder named by the md5s, so the transfer happens once per machine.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { homedir } from 'node:os';
import { join } from 'node:path';
import { SvdTrainError } from '@svd-train/core';

/** One dataset file as the coordinator describes it. */
export interface DatasetFile {
  name: string;
  bytes: number;
  md5: string;
}

/** What `welcome` says about the coordinator's dataset. */
export interface DatasetInfo {
  files: DatasetFile[];
}

/** Fetches `[offset, offset+length)` of a file from the coordinator (one data-request round). */
export type ChunkFetcher = (file: string, offset: number, length: number) => Promise<Uint8Array>;

/** Chunk size for transfers: well under any frame limit, big enough to keep round trips few. */
export const DATA_CHUNK_BYTES = 4 * 1024 * 1024;

export function md5Hex(bytes: Uint8Array): string {
  return createHash('md5').update(bytes).digest('hex');
}

function fileMatches(dir: string, f: DatasetFile): boolean {
  const p = join(dir, f.name);
  if (!existsSync(p)) return false;
  const bytes = readFileSync(p);
  return bytes.byteLength === f.bytes && md5Hex(bytes) === f.md5;
}

/** True when every file of `info` is in `dir` with the right md5. */
export function folderMatches(dir: string, info: DatasetInfo): boolean {
  return info.files.every((f) => fileMatches(dir, f));
}

/** Default cache root: $SVD_TRAIN_CACHE, else ~/.cache/svd-train. */
export function defaultCacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  return env.SVD_TRAIN_CACHE ?? join(homedir(), '.cache', 'svd-train');
}

/** The cache folder for one dataset: named by the md5 of its md5s, so different data never mixes. */
export function cacheFolderFor(root: string, info: DatasetInfo): string {
  const key = createHash('md5')
    .update(info.files.map((f) => `${f.name}:${f.md5}`).join('\n'))
    .digest('hex');
  return join(root, 'datasets', key);
}

/**
 * Returns a folder holding the coordinator's dataset, fetching missing files through `fetch`.
 * @param localDir the worker's own copy (--data), used if its md5s match.
 * @throws SvdTrainError DATA_CORRUPT when a transferred file fails its md5 check.
 */
export async function ensureDataset(
  info: DatasetInfo,
  opts: { localDir?: string | null; cacheRoot: string; fetch: ChunkFetcher; log?: (s: string) => void },
): Promise<string> {
  const log = opts.log ?? (() => {});
  if (opts.localDir && folderMatches(opts.localDir, info)) {
    log(`data: using local copy ${opts.localDir} (md5s match the coordinator's)`);
    return opts.localDir;
  }
  if (opts.localDir) log(`data: ${opts.localDir} does not match the coordinator's dataset; fetching it instead`);
  const dir = cacheFolderFor(opts.cacheRoot, info);
  mkdirSync(dir, { recursive: true });
  for (const f of info.files) {
    if (fileMatches(dir, f)) continue;
    const buf = new Uint8Array(f.bytes);
    for (let off = 0; off < f.bytes; ) {
      const chunk = await opts.fetch(f.name, off, Math.min(DATA_CHUNK_BYTES, f.bytes - off));
      if (chunk.byteLength === 0 || off + chunk.byteLength > f.bytes) {
        throw new SvdTrainError(
          'DATA_CORRUPT',
          `Coordinator sent ${chunk.byteLength} bytes of ${f.name} at offset ${off}; expected 1..${f.bytes - off}. ` +
            'Fix: restart the coordinator; its data folder may have changed during the run.',
        );
      }
      buf.set(chunk, off);
      off += chunk.byteLength;
    }
    const got = md5Hex(buf);
    if (got !== f.md5) {
      throw new SvdTrainError(
        'DATA_CORRUPT',
        `Transferred ${f.name} has md5 ${got}; expected ${f.md5}. Fix: restart the worker to fetch it again.`,
      );
    }
    // Write-then-rename so a killed worker never leaves a half file that looks cached.
    const tmp = join(dir, `${f.name}.part`);
    writeFileSync(tmp, buf);
    renameSync(tmp, join(dir, f.name));
    log(`data: fetched ${f.name} (${(f.bytes / 1e6).toFixed(1)} MB) from the coordinator, md5 ok`);
  }
  return dir;
}
