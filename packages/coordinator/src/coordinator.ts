/**
 * The coordinator of synchronous data-parallel training: a `ws` server that hands each worker its
 * slice of every global batch, validates and sample-weight-averages the gradients, applies the
 * optimizer and broadcasts the new weights (one encoded frame, the same bytes to every worker).
 *
 * It never imports TensorFlow.js: parameters are Float32Arrays in manifest (PyTorch
 * named_parameters) order. The single-worker run is the N=1 case of this same code.
 *
 * Slices: every step is split into the same number of slices (sub-batches), `slicesPerStep`: the
 * number of workers at the first step, raised when more workers are live at a later step, never
 * lowered. Batch norm normalizes each slice with its own statistics, so the slicing is part of the
 * math; keeping it fixed is what makes a run that loses a worker equal the uninterrupted run.
 *
 * Faults: a worker that disconnects, stalls past stepTimeoutMs, or sends anything invalid is named
 * in the log, told why (error message) and disconnected; each of its unanswered slices of the
 * current step (or evaluation) goes WHOLE, with a new attempt number, to the least-busy survivor,
 * which computes it as its own sub-batch (from the broadcast BN running statistics). So each sample
 * is used exactly once, with the same BN sub-batches as without the fault. With fewer than
 * minWorkers left, the coordinator waits. A (re)joining worker receives the current weights first.
 *
 * Numbers: sums are float64 (all-reduce.ts). A worker whose gradient norm is more than
 * OUTLIER_RATIO times the median of the other workers' slices of comparable size is dropped and its
 * slices recomputed. A step whose average gradient or updated parameters are not finite is never
 * applied or checkpointed: the run aborts with DIVERGED, as it does when one slice of a step has
 * failed MAX_SLICE_FAULTS times (non-finite or outlier) or every attempt so far failed.
 *
 * Bounded before trusted: every TCP connection (upgraded or not) must authenticate within
 * AUTH_DEADLINE_MS, at most MAX_UNAUTHENTICATED_CONNECTIONS wait at once, and until a peer has
 * proved the token its frames may be HANDSHAKE_MAX_BYTES at most (refused on the frame header).
 * Afterwards the limit is one model's tensors (`tensorFrameBytes`). `close()` never waits on a peer.
 */
import { randomUUID } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { performance } from 'node:perf_hooks';
import { WebSocketServer, type RawData, type WebSocket } from 'ws';
import {
  AUTH_DEADLINE_MS,
  EpochSampler,
  HANDSHAKE_MAX_BYTES,
  MAX_UNAUTHENTICATED_CONNECTIONS,
  PING_INTERVAL_MS,
  authProof,
  escapeForLog,
  makeNonce,
  setReceiveLimit,
  tensorFrameBytes,
  verifyAuthProof,
  SvdTrainError,
  configHash as computeConfigHash,
  createOptimizer,
  decodeMessage,
  encodeMessage,
  lrAt as scheduleLrAt,
  momentumAt,
  effectiveRanks,
  serializeConfig,
  splitBatch,
  type Checkpoint,
  type DatasetInfo,
  type EvalResultMessage,
  type GradientsMessage,
  type HelloMessage,
  type Message,
  type Optimizer,
  type ParamSet,
  type RunConfig,
  type WireTensor,
} from '@svd-train/core';
import { AllReduce, l2Norm } from './all-reduce.js';
import { DatasetServer } from './dataset-server.js';
import { authPolicy } from './handshake.js';
import { MetricsWriter, type EpochEvent, type EpochMetrics, type StepMetrics, type WorkerTiming } from './metrics.js';
import { checkGradients, checkManifest, type Manifest } from './round.js';
import { StallDetector } from './stall-detector.js';

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

/** What the coordinator saves and resumes from: core's checkpoint, so there is one definition. */
export type CoordinatorCheckpoint = Checkpoint;

export interface StepEvent {
  step: number;
  epoch: number;
  stepInEpoch: number;
  stepsPerEpoch: number;
  totalSteps: number;
  lr: number;
  loss: StepMetrics['loss'];
  trainAcc: number;
  n: number;
  stepMs: number;
  imgPerSec: number;
  workers: number;
  /** Which worker computed which samples (after any re-assignment); for accounting and tests. */
  slices: { worker: string; indices: Int32Array }[];
}

export interface TrainingSummary {
  steps: number;
  epochs: number;
  finalTestAcc: number | null;
  finalTrainAcc: number | null;
  params: WireTensor[];
  buffers: WireTensor[];
  wallMs: number;
  /** `resume` was given a checkpoint of a run that had already trained all its steps. */
  alreadyFinished?: boolean;
}

/** The first parameter element that is NaN or ±Infinity, or null. */
function firstNonFinite(set: ParamSet): { name: string; index: number; value: number } | null {
  for (const [name, d] of set) {
    for (let i = 0; i < d.length; i++) if (d[i] - d[i] !== 0) return { name, index: i, value: d[i] };
  }
  return null;
}

export interface CoordinatorOptions {
  config: RunConfig;
  /** Sizes (after limitTrain/limitTest) and md5s of the dataset the workers train on. */
  datasetInfo: DatasetInfo;
  /** Folder of the dataset files, to serve workers that have no copy; without it such workers are refused. */
  dataDir?: string;
  /** Authoritative initial weights (the CLI builds the model with @svd-train/layers). */
  initialParams?: WireTensor[];
  initialBuffers?: WireTensor[];
  /** The manifest every worker must present; default: the initial weights' specs, else the first worker's. */
  expectedManifest?: { params: { name: string; shape: number[] }[]; buffers: { name: string; shape: number[] }[] };
  /** Resume exactly from this checkpoint (weights, optimizer, sampler position). */
  resume?: CoordinatorCheckpoint;
  /** Fine-tune: start from these weights with a fresh optimizer and sampler. */
  from?: { params: WireTensor[]; buffers: WireTensor[] };
  /**
   * Workers expected at the start (the ones `--spawn` launches): the first step waits up to
   * handshakeTimeoutMs for this many, so that it does not start on whichever joined first, then goes
   * on with at least minWorkers.
   */
  expectWorkers?: number;
  /** Parameters never weight-decayed (BN gammas/betas: their names look like conv weights). */
  noDecay?: Iterable<string>;
  /** Persists a checkpoint (atomically); called every epoch and every checkpointEvery steps. */
  saveCheckpoint?: (ckpt: CoordinatorCheckpoint) => void | Promise<void>;
  /** metrics.jsonl path; null/undefined writes none. */
  metricsPath?: string | null;
  /** Learning rate at a global step; default core's lrAt(config, step, stepsPerEpoch). */
  lrAt?: (step: number, stepsPerEpoch: number) => number;
  onStep?: (e: StepEvent) => void;
  onEpoch?: (e: EpochEvent) => void;
  onLog?: (level: LogLevel, msg: string) => void;
  /** A worker finished its handshake. */
  onWorkerJoin?: (w: { id: string; name: string; backend: string; device: string }) => void;
  /** PEM certificate chain and private key: serve wss:// instead of ws://. */
  tls?: { cert: string | Buffer; key: string | Buffer };
}

