/**
 * Hostile peers in both directions, with real processes and generated (never stored) frames.
 *
 * Rogue coordinator -> real `svd-worker`: a scripted ws server in this process sends traversal
 * file names, NaN weights, frames out of order, oversized frames, a step with 3M indices, endless
 * data chunks, silence, and a wrong token proof. Each time the worker ends with the coded error
 * (or, for silence, reconnects), prints no stack trace, writes nothing outside its cache, and never
 * answers a step it should not have.
 *
 * Hostile clients -> real `svd-coord start`: idle raw TCP opened all through the run, a WebSocket
 * frame header declaring 200 MB before hello, crafted msgpack headers, garbage, out-of-order
 * messages, a forged-log-line worker name, a wrong token proof, a silent upgraded socket and an
 * authenticated client sending more than one model's bytes. Then a legitimate worker trains, the
 * coordinator exits promptly although idle sockets are still open, and the final parameters are
 * bit-identical to an undisturbed run's.
 */
import { randomBytes } from 'node:crypto';
import { existsSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { connect, type Socket } from 'node:net';
import { join } from 'node:path';
import WebSocket, { WebSocketServer } from 'ws';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import {
  CIFAR_FILES,
  PROTOCOL_VERSION,
  authProof,
  configHash,
  decodeMessage,
  encodeMessage,
  makeNonce,
  md5Hex,
  resolveConfig,
  serializeConfig,
  type Message,
} from '@svd-train/core';
import {
  WORKER_BIN,
  configFile,
  finalCheckpoint,
  freePort,
  launch,
  maxDiff,
  requireBuild,
  startCoordinator,
  startWorker,
  stepRecords,
  syntheticData,
  tempDir,
  tinyRunFlags,
  waitForPort,
  type Proc,
} from './harness.js';

const TOKEN = 'hostile-peer-secret';

/** A stack trace line as Node prints them; coded errors must never come with one. */
const STACK = /^\s+at .+\(.+:\d+:\d+\)$/m;

// ---------------------------------------------------------------------------------------------
// Rogue coordinator
// ---------------------------------------------------------------------------------------------

interface RogueConn {
  ws: WebSocket;
  recv(ms?: number): Promise<Message | null>;
  send(m: Message | Uint8Array): void;
  n: number;
}

/** A ws server on loopback that runs `script` for each connection; records what the worker sent. */
async function rogueCoordinator(script: (c: RogueConn) => Promise<void>): Promise<{ port: number; received: Message[]; connections: () => number; close(): void }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0, maxPayload: 1 << 26 });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  const received: Message[] = [];
  let n = 0;
  wss.on('connection', (ws: WebSocket) => {
    const queue: (Message | null)[] = [];
    const waiters: ((m: Message | null) => void)[] = [];
    const push = (m: Message | null) => {
      const w = waiters.shift();
      if (w) w(m);
      else queue.push(m);
    };
    ws.on('message', (d: Buffer) => {
      const m = decodeMessage(new Uint8Array(d), { maxBytes: 1 << 26 });
      received.push(m);
      push(m);
    });
    ws.on('close', () => push(null));
    ws.on('error', () => {});
    const conn: RogueConn = {
      ws,
      n: n++,
      recv: (ms = 60_000) =>
        new Promise((r) => {
          if (queue.length) return r(queue.shift()!);
          const t = setTimeout(() => r(null), ms);
          waiters.push((m) => (clearTimeout(t), r(m)));
        }),
      send: (m) => {
        if (ws.readyState === WebSocket.OPEN) ws.send(m instanceof Uint8Array ? m : encodeMessage(m));
      },
    };
    void script(conn).catch(() => ws.terminate());
  });
  const { port } = wss.address() as { port: number };
  return { port, received, connections: () => n, close: () => wss.close() };
}

