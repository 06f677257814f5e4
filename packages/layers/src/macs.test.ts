import { describe, it, expect } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { countMacs, countParams } from './macs.js';
import { SVDConv2D } from './svd-conv2d.js';
import { SVDDense } from './svd-dense.js';
import { buildResNet, plainResNetCost } from './resnet.js';

describe('countMacs', () => {
  it('plain conv x=[8,8,3] k3 s2 valid→[3,3,4] + dense 36→5', () => {
    const m = tf.sequential({
      layers: [
        tf.layers.conv2d({ inputShape: [8, 8, 3], filters: 4, kernelSize: 3, strides: 2, useBias: false, name: 'c' }),
        tf.layers.flatten(),
        tf.layers.dense({ units: 5, name: 'd' }),
      ],
    });
    const r = countMacs(m, { inputShape: [8, 8, 3] });
    // conv: 3·3 outputs × 4 filters × 3·3·3 MACs; dense: 36·5.
    expect(r.perLayer).toEqual([
      { name: 'c', macs: 9 * 4 * 27, params: 3 * 3 * 3 * 4, exportParams: 3 * 3 * 3 * 4, form: 'plain' },
      { name: 'd', macs: 36 * 5, params: 36 * 5 + 5, exportParams: 36 * 5 + 5, form: 'plain' },
    ]);
    expect(r.total).toBe(972 + 180);
    expect(countParams(m)).toBe(108 + 185);
    m.dispose();
  });

  it('SVD channel conv c3 n8 k3 p1 x=[8,8,3], rank 2, factored vs reconstruct', () => {
    for (const forward of ['factored', 'reconstruct'] as const) {
      const m = tf.sequential({
        layers: [new SVDConv2D({ inputShape: [8, 8, 3], filters: 8, kernelSize: 3, padding: 1, rank: 2, forward, seed: 1, name: 'c' })],
      });
      // factored: 64 positions × (r·c·9 + r·n) = 64·(54 + 16); reconstruct: 64·8·27 (+ m·p·r = 8·27·2 per batch).
      expect(countMacs(m).total).toBe(forward === 'factored' ? 64 * 70 : 64 * 8 * 27);
      expect(countMacs(m, { batch: 4 }).total).toBe(forward === 'factored' ? 64 * 70 : 64 * 8 * 27 + (8 * 27 * 2) / 4);
      expect(countMacs(m).perLayer[0]).toMatchObject({ params: 8 * 2 + 2 + 27 * 2, exportParams: forward === 'factored' ? (8 + 27) * 2 : 8 * 27, form: forward === 'factored' ? 'factored' : 'merged' });
      m.dispose();
    }
  });

  it('SVD spatial conv c4 n6 k3 s2 p1 x=[8,10,4], full rank, factored', () => {
    const m = tf.sequential({
      layers: [new SVDConv2D({ inputShape: [8, 10, 4], filters: 6, kernelSize: 3, strides: 2, padding: 1, decomposition: 'spatial', forward: 'factored', seed: 1 })],
    });
    // r = min(6·3, 4·3) = 12; conv1 (kh×1, stride (2,1)): out 4×10, 12·4·3 MACs each; conv2 (1×kw): out 4×5, 6·12·3 each.
    expect(countMacs(m).total).toBe(4 * 10 * 12 * 12 + 4 * 5 * 6 * 12 * 3);
    m.dispose();
  });

  it('SVD dense 16→10: rank 3 runs factored (in·r + r·out), full rank merged (in·out)', () => {
    const m = tf.sequential({ layers: [new SVDDense({ inputShape: [16], units: 10, rank: 3, seed: 2 })] });
    expect(countMacs(m).total).toBe(16 * 3 + 3 * 10);
    expect(countParams(m)).toBe(10 * 3 + 3 + 16 * 3 + 10);
    const full = tf.sequential({ layers: [new SVDDense({ inputShape: [16], units: 10, seed: 2 })] });
    expect(countMacs(full).perLayer[0]).toMatchObject({ macs: 160, exportParams: 170, form: 'merged' });
    m.dispose();
    full.dispose();
  });

  it('a full-rank SVD-ResNet-20 costs exactly the plain ResNet-20 (40.81M MACs), in both decompositions', () => {
    const plain = plainResNetCost({ depth: 20 });
    // stem 1024·16·27, stage convs 6 × 2.36M at 32², 16², 8² (less the two stride-2 firsts, 1.18M),
    // two 1×1 shortcuts of 131k and the fc 64·10.
    expect(plain.macs).toBe(40_813_184);
    for (const decomposition of ['channel', 'spatial'] as const) {
      const m = buildResNet({ depth: 20, decomposition, seed: 1 });
      const c = countMacs(m);
      expect(c.total).toBe(plain.macs);
      expect(c.perLayer.filter((l) => l.form === 'factored')).toEqual([]);
      m.dispose();
    }
  });

  it('rejects an input shape the model was not built for', () => {
    const m = tf.sequential({ layers: [tf.layers.dense({ inputShape: [4], units: 2 })] });
    expect(() => countMacs(m, { inputShape: [5] })).toThrow(/does not match/);
    m.dispose();
  });
});
