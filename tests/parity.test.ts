/**
 * Parity (DDP `_test_DDP_niter`): N = 1, 2, 3 real worker processes must reach the same parameters
 * after k steps as ONE process that accumulates gradients over the same sub-batches.
 *
 * "Same sub-batches" matters: each worker's BatchNorm normalizes with its own slice's statistics
 * (DDP without SyncBN), so the reference computes each slice separately (from the same BN running
 * stats), takes the sample-weighted mean of the slice gradients and of the post-forward running
 * stats, and steps the optimizer once. Slices are core's `EpochSampler.nextShards` with equal
 * weights, as the coordinator assigns them.
 *
 * Tolerance: the only difference allowed is float32 summation order in the all-reduce (the
 * coordinator adds worker gradients in arrival order). Per element, |a-b|/(1+|a|) ≤ 1e-5 after
 * 3 SGD steps.
 */
import { describe, expect, it } from 'vitest';
import {
  EpochSampler,
  assembleBatch,
  createOptimizer,
  lrAt,
  readCifar10,
  resolveConfig,
} from '@svd-train/core';
import { buildResNet, computeGradients, getBuffers, getParameters, initEngine, setBuffers, setParameters } from '@svd-train/layers';
import { configFile, finalCheckpoint, freePort, maxDiff, requireBuild, startCoordinator, syntheticData, tempDir, tinyRunFlags } from './harness.js';

const PARITY_TOL = 1e-5;
const LIMIT_TRAIN = 36;
const BATCH = 12; // divisible by 1, 2 and 3: equal slices
const FILE_CONFIG = { optimizer: 'sgd', schedule: 'constant', lr: 0.05, momentum: 0.9, nesterov: true, weightDecay: 0, lambdaO: 1, lambdaS: 0.07 };

type T = { name: string; shape: number[]; data: Float32Array };

async function reference(data: string, workers: number): Promise<{ params: T[]; buffers: T[] }> {
  const cfg = resolveConfig({ data, batch: BATCH, epochs: 1, limitTrain: LIMIT_TRAIN, model: 'resnet20' }, FILE_CONFIG, {});
  await initEngine({ backend: 'wasm' });
  const model = buildResNet({ depth: 20, svd: cfg.svd, decomposition: cfg.decomposition, numClasses: 10, forward: cfg.forward, seed: cfg.seed });
  const split = readCifar10(data, 'train');
  const names = getParameters(model).map((p) => p.name);
  const opt = createOptimizer(cfg, names);
  const sampler = new EpochSampler({ size: LIMIT_TRAIN, batch: BATCH, seed: cfg.seed });
  const steps = sampler.stepsPerEpoch * cfg.epochs;
  for (let k = 0; k < steps; k++) {
    const b = sampler.nextShards(Array.from({ length: workers }, () => 1));
    const start = getBuffers(model);
    const grads = new Map<string, Float32Array>();
    let bufs: T[] | null = null;
    for (const shard of b.shards) {
      const w = shard.length / b.indices.length;
      setBuffers(model, start);
      const { x, y } = assembleBatch(split, shard, { seed: cfg.seed, epoch: b.epoch, augment: cfg.augment });
      const r = computeGradients(model, x, y, { lambdaO: cfg.lambdaO, lambdaS: cfg.lambdaS, sparsity: cfg.sparsity });
      for (const g of r.grads) {
        const acc = grads.get(g.name) ?? new Float32Array(g.data.length);
        for (let i = 0; i < acc.length; i++) acc[i] += w * g.data[i]!;
        grads.set(g.name, acc);
      }
      if (!bufs) bufs = r.buffers.map((t) => ({ ...t, data: t.data.map((v) => v * w) }));
      else bufs.forEach((t, j) => t.data.forEach((_, i) => (t.data[i] += w * r.buffers[j]!.data[i]!)));
    }
    const params = new Map(getParameters(model).map((p) => [p.name, Float32Array.from(p.data)]));
    opt.step(params, grads, lrAt(cfg, k, sampler.stepsPerEpoch));
    setParameters(model, getParameters(model).map((p) => ({ ...p, data: params.get(p.name)! })));
    setBuffers(model, bufs!);
  }
  return { params: getParameters(model), buffers: getBuffers(model) };
}

describe('parity of N workers with one process', () => {
  const data = syntheticData(40, 12);
  for (const n of [1, 2, 3]) {
    it(`N=${n} workers == single process over the same ${n} sub-batches (3 steps, tol ${PARITY_TOL})`, async () => {
      requireBuild();
      const out = tempDir();
      const port = await freePort();
      const coord = startCoordinator([
        ...tinyRunFlags({ data, out, port, epochs: 1, limitTrain: LIMIT_TRAIN, batch: BATCH }),
        '--config', configFile(FILE_CONFIG),
        '--spawn', String(n),
        '--min-workers', String(n),
      ]);
      expect(await coord.exited, coord.output().slice(-3000)).toBe(0);
      const dist = await finalCheckpoint(out);
      const ref = await reference(data, n);
      const p = maxDiff(ref.params, dist.params);
      expect(p.diff, `params: worst at ${p.where}`).toBeLessThanOrEqual(PARITY_TOL);
      const b = maxDiff(ref.buffers, dist.buffers);
      expect(b.diff, `BN buffers: worst at ${b.where}`).toBeLessThanOrEqual(PARITY_TOL);
    });
  }
});
