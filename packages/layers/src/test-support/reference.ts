/**
 * Loads the PyTorch reference dumps (format: reference README "Encoding") from the folder every
 * package uses: SVD_TRAIN_REFERENCE_DIR, else `../shared/reference` next to the repository (core's
 * `referenceDir`). A missing dump fails the test that reads it; these suites never skip.
 * Every `{shape, dtype, data}` object becomes a RefTensor whose `data` is a Float32Array, which
 * holds the exact float32 values the files encode (never compare the raw float64 parse).
 */
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { referenceDir, requireReferenceFile } from '@svd-train/core/testing';

export const REFERENCE_DIR = referenceDir();

export interface RefTensor {
  shape: number[];
  dtype: 'float32' | 'float64' | 'int32';
  /** Values as float32 (int32 labels and indices are exact; float64 values are rounded). */
  data: Float32Array;
  /** The values as parsed (float64 numbers), for float64 files (optim.json) and int32 use. */
  raw: number[];
}

function isTensorJson(v: unknown): v is { shape: number[]; dtype: RefTensor['dtype']; data: number[] } {
  if (v === null || typeof v !== 'object' || Array.isArray(v)) return false;
  const o = v as Record<string, unknown>;
  return Array.isArray(o.shape) && Array.isArray(o.data) && typeof o.dtype === 'string';
}

function convert(v: unknown): unknown {
  if (isTensorJson(v)) {
    return { shape: v.shape, dtype: v.dtype, data: Float32Array.from(v.data), raw: v.data } satisfies RefTensor;
  }
  if (Array.isArray(v)) return v.map(convert);
  if (v !== null && typeof v === 'object') {
    return Object.fromEntries(Object.entries(v as Record<string, unknown>).map(([k, x]) => [k, convert(x)]));
  }
  return v;
}

const cache = new Map<string, unknown>();

/**
 * Reads `<REFERENCE_DIR>/<name>.json` (name without `.json`), converting tensors to RefTensor.
 * Cached per process: resnet20_channel.json is 12 MB.
 */
export function loadReference<T = any>(name: string): T {
  let v = cache.get(name);
  if (v === undefined) {
    const file = requireReferenceFile(name);
    v = convert(JSON.parse(readFileSync(file, 'utf8')));
    cache.set(name, v);
  }
  return v as T;
}

/** A float32 (or int32) tf tensor holding a RefTensor, on the current backend. */
export function refToTensor(t: RefTensor): tf.Tensor {
  return t.dtype === 'int32' ? tf.tensor(Int32Array.from(t.raw), t.shape, 'int32') : tf.tensor(t.data, t.shape, 'float32');
}

/** A PyTorch NCHW reference tensor as an NHWC tf tensor. */
export function refToNhwc(t: RefTensor): tf.Tensor4D {
  return tf.tidy(() => refToTensor(t).transpose([0, 2, 3, 1])) as tf.Tensor4D;
}
