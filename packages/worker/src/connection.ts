/// <reference path="./ws-shim.d.ts" />
/**
 * One WebSocket connection from a worker to the coordinator, as an ordered inbox of decoded
 * messages. The worker handles messages strictly one at a time (a step must finish before the next
 * weights are applied), so the inbox queues frames that arrive while a step is computing.
 */
import WebSocket, { type RawData } from 'ws';
import { decodeMessage, encodeMessage, type Message } from '@svd-train/core';

/** Why a connection ended, as seen by the worker. */
export type CloseInfo = { code: number; reason: string };

export class Connection {
  private readonly queue: Message[] = [];
  private waiter: ((m: Message | CloseInfo) => void) | null = null;
  private closed: CloseInfo | null = null;

  private constructor(
    private readonly ws: WebSocket,
    private readonly maxBytes: number,
  ) {
    ws.on('message', (data: RawData) => this.push(data));
    ws.on('close', (code: number, reason: Buffer) => this.finish({ code, reason: reason.toString() }));
    ws.on('error', (err: Error) => this.finish({ code: 1006, reason: err.message }));
  }

  /** Opens a connection; rejects when the coordinator cannot be reached (caller backs off). */
  static open(url: string, maxBytes: number, handshakeTimeoutMs = 30_000): Promise<Connection> {
    return new Promise((resolve, reject) => {
      // A zero mask lets both ends skip XOR-ing every byte of a gradient frame in JavaScript (the
      // largest cost per round on the coordinator). Masking protects browsers behind caching proxies
      // from forged requests; a worker is a Node process talking to its own coordinator.
      const ws = new WebSocket(url, { maxPayload: maxBytes, handshakeTimeout: handshakeTimeoutMs, generateMask: (mask: Buffer) => void mask.fill(0) });
      const onError = (err: Error) => reject(err);
      ws.on('error', onError);
      ws.on('open', () => {
        ws.removeListener('error', onError);
        resolve(new Connection(ws, maxBytes));
      });
    });
  }

  private push(data: RawData): void {
    const bytes = Array.isArray(data) ? Buffer.concat(data) : Buffer.isBuffer(data) ? data : Buffer.from(data);
    let msg: Message;
    try {
      msg = decodeMessage(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength), { maxBytes: this.maxBytes });
    } catch (e) {
      // A frame we cannot read means the two sides disagree about the protocol: end this
      // connection (the reconnect logic decides whether to try again).
      this.finish({ code: 1002, reason: `undecodable frame from coordinator: ${(e as Error).message}` });
      this.ws.close(1002, 'undecodable frame');
      return;
    }
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w(msg);
    } else this.queue.push(msg);
  }

  private finish(info: CloseInfo): void {
    if (this.closed) return;
    this.closed = info;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = null;
      w(info);
    }
  }

  /** Next message in arrival order, or the close info once the connection is gone. */
  next(): Promise<Message | CloseInfo> {
    const m = this.queue.shift();
    if (m) return Promise.resolve(m);
    if (this.closed) return Promise.resolve(this.closed);
    return new Promise((resolve) => (this.waiter = resolve));
  }

  /** Encodes and sends; resolves once the frame is handed to the socket. */
  send(msg: Message): Promise<void> {
    if (this.closed || this.ws.readyState !== WebSocket.OPEN) return Promise.resolve();
    const bytes = encodeMessage(msg);
    return new Promise((resolve) => this.ws.send(bytes, () => resolve()));
  }

  close(code = 1000, reason = ''): void {
    try {
      this.ws.close(code, reason);
    } catch {
      this.ws.terminate();
    }
  }
}

/** Narrowing helper: did `next()` return a close instead of a message? */
export function isClose(m: Message | CloseInfo): m is CloseInfo {
  return !('type' in m);
}
