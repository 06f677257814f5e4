/**
 * The worker process: connect to the coordinator, handshake, then answer `step` and `eval`
 * requests until `shutdown`. One worker per GPU (or per CPU process).
 *
 * Lifecycle: connect (with capped, jittered backoff while the coordinator is not up or went away)
 * -> hello (protocol version, backend, device) -> challenge/auth (HMAC of the coordinator's nonce;
 * the token never travels) -> welcome (serialized run config + its hash + dataset description) ->
 * build the model from the config, make sure the dataset is here -> manifest (parameter names and
 * shapes in order; the coordinator refuses a mismatch) -> weights (authoritative parameters and BN
 * buffers) -> loop over weights/step/eval. A refusal (bad token, wrong version, manifest mismatch)
 * ends the worker with an error instead of retrying forever.
 */
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import {
  PROTOCOL_VERSION,
  SvdTrainError,
  assembleBatch,
  configHash,
  parseConfig,
  readCifar10,
  CIFAR_FILES,
  type Cifar10Split,
  type Message,
  type RunConfig,
  type WireTensor,
} from '@svd-train/core';
import {
  buildResNet,
  evaluate,
  initEngine,
  type BackendChoice,
  getBuffers,
  getParameters,
  setBuffers,
  setParameters,
} from '@svd-train/layers';
import { answerChallenge } from './auth.js';
import { backoffDelay } from './backoff.js';
import { sliceGradients } from './chunked-gradients.js';
import { Connection, isClose } from './connection.js';
import { defaultCacheRoot, ensureDataset } from './data-cache.js';

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
  /** Where fetched data is cached (default $SVD_TRAIN_CACHE or ~/.cache/svd-train). */
  cacheDir?: string;
  /** Log sink (one line per call). */
  log?: (line: string) => void;
  /** Give up after this many failed connection attempts in a row (default: never). */
  maxAttempts?: number;
}

/** How `runWorker` ended. */
export interface WorkerResult {
  reason: string;
  steps: number;
}

type Model = ReturnType<typeof buildResNet>;

/** Refusals that retrying cannot fix: the worker stops instead of reconnecting. */
const FATAL_CODES = new Set(['AUTH_FAILED', 'PROTOCOL_VERSION', 'MANIFEST_MISMATCH', 'CONFIG_INVALID', 'BACKEND_UNAVAILABLE', 'RUN_ABORTED']);

