import { describe, it, expect } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadReference, type RefTensor } from './test-support/index.js';
import { buildResNet, buildResNetForConfig, buildTeacherForConfig } from './resnet.js';
import { namedParameters, namedBuffers, getParameters, setParameters, getBuffers, setBuffers, layerNameFor, moduleNameFor, noDecayParameterNames } from './parameter-names.js';
import { svdRanks } from './prune.js';

interface RefModel {
  parameters: Record<string, RefTensor>;
  buffers_initial: Record<string, RefTensor>;
}

describe('buildResNet', () => {
  it('ResNet-8 spatial (widths 4,8,16): parameter names, order and shapes equal the PyTorch state_dict', () => {
    const ref = loadReference<RefModel>('resnet8_spatial');
    const m = buildResNet({ depth: 20, widths: [4, 8, 16], blocks: [1, 1, 1], strides: [1, 2, 2], decomposition: 'spatial', seed: 3 });
    const names = namedParameters(m).map((p) => p.name);
    expect(names).toEqual(Object.keys(ref.parameters));
    for (const p of namedParameters(m)) expect([p.name, ...p.variable.shape]).toEqual([p.name, ...ref.parameters[p.name]!.shape]);
    expect(namedBuffers(m).map((b) => b.name)).toEqual(Object.keys(ref.buffers_initial));
    expect(m.outputs[0]!.shape).toEqual([null, 10]);
    m.dispose();
  });

  it('ResNet-20 channel: 9 blocks, names/order/shapes equal the PyTorch state_dict', () => {
    const ref = loadReference<RefModel>('resnet20_channel');
    const m = buildResNet({ depth: 20, seed: 1 });
    expect(namedParameters(m).map((p) => p.name)).toEqual(Object.keys(ref.parameters));
    for (const p of namedParameters(m)) expect([p.name, ...p.variable.shape]).toEqual([p.name, ...ref.parameters[p.name]!.shape]);
    expect(namedBuffers(m).map((b) => b.name)).toEqual(Object.keys(ref.buffers_initial));
    m.dispose();
  });

  it('plain ResNet-20 has conv weights named ….weight, no conv bias, 0.27M parameters', () => {
    const m = buildResNet({ depth: 20, svd: false });
    const names = namedParameters(m).map((p) => p.name);
    expect(names.slice(0, 3)).toEqual(['stem.0.weight', 'stem.1.weight', 'stem.1.bias']);
    expect(names).toContain('layers.3.shortcut.0.weight');
    expect(names).not.toContain('layers.0.conv1.bias');
    expect(names.slice(-2)).toEqual(['fc.weight', 'fc.bias']);
    // The well-known ResNet-20 count (0.27M) with option-B shortcuts: 272,474 trainable.
    const trainable = namedParameters(m).reduce((a, p) => a + (p.variable.shape as number[]).reduce((x, y) => x * y, 1), 0);
    expect(trainable).toBe(272474);
    m.dispose();
  });

  it('ResNet-56 has 27 blocks and ResNet-18 (plain) 8 with widths up to 512', () => {
    const m56 = buildResNet({ depth: 56, svd: false });
    expect(namedParameters(m56).some((p) => p.name === 'layers.26.bn2.bias')).toBe(true);
    m56.dispose();
    const m18 = buildResNet({ depth: 'resnet18', svd: false });
    const names = namedParameters(m18).map((p) => p.name);
    expect(names.some((n) => n.startsWith('layers.8.'))).toBe(false);
    expect(m18.getLayer('layers_7_conv2').getWeights()[0]!.shape).toEqual([3, 3, 512, 512]);
    m18.dispose();
  });

  it('setParameters/getParameters and setBuffers/getBuffers round-trip by name, and reject wrong shapes', () => {
    const a = buildResNet({ depth: 20, widths: [4, 8, 16], blocks: [1, 1, 1], strides: [1, 2, 2], seed: 1 });
    const b = buildResNet({ depth: 20, widths: [4, 8, 16], blocks: [1, 1, 1], strides: [1, 2, 2], seed: 2 });
    const before = tf.memory().numTensors;
    setParameters(b, [...getParameters(a)].reverse());
    const buf = getBuffers(a).map((t) => ({ ...t, data: t.data.map((_, i) => i + 0.5) }));
    setBuffers(b, buf);
    expect(tf.memory().numTensors).toBe(before);
    expect(getParameters(b)).toEqual(getParameters(a));
    expect(getBuffers(b)).toEqual(buf);
    const bad = getParameters(a);
    bad[0] = { ...bad[0]!, shape: [1], data: new Float32Array(1) };
    expect(() => setParameters(b, bad)).toThrow(/stem\.0\.U/);
    expect(() => setParameters(b, getParameters(a).slice(1))).toThrow(/expected/);
    a.dispose();
    b.dispose();
  });

  it('layer/module name mapping is invertible', () => {
    for (const n of ['stem.0', 'layers.12.shortcut.1', 'fc']) expect(moduleNameFor(layerNameFor(n))).toBe(n);
  });

  const tiny = { depth: 20, widths: [4, 8, 16], blocks: [1, 1, 1], strides: [1, 2, 2] } as const;
  const tinyOpts = () => ({ ...tiny, widths: [...tiny.widths], blocks: [...tiny.blocks], strides: [...tiny.strides] });

  it('ranks override the rank of the named SVD layers only (U [m,r], s [r], V [p,r])', () => {
    const full = buildResNet({ ...tinyOpts(), seed: 1 });
    const fullRanks = svdRanks(full);
    expect(fullRanks).toMatchObject({ 'stem.0': 4, 'layers.1.conv1': 8, 'layers.1.shortcut.0': 4, fc: 10 });
    const m = buildResNet({ ...tinyOpts(), seed: 1, rank: 6, ranks: { 'stem.0': 2, 'layers.1.shortcut.0': 3, fc: 5 } });
    const r = svdRanks(m);
    expect(r).toMatchObject({ 'stem.0': 2, 'layers.1.shortcut.0': 3, fc: 5, 'layers.1.conv1': 6, 'layers.0.conv1': 4 });
    const shape = (n: string) => namedParameters(m).find((p) => p.name === n)!.variable.shape;
    expect(shape('stem.0.U')).toEqual([4, 2]);
    expect(shape('stem.0.s')).toEqual([2]);
    expect(shape('stem.0.V')).toEqual([27, 2]);
    expect(shape('fc.U')).toEqual([10, 5]);
    expect(shape('fc.V')).toEqual([16, 5]);
    full.dispose();
    m.dispose();
  });

  it('refuses ranks naming no SVD layer of the model, above full rank, or with svd off, leaking nothing', () => {
    const before = tf.memory().numTensors;
    expect(() => buildResNet({ ...tinyOpts(), ranks: { 'layers.0.shortcut.0': 2 } })).toThrow(/'layers\.0\.shortcut\.0'.*not an SVD layer/);
    expect(() => buildResNet({ ...tinyOpts(), ranks: { 'layers.5.conv1': 2 } })).toThrow(/layers\.5\.conv1/);
    expect(() => buildResNet({ ...tinyOpts(), ranks: { 'stem.0': 5 } })).toThrow(/ranks\['stem\.0'\] = 5; expected an integer in \[1, 4\]/);
    expect(() => buildResNet({ ...tinyOpts(), ranks: { fc: 0 } })).toThrow(/\[1, 10\]/);
    expect(() => buildResNet({ ...tinyOpts(), svd: false, ranks: { fc: 2 } })).toThrow(/svd: false/);
    expect(tf.memory().numTensors).toBe(before);
  });

  it('buildTeacherForConfig builds at teacherRanks, and its rank errors name teacherRanks', () => {
    const cfg = { model: 'resnet20', svd: true, decomposition: 'channel', forward: 'auto', seed: 0 } as const;
    const t = buildTeacherForConfig({ ...cfg, teacherRanks: { fc: 3 }, teacherArch: null });
    expect(svdRanks(t)).toMatchObject({ fc: 3, 'layers.0.conv1': 16 });
    t.dispose();
    expect(() => buildTeacherForConfig({ ...cfg, teacherRanks: { fc: 11 }, teacherArch: null })).toThrow(/^teacherRanks\['fc'\] = 11; expected an integer in \[1, 10\]/);
    expect(() => buildTeacherForConfig({ ...cfg, teacherRanks: { nope: 1 }, teacherArch: null })).toThrow(/^teacherRanks name 'nope'/);
  });

  it('buildTeacherForConfig builds teacherArch where it is set: another decomposition, no SVD, another depth', () => {
    const cfg = { model: 'resnet20', svd: true, decomposition: 'channel', forward: 'auto', seed: 0, teacherRanks: null } as const;
    const shapes = (m: tf.LayersModel) => new Map(getParameters(m).map((p) => [p.name, p.shape.join(',')]));
    const [run, spatial, plain, deep] = [
      buildTeacherForConfig({ ...cfg, teacherArch: null }),
      buildTeacherForConfig({ ...cfg, teacherArch: { model: 'resnet20', svd: true, decomposition: 'spatial' } }),
      buildTeacherForConfig({ ...cfg, teacherArch: { model: 'resnet20', svd: false, decomposition: 'channel' } }),
      buildTeacherForConfig({ ...cfg, teacherArch: { model: 'resnet32', svd: true, decomposition: 'channel' } }),
    ];
    try {
      const own = buildResNetForConfig({ ...cfg, ranks: null });
      expect(shapes(run)).toEqual(shapes(own));
      own.dispose();
      const spatialOwn = buildResNetForConfig({ ...cfg, decomposition: 'spatial', ranks: null });
      expect(shapes(spatial)).toEqual(shapes(spatialOwn));
      expect(shapes(spatial)).not.toEqual(shapes(run));
      spatialOwn.dispose();
      expect(svdRanks(plain)).toEqual({});
      expect(deep.countParams()).toBeGreaterThan(run.countParams());
    } finally {
      for (const m of [run, spatial, plain, deep]) m.dispose();
    }
  });

  it('noDecayParameterNames: BN gammas/betas and biases, no conv or SVD factors', () => {
    const m = buildResNet({ ...tinyOpts(), seed: 1 });
    const names = noDecayParameterNames(m);
    const bnModules = ['stem.1', 'layers.0.bn1', 'layers.0.bn2', 'layers.1.shortcut.1', 'layers.2.bn2'];
    for (const mod of bnModules) expect(names).toEqual(expect.arrayContaining([`${mod}.weight`, `${mod}.bias`]));
    expect(names).toContain('fc.bias');
    expect(names.some((n) => /\.(U|s|V)$/.test(n))).toBe(false);
    // Everything else is a factor: the two sets partition the parameters.
    const all = namedParameters(m).map((p) => p.name);
    expect(all.filter((n) => !names.includes(n)).every((n) => /\.(U|s|V)$/.test(n))).toBe(true);
    m.dispose();
    const plain = buildResNet({ ...tinyOpts(), svd: false });
    const plainNames = noDecayParameterNames(plain);
    expect(plainNames).toContain('layers.0.bn1.weight');
    expect(plainNames).toContain('fc.bias');
    expect(plainNames).not.toContain('layers.0.conv1.weight');
    expect(plainNames).not.toContain('fc.weight');
    plain.dispose();
  });
});
