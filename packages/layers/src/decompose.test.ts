import { describe, it, expect } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { expectClose } from './test-support/index.js';
import { decomposeInto } from './decompose.js';
import { buildResNet } from './resnet.js';
import { getBuffers, getParameters, setBuffers } from './parameter-names.js';
import { SVDConv2D } from './svd-conv2d.js';

describe('decomposeInto', () => {
  const arch = { depth: 20, widths: [4, 8, 16], blocks: [1, 1, 1], strides: [1, 2, 2] } as const;
  const build = (svd: boolean, decomposition: 'channel' | 'spatial' = 'channel', ranks?: Record<string, number>) =>
    buildResNet({ ...arch, widths: [...arch.widths], blocks: [...arch.blocks], strides: [...arch.strides], svd, decomposition, seed: svd ? 11 : 3, ranks });

  function trainedLooking(model: tf.LayersModel): void {
    // BN statistics other than the init's, so that copying them is visible in the logits.
    setBuffers(model, getBuffers(model).map((b, i) => ({
      ...b,
      data: b.data.map((_, j) => (b.name.endsWith('running_var') ? 0.5 + ((i * 7 + j * 3) % 5) / 5 : (((i + j) % 7) - 3) / 10)),
    })));
  }

  for (const decomposition of ['channel', 'spatial'] as const) {
    it(`at full rank (${decomposition}) the SVD model computes the plain model's function`, () => {
      const plain = build(false);
      trainedLooking(plain);
      const svd = build(true, decomposition);
      const x = tf.randomNormal([3, 32, 32, 3], 0, 1, 'float32', 4);
      const before = svd.predict(x) as tf.Tensor;
      const want = plain.predict(x) as tf.Tensor;
      // Different seeds: before the copy the two models disagree.
      expect(tf.max(tf.abs(tf.sub(before, want))).dataSync()[0]).toBeGreaterThan(1e-2);
      const report = decomposeInto(plain, svd);
      expect(report.length).toBe(svd.layers.filter((l) => 'pytorchWeight' in l).length);
      for (const r of report) expect([r.name, r.rank, r.energyKept]).toEqual([r.name, r.fullRank, 1]);
      expectClose('decomposed logits', svd.predict(x) as tf.Tensor, want, 1e-4);
      // BN statistics, BN parameters and the fc bias are the plain model's.
      const plainParams = new Map(getParameters(plain).map((t) => [t.name, t.data]));
      for (const t of getParameters(svd)) if (!/\.(U|s|V)$/.test(t.name)) expect(t.data, t.name).toEqual(plainParams.get(t.name));
      expect(getBuffers(svd)).toEqual(getBuffers(plain));
      // U has orthonormal columns: the orthogonality penalty starts at round-off.
      const f = (svd.getLayer('layers_1_conv1') as SVDConv2D).getFactors();
      const gram = tf.matMul(tf.tensor2d(f.U, [f.m, f.r]), tf.tensor2d(f.U, [f.m, f.r]), true, false);
      expectClose('UᵀU', gram, tf.eye(f.r), 1e-5);
    });
  }

  it('at a lower rank keeps the largest singular values and reports their energy', () => {
    const plain = build(false);
    const svd = build(true, 'channel', { 'layers.1.conv1': 2 });
    const report = decomposeInto(plain, svd);
    const low = report.find((r) => r.name === 'layers_1_conv1')!;
    expect(low.rank).toBe(2);
    expect(low.energyKept).toBeGreaterThan(0);
    expect(low.energyKept).toBeLessThan(1);
    // The kept part is the best rank-2 approximation: its weight is the plain weight's projection.
    const layer = svd.getLayer('layers_1_conv1') as SVDConv2D;
    const w = layer.pytorchWeight();
    const kernel = plain.getLayer('layers_1_conv1').getWeights()[0]!; // tfjs [kh, kw, c, n]
    const pt = tf.transpose(kernel, [3, 2, 0, 1]).dataSync() as Float32Array;
    let err = 0;
    let norm = 0;
    for (let i = 0; i < pt.length; i++) {
      err += (pt[i]! - w[i]!) ** 2;
      norm += pt[i]! ** 2;
    }
    expect(err / norm).toBeCloseTo(1 - low.energyKept, 5);
  });

  it('refuses a source that is not a plain model of the same architecture', () => {
    expect(() => decomposeInto(build(true), build(true))).toThrow(/no plain conv or dense layer of that name/);
    const wider = buildResNet({ depth: 20, widths: [4, 8, 32], blocks: [1, 1, 1], strides: [1, 2, 2], svd: false, seed: 1 });
    expect(() => decomposeInto(wider, build(true))).toThrow(/plain kernel has shape \[3,3,8,32\], the SVD layer needs \[3,3,8,16\]/);
  });
});
