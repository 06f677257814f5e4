/**
 * `svd-coord eval CKPT [CKPT…]`: test accuracy, mean loss and MACs of a checkpoint (or of the latest
 * one in a run folder), on the whole test set unless --limit-test N; with several, each one's and
 * their ensemble's (mean softmax: what distilling from them all, `--teacher` repeated, aims at).
 */
import type { Command } from 'commander';
import { assembleBatch, readCifar10, resolveDataDir, type Cifar10Split, type RunConfig } from '@svd-train/core';
import { countMacs, evaluateSplit, meanSoftmaxLogits, teacherLogits } from '@svd-train/layers';
import { usageError } from '../cli-errors.js';
import type { CliIo, SetExitCode } from '../cli-io.js';
import { checkpointArgument, modelFromCheckpoint, type Model } from '../checkpoint-model.js';

interface EvalOptions {
  data?: string;
  limitTest?: string;
  backend?: string;
}

/**
 * The CIFAR-10 folder for `eval` and `prune`: --data, else the folder the run trained on (stored absolute), else the
 * usual SVD_TRAIN_DATA / cache lookup, so a checkpoint moved to another machine still evaluates.
 */
export function runDataDir(flag: string | undefined, runData: string | null, io: CliIo): string {
  if (flag) return resolveDataDir({ flag }).dir;
  if (runData) {
    try {
      return resolveDataDir({ flag: runData }).dir;
    } catch {
      io.err(`the run's data folder ${runData} has no CIFAR-10 here; looking in SVD_TRAIN_DATA and the cache (or pass --data DIR)\n`);
    }
  }
  return resolveDataDir({ flag: null }).dir;
}

async function evalCommand(pathArgs: string[], opts: EvalOptions, io: CliIo): Promise<number> {
  const paths = pathArgs.map((p) => checkpointArgument(p, io));
  let limit: number | null = null;
  if (opts.limitTest !== undefined) {
    limit = Number(opts.limitTest);
    if (!(opts.limitTest.trim() !== '' && Number.isInteger(limit) && limit > 0)) {
      throw usageError(`--limit-test ${JSON.stringify(opts.limitTest)} is not valid; expected a whole number of test images > 0, e.g. --limit-test 1000.`);
    }
  }
  const loaded: { path: string; model: Model; cfg: RunConfig }[] = [];
  try {
    for (const path of paths) {
      const { model, cfg } = await modelFromCheckpoint(path, opts.backend, io);
      loaded.push({ path, model, cfg });
    }
    const { cfg } = loaded[0];
    const test = readCifar10(runDataDir(opts.data, cfg.data, io), 'test');
    if (limit === null && cfg.limitTest !== null && cfg.limitTest < test.count) {
      // The whole test set by default: a training run's --limit-test (a quick check) is not what a
      // reported accuracy should silently use. Say so, and how to get the run's subset.
      io.err(`the training run evaluated only the first ${cfg.limitTest} test images (--limit-test ${cfg.limitTest}); this uses all ${test.count}. Pass --limit-test ${cfg.limitTest} for the run's subset.\n`);
    }
    const n = Math.min(test.count, limit ?? test.count);
    const indices = Int32Array.from({ length: n }, (_, i) => i);
    if (loaded.length === 1) {
      const { path, model, cfg: c } = loaded[0];
      const r = evaluateSplit(model, test, indices, c.maxWorkerBatch);
      io.out(accuracyLine(path, r.correct, r.lossSum, n, countMacs(model).total));
    } else {
      const r = evaluateEnsemble(loaded.map((l) => l.model), test, indices, cfg.maxWorkerBatch);
      const macs = loaded.map((l) => countMacs(l.model).total);
      loaded.forEach((l, k) => io.out(accuracyLine(l.path, r.correct[k], r.lossSum[k], n, macs[k])));
      const sum = macs.reduce((a, m) => a + m, 0);
      io.out(`ensemble of ${loaded.length} (mean softmax, what --teacher repeated distills from): test accuracy ${(100 * r.ensembleCorrect / n).toFixed(2)}% (${r.ensembleCorrect}/${n}), ${(sum / 1e6).toFixed(2)}M MACs per image\n`);
    }
  } finally {
    for (const l of loaded) l.model.dispose();
  }
  return 0;
}

function accuracyLine(path: string, correct: number, lossSum: number, n: number, macs: number): string {
  return `${path}: test accuracy ${(100 * correct / n).toFixed(2)}% (${correct}/${n}), loss ${(lossSum / n).toFixed(4)}, ${(macs / 1e6).toFixed(2)}M MACs per image\n`;
}

/**
 * Each model's correct count and summed cross-entropy, and how many images their mean softmax
 * (`meanSoftmaxLogits` at T = 1) classifies correctly, from one forward of each model per chunk.
 */
function evaluateEnsemble(models: Model[], split: Cifar10Split, indices: Int32Array, chunk: number): { correct: number[]; lossSum: number[]; ensembleCorrect: number } {
  const correct = models.map(() => 0);
  const lossSum = models.map(() => 0);
  let ensembleCorrect = 0;
  for (let lo = 0; lo < indices.length; lo += chunk) {
    const { x, y } = assembleBatch(split, indices.subarray(lo, Math.min(indices.length, lo + chunk)), { seed: 0, epoch: 0, augment: false });
    const each = models.map((m) => teacherLogits(m, x, y.length));
    const classes = each[0].length / y.length;
    each.forEach((logits, k) => {
      for (let i = 0; i < y.length; i++) {
        const row = logits.subarray(i * classes, (i + 1) * classes);
        if (argMax(row) === y[i]) correct[k]++;
        let max = -Infinity;
        for (const v of row) max = Math.max(max, v);
        let sum = 0;
        for (const v of row) sum += Math.exp(v - max);
        lossSum[k] += max + Math.log(sum) - row[y[i]];
      }
    });
    const mean = meanSoftmaxLogits(each, y.length, 1);
    for (let i = 0; i < y.length; i++) if (argMax(mean.subarray(i * classes, (i + 1) * classes)) === y[i]) ensembleCorrect++;
  }
  return { correct, lossSum, ensembleCorrect };
}

/** The first index of the largest value, as tf.argMax picks. */
function argMax(row: Float32Array): number {
  let best = 0;
  for (let c = 1; c < row.length; c++) if (row[c] > row[best]) best = c;
  return best;
}

/** Adds `eval` to the `svd-coord` program. */
export function registerEvalCommand(program: Command, io: CliIo, setCode: SetExitCode): void {
  program
    .command('eval')
    .description('test accuracy of a checkpoint, or of several and of their ensemble')
    .argument('<ckpt...>', 'checkpoint file, or a run folder (its latest checkpoint is used); with several, also the accuracy of their mean softmax (the target of an ensemble of teachers)')
    .option('--data <dir>', 'CIFAR-10 folder (default: the run\'s, then SVD_TRAIN_DATA, then the cache)')
    .option('--limit-test <n>', 'only the first n test images (default: the whole test set, even if the run used --limit-test)')
    .option('--backend <name>', 'auto | tensorflow | native | wasm | cpu (default: the checkpoint run\'s)')
    .action(async (p: string[], o: EvalOptions) => setCode(await evalCommand(p, o, io)));
}
