/**
 * The README's library example (examples/train-in-process.ts) must keep running: it is what a
 * project importing @svd-train/core and @svd-train/layers copies first.
 */
import { spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './harness.js';

describe('examples/train-in-process.ts', () => {
  it('trains a few steps on synthetic data and prunes the model', () => {
    const r = spawnSync(process.execPath, ['--conditions=source', '--import', 'tsx', join(ROOT, 'examples/train-in-process.ts')], {
      cwd: ROOT,
      encoding: 'utf8',
      timeout: 240_000,
    });
    expect(r.status, r.stderr).toBe(0);
    const losses = [...r.stdout.matchAll(/^step \d+: loss ([\d.]+)/gm)].map((m) => Number(m[1]));
    expect(losses).toHaveLength(8);
    expect(losses.every(Number.isFinite)).toBe(true);
    const m = /pruned at energy 0\.05: ([\d.]+) -> ([\d.]+) M MACs per image/.exec(r.stdout);
    expect(m, r.stdout).not.toBeNull();
    expect(Number(m![2])).toBeLessThanOrEqual(Number(m![1]));
  });
});
