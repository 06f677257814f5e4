/**
 * One WebSocket connection from a worker to the coordinator, as an ordered inbox of decoded
 * messages. The worker handles messages strictly one at a time (a step must finish before the next
 * weights are applied), so the inbox queues frames that arrive while a step is computing.
 *
 * The coordinator is not trusted either: until the session raises it (`setLimit`, once the model
 * is known) a frame may be HANDSHAKE_MAX_BYTES at most, refused by ws on the frame header. A frame
 * that is too large or does not decode ends the connection with a coded error (`CloseInfo.error`),
 * and `next(timeoutMs)` ends it with PEER_TIMEOUT when the coordinator stays silent (its pings
 * count as signs of life). The inbox holds MAX_QUEUED_MESSAGES frames at most: a coordinator that
 * keeps sending while this worker is busy (e.g. blocked in `send` because it stopped reading the
 * gradients) ends the connection with PROTOCOL_INVALID instead of filling the worker's memory.
 */
import WebSocket, { type RawData } from 'ws';
import { DEFAULTS, HANDSHAKE_MAX_BYTES, SvdTrainError, decodeMessage, encodeMessage, escapeForLog, setReceiveLimit, type Message } from '@svd-train/core';

/**
 * Frames the inbox holds before the connection fails, so unread frames take at most this many
 * times the frame limit of the stage. The largest burst an svd-train coordinator sends without
 * waiting for an answer is its teachers (MAX_TEACHERS), the weights and one task; a dataset file
 * is at most 8 chunks, fetched one file at a time.
 */
export const MAX_QUEUED_MESSAGES = 16;

/** Why a connection ended, as seen by the worker; `error` when the coordinator broke the protocol or went silent. */
export type CloseInfo = { code: number; reason: string; error?: SvdTrainError };

export interface OpenOptions {
  /** Milliseconds for the TCP/TLS connect and the HTTP upgrade. */
  handshakeTimeoutMs?: number;
  /** PEM CA certificate(s) a wss:// coordinator's certificate must chain to (default: the system's). */
  ca?: string | Buffer;
}

export class Connection {
  private readonly queue: Message[] = [];
  private waiter: ((m: Message | CloseInfo) => void) | null = null;
  private waiterTimer: NodeJS.Timeout | null = null;
  private waiterRearm: (() => void) | null = null;
  private closed: CloseInfo | null = null;
  private maxBytes = HANDSHAKE_MAX_BYTES;

  private constructor(private readonly ws: WebSocket) {
    ws.on('message', (data: RawData) => this.push(data));
    // ws answers pings itself; a ping only proves the coordinator is alive while we wait.
    ws.on('ping', () => this.waiterRearm?.());
    ws.on('close', (code: number, reason: Buffer) => this.finish({ code, reason: escapeForLog(reason.toString()) }));
    ws.on('error', (err: Error) => {
      if ((err as { code?: string }).code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH') {
        this.finish({
          code: 1009,
          reason: 'frame too large',
          error: new SvdTrainError('FRAME_TOO_LARGE', `the coordinator sent a frame larger than the ${this.maxBytes}-byte limit of this stage of the session; it is not an svd-train coordinator of this version, or it is hostile`),
        });
      } else this.finish({ code: 1006, reason: escapeForLog(err.message) });
    });
  }

  /** Opens a connection; rejects when the coordinator cannot be reached (caller backs off). */
  static open(url: string, opts: OpenOptions = {}): Promise<Connection> {
    return new Promise((resolve, reject) => {
      // A zero mask lets both ends skip XOR-ing every byte of a gradient frame in JavaScript (the
      // largest cost per round on the coordinator). Masking protects browsers behind caching proxies
      // from forged requests; a worker is a Node process talking to its own coordinator.
      const ws = new WebSocket(url, {
        maxPayload: HANDSHAKE_MAX_BYTES,
        handshakeTimeout: opts.handshakeTimeoutMs ?? DEFAULTS.handshakeTimeoutMs,
        generateMask: (mask: Buffer) => void mask.fill(0),
        perMessageDeflate: false,
        ...(opts.ca !== undefined ? { ca: opts.ca } : {}),
      });
      const onError = (err: Error) => reject(err);
      ws.on('error', onError);
      ws.on('open', () => {
        ws.removeListener('error', onError);
        resolve(new Connection(ws));
      });
    });
  }

