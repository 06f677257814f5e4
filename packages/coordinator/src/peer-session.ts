/**
 * One worker connection, coordinator side: the handshake state machine
 *   hello → challenge → auth → welcome → [data-request → data-chunk …] → manifest → ready,
 * the frame limit of each state (HANDSHAKE_MAX_BYTES until the token is proved, one model's tensors
 * after), and the dispatch of its messages once ready. Anything invalid throws a coded
 * SvdTrainError, which drops the peer (telling it why) through `host.drop`.
 */
import type { Socket } from 'node:net';
import type { RawData, WebSocket } from 'ws';
import {
  HANDSHAKE_MAX_BYTES,
  SvdTrainError,
  authProof,
  decodeMessage,
  encodeMessage,
  escapeForLog,
  makeNonce,
  serializeConfig,
  setReceiveLimit,
  verifyAuthProof,
  type DatasetInfo,
  type EvalResultMessage,
  type GradientsMessage,
  type HelloMessage,
  type Message,
  type RunConfig,
} from '@svd-train/core';
import type { DatasetServer } from './dataset-server.js';
import type { WeightStore } from './weight-store.js';

export type PeerState = 'hello' | 'auth' | 'manifest' | 'ready' | 'gone';

/** Dataset chunks one worker may have queued unsent (a whole CIFAR-10 file is 8). */
const MAX_PENDING_CHUNKS = 16;

/** What a session needs from the coordinator: the run it admits workers to, and where events go. */
export interface SessionHost {
  readonly config: RunConfig;
  readonly configHash: string;
  readonly authRequired: boolean;
  readonly datasetInfo: DatasetInfo;
  /** Serves dataset files to workers without a copy; null refuses them. */
  readonly dataServer: DatasetServer | null;
  readonly weights: WeightStore;
  /** The encoded `teacher` messages while the run distills (each sent once per connection, before the first weights); empty otherwise. */
  readonly teacherFrames: readonly Uint8Array[];
  /** Largest frame an authenticated peer may send. */
  authedFrameLimit(): number;
  /** The peer proved the token. */
  authenticated(peer: PeerSession): void;
  /** The peer finished its handshake (state 'ready'). */
  ready(peer: PeerSession): void;
  /** A ready peer answered a step or an evaluation. */
  result(peer: PeerSession, msg: GradientsMessage | EvalResultMessage): void;
  /** Removes the peer; `code` (when given) is sent to it as an error message first. */
  drop(peer: PeerSession, code: string | null, why: string): void;
}

export class PeerSession {
  /** The worker's own name and host (escaped), once it said hello; the connection id before. */
  name: string;
  state: PeerState = 'hello';
  /** Weights version (global step) this worker holds; -1: none yet. */
  weightsVersion = -1;
  private hello: HelloMessage | null = null;
  private nonce: Uint8Array | null = null;
  private handshakeTimer: NodeJS.Timeout | null = null;
  /** Dataset chunks handed to the socket and not yet written out. */
  private pendingChunks = 0;

  /**
   * @param id connection id, unique for the coordinator's lifetime
   * @param socket the socket under `ws` (TLS or TCP), for the authentication deadline
   */
  constructor(
    readonly id: string,
    readonly ws: WebSocket,
    readonly socket: Socket,
    private readonly host: SessionHost,
  ) {
    this.name = id;
    this.armHandshakeTimer();
    ws.on('message', (data: RawData) => {
      try {
        this.handle(decodeMessage(data, { maxBytes: this.authenticated ? host.authedFrameLimit() : HANDSHAKE_MAX_BYTES }));
      } catch (e) {
        const err = e instanceof SvdTrainError ? e : new SvdTrainError('INTERNAL', `while handling a message from ${this.name}: ${(e as Error)?.stack ?? String(e)}`);
        host.drop(this, err.code, err.message);
      }
    });
    ws.on('close', (code: number, reason: Buffer) => {
      if (this.state !== 'gone') host.drop(this, null, `disconnected (code ${code}${reason?.length ? `: ${escapeForLog(reason.toString())}` : ''})`);
    });
    ws.on('error', (e: Error) => {
      // ws refuses an over-limit frame on its header (close 1009) before buffering its payload.
      const tooLarge = 'code' in e && e.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH';
      if (this.state === 'gone') return;
      const limit = this.authenticated ? `${host.authedFrameLimit()}-byte limit (one model's tensors)` : `${HANDSHAKE_MAX_BYTES}-byte limit before authentication`;
      host.drop(this, tooLarge ? 'FRAME_TOO_LARGE' : null, tooLarge ? `sent a frame larger than the ${limit}` : `socket error: ${escapeForLog(e.message)}`);
    });
  }

  /** Past the token proof (manifest or ready). */
  get authenticated(): boolean {
    return this.state === 'manifest' || this.state === 'ready';
  }

  /** The engine and device the worker reported in hello. @throws INTERNAL before hello. */
  engine(): { backend: string; device: string } {
    if (!this.hello) throw new SvdTrainError('INTERNAL', `peer ${this.id} has not said hello yet`);
    return { backend: this.hello.backend, device: this.hello.device };
  }

  /** Sends a message or an already encoded frame; nothing once the peer is gone or the socket is not open. */
  send(msg: Message | Uint8Array): void {
    if (this.state === 'gone' || this.ws.readyState !== 1) return;
    this.ws.send(msg instanceof Uint8Array ? msg : encodeMessage(msg));
  }

