/**
 * Every `(default X)` the help shows must be the value resolveConfig fills in, i.e. core's
 * DEFAULTS: a default changed in one place only, or typed into a description by hand, fails here.
 */
import { describe, expect, it } from 'vitest';
import type { Command } from 'commander';
import { DEFAULTS } from '@svd-train/core';
import { buildCoordProgram } from './coord-cli.js';
import { buildWorkerProgram } from './worker-cli.js';

/** The help text `args` print; `cmd` (the command whose help it is) gets one line per option. */
async function helpOf(program: Command, cmd: Command, args: string[], sink: { text: string }): Promise<string> {
  // Commander wraps descriptions at 80 columns, which could split "(default" from its value.
  cmd.configureOutput({ getOutHelpWidth: () => 10_000 });
  await program.parseAsync(['node', program.name(), ...args]).catch((e: { code?: string }) => {
    if (e.code !== 'commander.helpDisplayed') throw e;
  });
  return sink.text;
}

/** [flag, config key, value shown] for every "default X" in an option's help line. */
function shownDefaults(help: string): [string, string, string][] {
  const found: [string, string, string][] = [];
  for (const line of help.split('\n')) {
    const m = /^\s+(?:-\w, )?--([a-z-]+)(?: <[^>]+>)?\s{2,}(.*)$/.exec(line);
    if (!m) continue;
    const key = m[1]!.replace(/-([a-z])/g, (_, c: string) => c.toUpperCase());
    // "default: the cache folder" is a description, not a value.
    for (const d of m[2]!.matchAll(/\bdefault ([^\s;:)]+)/g)) found.push([`--${m[1]}`, key, d[1]!.replace(/,$/, '')]);
  }
  return found;
}

function expectDefault(flag: string, key: string, shown: string): void {
  expect(Object.keys(DEFAULTS), `${flag} shows a default, but DEFAULTS has no ${key}`).toContain(key);
  const want: unknown = DEFAULTS[key as keyof typeof DEFAULTS];
  if (typeof want === 'number') expect(Number(shown), `${flag}: help says ${shown}, DEFAULTS.${key} is ${want}`).toBe(want);
  else if (Array.isArray(want)) expect(shown.split(',').map(Number), `${flag}: help says ${shown}`).toEqual(want);
  else expect(shown, `${flag}: help says ${shown}, DEFAULTS.${key} is ${String(want)}`).toBe(want);
}

describe('defaults in --help come from DEFAULTS', () => {
  it('svd-coord start --help: every (default X) equals DEFAULTS', async () => {
    const sink = { text: '' };
    const program = buildCoordProgram({ out: (s) => void (sink.text += s), err: () => {} });
    const help = await helpOf(program, program.commands.find((c) => c.name() === 'start')!, ['start', '--help'], sink);
    const shown = shownDefaults(help);
    for (const [flag, key, value] of shown) expectDefault(flag, key, value);
    // The parse found what it should: a broken pattern must not make this test pass on nothing.
    const flags = shown.map(([f]) => f);
    for (const f of ['--model', '--lambda-o', '--lambda-s', '--lr', '--weight-decay', '--epochs', '--batch', '--port', '--stall-warn-ms', '--backend', '--threads', '--sweep-energies', '--finetune-epochs']) {
      expect(flags, `no default found for ${f}`).toContain(f);
    }
    expect(shown.length).toBeGreaterThanOrEqual(25);
    expect(help).toContain(`(default ${DEFAULTS.lambdaS})`);
    // --no-cycle-momentum names the cycle's ends, which are defaults too.
    expect(help).toContain(`cycling it ${DEFAULTS.maxMomentum} -> ${DEFAULTS.baseMomentum} -> ${DEFAULTS.maxMomentum}`);
  });

  it('svd-worker --help: every (default X) equals DEFAULTS', async () => {
    const sink = { text: '' };
    const program = buildWorkerProgram().configureOutput({ writeOut: (s) => void (sink.text += s), writeErr: () => {} });
    const shown = shownDefaults(await helpOf(program, program, ['--help'], sink));
    for (const [flag, key, value] of shown) expectDefault(flag, key, value);
    expect(shown.map(([f]) => f).sort()).toEqual(['--backend', '--handshake-timeout-ms', '--threads']);
  });
});
