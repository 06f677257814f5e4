import { describe, it, expect, afterEach } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadNative } from '@svd-train/native';
import { nativeStepForms, nativeTrainingStepApplies, setHugePageBuffers, setNativeTrainingStep, setRankSpaceBatchNormUpTo, trainingStepPath } from './native-step.js';
import { buildResNet } from './resnet.js';
import { SVDConv2D } from './svd-conv2d.js';
import { getBuffers, setBuffers } from './parameter-names.js';
import { computeGradients, type DistillTarget, type GradientResult } from './train-step.js';
import { expectClose, expectNoLeakedTensors, onBackend, prunedTestModel, seededUniform, testTrainingBatch } from './test-support/index.js';

const native = loadNative();

/** A ResNet-20 on 16×16 images with half its layers pruned (factored) and half at full rank (merged), the shortcuts among both. */
function mixedModel(): tf.LayersModel {
  const ranks: Record<string, number> = { 'stem.0': 4, 'layers.0.conv2': 3, 'layers.2.conv1': 5, 'layers.3.conv1': 6, 'layers.3.shortcut.0': 7, 'layers.5.conv2': 9, 'layers.7.conv1': 12, 'layers.8.conv2': 20, fc: 6 };
  return buildResNet({ depth: 20, svd: true, decomposition: 'channel', seed: 5, inputShape: [16, 16, 3], ranks });
}

/** The same step on the tape and natively, from the same parameters and running statistics. */
function bothWays(model: tf.LayersModel, batch: number, distill?: DistillTarget) {
  const { x, y, reg } = testTrainingBatch(batch, 13, 3, 0.05);
  const initial = getBuffers(model);
  setNativeTrainingStep(false);
  const tape = computeGradients(model, x, y, reg, distill);
  setBuffers(model, initial);
  setNativeTrainingStep(true);
  const applies = nativeTrainingStepApplies(model, batch);
  // A first native step, so that the compared one runs on the program's reused buffers (the pool's arrays are not zeroed).
  computeGradients(model, x, y, reg, distill);
  setBuffers(model, initial);
  const step = computeGradients(model, x, y, reg, distill);
  return { tape, step, applies, initial };
}

/** `bothWays` on the native engine for a fresh model (disposed after), with each SVD conv's form at 8×8 and this batch. */
function onNative(make: () => tf.LayersModel, batch: number) {
  return onBackend('native', () => {
    const model = make();
    try {
      const forms = model.layers.filter((l) => l instanceof SVDConv2D).map((l) => (l as SVDConv2D).forwardFor(8, 8, batch));
      return { ...bothWays(model, batch), forms };
    } finally {
      model.dispose();
    }
  });
}

/** f of a fresh pruned test model on `backend`, the model disposed after. */
function withPrunedModel<T>(backend: 'native' | 'wasm', f: (m: tf.LayersModel) => T): Promise<T> {
  return onBackend(backend, () => {
    const model = prunedTestModel();
    try {
      return f(model);
    } finally {
      model.dispose();
    }
  });
}

function expectSameStep(tape: GradientResult, step: GradientResult, initial: { data: Float32Array }[]): void {
  for (const k of ['ce', 'orth', 'sparsity', 'distill', 'data', 'total'] as const) expectClose(k, [step[k]], [tape[k]], 1e-5);
  expect(step.correct).toBe(tape.correct);
  expect(step.n).toBe(tape.n);
  expect(step.grads.map((g) => g.name)).toEqual(tape.grads.map((g) => g.name));
  for (let i = 0; i < tape.grads.length; i++) {
    expect(step.grads[i].shape).toEqual(tape.grads[i].shape);
    expectClose(`gradient of ${tape.grads[i].name}`, step.grads[i].data, tape.grads[i].data, 2e-4);
  }
  for (let i = 0; i < tape.buffers.length; i++) {
    expectClose(`buffer ${tape.buffers[i].name}`, step.buffers[i].data, tape.buffers[i].data, 1e-4);
    // The step moved them (a step that left the running statistics alone would fail here).
    expect(step.buffers[i].data.some((v, k) => Math.abs(v - initial[i].data[k]) > 1e-6), `${tape.buffers[i].name} updated`).toBe(true);
  }
}

