/**
 * Distributed benchmark: `pnpm bench distributed [--sizes resnet20,resnet18] [--workers 1,2,4,8,16] [--rounds N]`.
 *
 * Part 1 (implemented): the coordinator's round overhead. N simulated in-process workers (plain
 * `ws` clients speaking the real protocol on 127.0.0.1) answer every step instantly with a
 * precomputed gradients frame (`gradientsFrameTemplate`: the megabytes are encoded once, only
 * step/attempt/n change), so the time per round is the coordinator's own work plus loopback
 * transfer: send steps, receive and decode N frames, validate shapes and finiteness, the
 * sample-weighted all-reduce, the SGD step, and encoding + sending the weights broadcast.
 * GB/s counts the gradient bytes received plus the weight bytes sent per round.
 * Note that the simulated workers share the process (and the 2-core box) with the coordinator,
 * so this is an upper bound on the overhead a real deployment would see.
 *
 * Options: --mask uses ws's default random client masks (see simWorker).
 *
 * Part 2 (`--real [--limit-train 1280] [--real-workers 1,2] [--real-backend native,wasm] [--data DIR]`,
 * real workers on native and wasm, img/s and scaling efficiency): see `benchRealWorkers` below.
 * `--sizes none` skips part 1.
 */
import { createRequire } from 'node:module';
import { cpus, loadavg } from 'node:os';
import {
  PROTOCOL_VERSION,
  authProof,
  decodeMessage,
  makeNonce,
  encodeMessage,
  parseConfig,
  type Message,
  type TensorSpec,
  type WireTensor,
} from '@svd-train/core';
import { gradientsFrameTemplate } from '@svd-train/core/testing';
import { Coordinator } from '@svd-train/coordinator';
import { runTorchScript } from './lib/torch.js';

// `ws` is a dependency of the coordinator, not of the workspace root that bench/ runs from:
// resolve it the way the coordinator does instead of adding a root dependency for one script.
const { WebSocket } = createRequire(new URL('../packages/coordinator/package.json', import.meta.url))('ws') as typeof import('ws');
type WebSocket = InstanceType<typeof WebSocket>;

const args = process.argv.slice(2);
const randomMask = args.includes('--mask');
const arg = (k: string): string | undefined => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : undefined;
};

/**
 * Parameter layouts with the sizes of the real models' gradient sets: ResNet-20 about 270k
 * float32 (~1.1 MB) in ~65 tensors, ResNet-18 about 11.2M float32 (~45 MB) in ~62 tensors.
 */
function layout(kind: 'resnet20' | 'resnet18'): { params: TensorSpec[]; buffers: TensorSpec[] } {
  const params: TensorSpec[] = [];
  const buffers: TensorSpec[] = [];
  const conv = (name: string, cin: number, cout: number, k: number): void => {
    params.push({ name: `${name}.weight`, shape: [cout, cin, k, k] });
  };
  const bn = (name: string, c: number): void => {
    params.push({ name: `${name}.weight`, shape: [c] }, { name: `${name}.bias`, shape: [c] });
    buffers.push({ name: `${name}.running_mean`, shape: [c] }, { name: `${name}.running_var`, shape: [c] });
  };
  if (kind === 'resnet20') {
    conv('conv1', 3, 16, 3);
    bn('bn1', 16);
    let cin = 16;
    [16, 32, 64].forEach((c, s) => {
      for (let b = 0; b < 3; b++) {
        conv(`layer${s + 1}.${b}.conv1`, cin, c, 3);
        bn(`layer${s + 1}.${b}.bn1`, c);
        conv(`layer${s + 1}.${b}.conv2`, c, c, 3);
        bn(`layer${s + 1}.${b}.bn2`, c);
        cin = c;
      }
    });
    params.push({ name: 'linear.weight', shape: [10, 64] }, { name: 'linear.bias', shape: [10] });
  } else {
    conv('conv1', 3, 64, 3);
    bn('bn1', 64);
    let cin = 64;
    [64, 128, 256, 512].forEach((c, s) => {
      for (let b = 0; b < 2; b++) {
        conv(`layer${s + 1}.${b}.conv1`, cin, c, 3);
        bn(`layer${s + 1}.${b}.bn1`, c);
        conv(`layer${s + 1}.${b}.conv2`, c, c, 3);
        bn(`layer${s + 1}.${b}.bn2`, c);
        if (cin !== c) {
          conv(`layer${s + 1}.${b}.shortcut.0`, cin, c, 1);
          bn(`layer${s + 1}.${b}.shortcut.1`, c);
        }
        cin = c;
      }
    });
    params.push({ name: 'linear.weight', shape: [10, 512] }, { name: 'linear.bias', shape: [10] });
  }
  return { params, buffers };
}