  /** The largest frame accepted from now on (checked on each frame's header). */
  setLimit(bytes: number): void {
    this.maxBytes = bytes;
    setReceiveLimit(this.ws, bytes);
  }

  private push(data: RawData): void {
    // Frames still in flight after a violation are dropped unread: nothing more from this peer is used.
    if (this.closed) return;
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
    let msg: Message;
    try {
      msg = decodeMessage(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), { maxBytes: this.maxBytes });
    } catch (e) {
      const err = e instanceof SvdTrainError ? e : new SvdTrainError('PROTOCOL_INVALID', `undecodable frame: ${escapeForLog((e as Error)?.message)}`);
      this.fail(err);
      return;
    }
    if (this.waiter) this.deliver(msg);
    else if (this.queue.length < MAX_QUEUED_MESSAGES) this.queue.push(msg);
    else {
      this.fail(
        new SvdTrainError(
          'PROTOCOL_INVALID',
          `the coordinator sent more than ${MAX_QUEUED_MESSAGES} messages (the limit of this worker's inbox) while the worker was busy with an earlier one; it is not reading this worker's answers, or it is hostile`,
        ),
      );
    }
  }

  private deliver(m: Message | CloseInfo): void {
    const w = this.waiter;
    this.waiter = null;
    this.waiterRearm = null;
    if (this.waiterTimer) clearTimeout(this.waiterTimer);
    this.waiterTimer = null;
    w?.(m);
  }

  private finish(info: CloseInfo): void {
    if (this.closed) return;
    this.closed = info;
    // Messages still queued are dropped: after a violation nothing more from this peer is used.
    if (info.error) this.queue.length = 0;
    if (this.waiter) this.deliver(info);
  }

  /**
   * Ends the connection because the coordinator broke the protocol: tells it the code (best
   * effort), then cuts the socket without waiting for it.
   */
  fail(err: SvdTrainError): void {
    if (this.closed) return;
    try {
      if (this.ws.readyState === WebSocket.OPEN) this.ws.send(encodeMessage({ type: 'error', code: err.code, message: err.message }));
      this.ws.close(1008, err.code);
    } catch {
      /* already closing */
    }
    setTimeout(() => this.ws.terminate(), 500).unref?.();
    this.finish({ code: 1008, reason: err.code, error: err });
  }

  /**
   * Next message in arrival order, or the close info once the connection is gone. With
   * `timeoutMs`, a coordinator that sends nothing (not even a ping) for that long ends the
   * connection with PEER_TIMEOUT naming `what` was awaited.
   */
  next(timeoutMs?: number, what = 'a message'): Promise<Message | CloseInfo> {
    const m = this.queue.shift();
    if (m) return Promise.resolve(m);
    if (this.closed) return Promise.resolve(this.closed);
    return new Promise((resolve) => {
      this.waiter = resolve;
      if (timeoutMs === undefined) return;
      const arm = () => {
        if (this.waiterTimer) clearTimeout(this.waiterTimer);
        this.waiterTimer = setTimeout(() => {
          this.fail(new SvdTrainError('PEER_TIMEOUT', `the coordinator sent nothing (not even a ping) for ${timeoutMs} ms while this worker waited for ${what}; it is gone, stuck or not an svd-train coordinator`));
        }, timeoutMs);
      };
      this.waiterRearm = arm;
      arm();
    });
  }

  /** Encodes and sends; resolves once the frame is handed to the socket. */
  send(msg: Message): Promise<void> {
    if (this.closed || this.ws.readyState !== WebSocket.OPEN) return Promise.resolve();
    const bytes = encodeMessage(msg);
    return new Promise((resolve) => this.ws.send(bytes, () => resolve()));
  }

  /** Closes politely, and cuts the socket if the coordinator does not finish the close within a second. */
  close(code = 1000, reason = ''): void {
    try {
      this.ws.close(code, reason);
    } catch {
      /* already closed */
    }
    setTimeout(() => this.ws.terminate(), 1000).unref?.();
  }
}

/** Narrowing helper: did `next()` return a close instead of a message? */
export function isClose(m: Message | CloseInfo): m is CloseInfo {
  return !('type' in m);
}
