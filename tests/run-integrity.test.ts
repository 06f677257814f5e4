/**
 * A diverging run (`--lr 1e6`) on real processes: the coordinator must abort with DIVERGED (not
 * drop and re-admit its worker forever), never checkpoint non-finite parameters, and tell the worker,
 * which then exits non-zero with RUN_ABORTED instead of "training finished" / exit 0.
 */
import { existsSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { loadCheckpoint } from '@svd-train/core';
import { freePort, requireBuild, startCoordinator, startWorker, syntheticData, tempDir, tinyRunFlags, waitForPort } from './harness.js';

describe('run integrity', () => {
  it('--lr 1e6 aborts with DIVERGED, checkpoints nothing non-finite, and the worker exits non-zero with RUN_ABORTED', async () => {
    requireBuild();
    const data = syntheticData(40, 12);
    const out = tempDir();
    const port = await freePort();
    const coord = startCoordinator([...tinyRunFlags({ data, out, port, epochs: 3, limitTrain: 36, batch: 12 }), '--lr', '1e6', '--checkpoint-every', '1']);
    try {
      await waitForPort(port, 60_000, coord);
      const w = startWorker(port, ['--data', data, '--name', 'wdiv']);
      expect(await coord.exited, coord.output().slice(-3000)).toBe(1);
      expect(coord.output()).toMatch(/error \[DIVERGED\]: step \d+ .*Fix: lower --lr/);
      const wcode = await Promise.race([w.exited, new Promise((r) => setTimeout(() => r('still running'), 30_000))]);
      expect(wcode, w.output().slice(-2000)).toBe(1);
      expect(w.output()).toMatch(/RUN_ABORTED.*DIVERGED/);
      w.kill('SIGKILL');
    } finally {
      coord.kill('SIGKILL');
    }
    const dir = join(out, 'checkpoints');
    for (const f of existsSync(dir) ? readdirSync(dir).filter((f) => f.endsWith('.svdckpt')) : []) {
      for (const t of loadCheckpoint(join(dir, f)).params) expect(t.data.every(Number.isFinite), `${f}: ${t.name}`).toBe(true);
    }
  });
});
