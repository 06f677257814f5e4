/**
 * The coordinator's listening side: an HTTP(S) server upgraded to WebSocket, one PeerSession per
 * connection, and the bounds that hold before anyone is trusted. Every TCP connection (upgraded or
 * not) must authenticate within AUTH_DEADLINE_MS, at most MAX_UNAUTHENTICATED_CONNECTIONS wait at
 * once, refusals are logged rate-limited, and `close()` never waits on a peer.
 *
 * It knows nothing of training: ready peers, their results and their departures go to the
 * coordinator through the `on*` hooks.
 */
import { randomUUID } from 'node:crypto';
import { createServer as createHttpServer, type IncomingMessage, type Server as HttpServer, type ServerResponse } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { WebSocketServer, type WebSocket } from 'ws';
import {
  AUTH_DEADLINE_MS,
  DEFAULTS,
  HANDSHAKE_MAX_BYTES,
  MAX_UNAUTHENTICATED_CONNECTIONS,
  PING_INTERVAL_MS,
  encodeMessage,
  escapeForLog,
  tensorFrameBytes,
  type DatasetInfo,
  type EvalResultMessage,
  type GradientsMessage,
  type Message,
  SvdTrainError,
  type RunConfig,
} from '@svd-train/core';
import type { DatasetServer } from './dataset-server.js';
import { PeerSession, type SessionHost } from './peer-session.js';
import { QuietLog, type LogFn, type LogLevel } from './quiet-log.js';
import type { WeightStore } from './weight-store.js';

/** How long close() lets the shutdown frames drain before it destroys the sockets. */
const CLOSE_GRACE_MS = 500;

export interface PeerServerOptions {
  config: RunConfig;
  configHash: string;
  authRequired: boolean;
  datasetInfo: DatasetInfo;
  dataServer: DatasetServer | null;
  weights: WeightStore;
  /** The encoded `teacher` messages (one per teacher) while the run distills. */
  teacherFrames?: Uint8Array[];
  /** PEM certificate chain and private key: serve wss:// instead of ws://. */
  tls?: { cert: string | Buffer; key: string | Buffer };
  log: LogFn;
  /** A peer finished its handshake. */
  onReady: (peer: PeerSession) => void;
  onResult: (peer: PeerSession, msg: GradientsMessage | EvalResultMessage) => void;
  /**
   * A peer is being dropped (it is already out of `live()`); returns the code and reason it is told,
   * so that a fault that ends the run can tell it RUN_ABORTED instead.
   */
  onLeaving: (peer: PeerSession, code: string | null, why: string) => { code: string | null; why: string };
  /** A dropped peer's socket is closed: its unanswered work can go elsewhere. */
  onGone: (peer: PeerSession) => void;
}

export class PeerServer implements SessionHost {
  readonly config: RunConfig;
  readonly configHash: string;
  readonly authRequired: boolean;
  readonly datasetInfo: DatasetInfo;
  readonly dataServer: DatasetServer | null;
  readonly weights: WeightStore;
  readonly teacherFrames: Uint8Array[];
  private server: WebSocketServer | null = null;
  private http: HttpServer | null = null;
  /** Every open TCP socket, upgraded or not, so close() can end them without waiting on a peer. */
  private readonly sockets = new Set<Socket>();
  /** Sockets (TLS or TCP, as the upgrade saw them) whose peer proved the token. */
  private readonly authed = new WeakSet<Socket>();
  private authedCount = 0;
  private pingTimer: NodeJS.Timeout | null = null;
  private readonly peers = new Map<string, PeerSession>();
  private peerCounter = 0;
  private closed = false;
  private readonly quiet: QuietLog;

  constructor(private readonly opts: PeerServerOptions) {
    this.config = opts.config;
    this.configHash = opts.configHash;
    this.authRequired = opts.authRequired;
    this.datasetInfo = opts.datasetInfo;
    this.dataServer = opts.dataServer;
    this.weights = opts.weights;
    this.teacherFrames = opts.teacherFrames ?? [];
    this.quiet = new QuietLog(opts.log);
  }

