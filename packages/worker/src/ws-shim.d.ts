/**
 * Minimal type declarations for the `ws` package (no @types/ws in the workspace). Only the surface
 * the worker and its tests use; kept out of the worker's public types on purpose.
 */
declare module 'ws' {
  import type { EventEmitter } from 'node:events';
  type RawData = Buffer | ArrayBuffer | Buffer[];
  class WebSocket extends EventEmitter {
    static readonly OPEN: number;
    readonly readyState: number;
    constructor(url: string, options?: { maxPayload?: number; handshakeTimeout?: number; generateMask?: (mask: Buffer) => void; perMessageDeflate?: boolean; ca?: string | Buffer });
    send(data: Uint8Array | string, cb?: (err?: Error) => void): void;
    close(code?: number, reason?: string): void;
    terminate(): void;
    on(event: 'open', cb: () => void): this;
    on(event: 'ping', cb: (data: Buffer) => void): this;
    on(event: 'message', cb: (data: RawData, isBinary: boolean) => void): this;
    on(event: 'close', cb: (code: number, reason: Buffer) => void): this;
    on(event: 'error', cb: (err: Error) => void): this;
  }
  class WebSocketServer extends EventEmitter {
    constructor(options: { host?: string; port?: number; maxPayload?: number }, cb?: () => void);
    address(): { port: number; address: string } | string | null;
    close(cb?: (err?: Error) => void): void;
    readonly clients: Set<WebSocket>;
    on(event: 'connection', cb: (ws: WebSocket) => void): this;
    on(event: 'listening', cb: () => void): this;
    once(event: 'listening', cb: () => void): this;
  }
  export { WebSocket, WebSocketServer, type RawData };
  export default WebSocket;
}
