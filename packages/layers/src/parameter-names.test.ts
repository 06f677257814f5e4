import { describe, it, expect } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { namedBuffers, namedParameters } from './parameter-names.js';
import { SVDConv2D } from './svd-conv2d.js';
import { SVDDense } from './svd-dense.js';
import { SVDBatchNorm } from './batch-norm.js';
import { buildResNet } from './resnet.js';
import { loadFromMemory, saveToMemory } from './export.js';

// Layer names are chosen so that neither alphabetical order nor the old single sort key of
// unrecognised modules gives model.layers order.
describe('namedParameters of a custom model (module names outside the ResNet scheme)', () => {
  it('tf.sequential [SVDConv2D zconv, flatten, SVDDense mdense, Dense adense]: each layer whole, in model.layers order', () => {
    const model = tf.sequential({
      layers: [
        new SVDConv2D({ name: 'zconv', inputShape: [6, 6, 2], filters: 3, kernelSize: 3, useBias: true, seed: 1 }),
        tf.layers.flatten(),
        new SVDDense({ name: 'mdense', units: 4, rank: 2, seed: 2 }),
        tf.layers.dense({ name: 'adense', units: 2 }),
      ],
    });
    expect(namedParameters(model).map((p) => p.name)).toEqual([
      'zconv.U', 'zconv.s', 'zconv.V', 'zconv.bias',
      'mdense.U', 'mdense.s', 'mdense.V', 'mdense.bias',
      'adense.weight', 'adense.bias',
    ]);
    model.dispose();
  });

  it('tf.model [SVDConv2D yconv -> SVDBatchNorm xbn, SVDConv2D bconv] -> add -> Dense head: model.layers order, also on the model rebuilt from its JSON', async () => {
    const input = tf.input({ shape: [5, 5, 2] });
    const left = new SVDConv2D({ name: 'yconv', filters: 2, kernelSize: 1, seed: 3 }).apply(input) as tf.SymbolicTensor;
    const bn = new SVDBatchNorm({ name: 'xbn' }).apply(left) as tf.SymbolicTensor;
    const right = new SVDConv2D({ name: 'bconv', filters: 2, kernelSize: 1, rank: 1, seed: 4 }).apply(input) as tf.SymbolicTensor;
    const merged = tf.layers.add().apply([bn, right]) as tf.SymbolicTensor;
    const flat = tf.layers.flatten().apply(merged) as tf.SymbolicTensor;
    const out = tf.layers.dense({ name: 'head', units: 3 }).apply(flat) as tf.SymbolicTensor;
    const model = tf.model({ inputs: input, outputs: out });
    // tfjs orders a functional model's layers by depth from the input: yconv, xbn, bconv, add, flatten, head.
    expect(model.layers.map((l) => l.name).filter((n) => ['yconv', 'xbn', 'bconv', 'head'].includes(n))).toEqual(['yconv', 'xbn', 'bconv', 'head']);
    const expected = ['yconv.U', 'yconv.s', 'yconv.V', 'xbn.weight', 'xbn.bias', 'bconv.U', 'bconv.s', 'bconv.V', 'head.weight', 'head.bias'];
    expect(namedParameters(model).map((p) => p.name)).toEqual(expected);
    expect(namedBuffers(model).map((p) => p.name)).toEqual(['xbn.running_mean', 'xbn.running_var']);
    const back = await loadFromMemory(await saveToMemory(model));
    expect(namedParameters(back).map((p) => p.name)).toEqual(expected);
    model.dispose();
    back.dispose();
  });

  it('the ResNet scheme is unchanged: stem, blocks, fc, then a custom head appended after fc', () => {
    const base = buildResNet({ depth: 20, svd: true, decomposition: 'channel', numClasses: 10, seed: 0 });
    const names = namedParameters(base).map((p) => p.name);
    expect(names.slice(0, 4)).toEqual(['stem.0.U', 'stem.0.s', 'stem.0.V', 'stem.1.weight']);
    expect(names.slice(-4)).toEqual(['fc.U', 'fc.s', 'fc.V', 'fc.bias']);
    const extra = tf.layers.dense({ name: 'aux', units: 2 }).apply(base.outputs[0]!) as tf.SymbolicTensor;
    const model = tf.model({ inputs: base.inputs, outputs: extra });
    expect(namedParameters(model).map((p) => p.name)).toEqual([...names, 'aux.weight', 'aux.bias']);
    model.dispose();
  });
});
