/**
 * The whole method in one command: `start --prune-energy e --sweep-energies … --finetune-epochs 1`
 * trains, evaluates the trained model, prunes at a sweep of energies (the accuracy-vs-MACs curve),
 * saves the model pruned at e, fine-tunes it in <out>/finetune with its own workers, and writes
 * pipeline.json and a report that shows all of it. Tiny synthetic data: one step per phase.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { latestCheckpoint, loadCheckpoint } from '@svd-train/core';
import { freePort, requireBuild, startCoordinator, startWorker, stepRecords, syntheticData, tempDir, tinyRunFlags, waitForPort } from './harness.js';

interface Point { energy: number; acc: number; macs: number; params: number; exportParams: number }

describe('start --prune-energy --finetune-epochs: train → prune → fine-tune', () => {
  let out: string;
  let log: string;
  let p: {
    energy: number;
    testImages: number;
    bnRecalibrationImages: number;
    plain: { macs: number; params: number };
    trained: Point;
    pruned: Point;
    prunedCheckpoint: string;
    finetuned: (Point & { epochs: number; lr: number; run: string }) | null;
    averaged: (Point & { epochs: number; run: string; checkpoint: string }) | null;
    sweep: Point[];
  };

  beforeAll(async () => {
    requireBuild();
    const data = syntheticData(12, 12);
    out = tempDir();
    const port = await freePort();
    const c = startCoordinator([
      ...tinyRunFlags({ data, out, port, epochs: 1, limitTrain: 12, batch: 12 }),
      '--spawn', '1',
      '--prune-energy', '0.2',
      '--sweep-energies', '0.05,0.4',
      // Three one-step epochs of fine-tuning, then the mean of the last two.
      '--finetune-epochs', '3',
      '--finetune-average', '2',
      // Distillation belongs to the fine-tuning: the trained model teaches the pruned one.
      '--distill-alpha', '0.5',
      '--distill-temperature', '2',
    ]);
    expect(await c.exited, c.output().slice(-3000)).toBe(0);
    log = c.output();
    p = JSON.parse(readFileSync(join(out, 'pipeline.json'), 'utf8'));
  }, 280_000);

  it('evaluates the trained model and every sweep energy; the trained full-rank model costs exactly the plain ResNet-20', () => {
    expect(p.energy).toBe(0.2);
    expect(p.testImages).toBe(12);
    // Each pruned model's BN statistics are re-estimated on the (limited) train split first.
    expect(p.bnRecalibrationImages).toBe(12);
    expect(log).toContain('batch-norm statistics re-estimated on 12 training images first');
    expect(p.sweep.map((q) => q.energy)).toEqual([0, 0.05, 0.2, 0.4]);
    expect(p.trained.macs).toBe(p.plain.macs);
    // Every layer merged at full rank: the same weights as the plain model, BN statistics included.
    expect(p.trained.exportParams).toBe(p.plain.params);
    for (let i = 1; i < p.sweep.length; i++) expect(p.sweep[i]!.macs).toBeLessThanOrEqual(p.sweep[i - 1]!.macs);
    expect(p.pruned.macs).toBeLessThan(p.trained.macs);
    for (const q of p.sweep) expect(q.acc).toBeGreaterThanOrEqual(0);
  });

  it('saves the model pruned at e with its ranks, and fine-tunes it in <out>/finetune without the sparsity term', () => {
    expect(existsSync(p.prunedCheckpoint)).toBe(true);
    const pruned = loadCheckpoint(p.prunedCheckpoint);
    const ranks = pruned.config.ranks!;
    const ft = JSON.parse(readFileSync(join(out, 'finetune', 'config.json'), 'utf8'));
    expect([ft.ranks, ft.lambdaS, ft.epochs, ft.lr, ft.from, ft.pruneEnergy, ft.finetuneAverage]).toEqual([ranks, 0, 3, 0.01, p.prunedCheckpoint, null, 0]);
    expect(existsSync(join(out, 'finetune', 'metrics.jsonl'))).toBe(true);
    expect(p.finetuned).not.toBeNull();
    expect([p.finetuned!.epochs, p.finetuned!.macs]).toEqual([3, p.pruned.macs]);
  });

  it("averages the fine-tuning's last 2 epochs: their parameters' mean, batch norm re-estimated, evaluated and saved", () => {
    const a = p.averaged!;
    expect([a.epochs, a.macs, a.run]).toEqual([2, p.pruned.macs, 'finetune']);
    expect(a.acc).toBeGreaterThanOrEqual(0);
    expect(a.checkpoint).toBe(join(out, 'finetune', 'averaged-last2.svdckpt'));
    const avg = loadCheckpoint(a.checkpoint);
    expect(avg.metrics!['bnRecalibratedImages']).toBe(12);
    const from = (avg.metrics!['averagedFrom'] as string[]).map((f) => loadCheckpoint(f));
    // The last two epoch ends (one step each), not the first.
    expect(from.map((c) => c.step)).toEqual([2, 3]);
    expect(avg.params.map((t) => t.name)).toEqual(from[0]!.params.map((t) => t.name));
    avg.params.forEach((t, i) => {
      const [x, y] = [from[0]!.params[i]!.data, from[1]!.params[i]!.data];
      t.data.forEach((v, j) => expect(v).toBeCloseTo((x[j]! + y[j]!) / 2, 6));
    });
    expect(from[0]!.params.some((t, i) => t.data.some((v, j) => v !== from[1]!.params[i]!.data[j]))).toBe(true);
    expect(log).toContain("pipeline: averaging the fine-tuning's last 2 epochs (steps 2, 3), batch-norm statistics re-estimated on 12 training images");
    expect(log).toMatch(/average of last 2 epochs\s+test accuracy/);
  });

  it('distills only while fine-tuning, from the trained checkpoint it pruned, and logs the distillation term', () => {
    const train = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect([train.distillAlpha, train.teacher]).toEqual([0, null]);
    const ft = JSON.parse(readFileSync(join(out, 'finetune', 'config.json'), 'utf8'));
    expect([ft.distillAlpha, ft.distillTemperature, ft.teacherRanks]).toEqual([0.5, 2, null]);
    expect(ft.teacher).toMatch(/[/\\]checkpoints[/\\]ckpt-\d+\.svdckpt$/);
    expect(loadCheckpoint(ft.teacher).params.find((t) => t.name === 'fc.s')!.shape).toEqual([10]);
    expect(log).toContain(`distilling from --teacher ${ft.teacher}`);
    const steps = readFileSync(join(out, 'finetune', 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.kind === 'step');
    expect(steps.length).toBeGreaterThan(0);
    for (const r of steps) expect(r.loss.distill).toBeGreaterThan(0);
    const trainSteps = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.kind === 'step');
    for (const r of trainSteps) expect(r.loss.distill).toBeUndefined();
  });

  it('prints the before / after table and writes the report with the curve and the fine-tuned point', () => {
    expect(log).toMatch(/pipeline result on 12 test images/);
    expect(log).toMatch(/fine-tuned 3 epoch\(s\)\s+test accuracy/);
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    expect(html).toContain('Test accuracy vs MACs per image');
    expect(html).toContain('fine-tuned (e=0.2, 3 ep)');
    expect(html).toContain("average of the fine-tuning's last 2 epochs");
    expect(html).toContain('<td>trained, before pruning</td>');
    expect(html).toContain('<td>plain resnet20 (reference)</td>');
  });
});

describe('start --distill-training: the named teachers teach the training and the fine-tuning', () => {
  it('distills every training step and every fine-tuning step from --teacher, repeated: an ensemble of two', async () => {
    requireBuild();
    const data = syntheticData(12, 12);
    // The teacher: a plain one-step run of the same data.
    const teacherOut = tempDir();
    const t = startCoordinator([...tinyRunFlags({ data, out: teacherOut, port: await freePort(), epochs: 1, limitTrain: 12, batch: 12 }), '--spawn', '1']);
    expect(await t.exited, t.output().slice(-3000)).toBe(0);
    const teacher = latestCheckpoint(join(teacherOut, 'checkpoints'))!.path;
    const out = tempDir();
    const c = startCoordinator([
      ...tinyRunFlags({ data, out, port: await freePort(), epochs: 1, limitTrain: 12, batch: 12 }),
      '--spawn', '1', '--prune-energy', '0.2', '--sweep-energies', '0.4', '--finetune-epochs', '1',
      '--teacher', teacher, '--teacher', teacher, '--distill-alpha', '0.5', '--distill-training',
    ]);
    expect(await c.exited, c.output().slice(-3000)).toBe(0);
    // Each phase's worker built both teachers and took both over the wire.
    expect(c.output().match(/distilling \(α 0\.5, T 4\) from 2 teachers/g)).toHaveLength(2);
    for (const dir of [out, join(out, 'finetune')]) {
      const cfg = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8'));
      expect([cfg.distillAlpha, cfg.teacher]).toEqual([0.5, teacher]);
      expect(cfg.extraTeachers).toEqual([{ teacher, teacherRanks: null, teacherArch: null }]);
      const steps = stepRecords(dir);
      expect(steps.length).toBe(1);
      for (const r of steps) expect(r.loss.distill).toBeGreaterThan(0);
    }
  }, 240_000);
});

describe('the pipeline with a worker started by hand (no --spawn)', () => {
  it('tells the worker to reconnect after the training, so that it fine-tunes too, then to exit', async () => {
    requireBuild();
    const data = syntheticData(12, 12);
    const out = tempDir();
    const port = await freePort();
    const c = startCoordinator([
      ...tinyRunFlags({ data, out, port, epochs: 1, limitTrain: 12, batch: 12 }),
      '--prune-energy', '0.2', '--sweep-energies', '0.4', '--finetune-epochs', '1',
    ]);
    await waitForPort(port, 60_000, c);
    const w = startWorker(port, ['--data', data]);
    try {
      expect(await c.exited, c.output().slice(-3000)).toBe(0);
      expect(await w.exited, w.output().slice(-3000)).toBe(0);
    } finally {
      w.kill('SIGKILL');
    }
    expect(w.output()).toMatch(/connection lost \(training finished; the coordinator goes on with another run\); reconnecting/);
    expect(w.output()).toMatch(/worker done after 2 steps: training finished/);
    expect(stepRecords(out).length).toBe(1);
    expect(stepRecords(join(out, 'finetune')).length).toBe(1);
    expect(JSON.parse(readFileSync(join(out, 'pipeline.json'), 'utf8')).finetuned).not.toBeNull();
  }, 240_000);
});
