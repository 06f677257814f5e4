/**
 * Resume after killing the coordinator (kill -9 after a mid-run checkpoint) must reach the same
 * parameters as an uninterrupted run: same data order, same augmentation, same optimizer state.
 * The workers are separate processes that reconnect (with backoff) to the restarted coordinator.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { finalCheckpoint, freePort, maxDiff, requireBuild, startCoordinator, startWorker, stepRecords, syntheticData, tempDir, tinyRunFlags, waitForPort } from './harness.js';

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
      const deadline = Date.now() + 120_000;
      while (!(existsSync(ckDir) && readdirSync(ckDir).length > 0 && stepRecords(outB).length >= 3)) {
        if (Date.now() > deadline) throw new Error(`no checkpoint:\n${b1.output().slice(-3000)}`);
        await new Promise((r) => setTimeout(r, 50));
      }
      b1.kill('SIGKILL');
      await b1.exited;
      const doneAtKill = stepRecords(outB).length;
      expect(doneAtKill, 'the kill must land mid-run').toBeLessThan(8);
      const b2 = startCoordinator([...common(outB, portB), '--resume']);
      expect(await b2.exited, b2.output().slice(-3000)).toBe(0);
      expect(w.output()).toMatch(/reconnect/i);
      expect(b2.output()).toMatch(/resuming from \S+ \(step [1-9]/);
    } finally {
      w.kill('SIGKILL');
    }
    // metrics.jsonl has every step once: the lines the killed run wrote past its checkpoint were dropped.
    expect(stepRecords(outB).map((s) => s.step)).toEqual(stepRecords(outA).map((s) => s.step));
    const ca = finalCheckpoint(outA);
    const cb = finalCheckpoint(outB);
    expect(cb.step).toBe(ca.step);
    const p = maxDiff(ca.params, cb.params);
    expect(p.diff, `worst at ${p.where}`).toBeLessThanOrEqual(RESUME_TOL);
    const bu = maxDiff(ca.buffers, cb.buffers);
    expect(bu.diff, `worst at ${bu.where}`).toBeLessThanOrEqual(RESUME_TOL);
  });
});