const size = (s: TensorSpec): number => s.shape.reduce((a, b) => a * b, 1);
const fill = (specs: TensorSpec[], v: number): WireTensor[] => specs.map((s) => ({ name: s.name, shape: s.shape, data: new Float32Array(size(s)).fill(v) }));

/** A worker that answers every step with the same precomputed gradients (only step/attempt/n change). */
function simWorker(url: string, specs: { params: TensorSpec[]; buffers: TensorSpec[] }, prefix: Uint8Array, tail: (s: number, a: number, n: number) => Uint8Array): WebSocket {
  // A zero mask lets ws skip the byte-wise XOR on both ends (the server skips unmasking all-zero
  // masks); masking protects browser-era proxies, not a worker talking straight to the coordinator.
  // --mask measures the default random masks (pure-JS XOR without the optional bufferutil addon).
  const ws = new WebSocket(url, { maxPayload: 1 << 30, perMessageDeflate: false, ...(randomMask ? {} : { generateMask: (m: Buffer) => m.fill(0) }) } as never);
  ws.on('error', () => {});
  const nonce = makeNonce();
  ws.on('open', () =>
    ws.send(encodeMessage({ type: 'hello', protocolVersion: PROTOCOL_VERSION, workerName: 'bench', backend: 'sim', device: 'none', capabilities: [], pid: process.pid, hostname: 'localhost', hasData: true, nonce })),
  );
  ws.on('message', (data) => {
    // Weights frames are large; only peek at the type of small frames to keep the sim cheap.
    const bytes = data as Uint8Array;
    if (bytes.byteLength > 4096) return;
    const m: Message = decodeMessage(bytes);
    if (m.type === 'challenge') ws.send(encodeMessage({ type: 'auth', mac: authProof('', 'worker', { worker: nonce, coordinator: m.nonce }) }));
    else if (m.type === 'welcome') ws.send(encodeMessage({ type: 'manifest', configHash: m.configHash, params: specs.params, buffers: specs.buffers }));
    else if (m.type === 'step') {
      // One WebSocket message in two fragments: the shared megabytes, then the 3 small fields.
      ws.send(prefix, { fin: false } as never);
      ws.send(tail(m.step, m.attempt, m.indices.length), { fin: true } as never);
    }
  });
  return ws;
}

interface Row {
  model: string;
  n: number;
  gradMB: number;
  msPerRound: number;
  gbPerSec: number;
}

