/**
 * `start --cutout px` reaches the workers: two tiny runs that differ only in it share the data order,
 * crops and flips, so their first step's loss differs only if the workers cut the squares out.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { freePort, requireBuild, startCoordinator, stepRecords, syntheticData, tempDir, tinyRunFlags } from './harness.js';

describe('start --cutout', () => {
  it('changes what the workers train on (first step loss), and is recorded in config.json', async () => {
    requireBuild();
    const data = syntheticData(24, 12);
    const run = async (extra: string[]) => {
      const out = tempDir();
      const c = startCoordinator([...tinyRunFlags({ data, out, port: await freePort(), limitTrain: 12, batch: 12 }), '--spawn', '1', ...extra]);
      expect(await c.exited, c.output().slice(-3000)).toBe(0);
      return out;
    };
    const [plain, cut, cutAgain] = [await run([]), await run(['--cutout', '16']), await run(['--cutout', '16'])];
    expect(JSON.parse(readFileSync(join(cut, 'config.json'), 'utf8')).cutout).toBe(16);
    expect(JSON.parse(readFileSync(join(plain, 'config.json'), 'utf8')).cutout).toBe(0);
    const loss = (out: string) => stepRecords(out)[0]!.loss.total as number;
    expect(loss(cut)).not.toBe(loss(plain));
    // A pure function of (seed, epoch, index): the same flags give the same step.
    expect(loss(cutAgain)).toBe(loss(cut));
  });
});
