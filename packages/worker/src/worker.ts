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
 */
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import {
  CIFAR_OFFICIAL_FILE_BYTES,
  DATA_CHUNK_FRAME_BYTES,
  DEFAULTS,
  IDLE_TIMEOUT_MS,
  PROTOCOL_VERSION,
  SvdTrainError,
  assembleBatch,
  authProof,
  configHash,
  cacheRoot,
  escapeForLog,
  isErrorCode,
  makeNonce,
  parseConfig,
  readCifar10,
  tensorFrameBytes,
  verifyAuthProof,
  CIFAR_FILES,
  type BackendChoice,
  type Cifar10Split,
  type ErrorCode,
  type Message,
  type RunConfig,
  type TensorSpec,
  type WireTensor,
} from '@svd-train/core';
import {
  buildResNetForConfig,
  evaluateSplit,
  initEngine,
  getBuffers,
  getParameters,
  setBuffers,
  setParameters,
} from '@svd-train/layers';
import { backoffDelay } from './backoff.js';
import { sliceGradients } from './chunked-gradients.js';
import { checkCounts, checkDatasetInfo, checkEval, checkStep, checkWeights, outOfOrder } from './coordinator-checks.js';
import { Connection, isClose } from './connection.js';
import { ensureDataset } from './data-cache.js';

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
  /** How long each handshake stage (upgrade, challenge, welcome, each data chunk) may take (default 30 s). */
  handshakeTimeoutMs?: number;
}

/** How `runWorker` ended. */
export interface WorkerResult {
  reason: string;
  steps: number;
}

type Model = ReturnType<typeof buildResNetForConfig>;

/** Refusals that retrying cannot fix: the worker stops instead of reconnecting. */
const FATAL_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['AUTH_FAILED', 'PROTOCOL_VERSION', 'MANIFEST_MISMATCH', 'CONFIG_INVALID', 'BACKEND_UNAVAILABLE', 'RUN_ABORTED']);

/** TLS errors that mean "this certificate is not trusted", which retrying cannot fix. */
const TLS_TRUST_ERRORS = /CERT|SELF_SIGNED|UNABLE_TO_VERIFY|UNABLE_TO_GET_ISSUER|ALTNAME|HOSTNAME/;

class SessionEnded {
  constructor(
    readonly reason: string,
    readonly fatal: SvdTrainError | null,
    readonly shutdown: boolean,
    readonly handshakeDone: boolean,
  ) {}
}

/** State kept across reconnects: the engine, the model for a config hash, the data. */
interface WorkerState {
  model: Model | null;
  hash: string | null;
  config: RunConfig | null;
  train: Cifar10Split | null;
  test: Cifar10Split | null;
  /** The model's parameter and buffer specs (what `weights` must match). */
  manifest: { params: TensorSpec[]; buffers: TensorSpec[] } | null;
  steps: number;
  /**
   * BN running statistics of the last `weights` broadcast. Every slice starts from them: a worker
   * given two slices of one step (a survivor recomputing a lost worker's slice) must not start the
   * second from the statistics the first one updated.
   */
  broadcastBuffers: WireTensor[];
}

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
  const state: WorkerState = { model: null, hash: null, config: null, train: null, test: null, manifest: null, steps: 0, broadcastBuffers: [] };
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
          `Could not reach the coordinator at ${opts.coordinator} after ${failures} attempts (${(e as Error).message}). ` +
            'Fix: start it with `svd-coord start`, or check host, port and firewall.',
        );
      }
      const d = backoffDelay(failures - 1);
      log(`coordinator ${opts.coordinator} not reachable (${(e as Error).message}); retrying in ${(d / 1000).toFixed(1)} s`);
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

interface SessionOpts extends Omit<WorkerOptions, 'backend'> {
  log: (s: string) => void;
  name: string;
  device: string;
  /** The backend actually active (reported in hello). */
  backend: string;
}

/** Where a session is, for checking that each message comes in its place. */
type Stage = 'challenge' | 'welcome' | 'weights' | 'ready';

const STAGE_WAITS: Record<Stage, string> = {
  challenge: 'the challenge',
  welcome: 'the welcome',
  weights: 'the first weights',
  ready: 'work',
};

