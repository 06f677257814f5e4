import type * as tf from '@tensorflow/tfjs';
import { getBuffers, getParameters, setBuffers, setParameters } from '../parameter-names.js';
import { pruneByEnergy } from '../prune.js';
import { buildResNet } from '../resnet.js';
import { seededUniform } from './random.js';

/**
 * A small ResNet-20 (16×16 images, so the cpu reference stays quick) pruned to low ranks, with
 * batch-norm statistics and affine parameters far from their defaults, so that a wrong scale,
 * shift, shortcut or ReLU in a fused op shows in the output.
 */
export function prunedTestModel(opts: { fuseBatchNorm?: boolean; decomposition?: 'channel' | 'spatial' } = {}): tf.LayersModel {
  const base = buildResNet({ depth: 20, svd: true, decomposition: 'channel', seed: 5, inputShape: [16, 16, 3], ...opts });
  setParameters(
    base,
    getParameters(base).map((p, i) =>
      p.name.endsWith('.s')
        ? { ...p, data: Float32Array.from(p.data, (_, j) => Math.exp((-6 * j) / p.data.length)) }
        : /\.(weight|bias)$/.test(p.name) && !p.name.startsWith('fc')
          ? { ...p, data: seededUniform(p.data.length, 100 + i, 0.5, p.name.endsWith('weight') ? 1 : 0) }
          : p,
    ),
  );
  setBuffers(
    base,
    getBuffers(base).map((b, i) => ({ ...b, data: b.name.endsWith('running_var') ? seededUniform(b.data.length, 200 + i, 0.5, 1) : seededUniform(b.data.length, 300 + i, 0.2) })),
  );
  const pruned = pruneByEnergy(base, 0.02).model;
  base.dispose();
  return pruned;
}

/**
 * A training batch for `prunedTestModel` (16×16×3 images): images from `seed`, labels i·step mod 10,
 * and both regularizers (Hoyer sparsity at λ_s).
 */
export function testTrainingBatch(batch: number, seed: number, step: number, lambdaS: number) {
  return {
    x: seededUniform(batch * 16 * 16 * 3, seed, 2, -1),
    y: Int32Array.from({ length: batch }, (_, i) => (i * step) % 10),
    reg: { lambdaO: 1, lambdaS, sparsity: 'hoyer' as const },
  };
}
