/**
 * Resume after killing the coordinator (kill -9 after a mid-run checkpoint) must reach the same
 * parameters as an uninterrupted run: same data order, same augmentation, same optimizer state.
 * The workers are separate processes that reconnect (with backoff) to the restarted coordinator.
 * A pipeline stopped while fine-tuning resumes its fine-tuning (reusing its sweep and pruned model),
 * and a fresh start into a folder that holds a run is refused.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { epochRecords, finalCheckpoint, freePort, freezeWhen, maxDiff, requireBuild, startCoordinator, startWorker, stepRecords, syntheticData, tempDir, tinyRunFlags, waitForPort } from './harness.js';

/** Same float32 ops in the same order on both runs: the tolerance only absorbs nothing-but-noise. */
const RESUME_TOL = 1e-6;

describe('resume', () => {
  it('kill -9 of the coordinator then --resume equals the uninterrupted run', async () => {
    requireBuild();
    const data = syntheticData(40, 12);
    const common = (out: string, port: number) => [...tinyRunFlags({ data, out, port, epochs: 2, limitTrain: 32, batch: 8 }), '--checkpoint-every', '2'];

    // A: uninterrupted.
    const outA = tempDir();
    const portA = await freePort();
    const a = startCoordinator([...common(outA, portA), '--spawn', '1']);
    expect(await a.exited, a.output().slice(-3000)).toBe(0);

    // B: killed after its first step checkpoint, then resumed on the same port.
    const outB = tempDir();
    const portB = await freePort();
    const b1 = startCoordinator(common(outB, portB));
    await waitForPort(portB, 60_000, b1);
    const w = startWorker(portB, ['--data', data]);
    try {
      const ckDir = join(outB, 'checkpoints');
      // Frozen from the moment a checkpoint and 3 steps are on disk to the kill: mid-run on any machine.
      await freezeWhen(b1, () => existsSync(ckDir) && readdirSync(ckDir).length > 0 && stepRecords(outB).length >= 3, 'checkpoint');
      const doneAtKill = stepRecords(outB).length;
      b1.kill('SIGKILL');
      await b1.exited;
      expect(doneAtKill, 'the kill must land mid-run').toBeLessThan(8);
      const b2 = startCoordinator([...common(outB, portB), '--resume']);
      expect(await b2.exited, b2.output().slice(-3000)).toBe(0);
      expect(w.output()).toMatch(/reconnect/i);
      expect(b2.output()).toMatch(/resuming from \S+ \(step [1-9]/);
      expect(b2.output()).not.toMatch(/epoch totals/);
    } finally {
      w.kill('SIGKILL');
    }
    // metrics.jsonl has every step once: the lines the killed run wrote past its checkpoint were dropped.
    expect(stepRecords(outB).map((s) => s.step)).toEqual(stepRecords(outA).map((s) => s.step));
    // The epoch the kill landed in reports all its steps: its totals went on from the checkpoint's.
    const epochTotals = (out: string) => epochRecords(out).map((e) => [e.epoch, e.trainLoss, e.trainAcc]);
    expect(epochTotals(outB)).toEqual(epochTotals(outA));
    const ca = finalCheckpoint(outA);
    const cb = finalCheckpoint(outB);
    expect(cb.step).toBe(ca.step);
    const p = maxDiff(ca.params, cb.params);
    expect(p.diff, `worst at ${p.where}`).toBeLessThanOrEqual(RESUME_TOL);
    const bu = maxDiff(ca.buffers, cb.buffers);
    expect(bu.diff, `worst at ${bu.where}`).toBeLessThanOrEqual(RESUME_TOL);
  });

  it('a pipeline stopped while fine-tuning: a fresh start there is refused, --resume goes on with the fine-tuning from its checkpoint and ends as the uninterrupted pipeline', async () => {
    requireBuild();
    const data = syntheticData(24, 12);
    // 2 training steps, then 10 fine-tuning steps with a checkpoint every 2.
    const flags = (out: string, port: number) => [
      ...tinyRunFlags({ data, out, port, epochs: 1, limitTrain: 24, batch: 12 }),
      '--spawn', '1', '--checkpoint-every', '2', '--prune-energy', '0.2', '--sweep-energies', '0.4', '--finetune-epochs', '5',
    ];
    const outA = tempDir();
    const a = startCoordinator(flags(outA, await freePort()));
    expect(await a.exited, a.output().slice(-3000)).toBe(0);

    // B: stopped (SIGTERM, as Ctrl-C) once the fine-tuning has written a checkpoint.
    const outB = tempDir();
    const portB = await freePort();
    const ftB = join(outB, 'finetune');
    const b1 = startCoordinator(flags(outB, portB));
    // Frozen from the first fine-tuning checkpoint to the signal, so the stop lands mid-fine-tuning.
    const ftCheckpointed = () => existsSync(join(ftB, 'checkpoints')) && readdirSync(join(ftB, 'checkpoints')).some((f) => f.endsWith('.svdckpt'));
    await freezeWhen(b1, ftCheckpointed, 'fine-tuning checkpoint', 180_000);
    const stepsAtStop = stepRecords(ftB).length;
    // As a terminal's Ctrl-C under `pnpm svd-coord` arrives: the signal, and its echo forwarded by
    // pnpm, which may land while the stop runs or as the process exits (the worst moment: node's
    // teardown closes the signal handlers, so there it would kill the process by SIGINT).
    b1.kill('SIGTERM');
    b1.kill('SIGCONT');
    expect(stepsAtStop, 'the stop must land mid-fine-tuning').toBeLessThan(10);
    await new Promise((r) => setTimeout(r, 10));
    b1.kill('SIGINT');
    await b1.waitFor(/stopped:/);
    b1.kill('SIGINT');
    expect(await b1.exited, b1.output().slice(-3000)).toBe(130);
    // The stop checkpoints every step applied (or names the checkpoint that already holds them).
    expect(b1.output()).toMatch(/stopped: received SIGTERM: stopped at step \d+ of 10; (checkpoint written at step \d+|the last checkpoint \(step \d+\) holds every step applied)\. Fix: the same command with --resume/);
    expect(stepRecords(ftB).length, 'the stop must land mid-fine-tuning').toBeLessThan(10);

    const fresh = startCoordinator(flags(outB, portB));
    expect(await fresh.exited).toBe(2);
    expect(fresh.output()).toMatch(/already holds a run: \d+ checkpoint\(s\) in \S+ the latest at step 2\. .*Fix: pass --resume/);

    const b2 = startCoordinator([...flags(outB, portB), '--resume']);
    expect(await b2.exited, b2.output().slice(-3000)).toBe(0);
    expect(b2.output()).toMatch(/already finished this phase \(\S+, step 2 of 2\); going on with the pruning/);
    // The sweep and the prune are not redone: the pipeline.json of the stopped start is reused.
    expect(b2.output()).toMatch(/pipeline: --resume: the sweep and the model pruned at e=0\.2 \(\S+pruned-e0\.2\.svdckpt\) are in \S+pipeline\.json, made from this checkpoint \(step 2\): reusing them/);
    expect(b2.output()).not.toMatch(/evaluating the trained model and/);
    expect(b2.output()).toMatch(/resuming from \S+finetune\S+ \(step [2-9],/);
    // Every fine-tuning step once, the same as uninterrupted, and the same final model and result.
    expect(stepRecords(ftB).map((s) => s.step)).toEqual(stepRecords(join(outA, 'finetune')).map((s) => s.step));
    const ca = finalCheckpoint(join(outA, 'finetune'));
    const cb = finalCheckpoint(ftB);
    expect(cb.step).toBe(10);
    expect(cb.step).toBe(ca.step);
    const p = maxDiff(ca.params, cb.params);
    expect(p.diff, `worst at ${p.where}`).toBeLessThanOrEqual(RESUME_TOL);
    const pipeline = (out: string) => JSON.parse(readFileSync(join(out, 'pipeline.json'), 'utf8'));
    expect(pipeline(outB).finetuned).toEqual(pipeline(outA).finetuned);
    expect(pipeline(outB).sweep).toEqual(pipeline(outA).sweep);
  });
});
