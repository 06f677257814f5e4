/**
 * The worker process: connect to the coordinator, handshake, then answer `step` and `eval`
 * requests until `shutdown`. One worker per GPU (or per CPU process).
 *
 * Lifecycle: connect (with capped, jittered backoff while the coordinator is not up or went away)
 * -> hello (protocol version, backend, device, our nonce) -> challenge/auth (a worker with a token
 * first checks the coordinator's proof on our nonce, then proves the token on the coordinator's;
 * the token never travels) -> welcome (serialized run config + its hash + dataset description) ->
 * build the model from the config, make sure the dataset is here -> manifest (parameter names and
 * shapes in order; the coordinator refuses a mismatch) -> weights (authoritative parameters and BN
 * buffers) -> loop over weights/step/eval. A refusal (bad token, wrong version, manifest mismatch)
 * ends the worker with an error instead of retrying forever.
 *
 * The coordinator is not trusted: every message is checked for its place in the session, its
 * size and its contents (coordinator-checks.ts) before it is used. A violation ends the worker
 * with the coded error (after telling the coordinator and cutting the connection): it never stays
 * alive holding a slice. A coordinator that goes silent (PEER_TIMEOUT) is reconnected to.
 *
 * This file is the process: options, engine start and the reconnect loop. One connection's
 * handshake and message loop is session.ts.
 */
import { hostname } from 'node:os';
import { DEFAULTS, MAX_TIMER_MS, SvdTrainError, escapeForLog, type BackendChoice } from '@svd-train/core';
import { initEngine } from '@svd-train/layers';
import { backoffDelay } from './backoff.js';
import { Connection } from './connection.js';
import { SessionEnded, session, type WorkerState } from './session.js';

export interface WorkerOptions {
  /** `ws://HOST:PORT` of the coordinator. */
  coordinator: string;
  /** GPU index (tfjs-node-gpu only). */
  gpu?: number;
  /** No GPU: with backend 'auto' the CUDA devices are hidden, so tfjs-node-gpu (if present) runs on CPU. */
  cpu?: boolean;
  backend?: BackendChoice;
  /** oneDNN threads on the native engine (default 1: one worker per core). */
  threads?: number;
  /** Shared secret (or SVD_TRAIN_TOKEN); needed unless the coordinator is on loopback or --insecure. */
  token?: string | null;
  /** Name shown in the coordinator's logs (default host:pid). */
  name?: string;
  /** A local CIFAR-10 folder to use instead of fetching from the coordinator (if its md5s match). */
  dataDir?: string | null;
  /** Where fetched data is cached (default core's `cacheRoot()`: $SVD_TRAIN_CACHE, $XDG_CACHE_HOME/svd-train or ~/.cache/svd-train). */
  cacheDir?: string;
  /** Log sink (one line per call). */
  log?: (line: string) => void;
  /** Give up after this many failed connection attempts in a row (default: never). */
  maxAttempts?: number;
  /** PEM CA certificate(s) a wss:// coordinator's certificate must chain to (default: the system's CAs). */
  ca?: string | Buffer;
  /**
   * How long each handshake stage (upgrade, challenge, welcome, each data chunk) may take (default
   * 30 s); whole milliseconds from 100 to MAX_TIMER_MS (2³¹ − 1, setTimeout's longest delay).
   */
  handshakeTimeoutMs?: number;
}

/** How `runWorker` ended. */
export interface WorkerResult {
  reason: string;
  steps: number;
}

/** The shortest handshake stage a worker allows: less would give up on a coordinator that is merely busy. */
export const HANDSHAKE_TIMEOUT_MIN_MS = 100;

/** TLS errors that mean "this certificate is not trusted", which retrying cannot fix. */
const TLS_TRUST_ERRORS = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|ALTNAME|HOSTNAME/;

/**
 * Runs a worker until the coordinator says shutdown.
 * @throws SvdTrainError when the coordinator refuses this worker (bad token, version, manifest).
 */
