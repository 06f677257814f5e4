import { describe, it, expect } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import {
  TOL,
  loadReference,
  refToTensor,
  refToNhwc,
  expectClose,
  gradCheck,
  expectNoLeakedTensors,
  forEachBackend,
  TEST_ENGINES,
  type RefTensor,
} from './test-support/index.js';
import { SVDConv2D, chooseSvdForm, svdConvForwardCost, type SvdForward } from './svd-conv2d.js';
import { svdFromWeight, svdInit, pytorchWeightFromMatrix, matrixFromFactors } from './svd-init.js';

interface ConvCase {
  name: string;
  config: {
    type: string;
    decomposition: 'channel' | 'spatial';
    in_channels: number;
    out_channels: number;
    kernel_size: [number, number];
    stride: [number, number];
    padding: [number, number];
    rank: number;
  };
  U: RefTensor;
  s: RefTensor;
  V: RefTensor;
  weight: RefTensor;
  x: RefTensor;
  y: RefTensor;
  gy: RefTensor;
  grads: { dU: RefTensor; ds: RefTensor; dV: RefTensor; dx: RefTensor };
}

const cases = (loadReference<ConvCase[]>('layers') as ConvCase[]).filter((c) => c.config.type === 'conv2d');

function layerFor(c: ConvCase, forward: SvdForward): SVDConv2D {
  const cfg = c.config;
  const layer = new SVDConv2D({
    filters: cfg.out_channels,
    kernelSize: cfg.kernel_size,
    strides: cfg.stride,
    padding: cfg.padding,
    decomposition: cfg.decomposition,
    rank: cfg.rank,
    forward,
    seed: 1,
  });
  layer.build([null, c.x.shape[2]!, c.x.shape[3]!, cfg.in_channels]);
  layer.setFactors({ U: c.U.data, s: c.s.data, V: c.V.data, m: c.U.shape[0]!, p: c.V.shape[0]!, r: c.s.shape[0]! });
  return layer;
}

/** Runs forward and the VJP of sum(y*gy) w.r.t. U, s, V, x; returns plain arrays. */
function forwardAndGrads(layer: SVDConv2D, c: ConvCase) {
  return tf.tidy(() => {
    const x = refToNhwc(c.x);
    const gy = refToNhwc(c.gy);
    const y = layer.apply(x) as tf.Tensor;
    const vars = [layer.U, layer.s, layer.V].map((v) => v.read() as tf.Variable);
    const xv = tf.variable(x, true);
    const { grads } = tf.variableGrads(() => tf.sum(tf.mul(layer.apply(xv) as tf.Tensor, gy)) as tf.Scalar, [...vars, xv]);
    const out = {
      y: y.transpose([0, 3, 1, 2]).dataSync(),
      dU: grads[vars[0]!.name]!.dataSync(),
      ds: grads[vars[1]!.name]!.dataSync(),
      dV: grads[vars[2]!.name]!.dataSync(),
      dx: grads[xv.name]!.transpose([0, 3, 1, 2]).dataSync(),
    };
    xv.dispose();
    return out;
  });
}