  /**
   * The transport half of dropping the peer (its state is already 'gone'): tells it why when `code`
   * is given, closes the socket, and terminates it if the peer ignores the close handshake.
   */
  close(code: string | null, why: string): void {
    this.stopHandshakeTimer();
    try {
      if (code && this.ws.readyState === 1) this.ws.send(encodeMessage({ type: 'error', code, message: why }));
      this.ws.close(code ? 1008 : 1000, code ?? 'bye');
      setTimeout(() => this.ws.terminate(), 1000).unref?.();
    } catch {
      this.ws.terminate();
    }
  }

  stopHandshakeTimer(): void {
    if (this.handshakeTimer) clearTimeout(this.handshakeTimer);
  }

  /** (Re)starts the handshake deadline; a data transfer restarts it per file so a slow download is not cut off. */
  private armHandshakeTimer(): void {
    this.stopHandshakeTimer();
    const ms = this.host.config.handshakeTimeoutMs;
    this.handshakeTimer = setTimeout(() => {
      if (this.state !== 'ready' && this.state !== 'gone') this.host.drop(this, 'PROTOCOL_INVALID', `handshake not finished within ${ms} ms`);
    }, ms);
    this.handshakeTimer.unref?.();
  }

  private handle(msg: Message): void {
    if (this.state === 'gone') return;
    if (msg.type === 'error') {
      this.host.drop(this, null, `worker reported ${escapeForLog(msg.code, 40)}: ${escapeForLog(msg.message)}`);
      return;
    }
    const host = this.host;
    switch (this.state) {
      case 'hello': {
        if (msg.type !== 'hello') throw new SvdTrainError('PROTOCOL_INVALID', `expected 'hello' first, got '${msg.type}'`);
        this.hello = msg;
        // The peer chose these strings and is not authenticated yet: never log them raw.
        this.name = `${escapeForLog(msg.workerName, 64)}@${escapeForLog(msg.hostname, 64)}`;
        const nonce = makeNonce();
        this.nonce = nonce;
        this.state = 'auth';
        const token = host.config.token;
        // Our own proof on the worker's nonce: a worker with a token refuses a coordinator without it.
        const proof = token ? authProof(token, 'coordinator', { worker: msg.nonce, coordinator: nonce }) : '';
        this.send({ type: 'challenge', nonce, authRequired: host.authRequired, proof });
        return;
      }
      case 'auth': {
        if (msg.type !== 'auth') throw new SvdTrainError('PROTOCOL_INVALID', `expected 'auth' after the challenge, got '${msg.type}'`);
        if (!this.hello || !this.nonce) throw new SvdTrainError('INTERNAL', `peer ${this.id} is in state 'auth' without a hello`);
        if (host.authRequired && !verifyAuthProof(host.config.token ?? '', 'worker', { worker: this.hello.nonce, coordinator: this.nonce }, msg.mac)) {
          throw new SvdTrainError('AUTH_FAILED', `authentication failed: the worker's token does not match the coordinator's; pass the same token (--token-file, SVD_TRAIN_TOKEN or --token) to both`);
        }
        this.state = 'manifest';
        host.authenticated(this);
        setReceiveLimit(this.ws, host.authedFrameLimit());
        this.send({ type: 'welcome', workerId: this.id, config: serializeConfig(host.config), configHash: host.configHash, datasetInfo: host.datasetInfo });
        return;
      }
      case 'manifest':
        if (msg.type === 'data-request') {
          this.armHandshakeTimer();
          return this.serveData(msg.file);
        }
        if (msg.type !== 'manifest') throw new SvdTrainError('PROTOCOL_INVALID', `expected 'manifest' or 'data-request' after welcome, got '${msg.type}'`);
        if (msg.configHash !== host.configHash) {
          throw new SvdTrainError('MANIFEST_MISMATCH', `worker computes config hash ${escapeForLog(msg.configHash, 80)}, the coordinator ${host.configHash}; run the same svd-train version on both`);
        }
        host.weights.admit(msg, this.name);
        // Before `ready` sends the first weights: the worker expects the teacher first.
        for (const frame of host.teacherFrames) this.send(frame);
        this.state = 'ready';
        // Now the manifest is known for certain: from here on a frame is at most one model's tensors.
        setReceiveLimit(this.ws, host.authedFrameLimit());
        this.stopHandshakeTimer();
        host.ready(this);
        return;
      case 'ready':
        if (msg.type === 'data-request') return this.serveData(msg.file);
        if (msg.type === 'gradients' || msg.type === 'eval-result') return host.result(this, msg);
        throw new SvdTrainError('PROTOCOL_INVALID', `unexpected '${msg.type}' from a worker during training`);
    }
  }

  private serveData(file: string): void {
    const server = this.host.dataServer;
    if (!server) throw new SvdTrainError('DATA_MISSING', `worker asked for dataset file '${escapeForLog(file, 80)}', but this coordinator was started without --data to serve; give the worker its own copy`);
    // A worker fetches one file at a time; one that keeps asking without reading would make
    // the coordinator queue the dataset again and again in its socket buffers.
    if (this.pendingChunks > MAX_PENDING_CHUNKS) {
      throw new SvdTrainError('PROTOCOL_INVALID', `asked for dataset file '${escapeForLog(file, 80)}' while ${this.pendingChunks} chunks of earlier files are still unsent; fetch one file at a time`);
    }
    for (const chunk of server.chunks(file)) {
      if (this.state === 'gone' || this.ws.readyState !== 1) return;
      this.pendingChunks++;
      this.ws.send(encodeMessage(chunk), () => this.pendingChunks--);
    }
  }
}
