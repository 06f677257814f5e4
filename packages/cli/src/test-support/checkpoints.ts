/** Checkpoints for the CLI's tests, written as start or prune writes them. */
import { join } from 'node:path';
import { configHash, saveCheckpoint, serializeConfig, type RunConfig } from '@svd-train/core';
import { buildResNetForConfig, getBuffers, getParameters, pruneByEnergy, svdRanks } from '@svd-train/layers';

/** A checkpoint in `dir`/`name` of the model `cfg` describes (optionally pruned at energy e); returns its path. */
export function checkpointOf(dir: string, cfg: RunConfig, name: string, e = 0): string {
  const model = buildResNetForConfig(cfg);
  const pruned = e > 0 ? pruneByEnergy(model, e).model : model;
  const ranked = { ...cfg, ranks: e > 0 ? svdRanks(pruned) : null };
  const path = saveCheckpoint(join(dir, name), {
    version: 1,
    config: serializeConfig(ranked),
    configHash: configHash(ranked),
    step: 7,
    epoch: 1,
    params: getParameters(pruned),
    buffers: getBuffers(pruned),
    optimizer: { kind: 'sgd', step: 0, slots: {} },
    sampler: { size: 8, batch: 4, seed: 0, dropLast: false, epoch: 1, position: 0, step: 7 },
  });
  if (pruned !== model) pruned.dispose();
  model.dispose();
  return path;
}
