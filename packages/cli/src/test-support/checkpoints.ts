/** Checkpoints for the CLI's tests, made as start or prune makes them. */
import { join } from 'node:path';
import { configHash, saveCheckpoint, serializeConfig, type Checkpoint, type RunConfig } from '@svd-train/core';
import { buildResNetForConfig, getBuffers, getParameters, pruneByEnergy, svdRanks } from '@svd-train/layers';
import type { Model } from '../checkpoint-model.js';

/** The checkpoint of `model` (built from `cfg`) at step 7, as the training phase writes it. */
export function checkpointFor(cfg: RunConfig, model: Model, optimizerStep = 0): Checkpoint {
  return {
    version: 1,
    config: serializeConfig(cfg),
    configHash: configHash(cfg),
    step: 7,
    epoch: 1,
    params: getParameters(model),
    buffers: getBuffers(model),
    optimizer: { kind: 'sgd', step: optimizerStep, slots: {} },
    sampler: { size: 8, batch: 4, seed: 0, dropLast: false, epoch: 1, position: 0, step: 7 },
  };
}

/** A checkpoint in `dir`/`name` of the model `cfg` describes (optionally pruned at energy e); returns its path. */
export function checkpointOf(dir: string, cfg: RunConfig, name: string, e = 0): string {
  const model = buildResNetForConfig(cfg);
  const pruned = e > 0 ? pruneByEnergy(model, e).model : model;
  const path = saveCheckpoint(join(dir, name), checkpointFor({ ...cfg, ranks: e > 0 ? svdRanks(pruned) : null }, pruned));
  if (pruned !== model) pruned.dispose();
  model.dispose();
  return path;
}
