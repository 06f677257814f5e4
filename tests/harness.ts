/**
 * Shared helpers of the multi-process suites: real `svd-coord` / `svd-worker` processes (the BUILT
 * CLI, so run `pnpm build` first), real WebSockets on 127.0.0.1, tiny synthetic CIFAR-10.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { latestCheckpoint, writeSyntheticCifar10, type Checkpoint } from '@svd-train/core';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const COORD_BIN = join(ROOT, 'packages/cli/bin/svd-coord.js');
export const WORKER_BIN = join(ROOT, 'packages/cli/bin/svd-worker.js');

/** Fails early with the fix when the CLI has not been built. */
export function requireBuild(): void {
  if (!existsSync(join(ROOT, 'packages/cli/dist/index.js'))) {
    throw new Error('tests/ run the built CLI: run `pnpm build` first (packages/cli/dist/index.js is missing).');
  }
}

/** A port that was free a moment ago (the OS picks it). */
export function freePort(): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, '127.0.0.1', () => {
      const { port } = s.address() as { port: number };
      s.close(() => res(port));
    });
  });
}

/** A fresh temp folder with synthetic CIFAR-10 (`train` + `test` records). */
export function syntheticData(train = 40, test = 12, seed = 1): string {
  const dir = mkdtempSync(join(tmpdir(), 'svd-e2e-data-'));
  writeSyntheticCifar10(dir, { train, test, seed });
  return dir;
}

export function tempDir(prefix = 'svd-e2e-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

/** Writes a JSON run config (keys not exposed as flags, e.g. weightDecay, go through --config). */
export function configFile(obj: Record<string, unknown>): string {
  const p = join(tempDir('svd-e2e-cfg-'), 'config.json');
  writeFileSync(p, JSON.stringify(obj));
  return p;
}

export interface Proc {
  child: ChildProcess;
  /** stdout+stderr so far. */
  output(): string;
  /** Resolves with the exit code (or the signal name). */
  exited: Promise<number | string>;
  /** Resolves when the output matches `re` (rejects after `timeoutMs`, quoting the output). */
  waitFor(re: RegExp, timeoutMs?: number): Promise<RegExpMatchArray>;
  kill(signal?: NodeJS.Signals): void;
}

export function launch(bin: string, args: string[], env: Record<string, string | undefined> = {}): Proc {
  const child = spawn(process.execPath, [bin, ...args], {
    cwd: ROOT,
    env: { ...process.env, SVD_TRAIN_TOKEN: undefined, ...env, SVD_TRAIN_CACHE: env.SVD_TRAIN_CACHE ?? tempDir('svd-e2e-cache-') },
    stdio: ['ignore', 'pipe', 'pipe'],
  });
  let out = '';
  const listeners = new Set<() => void>();
  const onData = (b: Buffer) => {
    out += b.toString();
    for (const l of listeners) l();
  };
  child.stdout!.on('data', onData);
  child.stderr!.on('data', onData);
  const exited = new Promise<number | string>((res) => child.on('exit', (code, sig) => res(code ?? sig ?? -1)));
  return {
    child,
    output: () => out,
    exited,
    kill: (signal = 'SIGTERM') => void child.kill(signal),
    waitFor(re, timeoutMs = 120_000) {
      return new Promise((res, rej) => {
        const check = () => {
          const m = out.match(re);
          if (m) {
            listeners.delete(check);
            clearTimeout(t);
            res(m);
          }
        };
        const t = setTimeout(() => {
          listeners.delete(check);
          rej(new Error(`timed out after ${timeoutMs} ms waiting for ${re}; output so far:\n${out.slice(-4000)}`));
        }, timeoutMs);
        listeners.add(check);
        void exited.then(() => setTimeout(() => {
          if (listeners.has(check)) {
            listeners.delete(check);
            clearTimeout(t);
            rej(new Error(`process exited before ${re}; output:\n${out.slice(-4000)}`));
          }
        }, 50));
        check();
      });
    },
  };
}

/** Resolves once Linux reports `pid` stopped (state T): kill() only queues SIGSTOP. */
async function stoppedState(pid: number): Promise<void> {
  const statPath = `/proc/${pid}/stat`;
  for (let i = 0; i < 500 && existsSync(statPath); i++) {
    const stat = readFileSync(statPath, 'utf8');
    const state = stat[stat.lastIndexOf(')') + 2]; // the field after "(comm) "
    if (state === 'T' || state === 't' || state === 'Z') return;
    await new Promise((r) => setTimeout(r, 1));
  }
}

/**
 * Waits until `cond()` holds, reading it only while `proc` is frozen (SIGSTOP), and returns with
 * `proc` still frozen: what `cond()` saw is what the process has done, however late this test's own
 * timers fire on a loaded machine. The caller acts (kills a worker, counts steps, sends a signal,
 * which stays pending) and then calls `proc.kill('SIGCONT')`. Between checks the process runs for
 * `runMs`; a check that finds the process gone, or no match by `timeoutMs`, throws with its output.
 */
export async function freezeWhen(proc: Proc, cond: () => boolean, what: string, timeoutMs = 120_000, runMs = 20): Promise<void> {
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    if (proc.child.exitCode !== null || proc.child.signalCode !== null) throw new Error(`exited before ${what}:\n${proc.output().slice(-3000)}`);
    proc.kill('SIGSTOP');
    await stoppedState(proc.child.pid!);
    if (cond()) return;
    proc.kill('SIGCONT');
    if (Date.now() > deadline) throw new Error(`no ${what} within ${timeoutMs} ms:\n${proc.output().slice(-3000)}`);
    await new Promise((r) => setTimeout(r, runMs));
  }
}

