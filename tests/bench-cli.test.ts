/**
 * `pnpm bench` (scripts/bench.mjs): the list of benches, a bench's --help from its doc comment, and
 * options a bench does not take refused before it starts (a typo such as `--rep 7` used to run a
 * long benchmark with the default). The runner's list of known options is the doc comment, so every
 * option a bench reads must be named there, or the runner would refuse it: checked statically.
 */
import { spawnSync } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { ROOT } from './harness.js';

const BENCH = join(ROOT, 'scripts/bench.mjs');
const benches = readdirSync(join(ROOT, 'bench')).filter((f) => f.endsWith('.ts')).map((f) => f.slice(0, -3));
const run = (...args: string[]) => spawnSync(process.execPath, [BENCH, ...args], { cwd: ROOT, encoding: 'utf8', timeout: 60_000 });

describe('pnpm bench', () => {
  it('without a name (or with --help) lists every bench and exits 0', () => {
    for (const args of [[], ['--help']]) {
      const r = run(...args);
      expect(r.status).toBe(0);
      for (const b of benches) expect(r.stdout).toMatch(new RegExp(`^  ${b} `, 'm'));
    }
  });

  it('<name> --help prints the bench\'s doc comment and runs nothing', () => {
    const r = run('prune', '--reps', '3', '--help');
    expect(r.status).toBe(0);
    expect(r.stdout).toContain('Does pruning pay?');
    expect(r.stdout).toContain('--ranks-ckpt FILE');
    // The bench itself prints its backend and the models it times to stderr first thing.
    expect(r.stderr).not.toMatch(/^backend /m);
  });

  it('refuses an option the bench does not take, naming it and the options it does take', () => {
    const r = run('prune', '--rep', '7');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain('unknown option --rep;');
    expect(r.stderr).toContain('--reps');
    expect(r.stderr).toContain('pnpm bench prune --help');
    // Nothing of the bench's own output (its first line names the engine it got).
    expect(r.stderr).not.toMatch(/^backend /m);
    const eq = run('small-oc', '--batchs=32');
    expect(eq.status).toBe(2);
    expect(eq.stderr).toContain('unknown option --batchs;');
  });

  it('refuses an unknown bench with the list of known ones', () => {
    const r = run('nope');
    expect(r.status).toBe(2);
    expect(r.stderr).toContain("unknown benchmark 'nope'");
    for (const b of benches) expect(r.stderr).toContain(b);
  });

  it.each(benches)('every option bench/%s.ts reads is named in its doc comment', (b) => {
    const src = readFileSync(join(ROOT, 'bench', `${b}.ts`), 'utf8');
    const doc = src.match(/^\/\*\*([\s\S]*?)\*\//)?.[1] ?? '';
    const named = new Set(doc.match(/--[a-z0-9][a-z0-9-]*/g) ?? []);
    // The bench's own reads: arg('--x') and args.includes('--x').
    const read = [...src.matchAll(/\b(?:arg\(|args\.includes\()\s*['"](--[a-z0-9][a-z0-9-]*)['"]/g)].map((m) => m[1]!);
    expect(read.filter((o) => !named.has(o))).toEqual([]);
  });
});
