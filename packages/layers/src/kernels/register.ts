/**
 * Registers our kernels on the wasm backend. Called by `initEngine` after the wasm package loads.
 * Idempotent: a kernel already registered with our function is left alone.
 */
import * as tf from '@tensorflow/tfjs';
import { conv2dBackpropFilterWasmConfig } from './conv2d-backprop-filter.js';
import { conv2dBackpropInputWasmConfig } from './conv2d-backprop-input.js';
import { columnSumWasmConfig } from './column-sum.js';
import { identityWasmConfig } from './identity.js';
import { runningStatsWasmConfig } from './running-stats.js';
import { scalePermuteGradConfig, scalePermuteWasmConfigs } from './scale-permute.js';
import { sliceWasmConfig } from './slice.js';

/** Kernels wasm lacks entirely, and kernels whose stock wasm version we replace for speed. */
const ADDED = [conv2dBackpropFilterWasmConfig, columnSumWasmConfig, runningStatsWasmConfig, ...scalePermuteWasmConfigs];
const REPLACED = [conv2dBackpropInputWasmConfig, identityWasmConfig];

export function registerWasmKernels(): void {
  for (const cfg of ADDED) {
    if (tf.getKernel(cfg.kernelName, cfg.backendName) == null) tf.registerKernel(cfg);
  }
  if (tf.getGradient(scalePermuteGradConfig.kernelName) == null) tf.registerGradient(scalePermuteGradConfig);
  for (const cfg of [...REPLACED, sliceWasmConfig()]) {
    const cur = tf.getKernel(cfg.kernelName, cfg.backendName);
    if (cur?.kernelFunc === cfg.kernelFunc) continue;
    // unregister first: registering over an existing kernel logs a warning.
    if (cur) tf.unregisterKernel(cfg.kernelName, cfg.backendName);
    tf.registerKernel(cfg);
  }
}
