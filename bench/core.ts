/**
 * Core hot-path benchmark: batch assembly (per worker per step) and the wire codec for gradient
 * sets (per worker per step, both directions). `pnpm bench core [--data DIR] [--iters N]`.
 * Uses the real CIFAR-10 from --data, $SVD_TRAIN_DATA or /work/shared/cifar-10-batches-bin when
 * present, else a synthetic split of the same layout.
 */
import { existsSync } from 'node:fs';
import { assembleBatch, decodeMessage, encodeMessage, epochPermutation, readCifar10, type GradientsMessage, type SplitLike, type WireTensor } from '@svd-train/core';

const args = process.argv.slice(2);
const arg = (k: string) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : undefined;
};
const iters = Number(arg('--iters') ?? 200);
const candidates = [arg('--data'), process.env.SVD_TRAIN_DATA, '/work/shared/cifar-10-batches-bin'].filter((d): d is string => !!d);
const dataDir = candidates.find((d) => existsSync(`${d}/data_batch_1.bin`));

function median(xs: number[]): number {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.floor(s.length / 2)];
}

function timeIt(fn: (k: number) => void, n: number, warmup = 10): { med: number; p90: number } {
  for (let k = 0; k < warmup; k++) fn(k);
  const ts: number[] = [];
  for (let k = 0; k < n; k++) {
    const t = performance.now();
    fn(k);
    ts.push(performance.now() - t);
  }
  ts.sort((a, b) => a - b);
  return { med: median(ts), p90: ts[Math.floor(ts.length * 0.9)] };
}

let split: SplitLike;
let source: string;
if (dataDir) {
  split = readCifar10(dataDir, 'train');
  source = `CIFAR-10 ${dataDir} (${split.count} train images)`;
} else {
  const count = 10_000;
  const images = new Uint8Array(count * 3072);
  for (let i = 0; i < images.length; i++) images[i] = (i * 2654435761) >>> 24;
  split = { images, labels: Uint8Array.from({ length: count }, (_, i) => i % 10), count };
  source = `synthetic (${count} images)`;
}

const rows: [string, string, string][] = [];
const B = 128;
const perm = epochPermutation(0, 0, split.count);
const out = { x: new Float32Array(B * 3072), y: new Int32Array(B) };
for (const augment of [false, true]) {
  const r = timeIt((k) => {
    const off = ((k * B) % (split.count - B));
    assembleBatch(split, perm.subarray(off, off + B), { seed: 0, epoch: k, augment, out });
  }, iters);
  rows.push([`assembleBatch 128 samples, augment=${augment}`, `${r.med.toFixed(3)} ms`, `p90 ${r.p90.toFixed(3)} ms`]);
}

/** A gradient set of about `mb` MB split over tensors shaped like a ResNet's (many small + a few large). */
function gradientSet(mb: number): WireTensor[] {
  const total = Math.round((mb * 1024 * 1024) / 4);
  const ts: WireTensor[] = [];
  let left = total;
  for (let i = 0; left > 0; i++) {
    const n = Math.min(left, i % 4 === 0 ? 64 : Math.max(1024, Math.floor(total / 40)));
    const data = new Float32Array(n);
    for (let j = 0; j < n; j++) data[j] = Math.sin(j + i) * 1e-3;
    ts.push({ name: `layers.${i}.conv.U`, shape: [n], data });
    left -= n;
  }
  return ts;
}

for (const mb of [1, 45]) {
  const grads = gradientSet(mb);
  const msg: GradientsMessage = { type: 'gradients', step: 1, attempt: 0, n: 64, grads, buffers: [], loss: { ce: 2.3, orth: 0.1, sparsity: 0.2, total: 2.6 }, correct: 7, computeMs: 100 };
  const bytes = encodeMessage(msg);
  const sizeMb = bytes.length / (1024 * 1024);
  const n = mb > 10 ? 15 : 100;
  const enc = timeIt(() => encodeMessage(msg), n, 3);
  const dec = timeIt(() => decodeMessage(bytes, { maxBytes: 1 << 30 }), n, 3);
  const decNoCheck = timeIt(() => decodeMessage(bytes, { maxBytes: 1 << 30, skipFiniteCheck: true }), n, 3);
  rows.push([`encodeMessage gradients ${sizeMb.toFixed(1)} MB (${grads.length} tensors)`, `${(sizeMb / (enc.med / 1000)).toFixed(0)} MB/s`, `${enc.med.toFixed(2)} ms`]);
  rows.push([`decodeMessage gradients ${sizeMb.toFixed(1)} MB (finite check)`, `${(sizeMb / (dec.med / 1000)).toFixed(0)} MB/s`, `${dec.med.toFixed(2)} ms`]);
  rows.push([`decodeMessage gradients ${sizeMb.toFixed(1)} MB (no finite check)`, `${(sizeMb / (decNoCheck.med / 1000)).toFixed(0)} MB/s`, `${decNoCheck.med.toFixed(2)} ms`]);
}

const w0 = Math.max(...rows.map((r) => r[0].length), 9);
const w1 = Math.max(...rows.map((r) => r[1].length), 6);
console.log(`svd-train core bench: data = ${source}, node ${process.version}, median of ${iters} (assembly) runs`);
console.log(`${'benchmark'.padEnd(w0)}  ${'median'.padStart(w1)}  detail`);
console.log(`${'-'.repeat(w0)}  ${'-'.repeat(w1)}  ------`);
for (const r of rows) console.log(`${r[0].padEnd(w0)}  ${r[1].padStart(w1)}  ${r[2]}`);
