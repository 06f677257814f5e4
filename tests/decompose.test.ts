/**
 * `svd-coord decompose` on a real (tiny) plain run: the SVD checkpoint it writes scores what the
 * plain one scores, `start --from` trains it, and the wrong inputs exit 2 with the fix.
 */
import { existsSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { loadCheckpoint, parseConfig } from '@svd-train/core';
import { finalCheckpointPath, freePort, requireBuild, runCoord, startCoordinator, syntheticData, tempDir, tinyRunFlags } from './harness.js';

/** "test accuracy 41.67% (5/12), loss 2.3012" → [5, 2.3012] */
function evalLine(out: string): [number, number] {
  const m = /test accuracy [\d.]+% \((\d+)\/\d+\), loss ([\d.]+)/.exec(out);
  expect(m, out).not.toBeNull();
  return [Number(m![1]), Number(m![2])];
}

describe('svd-coord decompose', () => {
  let data: string;
  let plainCkpt: string;
  let decomposed: string;

  beforeAll(async () => {
    requireBuild();
    data = syntheticData(24, 16);
    const out = tempDir();
    const cfgFile = join(tempDir(), 'plain.json');
    writeFileSync(cfgFile, JSON.stringify({ svd: false }));
    const c = startCoordinator([...tinyRunFlags({ data, out, port: await freePort(), epochs: 1, limitTrain: 24, batch: 12 }), '--config', cfgFile, '--spawn', '1']);
    expect(await c.exited, c.output().slice(-3000)).toBe(0);
    plainCkpt = finalCheckpointPath(out);
    decomposed = join(tempDir(), 'svd.svdckpt');
  });

  it('writes the full-rank SVD model of the plain one: the same test accuracy and loss', async () => {
    const r = await runCoord(['decompose', plainCkpt, '--decomposition', 'spatial', '--out', decomposed, '--backend', 'wasm']);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/resnet20 plain \(no SVD\) → resnet20 SVD spatial: 22 layers as their exact SVD at full rank/);
    const c = loadCheckpoint(decomposed);
    const cfg = parseConfig(c.config);
    expect([cfg.svd, cfg.decomposition]).toEqual([true, 'spatial']);
    expect(c.params.some((t) => t.name === 'layers.0.conv1.U')).toBe(true);
    expect(c.params.some((t) => t.name === 'layers.0.conv1.weight')).toBe(false);
    const [plainHits, plainLoss] = evalLine((await runCoord(['eval', plainCkpt, '--data', data, '--backend', 'wasm'])).out);
    const [hits, loss] = evalLine((await runCoord(['eval', decomposed, '--data', data, '--backend', 'wasm'])).out);
    expect(hits).toBe(plainHits);
    expect(Math.abs(loss - plainLoss)).toBeLessThan(2e-4);
  });

  it('start --from the decomposed checkpoint trains it with the SVD method', async () => {
    const out = tempDir();
    const c = startCoordinator([...tinyRunFlags({ data, out, port: await freePort(), epochs: 1, limitTrain: 12, batch: 12 }), '--spawn', '1', '--from', decomposed, '--decomposition', 'spatial']);
    expect(await c.exited, c.output().slice(-3000)).toBe(0);
    const tuned = loadCheckpoint(finalCheckpointPath(out));
    const start = loadCheckpoint(decomposed);
    expect(tuned.params.map((t) => [t.name, ...t.shape])).toEqual(start.params.map((t) => [t.name, ...t.shape]));
    expect(tuned.params.some((t, i) => t.data.some((v, j) => v !== start.params[i]!.data[j]))).toBe(true);
  });

  it('start --from a plain checkpoint for an SVD run exits 2 and names decompose as the fix', async () => {
    const c = startCoordinator([...tinyRunFlags({ data, out: tempDir(), port: await freePort(), epochs: 1, limitTrain: 12, batch: 12 }), '--from', plainCkpt]);
    expect(await c.exited).toBe(2);
    expect(c.output()).toContain(`--from ${plainCkpt} holds a plain model (resnet20 plain (no SVD)); this run trains resnet20 SVD channel`);
    expect(c.output()).toContain(`svd-coord decompose ${plainCkpt} --decomposition channel`);
  });

  it('refuses an SVD checkpoint and an unknown decomposition with exit 2, writing nothing', async () => {
    const target = join(tempDir(), 'x.svdckpt');
    const svd = await runCoord(['decompose', decomposed, '--out', target, '--backend', 'wasm']);
    expect(svd.code).toBe(2);
    expect(existsSync(target)).toBe(false);
    expect(svd.out).toContain('holds an SVD model (resnet20 SVD spatial); decompose takes a plain one');
    const kind = await runCoord(['decompose', plainCkpt, '--decomposition', 'diagonal']);
    expect(kind.code).toBe(2);
    expect(kind.out).toContain('--decomposition "diagonal"; expected one of channel, spatial');
    const same = await runCoord(['decompose', plainCkpt, '--out', plainCkpt]);
    expect(same.code).toBe(2);
    expect(same.out).toContain('would replace');
  });
});
