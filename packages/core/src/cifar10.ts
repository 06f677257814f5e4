/**
 * The CIFAR-10 binary format: file names, checksums, reader and verifier.
 *
 * Each `.bin` file is a sequence of 3073-byte records: 1 label byte (0..9) then 3072 pixel bytes,
 * the 32×32 red plane, then green, then blue (CHW per record). The official files hold 10000
 * records each; synthetic test sets (synthetic-cifar10.ts) use the same layout with fewer.
 * The reader keeps that layout: turning it into normalized NHWC floats is input-pipeline.ts's job.
 */
import { createHash } from 'node:crypto';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { SvdTrainError } from './errors.js';

export const CIFAR_IMAGE_SIZE = 32;
export const CIFAR_CHANNELS = 3;
/** Pixel bytes per image: 3 planes of 32×32. */
export const CIFAR_PIXELS = CIFAR_CHANNELS * CIFAR_IMAGE_SIZE * CIFAR_IMAGE_SIZE;
/** Bytes per record: label byte + pixels. */
export const CIFAR_RECORD_BYTES = 1 + CIFAR_PIXELS;
/** Records per official file. */
export const CIFAR_RECORDS_PER_FILE = 10000;
/** Size of each official file (30730000 bytes). */
export const CIFAR_OFFICIAL_FILE_BYTES = CIFAR_RECORDS_PER_FILE * CIFAR_RECORD_BYTES;
export const CIFAR_NUM_CLASSES = 10;
export const CIFAR_CLASSES = Object.freeze([
  'airplane', 'automobile', 'bird', 'cat', 'deer', 'dog', 'frog', 'horse', 'ship', 'truck',
] as const);
export const CIFAR_META_FILE = 'batches.meta.txt';

export type Cifar10SplitName = 'train' | 'test';

/** Files of each split, in the order their records are concatenated. */
export const CIFAR_SPLIT_FILES = Object.freeze({
  train: Object.freeze(['data_batch_1.bin', 'data_batch_2.bin', 'data_batch_3.bin', 'data_batch_4.bin', 'data_batch_5.bin'] as const),
  test: Object.freeze(['test_batch.bin'] as const),
});

/** All six data files (train 1..5, then test). */
export const CIFAR_FILES = Object.freeze([...CIFAR_SPLIT_FILES.train, ...CIFAR_SPLIT_FILES.test] as const);
export type CifarFileName = (typeof CIFAR_FILES)[number];

/** md5 of each official file (checked only when a file has the official size). */
export const CIFAR_MD5: Readonly<Record<CifarFileName, string>> = Object.freeze({
  'data_batch_1.bin': '5dd7e06a14cb22eb9f671a540d1b7c25',
  'data_batch_2.bin': '5ea93a67294ea407fff1d09f752e9692',
  'data_batch_3.bin': '942cd6a4bcdd0dd3c604fbe906cb4421',
  'data_batch_4.bin': 'ae636b3ba5c66a11e91e8cb52e771fcb',
  'data_batch_5.bin': '53f37980c15c3d472c316c40844f3f0d',
  'test_batch.bin': '803d5f7f4d78ea53de84dbe85f74fb6d',
});

/** One split in the on-disk layout. */
export interface Cifar10Split {
  /** [count, 3, 32, 32] uint8: per record the R, G and B planes (row-major 32×32 each). */
  images: Uint8Array;
  /** [count] class ids 0..9. */
  labels: Uint8Array;
  count: number;
}

const FIX_HINT =
  'Fix: delete the folder and run `svd-coord download` again, or point --data (or SVD_TRAIN_DATA) at a good copy.';

function missingFile(dir: string, file: string): SvdTrainError {
  return new SvdTrainError(
    'DATA_MISSING',
    `CIFAR-10 file ${join(dir, file)} does not exist; expected the files ${CIFAR_FILES.join(', ')} in ${dir}. ` +
      'Fix: run `svd-coord download`, or pass --data DIR (a cifar-10-batches-bin folder).',
    { dir, file },
  );
}

