/**
 * Runs a describe block once per backend, switching with `initEngine` in beforeAll, so a kernel or
 * layer is tested on cpu (the slow, trusted reference) and on wasm (what workers use) alike.
 */
import { describe, beforeAll } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { initEngine } from '../engine.js';

export type TestBackend = 'cpu' | 'wasm';

export function forEachBackend(backends: readonly TestBackend[], body: (backend: TestBackend) => void): void {
  for (const backend of backends) {
    describe(`[${backend}]`, () => {
      beforeAll(async () => {
        await initEngine({ backend });
        if (tf.getBackend() !== backend) throw new Error(`expected backend ${backend}, got ${tf.getBackend()}`);
      });
      body(backend);
    });
  }
}

/** Runs `fn` with `backend` active and restores the previous backend afterwards. */
export async function onBackend<T>(backend: TestBackend, fn: () => T | Promise<T>): Promise<T> {
  const prev = tf.getBackend();
  await initEngine({ backend });
  try {
    return await fn();
  } finally {
    if (prev && prev !== backend) await tf.setBackend(prev);
  }
}
