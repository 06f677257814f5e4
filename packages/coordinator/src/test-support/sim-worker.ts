/**
 * A simulated worker for coordinator tests and the round-overhead benchmark: a plain `ws` client
 * that speaks the real protocol but computes a deterministic fake "linear model" instead of a
 * network, so parity with a single process can be checked exactly without TensorFlow.
 *
 * Fake model (per parameter tensor p, flattened, slice of sample indices I with mean m):
 *   grad[j]   = GRAD_SCALE * p[j] + 1e-3 * m * ((j % 7) + 1)      (a per-sample mean, like a real loss)
 *   buffer[j] = 0.9 * buffer[j] + 0.1 * 1e-2 * m                   (BN running-stat update)
 *   ce = m / 1000, correct = number of even indices
 */
import { WebSocket } from 'ws';
import { PROTOCOL_VERSION, authProof, makeNonce, verifyAuthProof, decodeMessage, encodeMessage, type Message, type StepMessage, type TensorSpec, type WireTensor } from '@svd-train/core';

export const GRAD_SCALE = 0.1;

const meanOf = (idx: ArrayLike<number>): number => {
  let s = 0;
  for (let i = 0; i < idx.length; i++) s += idx[i];
  return idx.length ? s / idx.length : 0;
};

/** The fake model's gradients for one slice (see the module header). */
export function fakeGradients(params: readonly WireTensor[], indices: ArrayLike<number>): WireTensor[] {
  const m = meanOf(indices);
  return params.map((p) => {
    const g = new Float32Array(p.data.length);
    for (let j = 0; j < g.length; j++) g[j] = GRAD_SCALE * p.data[j] + 1e-3 * m * ((j % 7) + 1);
    return { name: p.name, shape: p.shape, data: g };
  });
}

/** The fake model's buffer update for one slice. */
export function fakeBuffers(buffers: readonly WireTensor[], indices: ArrayLike<number>): WireTensor[] {
  const m = meanOf(indices);
  return buffers.map((b) => {
    const d = new Float32Array(b.data.length);
    for (let j = 0; j < d.length; j++) d[j] = 0.9 * b.data[j] + 0.1 * 1e-2 * m;
    return { name: b.name, shape: b.shape, data: d };
  });
}

/** What a scripted worker does with a step request. */
export type StepAction = 'answer' | 'die' | 'stall' | 'nan' | 'wrong-shape' | 'huge' | 'overcount' | 'nan-loss';

export interface SimWorkerOptions {
  url: string;
  name?: string;
  token?: string | null;
  protocolVersion?: number;
  configHash?: string;
  specs: { params: TensorSpec[]; buffers: TensorSpec[] };
  /** Sent as manifest.initial (the coordinator takes the first one when it has no weights). */
  initial?: { params: WireTensor[]; buffers: WireTensor[] };
  /** Decides per step request; default 'answer'. */
  onStep?: (msg: StepMessage, w: SimWorker) => StepAction;
  /** Artificial compute delay per step (ms). */
  delayMs?: number;
  /** Precomputed gradients frame factory (benchmark): skips the fake model. */
  precomputed?: (msg: StepMessage) => Uint8Array;
  /** Dataset files to fetch from the coordinator (data-request) before sending the manifest. */
  fetchFiles?: string[];
}

export class SimWorker {
  readonly ws: WebSocket;
  params: WireTensor[] = [];
  buffers: WireTensor[] = [];
  readonly received: Message[] = [];
  steps = 0;
  closed: Promise<{ code: number; reason: string }>;
  /** The error message the coordinator sent before closing, if any. */
  error: { code: string; message: string } | null = null;
  readonly ready: Promise<void>;
  /** Files received through data-chunk messages, reassembled, with the md5 the coordinator announced. */
  readonly files = new Map<string, { bytes: Uint8Array; md5: string }>();
  /** This connection's hello nonce, and whether the coordinator's challenge proved the token on it. */
  readonly nonce = makeNonce();
  coordinatorProved: boolean | null = null;
  private readonly partial = new Map<string, Uint8Array[]>();
  private manifestSent = false;