forEachBackend(TEST_ENGINES, (backend) => {
  describe('SVDConv2D golden vs PyTorch reference (layers.json)', () => {
    for (const c of cases) {
      const cfg = c.config;
      const shapes =
        `${cfg.decomposition} x=[${c.x.shape}] (NCHW) c${cfg.in_channels}→n${cfg.out_channels} ` +
        `k=[${cfg.kernel_size}] s=[${cfg.stride}] p=[${cfg.padding}] r=${cfg.rank} U=[${c.U.shape}] V=[${c.V.shape}]`;
      for (const forward of ['reconstruct', 'factored'] as const) {
        it(`${forward} ${shapes}: y, dU, ds, dV, dx`, () => {
          const layer = layerFor(c, forward);
          const r = forwardAndGrads(layer, c);
          const tag = `${backend}/${c.name}/${forward}`;
          expectClose(`${tag} y`, r.y, c.y, TOL.tensorRel);
          expectClose(`${tag} dU`, r.dU, c.grads.dU, TOL.tensorRel);
          expectClose(`${tag} ds`, r.ds, c.grads.ds, TOL.tensorRel);
          expectClose(`${tag} dV`, r.dV, c.grads.dV, TOL.tensorRel);
          expectClose(`${tag} dx`, r.dx, c.grads.dx, TOL.tensorRel);
          disposeLayer(layer);
        });
      }
      it(`reconstructWeight ${shapes} equals reference weight.transpose([2,3,1,0])`, () => {
        const layer = layerFor(c, 'reconstruct');
        const got = tf.tidy(() => layer.reconstructWeight().dataSync());
        const want = tf.tidy(() => refToTensor(c.weight).transpose([2, 3, 1, 0]).dataSync());
        expectClose(`${backend}/${c.name} weight`, got, want, TOL.tensorRel);
        disposeLayer(layer);
      });
    }
  });

  describe('SVDConv2D forwards agree and do not leak', () => {
    for (const decomposition of ['channel', 'spatial'] as const) {
      it(`${decomposition} x=[2,7,6,3] k=[3,2] s=[2,1] p=[1,0] r=3: reconstruct ≈ factored (float32 rounding)`, () => {
        const mk = (forward: SvdForward) => {
          const l = new SVDConv2D({ filters: 5, kernelSize: [3, 2], strides: [2, 1], padding: [1, 0], decomposition, rank: 3, forward, seed: 7 });
          l.build([null, 7, 6, 3]);
          return l;
        };
        const a = mk('reconstruct');
        const b = mk('factored');
        const x = tf.randomNormal([2, 7, 6, 3], 0, 1, 'float32', 3);
        const ya = a.apply(x) as tf.Tensor;
        const yb = b.apply(x) as tf.Tensor;
        expect(ya.shape).toEqual(a.computeOutputShape([2, 7, 6, 3]));
        expectClose(`${decomposition} factored vs reconstruct`, yb, ya, TOL.backendRel);
        tf.dispose([x, ya, yb]);
        disposeLayer(a);
        disposeLayer(b);
      });
    }

    for (const forward of ['reconstruct', 'factored'] as const) {
      it(`${forward} forward + grads leak no tensors (spatial, x=[1,5,5,2], s=2, p=same)`, async () => {
        const l = new SVDConv2D({ filters: 3, kernelSize: 3, strides: 2, padding: 'same', decomposition: 'spatial', forward, seed: 3 });
        l.build([null, 5, 5, 2]);
        const x = tf.randomNormal([1, 5, 5, 2], 0, 1, 'float32', 1);
        await expectNoLeakedTensors(() => {
          const { value, grads } = tf.variableGrads(() => tf.sum(l.apply(x) as tf.Tensor) as tf.Scalar);
          tf.dispose([value, ...Object.values(grads)]);
        }, `${forward} SVDConv2D`);
        x.dispose();
        disposeLayer(l);
      });
    }
  });
});

describe('SVDConv2D gradient checks (central differences, cpu)', () => {
  for (const decomposition of ['channel', 'spatial'] as const) {
    for (const forward of ['reconstruct', 'factored'] as const) {
      it(`${decomposition}/${forward} x=[1,5,4,2] k=3 s=2 p=1 n=3 r=2: d/dU, ds, dV, dx`, async () => {
        await tf.setBackend('cpu');
        const l = new SVDConv2D({ filters: 3, kernelSize: 3, strides: 2, padding: 1, decomposition, rank: 2, forward, seed: 11 });
        l.build([null, 5, 4, 2]);
        const U0 = l.U.read().clone();
        const s0 = l.s.read().clone();
        const V0 = l.V.read().clone();
        const x0 = tf.randomNormal([1, 5, 4, 2], 0, 1, 'float32', 5);
        const f = (U: tf.Tensor, s: tf.Tensor, V: tf.Tensor, x: tf.Tensor): tf.Tensor => convWithFactors(l, U, s, V, x);
        gradCheck(f, [U0, s0, V0, x0], { label: `${decomposition}/${forward}` });
        tf.dispose([U0, s0, V0, x0]);
        disposeLayer(l);
      });
    }
  }
});

/**
 * y(U, s, V, x) computed by the layer's own forward: we temporarily swap the layer's variable reads
 * for the given tensors so tf.grads sees them as inputs.
 */
function convWithFactors(l: SVDConv2D, U: tf.Tensor, s: tf.Tensor, V: tf.Tensor, x: tf.Tensor): tf.Tensor {
  const saved = [l.U, l.s, l.V];
  const fake = (t: tf.Tensor) => ({ read: () => t, shape: t.shape }) as unknown as tf.LayerVariable;
  l.U = fake(U);
  l.s = fake(s);
  l.V = fake(V);
  try {
    return l.call(x);
  } finally {
    [l.U, l.s, l.V] = saved as [tf.LayerVariable, tf.LayerVariable, tf.LayerVariable];
  }
}

