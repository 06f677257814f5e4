/**
 * runWorker against a scripted fake coordinator (a bare ws server speaking core's protocol): the
 * handshake answers the challenge with the HMAC of the nonce, fetches missing data in chunks and
 * md5-checks it, sends its manifest, computes a step's gradients with the right sample count,
 * evaluates, reconnects after the coordinator drops it, and stops on shutdown or on a refusal.
 */
import { mkdtempSync, readFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { WebSocketServer, type WebSocket } from 'ws';
import { describe, expect, it } from 'vitest';
import {
  CIFAR_FILES,
  DATA_CHUNK_BYTES,
  MAX_TIMER_MS,
  PROTOCOL_VERSION,
  SvdTrainError,
  authProof,
  makeNonce,
  md5Hex,
  configHash,
  decodeMessage,
  encodeMessage,
  resolveConfig,
  serializeConfig,
  writeSyntheticCifar10,
  type Message,
} from '@svd-train/core';
import { buildResNet, buildResNetForConfig, depthOf, getBuffers, getParameters } from '@svd-train/layers';
import { runWorker } from './worker.js';

const TOKEN = 'tok';

function dataset() {
  const dir = mkdtempSync(join(tmpdir(), 'wk-data-'));
  writeSyntheticCifar10(dir, { train: 10, test: 4, seed: 5 });
  const md5s = Object.fromEntries(CIFAR_FILES.map((f) => [f, md5Hex(readFileSync(join(dir, f)))]));
  return { dir, md5s };
}

type Script = (ws: WebSocket, recv: () => Promise<Message>, send: (m: Message) => void, conn: number) => Promise<void>;

async function fakeCoordinator(script: Script): Promise<{ url: string; close(): void }> {
  const wss = new WebSocketServer({ host: '127.0.0.1', port: 0 });
  await new Promise<void>((r) => wss.once('listening', () => r()));
  let conn = 0;
  wss.on('connection', (ws) => {
    const queue: Message[] = [];
    const waiters: ((m: Message) => void)[] = [];
    ws.on('message', (d) => {
      const m = decodeMessage(new Uint8Array(d as Buffer));
      const w = waiters.shift();
      if (w) w(m);
      else queue.push(m);
    });
    const recv = () => new Promise<Message>((r) => (queue.length ? r(queue.shift()!) : waiters.push(r)));
    const send = (m: Message) => ws.send(encodeMessage(m));
    void script(ws, recv, send, conn++).catch((e) => {
      send({ type: 'error', code: 'TEST_FAILED', message: String(e) });
      ws.close();
    });
  });
  const { port } = wss.address() as { port: number };
  return { url: `ws://127.0.0.1:${port}`, close: () => wss.close() };
}

const cfg = resolveConfig({ batch: 4, limitTrain: 8, model: 'resnet20', augment: true }, undefined, {});

async function handshake(recv: () => Promise<Message>, send: (m: Message) => void, md5s: Record<string, string>, serveDir: string | null, config = cfg) {
  const hello = await recv();
  expect(hello.type).toBe('hello');
  if (hello.type !== 'hello') throw new Error();
  expect(hello.protocolVersion).toBe(PROTOCOL_VERSION);
  const nonces = { worker: hello.nonce, coordinator: makeNonce() };
  send({ type: 'challenge', nonce: nonces.coordinator, authRequired: true, proof: authProof(TOKEN, 'coordinator', nonces) });
  const auth = await recv();
  expect(auth).toEqual({ type: 'auth', mac: authProof(TOKEN, 'worker', nonces) });
  send({ type: 'welcome', workerId: 'w0', config: serializeConfig(config), configHash: configHash(config), datasetInfo: { trainCount: 8, testCount: 4, md5s } });
  const requested: string[] = [];
  for (;;) {
    const m = await recv();
    if (m.type === 'data-request') {
      requested.push(m.file);
      // Cut as the coordinator's DatasetServer does: every chunk but the last is DATA_CHUNK_BYTES.
      const bytes = new Uint8Array(readFileSync(join(serveDir!, m.file)));
      const total = Math.max(1, Math.ceil(bytes.length / DATA_CHUNK_BYTES));
      for (let index = 0; index < total; index++) {
        send({ type: 'data-chunk', file: m.file, index, total, bytes: bytes.subarray(index * DATA_CHUNK_BYTES, (index + 1) * DATA_CHUNK_BYTES), md5: md5s[m.file]! });
      }
      continue;
    }
    expect(m.type).toBe('manifest');
    return { manifest: m as Extract<Message, { type: 'manifest' }>, requested, hello };
  }
}

describe('runWorker against a scripted coordinator', () => {
  it('handshake, chunked data transfer, one step, one eval, reconnect, shutdown', async () => {
    const { dir, md5s } = dataset();
    const log: string[] = [];
    const seen: Record<string, unknown> = {};
    const fake = await fakeCoordinator(async (ws, recv, send, conn) => {
      const { manifest, requested, hello } = await handshake(recv, send, md5s, dir);
      if (conn === 0) {
        seen.requested = requested;
        seen.hasData = (hello as { hasData: boolean }).hasData;
        expect(manifest.configHash).toBe(configHash(cfg));
        expect(manifest.params.length).toBeGreaterThan(10);
        // Weights first: a step before any weights is a protocol violation the worker refuses.
        const fill = (specs: { name: string; shape: number[] }[]) => specs.map((t) => ({ ...t, data: new Float32Array(t.shape.reduce((a, b) => a * b, 1)).fill(0.05) }));
        send({ type: 'weights', step: 0, params: fill(manifest.params), buffers: [] });
        send({ type: 'step', step: 0, epoch: 0, seed: 0, indices: Int32Array.from([3, 1, 4]), lr: 0.1, attempt: 0 });
        const g = await recv();
        if (g.type !== 'gradients') throw new Error(`expected gradients, got ${g.type}`);
        seen.n = g.n;
        seen.names = g.grads.map((t) => t.name);
        seen.manifestNames = manifest.params.map((t) => t.name);
        seen.finite = Number.isFinite(g.loss.total) && g.loss.total >= g.loss.ce;
        send({ type: 'eval', evalId: 7, split: 'test', indices: Int32Array.from([0, 1, 2, 3]) });
        const e = await recv();
        seen.eval = e.type === 'eval-result' ? [e.evalId, e.n] : e.type;
        ws.close(1001, 'going away'); // the worker must reconnect
        return;
      }
      seen.reconnected = requested.length === 0; // cached: no second transfer
      send({ type: 'shutdown', reason: 'done' });
    });
    try {
      const r = await runWorker({ coordinator: fake.url, backend: 'wasm', token: TOKEN, cacheDir: mkdtempSync(join(tmpdir(), 'wk-cache-')), log: (s) => log.push(s) });
      expect(r.reason).toBe('done');
      expect(r.steps).toBe(1);
    } finally {
      fake.close();
    }
    expect(seen.hasData).toBe(false);
    expect((seen.requested as string[]).sort()).toEqual([...CIFAR_FILES].sort());
    expect(seen.n).toBe(3);
    expect(seen.names).toEqual(seen.manifestNames);
    expect(seen.finite).toBe(true);
    expect(seen.eval).toEqual([7, 4]);
    expect(seen.reconnected).toBe(true);
    expect(log.join('\n')).toMatch(/backend wasm/);
    expect(log.join('\n')).toMatch(/reconnecting/);
  });

  type Loss = Extract<Message, { type: 'gradients' }>['loss'];
  /**
   * Runs a worker against a coordinator that sends `before` (e.g. the teacher), constant weights,
   * then one step of 2 samples per entry of `epochs` (its epoch), and returns the reported losses.
   */
  async function stepLosses(config: typeof cfg, epochs: number[], before: Message[] = []): Promise<Loss[]> {
    const { dir, md5s } = dataset();
    const losses: Loss[] = [];
    const fake = await fakeCoordinator(async (_ws, recv, send) => {
      const { manifest } = await handshake(recv, send, md5s, dir, config);
      const fill = (specs: { name: string; shape: number[] }[]) => specs.map((t) => ({ ...t, data: new Float32Array(t.shape.reduce((a, b) => a * b, 1)).fill(0.05) }));
      for (const m of before) send(m);
      send({ type: 'weights', step: 0, params: fill(manifest.params), buffers: [] });
      for (const [step, epoch] of epochs.entries()) {
        send({ type: 'step', step, epoch, seed: 0, indices: Int32Array.from([0, 1]), lr: 0.1, attempt: 0 });
        const g = await recv();
        if (g.type !== 'gradients') throw new Error(`expected gradients, got ${g.type}`);
        losses.push(g.loss);
      }
      send({ type: 'shutdown', reason: 'done' });
    });
    try {
      await runWorker({ coordinator: fake.url, backend: 'wasm', token: TOKEN, cacheDir: mkdtempSync(join(tmpdir(), 'wk-cache-')), log: () => {} });
    } finally {
      fake.close();
    }
    return losses;
  }

  it('--sparsity-start: the sparsity term is off for the first fraction of the steps, then weighs λ_s', async () => {
    // 8 images, batch 4, 2 epochs: 4 steps; start 0.5 turns the term on at step 2.
    const sched = resolveConfig({ batch: 4, limitTrain: 8, model: 'resnet20', epochs: 2, lambdaO: 0.5, lambdaS: 0.07, sparsityStart: 0.5 }, undefined, {});
    const losses = await stepLosses(sched, [0, 0, 1, 1]);
    expect(losses).toHaveLength(4);
    for (const [i, l] of losses.entries()) {
      expect(l.sparsity).toBeGreaterThan(1); // reported either way
      const lambdaS = i < 2 ? 0 : 0.07;
      expect(l.total).toBeCloseTo(l.ce + 0.5 * l.orth + lambdaS * l.sparsity, 4);
    }
  });

  it('--sparsity-end: the sparsity term weighs λ_s up to the end fraction of the steps, then is off', async () => {
    // 4 steps; end 0.5 turns the term off at step 2.
    const sched = resolveConfig({ batch: 4, limitTrain: 8, model: 'resnet20', epochs: 2, lambdaO: 0.5, lambdaS: 0.07, sparsityEnd: 0.5 }, undefined, {});
    const losses = await stepLosses(sched, [0, 0, 1, 1]);
    expect(losses).toHaveLength(4);
    for (const [i, l] of losses.entries()) {
      const lambdaS = i < 2 ? 0.07 : 0;
      expect(l.total).toBeCloseTo(l.ce + 0.5 * l.orth + lambdaS * l.sparsity, 4);
    }
  });

  it('distillation: the teacher comes before the weights, and its eval-mode logits enter the loss as (1 − α)·CE + α·T²·KL', async () => {
    const kdCfg = resolveConfig({ batch: 4, limitTrain: 8, model: 'resnet20', lambdaO: 0.5, lambdaS: 0, distillAlpha: 0.4, distillTemperature: 3, teacher: '/t.svdckpt' }, undefined, {});
    const teacherModel = buildResNetForConfig({ ...kdCfg, seed: 9 });
    const teacher = { params: getParameters(teacherModel), buffers: getBuffers(teacherModel) };
    teacherModel.dispose();
    const [l] = await stepLosses(kdCfg, [0], [{ type: 'teacher', index: 0, ...teacher }]);
    expect(l!.distill).toBeGreaterThan(1e-3);
    expect(l!.total).toBeCloseTo(0.6 * l!.ce + 0.4 * l!.distill! + 0.5 * l!.orth, 4);
  });

  it('distillation from an ensemble (extraTeachers): one teacher message per index, and the term is against their mean softened output', async () => {
    const one = resolveConfig({ batch: 4, limitTrain: 8, model: 'resnet20', lambdaO: 0.5, lambdaS: 0, distillAlpha: 0.4, distillTemperature: 3, teacher: '/t.svdckpt' }, undefined, {});
    const two = resolveConfig({ ...serializeConfig(one), extraTeachers: [{ teacher: '/u.svdckpt' }] }, undefined, {});
    const weightsOf = (seed: number) => {
      const m = buildResNetForConfig({ ...one, seed });
      const w = { params: getParameters(m), buffers: getBuffers(m) };
      m.dispose();
      return w;
    };
    const [a, b] = [weightsOf(9), weightsOf(10)];
    const [[la], [lb], [lab], [laa]] = [
      await stepLosses(one, [0], [{ type: 'teacher', index: 0, ...a }]),
      await stepLosses(one, [0], [{ type: 'teacher', index: 0, ...b }]),
      await stepLosses(two, [0], [{ type: 'teacher', index: 0, ...a }, { type: 'teacher', index: 1, ...b }]),
      await stepLosses(two, [0], [{ type: 'teacher', index: 1, ...a }, { type: 'teacher', index: 0, ...a }]),
    ];
    // Two copies of one teacher are that teacher; two different ones are neither of them.
    expect(laa!.distill).toBeCloseTo(la!.distill!, 4);
    expect(Math.abs(lab!.distill! - la!.distill!)).toBeGreaterThan(1e-3);
    expect(Math.abs(lab!.distill! - lb!.distill!)).toBeGreaterThan(1e-3);
    expect(lab!.total).toBeCloseTo(0.6 * lab!.ce + 0.4 * lab!.distill! + 0.5 * lab!.orth, 4);
  });

  it('distillation from a teacher of another architecture (teacherArch): the worker builds that model for its tensors', async () => {
    const kdCfg = resolveConfig(
      { batch: 4, limitTrain: 8, model: 'resnet20', lambdaO: 0.5, lambdaS: 0, distillAlpha: 0.4, distillTemperature: 3, teacher: '/t.svdckpt', teacherArch: { model: 'resnet20', svd: true, decomposition: 'spatial' } },
      undefined,
      {},
    );
    const teacherModel = buildResNetForConfig({ ...kdCfg, decomposition: 'spatial', seed: 9 });
    const teacher = { params: getParameters(teacherModel), buffers: getBuffers(teacherModel) };
    teacherModel.dispose();
    const [l] = await stepLosses(kdCfg, [0], [{ type: 'teacher', index: 0, ...teacher }]);
    expect(l!.distill).toBeGreaterThan(1e-3);
    expect(l!.total).toBeCloseTo(0.6 * l!.ce + 0.4 * l!.distill! + 0.5 * l!.orth, 4);
  });

  it('distillation refusals: weights before the teacher, a teacher of the wrong shape, a teacher for a run that does not distill', async () => {
    const { dir, md5s } = dataset();
    const kdCfg = resolveConfig({ batch: 4, limitTrain: 8, model: 'resnet20', distillAlpha: 0.5, teacher: '/t.svdckpt' }, undefined, {});
    const specsOf = (c: typeof cfg) => {
      const m = buildResNetForConfig(c);
      const w = { params: getParameters(m), buffers: getBuffers(m) };
      m.dispose();
      return w;
    };
    const full = specsOf(kdCfg);
    const twoCfg = resolveConfig({ ...serializeConfig(kdCfg), extraTeachers: [{ teacher: '/u.svdckpt' }] }, undefined, {});
    const cases: [string, typeof cfg, (send: (m: Message) => void, manifest: { params: { name: string; shape: number[] }[] }) => void, RegExp][] = [
      ['weights first', kdCfg, (send) => send({ type: 'weights', step: 0, params: full.params, buffers: [] }), /'weights' while waiting for the teacher/],
      ['pruned teacher for a full-rank config', kdCfg, (send) => send({ type: 'teacher', index: 0, ...specsOf({ ...kdCfg, ranks: { fc: 2 } }) }), /teacher model of this config/],
      ['no distillation', cfg, (send) => send({ type: 'teacher', index: 0, ...full }), /'teacher' while this run does not distill/],
      ['weights after one of two teachers', twoCfg, (send) => {
        send({ type: 'teacher', index: 0, ...full });
        send({ type: 'weights', step: 0, params: full.params, buffers: [] });
      }, /waiting for the teachers .*1 of 2 received/],
      ['a teacher index beyond the config\'s', twoCfg, (send) => send({ type: 'teacher', index: 2, ...full }), /teacher 2 does not exist: this run has 2/],
      ['one teacher twice', twoCfg, (send) => {
        send({ type: 'teacher', index: 1, ...full });
        send({ type: 'teacher', index: 1, ...full });
      }, /teacher 1 was already sent/],
      ['a pruned second teacher for a full-rank entry', twoCfg, (send) => send({ type: 'teacher', index: 1, ...specsOf({ ...kdCfg, ranks: { fc: 2 } }) }), /teacher 1 of this config \(extraTeachers\[0\]\)/],
    ];
    for (const [what, config, act, want] of cases) {
      let told: Message | null = null;
      const fake = await fakeCoordinator(async (_ws, recv, send) => {
        const { manifest } = await handshake(recv, send, md5s, dir, config);
        act(send, manifest);
        told = await recv();
      });
      try {
        const err = await runWorker({ coordinator: fake.url, backend: 'wasm', token: TOKEN, cacheDir: mkdtempSync(join(tmpdir(), 'wk-cache-')), log: () => {} }).catch((e: unknown) => e);
        expect((err as Error).message, what).toMatch(want);
        await new Promise((r) => setTimeout(r, 50));
        expect(told, what).toMatchObject({ type: 'error' });
      } finally {
        fake.close();
      }
    }
  });

  it('a refusal (AUTH_FAILED) ends the worker with that error instead of retrying', async () => {
    let connections = 0;
    const fake = await fakeCoordinator(async (ws, recv, send) => {
      connections++;
      await recv();
      send({ type: 'error', code: 'AUTH_FAILED', message: 'bad token' });
      ws.close();
    });
    try {
      const err = await runWorker({ coordinator: fake.url, backend: 'cpu', token: TOKEN, log: () => {} }).catch((e: unknown) => e);
      expect(err).toBeInstanceOf(SvdTrainError);
      expect((err as SvdTrainError).code).toBe('AUTH_FAILED');
      expect(connections).toBe(1);
    } finally {
      fake.close();
    }
  });

  it('two slices of one step both start from the broadcast BN running stats (the second is not fed the first one\'s update)', async () => {
    const { dir, md5s } = dataset();
    // The coordinator's weights: the model the config builds (what a real coordinator broadcasts).
    const model = buildResNet({ depth: depthOf(cfg.model), svd: cfg.svd, decomposition: cfg.decomposition, numClasses: 10, forward: cfg.forward, ranks: cfg.ranks, seed: cfg.seed });
    const weights: Message = { type: 'weights', step: 0, params: getParameters(model), buffers: getBuffers(model) };
    model.dispose();
    const got: Record<string, Float32Array[]> = {};
    const fake = await fakeCoordinator(async (_ws, recv, send) => {
      await handshake(recv, send, md5s, dir);
      const ask = async (indices: number[], attempt: number) => {
        send({ type: 'step', step: 0, epoch: 0, seed: 0, indices: Int32Array.from(indices), lr: 0.1, attempt });
        const g = await recv();
        if (g.type !== 'gradients') throw new Error(`expected gradients, got ${g.type}`);
        return g.buffers.map((t) => t.data);
      };
      send(weights);
      got.first = await ask([0, 1, 2], 1);
      got.second = await ask([4, 5, 6], 2); // a lost worker's slice, same step, no new weights
      send(weights);
      got.alone = await ask([4, 5, 6], 3); // the same slice computed right after the broadcast
      send({ type: 'shutdown', reason: 'done' });
    });
    try {
      await runWorker({ coordinator: fake.url, backend: 'wasm', token: TOKEN, dataDir: dir, log: () => {} });
    } finally {
      fake.close();
    }
    expect(got.second!.length).toBeGreaterThan(0);
    expect(got.second).toEqual(got.alone);
    expect(got.first).not.toEqual(got.second);
  });

  it('RUN_ABORTED from the coordinator ends the worker with that error (it exits non-zero, no reconnect)', async () => {
    let connections = 0;
    const fake = await fakeCoordinator(async (ws, recv, send) => {
      connections++;
      await recv();
      send({ type: 'error', code: 'RUN_ABORTED', message: 'coordinator stopped with an error: [DIVERGED] step 3 ...' });
      ws.close();
    });
    try {
      const err = await runWorker({ coordinator: fake.url, backend: 'cpu', token: TOKEN, log: () => {} }).catch((e: unknown) => e);
      expect((err as SvdTrainError).code).toBe('RUN_ABORTED');
      expect((err as SvdTrainError).message).toMatch(/The coordinator stopped the run: .*DIVERGED/);
      expect(connections).toBe(1);
    } finally {
      fake.close();
    }
  });

  it('refuses a coordinator that cannot prove the token, before proving its own (AUTH_FAILED, no retry)', async () => {
    let authSent = false;
    const fake = await fakeCoordinator(async (ws, recv, send) => {
      await recv();
      send({ type: 'challenge', nonce: makeNonce(), authRequired: true, proof: authProof('not-the-token', 'coordinator', { worker: makeNonce(), coordinator: makeNonce() }) });
      const m = await recv();
      authSent = m.type === 'auth';
    });
    try {
      const err = await runWorker({ coordinator: fake.url, backend: 'cpu', token: TOKEN, log: () => {} }).catch((e: unknown) => e);
      expect((err as SvdTrainError).code).toBe('AUTH_FAILED');
      expect((err as Error).message).toMatch(/could not prove it knows the token/);
      expect(authSent).toBe(false);
    } finally {
      fake.close();
    }
  });

  it('a worker that fails with a coded error tells the coordinator and closes its connection before it exits', async () => {
    const { md5s } = dataset();
    const seen: { error?: Message; closed?: boolean } = {};
    const fake = await fakeCoordinator(async (ws, recv, send) => {
      const closed = new Promise<void>((r) => ws.on('close', () => r()));
      const hello = await recv();
      if (hello.type !== 'hello') throw new Error(`expected hello, got ${hello.type}`);
      const nonces = { worker: hello.nonce, coordinator: makeNonce() };
      send({ type: 'challenge', nonce: nonces.coordinator, authRequired: true, proof: authProof(TOKEN, 'coordinator', nonces) });
      await recv(); // auth
      send({ type: 'welcome', workerId: 'w0', config: serializeConfig(cfg), configHash: configHash(cfg), datasetInfo: { trainCount: 8, testCount: 4, md5s } });
      const req = await recv();
      expect(req.type).toBe('data-request');
      send({ type: 'error', code: 'DATA_MISSING', message: 'no data here' }); // the fetch fails
      seen.error = await recv();
      await closed;
      seen.closed = true;
    });
    try {
      const err = await runWorker({ coordinator: fake.url, backend: 'cpu', token: TOKEN, cacheDir: mkdtempSync(join(tmpdir(), 'wk-cache-')), log: () => {} }).catch((e: unknown) => e);
      expect((err as SvdTrainError).code).toBe('DATA_MISSING');
      for (let i = 0; i < 100 && !seen.closed; i++) await new Promise((r) => setTimeout(r, 20));
    } finally {
      fake.close();
    }
    expect(seen.error).toMatchObject({ type: 'error', code: 'DATA_MISSING' });
    expect(seen.closed).toBe(true);
  });

  it('a step before welcome is a coded violation: the worker tells the coordinator and exits', async () => {
    let told: Message | null = null;
    const fake = await fakeCoordinator(async (_ws, recv, send) => {
      await recv();
      send({ type: 'step', step: 0, epoch: 0, seed: 0, indices: Int32Array.from([1]), lr: 0.1, attempt: 0 });
      told = await recv();
    });
    try {
      const err = await runWorker({ coordinator: fake.url, backend: 'cpu', log: () => {} }).catch((e: unknown) => e);
      expect((err as SvdTrainError).code).toBe('PROTOCOL_INVALID');
      expect((err as Error).message).toMatch(/'step' while waiting for the challenge/);
      await new Promise((r) => setTimeout(r, 50));
      expect(told).toMatchObject({ type: 'error', code: 'PROTOCOL_INVALID' });
    } finally {
      fake.close();
    }
  });

  it('a non-ws URL is refused with the expected form', async () => {
    await expect(runWorker({ coordinator: 'http://x:1', backend: 'cpu', log: () => {} })).rejects.toThrow(/ws:\/\/HOST:PORT/);
  });

  it('handshakeTimeoutMs 3e9 (beyond setTimeout\'s 2^31 − 1 ms, which Node fires after 1 ms) is CONFIG_INVALID naming the value, the range and the fix', async () => {
    for (const ms of [3e9, MAX_TIMER_MS + 1, 99, 150.5]) {
      const err = await runWorker({ coordinator: 'ws://127.0.0.1:1', backend: 'cpu', handshakeTimeoutMs: ms, maxAttempts: 1, log: () => {} }).catch((e: unknown) => e);
      expect((err as SvdTrainError).code, String(ms)).toBe('CONFIG_INVALID');
      expect((err as Error).message).toBe(
        `--handshake-timeout-ms ${ms} is not valid; expected whole milliseconds from 100 to 2147483647 (setTimeout's limit, about 24.8 days). Fix: e.g. --handshake-timeout-ms 30000.`,
      );
    }
  });
});