describe('rogue coordinator against a real svd-worker', () => {
  let data: string;
  let md5s: Record<string, string>;
  const cfg = resolveConfig({ model: 'resnet20', batch: 12, epochs: 1, limitTrain: 24, limitTest: 12, backend: 'wasm' }, undefined, {});

  beforeAll(() => {
    requireBuild();
    data = syntheticData(40, 12);
    md5s = Object.fromEntries(CIFAR_FILES.map((f) => [f, md5Hex(readFileSync(join(data, f)))]));
  });

  /** The honest part of the handshake: challenge with a valid proof, then (optionally) the welcome. */
  async function handshake(c: RogueConn, opts: { welcome?: Partial<Extract<Message, { type: 'welcome' }>>; upTo?: 'auth' | 'manifest' } = {}) {
    const hello = (await c.recv()) as Extract<Message, { type: 'hello' }>;
    const nonces = { worker: hello.nonce, coordinator: makeNonce() };
    c.send({ type: 'challenge', nonce: nonces.coordinator, authRequired: true, proof: authProof(TOKEN, 'coordinator', nonces) });
    await c.recv();
    if (opts.upTo === 'auth') return null;
    c.send({
      type: 'welcome',
      workerId: 'rogue-1',
      config: serializeConfig(cfg),
      configHash: configHash(cfg),
      datasetInfo: { trainCount: 24, testCount: 12, md5s },
      ...opts.welcome,
    });
    return (await c.recv()) as Extract<Message, { type: 'manifest' }>;
  }

  /** Runs a worker with its own cache against the rogue; resolves with its exit code and output. */
  async function workerAgainst(port: number, extra: string[] = [], cacheRoot = tempDir('svd-rogue-cache-')): Promise<{ code: number | string; out: string; cacheRoot: string; proc: Proc }> {
    const proc = launch(WORKER_BIN, ['--coordinator', `ws://127.0.0.1:${port}`, '--backend', 'wasm', '--handshake-timeout-ms', '1500', ...extra], {
      SVD_TRAIN_TOKEN: TOKEN,
      SVD_TRAIN_CACHE: cacheRoot,
    });
    const code = await Promise.race([proc.exited, new Promise<string>((r) => setTimeout(() => r('still running'), 60_000))]);
    if (code === 'still running') proc.kill('SIGKILL');
    return { code, out: proc.output(), cacheRoot, proc };
  }

  function expectCoded(r: { code: number | string; out: string }, code: string, re?: RegExp): void {
    expect(r.code, r.out).not.toBe(0);
    expect(r.code, r.out).not.toBe('still running');
    expect(r.out).toContain(`error [${code}]`);
    if (re) expect(r.out).toMatch(re);
    expect(r.out).not.toMatch(STACK);
  }

  it('traversal file names: refused before anything is written, nothing outside the cache', async () => {
    const root = tempDir('svd-rogue-root-');
    const cacheRoot = join(root, 'home', 'cache');
    mkdirSync(cacheRoot, { recursive: true });
    const rogue = await rogueCoordinator(async (c) => {
      await handshake(c, { welcome: { datasetInfo: { trainCount: 24, testCount: 12, md5s: { ...md5s, '../../../pwned.txt': md5Hex(new Uint8Array([1])) } } } });
    });
    try {
      const r = await workerAgainst(rogue.port, [], cacheRoot);
      expectCoded(r, 'PROTOCOL_INVALID', /pwned\.txt.*expected one of data_batch_1\.bin/);
      expect(existsSync(join(root, 'pwned.txt'))).toBe(false);
      expect(readdirSync(root)).toEqual(['home']);
      expect(rogue.received.some((m) => m.type === 'data-request')).toBe(false);
    } finally {
      rogue.close();
    }
  });

  it('NaN weights: NON_FINITE, and no gradients are ever sent', async () => {
    const rogue = await rogueCoordinator(async (c) => {
      const manifest = (await handshake(c))!;
      const params = manifest.params.map((s) => ({ ...s, data: new Float32Array(s.shape.reduce((a, b) => a * b, 1)).fill(0.01) }));
      params[3]!.data[0] = NaN;
      c.send({ type: 'weights', step: 0, params, buffers: [] });
      c.send({ type: 'step', step: 0, epoch: 0, seed: 0, indices: Int32Array.from([1, 2]), lr: 0.1, attempt: 1 });
      await c.recv(20_000);
    });
    try {
      const r = await workerAgainst(rogue.port, ['--data', data]);
      expectCoded(r, 'NON_FINITE', /NaN at index 0/);
      expect(rogue.received.some((m) => m.type === 'gradients')).toBe(false);
      expect(rogue.received.some((m) => m.type === 'error' && m.code === 'NON_FINITE')).toBe(true);
    } finally {
      rogue.close();
    }
  });

  it("out of order: 'step' and 'weights' before welcome are coded violations", async () => {
    for (const first of ['step', 'weights'] as const) {
      const rogue = await rogueCoordinator(async (c) => {
        await c.recv();
        if (first === 'step') c.send({ type: 'step', step: 0, epoch: 0, seed: 0, indices: Int32Array.from([1]), lr: 0.1, attempt: 0 });
        else c.send({ type: 'weights', step: 0, params: [], buffers: [] });
        await c.recv(20_000);
      });
      try {
        const r = await workerAgainst(rogue.port);
        expectCoded(r, 'PROTOCOL_INVALID', new RegExp(`'${first}' while waiting for the challenge`));
      } finally {
        rogue.close();
      }
    }
  });

  it('oversized frames: 100 KB before welcome, and a step with 3M indices after it, are refused on the header', async () => {
    const early = await rogueCoordinator(async (c) => {
      await c.recv();
      c.send(encodeMessage({ type: 'error', code: 'X', message: 'x'.repeat(100_000) }));
      await c.recv(20_000);
    });
    try {
      expectCoded(await workerAgainst(early.port), 'FRAME_TOO_LARGE', /65536-byte limit/);
    } finally {
      early.close();
    }
    const late = await rogueCoordinator(async (c) => {
      const manifest = (await handshake(c))!;
      const params = manifest.params.map((s) => ({ ...s, data: new Float32Array(s.shape.reduce((a, b) => a * b, 1)).fill(0.01) }));
      c.send({ type: 'weights', step: 0, params, buffers: [] });
      c.send({ type: 'step', step: 0, epoch: 0, seed: 0, indices: new Int32Array(3_000_000), lr: 0.1, attempt: 1 });
      await c.recv(20_000);
    });
    try {
      expectCoded(await workerAgainst(late.port, ['--data', data]), 'FRAME_TOO_LARGE');
      expect(late.received.some((m) => m.type === 'gradients')).toBe(false);
    } finally {
      late.close();
    }
  });

  it('a step with an index outside the training set is refused before computing', async () => {
    const rogue = await rogueCoordinator(async (c) => {
      const manifest = (await handshake(c))!;
      const params = manifest.params.map((s) => ({ ...s, data: new Float32Array(s.shape.reduce((a, b) => a * b, 1)).fill(0.01) }));
      c.send({ type: 'weights', step: 0, params, buffers: [] });
      c.send({ type: 'step', step: 0, epoch: 0, seed: 0, indices: Int32Array.from([1, 999_999]), lr: 0.1, attempt: 1 });
      await c.recv(20_000);
    });
    try {
      expectCoded(await workerAgainst(rogue.port, ['--data', data]), 'PROTOCOL_INVALID', /sample index 999999 at position 1; expected indices below 24/);
    } finally {
      rogue.close();
    }
  });

  it('endless data chunks: refused past the size of a CIFAR-10 file', async () => {
    const chunk = new Uint8Array(4 * 1024 * 1024);
    const rogue = await rogueCoordinator(async (c) => {
      await handshake(c, { upTo: 'auth' });
      c.send({ type: 'welcome', workerId: 'rogue-1', config: serializeConfig(cfg), configHash: configHash(cfg), datasetInfo: { trainCount: 24, testCount: 12, md5s } });
      const req = await c.recv();
      if (req?.type !== 'data-request') return;
      for (let i = 0; i < 12 && c.ws.readyState === WebSocket.OPEN; i++) {
        c.send({ type: 'data-chunk', file: req.file, index: i, total: 1_000_000, bytes: chunk, md5: md5s[req.file]! });
        await new Promise((r) => setTimeout(r, 20));
      }
      await c.recv(20_000);
    });
    try {
      // No --data: the worker has to fetch.
      expectCoded(await workerAgainst(rogue.port), 'PROTOCOL_INVALID', /more than 30730000 bytes/);
    } finally {
      rogue.close();
    }
  });

  it('a silent coordinator: PEER_TIMEOUT after the handshake deadline, then the worker reconnects', async () => {
    const rogue = await rogueCoordinator(async (c) => {
      await c.recv(30_000); // read the hello, answer nothing
    });
    const proc = launch(WORKER_BIN, ['--coordinator', `ws://127.0.0.1:${rogue.port}`, '--backend', 'wasm', '--handshake-timeout-ms', '800'], { SVD_TRAIN_TOKEN: TOKEN });
    try {
      await proc.waitFor(/error \[PEER_TIMEOUT\].*waited for the challenge/, 60_000);
      await proc.waitFor(/reconnecting in/, 10_000);
      const deadline = Date.now() + 20_000;
      while (rogue.connections() < 2 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 100));
      expect(rogue.connections()).toBeGreaterThanOrEqual(2);
      expect(proc.output()).not.toMatch(STACK);
    } finally {
      proc.kill('SIGKILL');
      rogue.close();
    }
  });

  it('a wrong token proof: AUTH_FAILED, and the worker never proves its own token to it', async () => {
    const rogue = await rogueCoordinator(async (c) => {
      const hello = (await c.recv()) as Extract<Message, { type: 'hello' }>;
      const nonces = { worker: hello.nonce, coordinator: makeNonce() };
      c.send({ type: 'challenge', nonce: nonces.coordinator, authRequired: true, proof: authProof('guessed-token', 'coordinator', nonces) });
      await c.recv(20_000);
    });
    try {
      expectCoded(await workerAgainst(rogue.port), 'AUTH_FAILED', /could not prove it knows the token/);
      expect(rogue.received.some((m) => m.type === 'auth')).toBe(false);
    } finally {
      rogue.close();
    }
  });
});