/** Depth argument of buildResNet for a config model name. */
export function depthOf(model: RunConfig['model']): 20 | 32 | 44 | 56 | 110 | 'resnet18' {
  return model === 'resnet18' ? 'resnet18' : (Number(model.slice('resnet'.length)) as 20 | 32 | 44 | 56 | 110);
}

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
  let backend = opts.backend ?? 'auto';
  if (opts.cpu) {
    // "No GPU": hide the CUDA devices before any native TensorFlow loads.
    process.env.CUDA_VISIBLE_DEVICES = '-1';
    if (backend === 'tensorflow') log('--cpu: TensorFlow native backend will run on CPU');
  }
  const engine = await initEngine({ backend, ...(opts.threads !== undefined ? { threads: opts.threads } : {}), ...(opts.gpu !== undefined && !opts.cpu ? { gpu: opts.gpu } : {}) });
  backend = engine.backend as typeof backend;
  log(`backend ${engine.reason}`);
  const device = opts.cpu || opts.gpu === undefined ? 'cpu' : `gpu:${opts.gpu}`;
  const name = opts.name ?? `${hostname()}:${process.pid}`;
  const state: WorkerState = { model: null, hash: null, config: null, train: null, test: null, steps: 0, broadcastBuffers: [] };

  let failures = 0;
  for (;;) {
    let conn: Connection;
    try {
      conn = await Connection.open(opts.coordinator, 1024 * 1024 * 1024);
    } catch (e) {
      failures++;
      if (opts.maxAttempts !== undefined && failures >= opts.maxAttempts) {
        throw new SvdTrainError(
          'CONNECTION_FAILED' as never,
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
      end = await session(conn, { ...opts, log, name, device, backend: engine.backend }, state);
    } catch (e) {
      // A worker that fails must not keep its socket open: the coordinator would wait for its
      // slice until the step timeout. Say why, then close, so the slice moves on at once.
      const err = e instanceof SvdTrainError ? e : new SvdTrainError('INTERNAL', `worker ${name} failed: ${(e as Error)?.stack ?? String(e)}`);
      await conn.send({ type: 'error', code: err.code, message: err.message }).catch(() => {});
      conn.close(1011, err.code);
      throw e;
    }
    conn.close();
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

async function session(conn: Connection, opts: SessionOpts, st: WorkerState): Promise<SessionEnded> {
  const { log } = opts;
  let handshakeDone = false;
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
  });
  for (;;) {
    const m = await conn.next();
    if (isClose(m)) return new SessionEnded(`closed (${m.code}${m.reason ? `: ${m.reason}` : ''})`, null, false, handshakeDone);
    const msg: Message = m;
    switch (msg.type) {
      case 'challenge': {
        const token = opts.token ?? process.env.SVD_TRAIN_TOKEN ?? null;
        if (!token && !msg.authRequired) {
          await conn.send({ type: 'auth', mac: '' });
          break;
        }
        if (!token) {
          return new SessionEnded(
            'no token',
            new SvdTrainError(
              'AUTH_FAILED',
              'The coordinator requires a token and this worker has none. Fix: pass --token or set SVD_TRAIN_TOKEN to the coordinator\'s token.',
            ),
            false,
            false,
          );
        }
        await conn.send({ type: 'auth', mac: answerChallenge(token, msg.nonce) });
        break;
      }
      case 'welcome': {
        const cfg = parseConfig(msg.config);
        const hash = configHash(cfg);
        if (msg.configHash && msg.configHash !== hash) {
          return new SessionEnded(
            'config hash',
            new SvdTrainError(
              'CONFIG_INVALID',
              `Config hash mismatch: coordinator says ${msg.configHash}, this worker computes ${hash}. Fix: run the same svd-train version on both sides.`,
            ),
            false,
            false,
          );
        }
        if (st.hash !== hash || !st.model) {
          st.model = buildResNet({ depth: depthOf(cfg.model), svd: cfg.svd, decomposition: cfg.decomposition, numClasses: 10, forward: cfg.forward, ranks: cfg.ranks, seed: cfg.seed });
          st.hash = hash;
          st.config = cfg;
          st.train = st.test = null;
          log(`model ${cfg.model} (svd=${cfg.svd}, ${cfg.decomposition}${cfg.ranks ? `, ${Object.keys(cfg.ranks).length} per-layer ranks` : ''}) built; config ${hash.slice(0, 12)}`);
        }
        if (!st.train) {
          const dir = await ensureDataset(msg.datasetInfo, {
            localDir: localData,
            cacheRoot: opts.cacheDir ?? defaultCacheRoot(),
            log,
            fetch: (file) => fetchFile(conn, file),
          });
          st.train = readCifar10(dir, 'train');
          st.test = readCifar10(dir, 'test');
        }
        const spec = (t: WireTensor) => ({ name: t.name, shape: [...t.shape] });
        await conn.send({
          type: 'manifest',
          configHash: hash,
          params: getParameters(st.model).map(spec),
          buffers: getBuffers(st.model).map(spec),
        });
        handshakeDone = true;
        break;
      }
      case 'weights': {
        setParameters(st.model!, msg.params);
        if (msg.buffers.length) setBuffers(st.model!, msg.buffers);
        st.broadcastBuffers = msg.buffers;
        break;
      }
      case 'step': {
        const cfg = st.config!;
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
        const idx = msg.indices;
        const split = msg.split === 'train' ? st.train! : st.test!;
        const t0 = performance.now();
        let correct = 0;
        let lossSum = 0;
        let n = 0;
        // Same heap cap as training: evaluate in chunks.
        const chunk = st.config!.maxWorkerBatch;
        for (let lo = 0; lo < idx.length; lo += chunk) {
          const part = idx.subarray(lo, Math.min(idx.length, lo + chunk));
          const { x, y } = assembleBatch(split, part, { seed: 0, epoch: 0, augment: false });
          const r = evaluate(st.model!, x, y);
          correct += r.correct;
          lossSum += r.lossSum;
          n += r.n;
        }
        await conn.send({ type: 'eval-result', evalId: msg.evalId, correct, lossSum, n, computeMs: performance.now() - t0 });
        break;
      }
      case 'error': {
        const code = msg.code;
        log(`coordinator error ${code}: ${msg.message}`);
        if (FATAL_CODES.has(code)) {
          const what = code === 'RUN_ABORTED' ? 'The coordinator stopped the run' : 'Coordinator refused this worker';
          return new SessionEnded(code, new SvdTrainError(code as never, `${what}: ${msg.message}`), false, handshakeDone);
        }
        break;
      }
      case 'shutdown':
        return new SessionEnded(msg.reason || 'training finished', null, true, handshakeDone);
      default:
        log(`ignoring unexpected message type ${JSON.stringify(msg.type)} from the coordinator`);
    }
  }
}


/**
 * Fetches one dataset file: a data-request answered by `total` data-chunk frames in order.
 * Runs inside the handshake, before any step, so no other message can interleave.
 */
async function fetchFile(conn: Connection, file: string): Promise<Uint8Array> {
  await conn.send({ type: 'data-request', file });
  const parts: Uint8Array[] = [];
  for (;;) {
    const r = await conn.next();
    if (isClose(r)) throw new SvdTrainError('DATA_MISSING', `The coordinator closed the connection while sending ${file} (${r.reason}).`);
    if (r.type === 'error') throw new SvdTrainError('DATA_MISSING', `The coordinator could not send ${file}: [${r.code}] ${r.message}`);
    if (r.type !== 'data-chunk' || r.file !== file) {
      throw new SvdTrainError('PROTOCOL_INVALID', `Expected data-chunk of ${file}; got ${r.type}. Fix: run the same svd-train version on coordinator and worker.`);
    }
    if (r.index !== parts.length) {
      throw new SvdTrainError('PROTOCOL_INVALID', `data-chunk ${r.index} of ${file} arrived after ${parts.length} chunks; expected chunk ${parts.length}.`);
    }
    parts.push(r.bytes);
    if (parts.length === r.total) break;
  }
  return Buffer.concat(parts);
}