export async function runWorker(opts: WorkerOptions): Promise<WorkerResult> {
  const log = opts.log ?? ((s: string) => console.log(s));
  if (!/^wss?:\/\/[^/]+/.test(opts.coordinator)) {
    throw new SvdTrainError(
      'CONFIG_INVALID',
      `--coordinator ${JSON.stringify(opts.coordinator)} is not a WebSocket URL; expected ws://HOST:PORT, e.g. ws://10.0.0.5:7733.`,
    );
  }
  const hs = opts.handshakeTimeoutMs;
  // Node fires a setTimeout longer than MAX_TIMER_MS after 1 ms: a huge deadline would be none at all.
  if (hs !== undefined && !(Number.isInteger(hs) && hs >= HANDSHAKE_TIMEOUT_MIN_MS && hs <= MAX_TIMER_MS)) {
    throw new SvdTrainError(
      'CONFIG_INVALID',
      `--handshake-timeout-ms ${hs} is not valid; expected whole milliseconds from ${HANDSHAKE_TIMEOUT_MIN_MS} to ${MAX_TIMER_MS} (setTimeout's limit, about 24.8 days). Fix: e.g. --handshake-timeout-ms ${DEFAULTS.handshakeTimeoutMs}.`,
    );
  }
  const backend = opts.backend ?? DEFAULTS.backend;
  if (opts.cpu) {
    // "No GPU": hide the CUDA devices before any native TensorFlow loads.
    process.env.CUDA_VISIBLE_DEVICES = '-1';
    if (backend === 'tensorflow') log('--cpu: TensorFlow native backend will run on CPU');
  }
  // resolveFrom: tfjs-node(-gpu) are this package's optional dependencies, which layers (whose optional
  // peers they are) cannot see under pnpm's strict layout.
  const engine = await initEngine({ backend, resolveFrom: import.meta.url, ...(opts.threads !== undefined ? { threads: opts.threads } : {}), ...(opts.gpu !== undefined && !opts.cpu ? { gpu: opts.gpu } : {}) });
  log(`backend ${engine.reason}`);
  const device = opts.cpu || opts.gpu === undefined ? 'cpu' : `gpu:${opts.gpu}`;
  const name = opts.name ?? `${hostname()}:${process.pid}`;
  const state: WorkerState = { model: null, hash: null, config: null, train: null, test: null, manifest: null, teachers: [], steps: 0, broadcastBuffers: [] };
  const token = opts.token ?? process.env.SVD_TRAIN_TOKEN ?? null;
  if (token && opts.coordinator.startsWith('ws://') && !/^ws:\/\/(127\.\d+\.\d+\.\d+|localhost|\[::1\])(:|\/|$)/.test(opts.coordinator)) {
    log(`warning: ${opts.coordinator} is plain ws://: the token stays secret, but gradients and weights travel unencrypted and a man in the middle can relay the session; use wss:// (svd-coord start --tls-cert/--tls-key, svd-worker --ca)`);
  }

  let failures = 0;
  for (;;) {
    let conn: Connection;
    try {
      conn = await Connection.open(opts.coordinator, { handshakeTimeoutMs: opts.handshakeTimeoutMs, ca: opts.ca });
    } catch (e) {
      const raw = (e as { code?: unknown }).code;
      const code = typeof raw === 'string' ? raw : '';
      if (TLS_TRUST_ERRORS.test(code)) {
        throw new SvdTrainError(
          'AUTH_FAILED',
          `the coordinator at ${opts.coordinator} presented a TLS certificate this worker does not trust (${code}: ${escapeForLog((e as Error).message)}). Fix: pass --ca FILE with the coordinator's certificate or its CA, and connect by a name or IP the certificate lists.`,
        );
      }
      failures++;
      if (opts.maxAttempts !== undefined && failures >= opts.maxAttempts) {
        throw new SvdTrainError(
          'CONNECTION_FAILED',
          `Could not reach the coordinator at ${opts.coordinator} after ${failures} attempts (${escapeForLog((e as Error).message)}). ` +
            'Fix: start it with `svd-coord start`, or check host, port and firewall.',
        );
      }
      const d = backoffDelay(failures - 1);
      log(`coordinator ${opts.coordinator} not reachable (${escapeForLog((e as Error).message)}); retrying in ${(d / 1000).toFixed(1)} s`);
      await new Promise((r) => setTimeout(r, d));
      continue;
    }
    let end: SessionEnded;
    try {
      end = await session(conn, { ...opts, token, log, name, device, backend: engine.backend }, state);
    } catch (e) {
      // Whatever went wrong here (a violation found while computing, a bug), the connection must
      // not outlive the session: an open socket would keep this process alive holding its slice.
      const err = e instanceof SvdTrainError ? e : new SvdTrainError('INTERNAL', `worker failed: ${(e as Error)?.stack ?? String(e)}`);
      conn.fail(err);
      // A coordinator that went silent mid-transfer may be restarting: reconnect to it.
      if (err.code !== 'PEER_TIMEOUT') throw err;
      log(`error [${err.code}]: ${err.message}`);
      end = new SessionEnded(err.code, null, false, false);
    }
    if (end.fatal) conn.fail(end.fatal);
    else conn.close();
    if (end.fatal) throw end.fatal;
    if (end.shutdown) {
      log(`shutdown: ${end.reason}`);
      return { reason: end.reason, steps: state.steps };
    }
    // Reset the backoff only after a session got past the handshake, so a coordinator that
    // accepts and immediately drops us still gets exponential spacing.
    if (end.handshakeDone) failures = 0;
    failures++;
    const d = backoffDelay(failures - 1);
    log(`connection lost (${end.reason}); reconnecting in ${(d / 1000).toFixed(1)} s`);
    await new Promise((r) => setTimeout(r, d));
  }
}
