/**
 * `svd-coord eval CKPT`: test accuracy, mean loss and MACs of a checkpoint (or of the latest one in
 * a run folder), on the whole test set unless --limit-test N.
 */
import type { Command } from 'commander';
import { readCifar10, resolveDataDir } from '@svd-train/core';
import { countMacs, evaluateSplit } from '@svd-train/layers';
import { usageError } from '../cli-errors.js';
import type { CliIo, SetExitCode } from '../cli-io.js';
import { checkpointArgument, modelFromCheckpoint } from '../checkpoint-model.js';

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

async function evalCommand(pathArg: string, opts: EvalOptions, io: CliIo): Promise<number> {
  const path = checkpointArgument(pathArg, io);
  const { model, cfg } = await modelFromCheckpoint(path, opts.backend, io);
  const test = readCifar10(runDataDir(opts.data, cfg.data, io), 'test');
  let limit: number | null = null;
  if (opts.limitTest !== undefined) {
    limit = Number(opts.limitTest);
    if (!(opts.limitTest.trim() !== '' && Number.isInteger(limit) && limit > 0)) {
      throw usageError(`--limit-test ${JSON.stringify(opts.limitTest)} is not valid; expected a whole number of test images > 0, e.g. --limit-test 1000.`);
    }
  } else if (cfg.limitTest !== null && cfg.limitTest < test.count) {
    // The whole test set by default: a training run's --limit-test (a quick check) is not what a
    // reported accuracy should silently use. Say so, and how to get the run's subset.
    io.err(`the training run evaluated only the first ${cfg.limitTest} test images (--limit-test ${cfg.limitTest}); this uses all ${test.count}. Pass --limit-test ${cfg.limitTest} for the run's subset.\n`);
  }
  const n = Math.min(test.count, limit ?? test.count);
  const r = evaluateSplit(model, test, Int32Array.from({ length: n }, (_, i) => i), cfg.maxWorkerBatch);
  const [acc, loss] = [r.correct / n, r.lossSum / n];
  const c = countMacs(model);
  io.out(`${path}: test accuracy ${(100 * acc).toFixed(2)}% (${r.correct}/${n}), loss ${loss.toFixed(4)}, ${(c.total / 1e6).toFixed(2)}M MACs per image\n`);
  return 0;
}

/** Adds `eval` to the `svd-coord` program. */
export function registerEvalCommand(program: Command, io: CliIo, setCode: SetExitCode): void {
  program
    .command('eval')
    .description('test accuracy of a checkpoint')
    .argument('<ckpt>', 'checkpoint file, or a run folder (its latest checkpoint is used)')
    .option('--data <dir>', 'CIFAR-10 folder (default: the run\'s, then SVD_TRAIN_DATA, then the cache)')
    .option('--limit-test <n>', 'only the first n test images (default: the whole test set, even if the run used --limit-test)')
    .option('--backend <name>', 'auto | tensorflow | native | wasm | cpu (default: the checkpoint run\'s)')
    .action(async (p: string, o: EvalOptions) => setCode(await evalCommand(p, o, io)));
}
