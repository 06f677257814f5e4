/** `svd-worker`: one training worker (one per GPU) that connects to `svd-coord start`. */
import { Command } from 'commander';
import { BACKENDS } from '@svd-train/core';
import { runWorker } from '@svd-train/worker';
import { parseNumberOption, reportError, usageError } from './cli-errors.js';

export function buildWorkerProgram(setCode: (c: number) => void = () => {}): Command {
  return new Command('svd-worker')
    .description('Compute SVD-ResNet gradients for an svd-coord coordinator.')
    .exitOverride()
    .requiredOption('--coordinator <url>', 'coordinator address, ws://HOST:PORT')
    .option('--gpu <n>', 'GPU index (tfjs-node-gpu)', parseNumberOption('--gpu', 'a GPU index ≥ 0, e.g. 0', (n) => Number.isInteger(n) && n >= 0))
    .option('--cpu', 'use no GPU')
    .option('--backend <name>', `compute engine: ${BACKENDS.join(' | ')} (default auto: the first that loads, in that order)`)
    .option('--threads <n>', 'oneDNN threads on the native engine (default 1: run one worker per core)', parseNumberOption('--threads', 'a whole number of threads ≥ 1, e.g. 2', (n) => Number.isInteger(n) && n >= 1 && n <= 1024))
    .option('--token <secret>', 'shared token (or SVD_TRAIN_TOKEN)')
    .option('--data <dir>', 'local CIFAR-10 copy (used if it matches the coordinator\'s md5s)')
    .option('--name <name>', 'name shown in the coordinator\'s logs')
    .addHelpText('after', '\nExample:\n  svd-worker --gpu 0 --coordinator ws://10.0.0.5:7733 --token $TOKEN')
    .action(async (o: { coordinator: string; gpu?: number; cpu?: boolean; backend?: string; threads?: number; token?: string; data?: string; name?: string }) => {
      if (o.backend && !(BACKENDS as readonly string[]).includes(o.backend)) {
        throw usageError(`--backend ${JSON.stringify(o.backend)} is not valid; expected one of ${BACKENDS.join(', ')}. Fix: e.g. --backend wasm.`);
      }
      const r = await runWorker({
        coordinator: o.coordinator,
        gpu: o.gpu,
        cpu: o.cpu,
        backend: (o.backend ?? 'auto') as (typeof BACKENDS)[number],
        threads: o.threads,
        token: o.token ?? process.env.SVD_TRAIN_TOKEN ?? null,
        name: o.name,
        dataDir: o.data ?? null,
        log: (s: string) => process.stdout.write(`${s}\n`),
      });
      process.stdout.write(`worker done after ${r.steps} steps: ${r.reason}\n`);
      setCode(0);
    });
}

/** Entry point of bin/svd-worker.js. */
export async function runWorkerCli(argv: string[]): Promise<void> {
  let code = 0;
  try {
    await buildWorkerProgram((c) => (code = c)).parseAsync(argv);
  } catch (e) {
    code = reportError(e);
  }
  process.exitCode = code;
}