async function session(conn: Connection, opts: SessionOpts, st: WorkerState): Promise<SessionEnded> {
  const { log } = opts;
  const handshakeMs = opts.handshakeTimeoutMs ?? DEFAULTS.handshakeTimeoutMs;
  let handshakeDone = false;
  let stage: Stage = 'challenge';
  let trainCount = 0;
  let testCount = 0;
  const nonce = makeNonce();
  const localData = opts.dataDir ?? process.env.SVD_TRAIN_DATA ?? null;
  await conn.send({
    type: 'hello',
    protocolVersion: PROTOCOL_VERSION,
    workerName: opts.name,
    backend: opts.backend,
    device: opts.device,
    capabilities: ['chunked-gradients'],
    pid: process.pid,
    hostname: hostname(),
    // Only a claim that a copy exists; the md5s are checked against welcome.datasetInfo.
    hasData: st.train !== null || (localData !== null && CIFAR_FILES.every((f) => existsSync(join(localData, f)))),
    nonce,
  });
  const violated = (e: SvdTrainError) => new SessionEnded(e.code, e, false, handshakeDone);
  for (;;) {
    // Before the manifest every stage has the handshake deadline; afterwards a coordinator may
    // legitimately wait long for other workers, but it pings, so silence means it is gone.
    const m = await conn.next(stage === 'ready' || stage === 'weights' ? IDLE_TIMEOUT_MS : handshakeMs, STAGE_WAITS[stage]);
    if (isClose(m)) {
      if (m.error) {
        log(`error [${m.error.code}]: ${m.error.message}`);
        // A silent coordinator may be restarting: reconnect. Anything else it sent is a violation.
        if (m.error.code === 'PEER_TIMEOUT') return new SessionEnded(`${m.error.code}: no answer`, null, false, handshakeDone);
        return violated(m.error);
      }
      return new SessionEnded(`closed (${m.code}${m.reason ? `: ${m.reason}` : ''})`, null, false, handshakeDone);
    }
    const msg: Message = m;
    switch (msg.type) {
      case 'challenge': {
        if (stage !== 'challenge') return violated(outOfOrder('challenge', `waiting for ${STAGE_WAITS[stage]}`));
        const token = opts.token ?? null;
        const nonces = { worker: nonce, coordinator: msg.nonce };
        if (token) {
          // Mutual: the coordinator must prove the token on our nonce before we go any further.
          if (!verifyAuthProof(token, 'coordinator', nonces, msg.proof)) {
            return violated(
              new SvdTrainError(
                'AUTH_FAILED',
                `the coordinator at ${opts.coordinator} could not prove it knows the token (${msg.proof ? 'wrong proof' : 'no proof'}): it is not your coordinator, or it was started with another token. Fix: give both the same token (--token-file or SVD_TRAIN_TOKEN).`,
              ),
            );
          }
        } else if (msg.authRequired) {
          return violated(
            new SvdTrainError('AUTH_FAILED', "The coordinator requires a token and this worker has none. Fix: pass --token-file FILE or set SVD_TRAIN_TOKEN to the coordinator's token."),
          );
        }
        await conn.send({ type: 'auth', mac: token ? authProof(token, 'worker', nonces) : '' });
        stage = 'welcome';
        break;
      }
      case 'welcome': {
        if (stage !== 'welcome') return violated(outOfOrder('welcome', `waiting for ${STAGE_WAITS[stage]}`));
        checkDatasetInfo(msg.datasetInfo);
        const cfg = parseConfig(msg.config);
        const hash = configHash(cfg);
        if (msg.configHash && msg.configHash !== hash) {
          return violated(
            // The coordinator reports the same mismatch as MANIFEST_MISMATCH: one code for one fault.
            new SvdTrainError(
              'MANIFEST_MISMATCH',
              `Config hash mismatch: coordinator says ${escapeForLog(msg.configHash, 80)}, this worker computes ${hash}. Fix: run the same svd-train version on both sides.`,
            ),
          );
        }
        if (st.hash !== hash || !st.model) {
          st.model?.dispose();
          st.model = buildResNetForConfig(cfg);
          st.hash = hash;
          st.config = cfg;
          st.train = st.test = null;
          const spec = (t: WireTensor) => ({ name: t.name, shape: [...t.shape] });
          st.manifest = { params: getParameters(st.model).map(spec), buffers: getBuffers(st.model).map(spec) };
          log(`model ${cfg.model} (svd=${cfg.svd}, ${cfg.decomposition}${cfg.ranks ? `, ${Object.keys(cfg.ranks).length} per-layer ranks` : ''}) built; config ${hash.slice(0, 12)}`);
        }
        // From here a frame may carry one model's tensors or one dataset chunk, nothing larger.
        conn.setLimit(Math.max(DATA_CHUNK_FRAME_BYTES, tensorFrameBytes(st.manifest!)));
        if (!st.train) {
          const dir = await ensureDataset(msg.datasetInfo, {
            localDir: localData,
            cacheRoot: opts.cacheDir ?? cacheRoot(),
            log,
            fetch: (file) => fetchFile(conn, file, handshakeMs),
          });
          st.train = readCifar10(dir, 'train');
          st.test = readCifar10(dir, 'test');
        }
        checkCounts(msg.datasetInfo, st.train.count, st.test!.count);
        trainCount = msg.datasetInfo.trainCount;
        testCount = msg.datasetInfo.testCount;
        await conn.send({ type: 'manifest', configHash: hash, params: st.manifest!.params, buffers: st.manifest!.buffers });
        handshakeDone = true;
        stage = 'weights';
        break;
      }
      case 'weights': {
        if (stage !== 'weights' && stage !== 'ready') return violated(outOfOrder('weights', `waiting for ${STAGE_WAITS[stage]}`));
        checkWeights(msg, st.manifest!);
        setParameters(st.model!, msg.params);
        if (msg.buffers.length) setBuffers(st.model!, msg.buffers);
        st.broadcastBuffers = msg.buffers;
        stage = 'ready';
        break;
      }
      case 'step': {
        if (stage !== 'ready') return violated(outOfOrder('step', `waiting for ${STAGE_WAITS[stage]}`));
        const cfg = st.config!;
        checkStep(msg, { batch: cfg.batch, epochs: cfg.epochs, trainCount });
        const t0 = performance.now();
        if (st.broadcastBuffers.length) setBuffers(st.model!, st.broadcastBuffers);
        const { x, y } = assembleBatch(st.train!, msg.indices, { seed: msg.seed, epoch: msg.epoch, augment: cfg.augment });
        const r = sliceGradients(st.model!, x, y, { lambdaO: cfg.lambdaO, lambdaS: cfg.lambdaS, sparsity: cfg.sparsity }, cfg.maxWorkerBatch);
        const computeMs = performance.now() - t0;
        st.steps++;
        await conn.send({
          type: 'gradients',
          step: msg.step,
          attempt: msg.attempt,
          n: r.n,
          grads: r.grads,
          buffers: r.buffers,
          loss: { ce: r.ce, orth: r.orth, sparsity: r.sparsity, total: r.total },
          correct: r.correct,
          computeMs,
        });
        break;
      }
      case 'eval': {
        if (stage !== 'ready') return violated(outOfOrder('eval', `waiting for ${STAGE_WAITS[stage]}`));
        checkEval(msg, msg.split === 'train' ? trainCount : testCount);
        const split = msg.split === 'train' ? st.train! : st.test!;
        const t0 = performance.now();
        // Same heap cap as training: evaluate in chunks.
        const { correct, lossSum, n } = evaluateSplit(st.model!, split, msg.indices, st.config!.maxWorkerBatch);
        await conn.send({ type: 'eval-result', evalId: msg.evalId, correct, lossSum, n, computeMs: performance.now() - t0 });
        break;
      }
      case 'error': {
        const code = msg.code;
        log(`coordinator error ${escapeForLog(code, 40)}: ${escapeForLog(msg.message)}`);
        // An unknown code (from a newer coordinator) is logged above and treated as retryable.
        if (isErrorCode(code) && FATAL_CODES.has(code)) {
          const what = code === 'RUN_ABORTED' ? 'The coordinator stopped the run' : 'Coordinator refused this worker';
          return new SessionEnded(code, new SvdTrainError(code, `${what}: ${escapeForLog(msg.message)}`), false, handshakeDone);
        }
        break;
      }
      case 'shutdown':
        return new SessionEnded(escapeForLog(msg.reason) || 'training finished', null, true, handshakeDone);
      default:
        // hello, auth, manifest, gradients, eval-result, data-request are worker messages; a
        // data-chunk outside a transfer was never asked for.
        return violated(outOfOrder(msg.type, `waiting for ${STAGE_WAITS[stage]}`));
    }
  }
}

