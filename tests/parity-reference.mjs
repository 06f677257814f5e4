// The single-process reference of parity.test.ts, run as a plain Node process on the BUILT packages,
// exactly like a worker (same module instances, same wasm set-up), so the only differences left
// are the ones the test is about. Usage: node tests/parity-reference.mjs DATA WORKERS CONFIG_JSON OUT_FILE [ENGINE]
// (ENGINE: wasm, the default, or native).
import { writeFileSync } from 'node:fs';
import { EpochSampler, assembleBatch, createOptimizer, lrAt, readCifar10, resolveConfig } from '@svd-train/core';
import { buildResNet, computeGradients, getBuffers, getParameters, initEngine, setBuffers, setParameters } from '@svd-train/layers';

const [data, workersArg, configJson, outFile, engine = 'wasm'] = process.argv.slice(2);
const workers = Number(workersArg);
const cfg = resolveConfig({ data }, JSON.parse(configJson), {});
await initEngine({ backend: engine });
const model = buildResNet({ depth: 20, svd: cfg.svd, decomposition: cfg.decomposition, numClasses: 10, forward: cfg.forward, seed: cfg.seed });
const split = readCifar10(data, 'train');
const opt = createOptimizer(cfg, getParameters(model).map((p) => p.name));
const sampler = new EpochSampler({ size: Math.min(split.count, cfg.limitTrain ?? split.count), batch: cfg.batch, seed: cfg.seed });
const steps = sampler.stepsPerEpoch * cfg.epochs;
for (let k = 0; k < steps; k++) {
  const b = sampler.nextShards(Array.from({ length: workers }, () => 1));
  const start = getBuffers(model);
  // The same arithmetic as the all-reduce: acc += n_w·g_w in slice order in float64, then
  // acc·(1/Σn_w) rounded to float32 once.
  const sums = new Map();
  let bufSums = null;
  let bufSpecs = null;
  for (const shard of b.shards) {
    const w = shard.length;
    setBuffers(model, start);
    const { x, y } = assembleBatch(split, shard, { seed: cfg.seed, epoch: b.epoch, augment: cfg.augment });
    const r = computeGradients(model, x, y, { lambdaO: cfg.lambdaO, lambdaS: cfg.lambdaS, sparsity: cfg.sparsity });
    for (const g of r.grads) {
      const acc = sums.get(g.name) ?? new Float64Array(g.data.length);
      for (let i = 0; i < acc.length; i++) acc[i] += w * g.data[i];
      sums.set(g.name, acc);
    }
    bufSums ??= r.buffers.map((t) => new Float64Array(t.data.length));
    bufSpecs ??= r.buffers;
    bufSums.forEach((acc, j) => {
      for (let i = 0; i < acc.length; i++) acc[i] += w * r.buffers[j].data[i];
    });
  }
  const inv = 1 / b.indices.length;
  const grads = new Map([...sums].map(([name, acc]) => [name, Float32Array.from(acc, (v) => v * inv)]));
  const bufs = bufSpecs.map((t, j) => ({ name: t.name, shape: t.shape, data: Float32Array.from(bufSums[j], (v) => v * inv) }));
  const params = new Map(getParameters(model).map((p) => [p.name, Float32Array.from(p.data)]));
  opt.step(params, grads, lrAt(cfg, k, sampler.stepsPerEpoch));
  setParameters(model, getParameters(model).map((p) => ({ ...p, data: params.get(p.name) })));
  setBuffers(model, bufs);
}
const dump = (ts) => ts.map((t) => ({ name: t.name, shape: t.shape, data: Array.from(t.data) }));
writeFileSync(outFile, JSON.stringify({ steps, params: dump(getParameters(model)), buffers: dump(getBuffers(model)) }));
