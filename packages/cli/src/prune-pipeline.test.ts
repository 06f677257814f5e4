import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { configHash, parseConfig, serializeConfig, type RunConfig } from '@svd-train/core';
import { buildResNetForConfig, pruneByEnergy, svdRanks } from '@svd-train/layers';
import { writePrunedCheckpoint } from './checkpoint-model.js';
import { checkpointFor } from './test-support/checkpoints.js';
import { checkMacBudget, checkpointsForEpochs, finetuneConfig, reusablePipeline, type PipelineExpectation } from './prune-pipeline.js';
import type { PipelinePoint, PipelineSummary } from './report-pipeline.js';

const tmp = mkdtempSync(join(tmpdir(), 'svd-pipeline-'));
afterAll(() => rmSync(tmp, { recursive: true, force: true }));

const cfg = parseConfig({ model: 'resnet20', decomposition: 'channel', pruneEnergy: 0.1, finetuneEpochs: 2, sweepEnergies: [0.05, 0.1] });
const point = (energy: number): PipelinePoint => ({ energy, acc: 0.5, loss: 1.2, macs: 1e7, params: 1000, exportParams: 900 });
const want: PipelineExpectation = { step: 7, energy: 0.1, macWeight: 0, energies: [0.05, 0.1], testImages: 100, bnRecalibrationImages: 64 };

/** A run folder as the pipeline leaves it: the model pruned at e (from `of`'s config) and pipeline.json. */
function runDir(name: string, of: RunConfig = cfg, edit: (p: PipelineSummary) => unknown = (p) => p): { dir: string; ranks: Record<string, number> } {
  const dir = join(tmp, name);
  mkdirSync(dir);
  const model = buildResNetForConfig(of);
  const trained = checkpointFor(of, model, 7);
  const { model: pruned } = pruneByEnergy(model, 0.1);
  const ranks = svdRanks(pruned);
  const prunedCheckpoint = writePrunedCheckpoint(trained, of, pruned, 0.1, join(dir, 'pruned-e0.1.svdckpt'), join(dir, 'trained.svdckpt'));
  pruned.dispose();
  model.dispose();
  const summary: PipelineSummary = {
    model: 'resnet20',
    energy: 0.1,
    trainedStep: 7,
    testImages: 100,
    bnRecalibrationImages: 64,
    plain: { macs: 4e7, params: 270000 },
    trained: point(0),
    pruned: point(0.1),
    prunedCheckpoint,
    finetuned: null,
    sweep: [point(0), point(0.05), point(0.1)],
  };
  writeFileSync(join(dir, 'pipeline.json'), JSON.stringify(edit(summary)));
  return { dir, ranks };
}