// ---------------------------------------------------------------------------------------------
// Hostile clients
// ---------------------------------------------------------------------------------------------

/** Does the HTTP upgrade by hand, so frames can be written byte by byte. */
function rawUpgrade(port: number): Promise<{ sock: Socket; bytes: () => Buffer; closed: Promise<void> }> {
  return new Promise((res, rej) => {
    const sock = connect(port, '127.0.0.1');
    let buf = Buffer.alloc(0);
    const closed = new Promise<void>((r) => sock.on('close', () => r()));
    sock.on('error', () => {});
    sock.on('data', (d: Buffer) => {
      buf = Buffer.concat([buf, d]);
      if (buf.includes('\r\n\r\n') && !buf.toString('latin1').startsWith('HTTP/1.1 101')) rej(new Error(`upgrade refused: ${buf.toString('latin1').slice(0, 80)}`));
      else if (buf.includes('\r\n\r\n')) res({ sock, bytes: () => buf, closed });
    });
    sock.write(`GET / HTTP/1.1\r\nHost: 127.0.0.1:${port}\r\nUpgrade: websocket\r\nConnection: Upgrade\r\nSec-WebSocket-Key: ${randomBytes(16).toString('base64')}\r\nSec-WebSocket-Version: 13\r\n\r\n`);
  });
}

