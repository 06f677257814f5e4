/**
 * Minimal type declarations for the `ws` package (no @types/ws in the workspace): only the
 * server and client surface the coordinator, its tests and the benchmark use.
 */
declare module 'ws' {
  import type { EventEmitter } from 'node:events';
  import type { IncomingMessage } from 'node:http';
  type RawData = Buffer | ArrayBuffer | Buffer[];
  class WebSocket extends EventEmitter {
    static readonly OPEN: number;
    static readonly CONNECTING: number;
    readonly readyState: number;
    readonly bufferedAmount: number;
    constructor(url: string, options?: { maxPayload?: number; handshakeTimeout?: number; perMessageDeflate?: boolean });
    send(data: Uint8Array | string, cb?: (err?: Error) => void): void;
    send(data: Uint8Array | string, opts: { binary?: boolean; compress?: boolean }, cb?: (err?: Error) => void): void;
    close(code?: number, reason?: string): void;
    terminate(): void;
    ping(data?: Uint8Array): void;
    on(event: 'open', cb: () => void): this;
    on(event: 'message', cb: (data: RawData, isBinary: boolean) => void): this;
    on(event: 'close', cb: (code: number, reason: Buffer) => void): this;
    on(event: 'error', cb: (err: Error) => void): this;
    once(event: 'open', cb: () => void): this;
    once(event: 'close', cb: (code: number, reason: Buffer) => void): this;
    once(event: 'error', cb: (err: Error) => void): this;
  }
  interface ServerOptions {
    host?: string;
    port?: number;
    noServer?: boolean;
    maxPayload?: number;
    perMessageDeflate?: boolean;
  }
  class WebSocketServer extends EventEmitter {
    constructor(options: ServerOptions, cb?: () => void);
    address(): { port: number; address: string } | string | null;
    close(cb?: (err?: Error) => void): void;
    readonly clients: Set<WebSocket>;
    handleUpgrade(req: IncomingMessage, socket: import('node:net').Socket, head: Buffer, cb: (ws: WebSocket, req: IncomingMessage) => void): void;
    on(event: 'connection', cb: (ws: WebSocket, req: IncomingMessage) => void): this;
    on(event: 'listening', cb: () => void): this;
    on(event: 'error', cb: (err: Error) => void): this;
    once(event: 'listening', cb: () => void): this;
    once(event: 'error', cb: (err: Error) => void): this;
  }
  export { WebSocket, WebSocketServer, type RawData };
  export default WebSocket;
}
