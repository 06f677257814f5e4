import { mkdtempSync, writeFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { DEFAULTS } from '../defaults.js';
import { SvdTrainError } from '../errors.js';
import { thrown } from '../test-support/thrown.js';
import { RUN_LOCAL_KEYS, canonicalJson, configHash, serializeConfig } from './hash.js';
import { closestConfigKey, parseConfig, resolveConfig, toCamelCase, toKebabCase } from './resolve.js';
import { CONFIG_KEYS, RunConfigSchema } from './schema.js';

const tmp = mkdtempSync(join(tmpdir(), 'svd-config-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));
function configFile(obj: unknown, name = 'cfg.json'): string {
  const p = join(tmp, name);
  writeFileSync(p, typeof obj === 'string' ? obj : JSON.stringify(obj));
  return p;
}
describe('resolveConfig defaults', () => {
  it('gives the contract defaults with no input', () => {
    const c = resolveConfig({}, undefined, {});
    expect(c).toEqual({ ...DEFAULTS });
    expect(c).toMatchObject({
      model: 'resnet20', svd: true, decomposition: 'channel', forward: 'auto', sparsity: 'hoyer',
      lambdaO: 1, lambdaS: 0.07, optimizer: 'sgd', lr: 0.1, momentum: 0.9, nesterov: true,
      weightDecay: 5e-4, decayOn: 'all', cycleMomentum: true, baseMomentum: 0.85, maxMomentum: 0.95, adamBetas: [0.9, 0.999], adamEps: 1e-8, schedule: 'onecycle',
      milestones: [81, 122], gamma: 0.1, warmupEpochs: 0, pctStart: 0.3, divFactor: 25, finalDivFactor: 1e4,
      epochs: 3, batch: 128, seed: 0, augment: true, cutout: 0, data: null, limitTrain: null, limitTest: null,
      host: '127.0.0.1', port: 7733, minWorkers: 1, spawn: 0, out: 'runs/latest', resume: false, from: null,
      token: null, insecure: false, evalEvery: 1, checkpointEvery: 200, keepCheckpoints: 3,
      stepTimeoutMs: 120000, stallWarnMs: 30000, stallAction: 'drop', handshakeTimeoutMs: 30000,
      maxMessageBytes: 268435456, maxWorkerBatch: 256, backend: 'auto',
    });
    expect(Object.keys(c).sort()).toEqual([...CONFIG_KEYS].sort());
  });

  it('does not share default arrays between configs', () => {
    const a = resolveConfig({}, undefined, {});
    a.milestones.push(200);
    a.adamBetas[0] = 0.5;
    const b = resolveConfig({}, undefined, {});
    expect(b.milestones).toEqual([81, 122]);
    expect(b.adamBetas).toEqual([0.9, 0.999]);
  });
});

describe('resolveConfig precedence: flags > env > file > defaults', () => {
  it('layers each source over the next', () => {
    const file = configFile({ lr: 0.05, data: '/from/file', token: 'file-token', epochs: 10, batch: 64 });
    const env = { SVD_TRAIN_DATA: '/from/env', SVD_TRAIN_TOKEN: 'env-token' };
    const c = resolveConfig({ lr: 0.2, batch: undefined }, file, env);
    expect(c.lr).toBe(0.2); // flag beats file
    expect(c.data).toBe('/from/env'); // env beats file
    expect(c.token).toBe('env-token');
    expect(c.epochs).toBe(10); // file beats default
    expect(c.batch).toBe(64); // undefined flag is ignored
    expect(c.momentum).toBe(0.9); // default
    expect(resolveConfig({ data: '/from/flag' }, file, env).data).toBe('/from/flag');
  });

  it('ignores empty env values', () => {
    expect(resolveConfig({}, undefined, { SVD_TRAIN_DATA: '' }).data).toBeNull();
  });

  it('accepts kebab-case flag and file keys', () => {
    const file = configFile({ 'weight-decay': 1e-4 }, 'kebab.json');
    const c = resolveConfig({ 'lambda-s': 0.01, 'step-timeout-ms': 5000, 'stall-warn-ms': 1000 }, file, {});
    expect(c.lambdaS).toBe(0.01);
    expect(c.stepTimeoutMs).toBe(5000);
    expect(c.weightDecay).toBe(1e-4);
  });

  it('accepts an already parsed object as the file layer', () => {
    expect(resolveConfig({}, { epochs: 7 }, {}).epochs).toBe(7);
  });
});

describe('resolveConfig errors', () => {
  it('refuses an unknown flag, naming it and the closest valid key', () => {
    const e = thrown(() => resolveConfig({ lamdaS: 0.1 }, undefined, {}));
    expect(e.code).toBe('CONFIG_UNKNOWN_KEY');
    expect(e.message).toContain('lamdaS');
    expect(e.message).toContain('--lambda-s');
    expect(e.details).toMatchObject({ key: 'lamdaS', suggestion: 'lambdaS' });
  });

  it('refuses an unknown key in the config file, naming the file', () => {
    const file = configFile({ learning_rate: 0.1 }, 'unknown.json');
    const e = thrown(() => resolveConfig({}, file, {}));
    expect(e.code).toBe('CONFIG_UNKNOWN_KEY');
    expect(e.message).toContain('"learning_rate"');
    expect(e.message).toContain(file);
    expect(closestConfigKey('weight_decay')).toBe('weightDecay');
    expect(closestConfigKey('epoch')).toBe('epochs');
  });

  it('names field, value, source and expectation for an invalid value', () => {
    const e = thrown(() => resolveConfig({ lr: -1 }, undefined, {}));
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.message).toMatch(/lr = -1 \(from flag --lr\): expected .*>0/);
    // lr 0 would train nothing (and make the fine-tuning's default lr/10 zero too).
    expect(thrown(() => resolveConfig({ lr: 0 }, undefined, {})).message).toMatch(/lr = 0 .*>0/);
    // JSON has no Infinity: the value is shown as it was given, not as null.
    expect(thrown(() => resolveConfig({ pruneMacs: Infinity }, undefined, {})).message).toContain('pruneMacs = Infinity');
    const e2 = thrown(() => resolveConfig({ optimizer: 'adamw' }, undefined, {}));
    expect(e2.message).toContain('optimizer = "adamw"');
    expect(e2.message).toContain('"sgd"|"adam"');
    const e3 = thrown(() => resolveConfig({ lr: 'fast' }, undefined, {}));
    expect(e3.message).toMatch(/lr = "fast" .*expected number/);
  });

  it("refuses a timeout past setTimeout's range (Node fires a longer one after 1 ms: every step would time out)", () => {
    for (const key of ['stepTimeoutMs', 'stallWarnMs', 'handshakeTimeoutMs']) {
      expect(thrown(() => resolveConfig({ [key]: 3_000_000_000 }, undefined, {})).message).toMatch(new RegExp(`${key} = 3000000000 .*<=2147483647`));
    }
    expect(resolveConfig({ stepTimeoutMs: 2_147_483_647 }, undefined, {}).stepTimeoutMs).toBe(2_147_483_647);
  });

  it('names the file as the source of a bad file value', () => {
    const file = configFile({ batch: 0 }, 'badbatch.json');
    const e = thrown(() => resolveConfig({}, file, {}));
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.message).toContain(`batch = 0 (from "batch" in config file ${file})`);
  });

  it('checks cross-field constraints', () => {
    expect(thrown(() => resolveConfig({ milestones: [100, 50] }, undefined, {})).message).toContain('milestones = [100,50]');
    expect(thrown(() => resolveConfig({ lambdaO: -0.1 }, undefined, {})).code).toBe('CONFIG_INVALID');
    expect(thrown(() => resolveConfig({ batch: 1.5 }, undefined, {})).code).toBe('CONFIG_INVALID');
    expect(thrown(() => resolveConfig({ momentum: 0 }, undefined, {})).message).toContain('--no-nesterov');
    expect(resolveConfig({ momentum: 0, nesterov: false }, undefined, {}).momentum).toBe(0);
    expect(thrown(() => resolveConfig({ stallWarnMs: 200000 }, undefined, {})).message).toContain('stallWarnMs');
    // --step-timeout-ms below the default 30 s warning works alone: the warning follows it.
    const short = resolveConfig({ 'step-timeout-ms': 10000 }, undefined, {});
    expect([short.stepTimeoutMs, short.stallWarnMs]).toEqual([10000, 2500]);
    expect(resolveConfig({ stepTimeoutMs: 10000, stallWarnMs: 9000 }, undefined, {}).stallWarnMs).toBe(9000);
    expect(thrown(() => resolveConfig({ stepTimeoutMs: 10000, stallWarnMs: 20000 }, undefined, {})).message).toContain('stallWarnMs');
    expect(thrown(() => resolveConfig({ adamBetas: [0.9, 1] }, undefined, {})).message).toContain('adamBetas.1 = 1');
    expect(thrown(() => resolveConfig({ sparsityStart: 1 }, undefined, {})).message).toContain('sparsityStart = 1');
    expect(thrown(() => resolveConfig({ svd: false, pruneEnergy: 0.1 }, undefined, {})).message).toMatch(/pruneEnergy = 0\.1 .*null when svd is off: only SVD layers have singular values/);
    expect(thrown(() => resolveConfig({ svd: false, pruneMacs: 13.6e6 }, undefined, {})).message).toContain('pruneMacs = 13600000');
    expect(resolveConfig({ 'sparsity-start': 0.3 }, undefined, {}).sparsityStart).toBe(0.3);
  });

  it('reports a missing or malformed config file', () => {
    expect(thrown(() => resolveConfig({}, join(tmp, 'nope.json'), {})).code).toBe('CONFIG_FILE');
    expect(thrown(() => resolveConfig({}, configFile('{ lr: ', 'broken.json'), {})).code).toBe('CONFIG_FILE');
    expect(thrown(() => resolveConfig({}, configFile([1, 2], 'array.json'), {})).code).toBe('CONFIG_FILE');
  });

  it('refuses a key given twice with different values', () => {
    expect(thrown(() => resolveConfig({ lambdaS: 0.1, 'lambda-s': 0.2 }, undefined, {})).code).toBe('CONFIG_INVALID');
  });
});

describe('configHash', () => {
  const base = resolveConfig({}, undefined, {});

  it('is a sha256 hex that does not depend on key order', () => {
    const h = configHash(base);
    expect(h).toMatch(/^[0-9a-f]{64}$/);
    const reversed = Object.fromEntries(Object.entries(base).reverse()) as typeof base;
    expect(configHash(reversed)).toBe(h);
    expect(canonicalJson({ b: 1, a: { d: [2, 1], c: null } })).toBe('{"a":{"c":null,"d":[2,1]},"b":1}');
  });

  it('changes with fields that affect the math', () => {
    const h = configHash(base);
    expect(configHash({ ...base, lambdaS: 0.08 })).not.toBe(h);
    expect(configHash({ ...base, seed: 1 })).not.toBe(h);
    expect(configHash({ ...base, milestones: [81, 123] })).not.toBe(h);
    expect(configHash({ ...base, limitTrain: 1000 })).not.toBe(h);
  });

  it('ignores run-local fields', () => {
    const h = configHash(base);
    const local = resolveConfig(
      { port: 9000, host: '0.0.0.0', out: '/tmp/x', token: 'secret', resume: true, data: '/d', backend: 'wasm', evalEvery: 5, keepCheckpoints: 1 },
      undefined,
      {},
    );
    expect(configHash(local)).toBe(h);
    expect(configHash(serializeConfig(base))).toBe(h);
    expect(RUN_LOCAL_KEYS).toContain('port');
    expect(RUN_LOCAL_KEYS).not.toContain('lambdaS');
  });
});

describe('serializeConfig / parseConfig', () => {
  it('drops the token and round-trips through JSON', () => {
    const c = resolveConfig({ token: 'secret', lr: 0.02 }, undefined, {});
    const s = serializeConfig(c);
    expect('token' in s).toBe(false);
    expect(JSON.stringify(s)).not.toContain('secret');
    const back = parseConfig(JSON.parse(JSON.stringify(s)));
    expect(back).toEqual({ ...c, token: null });
    expect(configHash(back)).toBe(configHash(c));
    expect(RunConfigSchema.parse({}).model).toBe('resnet20');
  });

  it('parseConfig refuses unknown keys and non-objects', () => {
    expect(thrown(() => parseConfig({ modle: 'resnet20' })).code).toBe('CONFIG_UNKNOWN_KEY');
    expect(thrown(() => parseConfig(null)).code).toBe('CONFIG_INVALID');
  });
});

describe('key case helpers', () => {
  it('converts between flag and field names', () => {
    expect(toKebabCase('lambdaO')).toBe('lambda-o');
    expect(toKebabCase('stepTimeoutMs')).toBe('step-timeout-ms');
    expect(toCamelCase('final-div-factor')).toBe('finalDivFactor');
    for (const k of CONFIG_KEYS) expect(toCamelCase(toKebabCase(k))).toBe(k);
  });
});

describe('ranks (per-layer SVD ranks, e.g. of a pruned checkpoint)', () => {
  const base = resolveConfig({}, undefined, {});

  it('defaults to null and accepts module-name keys with positive integer ranks', () => {
    expect(base.ranks).toBeNull();
    const r = { 'stem.0': 3, 'layers.3.conv1': 5, 'layers.3.shortcut.0': 2, 'layers.12.conv2': 7, fc: 4 };
    expect(parseConfig({ ranks: r }).ranks).toEqual(r);
  });

  it('lets a null flag clear the file\'s ranks', () => {
    expect(resolveConfig({ ranks: null }, { ranks: { fc: 2 } }, {}).ranks).toBeNull();
  });

  it('refuses non-positive or fractional ranks, naming the layer', () => {
    for (const bad of [0, -1, 2.5]) {
      const e = thrown(() => parseConfig({ ranks: { 'layers.3.conv1': bad } }));
      expect(e.code).toBe('CONFIG_INVALID');
      expect(e.message).toContain('ranks.layers.3.conv1');
    }
    expect(thrown(() => resolveConfig({ ranks: 'fc=x' }, undefined, {})).message).toContain('ranks = "fc=x"');
  });

  it('refuses keys that are not SVD module names (typos, tfjs layer names, BN modules)', () => {
    for (const key of ['layers_3_conv1', 'layers.3.bn1', 'layers.3.shortcut.1', 'stem.1', 'fc.U', 'conv1']) {
      const e = thrown(() => parseConfig({ ranks: { [key]: 2 } }));
      expect(e.code).toBe('CONFIG_INVALID');
      expect(e.message).toContain(JSON.stringify(key));
    }
    expect(thrown(() => parseConfig({ ranks: { fc: 2 }, svd: false })).message).toMatch(/svd off/);
  });

  it('is hashed when set (it changes the shapes) and left out when null (old hashes stay valid)', () => {
    const h = configHash(base);
    const a = parseConfig({ ranks: { fc: 4, 'stem.0': 2 } });
    const b = parseConfig({ ranks: { 'stem.0': 2, fc: 4 } });
    expect(configHash(a)).not.toBe(h);
    expect(configHash(b)).toBe(configHash(a));
    expect(configHash(parseConfig({ ranks: { fc: 5, 'stem.0': 2 } }))).not.toBe(configHash(a));
    const { ranks: _r, ...withoutRanks } = serializeConfig(base);
    expect(configHash(withoutRanks as typeof base)).toBe(h);
  });

  it('serializeConfig copies the ranks object and it round-trips through JSON', () => {
    const a = parseConfig({ ranks: { fc: 4 } });
    const s = serializeConfig(a);
    expect(s.ranks).toEqual({ fc: 4 });
    expect(s.ranks).not.toBe(a.ranks);
    expect(parseConfig(JSON.parse(JSON.stringify(s)))).toEqual({ ...a, token: null });
  });
});

describe('sparsityEnd', () => {
  it('defaults to 1 (the term to the last step) and then changes no hash, so older checkpoints keep theirs', () => {
    const base = parseConfig({});
    expect(base.sparsityEnd).toBe(1);
    const { sparsityEnd: _e, ...without } = serializeConfig(base);
    expect(configHash(without as typeof base)).toBe(configHash(base));
    expect(configHash(parseConfig({ sparsityEnd: 0.8 }))).not.toBe(configHash(base));
    expect(configHash(parseConfig({ sparsityEnd: 0.8 }))).not.toBe(configHash(parseConfig({ sparsityEnd: 0.7 })));
  });

  it('takes (sparsityStart, 1] and says why otherwise', () => {
    expect(resolveConfig({ 'sparsity-end': 0.75 }, undefined, {}).sparsityEnd).toBe(0.75);
    expect(resolveConfig({ 'sparsity-start': 0.2, 'sparsity-end': 0.8 }, undefined, {}).sparsityEnd).toBe(0.8);
    expect(thrown(() => resolveConfig({ sparsityEnd: 0 }, undefined, {})).message).toContain('sparsityEnd = 0');
    expect(thrown(() => resolveConfig({ sparsityEnd: 1.5 }, undefined, {})).message).toContain('sparsityEnd = 1.5');
    const e = thrown(() => resolveConfig({ 'sparsity-start': 0.5, 'sparsity-end': 0.4 }, undefined, {}));
    expect(e.message).toContain('sparsityEnd = 0.4');
    expect(e.message).toContain('above sparsityStart (0.5)');
  });
});

describe('cutout', () => {
  it('defaults to 0 (off) and then changes no hash, so older checkpoints keep theirs; a side changes it', () => {
    const base = parseConfig({});
    expect(base.cutout).toBe(0);
    const { cutout: _c, ...without } = serializeConfig(base);
    expect(configHash(without as typeof base)).toBe(configHash(base));
    expect(configHash(parseConfig({ cutout: 16 }))).not.toBe(configHash(base));
    expect(configHash(parseConfig({ cutout: 16 }))).not.toBe(configHash(parseConfig({ cutout: 8 })));
  });

  it('takes an integer side in [0, 32] with augmentation on, and says why otherwise', () => {
    expect(resolveConfig({ cutout: 16 }, undefined, {}).cutout).toBe(16);
    for (const bad of [-1, 33, 2.5]) expect(thrown(() => resolveConfig({ cutout: bad }, undefined, {})).message).toContain(`cutout = ${bad}`);
    const e = thrown(() => resolveConfig({ cutout: 16, augment: false }, undefined, {}));
    expect(e.message).toContain('cutout = 16');
    expect(e.message).toContain('drop --no-augment, or --cutout');
  });
});

describe('distillTraining', () => {
  it('is off by default and never hashed: the training phase\'s own distillation fields say whether it distilled', () => {
    const on = parseConfig({ distillAlpha: 0.7, teacher: 't.svdckpt', distillTraining: true, pruneMacs: 13.6e6, finetuneEpochs: 3 });
    expect(parseConfig({}).distillTraining).toBe(false);
    expect(configHash(on)).toBe(configHash({ ...on, distillTraining: false }));
  });
});

describe('plainEpochs, plainLr (a plain phase before the training)', () => {
  it('is off by default, never hashed (the plain phase is its own run), and takes whole epochs and a positive lr', () => {
    const on = parseConfig({ plainEpochs: 50, plainLr: 0.2 });
    expect([parseConfig({}).plainEpochs, parseConfig({}).plainLr]).toEqual([0, null]);
    expect(configHash(on)).toBe(configHash(parseConfig({})));
    expect(thrown(() => resolveConfig({ plainEpochs: -1 }, undefined, {})).message).toContain('plainEpochs = -1');
    expect(thrown(() => resolveConfig({ plainEpochs: 2.5 }, undefined, {})).message).toContain('plainEpochs = 2.5');
    expect(thrown(() => resolveConfig({ plainLr: 0 }, undefined, {})).message).toContain('plainLr = 0');
  });

  it('refuses a plain phase for a plain run, after --from, or with ranks, naming the fix', () => {
    const plain = thrown(() => resolveConfig({ plainEpochs: 5, svd: false }, undefined, {}));
    expect(plain.message).toContain('plainEpochs = 5');
    expect(plain.message).toContain('drop {"svd": false}');
    const from = thrown(() => resolveConfig({ plainEpochs: 5, from: 'x.svdckpt' }, undefined, {}));
    expect(from.message).toContain('from is set (x.svdckpt)');
    const ranks = thrown(() => resolveConfig({ plainEpochs: 5, ranks: { 'stem.0': 3 } }, undefined, {}));
    expect(ranks.message).toContain('drop --ranks');
  });

  it('lets distillation and --distill-training go without a teacher: the plain model teaches', () => {
    expect(parseConfig({ plainEpochs: 5, distillAlpha: 0.7 }).teacher).toBeNull();
    expect(parseConfig({ plainEpochs: 5, distillAlpha: 0.7, distillTraining: true }).distillTraining).toBe(true);
    expect(thrown(() => resolveConfig({ distillAlpha: 0.7 }, undefined, {})).message).toContain('or with --plain-epochs, where the plain model does');
    expect(thrown(() => resolveConfig({ distillAlpha: 0.7, distillTraining: true, pruneMacs: 1e7, finetuneEpochs: 2 }, undefined, {})).message).toContain('--plain-epochs N so that the plain model teaches');
    // Distilling still needs α > 0.
    expect(thrown(() => resolveConfig({ plainEpochs: 5, distillTraining: true }, undefined, {})).message).toContain('distillTraining = true');
  });
});

describe('distillation (distillAlpha, distillTemperature, teacher, teacherRanks)', () => {
  const base = parseConfig({});

  it('is off by default and then changes no hash, whatever the other distillation fields say', () => {
    expect([base.distillAlpha, base.distillTemperature, base.teacher, base.teacherRanks]).toEqual([0, 4, null, null]);
    const h = configHash(base);
    expect(configHash(parseConfig({ distillTemperature: 2, teacher: 't.svdckpt' }))).toBe(h);
    const { distillAlpha: _a, distillTemperature: _t, teacher: _p, teacherRanks: _r, ...without } = serializeConfig(base);
    expect(configHash(without as typeof base)).toBe(h);
  });

  it('is hashed when on: α, T, the teacher and its ranks each change the math', () => {
    const on = parseConfig({ distillAlpha: 0.5, teacher: 't.svdckpt' });
    const h = configHash(on);
    expect(h).not.toBe(configHash(base));
    for (const other of [{ distillAlpha: 0.6 }, { distillTemperature: 2 }, { teacher: 'u.svdckpt' }, { teacherRanks: { fc: 3 } }]) {
      expect(configHash(parseConfig({ distillAlpha: 0.5, teacher: 't.svdckpt', ...other }))).not.toBe(h);
    }
  });

  it('teacherArch: null by default and then unhashed (older distilled runs keep their hash); hashed when set; only known architectures', () => {
    const on = parseConfig({ distillAlpha: 0.5, teacher: 't.svdckpt' });
    expect(on.teacherArch).toBeNull();
    const { teacherArch: _a, ...without } = serializeConfig(on);
    expect(configHash(without as typeof on)).toBe(configHash(on));
    const spatial = { model: 'resnet20', svd: true, decomposition: 'spatial' } as const;
    expect(configHash(parseConfig({ distillAlpha: 0.5, teacher: 't.svdckpt', teacherArch: spatial }))).not.toBe(configHash(on));
    // Off, it changes nothing (distillation's fields are unhashed then).
    expect(configHash(parseConfig({ teacherArch: spatial }))).toBe(configHash(base));
    expect(thrown(() => resolveConfig({ teacherArch: { ...spatial, model: 'vgg16' } }, undefined, {})).message).toContain('teacherArch.model');
    expect(thrown(() => resolveConfig({ teacherArch: { ...spatial, extra: 1 } }, undefined, {})).message).toContain('teacherArch');
    expect(thrown(() => resolveConfig({ teacherArch: { ...spatial, svd: false }, teacherRanks: { fc: 2 } }, undefined, {})).message).toContain("teacher's svd off");
  });

  it('extraTeachers (an ensemble): empty by default and then unhashed; hashed when given; needs the first teacher and α > 0; at most 8 teachers; their ranks checked', () => {
    const on = parseConfig({ distillAlpha: 0.5, teacher: 't.svdckpt' });
    expect(on.extraTeachers).toEqual([]);
    const { extraTeachers: _x, ...without } = serializeConfig(on);
    expect(configHash(without as typeof on)).toBe(configHash(on));
    const two = parseConfig({ distillAlpha: 0.5, teacher: 't.svdckpt', extraTeachers: [{ teacher: 'u.svdckpt' }] });
    expect(two.extraTeachers).toEqual([{ teacher: 'u.svdckpt', teacherRanks: null, teacherArch: null }]);
    expect(configHash(two)).not.toBe(configHash(on));
    expect(configHash(parseConfig({ distillAlpha: 0.5, teacher: 't.svdckpt', extraTeachers: [{ teacher: 'u.svdckpt', teacherRanks: { fc: 3 } }] }))).not.toBe(configHash(two));
    expect(thrown(() => parseConfig({ extraTeachers: [{ teacher: 'u.svdckpt' }] })).message).toMatch(/extraTeachers.*empty without a teacher.*--teacher CKPT once per teacher/s);
    expect(thrown(() => parseConfig({ teacher: 't.svdckpt', extraTeachers: [{ teacher: 'u.svdckpt' }] })).message).toContain('distillAlpha is 0');
    const many = Array.from({ length: 8 }, (_, i) => ({ teacher: `t${i}.svdckpt` }));
    expect(parseConfig({ distillAlpha: 0.5, teacher: 't.svdckpt', extraTeachers: many.slice(0, 7) }).extraTeachers).toHaveLength(7);
    expect(thrown(() => parseConfig({ distillAlpha: 0.5, teacher: 't.svdckpt', extraTeachers: many })).message).toContain('extraTeachers');
    expect(thrown(() => parseConfig({ distillAlpha: 0.5, teacher: 't', extraTeachers: [{ teacher: 'u', teacherRanks: { 'layers.x': 2 } }] })).message).toContain('extraTeachers.0.teacherRanks.layers.x');
    const plain = { model: 'resnet20', svd: false, decomposition: 'channel' } as const;
    expect(thrown(() => parseConfig({ distillAlpha: 0.5, teacher: 't', extraTeachers: [{ teacher: 'u', teacherArch: plain, teacherRanks: { fc: 2 } }] })).message).toContain("this teacher's svd off");
    expect(thrown(() => parseConfig({ distillAlpha: 0.5, teacher: 't', extraTeachers: [{ teacher: 'u', other: 1 }] })).message).toContain('extraTeachers');
  });

  it('needs a teacher, except in the pipeline with fine-tuning (the trained model teaches)', () => {
    const e = thrown(() => resolveConfig({ distillAlpha: 0.5 }, undefined, {}));
    expect(e.message).toContain('teacher');
    expect(e.message).toContain('--teacher CKPT');
    expect(resolveConfig({ distillAlpha: 0.5, pruneMacs: 13.6e6, finetuneEpochs: 2 }, undefined, {}).teacher).toBeNull();
    expect(() => resolveConfig({ distillAlpha: 0.5, pruneMacs: 13.6e6 }, undefined, {})).toThrow(/teacher/);
  });

  it('refuses α outside [0, 1], a non-positive T and bad teacher ranks, naming the field', () => {
    expect(thrown(() => resolveConfig({ distillAlpha: 1.5, teacher: 't' }, undefined, {})).message).toContain('distillAlpha = 1.5');
    expect(thrown(() => resolveConfig({ distillTemperature: 0 }, undefined, {})).message).toContain('distillTemperature = 0');
    expect(thrown(() => parseConfig({ teacherRanks: { 'layers.x': 2 } })).message).toContain('teacherRanks.layers.x');
    expect(thrown(() => parseConfig({ teacherRanks: { fc: 0 } })).message).toContain('teacherRanks.fc');
  });
});

describe('pipeline keys (start --prune-energy e --finetune-epochs k)', () => {
  it('take numbers, and null clears the energy', () => {
    const c = resolveConfig({ pruneEnergy: 0.01, finetuneEpochs: 10, finetuneLr: 0.02, sweepEnergies: [0.01, 0.05] }, undefined, {});
    expect([c.pruneEnergy, c.finetuneEpochs, c.finetuneLr, c.sweepEnergies]).toEqual([0.01, 10, 0.02, [0.01, 0.05]]);
    expect(resolveConfig({ pruneEnergy: null }, { pruneEnergy: 0.1 }, {}).pruneEnergy).toBeNull();
  });

  it('leave flag text to the CLI: a string is refused, not guessed at', () => {
    expect(thrown(() => resolveConfig({ pruneEnergy: '0.01' }, undefined, {})).message).toMatch(/pruneEnergy = "0.01" \(from flag --prune-energy\)/);
  });

  it('refuses an energy outside [0, 1) and fine-tuning without pruning, naming the fix', () => {
    expect(thrown(() => parseConfig({ pruneEnergy: 1 })).code).toBe('CONFIG_INVALID');
    const e = thrown(() => parseConfig({ finetuneEpochs: 3 }));
    expect(e.code).toBe('CONFIG_INVALID');
    expect(e.message).toMatch(/--prune-energy/);
  });

  it('are not hashed: they change no step of the training phase, so its checkpoints stay resumable', () => {
    const h = configHash(parseConfig({}));
    expect(configHash(parseConfig({ pruneEnergy: 0.05, finetuneEpochs: 2, finetuneLr: 0.01, finetuneLambdaO: 0.1, finetuneWeightDecay: 1e-4, finetuneAverage: 2, sweepEnergies: [0.1] }))).toBe(h);
  });

  it('refuse a negative fine-tuning λ_o or weight decay, naming the key', () => {
    expect(thrown(() => parseConfig({ finetuneLambdaO: -1 })).message).toContain('finetuneLambdaO');
    expect(thrown(() => parseConfig({ finetuneWeightDecay: -1e-4 })).message).toContain('finetuneWeightDecay');
  });

  it('average 0 (off) or 2 to finetuneEpochs of the fine-tuning\'s last epochs, naming the value and the fix', () => {
    expect(parseConfig({ pruneEnergy: 0.01, finetuneEpochs: 5, finetuneAverage: 5 }).finetuneAverage).toBe(5);
    expect(parseConfig({}).finetuneAverage).toBe(0);
    for (const bad of [1, 6, -1, 2.5]) {
      const e = thrown(() => parseConfig({ pruneEnergy: 0.01, finetuneEpochs: 5, finetuneAverage: bad }));
      expect(e.code).toBe('CONFIG_INVALID');
      expect(e.message).toMatch(/finetuneAverage/);
    }
    expect(thrown(() => parseConfig({ pruneEnergy: 0.01, finetuneEpochs: 5, finetuneAverage: 6 })).message).toMatch(/from 2 to finetuneEpochs \(5\), got 6.*--finetune-average 5/);
  });

  it('take a MAC budget instead of an energy, but not both', () => {
    const c = resolveConfig({ pruneMacs: 13.6e6, finetuneEpochs: 2 }, undefined, {});
    expect([c.pruneMacs, c.pruneEnergy, c.finetuneEpochs]).toEqual([13.6e6, null, 2]);
    const both = thrown(() => parseConfig({ pruneMacs: 1e6, pruneEnergy: 0.01 }));
    expect(both.code).toBe('CONFIG_INVALID');
    expect(both.message).toMatch(/pruneMacs|prune-macs/);
    expect(thrown(() => parseConfig({ pruneMacs: -5 })).code).toBe('CONFIG_INVALID');
    expect(configHash(parseConfig({ pruneMacs: 1e6 }))).toBe(configHash(parseConfig({})));
  });
});
