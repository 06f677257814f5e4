/**
 * Registers our kernels on the wasm backend. Called by `initEngine` after the wasm package loads;
 * idempotent because tfjs throws on a duplicate registration (and a future tfjs may ship its own
 * kernel, which we then keep).
 */
import * as tf from '@tensorflow/tfjs';
import { conv2dBackpropFilterWasmConfig } from './conv2d-backprop-filter.js';

export function registerWasmKernels(): void {
  for (const cfg of [conv2dBackpropFilterWasmConfig]) {
    if (tf.getKernel(cfg.kernelName, cfg.backendName) == null) tf.registerKernel(cfg);
  }
}
