/**
 * The checkpoint commands of the built CLI on a real (tiny) run: eval, prune, export, report, and
 * the clear exit-2 errors for bad input.
 */
import { existsSync, readFileSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { COORD_BIN, freePort, launch, requireBuild, startCoordinator, syntheticData, tempDir, tinyRunFlags } from './harness.js';

async function coord(args: string[]): Promise<{ code: number | string; out: string }> {
  const p = launch(COORD_BIN, args);
  const code = await p.exited;
  return { code, out: p.output() };
}

describe('svd-coord eval / prune / export / report', () => {
  let out: string;
  let data: string;
  let ckpt: string;
  let pruned: string | null = null;

  beforeAll(async () => {
    requireBuild();
    data = syntheticData(24, 12);
    out = tempDir();
    const port = await freePort();
    const c = startCoordinator([...tinyRunFlags({ data, out, port, epochs: 1, limitTrain: 12, batch: 12 }), '--spawn', '1']);
    expect(await c.exited, c.output().slice(-3000)).toBe(0);
    const dir = join(out, 'checkpoints');
    ckpt = join(dir, readdirSync(dir).filter((f) => f.endsWith('.svdckpt')).sort().pop()!);
  });

  it('start wrote config.json, metrics.jsonl and report.html', () => {
    for (const f of ['config.json', 'metrics.jsonl', 'report.html']) expect(existsSync(join(out, f)), f).toBe(true);
    expect(JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')).configHash).toMatch(/^[0-9a-f]{64}$/);
  });

  it('eval prints the test accuracy of the checkpoint', async () => {
    const r = await coord(['eval', ckpt, '--data', data, '--limit-test', '12']);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/test accuracy \d+\.\d\d% \(\d+\/12\)/);
  });

  it('prune prints the per-layer table and writes a smaller checkpoint', async () => {
    const dest = tempDir();
    const r = await coord(['prune', ckpt, '--energy', '0.05', '--out', dest]);
    expect(r.code, r.out).toBe(0);
    expect(r.out).toMatch(/rankBefore\s+rankAfter/);
    const m = r.out.match(/params (\d+) -> (\d+)/)!;
    expect(Number(m[2])).toBeLessThan(Number(m[1]));
    const files = readdirSync(dest).filter((f) => f.endsWith('.svdckpt'));
    expect(files.length).toBe(1);
    pruned = join(dest, files[0]!);
  });

  it('start --from a pruned checkpoint is refused up front (per-layer ranks are not supported yet)', async () => {
    expect(pruned).not.toBeNull();
    const port = await freePort();
    const r = await coord(['start', ...tinyRunFlags({ data, out: tempDir(), port, epochs: 1, limitTrain: 12, batch: 12 }), '--from', pruned!]);
    expect(r.code, r.out).toBe(2);
    expect(r.out).toContain('CHECKPOINT_CONFIG_MISMATCH');
  });

  it('export --stock writes a tfjs model folder', async () => {
    const dest = tempDir();
    const r = await coord(['export', ckpt, '--out', dest, '--stock']);
    expect(r.code, r.out).toBe(0);
    expect(existsSync(join(dest, 'model.json'))).toBe(true);
    expect(readFileSync(join(dest, 'model.json'), 'utf8')).not.toContain('SVDConv2D');
  });

  it('report rewrites report.html with plots and the spectra of the latest checkpoint', async () => {
    const r = await coord(['report', out]);
    expect(r.code, r.out).toBe(0);
    const html = readFileSync(join(out, 'report.html'), 'utf8');
    expect((html.match(/<svg /g) ?? []).length).toBeGreaterThanOrEqual(8);
    expect(html).toContain('rank @0.01');
    expect(html).toContain('MFLOPs');
  });

  it('bad input exits 2 with a message naming the value and the fix, no stack trace', async () => {
    const bad = join(tempDir(), 'bad.svdckpt');
    writeFileSync(bad, 'not a checkpoint');
    for (const [args, needle] of [
      [['eval', bad], 'CHECKPOINT_CORRUPT'],
      [['prune', ckpt, '--energy', 'lots'], '--energy "lots"'],
      [['start', '--model', 'resnet7', '--out', tempDir()], 'resnet7'],
      [['report', '/no/such/run'], '/no/such/run'],
    ] as const) {
      const r = await coord([...args]);
      expect(r.code, `${args.join(' ')}: ${r.out}`).toBe(2);
      expect(r.out).toContain(needle);
      expect(r.out).not.toMatch(/\n\s+at /);
    }
  });
});
