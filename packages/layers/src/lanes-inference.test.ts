import { describe, it, expect } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadNative } from '@svd-train/native';
import { applyInference, setFusedInference } from './fused-inference.js';
import { lanesInference, setLanesInference } from './lanes-inference.js';
import { exportToStockLayers } from './export.js';
import { LANES_NET } from './kernels/native.js';
import { buildResNet } from './resnet.js';
import { getBuffers, getParameters, setBuffers, setParameters } from './parameter-names.js';
import { evaluate } from './train-step.js';
import { countKernelCalls, errorCodeOf, expectClose, expectNoLeakedTensors, onBackend, prunedTestModel, seededUniform } from './test-support/index.js';

// The lanes network needs the addon and AVX-512F (the addon exports lanesNet only then); elsewhere
// these are skipped visibly and inference runs per op.
const native = loadNative();
const lanesRuns = native.ok && typeof native.addon.lanesNet === 'function';

// 37 images: two full groups of 16 and a partial one.
const X_SHAPE: [number, number, number, number] = [37, 16, 16, 3];
const xData = seededUniform(X_SHAPE.reduce((a, b) => a * b, 1), 11, 2, -1);

type ModelKind = 'pruned channel' | 'pruned spatial' | 'pruned channel, all factored' | 'full rank channel' | 'full rank spatial' | 'plain';
function modelOf(kind: ModelKind): tf.LayersModel {
  switch (kind) {
    case 'pruned channel':
      return prunedTestModel();
    case 'pruned spatial':
      return prunedTestModel({ decomposition: 'spatial' });
    case 'pruned channel, all factored': {
      // The pruned ranks with every layer factored, the stem's 3-channel input and the fc included.
      const pruned = prunedTestModel();
      const ranks = Object.fromEntries(getParameters(pruned).filter((p) => p.name.endsWith('.s')).map((p) => [p.name.slice(0, -2), p.data.length]));
      const m = buildResNet({ depth: 20, svd: true, ranks, forward: 'factored', seed: 5, inputShape: [16, 16, 3] });
      setParameters(m, getParameters(pruned));
      pruned.dispose();
      return m;
    }
    case 'full rank channel':
      return buildResNet({ depth: 20, svd: true, seed: 5, inputShape: [16, 16, 3] });
    case 'full rank spatial':
      return buildResNet({ depth: 20, svd: true, decomposition: 'spatial', seed: 5, inputShape: [16, 16, 3] });
    case 'plain':
      // tfjs Conv2D layers, with ZeroPadding2D before the stride-2 ones, and a Dense.
      return buildResNet({ depth: 20, svd: false, seed: 5, inputShape: [16, 16, 3] });
  }
}

