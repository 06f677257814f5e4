/**
 * A small, deterministic, learnable stand-in for CIFAR-10 in the real binary format.
 *
 * Tests and smoke runs must not need the 170 MB download, yet a training test should be able to
 * show the loss going down. Each class gets its own mean colour and its own oriented stripe
 * pattern, and every image adds a random phase and pixel noise, so a small ResNet separates the
 * classes within a few steps while no two images are identical.
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  CIFAR_CLASSES,
  CIFAR_IMAGE_SIZE,
  CIFAR_META_FILE,
  CIFAR_NUM_CLASSES,
  CIFAR_RECORD_BYTES,
  CIFAR_SPLIT_FILES,
} from './cifar10.js';
import { SvdTrainError } from './errors.js';
import { mulberry32 } from './rng.js';

export interface SyntheticCifar10Options {
  /** Train records, spread over data_batch_1..5 (at least 5: every file needs one record). */
  train: number;
  /** Test records in test_batch.bin (at least 1). */
  test: number;
  /** Seed of the generator; the same seed writes the same bytes. */
  seed?: number;
}

/** Mean colour (R, G, B) of each class, spread over the colour cube. */
const CLASS_COLOURS: readonly (readonly [number, number, number])[] = [
  [200, 60, 60], [60, 200, 60], [60, 60, 200], [200, 200, 60], [200, 60, 200],
  [60, 200, 200], [140, 140, 140], [230, 140, 40], [40, 110, 230], [110, 40, 110],
];

/** Fills `n` records (label + pixels) into `out` starting at record 0. */
function fillRecords(out: Uint8Array, n: number, rand: () => number): void {
  const S = CIFAR_IMAGE_SIZE;
  for (let r = 0; r < n; r++) {
    const label = Math.floor(rand() * CIFAR_NUM_CLASSES);
    const base = r * CIFAR_RECORD_BYTES;
    out[base] = label;
    const angle = (label * Math.PI) / CIFAR_NUM_CLASSES;
    const freq = 0.35 + 0.05 * (label % 4);
    const kx = Math.cos(angle) * freq;
    const ky = Math.sin(angle) * freq;
    const phase = rand() * 2 * Math.PI;
    const colour = CLASS_COLOURS[label];
    for (let c = 0; c < 3; c++) {
      const plane = base + 1 + c * S * S;
      for (let y = 0; y < S; y++) {
        for (let x = 0; x < S; x++) {
          const stripe = 45 * Math.sin(kx * x + ky * y + phase);
          const noise = (rand() - 0.5) * 60;
          const v = colour[c] + stripe + noise;
          out[plane + y * S + x] = v < 0 ? 0 : v > 255 ? 255 : Math.round(v);
        }
      }
    }
  }
}

/** Writes one split file of `n` records. */
function writeFile(path: string, n: number, rand: () => number): void {
  const buf = new Uint8Array(n * CIFAR_RECORD_BYTES);
  fillRecords(buf, n, rand);
  writeFileSync(path, buf);
}

/**
 * Writes data_batch_1..5.bin (train records split as evenly as possible, earlier files taking
 * the remainder), test_batch.bin and batches.meta.txt into `dir` (created if needed).
 */
export function writeSyntheticCifar10(dir: string, opts: SyntheticCifar10Options): void {
  const { train, test, seed = 0 } = opts;
  const files = CIFAR_SPLIT_FILES.train.length;
  if (!Number.isInteger(train) || train < files || !Number.isInteger(test) || test < 1) {
    throw new SvdTrainError(
      'CONFIG_INVALID',
      `writeSyntheticCifar10 got train=${train}, test=${test}; expected integers with train >= ${files} ` +
        '(one record per train file at least) and test >= 1.',
    );
  }
  mkdirSync(dir, { recursive: true });
  // Separate streams per split keep the test set fixed when only the train size changes.
  const trainRand = mulberry32(seed * 2 + 1);
  const testRand = mulberry32(seed * 2 + 2);
  const per = Math.floor(train / files);
  const extra = train % files;
  CIFAR_SPLIT_FILES.train.forEach((f, i) => writeFile(join(dir, f), per + (i < extra ? 1 : 0), trainRand));
  writeFile(join(dir, CIFAR_SPLIT_FILES.test[0]), test, testRand);
  writeFileSync(join(dir, CIFAR_META_FILE), `${CIFAR_CLASSES.join('\n')}\n\n`);
}