  constructor(private readonly opts: SimWorkerOptions) {
    this.ws = new WebSocket(opts.url, { maxPayload: 1 << 30 });
    let onReady!: () => void;
    this.ready = new Promise((r) => (onReady = r));
    this.closed = new Promise((r) => this.ws.on('close', (code, reason) => r({ code, reason: reason.toString() })));
    this.ws.on('error', () => {});
    this.ws.on('open', () =>
      this.send({ type: 'hello', protocolVersion: opts.protocolVersion ?? PROTOCOL_VERSION, workerName: opts.name ?? 'sim', backend: 'sim', device: 'none', capabilities: [], pid: process.pid, hostname: 'localhost', hasData: true, nonce: this.nonce }),
    );
    this.ws.on('message', (data) => {
      const msg = decodeMessage(data, { maxBytes: 1 << 30 });
      if (msg.type !== 'weights') this.received.push(msg);
      void this.handle(msg, onReady);
    });
  }

  private welcomeHash = '';

  private sendManifest(onReady: () => void): void {
    if (this.manifestSent) return;
    this.manifestSent = true;
    const o = this.opts;
    this.send({ type: 'manifest', configHash: o.configHash ?? this.welcomeHash, params: o.specs.params, buffers: o.specs.buffers, ...(o.initial ? { initial: o.initial } : {}) });
    onReady();
  }

  send(msg: Message | Uint8Array): void {
    if (this.ws.readyState === WebSocket.OPEN) this.ws.send(msg instanceof Uint8Array ? msg : encodeMessage(msg));
  }

  private async handle(msg: Message, onReady: () => void): Promise<void> {
    const o = this.opts;
    switch (msg.type) {
      case 'challenge':
        {
          const nonces = { worker: this.nonce, coordinator: msg.nonce };
          this.coordinatorProved = o.token ? verifyAuthProof(o.token, 'coordinator', nonces, msg.proof) : null;
          this.send({ type: 'auth', mac: authProof(o.token ?? '', 'worker', nonces) });
        }
        return;
      case 'welcome':
        this.welcomeHash = msg.configHash;
        if (o.fetchFiles?.length) for (const f of o.fetchFiles) this.send({ type: 'data-request', file: f });
        else this.sendManifest(onReady);
        return;
      case 'data-chunk': {
        const parts = this.partial.get(msg.file) ?? [];
        parts[msg.index] = msg.bytes;
        this.partial.set(msg.file, parts);
        if (parts.filter(Boolean).length === msg.total) {
          this.files.set(msg.file, { bytes: new Uint8Array(Buffer.concat(parts)), md5: msg.md5 });
          if (o.fetchFiles?.every((f) => this.files.has(f))) this.sendManifest(onReady);
        }
        return;
      }
      case 'weights':
        this.params = msg.params;
        this.buffers = msg.buffers;
        return;
      case 'step': {
        const action = o.onStep?.(msg, this) ?? 'answer';
        if (action === 'die') {
          this.ws.terminate();
          return;
        }
        if (action === 'stall') return;
        if (o.delayMs) await new Promise((r) => setTimeout(r, o.delayMs));
        this.steps++;
        if (o.precomputed) {
          this.send(o.precomputed(msg));
          return;
        }
        const grads = fakeGradients(this.params, msg.indices);
        if (action === 'nan') grads[0].data[grads[0].data.length - 1] = NaN;
        if (action === 'wrong-shape') grads[0] = { ...grads[0], shape: [grads[0].data.length, 1] };
        // Finite but absurd: every gradient value 3e38, near float32's largest.
        if (action === 'huge') for (const g of grads) g.data.fill(3e38);
        let correct = 0;
        for (const i of msg.indices) if (i % 2 === 0) correct++;
        if (action === 'overcount') correct = msg.indices.length + 1;
        const m = action === 'nan-loss' ? NaN : meanOf(msg.indices);
        this.send({
          type: 'gradients',
          step: msg.step,
          attempt: msg.attempt,
          n: msg.indices.length,
          grads,
          buffers: fakeBuffers(this.buffers, msg.indices),
          loss: { ce: m / 1000, orth: 0.5, sparsity: 0.25, total: m / 1000 + 0.5 },
          correct,
          computeMs: o.delayMs ?? 0,
        });
        return;
      }
      case 'eval': {
        let correct = 0;
        for (const i of msg.indices) if (i % 2 === 0) correct++;
        this.send({ type: 'eval-result', evalId: msg.evalId, n: msg.indices.length, correct, lossSum: msg.indices.length * 0.5 });
        return;
      }
      case 'error':
        this.error = { code: msg.code, message: msg.message };
        return;
      default:
        return;
    }
  }

  close(): void {
    this.ws.terminate();
  }
}