type PeerState = 'hello' | 'auth' | 'manifest' | 'ready' | 'gone';

interface Task {
  kind: 'step' | 'eval';
  /** Unique id: the attempt of a step slice, the evalId of an eval slice. */
  id: number;
  /** Position of the slice in the job's index list (reduce order). */
  offset: number;
  indices: Int32Array;
  peer: Peer | null;
  sentAt: number;
  rttMs: number;
  result: GradientsMessage | EvalResultMessage | null;
  /** L2 norm of the gradients of a step result (for outlier attribution); 0 otherwise. */
  norm: number;
}

interface Peer {
  id: string;
  name: string;
  ws: WebSocket;
  /** The socket under `ws` (TLS or TCP), for the authentication deadline. */
  socket: Socket;
  state: PeerState;
  nonce: Uint8Array | null;
  hello: HelloMessage | null;
  /** Weights version (global step) this worker holds; -1: none yet. */
  weightsVersion: number;
  queue: Task[];
  current: Task | null;
  handshakeTimer: NodeJS.Timeout | null;
  /** Dataset chunks handed to the socket and not yet written out. */
  pendingChunks: number;
}

interface Job {
  kind: 'step' | 'eval';
  meta: { step: number; epoch: number; lr: number; split: 'train' | 'test' };
  tasks: Task[];
  unassigned: Task[];
  resolve: (tasks: Task[]) => void;
  reject: (e: Error) => void;
  /** Numeric faults so far (non-finite or outlier results), per slice offset and in total, with why. */
  faultsBySlice: Map<number, number>;
  faults: string[];
}

const now = (): number => performance.now();

/** A gradient this many times larger (L2 norm) than the median of the other workers' is a fault. */
export const OUTLIER_RATIO = 1e3;
/** Failures of one slice of a step (every worker that tried it) after which the run has diverged. */
export const MAX_SLICE_FAULTS = 3;
/**
 * The first checkpoint comes after this many steps (when checkpointEvery is larger), so that a run
 * killed before its first regular checkpoint (step 200 by default) is not lost.
 */
export const EARLY_CHECKPOINT_STEP = 20;
/** Error codes that are numeric faults of a step (count towards divergence) rather than protocol ones. */
const NUMERIC_FAULTS = new Set(['NON_FINITE', 'GRADIENT_OUTLIER']);
/** How long close() lets the shutdown frames drain before it destroys the sockets. */
const CLOSE_GRACE_MS = 500;

/** Dataset chunks one worker may have queued unsent (a whole CIFAR-10 file is 8). */
const MAX_PENDING_CHUNKS = 16;

/** Refusals of one kind (connections, peers dropped before authenticating) are logged at most once per this long (plus a count). */
const QUIET_LOG_MS = 5000;

export class Coordinator {
  readonly config: RunConfig;
  readonly configHash: string;
  private readonly opts: CoordinatorOptions;
  private server: WebSocketServer | null = null;
  private http: HttpServer | null = null;
  /** Every open TCP socket, upgraded or not, so close() can end them without waiting on a peer. */
  private readonly sockets = new Set<Socket>();
  /** Sockets (TLS or TCP, as the upgrade saw them) whose peer proved the token. */
  private readonly authed = new WeakSet<Socket>();
  private authedCount = 0;
  private pingTimer: NodeJS.Timeout | null = null;
  private readonly quiet = new Map<string, { more: number }>();
  private readonly peers = new Map<string, Peer>();
  private readonly auth: { required: boolean };
  private readonly stall: StallDetector;
  private readonly metrics: MetricsWriter;
  private readonly dataServer: DatasetServer | null;
  private manifest: Manifest | null = null;
  private params: ParamSet | null = null;
  private buffers: ParamSet | null = null;
  private weightsVersion = 0;
  private weightsFrame: Uint8Array | null = null;
  private job: Job | null = null;
  private nextTaskId = 1;
  private peerCounter = 0;
  private waiters: (() => void)[] = [];
  private fatal: SvdTrainError | null = null;
  private closed = false;
  /** Sub-batches per step (see the module header); 0 until the first step. */
  private slicesPerStep = 0;

  constructor(opts: CoordinatorOptions) {
    this.opts = opts;
    this.config = opts.config;
    this.configHash = computeConfigHash(opts.config);
    this.auth = authPolicy(opts.config.host, opts.config.token, opts.config.insecure);
    this.metrics = new MetricsWriter(opts.metricsPath ?? null, (level, msg) => this.log(level, msg));
    this.dataServer = opts.dataDir ? new DatasetServer(opts.dataDir, Object.keys(opts.datasetInfo.md5s)) : null;
    this.stall = new StallDetector({
      warnMs: opts.config.stallWarnMs,
      timeoutMs: opts.config.stepTimeoutMs,
      onWarn: (w, what, ms) => this.log('warn', `worker ${this.peerName(w)} is late: no answer to ${what} after ${Math.round(ms)} ms`),
      onTimeout: (w, what, ms) => this.onStallTimeout(w, what, ms),
    });
    const initial = opts.resume ?? opts.from ?? (opts.initialParams ? { params: opts.initialParams, buffers: opts.initialBuffers ?? [] } : null);
    if (opts.resume && opts.resume.configHash !== this.configHash) {
      throw new SvdTrainError(
        'CHECKPOINT_CONFIG_MISMATCH',
        `checkpoint at step ${opts.resume.step} was written with config hash ${opts.resume.configHash}, this run has ${this.configHash}; resume with the same math settings or use --from to fine-tune`,
      );
    }
    if (opts.resume) {
      // The killed run may have logged steps past its last checkpoint; they are trained again now.
      const dropped = this.metrics.truncateAfter(opts.resume.step);
      if (dropped) this.log('info', `metrics.jsonl: dropped ${dropped} line(s) written after the checkpoint at step ${opts.resume.step}; those steps are trained again`);
    }
    if (opts.expectedManifest) this.manifest = { ...opts.expectedManifest, source: 'coordinator' };
    if (initial) this.setWeights(initial.params, initial.buffers, 'coordinator');
  }

  // ------------------------------------------------------------------------------------------
  // Server and peers
  // ------------------------------------------------------------------------------------------