describe('SVDConv2D init, import and config', () => {
  it('init: U, V orthonormal columns and He-normal scale of the weight (channel c16 n32 k3)', () => {
    const f = svdInit('channel', { n: 32, c: 16, kh: 3, kw: 3 }, 42);
    const gram = (A: Float32Array, rows: number, r: number) => {
      let err = 0;
      for (let a = 0; a < r; a++)
        for (let b = 0; b < r; b++) {
          let d = 0;
          for (let i = 0; i < rows; i++) d += A[i * r + a]! * A[i * r + b]!;
          err = Math.max(err, Math.abs(d - (a === b ? 1 : 0)));
        }
      return err;
    };
    expect(gram(f.U, f.m, f.r)).toBeLessThan(1e-5);
    expect(gram(f.V, f.p, f.r)).toBeLessThan(1e-5);
    for (let k = 1; k < f.r; k++) expect(f.s[k]!).toBeLessThanOrEqual(f.s[k - 1]!);
    const W = matrixFromFactors(f);
    let ss = 0;
    for (const v of W) ss += v * v;
    const std = Math.sqrt(ss / W.length);
    // 4608 draws: the sample std is within a few % of √(2/144).
    expect(Math.abs(std / Math.sqrt(2 / 144) - 1)).toBeLessThan(0.05);
  });

  it('init is a pure function of the seed', () => {
    const a = svdInit('spatial', { n: 4, c: 3, kh: 3, kw: 3 }, 5);
    const b = svdInit('spatial', { n: 4, c: 3, kh: 3, kw: 3 }, 5);
    const c = svdInit('spatial', { n: 4, c: 3, kh: 3, kw: 3 }, 6);
    expect(Array.from(a.U)).toEqual(Array.from(b.U));
    expect(Array.from(a.U)).not.toEqual(Array.from(c.U));
  });

  for (const c of cases) {
    it(`svdFromWeight reproduces the reference weight [${c.weight.shape}] (${c.config.decomposition}) at full rank, both layouts`, () => {
      const cfg = c.config;
      const g = { n: cfg.out_channels, c: cfg.in_channels, kh: cfg.kernel_size[0], kw: cfg.kernel_size[1] };
      const f = svdFromWeight(c.weight.data, c.weight.shape, { layout: 'pytorch', decomposition: cfg.decomposition });
      expectClose('pytorch layout', pytorchWeightFromMatrix(matrixFromFactors(f), cfg.decomposition, g), c.weight, 1e-5);
      const wt = tf.tidy(() => refToTensor(c.weight).transpose([2, 3, 1, 0]));
      const f2 = svdFromWeight(wt, { layout: 'tfjs', decomposition: cfg.decomposition });
      wt.dispose();
      expectClose('tfjs layout', pytorchWeightFromMatrix(matrixFromFactors(f2), cfg.decomposition, g), c.weight, 1e-5);
    });
  }

  for (const decomposition of ['channel', 'spatial'] as const) {
    it(`importing a tfjs Conv2D kernel [3,3,3,4] via svdFromWeight (${decomposition}) reproduces its output, x=[2,6,5,3]`, async () => {
      await tf.setBackend('cpu');
      const conv = tf.layers.conv2d({ filters: 4, kernelSize: 3, padding: 'same', useBias: false, kernelInitializer: 'glorotNormal' });
      const x = tf.randomNormal([2, 6, 5, 3], 0, 1, 'float32', 12);
      const want = conv.apply(x) as tf.Tensor;
      const l = new SVDConv2D({ filters: 4, kernelSize: 3, padding: 1, decomposition, seed: 1 });
      l.build([null, 6, 5, 3]);
      l.setFactors(svdFromWeight(conv.getWeights()[0]!, { layout: 'tfjs', decomposition }));
      const got = l.apply(x) as tf.Tensor;
      expectClose(`${decomposition} imported conv`, got, want, 1e-5);
      tf.dispose([x, want, got]);
      disposeLayer(l);
      disposeLayer(conv);
    });
  }

  it('getConfig/fromConfig round trip keeps every argument (and the init, via the seed)', () => {
    const l = new SVDConv2D({ filters: 6, kernelSize: [3, 1], strides: [2, 1], padding: [1, 0], decomposition: 'spatial', rank: 2, forward: 'factored', seed: 9, name: 'conv_a' });
    l.build([null, 8, 8, 4]);
    const cfg = l.getConfig();
    const l2 = SVDConv2D.fromConfig(SVDConv2D, cfg) as SVDConv2D;
    expect(l2.getConfig()).toEqual(cfg);
    l2.build([null, 8, 8, 4]);
    expectClose('U after round trip', l2.getFactors().U, l.getFactors().U, 0);
    disposeLayer(l);
    disposeLayer(l2);
  });

  it('auto picks reconstruct at full rank and factored at low rank (batch 32, c64 n64 k3, 16×16)', () => {
    const base = { decomposition: 'channel' as const, n: 64, c: 64, kh: 3, kw: 3, inW: 16, outH: 16, outW: 16 };
    const full = svdConvForwardCost({ ...base, r: 64 });
    const low = svdConvForwardCost({ ...base, r: 8 });
    // Per image: merged = 256·64·576, factored = 256·(r·576 + r·64), rebuild = 64·576·r per batch.
    expect(full).toEqual({ reconstruct: 256 * 64 * 576, factored: 256 * 64 * 640, rebuild: 64 * 576 * 64 });
    expect(chooseSvdForm(full, 32)).toBe('reconstruct');
    expect(chooseSvdForm(low, 32)).toBe('factored');
    const l = new SVDConv2D({ filters: 64, kernelSize: 3, padding: 1, rank: 8, seed: 1 });
    l.build([null, 16, 16, 64]);
    expect(l.forwardFor(16, 16, 32)).toBe('factored');
    disposeLayer(l);
  });

  it('auto switches form where the MACs cross (c16 n16 k3, 32×32: factored below r = 14.4), at every batch', () => {
    // merged 1024·144·16 vs factored 1024·r·(144 + 16): equal at r = 14.4.
    const base = { decomposition: 'channel' as const, n: 16, c: 16, kh: 3, kw: 3, inW: 32, outH: 32, outW: 32 };
    expect(chooseSvdForm(svdConvForwardCost({ ...base, r: 15 }))).toBe('reconstruct');
    expect(chooseSvdForm(svdConvForwardCost({ ...base, r: 14 }))).toBe('factored');
    // At batch 1 the rebuild (16·144·r) counts too; it moves the crossing only a little.
    expect(chooseSvdForm(svdConvForwardCost({ ...base, r: 14 }), 1)).toBe('factored');
    expect(chooseSvdForm(svdConvForwardCost({ ...base, r: 16 }), 1)).toBe('reconstruct');
  });

  for (const c of cases) {
    it(`pytorchWeight() of ${c.name} equals the reference weight [${c.weight.shape}]`, () => {
      const layer = layerFor(c, 'auto');
      expectClose(`${c.name} pytorchWeight`, layer.pytorchWeight(), c.weight, 1e-6);
      disposeLayer(layer);
    });
  }

  it("padding 'same' matches tf.conv2d 'same' (x=[1,6,7,2] k=[3,4] s=2, reconstruct and factored)", async () => {
    await tf.setBackend('cpu');
    for (const decomposition of ['channel', 'spatial'] as const) {
      for (const forward of ['reconstruct', 'factored'] as const) {
        const l = new SVDConv2D({ filters: 3, kernelSize: [3, 4], strides: 2, padding: 'same', decomposition, forward, seed: 4 });
        l.build([null, 6, 7, 2]);
        const x = tf.randomNormal([1, 6, 7, 2], 0, 1, 'float32', 6);
        const got = l.apply(x) as tf.Tensor;
        const want = tf.tidy(() => tf.conv2d(x as tf.Tensor4D, l.reconstructWeight(), 2, 'same'));
        expect(got.shape).toEqual(want.shape);
        expectClose(`${decomposition}/${forward} same`, got, want, TOL.backendRel);
        tf.dispose([x, got, want]);
        disposeLayer(l);
      }
    }
  });

  it('rejects invalid args with typed errors', () => {
    expect(() => new SVDConv2D({ filters: 0, kernelSize: 3 })).toThrow(/filters/);
    expect(() => new SVDConv2D({ filters: 2, kernelSize: 3, padding: -1 })).toThrow(/padding/);
    expect(() => new SVDConv2D({ filters: 2, kernelSize: 3, decomposition: 'row' as never })).toThrow(/decomposition/);
    const l = new SVDConv2D({ filters: 2, kernelSize: 3, rank: 99 });
    expect(() => l.build([null, 4, 4, 1])).toThrow(/rank 99/);
  });

  it('a spatial input with H≠W gives the PyTorch output size (x=[1,8,10,4] k3 s2 p1 → [1,4,5,6])', () => {
    const l = new SVDConv2D({ filters: 6, kernelSize: 3, strides: 2, padding: 1, decomposition: 'spatial', seed: 2 });
    expect(l.computeOutputShape([1, 8, 10, 4])).toEqual([1, 4, 5, 6]);
  });
});

/** Frees a layer's variables (tfjs Layer.dispose refuses layers only ever called eagerly). */
function disposeLayer(l: tf.layers.Layer): void {
  for (const w of l.weights) w.dispose();
}