describe('reusablePipeline (start --prune-energy … --resume)', () => {
  it('reuses the sweep and the pruned model of the same trained checkpoint and settings, with the pruned ranks', () => {
    const { dir, ranks } = runDir('same');
    const r = reusablePipeline(dir, { ...cfg, resume: true }, want);
    expect(r && 'summary' in r ? r.ranks : r).toEqual(ranks);
    expect(r && 'summary' in r ? r.summary.sweep.map((q) => q.energy) : null).toEqual([0, 0.05, 0.1]);
  });

  it('is null without a pipeline.json (nothing to reuse, nothing to say)', () => {
    const dir = join(tmp, 'none');
    mkdirSync(dir);
    expect(reusablePipeline(dir, cfg, want)).toBeNull();
  });

  it.each([
    ['another trained checkpoint', { step: 9 }, /trained checkpoint step 7, this run 9/],
    ['another energy', { energy: 0.2, energies: [0.05, 0.2] }, /energy 0\.1, this run 0\.2/],
    ['another sweep', { energies: [0.02, 0.05, 0.1] }, /sweep energies "0\.05,0\.1", this run "0\.02,0\.05,0\.1"/],
    ['fewer test images', { testImages: 50 }, /test images 100, this run 50/],
    // A pipeline.json without the field (before --prune-mac-weight) shared the energy out evenly.
    ['another MAC weight', { macWeight: 0.5 }, /MAC weight 0, this run 0\.5/],
  ])('redoes the work for %s, and says why', (name, change, reason) => {
    const { dir } = runDir(`differs-${name.replace(/ /g, '-')}`);
    const r = reusablePipeline(dir, cfg, { ...want, ...change });
    expect(r && 'reason' in r ? r.reason : r).toMatch(reason);
  });

  it('refuses a file that is not what the pipeline writes, an older one without the trained step, and a pruned checkpoint that is gone', () => {
    const junk = runDir('junk');
    writeFileSync(join(junk.dir, 'pipeline.json'), '{"energy": 0.1, "sweep": [');
    expect((reusablePipeline(junk.dir, cfg, want) as { reason: string }).reason).toMatch(/is not JSON/);
    const fields = runDir('fields', cfg, (p) => ({ ...p, trained: { acc: 'high' } }));
    expect((reusablePipeline(fields.dir, cfg, want) as { reason: string }).reason).toMatch(/does not have the fields a pipeline writes/);
    const old = runDir('old', cfg, (p) => ({ ...p, trainedStep: undefined }));
    expect((reusablePipeline(old.dir, cfg, want) as { reason: string }).reason).toMatch(/trained checkpoint step null, this run 7/);
    const gone = runDir('gone');
    rmSync(join(gone.dir, 'pruned-e0.1.svdckpt'));
    expect((reusablePipeline(gone.dir, cfg, want) as { reason: string }).reason).toMatch(/pruned-e0\.1\.svdckpt, is gone/);
  });

  it('refuses a pruned checkpoint of another run (another config), so two runs never mix', () => {
    const { dir } = runDir('other-run', { ...cfg, lambdaO: 0.5 });
    expect((reusablePipeline(dir, cfg, want) as { reason: string }).reason).toMatch(/is not this run's model pruned at e=0\.1 from step 7/);
  });
});

describe('--finetune-average: how many checkpoints to keep', () => {
  it('keeps enough for k epochs: each end, each checkpointEvery step and the early one', () => {
    // CIFAR-10 at batch 128: 391 steps an epoch, checkpoints every 200 steps and at its end.
    expect(checkpointsForEpochs(5, { checkpointEvery: 200, batch: 128, limitTrain: null }, 50_000)).toBe(5 * 3 + 1);
    expect(checkpointsForEpochs(5, { checkpointEvery: 391, batch: 128, limitTrain: null }, 50_000)).toBe(5 * 2 + 1);
    expect(checkpointsForEpochs(2, { checkpointEvery: 0, batch: 128, limitTrain: null }, 50_000)).toBe(3);
    expect(checkpointsForEpochs(2, { checkpointEvery: 200, batch: 12, limitTrain: 12 }, 50_000)).toBe(2 * 2 + 1);
    // The split's own size: 12 images at batch 12 are one step an epoch with or without limitTrain.
    expect(checkpointsForEpochs(2, { checkpointEvery: 200, batch: 12, limitTrain: null }, 12)).toBe(2 * 2 + 1);
  });
});

describe('finetuneConfig: the fine-tuning phase\'s run config', () => {
  const train = parseConfig({ model: 'resnet20', pruneMacs: 13.6e6, finetuneEpochs: 45, lr: 0.05, lambdaO: 1, lambdaS: 0.025, weightDecay: 5e-4 });
  const ranks = { fc: 9 };
  const ft = (c: RunConfig) => finetuneConfig(c, '/r/pruned.svdckpt', ranks, join(tmp, 'no-such-finetune'), null, '/r/trained.svdckpt', 50_000);

  it('keeps the training\'s λ_o and weight decay by default, at lr / 10, without the sparsity term or another pipeline', () => {
    const c = ft(train);
    expect(c).toMatchObject({ from: '/r/pruned.svdckpt', ranks, epochs: 45, lr: 0.005, lambdaO: 1, weightDecay: 5e-4, lambdaS: 0, pruneEnergy: null, pruneMacs: null, finetuneEpochs: 0, resume: false });
    expect(() => parseConfig(serializeConfig(c))).not.toThrow();
  });

  it('takes --finetune-lr, --finetune-lambda-o and --finetune-weight-decay for the fine-tuning alone', () => {
    const c = ft({ ...train, finetuneLr: 0.01, finetuneLambdaO: 0.1, finetuneWeightDecay: 1e-4 });
    expect([c.lr, c.lambdaO, c.weightDecay]).toEqual([0.01, 0.1, 1e-4]);
    // 0 is a value, not "unset": no orthogonality term, no decay.
    const z = ft({ ...train, finetuneLambdaO: 0, finetuneWeightDecay: 0 });
    expect([z.lambdaO, z.weightDecay]).toEqual([0, 0]);
    // The fine-tuning's own checkpoints hash them: a resume with other values is refused, not mixed.
    expect(configHash(c)).not.toBe(configHash(ft(train)));
  });

  it('is distilled from the trained model unless a teacher is named', () => {
    const d = { alpha: 0.7, temperature: 4, teacher: null, teacherRanks: null, teacherArch: null, extraTeachers: [] };
    const c = finetuneConfig(train, '/r/p.svdckpt', ranks, join(tmp, 'x'), d, '/r/trained.svdckpt', 50_000);
    expect([c.distillAlpha, c.teacher]).toEqual([0.7, '/r/trained.svdckpt']);
  });
});

describe('checkMacBudget', () => {
  it('refuses a budget below every layer at rank 1 before any training, naming the floor', () => {
    for (const decomposition of ['channel', 'spatial'] as const) {
      const base = { model: 'resnet20', decomposition, finetuneEpochs: 2 };
      const floor = checkMacBudget(parseConfig({ ...base, pruneMacs: 40e6 }));
      expect(floor).toBeGreaterThan(0);
      expect(floor).toBeLessThan(13.6e6);
      // The floor itself passes; one MAC less does not, and the message says what to give instead.
      expect(checkMacBudget(parseConfig({ ...base, pruneMacs: floor! }))).toBe(floor);
      expect(() => checkMacBudget(parseConfig({ ...base, pruneMacs: floor! - 1 }))).toThrow(new RegExp(`below the least.*${floor} MACs per image.*--prune-macs ${floor} or more`));
    }
  });

  it('checks nothing without a budget', () => {
    expect(checkMacBudget(parseConfig({ model: 'resnet20', pruneEnergy: 0.01 }))).toBeNull();
  });
});