/** Number of records in a file of `bytes` bytes, or throws DATA_CORRUPT. */
function recordCount(path: string, bytes: number): number {
  if (bytes === 0 || bytes % CIFAR_RECORD_BYTES !== 0) {
    throw new SvdTrainError(
      'DATA_CORRUPT',
      `CIFAR-10 file ${path} has ${bytes} bytes; expected a positive multiple of ${CIFAR_RECORD_BYTES} ` +
        `(official files have ${CIFAR_OFFICIAL_FILE_BYTES}). The file is truncated or not CIFAR-10 binary. ${FIX_HINT}`,
      { file: path, bytes },
    );
  }
  return bytes / CIFAR_RECORD_BYTES;
}

/**
 * Reads one split, concatenating its files in order (train: data_batch_1..5).
 * @throws SvdTrainError DATA_MISSING (file absent), DATA_CORRUPT (bad size, label out of 0..9;
 *   names the file and record index).
 */
export function readCifar10(dir: string, split: Cifar10SplitName): Cifar10Split {
  const files = CIFAR_SPLIT_FILES[split];
  if (!files) {
    throw new SvdTrainError('CONFIG_INVALID', `Unknown CIFAR-10 split ${JSON.stringify(split)}; expected "train" or "test".`);
  }
  const buffers: { path: string; buf: Buffer; n: number }[] = [];
  let count = 0;
  for (const f of files) {
    const path = join(dir, f);
    if (!existsSync(path)) throw missingFile(dir, f);
    const buf = readFileSync(path);
    const n = recordCount(path, buf.length);
    buffers.push({ path, buf, n });
    count += n;
  }
  const images = new Uint8Array(count * CIFAR_PIXELS);
  const labels = new Uint8Array(count);
  let at = 0;
  for (const { path, buf, n } of buffers) {
    for (let r = 0; r < n; r++) {
      const off = r * CIFAR_RECORD_BYTES;
      const label = buf[off];
      if (label >= CIFAR_NUM_CLASSES) {
        throw new SvdTrainError(
          'DATA_CORRUPT',
          `CIFAR-10 file ${path}, record ${r} (byte offset ${off}) has label ${label}; expected 0..9. ${FIX_HINT}`,
          { file: path, record: r, label },
        );
      }
      labels[at] = label;
      images.set(buf.subarray(off + 1, off + CIFAR_RECORD_BYTES), at * CIFAR_PIXELS);
      at++;
    }
  }
  return { images, labels, count };
}

export interface VerifyCifar10Options {
  /** Check md5 of files that have the official size (default true). Synthetic files are never md5-checked. */
  md5?: boolean;
}

export interface Cifar10FileReport {
  file: CifarFileName;
  bytes: number;
  records: number;
  /** md5 that was computed and matched, or null when not checked. */
  md5: string | null;
}

/**
 * md5 hex of bytes (or a string, as UTF-8): the one helper the coordinator (dataset-server), the
 * worker (data cache) and the CLI use, so every side names a dataset file by the same digest.
 */
export function md5Hex(data: Uint8Array | string): string {
  return createHash('md5').update(data).digest('hex');
}

/** md5 hex of a file (files here are at most ~30 MB, so one read is fine). */
export function md5File(path: string): string {
  return md5Hex(readFileSync(path));
}

/**
 * Checks that all six files exist and have whole records; with `md5` (default), checks the md5
 * of every file that has the official size against `CIFAR_MD5`.
 * @returns one report per file, in CIFAR_FILES order.
 * @throws SvdTrainError DATA_MISSING, DATA_CORRUPT (names file, actual and expected md5, the fix).
 */
export function verifyCifar10(dir: string, opts: VerifyCifar10Options = {}): Cifar10FileReport[] {
  const checkMd5 = opts.md5 ?? true;
  const reports: Cifar10FileReport[] = [];
  for (const file of CIFAR_FILES) {
    const path = join(dir, file);
    if (!existsSync(path)) throw missingFile(dir, file);
    const bytes = statSync(path).size;
    const records = recordCount(path, bytes);
    let md5: string | null = null;
    if (checkMd5 && bytes === CIFAR_OFFICIAL_FILE_BYTES) {
      md5 = md5File(path);
      if (md5 !== CIFAR_MD5[file]) {
        throw new SvdTrainError(
          'DATA_CORRUPT',
          `CIFAR-10 file ${path} has md5 ${md5}; expected ${CIFAR_MD5[file]}. The file is damaged. ${FIX_HINT}`,
          { file: path, actual: md5, expected: CIFAR_MD5[file] },
        );
      }
    }
    reports.push({ file, bytes, records, md5 });
  }
  return reports;
}
