/**
 * The phase before the training, `svd-coord start --plain-epochs N`: the plain ResNet of the same
 * depth (one conv per conv, no SVD, no regularizer) trained for N epochs in <out>/plain, then
 * written as its exact full-rank SVD (what `svd-coord decompose` does) to
 * <out>/plain/decomposed-<kind>.svdckpt, from which the method's training starts. Where the run
 * distills and names no teacher, the plain model teaches. So the whole recipe that starts from a
 * trained plain model (train plain, decompose, train with the method, prune, fine-tune) is one
 * command, and one --resume continues it wherever it stopped.
 */
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { DEFAULTS, SvdTrainError, configHash, latestCheckpoint, loadCheckpoint, readCifar10, type RunConfig } from '@svd-train/core';
import { buildResNetForConfig, setWeights } from '@svd-train/layers';
import { usageError } from './cli-errors.js';
import { writeDecomposed } from './commands/decompose.js';
import { testPoint } from './prune-pipeline.js';
import type { PretrainedPoint } from './report-pipeline.js';
import { resumesIn, trainPhase, withoutDistillation, type StartContext } from './train-phase.js';

/**
 * The plain phase's run config: the run's, with svd off, for plainEpochs at peak lr plainLr
 * (default: the default recipe's lr, not --lr, which is the method's), without distillation,
 * pruning or fine-tuning, in `plainDir`. It resumes where it has a checkpoint to resume.
 * The fields that shape only an SVD model (the decomposition, the forward, λ_o and the sparsity
 * term) are the defaults', so one plain model's hash, and its checkpoints, serve runs that differ
 * only in them: e.g. a spatial run resumes the plain phase of a channel run copied into its folder.
 */
export function plainConfig(cfg: RunConfig, plainDir: string): RunConfig {
  return {
    ...withoutDistillation(cfg),
    svd: false,
    decomposition: DEFAULTS.decomposition,
    forward: DEFAULTS.forward,
    lambdaO: DEFAULTS.lambdaO,
    sparsity: DEFAULTS.sparsity,
    sparsityStart: DEFAULTS.sparsityStart,
    sparsityEnd: DEFAULTS.sparsityEnd,
    ranks: null,
    from: null,
    epochs: cfg.plainEpochs,
    lr: cfg.plainLr ?? DEFAULTS.lr,
    lambdaS: 0,
    plainEpochs: 0,
    plainLr: null,
    pruneEnergy: null,
    pruneMacs: null,
    finetuneEpochs: 0,
    finetuneLr: null,
    finetuneLambdaO: null,
    finetuneWeightDecay: null,
    finetuneAverage: 0,
    out: plainDir,
    resume: resumesIn(cfg, plainDir),
  };
}

/**
 * The training phase's config after the plain phase: from the decomposed plain model, taught by
 * the plain model (`plainPath`) where the run distills and names no teacher. plainEpochs goes back
 * to 0: the phase is done, and a config with both it and `from` is refused (workers parse it too).
 * A resumed run resumes its training once that has a checkpoint; before, the training starts afresh.
 */
export function afterPlainConfig(cfg: RunConfig, decomposedPath: string, plainPath: string, outDir: string): RunConfig {
  return {
    ...cfg,
    from: decomposedPath,
    plainEpochs: 0,
    plainLr: null,
    teacher: cfg.distillAlpha > 0 && cfg.teacher === null ? plainPath : cfg.teacher,
    resume: resumesIn(cfg, outDir),
  };
}

/**
 * Runs the plain phase of `cfg` (plainEpochs > 0) in <outDir>/plain: trains the plain model (or
 * resumes it), evaluates it on the test split, and writes its exact SVD (unless a resumed run
 * finds it written from the same step). Returns the training phase's config and the plain model's
 * point for the pipeline's table.
 */
export async function plainPhase(cfg: RunConfig, outDir: string, ctx: StartContext): Promise<{ cfg: RunConfig; pretrained: PretrainedPoint }> {
  const { io } = ctx;
  const plainDir = join(outDir, 'plain');
  const pc = plainConfig(cfg, plainDir);
  if (!pc.resume && resumesIn(cfg, outDir)) {
    // Its training has checkpoints but there was no plain phase: that run started from elsewhere,
    // and a plain phase now would train for nothing and then not match its config.
    throw usageError(
      `--resume --plain-epochs ${cfg.plainEpochs}: the run in ${outDir} has training checkpoints but no plain phase (${join(plainDir, 'checkpoints')} is empty); it was started without --plain-epochs. Fix: resume it without --plain-epochs, or choose another --out for a run with a plain phase.`,
    );
  }
  io.err(`plain phase: the plain ${cfg.model} (no SVD) for ${pc.epochs} epoch(s) at peak lr ${pc.lr} in ${plainDir}; the method's training then starts from its exact SVD (${cfg.decomposition})\n`);
  const trained = await trainPhase(pc, ctx, {
    next: 'going on with its decomposition',
    freshFix: `delete ${plainDir} to train the plain model afresh`,
    nextRunFollows: true,
  });
  const ckptDir = join(plainDir, 'checkpoints');
  const last = latestCheckpoint(ckptDir, { configHash: configHash(trained), onWarning: (m) => io.err(`warning: ${m}\n`) });
  if (!last) {
    throw new SvdTrainError('CHECKPOINT_CORRUPT', `--plain-epochs: no valid checkpoint of the plain phase in ${ckptDir}; expected one at its end. Fix: rerun with --resume, or delete ${plainDir} to train it afresh.`);
  }
  const model = buildResNetForConfig(trained);
  try {
    setWeights(model, last.checkpoint);
    const test = readCifar10(ctx.dataDir, 'test');
    const n = Math.min(test.count, cfg.limitTest ?? test.count);
    const pretrained: PretrainedPoint = { ...testPoint(model, test, Int32Array.from({ length: n }, (_, i) => i), cfg.maxWorkerBatch, 0), epochs: pc.epochs, checkpoint: last.path };
    io.err(`plain phase: ${last.path} (step ${last.checkpoint.step}): test accuracy ${(100 * pretrained.acc).toFixed(2)}% on ${n} test images, ${(pretrained.macs / 1e6).toFixed(2)}M MACs per image\n`);
    const decomposedPath = join(plainDir, `decomposed-${cfg.decomposition}.svdckpt`);
    if (cfg.resume && existsSync(decomposedPath) && decomposedFrom(decomposedPath) === last.checkpoint.step) {
      io.err(`plain phase: --resume: reusing ${decomposedPath}, decomposed from this checkpoint\n`);
    } else {
      const d = writeDecomposed(last.checkpoint, model, trained, cfg.decomposition, decomposedPath, last.path);
      io.err(`plain phase: ${d.layers} layers written as their exact SVD at full rank (${d.singular} singular values; logits agree to ${d.diff.toExponential(1)}) to ${d.path}\n`);
    }
    return { cfg: afterPlainConfig(cfg, decomposedPath, last.path, outDir), pretrained };
  } finally {
    model.dispose();
  }
}

/** The step of the checkpoint a decomposed file was written from, or null where it cannot be read. */
function decomposedFrom(path: string): number | null {
  try {
    return loadCheckpoint(path).step;
  } catch {
    return null;
  }
}
