/**
 * `svd-coord prune CKPT --energy e`: drop the singular values holding at most a fraction e of each
 * layer's energy, print what that does to ranks, parameters and MACs, and write the smaller
 * checkpoint.
 */
import { join } from 'node:path';
import type { Command } from 'commander';
import { countMacs, depthOf, plainResNetCost, pruneByEnergy } from '@svd-train/layers';
import { usageError } from '../cli-errors.js';
import type { CliIo, SetExitCode } from '../cli-io.js';
import { checkpointArgument, modelFromCheckpoint, writePrunedCheckpoint } from '../checkpoint-model.js';

interface PruneOptions {
  energy: string;
  out?: string;
  backend?: string;
}

/** A per-layer report (one object per layer, the same keys in each) as an aligned text table. */
export function describeLayers(rows: readonly object[]): string {
  if (!rows.length) return JSON.stringify(rows, null, 2);
  const keys = Object.keys(rows[0]);
  const cell = (v: unknown) => String(typeof v === 'number' && !Number.isInteger(v) ? v.toFixed(4) : v);
  const table = [keys.map((k) => k.replace(/^macs/, 'MACs')), ...rows.map((r) => keys.map((k) => cell(new Map(Object.entries(r)).get(k))))];
  const widths = keys.map((_, i) => Math.max(...table.map((row) => row[i].length)));
  // Names left-aligned, numbers right-aligned.
  return table.map((row) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ')).join('\n');
}

async function pruneCommand(pathArg: string, opts: PruneOptions, io: CliIo): Promise<number> {
  const e = Number(opts.energy);
  if (!(opts.energy.trim() !== '' && e >= 0 && e < 1)) {
    throw usageError(`--energy ${JSON.stringify(opts.energy)} is not valid; expected a fraction in [0, 1), e.g. --energy 0.01 (drop singular values holding 1% of the energy).`);
  }
  const path = checkpointArgument(pathArg, io);
  const { ckpt, model, cfg } = await modelFromCheckpoint(path, opts.backend, io);
  const { model: pruned, report } = pruneByEnergy(model, e);
  io.out(`${describeLayers(report)}\n`);
  const sum = (k: 'paramsBefore' | 'paramsAfter' | 'macsBefore' | 'macsAfter') => report.reduce((a, r) => a + r[k], 0);
  io.out(`SVD layers: params ${sum('paramsBefore')} -> ${sum('paramsAfter')}, MACs/image ${sum('macsBefore')} -> ${sum('macsAfter')}\n`);
  // The whole model against the plain ResNet of the same depth: what users compare with.
  const plain = plainResNetCost({ depth: depthOf(cfg.model) });
  const [before, after] = [countMacs(model), countMacs(pruned)];
  const pct = (x: number) => `${((100 * x) / plain.macs).toFixed(1)}%`;
  io.out(
    `whole model: MACs/image ${before.total} (${pct(before.total)} of plain ${cfg.model}) -> ${after.total} (${pct(after.total)}); ` +
      `stock-export weights ${before.exportParams} -> ${after.exportParams}; plain ${cfg.model}: ${plain.macs} MACs, ${plain.params} weights. FLOPs = 2·MACs.\n`,
  );
  const final = writePrunedCheckpoint(ckpt, cfg, pruned, e, opts.out ?? join(path.replace(/[^/]+$/, ''), `pruned-e${e}`));
  model.dispose();
  pruned.dispose();
  io.out(`pruned checkpoint written to ${final}\n`);
  return 0;
}

/** Adds `prune` to the `svd-coord` program. */
export function registerPruneCommand(program: Command, io: CliIo, setCode: SetExitCode): void {
  program
    .command('prune')
    .description('truncate singular values holding at most a fraction e of each layer\'s energy')
    .argument('<ckpt>', 'checkpoint file')
    .requiredOption('--energy <e>', 'energy fraction to drop, e.g. 0.01')
    .option('--out <path>', 'folder for the pruned checkpoint, or a file name ending in .svdckpt (default: pruned-e<E>/ next to the input)')
    .option('--backend <name>', 'auto | tensorflow | native | wasm | cpu (default: the checkpoint run\'s)')
    .action(async (p: string, o: PruneOptions) => setCode(await pruneCommand(p, o, io)));
}
