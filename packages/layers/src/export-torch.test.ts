/**
 * The stock export, run by an independent runtime: PyTorch reads model.json + weights.bin with a
 * generic graph interpreter (test-support/torch_run_export.py, none of our code) and must give the
 * logits tfjs gives, and the same class for every image. Skipped where /usr/bin/python3 cannot
 * import torch (Debian: apt-get install -y python3-torch).
 */
import { describe, it, expect, afterAll } from 'vitest';
import { spawnSync } from 'node:child_process';
import { mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs';
import { buildResNet } from './resnet.js';
import { getBuffers, namedParameters, setBuffers } from './parameter-names.js';
import { exportToStockLayers, fileSystemIO } from './export.js';
import { pruneByEnergy } from './prune.js';
import { seededUniform } from './test-support/index.js';

const SCRIPT = join(dirname(fileURLToPath(import.meta.url)), 'test-support', 'torch_run_export.py');
const PLAIN_SCRIPT = join(dirname(fileURLToPath(import.meta.url)), '..', '..', '..', 'bench', 'check_torch_plain.py');
const hasTorch = spawnSync('/usr/bin/python3', ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;
const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

/** ResNet-8 with non-trivial BN statistics and a steep spectrum, pruned: merged and factored layers. */
function prunedResNet8(decomposition: 'channel' | 'spatial'): tf.LayersModel {
  const m = buildResNet({ depth: 20, widths: [4, 8, 16], blocks: [1, 1, 1], strides: [1, 2, 2], decomposition, seed: 31 });
  setBuffers(m, getBuffers(m).map((b, i) => ({ ...b, data: b.data.map((_, j) => (b.name.endsWith('running_var') ? 0.5 + ((i + j) % 4) / 4 : ((i * 3 + j) % 5) / 10 - 0.2)) })));
  for (const p of namedParameters(m)) {
    const v = p.variable.read().dataSync() as Float32Array;
    const steep = p.name.endsWith('.s') && !p.name.startsWith('stem');
    tf.tidy(() => {
      p.variable.write(tf.tensor(v.map((x, j) => (steep ? x * Math.pow(0.3, j) : x + 0.1 * Math.sin(j + 1))), p.variable.shape as number[]));
    });
  }
  const { model } = pruneByEnergy(m, 0.01);
  m.dispose();
  return model;
}

/**
 * Saves `exported` to a fresh folder, runs `script` on it with n seeded images (NHWC float32) and
 * returns what the script wrote, with tfjs' logits of `model` on the same images.
 */
async function inTorch(script: string, exported: tf.LayersModel, model: tf.LayersModel, n: number, seed: number): Promise<{ theirs: Float32Array; ours: Float32Array }> {
  const dir = mkdtempSync(join(tmpdir(), 'svd-export-torch-'));
  dirs.push(dir);
  await exported.save(fileSystemIO(dir));
  const xs = seededUniform(n * 32 * 32 * 3, seed, 2);
  writeFileSync(join(dir, 'x.f32'), new Uint8Array(xs.buffer, xs.byteOffset, xs.byteLength));
  const r = spawnSync('/usr/bin/python3', [script, dir, join(dir, 'x.f32'), String(n), join(dir, 'y.f32')], { encoding: 'utf8' });
  expect(r.status, r.stderr).toBe(0);
  const buf = readFileSync(join(dir, 'y.f32'));
  const theirs = new Float32Array(buf.buffer, buf.byteOffset, buf.byteLength / 4);
  const ours = tf.tidy(() => (model.predict(tf.tensor4d(xs, [n, 32, 32, 3])) as tf.Tensor).dataSync() as Float32Array);
  return { theirs, ours };
}

describe.skipIf(!hasTorch)('stock export run by PyTorch (independent runtime)', () => {
  for (const [decomposition, foldBatchNorm] of [['channel', false], ['channel', true], ['spatial', true]] as const) {
    it(`pruned ResNet-8 ${decomposition}${foldBatchNorm ? ', BN folded' : ''}: PyTorch gives tfjs' logits and classes for every image`, async () => {
      const m = prunedResNet8(decomposition);
      const stock = exportToStockLayers(m, { foldBatchNorm });
      const n = 24;
      const { theirs, ours } = await inTorch(SCRIPT, stock, m, n, 77);
      expect(theirs.length).toBe(ours.length);
      const scale = Math.max(...Array.from(ours, Math.abs));
      let worst = 0;
      for (let i = 0; i < ours.length; i++) worst = Math.max(worst, Math.abs(ours[i]! - theirs[i]!));
      expect(worst / scale).toBeLessThan(1e-4);
      const argmax = (a: Float32Array, i: number) => {
        const row = Array.from(a.subarray(i * 10, i * 10 + 10));
        return row.indexOf(Math.max(...row));
      };
      for (let i = 0; i < n; i++) expect([i, argmax(theirs, i)]).toEqual([i, argmax(ours, i)]);
      [m, stock].forEach((q) => q.dispose());
    });
  }
});

describe.skipIf(!hasTorch)('bench/torch_train.py --plain-from: a plain ResNet-20 export in PyTorch', () => {
  it("loads with tfjs' logits, and its exact channel and spatial SVDs give them too", async () => {
    const m = buildResNet({ depth: 20, svd: false, seed: 5 });
    setBuffers(m, getBuffers(m).map((b, i) => ({ ...b, data: b.data.map((_, j) => (b.name.endsWith('running_var') ? 0.5 + ((i + j) % 4) / 4 : ((i * 3 + j) % 5) / 10 - 0.2)) })));
    const stock = exportToStockLayers(m);
    const { theirs, ours } = await inTorch(PLAIN_SCRIPT, stock, m, 8, 78);
    expect(theirs.length).toBe(3 * ours.length);
    const scale = Math.max(...Array.from(ours, Math.abs));
    for (const [k, label] of ['plain', 'channel SVD', 'spatial SVD'].entries()) {
      let worst = 0;
      for (let i = 0; i < ours.length; i++) worst = Math.max(worst, Math.abs(ours[i]! - theirs[k * ours.length + i]!));
      expect(worst / scale, label).toBeLessThan(1e-4);
    }
    [m, stock].forEach((q) => q.dispose());
  });
});
