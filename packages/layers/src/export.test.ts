import { describe, it, expect, afterAll } from 'vitest';
import { mkdirSync, mkdtempSync, readdirSync, rmSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { expectClose } from './test-support/index.js';
import { buildResNet } from './resnet.js';
import { getParameters, getBuffers, setBuffers, namedParameters } from './parameter-names.js';
import { checkModelFolder, exportToStockLayers, fileSystemIO, saveToMemory, loadFromMemory } from './export.js';
import { pruneByEnergy } from './prune.js';
import { countMacs } from './macs.js';
import { SVDConv2D } from './svd-conv2d.js';

const STOCK = new Set(['InputLayer', 'Conv2D', 'Dense', 'BatchNormalization', 'ZeroPadding2D', 'ReLU', 'Add', 'GlobalAveragePooling2D']);

function resnet8(decomposition: 'channel' | 'spatial'): tf.LayersModel {
  const m = buildResNet({ depth: 20, widths: [4, 8, 16], blocks: [1, 1, 1], strides: [1, 2, 2], decomposition, seed: 21 });
  // Non-trivial running statistics and parameters, so a dropped or swapped weight shows.
  setBuffers(m, getBuffers(m).map((b, i) => ({ ...b, data: b.data.map((_, j) => (b.name.endsWith('running_var') ? 0.5 + ((i + j) % 4) / 4 : ((i * 3 + j) % 5) / 10 - 0.2)) })));
  for (const p of namedParameters(m)) {
    if (!/bn\d|stem\.1|shortcut\.1|fc\.bias/.test(p.name)) continue;
    const v = p.variable.read().dataSync() as Float32Array;
    tf.tidy(() => {
      p.variable.write(tf.tensor(v.map((x, j) => x + 0.1 * Math.sin(j + 1)), p.variable.shape as number[]));
    });
  }
  return m;
}


const dirs: string[] = [];
afterAll(() => dirs.forEach((d) => rmSync(d, { recursive: true, force: true })));

describe('save / load with our layers registered', () => {
  it('ResNet-8 channel: memory round-trip keeps every weight and the outputs', async () => {
    const m = resnet8('channel');
    const x = tf.randomNormal([2, 32, 32, 3], 0, 1, 'float32', 4);
    const back = await loadFromMemory(await saveToMemory(m));
    expect(getParameters(back)).toEqual(getParameters(m));
    expect(getBuffers(back)).toEqual(getBuffers(m));
    const [a, b] = [m.predict(x) as tf.Tensor, back.predict(x) as tf.Tensor];
    expectClose('reloaded logits', b, a, 0);
    tf.dispose([x, a, b]);
    m.dispose();
    back.dispose();
  });

  it('fileSystemIO writes model.json + weights.bin and reads a pruned spatial model back', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'svd-export-'));
    dirs.push(dir);
    const m = resnet8('spatial');
    const { model: pruned } = pruneByEnergy(m, 0.2);
    await pruned.save(fileSystemIO(dir));
    const json = JSON.parse(readFileSync(join(dir, 'model.json'), 'utf8'));
    expect(json.weightsManifest[0].paths).toEqual(['./weights.bin']);
    const back = await tf.loadLayersModel(fileSystemIO(dir));
    expect(getParameters(back)).toEqual(getParameters(pruned));
    const x = tf.randomNormal([1, 32, 32, 3], 0, 1, 'float32', 5);
    const [a, b] = [pruned.predict(x) as tf.Tensor, back.predict(x) as tf.Tensor];
    expectClose('fs reloaded logits', b, a, 0);
    tf.dispose([x, a, b]);
    [m, pruned, back].forEach((q) => q.dispose());
  });

  it('fileSystemIO replaces a previous model whole, leaves nothing beside it, and refuses a file or a folder holding anything else', async () => {
    const parent = mkdtempSync(join(tmpdir(), 'svd-export-'));
    dirs.push(parent);
    const dir = join(parent, 'model');
    const dense = (seed: number) => tf.sequential({ layers: [tf.layers.dense({ inputShape: [3], units: 2, kernelInitializer: tf.initializers.glorotUniform({ seed }) })] });
    const [a, b] = [dense(1), dense(2)];
    await a.save(fileSystemIO(dir));
    await b.save(fileSystemIO(dir));
    const back = await tf.loadLayersModel(fileSystemIO(dir));
    expect(getParameters(back)).toEqual(getParameters(b));
    expect(readdirSync(parent)).toEqual(['model']);
    expect(readdirSync(dir).sort()).toEqual(['model.json', 'weights.bin']);
    // The folder has mkdir's permissions (others may read it), not mkdtemp's 0700.
    mkdirSync(join(parent, 'ref'));
    expect(statSync(dir).mode & 0o777).toBe(statSync(join(parent, 'ref')).mode & 0o777);
    rmSync(join(parent, 'ref'), { recursive: true });
    // A folder with other files (a run's checkpoints, say) and a file are refused, and left as they were.
    writeFileSync(join(parent, 'notes.txt'), 'mine');
    await expect(a.save(fileSystemIO(parent))).rejects.toMatchObject({ code: 'CONFIG_INVALID', message: expect.stringContaining('not only a saved model') as unknown });
    expect(readFileSync(join(parent, 'notes.txt'), 'utf8')).toBe('mine');
    expect(() => checkModelFolder(join(parent, 'notes.txt'))).toThrow(/notes\.txt is a file; expected a folder/);
    [a, b, back].forEach((q) => q.dispose());
  });

  it('fileSystemIO reports a truncated weights file as CHECKPOINT_CORRUPT', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'svd-export-'));
    dirs.push(dir);
    const m = tf.sequential({ layers: [tf.layers.dense({ inputShape: [3], units: 2 })] });
    await m.save(fileSystemIO(dir));
    writeFileSync(join(dir, 'weights.bin'), new Uint8Array(4));
    await expect(tf.loadLayersModel(fileSystemIO(dir))).rejects.toMatchObject({ code: 'CHECKPOINT_CORRUPT' });
    m.dispose();
  });
});