async function roundOverhead(kind: 'resnet20' | 'resnet18', n: number, rounds: number): Promise<Row> {
  const specs = layout(kind);
  const warmup = 2;
  const perWorker = 16;
  const cfg = parseConfig({ host: '127.0.0.1', port: 0, batch: perWorker * n, epochs: 1, minWorkers: n, optimizer: 'sgd', schedule: 'constant', maxMessageBytes: 1 << 30, stepTimeoutMs: 600_000, stallWarnMs: 600_000, checkpointEvery: 0 });
  const { prefix, tail } = gradientsFrameTemplate({ grads: fill(specs.params, 1e-3), buffers: fill(specs.buffers, 0.5), loss: { ce: 2.3, orth: 0.1, sparsity: 0.2, total: 2.6 }, correct: 1, computeMs: 0 });
  const stamps: number[] = [];
  const coord = new Coordinator({
    config: cfg,
    datasetInfo: { trainCount: cfg.batch * (rounds + warmup), testCount: 0, md5s: {} },
    initialParams: fill(specs.params, 0.01),
    initialBuffers: fill(specs.buffers, 0),
    lrAt: () => 0.01,
    onStep: () => stamps.push(performance.now()),
  });
  const { port } = await coord.listen();
  const sockets = Array.from({ length: n }, () => simWorker(`ws://127.0.0.1:${port}`, specs, prefix, tail));
  await coord.start();
  for (const s of sockets) s.terminate();
  const timed = stamps.slice(warmup - 1);
  const ms = (timed[timed.length - 1] - timed[0]) / (timed.length - 1);
  const gradBytes = prefix.byteLength;
  const weightBytes = specs.params.reduce((a, s) => a + 4 * size(s), 0) + specs.buffers.reduce((a, s) => a + 4 * size(s), 0);
  return { model: kind, n, gradMB: gradBytes / 1e6, msPerRound: ms, gbPerSec: (n * (gradBytes + weightBytes)) / (ms / 1000) / 1e9 };
}

/**
 * Part 2, real workers: images/s with 1 and 2 local workers on the real CIFAR-10, SVD-ResNet-20,
 * and the scaling efficiency img/s(K) / (K * img/s(1)). Runs the built CLI
 * (`node packages/cli/bin/svd-coord.js start --spawn K`, needs `pnpm build`) on --limit-train
 * samples for one epoch without evaluation, and takes the median imgPerSec of the run's
 * metrics.jsonl step lines after the first two (warm-up: wasm compile, first allocations).
 * `--real [--limit-train 1280] [--real-workers 1,2] [--real-backend native,wasm] [--data DIR]`.
 * A worker count may carry a thread count, `KxT` (e.g. `1x2`: one worker with 2 oneDNN threads,
 * `--threads 2`); its efficiency is against K·T one-thread workers.
 * With /usr/bin/python3 and torch, PyTorch's SVD-reconstruct step at batch 128 on all cores
 * (bench/train_step_torch.py) is timed in the same run for the ratio.
 */
