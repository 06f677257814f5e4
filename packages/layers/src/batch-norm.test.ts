import { describe, it, expect } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { batchNormInfer, batchNormTrain, SVDBatchNorm } from './batch-norm.js';
import { TOL, expectClose, gradCheck, expectNoLeakedTensors, forEachBackend, TEST_ENGINES, seededUniform } from './test-support/index.js';

/** Float64 hand computation: per-channel mean, biased var, y, over a [M, C] row-major view. */
function handBN(x: Float32Array, c: number, gamma: Float32Array, beta: Float32Array, eps: number) {
  const m = x.length / c;
  const mean = new Float64Array(c);
  const v = new Float64Array(c);
  for (let i = 0; i < m; i++) for (let k = 0; k < c; k++) mean[k]! += x[i * c + k]! / m;
  for (let i = 0; i < m; i++) for (let k = 0; k < c; k++) v[k]! += (x[i * c + k]! - mean[k]!) ** 2 / m;
  const y = new Float64Array(x.length);
  for (let i = 0; i < m; i++)
    for (let k = 0; k < c; k++) y[i * c + k] = ((x[i * c + k]! - mean[k]!) / Math.sqrt(v[k]! + eps)) * gamma[k]! + beta[k]!;
  return { mean, v, y, m };
}

/** The stock formulation (tf.moments + tf.batchNorm), differentiated by tfjs' own gradients. */
function stockBN(x: tf.Tensor4D, g: tf.Tensor1D, b: tf.Tensor1D, eps: number): tf.Tensor {
  const { mean, variance } = tf.moments(x, [0, 1, 2]);
  return tf.batchNorm(x, mean, variance, b, g, eps);
}

const X_SHAPE: [number, number, number, number] = [3, 4, 5, 6];
const C = 6;