describe.skipIf(!native.ok)('the native training step (the whole step without the tape, native engine)', () => {
  afterEach(() => {
    setNativeTrainingStep(true);
    setRankSpaceBatchNormUpTo();
    setHugePageBuffers(true);
  });

  it('carves its buffers from huge-page slabs (the addon\'s hugeFloat32), with the same results as on plain ones', async () => {
    // Batch 64 of 16×16 images: stage 1's activations are 64·16·16·16 floats, 1 MiB.
    const addon = native.ok ? native.addon : null;
    const stock = addon?.hugeFloat32;
    expect(stock, 'hugeFloat32 in this build of the addon').toBeDefined();
    let huge = 0;
    if (addon && stock) addon.hugeFloat32 = (...args) => (huge++, stock(...args));
    try {
      const run = (on: boolean) =>
        onBackend('native', () => {
          setHugePageBuffers(on);
          const model = mixedModel();
          try {
            const before = huge;
            const { x, y, reg } = testTrainingBatch(64, 17, 3, 0.05);
            const initial = getBuffers(model);
            computeGradients(model, x, y, reg);
            setBuffers(model, initial);
            return { step: computeGradients(model, x, y, reg), calls: huge - before };
          } finally {
            model.dispose();
          }
        });
      const on = await run(true);
      const off = await run(false);
      expect(on.calls, 'slabs from hugeFloat32').toBeGreaterThan(1);
      expect(off.calls, 'none with huge pages off').toBe(0);
      expect(on.step.total).toBe(off.step.total);
      for (let i = 0; i < on.step.grads.length; i++) expect(on.step.grads[i].data, on.step.grads[i].name).toEqual(off.step.grads[i].data);
    } finally {
      if (addon && stock) addon.hugeFloat32 = stock;
    }
  });

  it('gives the tape\'s losses, gradients and running statistics for a pruned model (factored and merged layers)', async () => {
    // The two downsampling shortcuts (one factored, one merged) add their input gradients in place,
    // after the 3×3 convs beside them: once each in each of bothWays' two native steps.
    const addon = native.ok ? native.addon : null;
    const stock = addon?.conv2dBackpropInputAdd;
    let adds = 0;
    if (addon && stock) addon.conv2dBackpropInputAdd = (...args) => (adds++, stock(...args));
    let got: Awaited<ReturnType<typeof onNative>>;
    try {
      got = await onNative(mixedModel, 6);
    } finally {
      if (addon && stock) addon.conv2dBackpropInputAdd = stock;
    }
    expect(adds, 'in-place shortcut input gradients').toBe(4);
    expect(got.applies).toBe(true);
    expect(got.forms.filter((f) => f === 'factored').length, 'factored layers').toBeGreaterThan(4);
    expect(got.forms.filter((f) => f === 'reconstruct').length, 'merged layers').toBeGreaterThan(8);
    expectSameStep(got.tape, got.step, got.initial);
  });

  it('gives the tape\'s results with batch norm of the 1×1 conv\'s output for factored layers (expanded), at every rank and only above 16', async () => {
    // mixedModel's pruned ranks: 4, 3, 5, 6, 7, 9, 12 and 20 (some full-rank layers at 4×4 run factored too).
    for (const upTo of [0, 16, Infinity]) {
      setRankSpaceBatchNormUpTo(upTo);
      const got = await onBackend('native', () => {
        const model = mixedModel();
        try {
          return { ...bothWays(model, 6), forms: nativeStepForms(model, 6) };
        } finally {
          model.dispose();
        }
      });
      expect(got.applies, `up to ${upTo}`).toBe(true);
      const channelFactored = got.forms!.filter((f) => f.form === 'factored' || f.form === 'expanded');
      expect(channelFactored.length, 'factored layers').toBeGreaterThan(8);
      for (const f of channelFactored) expect(f.form, `rank ${f.rank} up to ${upTo}`).toBe(f.rank! > upTo ? 'expanded' : 'factored');
      if (upTo === 16) expect(channelFactored.some((f) => f.rank! <= 16) && channelFactored.some((f) => f.rank! > 16), 'both sides of 16').toBe(true);
      expectSameStep(got.tape, got.step, got.initial);
    }
  });

  it('gives the tape\'s results at full rank (every layer merged), channel and spatial', async () => {
    // Batch 24: below it some full-rank spatial layers at 4×4 run factored (the merged filter's rebuild dominates).
    for (const decomposition of ['channel', 'spatial'] as const) {
      const got = await onNative(() => buildResNet({ depth: 20, svd: true, decomposition, seed: 3, inputShape: [16, 16, 3] }), 24);
      expect(got.applies, decomposition).toBe(true);
      expectSameStep(got.tape, got.step, got.initial);
    }
  });

  it('gives the tape\'s results for the plain ResNet (tfjs Conv2D and Dense, the strided convs\' zero padding folded in)', async () => {
    const got = await onNative(() => buildResNet({ depth: 20, svd: false, seed: 3, inputShape: [16, 16, 3] }), 6);
    expect(got.applies).toBe(true);
    expectSameStep(got.tape, got.step, got.initial);
  });

  it('gives the tape\'s results for a spatially factored pruned model (the kh×1 and 1×kw convs, then batch norm)', async () => {
    const got = await onNative(() => prunedTestModel({ decomposition: 'spatial' }), 6);
    expect(got.applies).toBe(true);
    expect(got.forms.filter((f) => f === 'factored').length, 'factored layers').toBeGreaterThan(10);
    expectSameStep(got.tape, got.step, got.initial);
  });

  it('gives the tape\'s results with a teacher (distillation), and again at another batch size', async () => {
    const got = await onBackend('native', () => {
      const model = prunedTestModel();
      try {
        const a = bothWays(model, 5, { logits: seededUniform(50, 4, 6, -3), alpha: 0.3, temperature: 4 });
        const b = bothWays(model, 3);
        return { a, b };
      } finally {
        model.dispose();
      }
    });
    expect(got.a.applies && got.b.applies).toBe(true);
    expect(got.a.step.distill).toBeGreaterThan(0);
    expectSameStep(got.a.tape, got.a.step, got.a.initial);
    expectSameStep(got.b.tape, got.b.step, got.b.initial);
  });

  it('leaves no tensors behind, and runs none of tfjs\' kernels for the layers', async () => {
    await onBackend('native', async () => {
      const model = prunedTestModel();
      const { x, y, reg } = testTrainingBatch(4, 3, 7, 0.01);
      try {
        computeGradients(model, x, y, reg);
        const calls = tf.profile(() => void computeGradients(model, x, y, reg));
        const r = await expectNoLeakedTensors(() => computeGradients(model, x, y, reg), 'native step');
        expect(Number.isFinite(r.total)).toBe(true);
        // What remains on tfjs: reading the factors for the regularizer and writing the running statistics.
        const kernels = (await calls).kernelNames;
        expect(kernels.filter((k) => /Conv|BatchNorm|RankBn|MatMul/.test(k))).toEqual([]);
      } finally {
        model.dispose();
      }
    });
  });

  it('leaves a model it does not take to the tape: batch norm, ReLU and the shortcut\'s add as layers of their own, and off the native engine', async () => {
    const separate = await onBackend('native', () => {
      const model = prunedTestModel({ fuseBatchNorm: false });
      const { x, y, reg } = testTrainingBatch(4, 3, 7, 0.01);
      try {
        return { applies: nativeTrainingStepApplies(model, 4), total: computeGradients(model, x, y, reg).total };
      } finally {
        model.dispose();
      }
    });
    expect(separate.applies).toBe(false);
    expect(Number.isFinite(separate.total)).toBe(true);
    expect(await withPrunedModel('wasm', (m) => nativeTrainingStepApplies(m, 4))).toBe(false);
  });

  it('says which path a model\'s steps take and why (the worker logs it)', async () => {
    const native = await onBackend('native', () => {
      const ok = prunedTestModel();
      const separate = prunedTestModel({ fuseBatchNorm: false });
      try {
        const on = trainingStepPath(ok, 4);
        setNativeTrainingStep(false);
        const off = trainingStepPath(ok, 4);
        setNativeTrainingStep(true);
        return { on, off, separate: trainingStepPath(separate, 4) };
      } finally {
        ok.dispose();
        separate.dispose();
      }
    });
    expect(native.on).toMatch(/^native: \d+ ops as addon calls, without tfjs' tape$/);
    expect(native.off).toBe("on tfjs' tape (the native training step is switched off)");
    expect(native.separate).toMatch(/^on tfjs' tape \(the native training step does not take layers .*Add/);
    expect(await withPrunedModel('wasm', (m) => trainingStepPath(m, 4))).toBe("on tfjs' tape (the native training step needs the native engine)");
  });

  it('refuses a label that is not one of the model\'s classes, naming it (on either path)', async () => {
    await onBackend('native', () => {
      const model = prunedTestModel();
      const { x, reg } = testTrainingBatch(2, 3, 7, 0.01);
      try {
        for (const on of [true, false]) {
          setNativeTrainingStep(on);
          expect(() => computeGradients(model, x, Int32Array.from([3, 10]), reg)).toThrow(/label 10 at sample 1; expected a class in \[0, 10\)/);
          expect(() => computeGradients(model, x, Int32Array.from([-1, 0]), reg)).toThrow(/label -1 at sample 0/);
        }
      } finally {
        model.dispose();
      }
    });
  });
});
