/**
 * fetchFile (one dataset file over data-chunk frames) against a bare ws server standing in for the
 * coordinator: a whole file arrives; a total beyond what a CIFAR-10 file fills, a short chunk
 * before the last, and a changed md5 are refused with PROTOCOL_INVALID, wire strings escaped.
 */
import { WebSocketServer } from 'ws';
import { describe, expect, it } from 'vitest';
import { CIFAR_OFFICIAL_FILE_BYTES, DATA_CHUNK_BYTES, DATA_CHUNK_FRAME_BYTES, SvdTrainError, decodeMessage, encodeMessage, type Message } from '@svd-train/core';
import { Connection } from './connection.js';
import { MAX_FILE_CHUNKS, fetchFile } from './session.js';

const FILE = 'data_batch_1.bin';
const MD5 = 'd41d8cd98f00b204e9800998ecf8427e';

type Chunk = { total: number; bytes: Uint8Array; md5?: string };

/** Fetches FILE from a server that answers its data-request with `chunks` (index in order); returns the bytes or the error. */
async function fetchFrom(chunks: Chunk[], timeoutMs = 2000): Promise<Uint8Array | SvdTrainError> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  wss.on('connection', (ws) => {
    ws.on('message', (d) => {
      const m = decodeMessage(new Uint8Array(d as Buffer));
      if (m.type !== 'data-request') return;
      for (const [index, c] of chunks.entries()) {
        const msg: Message = { type: 'data-chunk', file: m.file, index, total: c.total, bytes: c.bytes, md5: c.md5 ?? MD5 };
        if (ws.readyState === ws.OPEN) ws.send(encodeMessage(msg));
      }
    });
  });
  const { port } = wss.address() as { port: number };
  const conn = await Connection.open(`ws://127.0.0.1:${port}`);
  conn.setLimit(DATA_CHUNK_FRAME_BYTES); // as the session does after welcome
  try {
    return await fetchFile(conn, FILE, timeoutMs).catch((e: unknown) => e as SvdTrainError);
  } finally {
    conn.close();
    wss.close();
  }
}

describe('fetchFile', () => {
  it(`a file of 2 chunks (${DATA_CHUNK_BYTES} + 10 bytes) arrives whole`, async () => {
    const bytes = new Uint8Array(DATA_CHUNK_BYTES + 10);
    for (let i = 0; i < bytes.length; i++) bytes[i] = i % 251;
    const got = await fetchFrom([
      { total: 2, bytes: bytes.subarray(0, DATA_CHUNK_BYTES) },
      { total: 2, bytes: bytes.subarray(DATA_CHUNK_BYTES) },
    ]);
    expect(got).toBeInstanceOf(Uint8Array);
    // Buffer.equals: a deep toEqual of 4 MB takes seconds.
    expect(Buffer.from(got as Uint8Array).equals(bytes)).toBe(true);
  });

  it(`total 1000000 (empty chunks) is refused at chunk 0: at most ${MAX_FILE_CHUNKS} chunks fit a CIFAR-10 file`, async () => {
    expect(MAX_FILE_CHUNKS).toBe(Math.ceil(CIFAR_OFFICIAL_FILE_BYTES / DATA_CHUNK_BYTES));
    const got = await fetchFrom(Array.from({ length: 50 }, () => ({ total: 1_000_000, bytes: new Uint8Array(0) })));
    expect(got).toBeInstanceOf(SvdTrainError);
    expect((got as SvdTrainError).code).toBe('PROTOCOL_INVALID');
    expect((got as SvdTrainError).message).toContain(`data-chunk 0 with total 1000000; expected 1 to ${MAX_FILE_CHUNKS} chunks of ${DATA_CHUNK_BYTES} bytes`);
    expect((got as SvdTrainError).message).toContain(`more than ${CIFAR_OFFICIAL_FILE_BYTES} bytes`);
  });

  it('an empty (or short) chunk before the last is refused: every chunk but the last is full', async () => {
    const empty = await fetchFrom([{ total: 2, bytes: new Uint8Array(0) }, { total: 2, bytes: new Uint8Array(10) }]);
    expect((empty as SvdTrainError).code).toBe('PROTOCOL_INVALID');
    expect((empty as SvdTrainError).message).toContain(`data-chunk 0 of 2 with 0 bytes; expected exactly ${DATA_CHUNK_BYTES}`);
    const short = await fetchFrom([{ total: 3, bytes: new Uint8Array(DATA_CHUNK_BYTES) }, { total: 3, bytes: new Uint8Array(7) }, { total: 3, bytes: new Uint8Array(7) }]);
    expect((short as SvdTrainError).message).toContain(`data-chunk 1 of 3 with 7 bytes; expected exactly ${DATA_CHUNK_BYTES}`);
  });

  it('a changed md5 is refused with both md5s escaped and cut to 80 characters', async () => {
    const got = await fetchFrom([
      { total: 2, bytes: new Uint8Array(DATA_CHUNK_BYTES), md5: 'f'.repeat(1000) },
      { total: 2, bytes: new Uint8Array(10), md5: 'ab\n[worker] md5 ok\u001b[2J' },
    ]);
    const msg = (got as SvdTrainError).message;
    expect((got as SvdTrainError).code).toBe('PROTOCOL_INVALID');
    expect(msg).toContain("md5 'ab\\x0a[worker] md5 ok\\x1b[2J'");
    expect(msg).toContain(`md5 '${'f'.repeat(80)}… (1000 chars)'`);
    expect(msg).not.toMatch(/[\n\u001b]/);
    expect(msg.length).toBeLessThan(600);
  });
});
