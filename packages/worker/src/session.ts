/**
 * One connection's session of a worker: the handshake (hello, challenge/auth, welcome, manifest),
 * then the loop that answers `weights`, `step` and `eval` until the coordinator says shutdown or
 * the connection ends. Every message from the coordinator is checked for its place in the session
 * and its contents before use (coordinator-checks.ts); the outcome is a `SessionEnded` that
 * `runWorker` (worker.ts) turns into a reconnect, a clean exit or a refusal.
 */
import { existsSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import {
  CIFAR_OFFICIAL_FILE_BYTES,
  DATA_CHUNK_BYTES,
  DATA_CHUNK_FRAME_BYTES,
  DEFAULTS,
  IDLE_TIMEOUT_MS,
  PROTOCOL_VERSION,
  SvdTrainError,
  archLabel,
  assembleBatch,
  authProof,
  configHash,
  cacheRoot,
  escapeForLog,
  isErrorCode,
  makeNonce,
  parseConfig,
  readCifar10,
  sparsityWeightAt,
  stepsPerEpoch,
  tensorFrameBytes,
  verifyAuthProof,
  CIFAR_FILES,
  type Cifar10Split,
  type ErrorCode,
  type Message,
  type RunConfig,
  type TensorSpec,
  type WireTensor,
} from '@svd-train/core';
import {
  buildResNetForConfig,
  buildTeacherForConfig,
  evaluateSplit,
  getBuffers,
  getParameters,
  setBuffers,
  setWeights,
  trainingStepPath,
} from '@svd-train/layers';
import { sliceGradients } from './chunked-gradients.js';
import { checkCounts, checkDatasetInfo, checkEval, checkStep, checkWeights, outOfOrder } from './coordinator-checks.js';
import { Connection, isClose } from './connection.js';
import { ensureDataset } from './data-cache.js';
import type { WorkerOptions } from './worker.js';

type Model = ReturnType<typeof buildResNetForConfig>;

/** Refusals that retrying cannot fix: the worker stops instead of reconnecting. */
const FATAL_CODES: ReadonlySet<ErrorCode> = new Set<ErrorCode>(['AUTH_FAILED', 'PROTOCOL_VERSION', 'MANIFEST_MISMATCH', 'CONFIG_INVALID', 'BACKEND_UNAVAILABLE', 'RUN_ABORTED']);

export class SessionEnded {
  constructor(
    readonly reason: string,
    readonly fatal: SvdTrainError | null,
    readonly shutdown: boolean,
    readonly handshakeDone: boolean,
  ) {}
}

/** State kept across reconnects: the engine, the model for a config hash, the data. */
export interface WorkerState {
  model: Model | null;
  hash: string | null;
  config: RunConfig | null;
  train: Cifar10Split | null;
  test: Cifar10Split | null;
  /** The model's parameter and buffer specs (what `weights` must match). */
  manifest: { params: TensorSpec[]; buffers: TensorSpec[] } | null;
  /**
   * While the run distills: the teacher models (config.teacherArch at config.teacherRanks, then each
   * of config.extraTeachers) and their manifests (what each `teacher` message must match); else empty.
   */
  teachers: { model: Model; manifest: { params: TensorSpec[]; buffers: TensorSpec[] } }[];
  steps: number;
  /**
   * BN running statistics of the last `weights` broadcast. Every slice starts from them: a worker
   * given two slices of one step (a survivor recomputing a lost worker's slice) must not start the
   * second from the statistics the first one updated.
   */
  broadcastBuffers: WireTensor[];
  /** The config hash whose model's training path the log has said (`trainingStepPath`). */
  stepPathLogged?: string | null;
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

const specOf = (t: WireTensor): TensorSpec => ({ name: t.name, shape: [...t.shape] });

const STAGE_WAITS: Record<Stage, string> = {
  challenge: 'the challenge',
  welcome: 'the welcome',
  weights: 'the first weights',
  ready: 'work',
};

export async function session(conn: Connection, opts: SessionOpts, st: WorkerState): Promise<SessionEnded> {
  const { log } = opts;
  const handshakeMs = opts.handshakeTimeoutMs ?? DEFAULTS.handshakeTimeoutMs;
  let handshakeDone = false;
  let stage: Stage = 'challenge';
  let trainCount = 0;
  let testCount = 0;
  // Each teacher is sent once per connection, before the first weights, when the run distills.
  const teachersLoaded = new Set<number>();
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
          st.manifest = { params: getParameters(st.model).map(specOf), buffers: getBuffers(st.model).map(specOf) };
          log(`model ${cfg.model} (svd=${cfg.svd}, ${cfg.decomposition}${cfg.ranks ? `, ${Object.keys(cfg.ranks).length} per-layer ranks` : ''}) built; config ${hash.slice(0, 12)}`);
          for (const t of st.teachers) t.model.dispose();
          st.teachers = [];
          if (cfg.distillAlpha > 0) {
            // The teachers' weights come over the wire; their shapes are the config's to say.
            const specs = [cfg, ...cfg.extraTeachers];
            for (const t of specs) {
              const model = buildTeacherForConfig({ ...cfg, teacherRanks: t.teacherRanks, teacherArch: t.teacherArch });
              st.teachers.push({ model, manifest: { params: getParameters(model).map(specOf), buffers: getBuffers(model).map(specOf) } });
            }
            const what = specs.map((t) => `a ${t.teacherRanks ? 'pruned' : 'full-rank'} ${archLabel({ ...cfg, ...t.teacherArch })}`);
            log(`distilling (α ${cfg.distillAlpha}, T ${cfg.distillTemperature}) from ${what.length === 1 ? `${what[0]} teacher` : `${what.length} teachers (their mean softened output): ${what.join(', ')}`}`);
          }
        }
        // From here a frame may carry one model's tensors (a teacher's too) or one dataset chunk, nothing larger.
        conn.setLimit(Math.max(DATA_CHUNK_FRAME_BYTES, tensorFrameBytes(st.manifest!), ...st.teachers.map((t) => tensorFrameBytes(t.manifest))));
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
      case 'teacher': {
        if (stage !== 'weights') return violated(outOfOrder('teacher', `waiting for ${STAGE_WAITS[stage]}`));
        const teacher = st.teachers[msg.index];
        if (!teacher || teachersLoaded.has(msg.index)) {
          const why = st.teachers.length === 0
            ? 'this run does not distill (distillAlpha 0)'
            : teacher
              ? `teacher ${msg.index} was already sent on this connection`
              : `teacher ${msg.index} does not exist: this run has ${st.teachers.length} (indices 0–${st.teachers.length - 1})`;
          return violated(outOfOrder('teacher', why));
        }
        checkWeights(msg, teacher.manifest, msg.index === 0 ? 'the teacher model of this config (teacherRanks)' : `teacher ${msg.index} of this config (extraTeachers[${msg.index - 1}])`);
        setWeights(teacher.model, msg);
        teachersLoaded.add(msg.index);
        break;
      }
      case 'weights': {
        if (stage !== 'weights' && stage !== 'ready') return violated(outOfOrder('weights', `waiting for ${STAGE_WAITS[stage]}`));
        if (teachersLoaded.size < st.teachers.length) {
          return violated(outOfOrder('weights', `waiting for the teachers (this run distills: they come first; ${teachersLoaded.size} of ${st.teachers.length} received)`));
        }
        checkWeights(msg, st.manifest!);
        setWeights(st.model!, msg);
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
        const { x, y } = assembleBatch(st.train!, msg.indices, { seed: msg.seed, epoch: msg.epoch, augment: cfg.augment, cutout: cfg.cutout });
        const reg = { lambdaO: cfg.lambdaO, lambdaS: sparsityWeightAt(cfg, msg.step, stepsPerEpoch(trainCount, cfg.batch)), sparsity: cfg.sparsity };
        const distill = st.teachers.length ? { teachers: st.teachers.map((t) => t.model), alpha: cfg.distillAlpha, temperature: cfg.distillTemperature } : undefined;
        // Once per model: which path its steps take and why (the native step or tfjs' tape).
        if (st.stepPathLogged !== st.hash) {
          log(`training step ${trainingStepPath(st.model!, Math.min(y.length, cfg.maxWorkerBatch))}`);
          st.stepPathLogged = st.hash;
        }
        const r = sliceGradients(st.model!, x, y, reg, cfg.maxWorkerBatch, distill);
        const computeMs = performance.now() - t0;
        st.steps++;
        await conn.send({
          type: 'gradients',
          step: msg.step,
          attempt: msg.attempt,
          n: r.n,
          grads: r.grads,
          buffers: r.buffers,
          loss: { ce: r.ce, orth: r.orth, sparsity: r.sparsity, total: r.total, ...(distill ? { distill: r.distill } : {}) },
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
      case 'shutdown': {
        const reason = escapeForLog(msg.reason) || 'training finished';
        // Another run follows on this address (the pipeline's fine-tuning): reconnect to it.
        if (msg.reconnect === true) return new SessionEnded(`${reason}; the coordinator goes on with another run`, null, false, handshakeDone);
        return new SessionEnded(reason, null, true, handshakeDone);
      }
      default:
        // hello, auth, manifest, gradients, eval-result, data-request are worker messages; a
        // data-chunk outside a transfer was never asked for.
        return violated(outOfOrder(msg.type, `waiting for ${STAGE_WAITS[stage]}`));
    }
  }
}

/**
 * Most chunks of one dataset file: every chunk but the last is DATA_CHUNK_BYTES (as the
 * coordinator's DatasetServer cuts them), and no file is larger than a CIFAR-10 batch file.
 */
export const MAX_FILE_CHUNKS = Math.ceil(CIFAR_OFFICIAL_FILE_BYTES / DATA_CHUNK_BYTES);

/**
 * Fetches one dataset file: a data-request answered by `total` data-chunk frames in order.
 * Runs inside the handshake, before any step, so no other message can interleave. The chunks must
 * be of this file, in order, with one total (1 to MAX_FILE_CHUNKS) and one md5, each but the last
 * DATA_CHUNK_BYTES long, and add up to at most a CIFAR-10 file. Worker side; exported for tests.
 */
export async function fetchFile(conn: Connection, file: string, timeoutMs: number): Promise<Uint8Array> {
  await conn.send({ type: 'data-request', file });
  const parts: Uint8Array[] = [];
  let bytes = 0;
  let first: { total: number; md5: string } | null = null;
  const bad = (what: string) => new SvdTrainError('PROTOCOL_INVALID', `coordinator sent ${what} while sending ${file}; this worker disconnects`);
  for (;;) {
    const r = await conn.next(timeoutMs, `chunk ${parts.length} of ${file}`);
    if (isClose(r)) throw r.error ?? new SvdTrainError('DATA_MISSING', `The coordinator closed the connection while sending ${file} (${r.reason}).`);
    if (r.type === 'error') throw new SvdTrainError('DATA_MISSING', `The coordinator could not send ${file}: [${escapeForLog(r.code, 40)}] ${escapeForLog(r.message)}`);
    if (r.type !== 'data-chunk' || r.file !== file) throw bad(`'${r.type}'${r.type === 'data-chunk' ? ` of '${escapeForLog(r.file, 80)}'` : ''}`);
    if (r.index !== parts.length) throw bad(`data-chunk ${r.index} after ${parts.length} chunks (expected chunk ${parts.length})`);
    if (!first) {
      // More chunks than a CIFAR-10 file fills would each be another part to hold, empty or not.
      if (!Number.isInteger(r.total) || r.total < 1 || r.total > MAX_FILE_CHUNKS) {
        throw bad(`data-chunk 0 with total ${r.total}; expected 1 to ${MAX_FILE_CHUNKS} chunks of ${DATA_CHUNK_BYTES} bytes (more would carry more than ${CIFAR_OFFICIAL_FILE_BYTES} bytes, the size of a CIFAR-10 batch file)`);
      }
      first = { total: r.total, md5: r.md5 };
    }
    if (r.total !== first.total || r.md5 !== first.md5) {
      throw bad(`data-chunk ${r.index} with total ${r.total} / md5 '${escapeForLog(r.md5, 80)}', after total ${first.total} / md5 '${escapeForLog(first.md5, 80)}'`);
    }
    const last = r.index === r.total - 1;
    const size = r.bytes.byteLength;
    if (size > DATA_CHUNK_BYTES || (!last && size !== DATA_CHUNK_BYTES)) {
      throw bad(`data-chunk ${r.index} of ${r.total} with ${size} bytes; expected ${last ? 'at most' : 'exactly'} ${DATA_CHUNK_BYTES} (every chunk but the last is full)`);
    }
    bytes += size;
    if (bytes > CIFAR_OFFICIAL_FILE_BYTES) throw bad(`more than ${CIFAR_OFFICIAL_FILE_BYTES} bytes (the size of a CIFAR-10 batch file)`);
    parts.push(r.bytes);
    if (last) break;
  }
  return Buffer.concat(parts);
}