  /** Starts listening; resolves with the bound port (config.port 0 picks a free one). */
  async listen(): Promise<{ host: string; port: number }> {
    if (this.http) return this.address();
    const tls = this.opts.tls;
    // Our own HTTP(S) server rather than ws's: ws's would wait in close() for every socket,
    // including raw TCP that never upgrades, and gives no hook for the pre-upgrade deadline.
    const http = tls ? createHttpsServer({ cert: tls.cert, key: tls.key, handshakeTimeout: this.authDeadlineMs() }) : createHttpServer();
    this.http = http;
    // Until a peer has authenticated its frames are handshake-sized; onMessage raises the limit.
    const server = new WebSocketServer({ noServer: true, maxPayload: HANDSHAKE_MAX_BYTES, perMessageDeflate: false });
    this.server = server;
    // 'connection' is the raw TCP socket for both http and https: it counts against the cap.
    http.on('connection', (sock: Socket) => this.onTcp(sock));
    // The socket the upgrade will see (TLS after its handshake, else TCP) carries the deadline.
    http.on(tls ? 'secureConnection' : 'connection', (sock: Socket) => this.armAuthDeadline(sock));
    http.on('request', (_req: IncomingMessage, res: import('node:http').ServerResponse) => {
      res.writeHead(426, { 'content-type': 'text/plain', connection: 'close' });
      res.end('svd-train coordinator: connect with svd-worker (WebSocket)\n');
    });
    http.on('upgrade', (req: IncomingMessage, sock: Socket, head: Buffer) => {
      if (this.closed) return void sock.destroy();
      server.handleUpgrade(req, sock, head, (ws: WebSocket) => this.onConnection(ws, sock));
    });
    await new Promise<void>((resolve, reject) => {
      http.once('error', reject);
      http.listen(this.config.port, this.config.host, () => {
        http.removeListener('error', reject);
        resolve();
      });
    });
    http.on('error', (e: Error) => this.log('error', `server error: ${e.message}`));
    // Pings let a worker tell a dead or silent coordinator from one that is busy or waiting.
    this.pingTimer = setInterval(() => {
      for (const p of this.peers.values()) if (p.ws.readyState === 1) p.ws.ping();
    }, PING_INTERVAL_MS);
    this.pingTimer.unref?.();
    const a = this.address();
    this.log('info', `coordinator listening on ${tls ? 'wss' : 'ws'}://${a.host}:${a.port} (auth ${this.auth.required ? 'required' : 'off: loopback/insecure'}${tls ? ', TLS' : ''})`);
    return a;
  }

  /** Milliseconds a connection has from TCP accept to a verified token proof. */
  private authDeadlineMs(): number {
    return Math.min(AUTH_DEADLINE_MS, this.config.handshakeTimeoutMs);
  }

  private onTcp(sock: Socket): void {
    if (this.closed) return void sock.destroy();
    // Every authenticated peer holds exactly one TCP socket, so this counts the unauthenticated ones.
    if (this.sockets.size - this.authedCount >= MAX_UNAUTHENTICATED_CONNECTIONS) {
      this.logQuietly('cap', 'warn', `refused a connection from ${escapeForLog(sock.remoteAddress)}: ${MAX_UNAUTHENTICATED_CONNECTIONS} unauthenticated connections are already open`);
      sock.destroy();
      return;
    }
    this.sockets.add(sock);
    sock.once('close', () => this.sockets.delete(sock));
  }

  private armAuthDeadline(sock: Socket): void {
    const ms = this.authDeadlineMs();
    const t = setTimeout(() => {
      if (this.authed.has(sock) || sock.destroyed) return;
      // An upgraded peer is told why (coded error, close 1008); a socket that never upgraded is just cut.
      const peer = [...this.peers.values()].find((p) => p.socket === sock);
      if (peer) this.dropPeer(peer, 'PEER_TIMEOUT', `handshake not finished within ${ms} ms (not authenticated)`);
      else {
        this.logQuietly('no-upgrade', 'info', `closed a connection from ${escapeForLog(sock.remoteAddress)}: no WebSocket upgrade within ${ms} ms`);
        sock.destroy();
      }
    }, ms);
    t.unref?.();
    sock.once('close', () => clearTimeout(t));
  }

  /** Largest frame an authenticated worker may send: one model's tensors (gradients), else the configured cap. */
  private authedFrameLimit(): number {
    const m = this.manifest;
    return m ? Math.min(this.config.maxMessageBytes, tensorFrameBytes(m)) : this.config.maxMessageBytes;
  }

  address(): { host: string; port: number } {
    const a = this.http?.address();
    if (!a || typeof a === 'string') return { host: this.config.host, port: this.config.port };
    return { host: this.config.host, port: a.port };
  }

  /** Number of workers past the handshake. */
  get liveWorkers(): number {
    return this.live().length;
  }

  private live(): Peer[] {
    return [...this.peers.values()].filter((p) => p.state === 'ready');
  }

  private peerName(id: string): string {
    const p = this.peers.get(id);
    return p ? `${p.name} (${p.id})` : id;
  }

  private log(level: LogLevel, msg: string): void {
    this.opts.onLog?.(level, msg);
  }

  /**
   * Logs the first event of `kind`, then at most one line per QUIET_LOG_MS saying how many more
   * there were: thousands of refused connections a second must not turn into a log flood.
   */
  private logQuietly(kind: string, level: LogLevel, msg: string): void {
    const q = this.quiet.get(kind);
    if (q) {
      q.more++;
      return;
    }
    this.log(level, msg);
    const entry = { more: 0 };
    this.quiet.set(kind, entry);
    setTimeout(() => {
      this.quiet.delete(kind);
      if (entry.more) this.log(level, `${msg} (and ${entry.more} more like this within ${QUIET_LOG_MS / 1000} s)`);
    }, QUIET_LOG_MS).unref?.();
  }

