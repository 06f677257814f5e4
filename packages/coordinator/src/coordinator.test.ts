import { describe, it, expect, afterEach } from 'vitest';
import { WebSocket } from 'ws';
import { createHash } from 'node:crypto';
import { connect, createServer, type AddressInfo, type Socket } from 'node:net';
import { appendFileSync, mkdirSync, mkdtempSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { EpochSampler, HANDSHAKE_MAX_BYTES, MAX_UNAUTHENTICATED_CONNECTIONS, PROTOCOL_VERSION, createOptimizer, effectiveRank, lrAt, momentumAt, parseConfig, type RunConfig, type SvdTrainError, type WireTensor } from '@svd-train/core';
import { Coordinator, type CoordinatorCheckpoint, type StepEvent } from './coordinator.js';
import { listenError } from './peer-server.js';
import { SimWorker, fakeBuffers, fakeGradients, type SimWorkerOptions } from './test-support/sim-worker.js';

const SPECS = {
  params: [
    { name: 'conv.U', shape: [3, 4] },
    { name: 'conv.s', shape: [4] },
    { name: 'fc.bias', shape: [2] },
  ],
  buffers: [{ name: 'bn.running_mean', shape: [4] }],
};
const TRAIN = 20;
const TEST = 7;

function initial(): { params: WireTensor[]; buffers: WireTensor[] } {
  const mk = (s: { name: string; shape: number[] }, k: number): WireTensor => {
    const n = s.shape.reduce((a, b) => a * b, 1);
    return { name: s.name, shape: s.shape, data: Float32Array.from({ length: n }, (_, j) => Math.sin(k * 10 + j) * 0.5) };
  };
  return { params: SPECS.params.map(mk), buffers: SPECS.buffers.map((s, i) => mk(s, 100 + i)) };
}

function config(over: Record<string, unknown> = {}): RunConfig {
  return parseConfig({ host: '127.0.0.1', port: 0, batch: 8, epochs: 2, lr: 0.05, stepTimeoutMs: 4000, stallWarnMs: 1000, handshakeTimeoutMs: 4000, ...over });
}

/** The same training as one process on the full batch: the parity reference. */
function reference(cfg: RunConfig, steps?: number): { params: Map<string, Float32Array>; buffers: WireTensor[] } {
  const init = initial();
  const sampler = new EpochSampler({ size: TRAIN, batch: cfg.batch, seed: cfg.seed });
  const opt = createOptimizer(cfg, SPECS.params.map((s) => s.name));
  const params = new Map(init.params.map((t) => [t.name, Float32Array.from(t.data)]));
  let buffers = init.buffers;
  const total = steps ?? sampler.stepsPerEpoch * cfg.epochs;
  for (let s = 0; s < total; s++) {
    const b = sampler.nextBatch();
    const cur = SPECS.params.map((p) => ({ ...p, data: params.get(p.name)! }));
    const g = fakeGradients(cur, b.indices);
    buffers = fakeBuffers(buffers, b.indices);
    opt.step(params, new Map(g.map((t) => [t.name, t.data])), lrAt(cfg, b.step, sampler.stepsPerEpoch), momentumAt(cfg, b.step, sampler.stepsPerEpoch));
  }
  return { params, buffers };
}

const live: { coord: Coordinator; workers: SimWorker[] }[] = [];
afterEach(async () => {
  for (const l of live.splice(0)) {
    for (const w of l.workers) w.close();
    await l.coord.close();
  }
});

interface Harness {
  coord: Coordinator;
  url: string;
  steps: StepEvent[];
  logs: string[];
  checkpoints: CoordinatorCheckpoint[];
  workers: SimWorker[];
  spawn: (o?: Partial<SimWorkerOptions>) => SimWorker;
}

async function harness(cfg: RunConfig, extra: Partial<ConstructorParameters<typeof Coordinator>[0]> = {}): Promise<Harness> {
  const steps: StepEvent[] = [];
  const logs: string[] = [];
  const checkpoints: CoordinatorCheckpoint[] = [];
  const coord = new Coordinator({
    config: cfg,
    datasetInfo: { trainCount: TRAIN, testCount: TEST, md5s: {} },
    initialParams: initial().params,
    initialBuffers: initial().buffers,
    onStep: (e) => steps.push(e),
    onLog: (level, msg) => logs.push(`${level}: ${msg}`),
    saveCheckpoint: (c) => {
      checkpoints.push(structuredClone(c));
    },
    ...extra,
  });
  const { port } = await coord.listen();
  const url = `ws://127.0.0.1:${port}`;
  const workers: SimWorker[] = [];
  live.push({ coord, workers });
  const spawn = (o: Partial<SimWorkerOptions> = {}): SimWorker => {
    const w = new SimWorker({ url, specs: SPECS, name: `sim${workers.length}`, ...o });
    workers.push(w);
    return w;
  };
  return { coord, url, steps, logs, checkpoints, workers, spawn };
}

/** Waits until `n` workers finished the handshake (so the first step is split among all of them). */
async function allJoined(coord: Coordinator, n: number): Promise<void> {
  const t0 = Date.now();
  while (coord.liveWorkers < n) {
    if (Date.now() - t0 > 5000) throw new Error(`only ${coord.liveWorkers} of ${n} workers joined`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function expectParity(got: WireTensor[], want: Map<string, Float32Array>, label: string): void {
  for (const t of got) {
    const w = want.get(t.name)!;
    let maxDiff = 0;
    for (let j = 0; j < w.length; j++) maxDiff = Math.max(maxDiff, Math.abs(t.data[j] - w[j]));
    expect(maxDiff, `${label}: '${t.name}' max |diff|`).toBeLessThan(1e-6);
  }
}

/** Every sample of every epoch trained exactly once. */
function expectExactAccounting(steps: StepEvent[], epochs: number): void {
  for (let e = 0; e < epochs; e++) {
    const seen = steps.filter((s) => s.epoch === e).flatMap((s) => s.slices.flatMap((sl) => [...sl.indices]));
    expect(seen.sort((a, b) => a - b), `epoch ${e}`).toEqual(Array.from({ length: TRAIN }, (_, i) => i));
  }
}

describe('Coordinator parity with one process on the full batch (fake linear model, onecycle lr, SGD nesterov)', { timeout: 15_000 }, () => {
  for (const n of [1, 2, 3]) {
    it(`N=${n} workers, batch 8, ${TRAIN} samples, 2 epochs (6 steps incl. partial batches)`, async () => {
      const cfg = config({ minWorkers: n });
      const h = await harness(cfg);
      for (let i = 0; i < n; i++) h.spawn();
      const summary = await h.coord.start();
      expect(summary.steps).toBe(6);
      expectParity(summary.params, reference(cfg).params, `N=${n}`);
      expectParity(summary.buffers, new Map(reference(cfg).buffers.map((t) => [t.name, t.data])), `N=${n} buffers`);
      expectExactAccounting(h.steps, 2);
      if (n > 1) expect(new Set(h.steps[0].slices.map((s) => s.worker)).size).toBe(n);
      // Eval splits the test set: the sim counts even indices of 0..6 as correct (4 of 7).
      expect(summary.finalTestAcc).toBeCloseTo(4 / 7, 10);
      expect(h.checkpoints.map((c) => c.step)).toEqual([3, 6]);
    });
  }

  it('writes metrics.jsonl: a line per step (loss terms, lr, times per worker) and per epoch (train/test accuracy)', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'svd-metrics-')), 'run', 'metrics.jsonl');
    const h = await harness(config({ minWorkers: 1 }), { metricsPath: path });
    h.spawn();
    h.spawn();
    await allJoined(h.coord, 2);
    const summary = await h.coord.start();
    const lines = readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    const steps = lines.filter((l) => l.kind === 'step');
    const epochs = lines.filter((l) => l.kind === 'epoch');
    expect(steps.map((l) => l.step)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(steps[0]).toMatchObject({ epoch: 0, n: 8, loss: { orth: 0.5, sparsity: 0.25 } });
    expect(steps[0].lr).toBeCloseTo(lrAt(config(), 0, 3), 12);
    expect(steps[0].workers).toHaveLength(2);
    expect(steps[0].workers[0]).toEqual(expect.objectContaining({ n: 4, computeMs: expect.any(Number), commMs: expect.any(Number) }));
    expect(epochs.map((l) => l.epoch)).toEqual([0, 1]);
    expect(epochs[1].testAcc).toBeCloseTo(4 / 7, 10);
    expect(epochs[0].trainAcc).toBeCloseTo(10 / 20, 10);
    // The time of each epoch's steps and, apart, of its evaluation: the pipeline adds them up per phase.
    for (const e of epochs) expect([e.epochMs, e.evalMs]).toEqual([expect.any(Number), expect.any(Number)]);
    expect(epochs.every((e) => e.epochMs > 0 && e.evalMs >= 0)).toBe(true);
    // Effective ranks of the SVD layers (params named *.s) after each epoch, from the coordinator's weights.
    expect(epochs[1].effectiveRanks).toEqual({ conv: effectiveRank(summary.params.find((t) => t.name === 'conv.s')!.data, 0.01) });
  });

  it('expectWorkers 2: the first step waits for the second worker; if it never comes, a warning after handshakeTimeoutMs and the run goes on', async () => {
    const h = await harness(config({ minWorkers: 1 }), { expectWorkers: 2 });
    h.spawn();
    const run = h.coord.start();
    await new Promise((r) => setTimeout(r, 100));
    expect(h.steps).toHaveLength(0);
    h.spawn();
    await run;
    expect(h.steps[0].slices.filter((s) => s.indices.length > 0)).toHaveLength(2);

    const lone = await harness(config({ minWorkers: 1, handshakeTimeoutMs: 200, stallWarnMs: 100 }), { expectWorkers: 2 });
    lone.spawn();
    await lone.coord.start();
    expect(lone.logs.some((l) => /warn: 1 of 2 expected worker\(s\) joined within 200 ms/.test(l))).toBe(true);
    expect(lone.steps[0].slices.filter((s) => s.indices.length > 0)).toHaveLength(1);
  });

  it('evalEvery 0 never evaluates; evalEvery 2 evaluates after epoch 2 and after the last epoch', async () => {
    const none = await harness(config({ minWorkers: 1, evalEvery: 0 }));
    const w0 = none.spawn();
    expect((await none.coord.start()).finalTestAcc).toBeNull();
    expect(w0.received.some((m) => m.type === 'eval')).toBe(false);
    const epochs: (number | undefined)[] = [];
    const some = await harness(config({ minWorkers: 1, evalEvery: 2, epochs: 3 }), { onEpoch: (e) => epochs.push(e.testAcc) });
    some.spawn();
    await some.coord.start();
    expect(epochs.map((a) => a !== undefined)).toEqual([false, true, true]);
    // An epoch not evaluated has no evaluation time.
    const times: (number | undefined)[] = [];
    const again = await harness(config({ minWorkers: 1, evalEvery: 2, epochs: 3 }), { onEpoch: (e) => times.push(e.evalMs) });
    again.spawn();
    await again.coord.start();
    expect(times.map((t) => t !== undefined)).toEqual([false, true, true]);
  });

  it('checkpoints early (after step 20) when --checkpoint-every is larger, so an early kill does not lose the run', async () => {
    const h = await harness(config({ minWorkers: 1, epochs: 8, checkpointEvery: 200, evalEvery: 0 }));
    h.spawn();
    await h.coord.start();
    // 3 steps per epoch: epoch ends at 3, 6, …, 24, plus the early one at 20.
    expect(h.checkpoints.map((c) => c.step)).toEqual([3, 6, 9, 12, 15, 18, 20, 21, 24]);
  });

  it('resuming a finished run returns at once without waiting for workers', async () => {
    const cfg = config({ minWorkers: 1 });
    const h = await harness(cfg);
    h.spawn();
    await h.coord.start();
    const last = h.checkpoints[h.checkpoints.length - 1]!;
    const again = await harness(cfg, { resume: last });
    const r = await again.coord.start();
    expect(r.alreadyFinished).toBe(true);
    expect(r.steps).toBe(6);
    expect(again.logs.some((l) => /already completes the run's 6 steps/.test(l))).toBe(true);
  });

  it('resume drops metrics lines past the checkpoint, so each step appears once', async () => {
    const path = join(mkdtempSync(join(tmpdir(), 'svd-metrics-')), 'metrics.jsonl');
    const cfg = config({ minWorkers: 1, checkpointEvery: 2 });
    const h = await harness(cfg, { metricsPath: path });
    h.spawn();
    await h.coord.start();
    // As if killed after step 4 was logged but resumed from the checkpoint at step 2 (+ a torn line).
    appendFileSync(path, '{"kind":"step","ste');
    const mid = h.checkpoints.find((c) => c.step === 2)!;
    const h2 = await harness(cfg, { resume: mid, metricsPath: path });
    h2.spawn();
    await h2.coord.start();
    const lines = readFileSync(path, 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines.filter((l) => l.kind === 'step').map((l) => l.step)).toEqual([0, 1, 2, 3, 4, 5]);
    expect(lines.filter((l) => l.kind === 'epoch').map((l) => l.epoch)).toEqual([0, 1]);
    expect(h2.logs.some((l) => /dropped \d+ line\(s\) written after the checkpoint at step 2/.test(l))).toBe(true);
  });

  it('checkpoints keep the number of BN sub-batches per step, and a resume with fewer workers keeps it', async () => {
    const cfg = config({ minWorkers: 1, epochs: 3, checkpointEvery: 2 });
    const h = await harness(cfg);
    h.spawn();
    h.spawn();
    await allJoined(h.coord, 2);
    const full = await h.coord.start();
    const mid = h.checkpoints.find((c) => c.step === 4)!;
    expect(mid.metrics?.slicesPerStep).toBe(2);
    const h2 = await harness(cfg, { resume: mid });
    h2.spawn();
    const resumed = await h2.coord.start();
    expect(h2.steps.filter((s) => s.n === 8).every((s) => s.slices.length === 2)).toBe(true);
    expectParity(resumed.params, new Map(full.params.map((t) => [t.name, t.data])), 'resumed on 1 worker');
  });

  it('a run resumed from a mid-run checkpoint equals the uninterrupted run', async () => {
    const cfg = config({ minWorkers: 1, epochs: 3, checkpointEvery: 2 });
    const h = await harness(cfg);
    h.spawn();
    const full = await h.coord.start();
    const mid = h.checkpoints.find((c) => c.step === 4)!;
    expect(mid).toBeDefined();
    const h2 = await harness(cfg, { resume: mid });
    h2.spawn();
    h2.spawn();
    const resumed = await h2.coord.start();
    expect(h2.steps[0].step).toBe(4);
    expectParity(resumed.params, new Map(full.params.map((t) => [t.name, t.data])), 'resumed');
    expectParity(full.params, reference(cfg).params, 'uninterrupted');
  });
});

describe('Coordinator faults', { timeout: 15_000 }, () => {
  it('a worker dropped mid-step has its slice re-assigned; every sample is counted exactly once and parity holds', async () => {
    const cfg = config({ minWorkers: 1 });
    const h = await harness(cfg);
    h.spawn();
    h.spawn();
    h.spawn({ onStep: (m) => (m.step === 2 ? 'die' : 'answer') });
    await allJoined(h.coord, 3);
    const summary = await h.coord.start();
    expect(h.logs.some((l) => /sim2.*dropped/.test(l))).toBe(true);
    expect(h.logs.some((l) => /re-assigned 1 slice\(s\), \d+ sample\(s\) of step 2, whole, to sim/.test(l))).toBe(true);
    expect(h.steps.find((s) => s.step === 2)!.slices.some((s) => s.worker.startsWith('sim2'))).toBe(false);
    // The lost slice is recomputed whole: every later step still has the 3 sub-batches of the
    // uninterrupted run (same BN statistics), now on 2 workers.
    expect(h.steps.map((x) => x.slices.length)).toEqual([3, 3, 3, 3, 3, 3]);
    expect(new Set(h.steps[h.steps.length - 1].slices.map((x) => x.worker)).size).toBe(2);
    expectExactAccounting(h.steps, 2);
    expectParity(summary.params, reference(cfg).params, 'after drop');
  });

  it('a worker whose gradient norm is 1e3x the others\' (finite 3e38) is dropped with GRADIENT_OUTLIER; nothing non-finite is applied', async () => {
    const cfg = config({ minWorkers: 1 });
    const h = await harness(cfg);
    h.spawn();
    const evil = h.spawn({ name: 'evil', onStep: (m) => (m.step === 1 ? 'huge' : 'answer') });
    await allJoined(h.coord, 2);
    const summary = await h.coord.start();
    expect(evil.error?.code).toBe('GRADIENT_OUTLIER');
    expect(evil.error?.message).toMatch(/step 1 \(4 samples\) has L2 norm .*e\+3\d.*times the median.*expected at most 1000 times/);
    expectExactAccounting(h.steps, 2);
    expectParity(summary.params, reference(cfg).params, 'after outlier');
  });

  it('correct > n is refused (ROUND_MISMATCH), the slice is recomputed', async () => {
    const cfg = config({ minWorkers: 1 });
    const h = await harness(cfg);
    h.spawn();
    const liar = h.spawn({ name: 'liar', onStep: (m) => (m.step === 2 ? 'overcount' : 'answer') });
    await allJoined(h.coord, 2);
    const summary = await h.coord.start();
    expect(liar.error?.code).toBe('ROUND_MISMATCH');
    expect(liar.error?.message).toMatch(/liar@localhost reports correct=3 of n=2 samples for step 2; expected 0 <= correct <= n/);
    expect(h.steps.every((s) => s.trainAcc <= 1)).toBe(true);
    expectParity(summary.params, reference(cfg).params, 'after liar');
  });

  it('a NaN loss is a NON_FINITE fault that says NaN', async () => {
    const h = await harness(config({ minWorkers: 1 }));
    h.spawn();
    const w = h.spawn({ name: 'nanloss', onStep: (m) => (m.step === 1 ? 'nan-loss' : 'answer') });
    await allJoined(h.coord, 2);
    await h.coord.start();
    expect(w.error?.code).toBe('NON_FINITE');
    expect(w.error?.message).toMatch(/field 'ce' is NaN; expected a finite number/);
  });

  it('divergence: when every worker fails the same step, the run aborts with DIVERGED and the workers get RUN_ABORTED', async () => {
    const cfg = config({ minWorkers: 1, checkpointEvery: 1 });
    const h = await harness(cfg);
    const ws = [0, 1, 2].map((i) => h.spawn({ name: `div${i}`, onStep: (m) => (m.step === 2 ? 'nan' : 'answer') }));
    await allJoined(h.coord, 3);
    const err = await h.coord.start().then(() => null, (e: { code: string; message: string }) => e);
    expect(err?.code).toBe('DIVERGED');
    expect(err?.message).toMatch(/step 2 .*failed 3 time\(s\).*lower --lr/);
    // Nothing past the last good step was checkpointed.
    expect(Math.max(...h.checkpoints.map((c) => c.step))).toBe(2);
    await Promise.all(ws.map((w) => w.closed));
    // The fault that ends the run tells its worker RUN_ABORTED (so it exits instead of reconnecting).
    expect(ws.map((w) => w.error?.code).sort()).toEqual(['NON_FINITE', 'NON_FINITE', 'RUN_ABORTED']);
  });

  it('an update that overflows (a lone worker sends 3e38) is never applied or checkpointed: DIVERGED, workers told RUN_ABORTED', async () => {
    const cfg = config({ minWorkers: 1, checkpointEvery: 1 });
    const h = await harness(cfg);
    // 3e38 at steps 3 and 4 still gives finite parameters (a small lr early in onecycle); at step 5 the momentum overflows.
    const w = h.spawn({ name: 'lone', onStep: (m) => (m.step >= 3 ? 'huge' : 'answer') });
    const err = await h.coord.start().then(() => null, (e: { code: string; message: string }) => e);
    expect(err?.code).toBe('DIVERGED');
    expect(err?.message).toMatch(/step 5 .*after the optimizer step, parameter conv\.U\[0\] is -?Infinity.*not applied and not checkpointed \(the last checkpoint holds the 5 steps before it\)/);
    expect(h.checkpoints.map((c) => c.step)).toEqual([1, 2, 3, 4, 5]);
    for (const c of h.checkpoints) for (const t of c.params) expect(t.data.every(Number.isFinite)).toBe(true);
    await w.closed;
    expect(w.error?.code).toBe('RUN_ABORTED');
    expect(w.error?.message).toMatch(/\[DIVERGED\]/);
  });

  it('a failing metrics write is reported once and training goes on', async () => {
    // A folder where the file should be: every append fails (EISDIR), like EMFILE did.
    const dir = mkdtempSync(join(tmpdir(), 'svd-metrics-bad-'));
    mkdirSync(join(dir, 'metrics.jsonl'));
    const h = await harness(config({ minWorkers: 1 }), { metricsPath: join(dir, 'metrics.jsonl') });
    h.spawn();
    const summary = await h.coord.start();
    expect(summary.steps).toBe(6);
    expect(h.logs.filter((l) => /error: metrics: cannot append to .*metrics\.jsonl/.test(l))).toHaveLength(1);
  });

  it('waits for workers when fewer than minWorkers remain, then continues with a rejoining worker (which gets current weights)', async () => {
    const cfg = config({ minWorkers: 1 });
    const h = await harness(cfg);
    h.spawn({ onStep: (m) => (m.step === 1 ? 'die' : 'answer') });
    const done = h.coord.start();
    await new Promise((r) => setTimeout(r, 300));
    const late = h.spawn({ name: 'late' });
    const summary = await done;
    expect(late.steps).toBeGreaterThan(0);
    expect(h.logs.some((l) => /waiting for workers/.test(l))).toBe(true);
    expectExactAccounting(h.steps, 2);
    expectParity(summary.params, reference(cfg).params, 'after rejoin');
  });

  it('warns about a late worker, names it, then drops it at stepTimeoutMs', async () => {
    const cfg = config({ minWorkers: 1, stallWarnMs: 100, stepTimeoutMs: 400 });
    const h = await harness(cfg);
    h.spawn();
    h.spawn({ name: 'slowpoke', onStep: (m) => (m.step === 1 ? 'stall' : 'answer') });
    await allJoined(h.coord, 2);
    const summary = await h.coord.start();
    expect(h.logs.some((l) => /warn: worker slowpoke.*is late/.test(l))).toBe(true);
    expect(h.logs.some((l) => /slowpoke.*dropped.*stalled/.test(l))).toBe(true);
    expectExactAccounting(h.steps, 2);
    expectParity(summary.params, reference(cfg).params, 'after stall');
  });

  it('requestStop mid-step (Ctrl-C) abandons the step in flight, checkpoints every step applied, rejects with INTERRUPTED, and --resume from it equals the uninterrupted run', async () => {
    const cfg = config({ minWorkers: 1, epochs: 3 });
    const h = await harness(cfg);
    // Step 4 is mid-epoch (3 steps an epoch): the last checkpoint is step 3's, the stop writes step 4's.
    h.spawn({ onStep: (m) => (m.step === 4 ? (setTimeout(() => h.coord.requestStop('received SIGINT'), 50), 'stall') : 'answer') });
    const e = (await h.coord.start().then(() => null, (x: unknown) => x)) as SvdTrainError | null;
    expect(e?.code).toBe('INTERRUPTED');
    expect(e?.message).toMatch(/^received SIGINT: stopped at step 4 of 9; checkpoint written at step 4, every step applied\. Fix: the same command with --resume/);
    const last = h.checkpoints[h.checkpoints.length - 1]!;
    expect(last.step).toBe(4);
    expect(last.sampler.step).toBe(4);
    const h2 = await harness(cfg, { resume: last });
    h2.spawn();
    const resumed = await h2.coord.start();
    expect(h2.steps[0]!.step).toBe(4);
    expectParity(resumed.params, reference(cfg).params, 'stopped and resumed');
  });

  it('stallAction abort rejects the run naming the worker', async () => {
    const cfg = config({ minWorkers: 1, stallWarnMs: 50, stepTimeoutMs: 200, stallAction: 'abort' });
    const h = await harness(cfg);
    const stuck = h.spawn({ name: 'stuck', onStep: () => 'stall' });
    await expect(h.coord.start()).rejects.toThrow(/stuck.*stalled/);
    // The workers hear the code, not "training finished": RUN_ABORTED (so they exit rather than
    // reconnect), naming the fault that ended the run.
    await stuck.closed;
    expect(stuck.error?.code).toBe('RUN_ABORTED');
    expect(stuck.error?.message).toContain('[PEER_TIMEOUT]');
    expect(stuck.error?.message).toMatch(/stuck.*stalled/);
    expect(stuck.received.some((m) => m.type === 'shutdown')).toBe(false);
  });

  it('NaN gradients and wrong shapes: the worker gets a typed error and is dropped; training completes exactly', async () => {
    const cfg = config({ minWorkers: 1 });
    const h = await harness(cfg);
    h.spawn();
    const nan = h.spawn({ name: 'nanny', onStep: (m) => (m.step === 1 ? 'nan' : 'answer') });
    const shape = h.spawn({ name: 'shapey', onStep: (m) => (m.step === 3 ? 'wrong-shape' : 'answer') });
    await allJoined(h.coord, 3);
    const summary = await h.coord.start();
    expect(nan.error?.code).toBe('NON_FINITE');
    expect(nan.error?.message).toMatch(/conv\.U.*index/);
    expect(shape.error?.code).toBe('SHAPE_MISMATCH');
    expect(shape.error?.message).toMatch(/shapey.*\[12, 1\].*\[3, 4\]/);
    expectExactAccounting(h.steps, 2);
    expectParity(summary.params, reference(cfg).params, 'after bad workers');
  });
});

describe('Coordinator listening', () => {
  it('names a port in use, says what to do, and can listen again once it is free', async () => {
    const blocker = createServer();
    await new Promise<void>((r) => blocker.listen(0, '127.0.0.1', r));
    const port = (blocker.address() as AddressInfo).port;
    const coord = new Coordinator({ config: config({ port }), datasetInfo: { trainCount: TRAIN, testCount: TEST, md5s: {} }, initialParams: initial().params, initialBuffers: initial().buffers });
    const err = await coord.listen().then(() => null, (e: unknown) => e as SvdTrainError);
    expect(err?.code).toBe('LISTEN_FAILED');
    expect(err?.message).toContain(`cannot listen on 127.0.0.1:${port}: the port is in use`);
    expect(err?.message).toContain('--port');
    await new Promise<void>((r) => blocker.close(() => r()));
    expect((await coord.listen()).port).toBe(port);
    await coord.close();
  });

  it('names an address that is not this machine\'s', () => {
    const e = listenError(Object.assign(new Error('listen EADDRNOTAVAIL'), { code: 'EADDRNOTAVAIL' }), '10.9.9.9', 7733);
    expect(e.message).toContain('10.9.9.9 is not an address of this machine');
    expect(listenError(Object.assign(new Error('x'), { code: 'EACCES' }), '0.0.0.0', 80).message).toContain('--port 1024 or above');
  });
});

describe('Coordinator handshake and hostile input', { timeout: 15_000 }, () => {
  it('refuses a bad token with AUTH_FAILED and trains with the good one; the token never travels', async () => {
    const cfg = config({ minWorkers: 1, token: 's3cret' });
    const h = await harness(cfg);
    const bad = h.spawn({ token: 'wrong', name: 'intruder' });
    await bad.closed;
    expect(bad.error?.code).toBe('AUTH_FAILED');
    const good = h.spawn({ token: 's3cret' });
    await h.coord.start();
    expect(good.steps).toBeGreaterThan(0);
    const welcome = good.received.find((m) => m.type === 'welcome');
    expect(JSON.stringify(welcome)).not.toContain('s3cret');
    // Mutual: the coordinator proved the token on each worker's own nonce.
    expect(good.coordinatorProved).toBe(true);
    expect(bad.coordinatorProved).toBe(false);
  });

  it('refuses a frame above the handshake limit before hello on its header (1009, FRAME_TOO_LARGE)', async () => {
    const h = await harness(config());
    const ws = new WebSocket(h.url);
    ws.on('error', () => {});
    await new Promise<void>((r) => ws.on('open', () => r()));
    ws.send(new Uint8Array(HANDSHAKE_MAX_BYTES + 1));
    expect(await new Promise<number>((r) => ws.on('close', (code) => r(code)))).toBe(1009);
    await new Promise((r) => setTimeout(r, 50));
    expect(h.logs.some((l) => /FRAME_TOO_LARGE.*65536-byte limit before authentication/.test(l))).toBe(true);
  });

  it('cuts raw TCP that never upgrades, caps unauthenticated connections, and close() does not wait for them', async () => {
    const h = await harness(config({ handshakeTimeoutMs: 300 }));
    const port = Number(new URL(h.url).port);
    const open = (): Promise<{ sock: Socket; ended: Promise<number> }> =>
      new Promise((res) => {
        const t0 = Date.now();
        const sock = connect(port, '127.0.0.1', () => res({ sock, ended: new Promise((r) => sock.on('close', () => r(Date.now() - t0))) }));
        sock.on('error', () => {});
      });
    const idle = await open();
    expect(await idle.ended).toBeGreaterThanOrEqual(250);
    const held = await Promise.all(Array.from({ length: MAX_UNAUTHENTICATED_CONNECTIONS }, open));
    const extra = await open();
    expect(await extra.ended).toBeLessThan(250);
    expect(h.logs.some((l) => /unauthenticated connections are already open/.test(l))).toBe(true);
    const t0 = Date.now();
    await h.coord.close();
    expect(Date.now() - t0).toBeLessThan(1000);
    await Promise.all(held.map((c) => c.ended));
  });

  it('logs a hostile worker name with its control characters escaped (no forged log lines)', async () => {
    const h = await harness(config({ minWorkers: 1 }));
    h.spawn({ name: 'evil\nworker forged joined\x1b[2K' });
    await h.coord.start();
    expect(h.logs.some((l) => l.includes('evil\\x0aworker forged joined\\x1b[2K'))).toBe(true);
    expect(h.logs.every((l) => !l.includes('\n') && !l.includes('\x1b'))).toBe(true);
  });

  it('requires a token when bound to a non-loopback host', () => {
    expect(() => new Coordinator({ config: config({ host: '0.0.0.0' }), datasetInfo: { trainCount: 1, testCount: 0, md5s: {} } })).toThrow(/token/);
  });

  it('distills only with teacher weights, and takes teacher weights only when it distills', () => {
    const info = { trainCount: 1, testCount: 0, md5s: {} };
    expect(() => new Coordinator({ config: config({ distillAlpha: 0.5, teacher: '/t.svdckpt' }), datasetInfo: info })).toThrow(/distillAlpha is 0.5 but no teacher weights/);
    expect(() => new Coordinator({ config: config(), datasetInfo: info, teacher: initial() })).toThrow(/teacher weights were given but distillAlpha is 0/);
    const two = config({ distillAlpha: 0.5, teacher: '/t.svdckpt', extraTeachers: [{ teacher: '/u.svdckpt' }] });
    expect(() => new Coordinator({ config: two, datasetInfo: info, teacher: initial() })).toThrow(/names 1 further teacher\(s\) but 0 were given/);
    expect(() => new Coordinator({ config: two, datasetInfo: info, teacher: initial(), extraTeachers: [initial(), initial()] })).toThrow(/but 2 were given/);
  });

  it('sends each teacher of an ensemble once, numbered, and trains', async () => {
    const cfg = config({ distillAlpha: 0.5, teacher: '/t.svdckpt', extraTeachers: [{ teacher: '/u.svdckpt' }, { teacher: '/v.svdckpt' }] });
    const teachers = [0, 1, 2].map((k) => {
      const w = initial();
      w.params[0]!.data[0] = k;
      return w;
    });
    const h = await harness(cfg, { teacher: teachers[0], extraTeachers: teachers.slice(1) });
    const w = h.spawn({});
    await h.coord.start();
    expect(w.steps).toBeGreaterThan(0);
    const sent = w.received.flatMap((m) => (m.type === 'teacher' ? [[m.index, m.params[0]!.data[0]]] : []));
    expect(sent).toEqual([[0, 0], [1, 1], [2, 2]]);
  });

  it('refuses a protocol-version mismatch naming both versions', async () => {
    const h = await harness(config());
    const old = h.spawn({ protocolVersion: 99 });
    await old.closed;
    expect(old.error?.code).toBe('PROTOCOL_VERSION');
    expect(old.error?.message).toMatch(new RegExp(`99.*${PROTOCOL_VERSION}`));
  });

  it('refuses a manifest that differs, naming both sides', async () => {
    const h = await harness(config());
    const w = h.spawn({ specs: { params: [SPECS.params[0], { name: 'conv.S', shape: [4] }, SPECS.params[2]], buffers: SPECS.buffers } });
    await w.closed;
    expect(w.error?.code).toBe('MANIFEST_MISMATCH');
    expect(w.error?.message).toMatch(/'conv\.S'.*'conv\.s'/);
  });

  it('survives garbage and oversized frames and keeps training', async () => {
    const cfg = config({ minWorkers: 1, maxMessageBytes: 64 * 1024 });
    const h = await harness(cfg);
    const sockets: WebSocket[] = [];
    const garbage = async (frames: Uint8Array[]): Promise<void> => {
      const ws = new WebSocket(h.url);
      sockets.push(ws);
      ws.on('error', () => {});
      await new Promise<void>((r) => ws.on('open', () => r()));
      for (const f of frames) ws.send(f);
      await new Promise<void>((r) => ws.on('close', () => r()));
    };
    let seed = 7;
    const rnd = (n: number): Uint8Array => Uint8Array.from({ length: n }, () => ((seed = (seed * 1103515245 + 12345) >>> 0) >>> 24));
    await Promise.all([garbage([rnd(50)]), garbage([rnd(3)]), garbage([new Uint8Array(200 * 1024)]), garbage([new TextEncoder().encode('{"type":"hello"}')])]);
    const w = h.spawn();
    const done = h.coord.start();
    // More garbage while training runs.
    await garbage([rnd(1000)]);
    const summary = await done;
    expect(w.steps).toBe(6);
    expectParity(summary.params, reference(cfg).params, 'after garbage');
  });

  it('serves dataset files in md5-tagged chunks to a worker without data, then trains it', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'svd-coord-data-'));
    const bytes = Uint8Array.from({ length: 5 * 1024 * 1024 + 17 }, (_, i) => (i * 31) & 255);
    writeFileSync(join(dir, 'data_batch_1.bin'), bytes);
    const md5 = createHash('md5').update(bytes).digest('hex');
    const h = await harness(config({ minWorkers: 1 }), { dataDir: dir, datasetInfo: { trainCount: TRAIN, testCount: TEST, md5s: { 'data_batch_1.bin': md5 } } });
    const w = h.spawn({ fetchFiles: ['data_batch_1.bin'] });
    await h.coord.start();
    const got = w.files.get('data_batch_1.bin')!;
    expect(got.md5).toBe(md5);
    expect(Buffer.from(got.bytes).equals(Buffer.from(bytes))).toBe(true);
    expect(w.steps).toBe(6);
  });

  it('refuses a data request for a file it does not serve', async () => {
    const h = await harness(config({ minWorkers: 1 }), { dataDir: tmpdir(), datasetInfo: { trainCount: TRAIN, testCount: TEST, md5s: { 'data_batch_1.bin': 'x' } } });
    const nosy = h.spawn({ fetchFiles: ['../../etc/passwd'] });
    await nosy.closed;
    expect(nosy.error?.code).toBe('DATA_MISSING');
  });

  it('drops a connection that does not finish the handshake within handshakeTimeoutMs', async () => {
    const h = await harness(config({ handshakeTimeoutMs: 150 }));
    const ws = new WebSocket(h.url);
    ws.on('error', () => {});
    const t0 = Date.now();
    const closed = await new Promise<number>((r) => ws.on('close', (code) => r(code)));
    expect(closed).toBe(1008);
    expect(Date.now() - t0).toBeGreaterThanOrEqual(100);
    expect(h.logs.some((l) => /handshake not finished within 150 ms/.test(l))).toBe(true);
  });

  it('takes initial weights from the first manifest when the caller gives none', async () => {
    const cfg = config({ minWorkers: 1 });
    const h = await harness(cfg, { initialParams: undefined, initialBuffers: undefined });
    h.spawn({ initial: initial() });
    const summary = await h.coord.start();
    expectParity(summary.params, reference(cfg).params, 'initial from manifest');
  });
});
