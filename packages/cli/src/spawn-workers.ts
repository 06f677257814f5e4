/**
 * `svd-coord start --spawn K`: K local worker processes, so one machine trains with no other
 * set-up. Each is `node <svd-worker bin> --coordinator ws://127.0.0.1:PORT ...`; its output is
 * forwarded line by line with a `[wK]` prefix, and all are killed when the coordinator exits.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

/** Absolute path of the svd-worker bin script shipped with this package. */
export function workerBinPath(): string {
  return join(dirname(fileURLToPath(import.meta.url)), '..', 'bin', 'svd-worker.js');
}

export interface SpawnedWorkers {
  children: ChildProcess[];
  /** SIGTERM to every live child (SIGKILL after `graceMs`). */
  killAll(graceMs?: number): Promise<void>;
}

function forward(stream: NodeJS.ReadableStream | null, prefix: string, write: (s: string) => void): void {
  if (!stream) return;
  let buf = '';
  stream.setEncoding('utf8');
  stream.on('data', (chunk: string) => {
    buf += chunk;
    let i: number;
    while ((i = buf.indexOf('\n')) >= 0) {
      write(`${prefix} ${buf.slice(0, i)}\n`);
      buf = buf.slice(i + 1);
    }
  });
  stream.on('end', () => buf && write(`${prefix} ${buf}\n`));
}

export function spawnWorkers(
  k: number,
  opts: {
    port: number;
    backend: string;
    /** oneDNN threads per worker on the native engine (omitted: 1). */
    threads?: number;
    token: string | null;
    data?: string | null;
    /** The coordinator serves wss:// with this PEM certificate: the workers trust exactly it. */
    tlsCa?: string;
    write?: (s: string) => void;
    onExit?: (i: number, code: number | null, signal: string | null) => void;
  },
): SpawnedWorkers {
  const write = opts.write ?? ((s: string) => process.stderr.write(s));
  const children: ChildProcess[] = [];
  for (let i = 0; i < k; i++) {
    const url = `${opts.tlsCa ? 'wss' : 'ws'}://127.0.0.1:${opts.port}`;
    const args = [workerBinPath(), '--coordinator', url, '--backend', opts.backend, '--name', `w${i}`];
    if (opts.tlsCa) args.push('--ca', opts.tlsCa);
    if (opts.data) args.push('--data', opts.data);
    if (opts.threads !== undefined && opts.threads !== 1) args.push('--threads', String(opts.threads));
    // The token goes through the environment, not argv, so `ps` does not show it.
    const env = { ...process.env, ...(opts.token ? { SVD_TRAIN_TOKEN: opts.token } : {}) };
    const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
    forward(child.stdout, `[w${i}]`, write);
    forward(child.stderr, `[w${i}]`, write);
    child.on('exit', (code, signal) => opts.onExit?.(i, code, signal));
    children.push(child);
  }
  const killAll = async (graceMs = 3000) => {
    const live = children.filter((c) => c.exitCode === null && c.signalCode === null);
    await Promise.all(
      live.map(
        (c) =>
          new Promise<void>((resolve) => {
            const t = setTimeout(() => c.kill('SIGKILL'), graceMs);
            c.once('exit', () => {
              clearTimeout(t);
              resolve();
            });
            c.kill('SIGTERM');
          }),
      ),
    );
  };
  return { children, killAll };
}
