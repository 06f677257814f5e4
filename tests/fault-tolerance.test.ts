/**
 * kill -9 of a worker mid-epoch: the coordinator gives its slice, whole, to the survivor, training
 * completes, the sample accounting is exact (every step covers its whole global batch, every epoch
 * covers every training sample once, read from metrics.jsonl), and the final parameters and BN
 * running statistics are BIT-IDENTICAL to an uninterrupted run with the same two workers: every step
 * keeps its two BN sub-batches, the survivor computes each from the broadcast running statistics,
 * and the coordinator reduces in slice order, so who computed a slice does not matter.
 */
import { execFileSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { finalCheckpoint, freePort, freezeWhen, maxDiff, requireBuild, startCoordinator, stepRecords, syntheticData, tempDir, tinyRunFlags, waitForPort } from './harness.js';

const samplesOf = (r: Record<string, any>): number => r.samples ?? r.n ?? r.batch;

/** Pids of the worker processes `svd-coord start --spawn K` started (its direct children). */
function spawnedWorkers(coordPid: number): number[] {
  const out = execFileSync('ps', ['-o', 'pid=', '--ppid', String(coordPid)], { encoding: 'utf8' });
  return out.split('\n').map((l) => Number(l.trim())).filter((p) => p > 0);
}

describe('worker killed mid-epoch', () => {
  it('the run completes on the survivor, no sample is dropped or doubled, and the result equals the uninterrupted run bit for bit', async () => {
    requireBuild();
    const data = syntheticData(60, 12);
    const limitTrain = 48;
    const batch = 8;
    const flags = (out: string, port: number) => [...tinyRunFlags({ data, out, port, epochs: 2, limitTrain, batch }), '--min-workers', '1', '--spawn', '2'];

    // A: uninterrupted, two workers.
    const outA = tempDir();
    const a = startCoordinator(flags(outA, await freePort()));
    expect(await a.exited, a.output().slice(-3000)).toBe(0);
    // Spawned workers print as [w0]/[w1] and join under those names (connection ids are c1-…, c2-…).
    for (const w of ['w0', 'w1']) expect(a.output()).toMatch(new RegExp(`worker ${w}@\\S+ \\(c\\d+-\\w+\\) joined`));

    // B: the same, with one worker killed after a few steps.
    const outB = tempDir();
    const port = await freePort();
    const coord = startCoordinator(flags(outB, port));
    try {
      await waitForPort(port, 60_000, coord);
      // The coordinator is frozen from the third step to the kill, so the kill lands mid-run
      // however late this test's timers fire on a loaded machine.
      await freezeWhen(coord, () => stepRecords(outB).length >= 3, 'third step');
      const stepsAtKill = stepRecords(outB).length;
      const pids = spawnedWorkers(coord.child.pid!);
      expect(pids, coord.output().slice(-2000)).toHaveLength(2);
      process.kill(pids[1]!, 'SIGKILL');
      coord.kill('SIGCONT');
      expect(stepsAtKill, 'the kill must land mid-run').toBeLessThan(2 * (limitTrain / batch));
      expect(await coord.exited, coord.output().slice(-3000)).toBe(0);
      const killedAt = stepRecords(outB).findIndex((s) => s.workers?.length === 2 && new Set(s.workers.map((w: { worker: string }) => w.worker)).size === 1);
      const steps = stepRecords(outB);
      const perEpoch = limitTrain / batch;
      expect(steps.map((s) => s.step)).toEqual(Array.from({ length: 2 * perEpoch }, (_, i) => i));
      for (const s of steps) {
        expect(samplesOf(s), `step ${s.step}`).toBe(batch);
        // Two sub-batches every step, before and after the kill; a re-assigned slice is counted
        // once, by who computed it.
        expect(s.workers.map((w: { n: number }) => w.n), `step ${s.step} slices`).toEqual([batch / 2, batch / 2]);
      }
      // Both worked before the kill; only the survivor (computing both slices) at the end.
      expect(steps.some((s) => new Set(s.workers.map((w: { worker: string }) => w.worker)).size === 2)).toBe(true);
      expect(new Set(steps[steps.length - 1]!.workers.map((w: { worker: string }) => w.worker)).size).toBe(1);
      expect(killedAt, 'the kill must land mid-run').toBeGreaterThan(0);
      for (const e of [0, 1]) {
        const total = steps.filter((s) => s.epoch === e).reduce((a, s) => a + samplesOf(s), 0);
        expect(total, `epoch ${e}`).toBe(limitTrain);
      }
      expect(coord.output()).toMatch(/re-assigned|dropped/);
    } finally {
      coord.kill('SIGKILL');
    }
    const ca = finalCheckpoint(outA);
    const cb = finalCheckpoint(outB);
    expect(cb.step).toBe(ca.step);
    const p = maxDiff(ca.params, cb.params);
    expect(p.diff, `params differ, worst at ${p.where}`).toBe(0);
    const bu = maxDiff(ca.buffers, cb.buffers);
    expect(bu.diff, `BN buffers differ, worst at ${bu.where}`).toBe(0);
  });
});
