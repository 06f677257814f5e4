/**
 * bench/torch_train.py is where schedules are tried before a run in svd-train, so its layer must
 * compute what ours does. bench/check_torch_layers.py runs its SVDConv, channel and spatial, merged
 * and factored, on ../shared/reference/layers.json's conv cases; here its MAC counts must equal
 * svd-train's svdConvForwardCost, which picks the form and prices the pruned models. Skipped where
 * /usr/bin/python3 cannot import torch (Debian: apt-get install -y python3-torch) or the reference
 * cases are missing.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { svdConvForwardCost } from '@svd-train/layers';
import { ROOT } from './harness.js';

const LAYERS = join(ROOT, '..', 'shared', 'reference', 'layers.json');
const hasTorch = spawnSync('/usr/bin/python3', ['-c', 'import torch'], { encoding: 'utf8' }).status === 0;

interface Case {
  name: string;
  decomposition: 'channel' | 'spatial';
  n: number;
  c: number;
  k: number;
  rank: number;
  in_w: number;
  out_h: number;
  out_w: number;
  macs_merged: number;
  macs_factored: number;
  factored_y_err: number;
}

describe.skipIf(!hasTorch || !existsSync(LAYERS))('bench/torch_train.py layer against the references', () => {
  it('matches layers.json in both forms and counts MACs as svd-train does', () => {
    const run = spawnSync('/usr/bin/python3', [join(ROOT, 'bench', 'check_torch_layers.py'), LAYERS], { encoding: 'utf8', timeout: 120_000 });
    expect(run.status, run.stderr).toBe(0);
    const { cases, worst } = JSON.parse(run.stdout.trim().split('\n').pop()!) as { cases: Case[]; worst: number };
    expect(worst).toBeLessThanOrEqual(1e-5);
    expect(cases.map((c) => c.decomposition)).toContain('spatial');
    for (const c of cases) {
      const ours = svdConvForwardCost({ decomposition: c.decomposition, n: c.n, c: c.c, kh: c.k, kw: c.k, r: c.rank, inW: c.in_w, outH: c.out_h, outW: c.out_w });
      expect([c.macs_merged, c.macs_factored], c.name).toEqual([ours.reconstruct, ours.factored]);
    }
  });
});
