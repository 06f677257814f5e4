/**
 * kill -9 of a worker mid-epoch: the coordinator re-assigns its slice, training completes with the
 * survivor, and the sample accounting is exact (every step covers its whole global batch, every
 * epoch covers every training sample once), read from metrics.jsonl.
 */
import { describe, expect, it } from 'vitest';
import { freePort, requireBuild, startCoordinator, startWorker, stepRecords, syntheticData, tempDir, tinyRunFlags, waitForPort } from './harness.js';

const samplesOf = (r: Record<string, any>): number => r.samples ?? r.n ?? r.batch;

describe('worker killed mid-epoch', () => {
  it('the run completes on the survivor and no sample is dropped or doubled', async () => {
    requireBuild();
    const data = syntheticData(60, 12);
    const out = tempDir();
    const port = await freePort();
    const limitTrain = 48;
    const batch = 8;
    const coord = startCoordinator([...tinyRunFlags({ data, out, port, epochs: 2, limitTrain, batch }), '--min-workers', '1']);
    try {
      await waitForPort(port, 60_000, coord);
      const w0 = startWorker(port, ['--data', data, '--name', 'survivor']);
      const w1 = startWorker(port, ['--data', data, '--name', 'victim']);
      // Wait until both have worked a few steps, then kill one without warning.
      const deadline = Date.now() + 120_000;
      while (stepRecords(out).length < 3) {
        if (Date.now() > deadline) throw new Error(`no progress:\n${coord.output().slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 100));
      }
      w1.kill('SIGKILL');
      expect(await coord.exited).toBe(0);
      await w0.exited;
      const steps = stepRecords(out);
      const perEpoch = limitTrain / batch;
      expect(steps.map((s) => s.step)).toEqual(Array.from({ length: 2 * perEpoch }, (_, i) => i));
      for (const s of steps) {
        expect(samplesOf(s), `step ${s.step}`).toBe(batch);
        // Per-worker accounting adds up too (a re-assigned slice is counted once, by who computed it).
        if (Array.isArray(s.workers)) expect(s.workers.reduce((a: number, w: { n: number }) => a + w.n, 0), `step ${s.step} workers`).toBe(batch);
      }
      // Both worked before the kill; only the survivor at the end.
      expect(steps.some((s) => s.workers?.length === 2)).toBe(true);
      expect(steps[steps.length - 1]!.workers.map((w: { worker: string }) => w.worker)).toEqual([expect.stringContaining('survivor')]);
      for (const e of [0, 1]) {
        const total = steps.filter((s) => s.epoch === e).reduce((a, s) => a + samplesOf(s), 0);
        expect(total, `epoch ${e}`).toBe(limitTrain);
      }
      expect(coord.output()).toMatch(/victim/);
    } finally {
      coord.kill('SIGKILL');
    }
  });
});
