/**
 * Where the CIFAR-10 files live: the --data flag, then SVD_TRAIN_DATA, then the user cache
 * (`cacheRoot()`/cifar-10-batches-bin: $SVD_TRAIN_CACHE, else $XDG_CACHE_HOME/svd-train, else
 * ~/.cache/svd-train).
 *
 * A folder given explicitly is never silently replaced by another one: if it lacks the data the
 * error says so, and says exactly how to get the data.
 */
import { existsSync } from 'node:fs';
import { homedir } from 'node:os';
import { join, resolve } from 'node:path';
import { CIFAR_FILES } from './cifar10.js';
import { CACHE_APP_DIRNAME, CIFAR10_DIRNAME, ENV_VARS } from './defaults.js';
import { SvdTrainError } from './errors.js';

export type DataDirSource = 'flag' | 'env' | 'cache';

export interface ResolveDataDirOptions {
  /** Value of --data (null/undefined/'' when not given). */
  flag?: string | null;
  /**
   * The environment to read SVD_TRAIN_DATA, XDG_CACHE_HOME and HOME from (default process.env),
   * or directly the value of SVD_TRAIN_DATA as a string.
   */
  env?: NodeJS.ProcessEnv | string | null;
  /** The dataset folder to use when neither flag nor env is set (default `defaultCacheDir()`). */
  cacheDir?: string;
  /** Base for relative paths and for looking for nearby copies (default process.cwd()). */
  cwd?: string;
}

export interface DataDir {
  /** Absolute path of the folder holding data_batch_1..5.bin and test_batch.bin. */
  dir: string;
  source: DataDirSource;
}

/** Moves svd-train's whole cache (downloaded CIFAR-10, datasets a worker fetched). */
export const CACHE_ENV_VAR = 'SVD_TRAIN_CACHE';

/**
 * svd-train's cache root, the one rule for every package: $SVD_TRAIN_CACHE, else
 * `$XDG_CACHE_HOME/svd-train` (XDG requires an absolute path; a relative one is ignored), else
 * `~/.cache/svd-train`. The CLI's downloaded CIFAR-10 and the worker's fetched datasets live below it.
 */
export function cacheRoot(env: NodeJS.ProcessEnv = process.env): string {
  const own = env[CACHE_ENV_VAR];
  if (own) return resolve(own);
  const xdg = env.XDG_CACHE_HOME;
  return join(xdg && xdg.startsWith('/') ? xdg : join(env.HOME || homedir(), '.cache'), CACHE_APP_DIRNAME);
}

/** `cacheRoot()/cifar-10-batches-bin`: where `download` puts CIFAR-10 and where training finds it. */
export function defaultCacheDir(env: NodeJS.ProcessEnv = process.env): string {
  return join(cacheRoot(env), CIFAR10_DIRNAME);
}

/** Names of the data files missing from `dir` (empty when all six are there). */
export function missingCifar10Files(dir: string): string[] {
  return CIFAR_FILES.filter((f) => !existsSync(join(dir, f)));
}

export function hasCifar10Files(dir: string): boolean {
  return missingCifar10Files(dir).length === 0;
}

function envObject(env: ResolveDataDirOptions['env']): NodeJS.ProcessEnv {
  return env !== null && typeof env === 'object' ? env : process.env;
}

/**
 * The folder the options point at, before checking that the data is there: the first of
 * flag, env and cache that is set. Used by `ensureCifar10` to know where to download.
 */
export function selectDataDir(opts: ResolveDataDirOptions = {}): DataDir {
  const cwd = opts.cwd ?? process.cwd();
  const envValue = typeof opts.env === 'string' ? opts.env : envObject(opts.env)[ENV_VARS.data];
  if (opts.flag) return { dir: resolve(cwd, opts.flag), source: 'flag' };
  if (envValue) return { dir: resolve(cwd, envValue), source: 'env' };
  return { dir: resolve(cwd, opts.cacheDir ?? defaultCacheDir(envObject(opts.env))), source: 'cache' };
}

/** Folders near the working directory where a shared copy often sits (e.g. ../shared/...). */
function nearbyCopies(cwd: string): string[] {
  const candidates = [
    CIFAR10_DIRNAME,
    join('data', CIFAR10_DIRNAME),
    join('..', 'shared', CIFAR10_DIRNAME),
    join('..', '..', 'shared', CIFAR10_DIRNAME),
    join('..', CIFAR10_DIRNAME),
  ];
  return candidates.map((c) => resolve(cwd, c)).filter(hasCifar10Files);
}

const SOURCE_TEXT: Record<DataDirSource, string> = {
  flag: 'given by --data',
  env: `given by ${ENV_VARS.data}`,
  cache: 'the default cache folder',
};

/**
 * Finds the CIFAR-10 folder. A folder that holds `cifar-10-batches-bin/` (the tarball's layout)
 * is accepted in place of that subfolder.
 * @throws SvdTrainError DATA_MISSING with the folder tried, the files missing and how to get them.
 */
export function resolveDataDir(opts: ResolveDataDirOptions = {}): DataDir {
  const selected = selectDataDir(opts);
  if (hasCifar10Files(selected.dir)) return selected;
  const nested = join(selected.dir, CIFAR10_DIRNAME);
  if (hasCifar10Files(nested)) return { dir: nested, source: selected.source };

  const cwd = opts.cwd ?? process.cwd();
  const missing = missingCifar10Files(selected.dir);
  const found = nearbyCopies(cwd).filter((d) => d !== selected.dir);
  const lines = [
    `CIFAR-10 not found in ${selected.dir} (${SOURCE_TEXT[selected.source]}): ` +
      (existsSync(selected.dir) ? `missing ${missing.join(', ')}.` : 'the folder does not exist.'),
    `Expected a cifar-10-batches-bin folder holding ${CIFAR_FILES.join(', ')}.`,
    'Fix, either:',
    selected.source === 'cache'
      ? `  - run \`svd-coord download\` to fetch it (163 MiB) into ${selected.dir} (or \`svd-coord download --dir DIR\` and pass --data DIR), or`
      : `  - run \`svd-coord download --dir ${selected.dir}\` to fetch it (163 MiB) into that folder, or`,
    `  - pass --data DIR (or set ${ENV_VARS.data}=DIR) for an existing copy, e.g. --data ../shared/${CIFAR10_DIRNAME}.`,
  ];
  if (found.length > 0) lines.push(`A copy exists at ${found[0]}: pass --data ${found[0]}`);
  throw new SvdTrainError('DATA_MISSING', lines.join('\n'), { dir: selected.dir, source: selected.source, missing, found });
}