describe.skipIf(!lanesRuns)('lanes network (a whole model\'s inference in one native call)', () => {
  const kinds: ModelKind[] = ['pruned channel', 'pruned spatial', 'pruned channel, all factored', 'full rank channel', 'full rank spatial', 'plain'];
  for (const kind of kinds) {
    it(`gives model.apply's eval-mode output in one call (${kind}; 37 images, so a partial group of 16)`, async () => {
      const run = (backend: 'cpu' | 'native') => () => {
        const model = modelOf(kind);
        const x = tf.tensor4d(xData, X_SHAPE);
        try {
          const ref = tf.tidy(() => model.apply(x, { training: false }) as tf.Tensor);
          const want = ref.dataSync().slice() as Float32Array;
          ref.dispose();
          if (backend === 'cpu') return { want, got: null, calls: {} };
          const { result, calls } = countKernelCalls([LANES_NET, 'Conv2D'], () => lanesInference(model, x));
          const got = result ? (result.dataSync().slice() as Float32Array) : null;
          result?.dispose();
          return { want, got, calls };
        } finally {
          x.dispose();
          model.dispose();
        }
      };
      const cpu = await onBackend('cpu', run('cpu'));
      const got = await onBackend('native', run('native'));
      expect(got.got, 'the lanes network takes the model').not.toBeNull();
      // One call, and no per-op conv beside it (the weights are built by small ops only).
      expect(got.calls).toEqual({ [LANES_NET]: 1, Conv2D: 0 });
      expect(got.got!.every(Number.isFinite), 'finite logits').toBe(true);
      expectClose(`${kind}: lanes vs model.apply (native)`, got.got!, got.want, 1e-5);
      expectClose(`${kind}: lanes (native) vs model.apply (cpu)`, got.got!, cpu.want, 1e-4);
    });
  }

  it('gives model.apply\'s output on 32×32 CIFAR-size inputs, where buffers are reused differently (pruned channel)', async () => {
    await onBackend('native', () => {
      const small = prunedTestModel();
      const ranks = Object.fromEntries(getParameters(small).filter((p) => p.name.endsWith('.s')).map((p) => [p.name.slice(0, -2), p.data.length]));
      const model = buildResNet({ depth: 20, svd: true, ranks, seed: 5 });
      setParameters(model, getParameters(small));
      setBuffers(model, getBuffers(small));
      small.dispose();
      try {
        tf.tidy(() => {
          const x = tf.tensor4d(seededUniform(19 * 32 * 32 * 3, 12, 2, -1), [19, 32, 32, 3]);
          const got = lanesInference(model, x);
          expect(got).not.toBeNull();
          expectClose('32×32', got!, model.apply(x, { training: false }) as tf.Tensor, 1e-5);
        });
      } finally {
        model.dispose();
      }
    });
  });

  it('runs a block\'s 1×1 conv and the conv after it row by row through a ring (where nothing else reads the 1×1 output): bit for bit what it gives with the pairs off', async () => {
    const addon = native.ok ? native.addon : undefined;
    if (!addon?.setLanesPairs) throw new Error('this addon has no setLanesPairs');
    const out = await onBackend('native', () => {
      const results: { logits: Float32Array; pairs: number }[] = [];
      for (const kind of ['pruned channel', 'pruned channel, all factored', 'plain'] as ModelKind[]) {
        const model = modelOf(kind);
        const x = tf.tensor4d(xData, X_SHAPE);
        try {
          for (const on of [1, 0] as const) {
            addon.setLanesPairs!([on]);
            const y = lanesInference(model, x)!;
            results.push({ logits: y.dataSync().slice() as Float32Array, pairs: Number(addon.implementations()['lanesNet pairs']) });
            y.dispose();
          }
        } finally {
          addon.setLanesPairs!([1]);
          x.dispose();
          model.dispose();
        }
      }
      return results;
    });
    const [prunedOn, prunedOff, factoredOn, factoredOff, plainOn, plainOff] = out;
    // The pruned model's blocks whose first layer is factored end it in a 1×1 conv (with its batch
    // norm and ReLU) that only the block's second conv reads; the plain ResNet has none.
    expect(prunedOn.pairs, 'pairs in the pruned model').toBeGreaterThan(2);
    // With every layer factored: one per block (the downsampling blocks' second conv moved up past
    // their shortcut convs, so that it follows its block's first layer), and the fc's two halves.
    expect(factoredOn.pairs, 'pairs with every layer factored').toBe(10);
    expect(plainOn.pairs, 'pairs in the plain ResNet').toBe(0);
    for (const off of [prunedOff, factoredOff, plainOff]) expect(off.pairs, 'pairs with them off').toBe(0);
    expect(Array.from(prunedOn.logits)).toEqual(Array.from(prunedOff.logits));
    expect(Array.from(factoredOn.logits)).toEqual(Array.from(factoredOff.logits));
    expect(Array.from(plainOn.logits)).toEqual(Array.from(plainOff.logits));
  });

  it('gives the same output, bit for bit, on two threads (a group of 16 images each) as on one', async () => {
    await onBackend('native', () => {
      const model = prunedTestModel();
      try {
        tf.tidy(() => {
          const x = tf.tensor4d(xData, X_SHAPE);
          const one = lanesInference(model, x)!.dataSync().slice();
          if (native.ok) native.addon.setThreads([2]);
          try {
            expect(Array.from(lanesInference(model, x)!.dataSync())).toEqual(Array.from(one));
          } finally {
            if (native.ok) native.addon.setThreads([1]);
          }
        });
      } finally {
        model.dispose();
      }
    });
  });

  it('applyInference and evaluate take it, give model.apply\'s results and leak nothing; switched off, inference runs per op', async () => {
    await onBackend('native', async () => {
      const model = prunedTestModel();
      try {
        const n = X_SHAPE[0];
        const y = Int32Array.from({ length: n }, (_, i) => i % 10);
        const want = tf.tidy(() => {
          const logits = model.apply(tf.tensor4d(xData, X_SHAPE), { training: false }) as tf.Tensor;
          return tf.sum(tf.equal(tf.argMax(logits, 1), tf.tensor1d(y, 'int32')).asType('int32')).dataSync()[0]!;
        });
        const lanes = countKernelCalls([LANES_NET], () => expectNoLeakedTensors(() => evaluate(model, xData, y, 16), 'evaluate'));
        expect((await lanes.result).correct).toBe(want);
        // 37 images in slices of 16: three calls.
        expect(lanes.calls[LANES_NET]).toBe(3);
        await expectNoLeakedTensors(() => tf.tidy(() => void applyInference(model, tf.tensor4d(xData, X_SHAPE)).dataSync()), 'applyInference');
        for (const off of [() => setLanesInference(false), () => setFusedInference(false)]) {
          off();
          try {
            const perOp = countKernelCalls([LANES_NET], () => evaluate(model, xData, y, 16));
            expect(perOp.calls[LANES_NET]).toBe(0);
            expect(perOp.result.correct).toBe(want);
          } finally {
            setLanesInference(true);
            setFusedInference(true);
          }
        }
      } finally {
        model.dispose();
      }
    });
  });

  it('uses the weights as they are at each call (a change of parameters or running statistics between calls is not missed)', async () => {
    await onBackend('native', () => {
      const model = prunedTestModel();
      try {
        tf.tidy(() => {
          const x = tf.tensor4d(xData, X_SHAPE);
          const before = lanesInference(model, x)!.dataSync().slice();
          setParameters(model, getParameters(model).map((p) => (p.name.endsWith('.s') || p.name.endsWith('.weight') ? { ...p, data: p.data.map((v) => v * 1.5) } : p)));
          const after = lanesInference(model, x)!;
          expectClose('after the change', after, model.apply(x, { training: false }) as tf.Tensor, 1e-5);
          expect(Array.from(after.dataSync()).some((v, i) => Math.abs(v - before[i]!) > 1e-3), 'the output changed').toBe(true);
          // Batch norm's running statistics alone (what an evaluation after training steps sees).
          setBuffers(model, getBuffers(model).map((b) => (b.name.endsWith('running_mean') ? { ...b, data: b.data.map((v) => v + 0.25) } : b)));
          expectClose('after the statistics changed', lanesInference(model, x)!, model.apply(x, { training: false }) as tf.Tensor, 1e-5);
        });
      } finally {
        model.dispose();
      }
    });
  });

  it('declines what it does not take (then inference runs per op, with the same results)', async () => {
    await onBackend('native', () => {
      // Batch norm, ReLU and add as separate layers; a stock export (tfjs BatchNormalization); an
      // input of another size than the model's; a non-4D input.
      const separate = prunedTestModel({ fuseBatchNorm: false });
      const pruned = prunedTestModel();
      const stock = exportToStockLayers(pruned, { foldBatchNorm: false });
      try {
        tf.tidy(() => {
          const x = tf.tensor4d(xData, X_SHAPE);
          for (const [label, m] of [['separate layers', separate], ['stock export', stock]] as const) {
            expect(lanesInference(m, x), label).toBeNull();
            expectClose(label, applyInference(m, x), m.apply(x, { training: false }) as tf.Tensor, 1e-5);
          }
          expect(lanesInference(pruned, tf.zeros([2, 8, 8, 3]))).toBeNull();
          expect(lanesInference(pruned, tf.zeros([2, 16, 16]))).toBeNull();
          expect(lanesInference(pruned, tf.zeros([2, 16, 16, 3], 'int32'))).toBeNull();
        });
      } finally {
        separate.dispose();
        pruned.dispose();
        stock.dispose();
      }
    });
  });
});

