/**
 * `svd-coord decompose CKPT`: a trained plain checkpoint (svd: false) as the SVD model of the same
 * architecture. Every conv and dense weight becomes its exact SVD at full rank, so the new model
 * computes the plain one's function (checked on a batch of images before writing). `start --from`
 * then trains it with the method (orthogonality, sparsity, prune, fine-tune) from trained weights
 * instead of from a random init.
 */
import { dirname, join } from 'node:path';
import type { Command } from 'commander';
import * as tf from '@tensorflow/tfjs';
import { archLabel, DECOMPOSITIONS, type Checkpoint, type Decomposition, type RunConfig } from '@svd-train/core';
import { applyInference, buildResNetForConfig, decomposeInto } from '@svd-train/layers';
import { usageError } from '../cli-errors.js';
import type { CliIo, SetExitCode } from '../cli-io.js';
import { checkpointArgument, modelFromCheckpoint, refuseToReplaceSource, writeDerivedCheckpoint } from '../checkpoint-model.js';

interface DecomposeOptions {
  out?: string;
  decomposition?: string;
  backend?: string;
}

/** Largest |logit difference| allowed between the plain model and its full-rank decomposition (float32 round-off is ~1e-5). */
const MAX_LOGIT_DIFF = 1e-3;

async function decomposeCommand(arg: string, opts: DecomposeOptions, io: CliIo): Promise<number> {
  const decomposition = (opts.decomposition ?? 'channel') as Decomposition;
  if (!DECOMPOSITIONS.includes(decomposition)) {
    throw usageError(`--decomposition ${JSON.stringify(opts.decomposition)}; expected one of ${DECOMPOSITIONS.join(', ')}. Fix: pass --decomposition channel (k×k conv to r channels, then 1×1) or spatial (k×1, then 1×k).`);
  }
  const path = checkpointArgument(arg, io);
  const out = opts.out ?? join(dirname(path), `decomposed-${decomposition}.svdckpt`);
  const { ckpt, model: plain, cfg } = await modelFromCheckpoint(path, opts.backend, io);
  try {
    if (cfg.svd) {
      throw usageError(
        `${path} holds an SVD model (${archLabel(cfg)}); decompose takes a plain one (svd: false). ` +
          'Fix: pass the checkpoint of a run trained with {"svd": false} in its --config; an SVD checkpoint goes to `svd-coord start --from` as it is.',
      );
    }
    refuseToReplaceSource(out, ckpt.step, [path]);
    const d = writeDecomposed(ckpt, plain, cfg, decomposition, out, path);
    io.out(`${archLabel(cfg)} → ${archLabel(d.cfg)}: ${d.layers} layers as their exact SVD at full rank (${d.singular} singular values); logits agree to ${d.diff.toExponential(1)} on 8 random images\n`);
    io.out(`decomposed checkpoint written to ${d.path}\nnext: svd-coord start --from ${d.path} --decomposition ${decomposition} …  (train with the method from these weights)\n`);
  } finally {
    plain.dispose();
  }
  return 0;
}

/**
 * Writes the plain model `plain` (the weights of checkpoint `ckpt`, config `cfg`, read from
 * `sourcePath`) as the SVD model of the same architecture, every weight its exact SVD at full
 * rank, to `out` (a folder or a .svdckpt file). Checks first that both models' eval-mode logits
 * agree on a batch of images, and writes nothing if they do not. Used by `decompose` and by
 * `start --plain-epochs`.
 */
export function writeDecomposed(
  ckpt: Checkpoint,
  plain: tf.LayersModel,
  cfg: RunConfig,
  decomposition: Decomposition,
  out: string,
  sourcePath: string,
): { path: string; cfg: RunConfig; layers: number; singular: number; diff: number } {
  const svdCfg = { ...cfg, svd: true, decomposition, ranks: null };
  const svd = buildResNetForConfig(svdCfg);
  try {
    const report = decomposeInto(plain, svd);
    // The proof that nothing was lost: both models' logits on the same images, in inference mode.
    const diff = tf.tidy(() => {
      const x = tf.randomNormal([8, 32, 32, 3], 0, 1, 'float32', 1);
      return tf.max(tf.abs(tf.sub(applyInference(svd, x), applyInference(plain, x)))).dataSync()[0];
    });
    if (!(diff <= MAX_LOGIT_DIFF)) {
      throw new Error(`the decomposed model's logits differ from the plain model's by ${diff} (expected ≤ ${MAX_LOGIT_DIFF}); nothing was written. This is a bug: please report it with the checkpoint.`);
    }
    const path = writeDerivedCheckpoint(ckpt, svdCfg, svd, { decomposedFrom: sourcePath }, out, [sourcePath]);
    return { path, cfg: svdCfg, layers: report.length, singular: report.reduce((a, r) => a + r.rank, 0), diff };
  } finally {
    svd.dispose();
  }
}

/** Adds `decompose` to the `svd-coord` program. */
export function registerDecomposeCommand(program: Command, io: CliIo, setCode: SetExitCode): void {
  program
    .command('decompose')
    .description('a trained plain (svd: false) checkpoint as the SVD model of the same architecture, every weight as its exact SVD, to train from with start --from')
    .argument('<ckpt>', 'checkpoint file of a plain model, or its run folder (its latest checkpoint)')
    .option('--decomposition <kind>', 'channel | spatial (default channel)')
    .option('--out <path>', 'folder for the new checkpoint, or a file name ending in .svdckpt (default: decomposed-<kind>.svdckpt beside the input)')
    .option('--backend <name>', 'auto | tensorflow | native | wasm | cpu (default: the checkpoint run\'s)')
    .addHelpText('after', '\nExample:\n  svd-coord decompose runs/plain/checkpoints --out runs/plain-svd.svdckpt\n  svd-coord start --from runs/plain-svd.svdckpt --lambda-s 0.02 --lr 0.02 --epochs 10 --prune-macs 13.6e6 --finetune-epochs 10')
    .action(async (a: string, o: DecomposeOptions) => setCode(await decomposeCommand(a, o, io)));
}
