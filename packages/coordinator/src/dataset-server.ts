/**
 * Serves the dataset files to workers that have no local copy, in md5-tagged chunks.
 *
 * Files are read lazily and kept in memory once read (CIFAR-10 is ~180 MB), and only files the
 * coordinator announced in `datasetInfo.md5s` are served, so a worker cannot read arbitrary paths.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { DATA_CHUNK_BYTES, SvdTrainError, escapeForLog, md5Hex, type DataChunkMessage } from '@svd-train/core';

// Chunk size (core, so the worker bounds data-chunk frames by it): small enough to interleave with other traffic.
export { DATA_CHUNK_BYTES };

export class DatasetServer {
  private readonly cache = new Map<string, { bytes: Uint8Array; md5: string }>();

  /**
   * @param dir folder holding the files
   * @param files the servable file names (keys of datasetInfo.md5s)
   */
  constructor(
    private readonly dir: string,
    private readonly files: readonly string[],
    private readonly chunkBytes = DATA_CHUNK_BYTES,
  ) {}

  private load(file: string): { bytes: Uint8Array; md5: string } {
    if (!this.files.includes(file)) {
      throw new SvdTrainError('DATA_MISSING', `worker asked for '${escapeForLog(file, 80)}', which is not one of the served dataset files (${this.files.join(', ')})`);
    }
    let hit = this.cache.get(file);
    if (!hit) {
      let bytes: Uint8Array;
      try {
        bytes = new Uint8Array(readFileSync(join(this.dir, file)));
      } catch (e) {
        throw new SvdTrainError('DATA_MISSING', `cannot read dataset file ${join(this.dir, file)}: ${(e as Error).message}`);
      }
      hit = { bytes, md5: md5Hex(bytes) };
      this.cache.set(file, hit);
    }
    return hit;
  }

  /** The chunk messages of `file`, in order (views into the cached bytes, no copy). */
  *chunks(file: string): Generator<DataChunkMessage> {
    const { bytes, md5 } = this.load(file);
    const total = Math.max(1, Math.ceil(bytes.byteLength / this.chunkBytes));
    for (let i = 0; i < total; i++) {
      yield { type: 'data-chunk', file, index: i, total, bytes: bytes.subarray(i * this.chunkBytes, (i + 1) * this.chunkBytes), md5 };
    }
  }
}
