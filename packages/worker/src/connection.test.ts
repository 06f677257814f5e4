/**
 * Connection's inbox against a bare ws server standing in for the coordinator: frames that arrive
 * while the worker is busy are held in order up to MAX_QUEUED_MESSAGES, and one more ends the
 * connection with PROTOCOL_INVALID (the coordinator is told, the socket cut) instead of growing.
 */
import { WebSocketServer, type WebSocket } from 'ws';
import { describe, expect, it } from 'vitest';
import { MAX_TEACHERS, encodeMessage, type Message } from '@svd-train/core';
import { Connection, MAX_QUEUED_MESSAGES, isClose } from './connection.js';

/** A server that runs `script` on its first connection and reports how the worker closed it (null: not within 5 s). */
async function stubCoordinator(script: (ws: WebSocket) => void) {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  const closed = new Promise<{ code: number; reason: string } | null>((resolve) => {
    wss.on('connection', (ws) => {
      ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
      script(ws);
    });
    setTimeout(() => resolve(null), 5000).unref();
  });
  const { port } = wss.address() as { port: number };
  return { url: `ws://127.0.0.1:${port}`, closed, close: () => wss.close() };
}

const shutdown = (i: number): Message => ({ type: 'shutdown', reason: `frame ${i}` });

describe('Connection inbox', () => {
  it(`holds a burst of ${MAX_QUEUED_MESSAGES} unread frames in order (more than a distilling coordinator's largest burst)`, async () => {
    expect(MAX_QUEUED_MESSAGES).toBeGreaterThanOrEqual(MAX_TEACHERS + 2);
    const stub = await stubCoordinator((ws) => {
      for (let i = 0; i < MAX_QUEUED_MESSAGES; i++) ws.send(encodeMessage(shutdown(i)));
    });
    const conn = await Connection.open(stub.url);
    try {
      await new Promise((r) => setTimeout(r, 300)); // all frames arrive while nobody reads
      const got: unknown[] = [];
      for (let i = 0; i < MAX_QUEUED_MESSAGES; i++) {
        const m = await conn.next(2000);
        got.push(isClose(m) ? m : m.type === 'shutdown' && m.reason);
      }
      expect(got).toEqual(Array.from({ length: MAX_QUEUED_MESSAGES }, (_, i) => `frame ${i}`));
    } finally {
      conn.close();
      stub.close();
    }
  });

  it('a coordinator that floods frames the worker does not read: PROTOCOL_INVALID naming the limit, the socket closed with 1008', async () => {
    const stub = await stubCoordinator((ws) => {
      for (let i = 0; i < 10 * MAX_QUEUED_MESSAGES; i++) ws.send(encodeMessage(shutdown(i)));
    });
    const conn = await Connection.open(stub.url);
    try {
      // The worker is busy (it never calls next): the overflowing frame alone must end the connection.
      expect(await stub.closed).toEqual({ code: 1008, reason: 'PROTOCOL_INVALID' });
      const m = await conn.next();
      expect(isClose(m) && m.error?.code).toBe('PROTOCOL_INVALID');
      expect(isClose(m) && m.error?.message).toMatch(`more than ${MAX_QUEUED_MESSAGES} messages (the limit of this worker's inbox)`);
      // Nothing queued before or after the violation is used.
      expect(await conn.next()).toBe(m);
    } finally {
      conn.close();
      stub.close();
    }
  });
});
