/**
 * Runs a describe block once per engine, switching with `initEngine` in beforeAll, so a kernel or
 * layer is tested on cpu (the slow, trusted reference), on wasm and on native (what workers use).
 *
 * `native` is in `TEST_ENGINES` only where the oneDNN addon loads. So that it cannot drop out
 * unnoticed, CI sets SVD_TRAIN_REQUIRE_NATIVE=1 and `engine.test.ts` then fails if it does not
 * load; CI's fallback pass sets SVD_TRAIN_NATIVE=0 instead.
 */
import { describe, beforeAll } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadNative } from '@svd-train/native';
import { initEngine } from '../engine.js';

export type TestBackend = 'cpu' | 'wasm' | 'native';

/** cpu, wasm, and native where its addon loads. */
export const TEST_ENGINES: readonly TestBackend[] = ['cpu', 'wasm', ...(loadNative().ok ? (['native'] as const) : [])];
/** The fast engines only: wasm, and native where it loads. */
export const FAST_ENGINES: readonly TestBackend[] = TEST_ENGINES.filter((b) => b !== 'cpu');

/** The tfjs backend an engine runs on. */
const tfBackend = (b: TestBackend) => (b === 'native' ? 'wasm' : b);

export function forEachBackend(backends: readonly TestBackend[], body: (backend: TestBackend) => void): void {
  for (const backend of backends) {
    describe(`[${backend}]`, () => {
      beforeAll(async () => {
        const info = await initEngine({ backend });
        if (info.backend !== backend || tf.getBackend() !== tfBackend(backend)) {
          throw new Error(`expected engine ${backend}, got ${info.backend} on tfjs backend ${tf.getBackend()}`);
        }
      });
      body(backend);
    });
  }
}

/**
 * Runs `fn` with `backend` active and restores the previous engine afterwards (native and wasm
 * share the tfjs backend 'wasm', so the engine, not just the tfjs backend, is restored).
 */
export async function onBackend<T>(backend: TestBackend, fn: () => T | Promise<T>): Promise<T> {
  const prev = currentEngine;
  await initEngine({ backend });
  currentEngine = backend;
  try {
    return await fn();
  } finally {
    if (prev && prev !== backend) {
      await initEngine({ backend: prev });
      currentEngine = prev;
    }
  }
}
let currentEngine: TestBackend | undefined;
