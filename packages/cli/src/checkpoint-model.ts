/**
 * A checkpoint and the model it holds, for the commands that work on checkpoints (eval, prune,
 * export, report) and for the pipeline after training: which file a path means, the per-layer
 * ranks a checkpoint was pruned to, its model with its weights, and writing a pruned one.
 */
import { existsSync, mkdirSync, mkdtempSync, renameSync, rmSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import {
  checkpointFileName,
  configHash,
  latestCheckpoint,
  loadCheckpoint,
  parseConfig,
  resolveConfig,
  saveCheckpoint,
  serializeConfig,
  type Checkpoint,
  type RunConfig,
  type SplitLike,
} from '@svd-train/core';
import {
  BN_RECALIBRATION_IMAGES,
  buildResNetForConfig,
  getBuffers,
  getParameters,
  initEngine,
  recalibrateBatchNorm,
  setWeights,
  svdRanks,
  type PruneLayerReport,
} from '@svd-train/layers';
import { usageError } from './cli-errors.js';
import type { CliIo } from './cli-io.js';

export type Model = ReturnType<typeof buildResNetForConfig>;

/**
 * Per-layer ranks of a checkpoint: those of its config (`svd-coord prune` writes them), else, for
 * pruned checkpoints written before configs had ranks, read off the `….s` shapes when they differ
 * from the full-rank model of `cfg`. null when the checkpoint is full rank.
 */
export function checkpointRanks(ckpt: Checkpoint, cfg: RunConfig): Record<string, number> | null {
  const own = parseConfig(ckpt.config).ranks;
  if (own !== null) return own;
  const fromShapes: Record<string, number> = {};
  for (const t of ckpt.params) if (t.name.endsWith('.s') && t.shape.length === 1) fromShapes[t.name.slice(0, -2)] = t.shape[0]!;
  if (Object.keys(fromShapes).length === 0) return null;
  const full = buildResNetForConfig({ ...cfg, ranks: null });
  const fullRanks = svdRanks(full);
  full.dispose();
  return Object.entries(fromShapes).some(([m, r]) => fullRanks[m] !== r) ? fromShapes : null;
}

/** Reads a checkpoint; a path that does not exist is the user's mistake (exit 2), not a corrupt file. */
export function loadCheckpointFile(path: string): Checkpoint {
  if (!existsSync(path)) throw usageError(`Checkpoint ${JSON.stringify(path)} does not exist. Fix: pass a file from runs/NAME/checkpoints/.`);
  return loadCheckpoint(path);
}

/** Loads a checkpoint into its model, on `backend` (default: the backend its run was configured with). */
export async function modelFromCheckpoint(path: string, backend?: string, io?: CliIo): Promise<{ ckpt: Checkpoint; model: Model; cfg: RunConfig }> {
  return modelOfCheckpoint(loadCheckpointFile(path), backend, io);
}

/** modelFromCheckpoint for a checkpoint already read (e.g. by `average`, which reads them all). */
export async function modelOfCheckpoint(ckpt: Checkpoint, backend?: string, io?: CliIo): Promise<{ ckpt: Checkpoint; model: Model; cfg: RunConfig }> {
  let cfg = resolveConfig(backend ? { backend } : {}, ckpt.config, {});
  const engine = await initEngine({ backend: cfg.backend, resolveFrom: import.meta.url });
  io?.err(`backend ${engine.reason}\n`);
  cfg = { ...cfg, ranks: checkpointRanks(ckpt, cfg) };
  const model = buildResNetForConfig(cfg);
  setWeights(model, ckpt);
  return { ckpt, model, cfg };
}

/**
 * The checkpoint file `eval` (and the other checkpoint commands) should read: the file itself, or
 * for a run folder (or its checkpoints/ folder) the latest valid checkpoint in it, said out loud.
 */
export function checkpointArgument(path: string, io: CliIo): string {
  if (!existsSync(path) || !statSync(path).isDirectory()) return path;
  for (const dir of [join(path, 'checkpoints'), path]) {
    if (!existsSync(dir)) continue;
    const latest = latestCheckpoint(dir, { onWarning: (m) => io.err(`warning: ${m}\n`) });
    if (latest) {
      io.err(`${path} is a folder: using its latest checkpoint, ${latest.path} (step ${latest.checkpoint.step})\n`);
      return latest.path;
    }
  }
  throw usageError(
    `${JSON.stringify(path)} is a folder without checkpoints; expected a checkpoint file (ckpt-….svdckpt) or a run folder holding checkpoints/. ` +
      'Fix: pass e.g. runs/NAME/checkpoints/ckpt-0000000100.svdckpt, or the run folder of a run that has written a checkpoint.',
  );
}

/**
 * Throws (exit 2) when writing a derived checkpoint of `step` to `out` (a .svdckpt file, or a folder
 * where it gets the name ckpt-<step>.svdckpt) would replace one of `sources`. Commands call it before
 * their work, so that the mistake costs nothing; writeDerivedCheckpoint calls it again.
 */
export function refuseToReplaceSource(out: string, step: number, sources: readonly string[]): void {
  const target = out.endsWith('.svdckpt') ? resolve(out) : resolve(out, checkpointFileName(step));
  if (sources.some((s) => resolve(s) === target)) {
    throw usageError(`--out ${JSON.stringify(out)} would replace ${target}, a checkpoint this one is made from; expected another file or folder. Fix: pass --out NAME.svdckpt (or a folder without that checkpoint).`);
  }
}

/**
 * Writes `model` as a checkpoint derived from `ckpt` (pruned, averaged). The config carries the
 * model's ranks, so its hash and every model built from it (start --from, eval, workers) have its
 * shapes. The optimizer state is dropped: its momentum buffers belong to other weights (and, pruned,
 * other shapes), and fine-tuning starts a fresh optimizer anyway. `out` is a folder (the file gets
 * the usual ckpt-<step> name) or, ending in .svdckpt, the file itself. `metrics` are added to the
 * source's. Refuses (exit 2) to replace any of `sources`, the checkpoints it was made from: a folder
 * --out that holds the source would otherwise overwrite it, since the derived one keeps its step.
 * Returns the written path.
 */
export function writeDerivedCheckpoint(ckpt: Checkpoint, cfg: RunConfig, model: Model, metrics: Record<string, unknown>, out: string, sources: readonly string[]): string {
  refuseToReplaceSource(out, ckpt.step, sources);
  const outFile = out.endsWith('.svdckpt') ? resolve(out) : null;
  if (outFile) mkdirSync(dirname(outFile), { recursive: true });
  const outDir = outFile ? mkdtempSync(join(dirname(outFile), '.derived-')) : out;
  // The pipeline keys describe the run that made it, not this model: a later start --from must not re-prune.
  const derivedCfg: RunConfig = { ...cfg, ranks: svdRanks(model), pruneEnergy: null, finetuneEpochs: 0, finetuneAverage: 0 };
  const written = saveCheckpoint(outDir, {
    ...ckpt,
    config: serializeConfig(derivedCfg),
    configHash: configHash(derivedCfg),
    params: getParameters(model),
    buffers: getBuffers(model),
    optimizer: { kind: ckpt.optimizer.kind, step: 0, slots: {} },
    metrics: { ...(ckpt.metrics ?? {}), ...metrics },
  });
  if (!outFile) return written;
  // Written complete in a private folder first, then renamed: never a half file at --out, and
  // never a clash with a checkpoint of the same step already in the target folder.
  renameSync(written, outFile);
  rmSync(outDir, { recursive: true, force: true });
  return outFile;
}

/** writeDerivedCheckpoint for `svd-coord prune` and the pipeline: the pruned model, with the energy it was pruned at. */
export function writePrunedCheckpoint(ckpt: Checkpoint, cfg: RunConfig, pruned: Model, energy: number, out: string, source: string): string {
  return writeDerivedCheckpoint(ckpt, cfg, pruned, { prunedEnergy: energy }, out, [source]);
}

/**
 * Re-estimates a model's batch-norm statistics (recalibrateBatchNorm) on `images` (default
 * BN_RECALIBRATION_IMAGES) training images spread evenly over the first `count` of `train`, in
 * chunks of `chunk`, augmented as the run trained (its `augment` and `cutout`); the same images
 * for every call. Returns the images used.
 */
export function recalibrateOnTrain(model: Model, train: SplitLike, count: number, chunk: number, aug: Pick<RunConfig, 'augment' | 'cutout'>, images = BN_RECALIBRATION_IMAGES): number {
  const n = Math.min(images, count);
  return recalibrateBatchNorm(model, train, Int32Array.from({ length: n }, (_, i) => Math.floor((i * count) / n)), chunk, { augment: aug.augment, cutout: aug.cutout });
}

/**
 * recalibrateOnTrain for a pruned model. Does nothing when the prune removed no rank, so a no-op
 * prune stays one in every number. Returns the images used (0: none).
 */
export function recalibratePruned(pruned: Model, report: readonly PruneLayerReport[], train: SplitLike, count: number, chunk: number, aug: Pick<RunConfig, 'augment' | 'cutout'>): number {
  return removesRank(report) ? recalibrateOnTrain(pruned, train, count, chunk, aug) : 0;
}

/** Whether a prune removed any singular value (a prune at energy 0, or too small an energy, removes none). */
export function removesRank(report: readonly PruneLayerReport[]): boolean {
  return report.some((r) => r.rankAfter < r.rankBefore);
}