forEachBackend(TEST_ENGINES, (backend) => {
  describe('batchNormTrain', () => {
    it(`x=[${X_SHAPE}] forward matches a float64 hand computation`, () => {
      const xd = seededUniform(360, 1, 2, 0.5);
      const gd = seededUniform(C, 2, 0.5, 1);
      const bd = seededUniform(C, 3, 0.3);
      const hand = handBN(xd, C, gd, bd, 1e-5);
      const x = tf.tensor4d(xd, X_SHAPE);
      const { y, mean, variance } = batchNormTrain(x, tf.tensor1d(gd), tf.tensor1d(bd), 1e-5);
      expectClose('y', y, hand.y, TOL.tensorRel);
      expectClose('mean', mean, hand.mean, TOL.tensorRel);
      expectClose('variance (biased)', variance, hand.v, TOL.tensorRel);
      expect(y.shape).toEqual(X_SHAPE);
      tf.dispose([x, y, mean, variance]);
    });

    it(`x=[${X_SHAPE}] forward and gradients match the stock tf.batchNorm formulation`, () => {
      const x = tf.tensor4d(seededUniform(360, 4, 1.5, -0.2), X_SHAPE);
      const g = tf.tensor1d(seededUniform(C, 5, 0.5, 1));
      const b = tf.tensor1d(seededUniform(C, 6, 0.3));
      const dy = tf.tensor4d(seededUniform(360, 7), X_SHAPE);
      const loss = (fn: typeof stockBN) => (a: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) =>
        tf.sum(tf.mul(fn(a as tf.Tensor4D, gg as tf.Tensor1D, bb as tf.Tensor1D, 1e-5), dy));
      const ours = tf.grads(loss((a, gg, bb, e) => batchNormTrain(a, gg, bb, e).y))([x, g, b]);
      const stock = tf.grads(loss(stockBN))([x, g, b]);
      ['dx', 'dgamma', 'dbeta'].forEach((n, i) => expectClose(`${backend} ${n}`, ours[i]!, stock[i]!, TOL.tensorRel));
      tf.dispose([x, g, b, dy, ...ours, ...stock]);
    });

    // The fusions: a residual added after the normalisation, then a ReLU, against the same ops
    // composed from the stock formulation (tfjs' own gradients for add and relu).
    for (const [relu, residual] of [[true, true], [true, false], [false, true]] as const) {
      it(`x=[${X_SHAPE}] relu ${relu}, residual ${residual}: forward and every gradient match stock ops composed`, () => {
        const x = tf.tensor4d(seededUniform(360, 11, 1.5, -0.2), X_SHAPE);
        const g = tf.tensor1d(seededUniform(C, 12, 0.5, 1));
        const b = tf.tensor1d(seededUniform(C, 13, 0.3));
        const r = tf.tensor4d(seededUniform(360, 14, 1.2), X_SHAPE);
        const dy = tf.tensor4d(seededUniform(360, 15), X_SHAPE);
        const stock = (a: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor, rr: tf.Tensor) => {
          const y = stockBN(a as tf.Tensor4D, gg as tf.Tensor1D, bb as tf.Tensor1D, 1e-5);
          const sum = residual ? tf.add(y, rr) : y;
          return relu ? tf.relu(sum) : sum;
        };
        const ours = (a: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor, rr: tf.Tensor) =>
          batchNormTrain(a, gg, bb, 1e-5, { relu, residual: residual ? rr : undefined }).y;
        expectClose(`${backend} y`, ours(x, g, b, r), stock(x, g, b, r), TOL.tensorRel);
        // Without a residual, r is no input of the op (tfjs refuses a gradient with respect to it).
        const loss = (fn: typeof stock) => (a: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor, rr?: tf.Tensor) => tf.sum(tf.mul(fn(a, gg, bb, rr ?? r), dy));
        const wrt = residual ? [x, g, b, r] : [x, g, b];
        const got = tf.grads(loss(ours))(wrt);
        const want = tf.grads(loss(stock))(wrt);
        expect(got.length).toBe(wrt.length);
        ['dx', 'dgamma', 'dbeta', 'dresidual'].slice(0, wrt.length).forEach((n, i) => expectClose(`${backend} ${n}`, got[i]!, want[i]!, TOL.tensorRel));
        // Eval mode, with fixed statistics: the one-pass affine (native) or the ops, and its gradient.
        const [mean, variance] = [tf.tensor1d(seededUniform(C, 16, 0.5)), tf.tensor1d(seededUniform(C, 17, 0.4, 0.8))];
        const evalOurs = (a: tf.Tensor, rr: tf.Tensor) => batchNormInfer(a, mean, variance, g, b, 1e-5, { relu, residual: residual ? rr : undefined });
        const evalStock = (a: tf.Tensor, rr: tf.Tensor) => {
          const y = tf.batchNorm(a, mean, variance, b, g, 1e-5);
          const sum = residual ? tf.add(y, rr) : y;
          return relu ? tf.relu(sum) : sum;
        };
        expectClose(`${backend} eval y`, evalOurs(x, r), evalStock(x, r), TOL.tensorRel);
        const evalLoss = (fn: typeof evalStock) => (a: tf.Tensor, rr?: tf.Tensor) => tf.sum(tf.mul(fn(a, rr ?? r), dy));
        const ewrt = residual ? [x, r] : [x];
        const ge = tf.grads(evalLoss(evalOurs))(ewrt);
        const we = tf.grads(evalLoss(evalStock))(ewrt);
        ['eval dx', 'eval dresidual'].slice(0, ewrt.length).forEach((n, i) => expectClose(`${backend} ${n}`, ge[i]!, we[i]!, TOL.tensorRel));
        tf.dispose([x, g, b, r, dy, mean, variance, ...got, ...want, ...ge, ...we]);
      });
    }

    it('x=[2,3,2,4] relu + residual: gradient check by central differences (x, gamma, beta, residual)', () => {
      const x = tf.tensor4d(seededUniform(48, 21, 1.5), [2, 3, 2, 4]);
      const g = tf.tensor1d([1.2, 0.7, -0.9, 1.1]);
      const b = tf.tensor1d([0.1, -0.2, 0.3, 0]);
      const r = tf.tensor4d(seededUniform(48, 22, 1.5), [2, 3, 2, 4]);
      gradCheck((a, gg, bb, rr) => batchNormTrain(a!, gg!, bb!, 1e-5, { relu: true, residual: rr }).y, [x, g, b, r], { label: `${backend} bn+res+relu` });
      tf.dispose([x, g, b, r]);
    });

    it('a residual of another shape is refused, naming both shapes', () => {
      const x = tf.ones([2, 3, 3, 4]);
      expect(() => batchNormTrain(x, tf.ones([4]), tf.zeros([4]), 1e-5, { residual: tf.ones([2, 3, 3, 2]) })).toThrow(/residual \[2,3,3,2\] must have the shape of x \[2,3,3,4\]/);
      tf.dispose(x);
    });

    it('x=[5,3] (2D input) gradient check by central differences', () => {
      const x = tf.tensor2d(seededUniform(15, 8, 1.5), [5, 3]);
      const g = tf.tensor1d([1.2, 0.7, -0.9]);
      const b = tf.tensor1d([0.1, -0.2, 0.3]);
      gradCheck((a, gg, bb) => batchNormTrain(a!, gg!, bb!, 1e-5).y, [x, g, b], { label: `${backend} bn2d` });
      tf.dispose([x, g, b]);
    });

    it('x=[2,3,2,4] gradient check by central differences', () => {
      const x = tf.tensor4d(seededUniform(48, 9, 1.5), [2, 3, 2, 4]);
      const g = tf.tensor1d([1.2, 0.7, -0.9, 1.1]);
      const b = tf.tensor1d([0.1, -0.2, 0.3, 0]);
      gradCheck((a, gg, bb) => batchNormTrain(a!, gg!, bb!, 1e-5).y, [x, g, b], { label: `${backend} bn4d` });
      tf.dispose([x, g, b]);
    });

    it('leaks nothing in forward or backward', async () => {
      const x = tf.tensor4d(seededUniform(360, 10), X_SHAPE);
      const g = tf.ones([C]);
      const b = tf.zeros([C]);
      await expectNoLeakedTensors(() => {
        const r = batchNormTrain(x, g, b, 1e-5);
        tf.dispose([r.y, r.mean, r.variance]);
        const grads = tf.grads((a: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor) => batchNormTrain(a, gg, bb, 1e-5).y.square().sum())([x, g, b]);
        tf.dispose(grads);
        tf.tidy(() => {
          batchNormTrain(x, g, b, 1e-5);
        });
        const fused = tf.grads((a: tf.Tensor, gg: tf.Tensor, bb: tf.Tensor, rr: tf.Tensor) =>
          batchNormTrain(a, gg, bb, 1e-5, { relu: true, residual: rr }).y.square().sum())([x, g, b, x]);
        tf.dispose(fused);
      }, 'batchNormTrain');
      tf.dispose([x, g, b]);
    });
  });

  describe('SVDBatchNorm', () => {
    it(`x=[${X_SHAPE}] train mode: batch stats, PyTorch running update (unbiased var); eval uses running stats`, () => {
      const xd = seededUniform(360, 11, 2, 0.7);
      const layer = new SVDBatchNorm({});
      const x = tf.tensor4d(xd, X_SHAPE);
      const ones = new Float32Array(C).fill(1);
      const zeros = new Float32Array(C);
      const hand = handBN(xd, C, ones, zeros, 1e-5);
      const y = layer.apply(x, { training: true }) as tf.Tensor;
      expectClose('train y', y, hand.y, TOL.tensorRel);
      const names = layer.weights.map((w) => w.originalName.split('/').pop());
      expect(names).toEqual(['gamma', 'beta', 'movingMean', 'movingVariance']);
      expect(layer.trainableWeights.map((w) => w.originalName.split('/').pop())).toEqual(['gamma', 'beta']);
      // getWeights() returns the live variables: copy the values.
      const [rm, rv] = layer.getWeights().slice(2).map((w) => Float32Array.from(w.dataSync()));
      const n = hand.m;
      expectClose('running_mean', rm!, Array.from(hand.mean, (m) => 0.1 * m), TOL.tensorRel);
      expectClose('running_var', rv!, Array.from(hand.v, (v) => 0.9 + 0.1 * v * (n / (n - 1))), TOL.tensorRel);
      // Eval mode with the updated running stats, and no further update.
      const ye = layer.apply(x, { training: false }) as tf.Tensor;
      const want = Array.from(xd, (v, i) => (v - rm![i % C]!) / Math.sqrt(rv![i % C]! + 1e-5));
      expectClose('eval y', ye, want, TOL.tensorRel);
      expectClose('running_mean unchanged by eval', layer.getWeights()[2]!, rm!, 0);
      tf.dispose([x, y, ye]);
      layer.dispose();
    });

    it('x=[8,5] (2D) momentum 0.3: two train steps compound like PyTorch', () => {
      const layer = new SVDBatchNorm({ momentum: 0.3, epsilon: 1e-3 });
      let rm = new Float64Array(5);
      let rv = new Float64Array(5).fill(1);
      for (const seed of [21, 22]) {
        const xd = seededUniform(40, seed, 1, 0.4);
        const h = handBN(xd, 5, new Float32Array(5).fill(1), new Float32Array(5), 1e-3);
        const x = tf.tensor2d(xd, [8, 5]);
        const y = layer.apply(x, { training: true }) as tf.Tensor;
        expectClose(`y seed ${seed}`, y, h.y, TOL.tensorRel);
        rm = rm.map((v, k) => 0.7 * v + 0.3 * h.mean[k]!);
        rv = rv.map((v, k) => 0.7 * v + 0.3 * h.v[k]! * (8 / 7));
        tf.dispose([x, y]);
      }
      const w = layer.getWeights();
      expectClose('running_mean', w[2]!, rm, TOL.tensorRel);
      expectClose('running_var', w[3]!, rv, TOL.tensorRel);
      layer.dispose();
    });

    it('gradients reach gamma and beta through a model; serialization round-trips', () => {
      const input = tf.input({ shape: [4, 5, 6] });
      const bn = new SVDBatchNorm({ name: 'bn', epsilon: 2e-5, momentum: 0.2 });
      const model = tf.model({ inputs: input, outputs: bn.apply(input) as tf.SymbolicTensor });
      const x = tf.tensor4d(seededUniform(360, 12), X_SHAPE);
      const { grads } = tf.variableGrads(() => (model.apply(x, { training: true }) as tf.Tensor).mul(tf.range(0, 360).reshape(X_SHAPE)).sum() as tf.Scalar);
      // Variable names get a _k suffix when the test runs again on another backend.
      expect(Object.keys(grads).map((k) => k.split('/').pop()!.replace(/_\d+$/, '')).sort()).toEqual(['beta', 'gamma']);
      tf.dispose(grads);
      const cfg = bn.getConfig();
      expect(cfg.epsilon).toBe(2e-5);
      expect(cfg.momentum).toBe(0.2);
      const back = tf.serialization.SerializationMap.getMap().classNameMap['SVDBatchNorm'];
      expect(back).toBeDefined();
      const json = model.toJSON(undefined, false) as unknown as { config: { layers: Array<{ class_name: string }> } };
      expect(json.config.layers.map((l) => l.class_name)).toContain('SVDBatchNorm');
      x.dispose();
      model.dispose();
    });

    it('residual + relu layer: two inputs, saves and loads with its fusion, same outputs in both modes; a wrong input count is refused', async () => {
      const [a, r] = [tf.input({ shape: [4, 5, 6] }), tf.input({ shape: [4, 5, 6] })];
      const bn = new SVDBatchNorm({ name: 'bn2', activation: 'relu', residual: true });
      const model = tf.model({ inputs: [a, r], outputs: bn.apply([a, r]) as tf.SymbolicTensor });
      model.setWeights([0, 1, 2, 3].map((k) => tf.tensor1d(seededUniform(C, 40 + k, 0.5, k === 3 ? 1 : 0))));
      const cfg = bn.getConfig();
      expect([cfg.activation, cfg.residual]).toEqual(['relu', true]);
      let artifacts: tf.io.ModelArtifacts | undefined;
      await model.save(tf.io.withSaveHandler(async (x) => ((artifacts = x), { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } })));
      const loaded = await tf.loadLayersModel(tf.io.fromMemory(artifacts!));
      const x = tf.tensor4d(seededUniform(360, 44, 1.5), X_SHAPE);
      const res = tf.tensor4d(seededUniform(360, 45, 1.5), X_SHAPE);
      // Eval mode: the stored statistics; expected by hand from them.
      const [gamma, beta, mm, mv] = model.getWeights();
      const want = tf.relu(tf.add(tf.batchNorm(x, mm!, mv!, beta!, gamma!, 1e-5), res));
      for (const m of [model, loaded]) expectClose(`${backend} eval`, m.predict([x, res]) as tf.Tensor, want, TOL.tensorRel);
      // Train mode on both: batch statistics, the same outputs.
      const t1 = model.apply([x, res], { training: true }) as tf.Tensor;
      const t2 = loaded.apply([x, res], { training: true }) as tf.Tensor;
      expectClose(`${backend} train`, t1, t2, TOL.tensorRel);
      expect(() => new SVDBatchNorm({ name: 'one', residual: true }).apply(a)).toThrow(/residual: true takes two inputs/);
      expect(() => new SVDBatchNorm({ name: 'bad', activation: 'tanh' as 'relu' })).toThrow(/activation 'tanh'; expected 'linear' or 'relu'/);
      tf.dispose([x, res, want, t1, t2]);
      model.dispose();
      loaded.dispose();
    });

    it("a model saved under the old class name 'SvdBatchNorm' still loads, as an SVDBatchNorm with the same outputs", async () => {
      const input = tf.input({ shape: [4, 5, 6] });
      const bn = new SVDBatchNorm({ name: 'bn', epsilon: 2e-5, momentum: 0.2 });
      const model = tf.model({ inputs: input, outputs: bn.apply(input) as tf.SymbolicTensor });
      model.setWeights([0, 1, 2, 3].map((k) => tf.tensor1d(seededUniform(C, 30 + k, 0.5, k === 3 ? 1 : 0))));
      let artifacts: tf.io.ModelArtifacts | undefined;
      await model.save(tf.io.withSaveHandler(async (a) => ((artifacts = a), { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } })));
      // What a model saved before the rename looks like.
      const topology = JSON.stringify(artifacts!.modelTopology);
      expect(topology).toContain('"class_name":"SVDBatchNorm"');
      const legacy = { ...artifacts!, modelTopology: JSON.parse(topology.replaceAll('"SVDBatchNorm"', '"SvdBatchNorm"')) as object };
      const loaded = await tf.loadLayersModel(tf.io.fromMemory(legacy));
      const layer = loaded.getLayer('bn');
      expect(layer).toBeInstanceOf(SVDBatchNorm);
      expect(layer.getClassName()).toBe('SVDBatchNorm');
      expect((layer as SVDBatchNorm).epsilon).toBe(2e-5);
      expect((layer as SVDBatchNorm).momentum).toBe(0.2);
      const x = tf.tensor4d(seededUniform(360, 14), X_SHAPE);
      const want = model.predict(x) as tf.Tensor;
      const got = loaded.predict(x) as tf.Tensor;
      expectClose('loaded eval y', got, want.dataSync(), 0);
      tf.dispose([x, want, got]);
      model.dispose();
      loaded.dispose();
    });

    it('train-mode forward leaks nothing', async () => {
      const layer = new SVDBatchNorm({});
      const x = tf.tensor4d(seededUniform(360, 13), X_SHAPE);
      tf.tidy(() => {
        layer.apply(x, { training: true }); // builds the weights
      });
      await expectNoLeakedTensors(() => {
        tf.tidy(() => {
          layer.apply(x, { training: true });
          layer.apply(x, { training: false });
        });
      }, 'SVDBatchNorm.apply');
      x.dispose();
      layer.dispose();
    });
  });
});
