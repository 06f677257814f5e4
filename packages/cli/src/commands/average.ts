/**
 * `svd-coord average CKPT|RUN…`: stochastic weight averaging. The element-wise mean of the
 * parameters of several checkpoints of one model (typically the epoch checkpoints of a fine-tuning
 * at a constant learning rate), with its batch-norm statistics re-estimated on training images,
 * written as one checkpoint that eval, export, prune and start --from take like any other.
 */
import { existsSync, statSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import type { Command } from 'commander';
import { averageTensors, listCheckpoints, readCifar10 } from '@svd-train/core';
import { setWeights } from '@svd-train/layers';
import { parseNumberOption, usageError } from '../cli-errors.js';
import type { CliIo, SetExitCode } from '../cli-io.js';
import { loadCheckpointFile, modelOfCheckpoint, recalibrateOnTrain, refuseToReplaceSource, writeDerivedCheckpoint } from '../checkpoint-model.js';
import { runDataDir } from './eval.js';

/** Training images the averaged model's batch-norm statistics are re-estimated on by default: one pass over CIFAR-10's, as SWA's bn_update does. */
const SWA_BN_IMAGES = 50_000;

interface AverageOptions {
  out?: string;
  last?: string;
  bnImages?: string;
  backend?: string;
  data?: string;
  recalibrateBn: boolean;
}

/**
 * The checkpoint files the arguments name, oldest step first, each once: a file as it is, a run
 * folder (or its checkpoints/ folder) as the checkpoints in it, the newest `last` of them when given.
 */
export function checkpointsToAverage(args: readonly string[], last: number | null): string[] {
  const files: string[] = [];
  for (const arg of args) {
    if (!existsSync(arg)) throw usageError(`${JSON.stringify(arg)} does not exist; expected a checkpoint file or a run folder. Fix: pass files from runs/NAME/checkpoints/ or the run folder itself.`);
    if (!statSync(arg).isDirectory()) {
      files.push(resolve(arg));
      continue;
    }
    const dir = existsSync(join(arg, 'checkpoints')) ? join(arg, 'checkpoints') : arg;
    const found = listCheckpoints(dir); // newest first
    if (!found.length) throw usageError(`${JSON.stringify(arg)} holds no checkpoints (ckpt-….svdckpt); expected a run folder or a checkpoints/ folder. Fix: pass checkpoint files or the folder of a run that has written some.`);
    files.push(...found.slice(0, last ?? found.length).reverse().map((c) => resolve(c.path)));
  }
  return [...new Set(files)];
}

async function averageCommand(args: string[], opts: AverageOptions, io: CliIo): Promise<number> {
  const whole = (min: number) => (n: number) => Number.isInteger(n) && n >= min;
  const last = opts.last === undefined ? null : parseNumberOption('--last', 'a whole number of checkpoints >= 1 per folder, e.g. 10', whole(1))(opts.last);
  const bnImages = parseNumberOption('--bn-images', 'a whole number of training images >= 2, e.g. 4096', whole(2))(opts.bnImages ?? String(SWA_BN_IMAGES));
  const files = checkpointsToAverage(args, last);
  if (files.length < 2) {
    throw usageError(`averaging needs at least 2 checkpoints; ${args.join(' ')} name${files.length === 1 ? 's only ' + files[0] : ' none'}. Fix: pass several checkpoint files or a run folder holding several (and --last >= 2).`);
  }
  const inputs = files.map((path) => {
    const c = loadCheckpointFile(path);
    io.out(`  ${path}: step ${c.step}, epoch ${c.epoch}\n`);
    return { path, step: c.step, params: c.params, buffers: c.buffers, checkpoint: c };
  });
  // The model and config are the newest checkpoint's; the others' tensors must match it (averageTensors checks).
  const newest = inputs.reduce((a, b) => (b.step >= a.step ? b : a));
  const out = opts.out ?? join(dirname(newest.path), `averaged-${files.length}.svdckpt`);
  refuseToReplaceSource(out, newest.step, files);
  const { ckpt, model, cfg } = await modelOfCheckpoint(newest.checkpoint, opts.backend, io);
  const mean = averageTensors(inputs);
  setWeights(model, mean);
  io.out(`averaged the parameters of ${files.length} checkpoints\n`);
  let recalibrated = 0;
  if (opts.recalibrateBn) {
    // The mean of the running statistics is not the statistics of the averaged model: re-estimate them.
    const train = readCifar10(runDataDir(opts.data, cfg.data, io), 'train');
    recalibrated = recalibrateOnTrain(model, train, train.count, Math.min(cfg.batch, cfg.maxWorkerBatch), cfg, bnImages);
    io.out(`batch-norm statistics re-estimated on ${recalibrated} training images\n`);
  } else {
    io.err('warning: batch-norm statistics are the mean of the checkpoints\' running statistics (--no-recalibrate-bn); they need not fit the averaged weights.\n');
  }
  const written = writeDerivedCheckpoint(ckpt, cfg, model, { averagedFrom: files, bnRecalibratedImages: recalibrated }, out, files);
  model.dispose();
  io.out(`averaged checkpoint written to ${written}\n`);
  return 0;
}

/** Adds `average` to the `svd-coord` program. */
export function registerAverageCommand(program: Command, io: CliIo, setCode: SetExitCode): void {
  program
    .command('average')
    .description('stochastic weight averaging: the mean of several checkpoints\' parameters, batch-norm statistics re-estimated, as one checkpoint')
    .argument('<ckpts...>', 'checkpoint files, or run folders (every checkpoint in them, or the newest --last)')
    .option('--last <k>', 'of each folder, only the newest k checkpoints (default: all)')
    .option('--out <path>', 'folder for the averaged checkpoint, or a file name ending in .svdckpt (default: averaged-<N>.svdckpt beside the newest input)')
    .option('--backend <name>', 'auto | tensorflow | native | wasm | cpu (default: the checkpoint run\'s)')
    .option('--data <dir>', 'CIFAR-10 folder whose training images re-estimate the batch-norm statistics (default: the run\'s, then SVD_TRAIN_DATA, then the cache)')
    .option('--bn-images <n>', `training images (spread evenly, augmented as in the run) to re-estimate the batch-norm statistics on; one pass, as SWA does (default ${SWA_BN_IMAGES}: the whole CIFAR-10 training split)`)
    .option('--no-recalibrate-bn', 'keep the mean of the checkpoints\' running statistics: no pass over the data, but they need not fit the averaged weights')
    .action(async (a: string[], o: AverageOptions) => setCode(await averageCommand(a, o, io)));
}
