/**
 * `start --plain-epochs N`: the recipe that starts from a trained plain ResNet in one command. The
 * plain model trains in <out>/plain, is written as its exact SVD, the method trains from it (taught
 * by it, with --distill-training), prunes and fine-tunes; pipeline.json shows the plain model's
 * point; --resume on the finished run redoes nothing. Tiny synthetic data: one step per phase.
 */
import { cpSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadCheckpoint, parseConfig } from '@svd-train/core';
import { finalCheckpointPath, freePort, requireBuild, runCoord, startCoordinator, syntheticData, tempDir, tinyRunFlags } from './harness.js';

describe('start --plain-epochs: plain → decompose → train → prune → fine-tune', () => {
  let data: string;
  let out: string;
  let flags: string[];
  let log: string;

  beforeAll(async () => {
    requireBuild();
    data = syntheticData(12, 12);
    out = tempDir();
    flags = [
      ...tinyRunFlags({ data, out, port: await freePort(), epochs: 1, limitTrain: 12, batch: 12 }),
      '--spawn', '1',
      '--plain-epochs', '2',
      '--lr', '0.05',
      '--prune-energy', '0.2',
      '--sweep-energies', '0.4',
      '--finetune-epochs', '1',
      '--distill-alpha', '0.5',
      '--distill-training',
    ];
    const c = startCoordinator(flags);
    expect(await c.exited, c.output().slice(-3000)).toBe(0);
    log = c.output();
  }, 280_000);

  it('trains the plain model in <out>/plain at the default recipe\'s lr, without SVD, distillation or pruning', () => {
    const plain = JSON.parse(readFileSync(join(out, 'plain', 'config.json'), 'utf8'));
    expect([plain.svd, plain.epochs, plain.lr, plain.plainEpochs, plain.distillAlpha, plain.teacher, plain.pruneEnergy, plain.finetuneEpochs, plain.from]).toEqual([false, 2, 0.1, 0, 0, null, null, 0, null]);
    expect(loadCheckpoint(finalCheckpointPath(join(out, 'plain'))).step).toBe(2);
  });

  it('writes its exact SVD and trains the method from it, taught by the plain model', async () => {
    const plainCkpt = finalCheckpointPath(join(out, 'plain'));
    const decomposed = join(out, 'plain', 'decomposed-channel.svdckpt');
    const d = loadCheckpoint(decomposed);
    expect([parseConfig(d.config).svd, d.step, d.metrics?.['decomposedFrom']]).toEqual([true, 2, plainCkpt]);
    const train = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8'));
    expect([train.svd, train.from, train.teacher, train.lr, train.plainEpochs, train.distillAlpha]).toEqual([true, decomposed, plainCkpt, 0.05, 0, 0.5]);
    // The fine-tuning is distilled from the plain model too, not from the trained SVD model.
    const ft = JSON.parse(readFileSync(join(out, 'finetune', 'config.json'), 'utf8'));
    expect([ft.teacher, ft.from]).toEqual([plainCkpt, JSON.parse(readFileSync(join(out, 'pipeline.json'), 'utf8')).prunedCheckpoint]);
    // Decomposed at full rank: the same function, so `eval` of both gives the same hits.
    const hits = async (p: string) => /test accuracy [\d.]+% \((\d+)\//.exec((await runCoord(['eval', p, '--data', data, '--backend', 'wasm'])).out)?.[1];
    expect(await hits(decomposed)).toBe(await hits(plainCkpt));
  });

  it("records the plain model's point in pipeline.json and prints it with the pipeline's table", async () => {
    const p = JSON.parse(readFileSync(join(out, 'pipeline.json'), 'utf8'));
    const plainCkpt = finalCheckpointPath(join(out, 'plain'));
    expect([p.pretrained.epochs, p.pretrained.checkpoint, p.pretrained.macs]).toEqual([2, plainCkpt, p.plain.macs]);
    const e = await runCoord(['eval', plainCkpt, '--data', data, '--backend', 'wasm']);
    expect(e.out).toContain(`test accuracy ${(100 * p.pretrained.acc).toFixed(2)}%`);
    expect(log).toMatch(/plain start, 2 epoch\(s\)\s+test accuracy/);
    expect(readFileSync(join(out, 'report.html'), 'utf8')).toContain('plain resnet20 trained 2 epoch(s), the start of the method (decomposed)');
  });

  it("records each phase's time: its epochs' steps and evaluations from its metrics, and the pruning's", () => {
    const p = JSON.parse(readFileSync(join(out, 'pipeline.json'), 'utf8'));
    const epochsSeconds = (dir: string) => {
      const rows = readFileSync(join(dir, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l)).filter((r) => r.kind === 'epoch');
      expect(rows.length).toBeGreaterThan(0);
      return rows.reduce((acc, r) => acc + r.epochMs + (r.evalMs ?? 0), 0) / 1000;
    };
    expect(Object.keys(p.seconds).sort()).toEqual(['finetuning', 'plain', 'pruning', 'training']);
    expect(p.seconds.plain).toBeCloseTo(epochsSeconds(join(out, 'plain')), 9);
    expect(p.seconds.training).toBeCloseTo(epochsSeconds(out), 9);
    expect(p.seconds.finetuning).toBeCloseTo(epochsSeconds(join(out, 'finetune')), 9);
    expect(p.seconds.pruning).toBeGreaterThan(0);
    expect(log).toMatch(/time: plain \d.* \+ training .* \+ pruning .* \+ fine-tuning .* = /);
  });

  it('--resume on the finished run redoes nothing: every phase is found finished, the decomposition reused', async () => {
    const before = readFileSync(join(out, 'plain', 'decomposed-channel.svdckpt'));
    const seconds = JSON.parse(readFileSync(join(out, 'pipeline.json'), 'utf8')).seconds;
    const c = startCoordinator([...flags, '--resume']);
    expect(await c.exited, c.output().slice(-3000)).toBe(0);
    const o = c.output();
    expect(o).toContain('already finished this phase');
    expect(o).toContain('reusing');
    expect(o).toContain('decomposed from this checkpoint');
    expect(readFileSync(join(out, 'plain', 'decomposed-channel.svdckpt')).equals(before)).toBe(true);
    // Nothing ran again, so no phase took longer: the reused pruning keeps its first time.
    expect(JSON.parse(readFileSync(join(out, 'pipeline.json'), 'utf8')).seconds).toEqual(seconds);
  }, 200_000);

  it("serves another decomposition and λ_o: a spatial run resumes the channel run's plain phase copied into its folder", async () => {
    const other = tempDir();
    cpSync(join(out, 'plain'), join(other, 'plain'), { recursive: true });
    const at = flags.indexOf('--out') + 1;
    const spatial = [...flags.slice(0, at), other, ...flags.slice(at + 1), '--decomposition', 'spatial', '--lambda-o', '0.5', '--resume'];
    const c = startCoordinator(spatial);
    expect(await c.exited, c.output().slice(-3000)).toBe(0);
    expect(c.output()).toContain('already finished this phase');
    const decomposed = join(other, 'plain', 'decomposed-spatial.svdckpt');
    expect(parseConfig(loadCheckpoint(decomposed).config).decomposition).toBe('spatial');
    const train = JSON.parse(readFileSync(join(other, 'config.json'), 'utf8'));
    expect([train.decomposition, train.lambdaO, train.from]).toEqual(['spatial', 0.5, decomposed]);
    // The plain phase was not trained again: its checkpoints are the copied ones.
    expect(loadCheckpoint(finalCheckpointPath(join(other, 'plain'))).step).toBe(2);
    expect(readFileSync(finalCheckpointPath(join(other, 'plain'))).equals(readFileSync(finalCheckpointPath(join(out, 'plain'))))).toBe(true);
  }, 200_000);

  it('refuses a fresh run into a folder that holds a run before training anything, and --plain-epochs with --from', async () => {
    const again = startCoordinator(flags);
    expect(await again.exited).toBe(2);
    expect(again.output()).toContain('already holds a run');
    expect(again.output()).not.toContain('plain phase:');
    const from = startCoordinator([...tinyRunFlags({ data, out: tempDir(), port: await freePort() }), '--plain-epochs', '1', '--from', join(out, 'plain', 'decomposed-channel.svdckpt')]);
    expect(await from.exited).toBe(2);
    expect(from.output()).toContain('plainEpochs');
    expect(from.output()).toContain('the plain phase makes the starting point itself');
  });
});