async function benchRealWorkers(): Promise<void> {
  const { spawnSync } = await import('node:child_process');
  const { existsSync, mkdtempSync, readFileSync, rmSync } = await import('node:fs');
  const { tmpdir } = await import('node:os');
  const { join } = await import('node:path');
  const root = new URL('..', import.meta.url).pathname;
  const cli = join(root, 'packages/cli/bin/svd-coord.js');
  const data = [arg('--data'), process.env.SVD_TRAIN_DATA, '/work/shared/cifar-10-batches-bin'].find((d) => d && existsSync(join(d, 'data_batch_1.bin')));
  if (!existsSync(join(root, 'packages/cli/dist/index.js')) || !data) {
    console.log(`\nreal workers: skipped (${!data ? 'no CIFAR-10 found; pass --data DIR' : 'CLI not built; run pnpm build'})`);
    return;
  }
  const limit = arg('--limit-train') ?? '1280';
  const ks = (arg('--real-workers') ?? '1,2').split(',').map((w) => {
    const [k, t] = w.split('x').map(Number);
    return { k: k!, t: t ?? 1 };
  });
  const engines = (arg('--real-backend') ?? 'native,wasm').split(',');
  const rows: { engine: string; k: number; t: number; ips: number; steps: number }[] = [];
  for (const engine of engines) for (const { k, t: threads } of ks) {
    const out = mkdtempSync(join(tmpdir(), 'svd-bench-dist-'));
    const flags = ['start', '--spawn', String(k), '--model', 'resnet20', '--data', data, '--out', out, '--port', '0', '--epochs', '1', '--batch', '128', '--limit-train', limit, '--eval-every', '0', '--backend', engine, '--checkpoint-every', '0', '--threads', String(threads)];
    const r = spawnSync(process.execPath, [cli, ...flags], { cwd: root, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 3_600_000 });
    if (r.status !== 0) {
      console.log(`\nreal ${engine} workers K=${k}x${threads}: the run failed (exit ${r.status}):\n${(r.stderr ?? '').slice(-2000)}`);
      rmSync(out, { recursive: true, force: true });
      continue;
    }
    const steps = readFileSync(join(out, 'metrics.jsonl'), 'utf8')
      .trim()
      .split('\n')
      .map((l) => JSON.parse(l) as { kind: string; imgPerSec?: number })
      .filter((l) => l.kind === 'step');
    rmSync(out, { recursive: true, force: true });
    const ips = steps.slice(Math.min(2, steps.length - 1)).map((l) => l.imgPerSec ?? 0).sort((a, b) => a - b);
    rows.push({ engine, k, t: threads, ips: ips[Math.floor(ips.length / 2)], steps: steps.length });
    console.error(`  real ${engine} K=${k}x${threads}: ${rows[rows.length - 1].ips.toFixed(1)} img/s`);
  }
  const t = runTorchScript<{ results: { model: string; img_per_s: number }[] }>(
    join(root, 'bench/train_step_torch.py'),
    ['--batches', '128', '--reps', '5', '--warmup', '2', '--threads', String(cpus().length)],
    'torch baseline',
  );
  const torch = t?.results.find((x) => x.model === 'svd reconstruct')?.img_per_s;
  console.log(`\nReal workers, SVD-ResNet-20 (channel), batch 128, ${limit} CIFAR-10 train samples, ${cpus().length} cpus shared by coordinator and workers`);
  console.log(`| engine | workers | img/s (median step) | steps | scaling efficiency | vs torch ${cpus().length} thr (${torch ? torch.toFixed(1) : 'not run'} img/s) |`);
  console.log('|---|---:|---:|---:|---:|---:|');
  for (const r of rows) {
    const base = rows.find((x) => x.engine === r.engine && x.k === 1 && x.t === 1)?.ips;
    console.log(`| ${r.engine} | ${r.k}${r.t > 1 ? ` × ${r.t} threads` : ''} | ${r.ips.toFixed(1)} | ${r.steps} | ${base ? ((100 * r.ips) / (r.k * r.t * base)).toFixed(0) + '%' : '-'} | ${torch ? (r.ips / torch).toFixed(2) : '-'} |`);
  }
}

async function main(): Promise<void> {
  const sizes = (arg('--sizes') ?? 'resnet20,resnet18').split(',').filter((x) => x !== 'none') as ('resnet20' | 'resnet18')[];
  const ns = (arg('--workers') ?? '1,2,4,8,16').split(',').map(Number);
  const rows: Row[] = [];
  for (const kind of sizes) {
    const rounds = Number(arg('--rounds') ?? (kind === 'resnet18' ? 4 : 30));
    for (const n of ns) {
      const r = await roundOverhead(kind, n, rounds);
      rows.push(r);
      console.error(`  ${kind} N=${n}: ${r.msPerRound.toFixed(1)} ms/round`);
    }
  }
  if (rows.length) console.log(`\nCoordinator round overhead (simulated in-process workers, loopback ws, ${randomMask ? 'random' : 'zero'} client masks, node ${process.version}, ${cpus().length} cpus, load average ${loadavg()[0].toFixed(1)})`);
  if (rows.length) console.log('| gradients | MB/worker | N | ms/round | GB/s (grads in + weights out) |\n|---|---:|---:|---:|---:|');
  for (const r of rows) console.log(`| ${r.model} | ${r.gradMB.toFixed(1)} | ${r.n} | ${r.msPerRound.toFixed(1)} | ${r.gbPerSec.toFixed(2)} |`);
  if (args.includes('--real')) await benchRealWorkers();
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