/** A masked binary frame header declaring `len` payload bytes (64-bit length form). */
function frameHeader(len: number): Buffer {
  const h = Buffer.alloc(14);
  h[0] = 0x82;
  h[1] = 0x80 | 127;
  h.writeBigUInt64BE(BigInt(len), 2);
  return h; // mask key: 4 zero bytes
}

/** A ws client that collects decoded answers and the close code. */
function client(port: number): Promise<{ ws: WebSocket; got: Message[]; closed: Promise<number> }> {
  return new Promise((res, rej) => {
    const ws = new WebSocket(`ws://127.0.0.1:${port}`, { maxPayload: 1 << 26 });
    const got: Message[] = [];
    ws.on('message', (d: Buffer) => {
      try {
        got.push(decodeMessage(new Uint8Array(d), { maxBytes: 1 << 26 }));
      } catch {
        /* not ours to judge here */
      }
    });
    const closed = new Promise<number>((r) => ws.on('close', (code: number) => r(code)));
    ws.on('error', rej);
    ws.on('open', () => res({ ws, got, closed }));
  });
}

const waitFor = async (cond: () => boolean, ms: number): Promise<boolean> => {
  const end = Date.now() + ms;
  while (!cond() && Date.now() < end) await new Promise((r) => setTimeout(r, 50));
  return cond();
};

