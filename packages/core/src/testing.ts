/**
 * `@svd-train/core/testing`: helpers that tests in every package share, kept off the main entry
 * so that the public API stays free of test plumbing.
 *
 * The PyTorch reference dumps live outside the repository, in `../shared/reference` next to the
 * checkout (or wherever SVD_TRAIN_REFERENCE_DIR points). Every package finds them through
 * `referenceDir()`, so one variable moves them for all suites. A missing dump may skip a test on
 * a developer machine, but under CI (`process.env.CI` set) it is an error: a parity test that
 * silently skips in CI proves nothing.
 *
 * `gradientsFrameTemplate` builds gradients frames for simulated workers (tests, benchmarks).
 */
import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { SvdTrainError } from './errors.js';
import { packValue } from './protocol/codec.js';
import type { GradientsMessage } from './protocol/messages.js';

/**
 * The repository root: this module is `packages/core/src/testing.ts` in the source tree and
 * `packages/core/dist/testing.js` once built, three levels below the root either way.
 */
/** Moves the reference dumps for every package's tests. */
export const REFERENCE_DIR_ENV = 'SVD_TRAIN_REFERENCE_DIR';

const REPO_ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

/** SVD_TRAIN_REFERENCE_DIR when set (relative to the cwd), else `<repo>/../shared/reference`. */
export function referenceDir(env: NodeJS.ProcessEnv = process.env): string {
  const fromEnv = env[REFERENCE_DIR_ENV];
  return fromEnv ? resolve(fromEnv) : resolve(REPO_ROOT, '..', 'shared', 'reference');
}

/** Absolute path of reference dump `name` (with or without `.json`). */
export function referenceFile(name: string, env: NodeJS.ProcessEnv = process.env): string {
  return join(referenceDir(env), name.endsWith('.json') ? name : `${name}.json`);
}

function missing(file: string, env: NodeJS.ProcessEnv, why: string): SvdTrainError {
  return new SvdTrainError(
    'DATA_MISSING',
    `reference dump ${file} does not exist${why}. ` +
      `Expected the PyTorch dumps in ${referenceDir(env)}; put them there or set ${REFERENCE_DIR_ENV} to their folder.`,
    { file },
  );
}

/**
 * For `describe.skipIf(referenceMissing('optim'))`: true when the dump is absent and the tests
 * may skip. Under CI a missing dump throws DATA_MISSING instead, which fails the test file.
 */
export function referenceMissing(name: string, env: NodeJS.ProcessEnv = process.env): boolean {
  const file = referenceFile(name, env);
  if (existsSync(file)) return false;
  if (env.CI) throw missing(file, env, ', and CI is set, so the parity tests that need it may not skip');
  return true;
}

/** The path of a dump that suites which never skip must have: DATA_MISSING naming the fix if absent. */
export function requireReferenceFile(name: string, env: NodeJS.ProcessEnv = process.env): string {
  const file = referenceFile(name, env);
  if (!existsSync(file)) throw missing(file, env, '');
  return file;
}

/**
 * A gradients frame split so that a simulated worker (tests, benchmarks) can answer any
 * (step, attempt, n) without re-encoding megabytes: `prefix` holds everything else including the
 * tensors, `tail(...)` the three small trailing fields. Sending `prefix` then `tail` as one
 * fragmented WebSocket message (or concatenating them) gives a valid frame for `decodeMessage`.
 */
export function gradientsFrameTemplate(body: Omit<GradientsMessage, 'type' | 'step' | 'attempt' | 'n'>): {
  prefix: Uint8Array;
  tail: (step: number, attempt: number, n: number) => Uint8Array;
} {
  const tail = (step: number, attempt: number, n: number): Uint8Array => {
    const parts = ['step', step, 'attempt', attempt, 'n', n].map((v) => packValue(v));
    return Buffer.concat(parts);
  };
  // Key order is encoding order: step/attempt/n last, so they form the frame's tail.
  const full = packValue({ type: 'gradients', grads: body.grads, buffers: body.buffers, loss: body.loss, correct: body.correct, computeMs: body.computeMs, step: 0, attempt: 0, n: 0 });
  const t0 = tail(0, 0, 0);
  const prefix = full.subarray(0, full.length - t0.length);
  if (Buffer.compare(full.subarray(full.length - t0.length), t0) !== 0) {
    throw new SvdTrainError('INTERNAL', 'gradientsFrameTemplate: msgpack encoder did not place the trailing fields last');
  }
  return { prefix, tail };
}
