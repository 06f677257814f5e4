/**
 * Library use without the coordinator: train an SVD-ResNet-20 in this process for a few steps with
 * the same pieces the distributed run uses, then prune it. The README's "Library use" section is
 * this file. Run: `node --conditions=source --import tsx examples/train-in-process.ts [DATA_DIR]`.
 */
import { EpochSampler, assembleBatch, createOptimizer, lrAt, momentumAt, readCifar10, resolveConfig, writeSyntheticCifar10 } from '@svd-train/core';
import { buildResNet, computeGradients, getParameters, initEngine, noDecayParameterNames, pruneByEnergy, setParameters } from '@svd-train/layers';
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';

// Real CIFAR-10 if a folder is given, else a small synthetic set in the same binary format.
let dataDir = process.argv[2];
if (!dataDir) {
  dataDir = join(mkdtempSync(join(tmpdir(), 'svd-example-')), 'cifar');
  writeSyntheticCifar10(dataDir, { train: 640, test: 100, seed: 1 });
}
const cfg = resolveConfig({ epochs: 1, limitTrain: 512, batch: 64 });
console.log(await initEngine({ backend: 'auto' })); // which backend, and why

const train = readCifar10(dataDir, 'train');
const model = buildResNet({ depth: 20, svd: true, decomposition: 'channel', seed: cfg.seed });
const names = getParameters(model).map((t) => t.name);
const opt = createOptimizer(cfg, names, { noDecay: noDecayParameterNames(model) });
const sampler = new EpochSampler({ size: cfg.limitTrain!, batch: cfg.batch, seed: cfg.seed });

for (let step = 0; step < sampler.stepsPerEpoch; step++) {
  const { indices, epoch } = sampler.nextBatch();
  const { x, y } = assembleBatch(train, indices, { seed: cfg.seed, epoch, augment: cfg.augment });
  const g = computeGradients(model, x, y, cfg); // cross-entropy + λ_o·orth + λ_s·sparsity
  const params = getParameters(model);
  const byName = new Map(params.map((t) => [t.name, t.data]));
  opt.step(byName, new Map(g.grads.map((t) => [t.name, t.data])), lrAt(cfg, step, sampler.stepsPerEpoch), momentumAt(cfg, step, sampler.stepsPerEpoch));
  setParameters(model, params);
  console.log(`step ${step}: loss ${g.total.toFixed(3)} (ce ${g.ce.toFixed(3)}, orth ${g.orth.toFixed(4)}, sparsity ${g.sparsity.toFixed(1)})`);
}

const { report } = pruneByEnergy(model, 0.05); // physically smaller U, s, V; each layer in its cheaper form
const before = report.reduce((a, r) => a + r.macsBefore, 0);
const after = report.reduce((a, r) => a + r.macsAfter, 0);
console.log(`pruned at energy 0.05: ${(before / 1e6).toFixed(1)} -> ${(after / 1e6).toFixed(1)} M MACs per image (FLOPs = 2·MACs)`);
