/** `svd-worker`: one training worker (one per GPU) that connects to `svd-coord start`. */
import { Command } from 'commander';
import { BACKENDS, DEFAULTS, MAX_TIMER_MS } from '@svd-train/core';
import { HANDSHAKE_TIMEOUT_MIN_MS, runWorker } from '@svd-train/worker';
import { readFileSync } from 'node:fs';
import { parseNumberOption, reportError, usageError, quietOnClosedStdout } from './cli-errors.js';
import { resolveToken } from './secrets.js';

/** Membership in BACKENDS as a type guard, so a checked --backend needs no cast. */
function isBackend(s: string): s is (typeof BACKENDS)[number] {
  return (BACKENDS as readonly string[]).includes(s);
}

export function buildWorkerProgram(setCode: (c: number) => void = () => {}): Command {
  return new Command('svd-worker')
    .description('Compute SVD-ResNet gradients for an svd-coord coordinator.')
    .exitOverride()
    .requiredOption('--coordinator <url>', 'coordinator address, wss://HOST:PORT (or ws:// on a trusted network)')
    .option('--gpu <n>', 'GPU index (tfjs-node-gpu)', parseNumberOption('--gpu', 'a GPU index ≥ 0, e.g. 0', (n) => Number.isInteger(n) && n >= 0))
    .option('--cpu', 'use no GPU')
    .option('--backend <name>', `compute engine: ${BACKENDS.join(' | ')} (default ${DEFAULTS.backend}: the first that loads, in that order)`)
    .option('--threads <n>', `oneDNN threads on the native engine (default ${DEFAULTS.threads}: run one worker per core)`, parseNumberOption('--threads', 'a whole number of threads ≥ 1, e.g. 2', (n) => Number.isInteger(n) && n >= 1 && n <= 1024))
    .option('--token-file <file>', 'read the shared token from the first line of this file (stays out of `ps`; or set SVD_TRAIN_TOKEN)')
    .option('--token <secret>', 'shared token; visible in `ps`: prefer --token-file or SVD_TRAIN_TOKEN')
    .option('--ca <file>', 'PEM certificate(s) the wss:// coordinator\'s certificate must chain to (e.g. its self-signed certificate)')
    .option('--handshake-timeout-ms <n>', `give up on a coordinator that does not answer a handshake stage within this long (default ${DEFAULTS.handshakeTimeoutMs})`, parseNumberOption('--handshake-timeout-ms', `milliseconds from ${HANDSHAKE_TIMEOUT_MIN_MS} to ${MAX_TIMER_MS}, e.g. 30000`, (n) => Number.isInteger(n) && n >= HANDSHAKE_TIMEOUT_MIN_MS && n <= MAX_TIMER_MS))
    .option('--data <dir>', 'local CIFAR-10 copy (used if it matches the coordinator\'s md5s)')
    .option('--name <name>', 'name shown in the coordinator\'s logs')
    .addHelpText('after', '\nExample:\n  svd-worker --gpu 0 --coordinator wss://10.0.0.5:7733 --ca cert.pem --token-file token.txt')
    .action(async (o: { coordinator: string; gpu?: number; cpu?: boolean; backend?: string; threads?: number; token?: string; tokenFile?: string; ca?: string; handshakeTimeoutMs?: number; data?: string; name?: string }) => {
      const backend = o.backend ?? DEFAULTS.backend;
      if (!isBackend(backend)) {
        throw usageError(`--backend ${JSON.stringify(backend)} is not valid; expected one of ${BACKENDS.join(', ')}. Fix: e.g. --backend wasm.`);
      }
      const r = await runWorker({
        coordinator: o.coordinator,
        gpu: o.gpu,
        cpu: o.cpu,
        backend,
        threads: o.threads,
        token: resolveToken(o, (m) => process.stderr.write(m)),
        ...(o.ca !== undefined ? { ca: readCa(o.ca) } : {}),
        ...(o.handshakeTimeoutMs !== undefined ? { handshakeTimeoutMs: o.handshakeTimeoutMs } : {}),
        name: o.name,
        dataDir: o.data ?? null,
        log: (s: string) => process.stdout.write(`${s}\n`),
      });
      process.stdout.write(`worker done after ${r.steps} steps: ${r.reason}\n`);
      setCode(0);
    });
}

function readCa(path: string): Buffer {
  try {
    return readFileSync(path);
  } catch (e) {
    throw usageError(`--ca ${JSON.stringify(path)} cannot be read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message}). Fix: pass the coordinator's PEM certificate or its CA.`);
  }
}

/** Entry point of bin/svd-worker.js. */
export async function runWorkerCli(argv: string[]): Promise<void> {
  quietOnClosedStdout();
  let code = 0;
  try {
    await buildWorkerProgram((c) => (code = c)).parseAsync(argv);
  } catch (e) {
    code = reportError(e);
  }
  process.exitCode = code;
  // The work is over: nothing (a peer's half-closed socket, a stray timer) may keep the process
  // alive. An unref'd timer fires only if something else still holds the event loop.
  setTimeout(() => process.exit(code), 2000).unref();
}