describe('exportToStockLayers', () => {
  for (const decomposition of ['channel', 'spatial'] as const) {
    it(`ResNet-8 ${decomposition}: only stock classes in the JSON, same inference outputs after a memory round-trip`, async () => {
      const m = resnet8(decomposition);
      const stock = exportToStockLayers(m);
      const artifacts = await saveToMemory(stock);
      const layerClasses = (artifacts.modelTopology as { config: { layers: { class_name: string }[] } }).config.layers.map((l) => l.class_name);
      expect(layerClasses.filter((c) => !STOCK.has(c))).toEqual([]);
      expect(JSON.stringify(artifacts.modelTopology)).not.toMatch(/SVD|SvdBatchNorm/);
      // Each batch norm keeps its module's name and class; what it carried follows as N_add, N_relu.
      const byName = new Map(stock.layers.map((l) => [l.name, l.getClassName()]));
      for (const bn of ['stem_1', 'layers_0_bn1', 'layers_0_bn2', 'layers_1_shortcut_1', 'layers_2_bn2']) expect([bn, byName.get(bn)]).toEqual([bn, 'BatchNormalization']);
      expect([byName.get('layers_0_bn1_relu'), byName.get('layers_0_bn2_add'), byName.get('layers_0_bn2_relu')]).toEqual(['ReLU', 'Add', 'ReLU']);
      // Stride-1 convs pad with 'same'; only the stride-2 3×3 convs (layers.1/2.conv1) keep a ZeroPadding2D.
      const pads = stock.layers.filter((l) => l.getClassName() === 'ZeroPadding2D').map((l) => l.name);
      expect(pads).toEqual(['layers_1_conv1_pad', 'layers_2_conv1_pad']);
      const convCfg = (l: tf.layers.Layer) => l.getConfig() as { padding: string; strides: number[]; kernelSize: number[] };
      const same = stock.layers.filter((l) => l.getClassName() === 'Conv2D' && convCfg(l).padding === 'same');
      expect(same.length).toBeGreaterThan(4);
      for (const l of same) expect([l.name, convCfg(l).strides]).toEqual([l.name, [1, 1]]);
      const loaded = await tf.loadLayersModel(tf.io.fromMemory(artifacts));
      const x = tf.randomNormal([3, 32, 32, 3], 0, 1, 'float32', 6);
      const [a, b] = [m.predict(x) as tf.Tensor, loaded.predict(x) as tf.Tensor];
      expectClose(`stock ${decomposition} logits`, b, a, 1e-5);
      tf.dispose([x, a, b]);
      [m, stock, loaded].forEach((q) => q.dispose());
    });
  }

  for (const decomposition of ['channel', 'spatial'] as const) {
    it(`ResNet-8 ${decomposition} at full rank: every SVD layer is one plain Conv2D/Dense, with the plain ResNet-8's weight count`, () => {
      const m = resnet8(decomposition);
      const stock = exportToStockLayers(m);
      expect(stock.layers.filter((l) => l.name.endsWith('_v')).map((l) => l.name)).toEqual([]);
      const plain = buildResNet({ depth: 20, widths: [4, 8, 16], blocks: [1, 1, 1], strides: [1, 2, 2], svd: false, seed: 1 });
      // By name: the two graphs may list parallel branches (conv2, shortcut) in either order.
      const weights = (x: tf.LayersModel) =>
        x.layers.filter((l) => ['Conv2D', 'Dense'].includes(l.getClassName())).map((l) => [l.name, ...l.getWeights().map((w) => w.shape.join('x'))]).sort((a, b) => a[0]!.localeCompare(b[0]!));
      expect(weights(stock)).toEqual(weights(plain));
      // The same padding layers and conv paddings as the plain ResNet builds.
      const padding = (x: tf.LayersModel) =>
        x.layers.filter((l) => ['Conv2D', 'ZeroPadding2D'].includes(l.getClassName())).map((l) => `${l.name}:${JSON.stringify((l.getConfig() as { padding: unknown }).padding)}`).sort();
      expect(padding(stock)).toEqual(padding(plain));
      expect(countMacs(stock).total).toBe(countMacs(plain).total);
      expect(countMacs(m).exportParams).toBe(countMacs(stock).exportParams);
      [m, stock, plain].forEach((q) => q.dispose());
    });
  }

  it('pruned ResNet-8: merged layers stay one Conv2D, factored ones become two; MACs and outputs equal the SVD model\'s', async () => {
    const m = resnet8('channel');
    // A steep spectrum, so some layers drop below the crossing rank and some do not.
    for (const p of namedParameters(m)) {
      if (!p.name.endsWith('.s') || p.name.startsWith('stem')) continue;
      const s = p.variable.read().dataSync() as Float32Array;
      tf.tidy(() => {
        p.variable.write(tf.tensor1d(s.map((v, j) => v * Math.pow(0.3, j))));
      });
    }
    const { model: pruned, report } = pruneByEnergy(m, 0.01);
    expect(new Set(report.map((r) => r.formAfter))).toEqual(new Set(['merged', 'factored']));
    const stock = exportToStockLayers(pruned);
    for (const r of report) expect([r.name, stock.layers.some((l) => l.name === `${r.name}_v`)]).toEqual([r.name, r.formAfter === 'factored']);
    expect(countMacs(stock).total).toBe(countMacs(pruned).total);
    const loaded = await tf.loadLayersModel(tf.io.fromMemory(await saveToMemory(stock)));
    const x = tf.randomNormal([3, 32, 32, 3], 0, 1, 'float32', 8);
    const [a, b] = [pruned.predict(x) as tf.Tensor, loaded.predict(x) as tf.Tensor];
    expectClose('stock pruned logits', b, a, 1e-5);
    tf.dispose([x, a, b]);
    [m, pruned, stock, loaded].forEach((q) => q.dispose());
  });

  for (const decomposition of ['channel', 'spatial'] as const) {
    it(`foldBatchNorm, ResNet-8 ${decomposition}: no BatchNormalization left, convs gain a bias, same inference outputs`, () => {
      const m = resnet8(decomposition);
      const { model: pruned } = pruneByEnergy(m, 0.2);
      const folded = exportToStockLayers(pruned, { foldBatchNorm: true });
      expect(folded.layers.filter((l) => l.getClassName() === 'BatchNormalization').map((l) => l.name)).toEqual([]);
      expect(folded.layers.filter((l) => l.getClassName() === 'Conv2D' && !l.name.endsWith('_v')).every((l) => l.getWeights().length === 2)).toBe(true);
      // Factored too, a ZeroPadding2D feeds only a conv that strides 2 along a padded axis.
      const padFed = folded.layers.filter((l) => l.getClassName() === 'Conv2D' && l.inboundNodes[0]!.inboundLayers[0]!.getClassName() === 'ZeroPadding2D');
      expect(padFed.length).toBeGreaterThan(0);
      for (const l of padFed) expect([l.name, (l.getConfig() as { strides: number[] }).strides.includes(2)]).toEqual([l.name, true]);
      const x = tf.randomNormal([3, 32, 32, 3], 0, 1, 'float32', 9);
      const [a, b] = [pruned.predict(x) as tf.Tensor, folded.predict(x) as tf.Tensor];
      expectClose(`folded ${decomposition} logits`, b, a, 1e-5);
      tf.dispose([x, a, b]);
      [m, pruned, folded].forEach((q) => q.dispose());
    });
  }

  it("an SVD conv with padding 'same' (asymmetric at stride 2) exports in both forms", () => {
    for (const forward of ['reconstruct', 'factored'] as const) {
      for (const decomposition of ['channel', 'spatial'] as const) {
        const input = tf.input({ shape: [6, 6, 2] });
        const y = new SVDConv2D({ filters: 3, kernelSize: 3, strides: 2, padding: 'same', decomposition, forward, seed: 2, name: 'c' }).apply(input) as tf.SymbolicTensor;
        const m = tf.model({ inputs: input, outputs: y });
        const stock = exportToStockLayers(m);
        const x = tf.randomNormal([2, 6, 6, 2], 0, 1, 'float32', 10);
        const [a, b] = [m.predict(x) as tf.Tensor, stock.predict(x) as tf.Tensor];
        expectClose(`same ${decomposition}/${forward}`, b, a, 1e-5);
        tf.dispose([x, a, b]);
        [m, stock].forEach((q) => q.dispose());
      }
    }
  });

  it('the exported model loads in a separate node process that imports only @tensorflow/tfjs', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'svd-export-'));
    dirs.push(dir);
    const m = resnet8('channel');
    await exportToStockLayers(m).save(fileSystemIO(dir));
    const xData = Float32Array.from({ length: 2 * 32 * 32 * 3 }, (_, i) => Math.sin(i * 0.37));
    writeFileSync(join(dir, 'x.bin'), new Uint8Array(xData.buffer));
    // The child resolves @tensorflow/tfjs from this package and never sees our modules.
    const script = `
      import * as tf from '@tensorflow/tfjs';
      import { readFileSync } from 'node:fs';
      const dir = ${JSON.stringify(dir)};
      const json = JSON.parse(readFileSync(dir + '/model.json', 'utf8'));
      const bin = readFileSync(dir + '/weights.bin');
      const specs = json.weightsManifest.flatMap((g) => g.weights);
      const weightData = bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength);
      const model = await tf.loadLayersModel(tf.io.fromMemory({ modelTopology: json.modelTopology, weightSpecs: specs, weightData }));
      const xb = readFileSync(dir + '/x.bin');
      const x = tf.tensor4d(new Float32Array(xb.buffer.slice(xb.byteOffset, xb.byteOffset + xb.byteLength)), [2, 32, 32, 3]);
      process.stdout.write(JSON.stringify(Array.from(model.predict(x).dataSync())));
    `;
    const { execFileSync } = await import('node:child_process');
    const out = execFileSync(process.execPath, ['--input-type=module', '-e', script], {
      cwd: join(import.meta.dirname, '..'),
      encoding: 'utf8',
      stdio: ['ignore', 'pipe', 'ignore'],
    });
    const x = tf.tensor4d(xData, [2, 32, 32, 3]);
    const want = m.predict(x) as tf.Tensor;
    expectClose('logits from a plain-tfjs process', JSON.parse(out) as number[], want, 1e-5);
    tf.dispose([x, want]);
    m.dispose();
  });
});