  private onConnection(ws: WebSocket, socket: Socket): void {
    if (this.closed) {
      ws.terminate();
      return;
    }
    // Connection ids start with 'c' so they never read like a worker's own name: spawned workers
    // are named w0, w1, … and an id like 'w1-…' next to worker w0 looked like a mislabel.
    const id = `c${++this.peerCounter}-${randomUUID().slice(0, 4)}`;
    const peer: Peer = { id, name: id, ws, socket, state: 'hello', nonce: null, hello: null, weightsVersion: -1, queue: [], current: null, handshakeTimer: null, pendingChunks: 0 };
    this.peers.set(id, peer);
    this.armHandshakeTimer(peer);
    ws.on('message', (data: RawData) => {
      try {
        const authed = peer.state === 'manifest' || peer.state === 'ready';
        this.onMessage(peer, decodeMessage(data as Uint8Array | ArrayBuffer | Uint8Array[], { maxBytes: authed ? this.authedFrameLimit() : HANDSHAKE_MAX_BYTES }));
      } catch (e) {
        const err = e instanceof SvdTrainError ? e : new SvdTrainError('INTERNAL', `while handling a message from ${peer.name}: ${(e as Error)?.stack ?? String(e)}`);
        this.dropPeer(peer, err.code, err.message);
      }
    });
    ws.on('close', (code: number, reason: Buffer) => {
      if (peer.state !== 'gone') this.dropPeer(peer, null, `disconnected (code ${code}${reason?.length ? `: ${escapeForLog(reason.toString())}` : ''})`);
    });
    ws.on('error', (e: Error) => {
      // ws refuses an over-limit frame on its header (close 1009) before buffering its payload.
      const tooLarge = (e as { code?: string }).code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH';
      if (peer.state !== 'gone') this.dropPeer(peer, tooLarge ? 'FRAME_TOO_LARGE' : null, tooLarge ? `sent a frame larger than the ${peer.state === 'hello' || peer.state === 'auth' ? `${HANDSHAKE_MAX_BYTES}-byte limit before authentication` : `${this.authedFrameLimit()}-byte limit (one model's tensors)`}` : `socket error: ${escapeForLog(e.message)}`);
    });
  }

  /** (Re)starts the handshake deadline; a data transfer restarts it per file so a slow download is not cut off. */
  private armHandshakeTimer(peer: Peer): void {
    if (peer.handshakeTimer) clearTimeout(peer.handshakeTimer);
    peer.handshakeTimer = setTimeout(() => {
      if (peer.state !== 'ready' && peer.state !== 'gone') this.dropPeer(peer, 'PROTOCOL_INVALID', `handshake not finished within ${this.config.handshakeTimeoutMs} ms`);
    }, this.config.handshakeTimeoutMs);
    peer.handshakeTimer.unref?.();
  }

  private send(peer: Peer, msg: Message | Uint8Array): void {
    if (peer.state === 'gone' || peer.ws.readyState !== 1) return;
    peer.ws.send(msg instanceof Uint8Array ? msg : encodeMessage(msg));
  }

  /**
   * Removes a worker: tells it why (when `code` is given), closes the socket, and re-assigns its
   * unanswered work. Never throws: this is the path every fault funnels into.
   */
  private dropPeer(peer: Peer, code: string | null, why: string): void {
    if (peer.state === 'gone') return;
    const wasReady = peer.state === 'ready';
    const unauthenticated = peer.state === 'hello' || peer.state === 'auth';
    peer.state = 'gone';
    this.peers.delete(peer.id);
    if (peer.handshakeTimer) clearTimeout(peer.handshakeTimer);
    this.stall.clear(peer.id);
    const line = `worker ${peer.name} (${peer.id}) dropped: ${code ? `${code}: ` : ''}${why}`;
    const level: LogLevel = code ? 'warn' : wasReady ? 'warn' : 'info';
    // Anyone can connect and be dropped before authenticating: per code, those lines are rate-limited.
    if (unauthenticated) this.logQuietly(`drop:${code ?? 'disconnect'}`, level, line);
    else this.log(level, line);
    // A numeric fault (NaN gradients, a gradient outlier) counts against the slice the peer was
    // computing: if every worker that tries a slice fails it, the run diverged. Counted before the
    // peer is told why, so that the fault that ends the run tells this peer RUN_ABORTED (it exits)
    // rather than NON_FINITE (it would reconnect to a coordinator that is going away).
    if (code && NUMERIC_FAULTS.has(code) && peer.current && !peer.current.result && this.job?.kind === 'step') {
      this.noteFault(peer.current, `worker ${peer.name}: ${why}`);
      if (this.fatal) [code, why] = ['RUN_ABORTED', `the coordinator stopped the run: [${this.fatal.code}] ${this.fatal.message}`];
    }
    if (this.authed.has(peer.socket)) {
      this.authed.delete(peer.socket);
      this.authedCount--;
    }
    try {
      if (code && peer.ws.readyState === 1) peer.ws.send(encodeMessage({ type: 'error', code, message: why }));
      peer.ws.close(code ? 1008 : 1000, code ?? 'bye');
      // A peer that ignores the close handshake must not hold the socket open.
      setTimeout(() => peer.ws.terminate(), 1000).unref?.();
    } catch {
      peer.ws.terminate();
    }
    const orphans = [...(peer.current ? [peer.current] : []), ...peer.queue].filter((t) => !t.result);
    peer.current = null;
    peer.queue = [];
    if (this.job && orphans.length && !this.fatal) this.reassign(orphans, `worker ${peer.name} left`);
  }

  /** Counts a numeric fault of `t`'s slice; aborts the run (DIVERGED) when the step cannot succeed. */
  private noteFault(t: Task, why: string): void {
    const job = this.job;
    if (!job || this.fatal) return;
    const n = (job.faultsBySlice.get(t.offset) ?? 0) + 1;
    job.faultsBySlice.set(t.offset, n);
    job.faults.push(why);
    const anyGood = job.tasks.some((x) => x.result && x.result.n > 0);
    if (n < MAX_SLICE_FAULTS && (anyGood || job.faults.length < MAX_SLICE_FAULTS)) return;
    // The same fault repeated (one worker retrying) is listed once with a count.
    const distinct = new Map<string, number>();
    for (const f of job.faults) distinct.set(f, (distinct.get(f) ?? 0) + 1);
    const listed = [...distinct].slice(0, 3).map(([f, k]) => (k > 1 ? `${f} (${k} times)` : f));
    this.fatal = new SvdTrainError(
      'DIVERGED',
      `step ${job.meta.step} (lr ${job.meta.lr.toExponential(2)}) failed ${job.faults.length} time(s)${n >= MAX_SLICE_FAULTS ? `, ${n} times on the same slice of ${t.indices.length} samples` : ' with no good slice'}: ` +
        `${listed.join('; ')}. Expected finite gradients of ordinary size; the training diverged (every worker that tried failed). ` +
        'Fix: lower --lr (or --lambda-o/--lambda-s) and start again, or fine-tune from the last checkpoint with --from CKPT and a lower --lr.',
      { step: job.meta.step, faults: job.faults.length },
    );
    this.log('error', this.fatal.message);
    job.reject(this.fatal);
    this.wake();
  }

  private onMessage(peer: Peer, msg: Message): void {
    if (peer.state === 'gone') return;
    if (msg.type === 'error') {
      this.dropPeer(peer, null, `worker reported ${escapeForLog(msg.code, 40)}: ${escapeForLog(msg.message)}`);
      return;
    }
    switch (peer.state) {
      case 'hello': {
        if (msg.type !== 'hello') throw new SvdTrainError('PROTOCOL_INVALID', `expected 'hello' first, got '${msg.type}'`);
        peer.hello = msg;
        // The peer chose these strings and is not authenticated yet: never log them raw.
        peer.name = `${escapeForLog(msg.workerName, 64)}@${escapeForLog(msg.hostname, 64)}`;
        const nonce = makeNonce();
        peer.nonce = nonce;
        peer.state = 'auth';
        const token = this.config.token;
        // Our own proof on the worker's nonce: a worker with a token refuses a coordinator without it.
        const proof = token ? authProof(token, 'coordinator', { worker: msg.nonce, coordinator: nonce }) : '';
        this.send(peer, { type: 'challenge', nonce, authRequired: this.auth.required, proof });
        return;
      }
      case 'auth':
        if (msg.type !== 'auth') throw new SvdTrainError('PROTOCOL_INVALID', `expected 'auth' after the challenge, got '${msg.type}'`);
        if (this.auth.required && !verifyAuthProof(this.config.token ?? '', 'worker', { worker: peer.hello!.nonce, coordinator: peer.nonce! }, msg.mac)) {
          throw new SvdTrainError('AUTH_FAILED', `authentication failed: the worker's token does not match the coordinator's; pass the same token (--token-file, SVD_TRAIN_TOKEN or --token) to both`);
        }
        peer.state = 'manifest';
        this.authed.add(peer.socket);
        this.authedCount++;
        setReceiveLimit(peer.ws, this.authedFrameLimit());
        this.send(peer, { type: 'welcome', workerId: peer.id, config: serializeConfig(this.config), configHash: this.configHash, datasetInfo: this.opts.datasetInfo });
        return;
      case 'manifest':
        if (msg.type === 'data-request') {
          this.armHandshakeTimer(peer);
          return this.serveData(peer, msg.file);
        }
        if (msg.type !== 'manifest') throw new SvdTrainError('PROTOCOL_INVALID', `expected 'manifest' or 'data-request' after welcome, got '${msg.type}'`);
        if (msg.configHash !== this.configHash) {
          throw new SvdTrainError('MANIFEST_MISMATCH', `worker computes config hash ${msg.configHash}, the coordinator ${this.configHash}; run the same svd-train version on both`);
        }
        if (this.manifest) checkManifest(msg, this.manifest, peer.name);
        if (!this.params) {
          if (!msg.initial) throw new SvdTrainError('PROTOCOL_INVALID', `the coordinator has no initial weights yet, and worker ${peer.name}'s manifest carries none ('initial'); the first worker must send them`);
          this.setWeights(msg.initial.params, msg.initial.buffers, peer.name);
          if (!this.manifest) this.manifest = { params: msg.params, buffers: msg.buffers, source: `worker ${peer.name}` };
          checkManifest(msg, this.manifest, peer.name);
        }
        if (!this.manifest) this.manifest = { params: msg.params, buffers: msg.buffers, source: `worker ${peer.name}` };
        peer.state = 'ready';
        // Now the manifest is known for certain: from here on a frame is at most one model's tensors.
        setReceiveLimit(peer.ws, this.authedFrameLimit());
        if (peer.handshakeTimer) clearTimeout(peer.handshakeTimer);
        this.log('info', `worker ${peer.name} (${peer.id}) joined: backend ${peer.hello!.backend}, ${peer.hello!.device}`);
        this.opts.onWorkerJoin?.({ id: peer.id, name: peer.name, backend: peer.hello!.backend, device: peer.hello!.device });
        this.onPeerReady(peer);
        return;
      case 'ready':
        if (msg.type === 'data-request') return this.serveData(peer, msg.file);
        if (msg.type === 'gradients' || msg.type === 'eval-result') return this.onResult(peer, msg);
        throw new SvdTrainError('PROTOCOL_INVALID', `unexpected '${msg.type}' from a worker during training`);
    }
  }

  private serveData(peer: Peer, file: string): void {
    if (!this.dataServer) throw new SvdTrainError('DATA_MISSING', `worker asked for dataset file '${escapeForLog(file, 80)}', but this coordinator was started without --data to serve; give the worker its own copy`);
    // A worker fetches one file at a time; one that keeps asking without reading would make
    // the coordinator queue the dataset again and again in its socket buffers.
    if (peer.pendingChunks > MAX_PENDING_CHUNKS) {
      throw new SvdTrainError('PROTOCOL_INVALID', `asked for dataset file '${escapeForLog(file, 80)}' while ${peer.pendingChunks} chunks of earlier files are still unsent; fetch one file at a time`);
    }
    for (const chunk of this.dataServer.chunks(file)) {
      if (peer.state === 'gone' || peer.ws.readyState !== 1) return;
      peer.pendingChunks++;
      peer.ws.send(encodeMessage(chunk), () => peer.pendingChunks--);
    }
  }

  private setWeights(params: readonly WireTensor[], buffers: readonly WireTensor[], source: string): void {
    const spec = { params: params.map((t) => ({ name: t.name, shape: [...t.shape] })), buffers: buffers.map((t) => ({ name: t.name, shape: [...t.shape] })) };
    if (this.manifest) checkManifest(spec, this.manifest, source);
    else this.manifest = { ...spec, source };
    this.params = new Map(params.map((t) => [t.name, Float32Array.from(t.data)]));
    this.buffers = new Map(buffers.map((t) => [t.name, Float32Array.from(t.data)]));
    this.weightsFrame = null;
  }

  private weightsMessageFrame(): Uint8Array {
    if (!this.weightsFrame) {
      this.weightsFrame = encodeMessage({ type: 'weights', step: this.weightsVersion, params: this.tensors(this.params!), buffers: this.tensors(this.buffers!) });
    }
    return this.weightsFrame;
  }

  private tensors(set: ParamSet): WireTensor[] {
    const specs = set === this.params ? this.manifest!.params : this.manifest!.buffers;
    return specs.map((s) => ({ name: s.name, shape: s.shape, data: set.get(s.name)! }));
  }

  private onPeerReady(peer: Peer): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
    if (this.job && this.job.unassigned.length && this.live().length >= this.minLive()) {
      const parked = this.job.unassigned;
      this.job.unassigned = [];
      this.reassign(parked, `worker ${peer.name} joined`);
    }
  }

  private minLive(): number {
    return Math.max(1, this.config.minWorkers);
  }

  /** Resolves once at least `n` workers are ready (and weights are known), or false at `deadline` (ms, `now()` clock). */
  private async waitForWorkers(n: number, deadline = Infinity): Promise<boolean> {
    while (this.live().length < n || !this.params) {
      this.throwIfFatal();
      if (this.closed) throw new SvdTrainError('INTERNAL', 'coordinator closed while waiting for workers');
      const left = deadline - now();
      if (left <= 0) return false;
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((r) => {
        this.waiters.push(r);
        if (Number.isFinite(left)) timer = setTimeout(r, left);
      });
      clearTimeout(timer);
    }
    return true;
  }

  private throwIfFatal(): void {
    if (this.fatal) throw this.fatal;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  // ------------------------------------------------------------------------------------------
  // Jobs: a step or an evaluation, scattered over the live workers
  // ------------------------------------------------------------------------------------------

  private newTask(kind: Task['kind'], offset: number, indices: Int32Array): Task {
    return { kind, id: this.nextTaskId++, offset, indices, peer: null, sentAt: 0, rttMs: 0, result: null, norm: 0 };
  }

  /**
   * How many sub-batches a step is split into: never fewer than before (a lost worker's slice is
   * recomputed whole, see the module header), more when more workers are live. Evaluation has no
   * batch statistics, so it is simply split over the live workers.
   */
  private slicesFor(kind: Job['kind'], live: number, step: number): number {
    if (kind === 'eval') return live;
    if (live > this.slicesPerStep) {
      if (this.slicesPerStep > 0) {
        this.log('info', `${live} workers live: from step ${step} on, each step is split into ${live} sub-batches instead of ${this.slicesPerStep} (batch norm normalizes each one separately)`);
      }
      this.slicesPerStep = live;
    }
    return this.slicesPerStep;
  }

  /** Sub-batches per step so far (0 before the first step); saved in checkpoints so a resume keeps it. */
  get stepSlices(): number {
    return this.slicesPerStep;
  }

  private async runJob(kind: Job['kind'], indices: Int32Array, meta: Job['meta']): Promise<Task[]> {
    await this.waitForWorkers(this.minLive());
    return new Promise<Task[]>((resolve, reject) => {
      const job: Job = { kind, meta, tasks: [], unassigned: [], resolve, reject, faultsBySlice: new Map(), faults: [] };
      this.job = job;
      const live = this.live();
      const slices = splitBatch(indices, Array.from({ length: this.slicesFor(kind, live.length, meta.step) }, () => 1));
      let off = 0;
      slices.forEach((s, i) => {
        const t = this.newTask(kind, off, s);
        off += s.length;
        job.tasks.push(t);
        // Round-robin: with fewer workers than slices, a worker computes several, one at a time.
        this.assign(t, live[i % live.length]);
      });
      this.checkJobDone();
    }).finally(() => {
      this.job = null;
    });
  }

  /** The live worker with the least outstanding work (first in join order on ties). */
  private leastBusy(live: Peer[]): Peer {
    const load = (p: Peer) => p.queue.length + (p.current ? 1 : 0);
    return live.reduce((best, p) => (load(p) < load(best) ? p : best));
  }

  /**
   * Gives each unanswered task, whole and under a new id (attempt), to the least-busy live worker,
   * or parks it until enough workers are back. Whole, not re-split: the slice is one BN sub-batch.
   */
  private reassign(tasks: Task[], why: string): void {
    const job = this.job!;
    job.tasks = job.tasks.filter((t) => !tasks.includes(t));
    const live = this.live();
    if (live.length < this.minLive()) {
      this.log('warn', `${why}: ${live.length} worker(s) left, fewer than --min-workers ${this.minLive()}; waiting for workers`);
      for (const t of tasks) {
        const fresh = this.newTask(t.kind, t.offset, t.indices);
        job.tasks.push(fresh);
        job.unassigned.push(fresh);
      }
      return;
    }
    let moved = 0;
    const to = new Set<string>();
    for (const t of tasks) {
      const fresh = this.newTask(t.kind, t.offset, t.indices);
      job.tasks.push(fresh);
      const peer = this.leastBusy(live);
      to.add(peer.name);
      this.assign(fresh, peer);
      moved += t.indices.length;
    }
    if (moved) {
      this.log('info', `${why}: re-assigned ${tasks.length} slice(s), ${moved} sample(s) of ${job.kind} ${job.kind === 'step' ? job.meta.step : job.meta.split}, whole, to ${[...to].join(', ')}`);
    }
    this.checkJobDone();
  }

  private emptyResult(t: Task): GradientsMessage | EvalResultMessage {
    if (t.kind === 'eval') return { type: 'eval-result', evalId: t.id, n: 0, correct: 0, lossSum: 0 };
    return { type: 'gradients', step: this.job!.meta.step, attempt: t.id, n: 0, grads: [], buffers: [], loss: { ce: 0, orth: 0, sparsity: 0, total: 0 }, correct: 0, computeMs: 0 };
  }

  private assign(t: Task, peer: Peer): void {
    if (t.indices.length === 0) {
      t.result = this.emptyResult(t);
      return;
    }
    t.peer = peer;
    peer.queue.push(t);
    if (!peer.current) this.dispatch(peer);
  }

  private dispatch(peer: Peer): void {
    const t = peer.queue.shift();
    if (!t) return;
    const job = this.job!;
    peer.current = t;
    t.sentAt = now();
    if (peer.weightsVersion !== this.weightsVersion) {
      this.send(peer, this.weightsMessageFrame());
      peer.weightsVersion = this.weightsVersion;
    }
    if (t.kind === 'step') {
      this.send(peer, { type: 'step', step: job.meta.step, epoch: job.meta.epoch, seed: this.config.seed, indices: t.indices, lr: job.meta.lr, attempt: t.id });
      this.stall.track(peer.id, `step ${job.meta.step} attempt ${t.id}`);
    } else {
      this.send(peer, { type: 'eval', evalId: t.id, split: job.meta.split, indices: t.indices });
      this.stall.track(peer.id, `eval ${t.id} (${t.indices.length} ${job.meta.split} samples)`);
    }
  }

  private onResult(peer: Peer, msg: GradientsMessage | EvalResultMessage): void {
    const t = peer.current;
    if (!t || !this.job) throw new SvdTrainError('ROUND_MISMATCH', `worker ${peer.name} sent '${msg.type}' but was asked for nothing`);
    if (msg.type === 'gradients') {
      if (t.kind !== 'step') throw new SvdTrainError('ROUND_MISMATCH', `worker ${peer.name} sent gradients but was asked for eval ${t.id}`);
      checkGradients(msg, { step: this.job.meta.step, attempt: t.id, n: t.indices.length }, this.manifest!, peer.name);
      t.norm = l2Norm(msg.grads);
    } else {
      if (t.kind !== 'eval' || msg.evalId !== t.id) {
        throw new SvdTrainError('ROUND_MISMATCH', `worker ${peer.name} sent eval-result ${msg.evalId}, but the coordinator asked for ${t.kind} ${t.id}`);
      }
      if (msg.n !== t.indices.length || msg.correct > msg.n) {
        throw new SvdTrainError('ROUND_MISMATCH', `worker ${peer.name} evaluated n=${msg.n} (correct ${msg.correct}), but was given ${t.indices.length} samples`);
      }
    }
    this.stall.clear(peer.id);
    t.rttMs = now() - t.sentAt;
    t.result = msg;
    peer.current = null;
    this.dispatch(peer);
    this.checkJobDone();
  }

  private checkJobDone(): void {
    const job = this.job;
    if (!job || job.unassigned.length || this.fatal) return;
    if (job.tasks.every((t) => t.result)) {
      if (job.kind === 'step' && this.dropOutliers(job)) return;
      job.resolve([...job.tasks].sort((a, b) => a.offset - b.offset));
    }
  }

  /**
   * Fault attribution before the reduce: a slice whose gradient norm is more than OUTLIER_RATIO
   * times the median norm of the OTHER workers' slices of comparable size (within 2x samples) came
   * from a faulty or hostile worker. That worker is dropped, every slice it answered in this step is
   * discarded and recomputed elsewhere. Needs at least one other worker's slice to compare with.
   * @returns true when something was dropped (the job is not done yet).
   */
  private dropOutliers(job: Job): boolean {
    const done = job.tasks.filter((t) => t.peer && t.result && t.result.n > 0);
    const bad = new Map<Peer, string>();
    for (const t of done) {
      const others = done
        .filter((o) => o.peer !== t.peer && Math.max(o.indices.length, t.indices.length) <= 2 * Math.min(o.indices.length, t.indices.length))
        .map((o) => o.norm)
        .sort((a, b) => a - b);
      if (!others.length) continue;
      const median = others[others.length >> 1]!;
      if (median > 0 && t.norm > OUTLIER_RATIO * median && !bad.has(t.peer!)) {
        bad.set(
          t.peer!,
          `its gradient for step ${job.meta.step} (${t.indices.length} samples) has L2 norm ${t.norm.toExponential(2)}, ${(t.norm / median).toExponential(1)} times the median ${median.toExponential(2)} of the other workers' slices; expected at most ${OUTLIER_RATIO} times. Its slices are recomputed elsewhere; if this worker is healthy, check its hardware and svd-train version`,
        );
      }
    }
    if (!bad.size) return false;
    for (const [peer, why] of bad) {
      const answered = job.tasks.filter((t) => t.peer === peer && t.result);
      for (const t of answered) t.result = null;
      this.noteFault(answered[0]!, `worker ${peer.name}: gradient norm outlier`);
      if (this.fatal) return true;
      this.dropPeer(peer, 'GRADIENT_OUTLIER', why);
      if (this.job === job) this.reassign(answered, `worker ${peer.name} sent an outlier gradient`);
    }
    return true;
  }

  private onStallTimeout(workerId: string, what: string, ms: number): void {
    const peer = this.peers.get(workerId);
    if (!peer) return;
    const why = `no answer to ${what} within ${Math.round(ms)} ms (--step-timeout-ms ${this.config.stepTimeoutMs})`;
    if (this.config.stallAction === 'abort') {
      this.fatal = new SvdTrainError('PEER_TIMEOUT', `worker ${peer.name} stalled: ${why}; aborting as --stall-action abort says`);
      this.log('error', this.fatal.message);
      this.job?.reject(this.fatal);
      this.wake();
      return;
    }
    // A stall is a peer that did not answer in time, not a malformed round: PEER_TIMEOUT, which the
    // worker treats as retryable (it reconnects), as it did before.
    this.dropPeer(peer, 'PEER_TIMEOUT', `stalled: ${why}`);
  }

  // ------------------------------------------------------------------------------------------
  // Training
  // ------------------------------------------------------------------------------------------

  /** Listens (if not yet), trains for config.epochs, shuts the workers down and resolves with a summary. */
  async start(): Promise<TrainingSummary> {
    const t0 = now();
    await this.listen();
    let summary: TrainingSummary;
    try {
      summary = await this.train(t0);
    } catch (e) {
      // Workers must learn that the run failed: told "training finished" they exited 0 while the
      // coordinator was dying with an error. They get RUN_ABORTED naming the cause, and exit non-zero.
      const err = e instanceof SvdTrainError ? e : new SvdTrainError('INTERNAL', String((e as Error)?.message ?? e));
      await this.close(`coordinator stopped with ${err.code}`, err);
      throw e;
    }
    await this.close(summary.alreadyFinished ? 'the run was already finished' : 'training finished');
    return summary;
  }

  private async train(t0: number): Promise<TrainingSummary> {
    const cfg = this.config;
    const info = this.opts.datasetInfo;
    const resume = this.opts.resume;
    const sampler = resume ? EpochSampler.fromState(resume.sampler) : new EpochSampler({ size: info.trainCount, batch: cfg.batch, seed: cfg.seed });
    const spe = sampler.stepsPerEpoch;
    const totalSteps = spe * cfg.epochs;
    const lrAt = this.opts.lrAt ?? ((step: number, stepsPerEpoch: number) => scheduleLrAt(cfg, step, stepsPerEpoch));
    if (resume) {
      this.weightsVersion = resume.step;
      const slices = Number(resume.metrics?.slicesPerStep ?? 0);
      if (Number.isInteger(slices) && slices > 0) this.slicesPerStep = slices;
      if (sampler.state().step >= totalSteps) {
        // Nothing left to train: waiting for workers here would wait forever on a finished run.
        this.log('info', `the checkpoint at step ${resume.step} already completes the run's ${totalSteps} steps (${cfg.epochs} epochs); nothing to resume`);
        return { steps: sampler.state().step, epochs: cfg.epochs, finalTestAcc: null, finalTrainAcc: null, params: this.tensors(this.params!), buffers: this.tensors(this.buffers!), wallMs: now() - t0, alreadyFinished: true };
      }
      this.log('info', `resuming at step ${resume.step} (epoch ${resume.epoch})`);
    }

    const expect = Math.max(this.minLive(), this.opts.expectWorkers ?? 0);
    this.log('info', `waiting for ${expect} worker(s)`);
    if (expect > this.minLive() && !(await this.waitForWorkers(expect, now() + cfg.handshakeTimeoutMs))) {
      this.log('warn', `${this.live().length} of ${expect} expected worker(s) joined within ${cfg.handshakeTimeoutMs} ms; starting with those (at least --min-workers ${this.minLive()})`);
    }
    await this.waitForWorkers(this.minLive());
    const manifest = this.manifest!;
    const names = manifest.params.map((s) => s.name);
    const optimizer: Optimizer = createOptimizer(cfg, names, { noDecay: this.opts.noDecay ? new Set(this.opts.noDecay) : undefined });
    if (resume) optimizer.loadState(resume.optimizer);
    const reducer = new AllReduce(manifest.params, manifest.buffers);

    let epochStats = { loss: 0, correct: 0, n: 0, t0: now() };
    let lastTest: number | null = null;
    let lastTrain: number | null = null;
    let lastCkptStep = resume?.step ?? -1;

    while (sampler.state().step < totalSteps) {
      this.throwIfFatal();
      const b = sampler.nextBatch();
      const lr = lrAt(b.step, spe);
      const momentum = momentumAt(cfg, b.step, spe);
      const stepT0 = now();
      const tasks = await this.runJob('step', b.indices, { step: b.step, epoch: b.epoch, lr, split: 'train' });
      const tr = now();
      const contribs = tasks.map((t) => t.result as GradientsMessage).filter((g) => g.n > 0);
      const red = reducer.reduce(contribs);
      if (red.nonFinite) this.diverged(b.step, lr, `the averaged ${red.nonFinite.name}[${red.nonFinite.index}] is ${red.nonFinite.value}`, lastCkptStep);
      const gradSet: ParamSet = new Map(names.map((n, i) => [n, red.grads[i]]));
      optimizer.step(this.params!, gradSet, lr, momentum);
      // The update itself can overflow (finite gradients, huge lr). Those parameters must never be
      // broadcast or checkpointed: the run stops here and its last checkpoint stays the good one.
      const badParam = firstNonFinite(this.params!);
      if (badParam) this.diverged(b.step, lr, `after the optimizer step, parameter ${badParam.name}[${badParam.index}] is ${badParam.value}`, lastCkptStep);
      manifest.buffers.forEach((s, i) => this.buffers!.get(s.name)!.set(red.buffers[i]));
      this.weightsVersion = b.step + 1;
      this.weightsFrame = null;
      const reduceMs = now() - tr;
      const stepMs = now() - stepT0;

      let n = 0;
      let correct = 0;
      const loss = { ce: 0, orth: 0, sparsity: 0, total: 0 };
      for (const g of contribs) {
        n += g.n;
        correct += g.correct;
        // CE is a per-sample mean, so it is sample-weighted; the regularizers are functions of the
        // (shared) weights alone, so every worker reports the same value and we average equally.
        loss.ce += g.loss.ce * g.n;
        loss.orth += g.loss.orth;
        loss.sparsity += g.loss.sparsity;
      }
      loss.ce /= Math.max(1, n);
      loss.orth /= Math.max(1, contribs.length);
      loss.sparsity /= Math.max(1, contribs.length);
      loss.total = contribs.reduce((a, g) => a + g.loss.total * g.n, 0) / Math.max(1, n);
      epochStats.loss += loss.ce * n;
      epochStats.correct += correct;
      epochStats.n += n;

      const workers: WorkerTiming[] = tasks
        .filter((t) => t.peer && t.result && (t.result as GradientsMessage).n > 0)
        .map((t) => {
          const g = t.result as GradientsMessage;
          return { worker: t.peer!.name, n: g.n, computeMs: g.computeMs, commMs: Math.max(0, t.rttMs - g.computeMs) };
        });
      const imgPerSec = n / (stepMs / 1000);
      const line: StepMetrics = {
        kind: 'step',
        step: b.step,
        epoch: b.epoch,
        lr,
        momentum,
        loss,
        trainAcc: correct / Math.max(1, n),
        n,
        stepMs,
        reduceMs,
        imgPerSec,
        workers,
        time: new Date().toISOString(),
      };
      this.metrics.write(line);
      this.opts.onStep?.({
        step: b.step,
        epoch: b.epoch,
        stepInEpoch: b.stepInEpoch,
        stepsPerEpoch: spe,
        totalSteps,
        lr,
        loss,
        trainAcc: line.trainAcc,
        n,
        stepMs,
        imgPerSec,
        workers: this.live().length,
        slices: tasks.filter((t) => t.indices.length > 0).map((t) => ({ worker: t.peer?.name ?? '?', indices: t.indices })),
      });

      const epochEnd = b.stepInEpoch === spe - 1;
      if (epochEnd) {
        const e: EpochEvent = {
          epoch: b.epoch,
          step: b.step + 1,
          trainLoss: epochStats.loss / Math.max(1, epochStats.n),
          trainAcc: epochStats.correct / Math.max(1, epochStats.n),
          epochMs: now() - epochStats.t0,
          effectiveRanks: effectiveRanks([...this.params!].map(([name, data]) => ({ name, data })), 0.01),
        };
        lastTrain = e.trainAcc;
        // evalEvery 0 turns evaluation off; otherwise every evalEvery epochs and after the last one.
        if (cfg.evalEvery > 0 && ((b.epoch + 1) % cfg.evalEvery === 0 || b.step + 1 === totalSteps)) {
          const r = await this.evaluate('test');
          if (r) {
            e.testAcc = r.acc;
            e.testLoss = r.loss;
            lastTest = r.acc;
          }
        }
        const em: EpochMetrics = { kind: 'epoch', ...e, time: new Date().toISOString() };
        this.metrics.write(em);
        this.opts.onEpoch?.(e);
        this.log('info', `epoch ${b.epoch + 1}/${cfg.epochs}: train loss ${e.trainLoss.toFixed(4)} acc ${(e.trainAcc * 100).toFixed(2)}%${e.testAcc !== undefined ? `, test acc ${(e.testAcc * 100).toFixed(2)}%` : ''}`);
        epochStats = { loss: 0, correct: 0, n: 0, t0: now() };
      }
      const early = cfg.checkpointEvery > EARLY_CHECKPOINT_STEP && b.step + 1 === EARLY_CHECKPOINT_STEP;
      if (epochEnd || early || (cfg.checkpointEvery > 0 && (b.step + 1) % cfg.checkpointEvery === 0)) {
        await this.checkpoint(b.step + 1, sampler, optimizer);
        lastCkptStep = b.step + 1;
      }
    }
    if (lastCkptStep !== sampler.state().step) await this.checkpoint(sampler.state().step, sampler, optimizer);
    return {
      steps: sampler.state().step,
      epochs: cfg.epochs,
      finalTestAcc: lastTest,
      finalTrainAcc: lastTrain,
      params: this.tensors(this.params!),
      buffers: this.tensors(this.buffers!),
      wallMs: now() - t0,
    };
  }

  /** Stops the run: a step whose numbers are not finite is never applied (see the module header). */
  private diverged(step: number, lr: number, what: string, lastCkptStep: number): never {
    this.fatal = new SvdTrainError(
      'DIVERGED',
      `step ${step} (lr ${lr.toExponential(2)}): ${what}; expected finite numbers. The step was not applied and not checkpointed` +
        `${lastCkptStep > 0 ? ` (the last checkpoint holds the ${lastCkptStep} steps before it)` : ''}. ` +
        'Fix: lower --lr (or --lambda-o/--lambda-s) and start again, or fine-tune from the last checkpoint with --from CKPT and a lower --lr.',
      { step },
    );
    throw this.fatal;
  }

  /** Evaluates the current weights on a split (test: datasetInfo.testCount samples), scattered over the workers. */
  async evaluate(split: 'train' | 'test'): Promise<{ acc: number; loss: number; n: number } | null> {
    const count = split === 'test' ? this.opts.datasetInfo.testCount : this.opts.datasetInfo.trainCount;
    if (count === 0) return null;
    const indices = new Int32Array(count);
    for (let i = 0; i < count; i++) indices[i] = i;
    const tasks = await this.runJob('eval', indices, { step: this.weightsVersion, epoch: 0, lr: 0, split });
    let n = 0;
    let correct = 0;
    let lossSum = 0;
    for (const t of tasks) {
      const r = t.result as EvalResultMessage;
      n += r.n;
      correct += r.correct;
      lossSum += r.lossSum;
    }
    return { acc: correct / Math.max(1, n), loss: lossSum / Math.max(1, n), n };
  }

  private async checkpoint(step: number, sampler: EpochSampler, optimizer: Optimizer): Promise<void> {
    if (!this.opts.saveCheckpoint) return;
    const st = sampler.state();
    await this.opts.saveCheckpoint({
      version: 1,
      config: serializeConfig(this.config),
      configHash: this.configHash,
      step,
      epoch: sampler.currentEpoch,
      params: this.tensors(this.params!),
      buffers: this.tensors(this.buffers!),
      optimizer: optimizer.state(),
      sampler: st,
      // How many BN sub-batches a step has: a resumed run keeps it, so it equals the uninterrupted one.
      metrics: { slicesPerStep: this.slicesPerStep },
    });
  }

  /**
   * Tells every worker to exit and stops the server. Safe to call twice. With `failure`, workers get
   * a RUN_ABORTED error naming it instead of a shutdown, so they exit non-zero too. Never waits on a
   * peer: the shutdown frames get at most CLOSE_GRACE_MS to leave, then every socket (workers,
   * half-open handshakes, raw TCP that never upgraded) is destroyed.
   */
  async close(reason = 'coordinator shutting down', failure?: SvdTrainError): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stall.clearAll();
    this.wake();
    if (this.pingTimer) clearInterval(this.pingTimer);
    const flushed: Promise<void>[] = [];
    for (const p of [...this.peers.values()]) {
      if (p.handshakeTimer) clearTimeout(p.handshakeTimer);
      // Only authenticated workers are told why; anyone else just loses the connection.
      if (p.ws.readyState === 1 && (p.state === 'manifest' || p.state === 'ready')) {
        const msg: Message = failure
          ? { type: 'error', code: 'RUN_ABORTED', message: `${reason}: [${failure.code}] ${failure.message}` }
          : { type: 'shutdown', reason };
        flushed.push(new Promise<void>((r) => p.ws.send(encodeMessage(msg), () => r())));
      }
      p.state = 'gone';
    }
    if (flushed.length) await Promise.race([Promise.all(flushed), new Promise<void>((r) => setTimeout(r, CLOSE_GRACE_MS).unref?.())]);
    for (const p of this.peers.values()) {
      try {
        p.ws.close(1000, 'shutdown');
      } catch {
        /* already closed */
      }
      p.ws.terminate();
    }
    this.peers.clear();
    for (const sock of this.sockets) sock.destroy();
    this.sockets.clear();
    this.server?.close();
    const http = this.http;
    if (http) await new Promise<void>((r) => http.close(() => r()));
  }
}
