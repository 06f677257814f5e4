/**
 * The worker's copy of the coordinator's dataset.
 *
 * The coordinator owns the data and announces it in `welcome.datasetInfo` (md5 of each file). A
 * worker uses a local folder whose files match those md5s (its --data flag / SVD_TRAIN_DATA, or a
 * copy cached on an earlier run); otherwise it asks the coordinator for each file (data-request,
 * answered by data-chunk frames in order), checks the md5 and caches the file under a folder
 * named by the md5s, so the transfer happens once per machine.
 *
 * The names come from the coordinator, which is not trusted: only the known CIFAR-10 file names
 * are accepted, and each path is resolved and checked to lie directly inside the cache folder
 * before anything is read or written there.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { CIFAR_FILES, SvdTrainError, escapeForLog, md5Hex, type DatasetInfo } from '@svd-train/core';

/** Fetches one whole dataset file from the coordinator. */
export type FileFetcher = (file: string) => Promise<Uint8Array>;

function fileMatches(dir: string, name: string, md5: string): boolean {
  const p = datasetFilePath(dir, name);
  return existsSync(p) && md5Hex(readFileSync(p)) === md5;
}

/** True when every file of `info` is in `dir` with the right md5. */
export function folderMatches(dir: string, info: DatasetInfo): boolean {
  return Object.entries(info.md5s).every(([name, md5]) => fileMatches(dir, name, md5));
}

/** The cache folder for one dataset: named by a hash of its md5s, so different data never mixes. */
export function cacheFolderFor(root: string, info: DatasetInfo): string {
  const key = md5Hex(Object.entries(info.md5s).sort(([a], [b]) => a.localeCompare(b)).map(([f, m]) => `${f}:${m}`).join('\n'));
  return join(root, 'datasets', key);
}

/**
 * `dir/name` for a dataset file name the coordinator gave, after checking that it is a CIFAR-10
 * file name and that the resolved path is directly inside `dir`.
 * @throws SvdTrainError PROTOCOL_INVALID for any other name (e.g. '../../.bashrc').
 */
export function datasetFilePath(dir: string, name: string): string {
  const root = resolve(dir);
  const p = resolve(root, name);
  if (!(CIFAR_FILES as readonly string[]).includes(name) || dirname(p) !== root) {
    throw new SvdTrainError(
      'PROTOCOL_INVALID',
      `coordinator named dataset file '${escapeForLog(name, 80)}'; expected one of ${CIFAR_FILES.join(', ')}. Nothing was written; this coordinator is not trustworthy`,
    );
  }
  return p;
}

/**
 * Returns a folder holding the coordinator's dataset, fetching missing files through `fetch`.
 * @param localDir the worker's own copy (--data), used if its md5s match.
 * @throws SvdTrainError DATA_CORRUPT when a transferred file fails its md5 check.
 */
export async function ensureDataset(
  info: DatasetInfo,
  opts: { localDir?: string | null; cacheRoot: string; fetch: FileFetcher; log?: (s: string) => void },
): Promise<string> {
  const log = opts.log ?? (() => {});
  if (opts.localDir && folderMatches(opts.localDir, info)) {
    log(`data: using local copy ${opts.localDir} (md5s match the coordinator's)`);
    return opts.localDir;
  }
  if (opts.localDir) log(`data: ${opts.localDir} does not match the coordinator's dataset; fetching it instead`);
  const dir = cacheFolderFor(opts.cacheRoot, info);
  // Every name is checked before the first byte is written, so a bad list writes nothing at all.
  const paths = new Map(Object.keys(info.md5s).map((name) => [name, datasetFilePath(dir, name)]));
  mkdirSync(dir, { recursive: true });
  for (const [name, md5] of Object.entries(info.md5s)) {
    const path = paths.get(name)!;
    if (fileMatches(dir, name, md5)) continue;
    const buf = await opts.fetch(name);
    const got = md5Hex(buf);
    if (got !== md5) {
      throw new SvdTrainError(
        'DATA_CORRUPT',
        `Transferred ${name} has md5 ${got}; expected ${md5}. Fix: restart the worker to fetch it again.`,
      );
    }
    // Write-then-rename so a killed worker never leaves a half file that looks cached.
    const tmp = `${path}.part`;
    writeFileSync(tmp, buf);
    renameSync(tmp, path);
    log(`data: fetched ${name} (${(buf.byteLength / 1e6).toFixed(1)} MB) from the coordinator, md5 ok`);
  }
  return dir;
}