/** `svd-coord start` with the given flags. */
export function startCoordinator(args: string[], env: Record<string, string | undefined> = {}): Proc {
  return launch(COORD_BIN, ['start', ...args], env);
}

/** Runs one `svd-coord` command to its end: its exit code and its stdout + stderr. */
export async function runCoord(args: string[]): Promise<{ code: number | string; out: string }> {
  const p = launch(COORD_BIN, args);
  const code = await p.exited;
  return { code, out: p.output() };
}

export function startWorker(port: number, args: string[] = [], env: Record<string, string | undefined> = {}): Proc {
  return launch(WORKER_BIN, ['--coordinator', `ws://127.0.0.1:${port}`, '--backend', 'wasm', ...args], env);
}

/** Parsed metrics.jsonl of a run folder. */
export function metrics(outDir: string): Record<string, any>[] {
  const p = join(outDir, 'metrics.jsonl');
  if (!existsSync(p)) return [];
  return readFileSync(p, 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .flatMap((l) => {
      try {
        return [JSON.parse(l) as Record<string, any>];
      } catch {
        return [];
      }
    });
}

export const stepRecords = (outDir: string) => metrics(outDir).filter((r) => (r.kind ?? r.type) === 'step');
export const epochRecords = (outDir: string) => metrics(outDir).filter((r) => (r.kind ?? r.type) === 'epoch');

/** Flags every suite uses: tiny data, wasm workers (unless `backend`), one short epoch, no eval unless asked. */
export function tinyRunFlags(o: { data: string; out: string; port: number; batch?: number; epochs?: number; limitTrain?: number; backend?: string }): string[] {
  return [
    '--model', 'resnet20',
    '--data', o.data,
    '--out', o.out,
    '--port', String(o.port),
    '--batch', String(o.batch ?? 12),
    '--epochs', String(o.epochs ?? 1),
    '--limit-train', String(o.limitTrain ?? 36),
    '--limit-test', '12',
    '--eval-every', '0',
    '--backend', o.backend ?? 'wasm',
  ];
}

/** Resolves once something accepts TCP connections on 127.0.0.1:port. */
export async function waitForPort(port: number, timeoutMs = 60_000, proc?: Proc): Promise<void> {
  const { connect } = await import('node:net');
  const end = Date.now() + timeoutMs;
  for (;;) {
    const ok = await new Promise<boolean>((res) => {
      const s = connect(port, '127.0.0.1');
      s.once('connect', () => (s.destroy(), res(true)));
      s.once('error', () => res(false));
    });
    if (ok) return;
    if (proc && proc.child.exitCode !== null) throw new Error(`coordinator exited (${proc.child.exitCode}) before listening:\n${proc.output().slice(-4000)}`);
    if (Date.now() > end) throw new Error(`nothing listened on port ${port} within ${timeoutMs} ms${proc ? `:\n${proc.output().slice(-4000)}` : ''}`);
    await new Promise((r) => setTimeout(r, 200));
  }
}

function latestOf(outDir: string): { path: string; checkpoint: Checkpoint } {
  const latest = latestCheckpoint(join(outDir, 'checkpoints'));
  if (!latest) throw new Error(`no checkpoint in ${outDir}/checkpoints`);
  return latest;
}

/** The latest checkpoint of a run folder, loaded with core's checkpoint API. */
export function finalCheckpoint(outDir: string): Checkpoint {
  return latestOf(outDir).checkpoint;
}

/** The file of the latest checkpoint of a run folder. */
export function finalCheckpointPath(outDir: string): string {
  return latestOf(outDir).path;
}

/** Largest |a-b| over all tensors (matched by name), with the worst tensor's name. */
export function maxDiff(a: { name: string; data: Float32Array }[], b: { name: string; data: Float32Array }[]): { diff: number; where: string } {
  const byName = new Map(b.map((t) => [t.name, t.data]));
  let diff = 0;
  let where = '';
  for (const t of a) {
    const o = byName.get(t.name);
    if (!o || o.length !== t.data.length) return { diff: Infinity, where: `${t.name} missing or reshaped` };
    for (let i = 0; i < o.length; i++) {
      const d = Math.abs(o[i]! - t.data[i]!) / (1 + Math.abs(t.data[i]!));
      if (d > diff) [diff, where] = [d, `${t.name}[${i}]`];
    }
  }
  return { diff, where };
}
