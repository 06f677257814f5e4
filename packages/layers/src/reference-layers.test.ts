/**
 * The six layers.json layers inside a tf.LayersModel with forward 'auto': saved with tf.io and read
 * back with tf.loadLayersModel (so getConfig + serialization.registerClass really round-trip), and the
 * reloaded model still reproduces the PyTorch forward.
 */
import { describe, it, expect } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { TOL, loadReference, refToTensor, refToNhwc, expectClose, expectNoLeakedTensors, forEachBackend, TEST_ENGINES, type RefTensor } from './test-support/index.js';
import { SVDConv2D } from './svd-conv2d.js';
import { SVDDense } from './svd-dense.js';

interface Case {
  name: string;
  config: {
    type: 'conv2d' | 'dense';
    decomposition?: 'channel' | 'spatial';
    in_channels?: number;
    out_channels?: number;
    kernel_size?: [number, number];
    stride?: [number, number];
    padding?: [number, number];
    in_features?: number;
    out_features?: number;
    rank: number;
  };
  U: RefTensor;
  s: RefTensor;
  V: RefTensor;
  bias?: RefTensor;
  x: RefTensor;
  y: RefTensor;
}

const cases = loadReference<Case[]>('layers');

function buildModel(c: Case): tf.LayersModel {
  const cfg = c.config;
  const isConv = cfg.type === 'conv2d';
  const inShape = isConv ? [c.x.shape[2]!, c.x.shape[3]!, c.x.shape[1]!] : [c.x.shape[1]!];
  const input = tf.input({ shape: inShape });
  const layer = isConv
    ? new SVDConv2D({
        name: 'svd',
        filters: cfg.out_channels!,
        kernelSize: cfg.kernel_size!,
        strides: cfg.stride!,
        padding: cfg.padding!,
        decomposition: cfg.decomposition!,
        rank: cfg.rank,
        seed: 1,
      })
    : new SVDDense({ name: 'svd', units: cfg.out_features!, rank: cfg.rank, seed: 1 });
  const model = tf.model({ inputs: input, outputs: layer.apply(input) as tf.SymbolicTensor });
  layer.setFactors({ U: c.U.data, s: c.s.data, V: c.V.data, m: c.U.shape[0]!, p: c.V.shape[0]!, r: c.s.shape[0]! });
  if (c.bias) {
    const b = tf.tensor1d(c.bias.data);
    (layer as SVDDense).bias!.write(b);
    b.dispose();
  }
  return model;
}

forEachBackend(TEST_ENGINES, (backend) => describe('layers.json cases in a LayersModel: save → tf.loadLayersModel → same forward', () => {
  for (const c of cases) {
    it(`${c.name} x=[${c.x.shape}] U=[${c.U.shape}] V=[${c.V.shape}] forward 'auto'`, async () => {
      const model = buildModel(c);
      let artifacts: tf.io.ModelArtifacts | undefined;
      await model.save(
        tf.io.withSaveHandler(async (a) => {
          artifacts = a;
          return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
        }),
      );
      const reloaded = await tf.loadLayersModel(tf.io.fromMemory(artifacts!));
      const layer = reloaded.getLayer('svd');
      expect(layer.getClassName()).toBe(c.config.type === 'conv2d' ? 'SVDConv2D' : 'SVDDense');
      expect(layer.getConfig()).toEqual(model.getLayer('svd').getConfig());
      const isConv = c.config.type === 'conv2d';
      const x = isConv ? refToNhwc(c.x) : refToTensor(c.x);
      const y = await expectNoLeakedTensors(() => {
        const out = reloaded.predict(x) as tf.Tensor;
        const flat = tf.tidy(() => (isConv ? out.transpose([0, 3, 1, 2]) : out).dataSync());
        out.dispose();
        return flat;
      }, `${c.name} predict`);
      expectClose(`${backend}/${c.name} reloaded y`, y, c.y, TOL.tensorRel);
      x.dispose();
      model.dispose();
      reloaded.dispose();
    });
  }
}));