/**
 * Fetches one dataset file: a data-request answered by `total` data-chunk frames in order.
 * Runs inside the handshake, before any step, so no other message can interleave. The chunks must
 * be of this file, in order, with one total and one md5, and add up to at most a CIFAR-10 file.
 */
async function fetchFile(conn: Connection, file: string, timeoutMs: number): Promise<Uint8Array> {
  await conn.send({ type: 'data-request', file });
  const parts: Uint8Array[] = [];
  let bytes = 0;
  let first: { total: number; md5: string } | null = null;
  const bad = (what: string) => new SvdTrainError('PROTOCOL_INVALID', `coordinator sent ${what} while sending ${file}; this worker disconnects`);
  for (;;) {
    const r = await conn.next(timeoutMs, `chunk ${parts.length} of ${file}`);
    if (isClose(r)) throw r.error ?? new SvdTrainError('DATA_MISSING', `The coordinator closed the connection while sending ${file} (${r.reason}).`);
    if (r.type === 'error') throw new SvdTrainError('DATA_MISSING', `The coordinator could not send ${file}: [${escapeForLog(r.code, 40)}] ${escapeForLog(r.message)}`);
    if (r.type !== 'data-chunk' || r.file !== file) throw bad(`'${r.type}'${r.type === 'data-chunk' ? ` of ${JSON.stringify(r.file.slice(0, 80))}` : ''}`);
    if (r.index !== parts.length) throw bad(`data-chunk ${r.index} after ${parts.length} chunks (expected chunk ${parts.length})`);
    first ??= { total: r.total, md5: r.md5 };
    if (r.total !== first.total || r.md5 !== first.md5) throw bad(`data-chunk ${r.index} with total ${r.total} / md5 ${r.md5.slice(0, 40)}, after total ${first.total} / md5 ${first.md5}`);
    bytes += r.bytes.byteLength;
    if (bytes > CIFAR_OFFICIAL_FILE_BYTES) throw bad(`more than ${CIFAR_OFFICIAL_FILE_BYTES} bytes (the size of a CIFAR-10 batch file)`);
    parts.push(r.bytes);
    if (parts.length === r.total) break;
  }
  return Buffer.concat(parts);
}