describe.skipIf(!lanesRuns)('lanesNet (the addon entry point): bad arguments are refused, never run', () => {
  it('checks every buffer, geometry and weight before it runs', () => {
    if (!native.ok || !native.addon.lanesNet) return;
    const lanesNet = native.addon.lanesNet.bind(native.addon);
    const f = (n: number) => new Float32Array(n);
    const code = errorCodeOf;
    // One 3×3 conv 4×4×2 → 4×4×3 (pad 1), then a pool: buffers [32, 48, 3] floats per image.
    const conv = [0, 0, 1, 0, 4, 4, 2, 3, 3, 3, 4, 4, 1, 1, 1, 1, 1, 0, 2, 3];
    const pool = [1, 1, 2, 0, 16, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
    const w = () => [f(54), f(3), f(3)];
    const ok = (n: number) => lanesNet(f(n * 32), f(n * 3), [n, 0, 2, 32, 3], [32, 48, 3], [...conv, ...pool], w());
    expect(code(() => ok(3))).toBe('no error');
    expect(code(() => ok(0))).toBe('no error');
    const with_ = (steps: number[], weights = w(), sizes = [32, 48, 3]) => code(() => lanesNet(f(64), f(6), [2, 0, 2, 32, 3], sizes, steps, weights));
    const set = (base: number[], i: number, v: number) => base.map((x, j) => (j === i ? v : x));
    expect(with_([...set(conv, 2, 0), ...pool])).toMatch(/^NATIVE_BAD_ARGUMENT: lanesNet: step 0: a conv cannot write the buffer it reads/);
    expect(with_([...set(conv, 2, 7), ...pool])).toMatch(/step 0 buffer 7 is out of range \(there are 3\)/);
    // The shortcut may be the output buffer (overwritten in place, each value after it is read).
    expect(with_([...set(conv, 3, 2), ...pool])).toBe('no error');
    {
      // conv A: x → buffer 1 (the shortcut); conv B: x → 4×4×3 + shortcut, into buffer 2 or in place into 1.
      const a = [0, 0, 1, 0, 4, 4, 2, 3, 3, 3, 4, 4, 1, 1, 1, 1, 0, 0, 0, 0];
      const b = (out: number) => [0, 0, out, 2, 4, 4, 2, 3, 1, 1, 4, 4, 1, 1, 0, 0, 1, 1, 0, 0];
      const pl = (src: number) => [1, src, 3, 0, 16, 3, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0];
      const wts = () => [seededUniform(54, 5), seededUniform(6, 6)];
      const xs = seededUniform(2 * 32, 7, 1);
      const [ySep, yIn] = [f(6), f(6)];
      lanesNet(xs, ySep, [2, 0, 3, 32, 3], [32, 48, 48, 3], [...a, ...b(2), ...pl(2)], wts());
      lanesNet(xs, yIn, [2, 0, 3, 32, 3], [32, 48, 48, 3], [...a, ...b(1), ...pl(1)], wts());
      expect(Array.from(yIn)).toEqual(Array.from(ySep));
      expect(ySep.some((v) => v !== 0)).toBe(true);
    }
    expect(with_([...set(conv, 7, 4), ...pool])).toMatch(/step 0's output needs 64 floats per image; buffer 1 holds 48/);
    expect(with_([...set(conv, 4, 5), ...pool])).toMatch(/step 0's input needs 40 floats per image; buffer 0 holds 32/);
    expect(with_([...set(conv, 12, 0), ...pool])).toMatch(/conv dims .* must be >= 1/);
    expect(with_([...set(conv, 16, 2), ...pool])).toMatch(/relu must be 0 or 1/);
    expect(with_([...set(conv, 17, 5), ...pool])).toMatch(/step 0's filter: weights index 5 is out of range \(there are 3\)/);
    expect(with_([...conv, ...pool], [f(53), f(3), f(3)])).toMatch(/step 0's filter: weights\[0\] has 53 elements; expected 54/);
    expect(with_([...conv, ...pool], [f(54), f(2), f(3)])).toMatch(/step 0's scale: weights\[1\] has 2 elements; expected 3/);
    expect(with_([...conv, ...set(pool, 0, 2)])).toMatch(/step 1: kind 2; expected 0 \(conv\) or 1 \(pool\)/);
    expect(with_([...conv, ...set(pool, 4, 17)])).toMatch(/step 1's input needs 51 floats per image; buffer 1 holds 48/);
    expect(with_([...conv, ...pool.slice(0, 19)])).toMatch(/steps has 39 entries; expected a multiple of 20/);
    expect(with_([...conv, ...pool], w(), [32, 0, 3])).toMatch(/sizes\[1\] is 0/);
    expect(code(() => lanesNet(f(64), f(6), [2, 0, 0, 32, 3], [32, 48, 3], [...conv, ...pool], w()))).toMatch(/the input and output buffers are the same/);
    expect(code(() => lanesNet(f(64), f(6), [2, 0, 2, 33, 3], [32, 48, 3], [...conv, ...pool], w()))).toMatch(/the input needs 33 floats per image; buffer 0 holds 32/);
    expect(code(() => lanesNet(f(63), f(6), [2, 0, 2, 32, 3], [32, 48, 3], [...conv, ...pool], w()))).toMatch(/x has 63 elements; expected 64/);
    expect(code(() => lanesNet(f(64), f(6), [2, 0, 2, 32, 3], [32, 48, 3], [...conv, ...pool], [f(54), new Int32Array(3) as unknown as Float32Array, f(3)]))).toMatch(/weights\[1\] must be a Float32Array/);
    // A buffer too large to allocate (4 TiB for 16 images): an error from inside the threads' loop,
    // not a crash of the process.
    expect(code(() => lanesNet(f(1), f(1), [1, 0, 1, 1, 1], [2 ** 36, 1], [], []))).toMatch(/^NATIVE_DNNL_ERROR: lanesNet: could not allocate its buffers/);
    expect(code(() => lanesNet(f(1), f(1), [1, 0, 1, 1, 1], [1, 1], [], []))).toBe('no error');
    // Sizes whose products would wrap: refused before anything is allocated or read.
    expect(code(() => lanesNet(f(0), f(0), [2 ** 30, 0, 2, 2 ** 30, 3], [2 ** 30, 48, 3], [...conv, ...pool], w()))).toMatch(/too large/);
  });
});
