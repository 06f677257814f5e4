// What a project that installed the PACKED @svd-train/core, /layers and /native from npm (and its own
// @tensorflow/tfjs) writes first. packed.test.ts copies this file into a scratch project outside the
// workspace and runs it with plain node: no source condition, no tsx, no workspace links. Prints one
// line, `RESULT {json}`, that the test checks.
import * as tf from '@tensorflow/tfjs';
import { resolveConfig } from '@svd-train/core';
import * as layers from '@svd-train/layers';

const { SVDBatchNorm, SVDConv2D, buildResNet, computeGradients, countParams, initEngine, namedParameters } = layers;

// auto: the optional tfjs-node(-gpu) peers are not installed and the native addon was not built
// (npm install --ignore-scripts), so this must fall through to wasm, found next to the consumer's tfjs.
const engine = await initEngine({ backend: 'auto' });

// One layer: 3 -> 4 channels, 3x3, rank 2: U 4x2 + s 2 + V 27x2 = 64 weights.
const conv = new SVDConv2D({ filters: 4, kernelSize: 3, padding: 1, rank: 2, seed: 1 });
const x1 = tf.randomNormal([2, 8, 8, 3]);
const y1 = conv.apply(x1);

// A narrow SVD-ResNet-20 and one training step's gradients on 4 images, NHWC [4, 32, 32, 3].
const model = buildResNet({ depth: 20, svd: true, decomposition: 'channel', numClasses: 10, widths: [4, 8, 16], seed: 0 });
const n = 4;
const x = Float32Array.from({ length: n * 32 * 32 * 3 }, (_, i) => Math.sin(i));
const labels = Int32Array.from({ length: n }, (_, i) => i % 10);
const g = computeGradients(model, x, labels, resolveConfig({}));

console.log(
  'RESULT ' +
    JSON.stringify({
      backend: engine.backend,
      reason: engine.reason,
      tfjsVersion: tf.version.tfjs,
      convShape: y1.shape,
      convParams: countParams(conv),
      batchNormIsLayer: new SVDBatchNorm({}) instanceof tf.layers.Layer,
      params: countParams(model),
      parameterNames: namedParameters(model).length,
      grads: g.grads.length,
      gradsFinite: g.grads.every((t) => t.data.every(Number.isFinite)),
      total: g.total,
      ce: g.ce,
      // Internal helpers of svd-init must not leak into the public API.
      leakedInternals: ['svdInit', 'matrixFromFactors', 'svdOfMatrix', 'seededNormal'].filter((k) => k in layers),
    }),
);