  /** Starts listening; resolves with the bound port (config.port 0 picks a free one). */
  async listen(): Promise<{ host: string; port: number }> {
    if (this.http) return this.address();
    const tls = this.opts.tls;
    // Our own HTTP(S) server rather than ws's: ws's would wait in close() for every socket,
    // including raw TCP that never upgrades, and gives no hook for the pre-upgrade deadline.
    const http = tls ? createHttpsServer({ cert: tls.cert, key: tls.key, handshakeTimeout: this.authDeadlineMs() }) : createHttpServer();
    this.http = http;
    // Until a peer has authenticated its frames are handshake-sized; the session raises the limit.
    const server = new WebSocketServer({ noServer: true, maxPayload: HANDSHAKE_MAX_BYTES, perMessageDeflate: false });
    this.server = server;
    // 'connection' is the raw TCP socket for both http and https: it counts against the cap.
    http.on('connection', (sock: Socket) => this.onTcp(sock));
    // The socket the upgrade will see (TLS after its handshake, else TCP) carries the deadline.
    http.on(tls ? 'secureConnection' : 'connection', (sock: Socket) => this.armAuthDeadline(sock));
    http.on('request', (_req: IncomingMessage, res: ServerResponse) => {
      res.writeHead(426, { 'content-type': 'text/plain', connection: 'close' });
      res.end('svd-train coordinator: connect with svd-worker (WebSocket)\n');
    });
    http.on('upgrade', (req: IncomingMessage, sock: Socket, head: Buffer) => {
      if (this.closed) return void sock.destroy();
      server.handleUpgrade(req, sock, head, (ws: WebSocket) => this.onConnection(ws, sock));
    });
    await new Promise<void>((resolve, reject) => {
      const fail = (e: NodeJS.ErrnoException) => {
        this.http = null;
        this.server = null;
        server.close();
        reject(listenError(e, this.config.host, this.config.port));
      };
      http.once('error', fail);
      http.listen(this.config.port, this.config.host, () => {
        http.removeListener('error', fail);
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
    this.log('info', `coordinator listening on ${tls ? 'wss' : 'ws'}://${a.host}:${a.port} (auth ${this.authRequired ? 'required' : 'off: loopback/insecure'}${tls ? ', TLS' : ''})`);
    return a;
  }

  address(): { host: string; port: number } {
    const a = this.http?.address();
    if (!a || typeof a === 'string') return { host: this.config.host, port: this.config.port };
    return { host: this.config.host, port: a.port };
  }

  /** Peers past the handshake, in connection order. */
  live(): PeerSession[] {
    return [...this.peers.values()].filter((p) => p.state === 'ready');
  }

  peer(id: string): PeerSession | undefined {
    return this.peers.get(id);
  }

  /** Largest frame an authenticated worker may send: one model's tensors (gradients), else the configured cap. */
  authedFrameLimit(): number {
    const m = this.weights.manifest;
    return m ? Math.min(this.config.maxMessageBytes, tensorFrameBytes(m)) : this.config.maxMessageBytes;
  }

  authenticated(peer: PeerSession): void {
    this.authed.add(peer.socket);
    this.authedCount++;
  }

  ready(peer: PeerSession): void {
    this.opts.onReady(peer);
  }

  result(peer: PeerSession, msg: GradientsMessage | EvalResultMessage): void {
    this.opts.onResult(peer, msg);
  }

  /**
   * Removes a worker: tells it why (when `code` is given), closes the socket, and lets the
   * coordinator re-assign its unanswered work. Never throws: this is the path every fault funnels into.
   */
  drop(peer: PeerSession, code: string | null, why: string): void {
    if (peer.state === 'gone') return;
    const wasReady = peer.state === 'ready';
    const unauthenticated = peer.state === 'hello' || peer.state === 'auth';
    peer.state = 'gone';
    this.peers.delete(peer.id);
    peer.stopHandshakeTimer();
    const line = `worker ${peer.name} (${peer.id}) dropped: ${code ? `${code}: ` : ''}${why}`;
    const level: LogLevel = code ? 'warn' : wasReady ? 'warn' : 'info';
    // Anyone can connect and be dropped before authenticating: per code, those lines are rate-limited.
    if (unauthenticated) this.quiet.event(`drop:${code ?? 'disconnect'}`, level, line);
    else this.log(level, line);
    const told = this.opts.onLeaving(peer, code, why);
    if (this.authed.has(peer.socket)) {
      this.authed.delete(peer.socket);
      this.authedCount--;
    }
    peer.close(told.code, told.why);
    this.opts.onGone(peer);
  }

  /**
   * Tells every authenticated worker to exit (a shutdown, or with `failure` a RUN_ABORTED error
   * naming it) and stops the server. Safe to call twice. Never waits on a peer: the shutdown frames
   * get at most CLOSE_GRACE_MS to leave, then every socket (workers, half-open handshakes, raw TCP
   * that never upgraded) is destroyed. `reconnect` tells them that another run follows here.
   */
  async close(reason: string, failure?: SvdTrainError, reconnect = false): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    if (this.pingTimer) clearInterval(this.pingTimer);
    const flushed: Promise<void>[] = [];
    for (const p of [...this.peers.values()]) {
      p.stopHandshakeTimer();
      // Only authenticated workers are told why; anyone else just loses the connection.
      if (p.ws.readyState === 1 && p.authenticated) {
        const msg: Message = failure ? { type: 'error', code: 'RUN_ABORTED', message: `${reason}: [${failure.code}] ${failure.message}` } : { type: 'shutdown', reason, ...(reconnect ? { reconnect: true } : {}) };
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

  private log(level: LogLevel, msg: string): void {
    this.opts.log(level, msg);
  }

  /** Milliseconds a connection has from TCP accept to a verified token proof. */
  private authDeadlineMs(): number {
    return Math.min(AUTH_DEADLINE_MS, this.config.handshakeTimeoutMs);
  }

  private onTcp(sock: Socket): void {
    if (this.closed) return void sock.destroy();
    // Every authenticated peer holds exactly one TCP socket, so this counts the unauthenticated ones.
    if (this.sockets.size - this.authedCount >= MAX_UNAUTHENTICATED_CONNECTIONS) {
      this.quiet.event('cap', 'warn', `refused a connection from ${escapeForLog(sock.remoteAddress)}: ${MAX_UNAUTHENTICATED_CONNECTIONS} unauthenticated connections are already open`);
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
      if (peer) this.drop(peer, 'PEER_TIMEOUT', `handshake not finished within ${ms} ms (not authenticated)`);
      else {
        this.quiet.event('no-upgrade', 'info', `closed a connection from ${escapeForLog(sock.remoteAddress)}: no WebSocket upgrade within ${ms} ms`);
        sock.destroy();
      }
    }, ms);
    t.unref?.();
    sock.once('close', () => clearTimeout(t));
  }

  private onConnection(ws: WebSocket, socket: Socket): void {
    if (this.closed) {
      ws.terminate();
      return;
    }
    // Connection ids start with 'c' so they never read like a worker's own name: spawned workers
    // are named w0, w1, … and an id like 'w1-…' next to worker w0 looked like a mislabel.
    const id = `c${++this.peerCounter}-${randomUUID().slice(0, 4)}`;
    this.peers.set(id, new PeerSession(id, ws, socket, this));
  }
}

/** Why the coordinator cannot listen on host:port, in words a user can act on. */
export function listenError(e: NodeJS.ErrnoException, host: string, port: number): SvdTrainError {
  const where = `${host}:${port}`;
  const why =
    e.code === 'EADDRINUSE'
      ? `cannot listen on ${where}: the port is in use (another coordinator, or another program). Fix: stop it, or pass --port with a free port (--port 0 picks one; the log line then names it) and point the workers at it.`
      : e.code === 'EACCES'
        ? `cannot listen on ${where}: permission denied (ports below 1024 need privileges). Fix: pass --port 1024 or above (default ${DEFAULTS.port}).`
        : e.code === 'EADDRNOTAVAIL'
          ? `cannot listen on ${where}: ${host} is not an address of this machine. Fix: pass --host with one of its addresses, or 0.0.0.0 for all of them.`
          : `cannot listen on ${where}: ${e.message}. Fix: check --host and --port.`;
  return new SvdTrainError('LISTEN_FAILED', why, { host, port, errno: e.code ?? null });
}