describe('hostile clients against a real svd-coord start', () => {
  let data: string;
  let cfgFile: string;
  let tokenFile: string;
  let reference: ReturnType<typeof finalCheckpoint>;

  /** One training run: coordinator with a token file, one legitimate worker. */
  function run(out: string, port: number): Proc {
    return startCoordinator([...tinyRunFlags({ data, out, port, epochs: 1, limitTrain: 24, batch: 12 }), '--config', cfgFile, '--token-file', tokenFile]);
  }

  beforeAll(async () => {
    requireBuild();
    data = syntheticData(40, 12);
    // A short handshake deadline (the auth deadline is min(10 s, handshakeTimeoutMs)) keeps the suite quick.
    cfgFile = configFile({ handshakeTimeoutMs: 5000 });
    tokenFile = join(tempDir('svd-token-'), 'token');
    writeFileSync(tokenFile, `${TOKEN}\n`, { mode: 0o600 });
    const out = tempDir();
    const port = await freePort();
    const coord = run(out, port);
    await waitForPort(port, 60_000, coord);
    const w = startWorker(port, ['--data', data], { SVD_TRAIN_TOKEN: TOKEN });
    expect(await coord.exited, coord.output()).toBe(0);
    await w.exited;
    reference = finalCheckpoint(out);
  });

  let coord: Proc | null = null;
  afterAll(() => coord?.kill('SIGKILL'));

  it('survives the flood, trains to the undisturbed parameters, and exits with idle sockets still open', async () => {
    const out = tempDir();
    const port = await freePort();
    coord = run(out, port);
    await waitForPort(port, 60_000, coord);
    const idle: Socket[] = [];
    // Idle raw TCP all through the run: a fresh one every 300 ms, so some are always open.
    const idleTimer = setInterval(() => {
      const s = connect(port, '127.0.0.1');
      s.on('error', () => {});
      idle.push(s);
    }, 300);
    try {
      // 1. A frame header declaring 200 MB before hello: refused with 1009 before its payload.
      const big = await rawUpgrade(port);
      big.sock.write(frameHeader(200 * 1024 * 1024));
      big.sock.write(randomBytes(64 * 1024));
      await Promise.race([big.closed, new Promise((r) => setTimeout(r, 5000))]);
      const closeFrame = big.bytes().subarray(big.bytes().indexOf('\r\n\r\n') + 4);
      expect(closeFrame[0]).toBe(0x88);
      expect(closeFrame.readUInt16BE(2)).toBe(1009);

      // 2. Generated garbage, crafted headers and out-of-order messages: each gets a coded error.
      const array32 = new Uint8Array(40_000);
      array32.set([0xdd, 0x7f, 0xff, 0xff, 0xff]);
      const frames: Uint8Array[] = [
        array32,
        new Uint8Array([0xdf, 0xff, 0xff, 0xff, 0xff]),
        new Uint8Array([0xc6, 0x7f, 0xff, 0xff, 0xff, 0x00]),
        new Uint8Array(64).fill(0x91),
        encodeMessage({ type: 'auth', mac: 'x' }),
        encodeMessage({ type: 'step', step: 0, epoch: 0, seed: 0, indices: new Int32Array(10), lr: 1, attempt: 0 }),
        ...Array.from({ length: 12 }, (_, i) => randomBytes(1 + ((i * 7919) % 60_000))),
      ];
      for (const f of frames) {
        const c = await client(port);
        c.ws.send(f);
        const code = await Promise.race([c.closed, new Promise<number>((r) => setTimeout(() => r(-1), 5000))]);
        expect(code).toBe(1008);
        expect(c.got.find((m) => m.type === 'error')).toBeDefined();
        c.ws.terminate();
      }

      // 3. A worker name that forges a log line, then a wrong token proof.
      const forger = await client(port);
      const nonce = makeNonce();
      forger.ws.send(encodeMessage({ type: 'hello', protocolVersion: PROTOCOL_VERSION, workerName: 'x\nworker forged@evil joined: backend root', backend: 'cpu', device: 'd', capabilities: [], pid: 1, hostname: 'h\x1b[2K', hasData: true, nonce }));
      await waitFor(() => forger.got.some((m) => m.type === 'challenge'), 5000);
      const ch = forger.got.find((m) => m.type === 'challenge') as Extract<Message, { type: 'challenge' }>;
      forger.ws.send(encodeMessage({ type: 'auth', mac: authProof('guess', 'worker', { worker: nonce, coordinator: ch.nonce }) }));
      expect(await forger.closed).toBe(1008);
      expect(forger.got.find((m) => m.type === 'error')).toMatchObject({ code: 'AUTH_FAILED' });

      // 4. An upgraded socket that never says hello: dropped at the auth deadline, PEER_TIMEOUT.
      const silent = await client(port);
      const silentT0 = Date.now();

      // 5. An authenticated client that sends more than one model's tensors: 1009, FRAME_TOO_LARGE.
      const greedy = await client(port);
      const gNonce = makeNonce();
      greedy.ws.send(encodeMessage({ type: 'hello', protocolVersion: PROTOCOL_VERSION, workerName: 'greedy', backend: 'cpu', device: 'd', capabilities: [], pid: 1, hostname: 'h', hasData: true, nonce: gNonce }));
      await waitFor(() => greedy.got.some((m) => m.type === 'challenge'), 5000);
      const gch = greedy.got.find((m) => m.type === 'challenge') as Extract<Message, { type: 'challenge' }>;
      greedy.ws.send(encodeMessage({ type: 'auth', mac: authProof(TOKEN, 'worker', { worker: gNonce, coordinator: gch.nonce }) }));
      await waitFor(() => greedy.got.some((m) => m.type === 'welcome'), 5000);
      greedy.ws.send(new Uint8Array(8 * 1024 * 1024)); // ResNet-20's tensors are ~1.1 MB
      expect(await greedy.closed).toBe(1009);

      expect(await silent.closed).toBe(1008);
      expect(Date.now() - silentT0).toBeGreaterThan(3000);

      // The coordinator is alive; now the legitimate worker trains the run.
      expect(coord.child.exitCode).toBeNull();
      const w = startWorker(port, ['--data', data], { SVD_TRAIN_TOKEN: TOKEN });
      await coord.waitFor(/training finished/, 120_000);
      const finishedAt = Date.now();
      expect(await coord.exited).toBe(0);
      // Exit does not wait for the idle sockets (one opened every 300 ms is always there).
      expect(Date.now() - finishedAt).toBeLessThan(8000);
      await w.exited;
    } finally {
      clearInterval(idleTimer);
      for (const s of idle) s.destroy();
    }
    const log = coord.output();
    expect(log).toMatch(/FRAME_TOO_LARGE: sent a frame larger than the 65536-byte limit before authentication/);
    expect(log).toMatch(/PROTOCOL_INVALID: frame refused before decoding/);
    expect(log).toMatch(/PEER_TIMEOUT: handshake not finished within 5000 ms/);
    expect(log).toMatch(/FRAME_TOO_LARGE: sent a frame larger than the \d+-byte limit \(one model's tensors\)/);
    expect(log).toContain('x\\x0aworker forged@evil joined: backend root@h\\x1b[2K');
    expect(log).not.toMatch(/^worker forged@evil joined/m);
    expect(log).not.toMatch(STACK);
    expect(stepRecords(out).length).toBe(2);
    const got = finalCheckpoint(out);
    expect(got.step).toBe(reference.step);
    const d = maxDiff(reference.params, got.params);
    expect(d.diff, `largest difference at ${d.where}`).toBe(0);
    expect(maxDiff(reference.buffers, got.buffers).diff).toBe(0);
  });
});
