/**
 * `svd-coord prune CKPT --energy e` (or `--macs n`: the smallest energy whose model costs at most n
 * MACs per image): drop the singular values holding at most a fraction e of each layer's energy,
 * print what that does to ranks, parameters and MACs, re-estimate the batch-norm statistics on
 * training images (unless --no-recalibrate-bn), and write the smaller checkpoint.
 */
import { join } from 'node:path';
import type { Command } from 'commander';
import { readCifar10 } from '@svd-train/core';
import { countMacs, depthOf, energyForMacs, layerEnergies, plainResNetCost, pruneByEnergy, BN_RECALIBRATION_IMAGES } from '@svd-train/layers';
import { usageError } from '../cli-errors.js';
import type { CliIo, SetExitCode } from '../cli-io.js';
import { checkpointArgument, modelFromCheckpoint, recalibratePruned, refuseToReplaceSource, removesRank, writePrunedCheckpoint } from '../checkpoint-model.js';
import { macWeightRule } from '../report-pipeline.js';
import { runDataDir } from './eval.js';

interface PruneOptions {
  energy?: string;
  macs?: string;
  macWeight?: string;
  out?: string;
  backend?: string;
  data?: string;
  recalibrateBn: boolean;
}

/** A per-layer report (one object per layer, the same keys in each) as an aligned text table. */
export function describeLayers(rows: readonly object[]): string {
  if (!rows.length) return JSON.stringify(rows, null, 2);
  const keys = Object.keys(rows[0]);
  const cell = (v: unknown) => String(typeof v === 'number' && !Number.isInteger(v) ? Number(v.toPrecision(3)) : v);
  const table = [keys.map((k) => k.replace(/^macs/, 'MACs')), ...rows.map((r) => keys.map((k) => cell(new Map(Object.entries(r)).get(k))))];
  const widths = keys.map((_, i) => Math.max(...table.map((row) => row[i].length)));
  // Names left-aligned, numbers right-aligned.
  return table.map((row) => row.map((c, i) => (i === 0 ? c.padEnd(widths[i]) : c.padStart(widths[i]))).join('  ')).join('\n');
}

/** The --energy or --macs value, checked before any checkpoint is read. */
function pruneTarget(opts: PruneOptions): { energy: number } | { macs: number } {
  if ((opts.energy === undefined) === (opts.macs === undefined)) {
    throw usageError(`give one of --energy <e> (a fraction of each layer's energy to drop) or --macs <n> (a budget in MACs per image)${opts.energy !== undefined ? ', not both' : ''}, e.g. --energy 0.01 or --macs 13.6e6.`);
  }
  if (opts.energy !== undefined) {
    const e = Number(opts.energy);
    if (!(opts.energy.trim() !== '' && e >= 0 && e < 1)) {
      throw usageError(`--energy ${JSON.stringify(opts.energy)} is not valid; expected a fraction in [0, 1), e.g. --energy 0.01 (drop singular values holding 1% of the energy).`);
    }
    return { energy: e };
  }
  const m = Number(opts.macs);
  if (!(opts.macs!.trim() !== '' && Number.isFinite(m) && m > 0)) {
    throw usageError(`--macs ${JSON.stringify(opts.macs)} is not valid; expected a positive number of MACs per image, e.g. --macs 13.6e6 (a third of the plain ResNet-20's).`);
  }
  return { macs: m };
}

/** The --mac-weight value (default 0, the paper's rule), checked before any checkpoint is read. */
function macWeightOption(opts: PruneOptions): number {
  if (opts.macWeight === undefined) return 0;
  const a = Number(opts.macWeight);
  if (!(opts.macWeight.trim() !== '' && Number.isFinite(a) && a >= 0)) {
    throw usageError(`--mac-weight ${JSON.stringify(opts.macWeight)} is not valid; expected a number ≥ 0, e.g. --mac-weight 0.5 (0: every layer gives up the same fraction of its energy).`);
  }
  return a;
}

async function pruneCommand(pathArg: string, opts: PruneOptions, io: CliIo): Promise<number> {
  const target = pruneTarget(opts);
  const macWeight = macWeightOption(opts);
  const path = checkpointArgument(pathArg, io);
  const { ckpt, model, cfg } = await modelFromCheckpoint(path, opts.backend, io);
  if (!cfg.svd) {
    throw usageError(`${path} is a plain model (no SVD layers), so there are no singular values to prune. Fix: prune an SVD checkpoint, or make one with \`svd-coord decompose ${path}\` and train it.`);
  }
  let e: number;
  if ('energy' in target) e = target.energy;
  else {
    const found = energyForMacs(model, target.macs, { macWeight });
    e = found.energy;
    io.out(`--macs ${target.macs}: energy ${e} is the smallest that prunes to at most that (${found.macs} MACs per image)\n`);
  }
  const out = opts.out ?? join(path.replace(/[^/]+$/, ''), `pruned-e${e}${macWeight > 0 ? `-w${macWeight}` : ''}`);
  refuseToReplaceSource(out, ckpt.step, [path]);
  const { model: pruned, report } = pruneByEnergy(model, e, macWeight);
  if (macWeight > 0) {
    // Each layer's own share of the energy, beside what it did.
    const energies = layerEnergies(model, e, macWeight);
    io.out(`MAC weight ${macWeight}: ${macWeightRule(macWeight)} (column energy)\n`);
    io.out(`${describeLayers(report.map(({ name, ...rest }) => ({ name, energy: energies.get(name)!, ...rest })))}\n`);
  } else io.out(`${describeLayers(report)}\n`);
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
  // Nothing removed (e.g. --energy 0): nothing to re-estimate, and the checkpoint stays the same in every number.
  if (opts.recalibrateBn && removesRank(report)) {
    // Pruning shifts every layer's output a little; the trained running statistics no longer fit
    // (recalibrateBatchNorm). Without data the pruned model is still written, with a warning.
    let dir: string | null = null;
    try {
      dir = runDataDir(opts.data, cfg.data, io);
    } catch (err) {
      if (opts.data) throw err;
      io.err(`warning: batch-norm statistics not re-estimated: ${(err as Error).message} Pass --data DIR, or --no-recalibrate-bn to silence this.\n`);
    }
    if (dir) {
      const train = readCifar10(dir, 'train');
      const n = recalibratePruned(pruned, report, train, train.count, Math.min(cfg.batch, cfg.maxWorkerBatch), cfg);
      io.out(`batch-norm statistics re-estimated on ${n} training images from ${dir}\n`);
    }
  }
  const final = writePrunedCheckpoint(ckpt, cfg, pruned, e, out, path);
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
    .option('--energy <e>', 'energy fraction to drop, e.g. 0.01')
    .option('--macs <n>', 'instead of --energy: prune at the smallest energy whose model costs at most n MACs per image, e.g. 13.6e6 (a third of plain ResNet-20)')
    .option('--mac-weight <a>', 'share the energy out by cost: each layer gives up e·(c/c_max)^a of its energy, c the MACs one unit of its rank costs per image, c_max the costliest layer\'s (default 0: every layer e, the paper\'s rule)')
    .option('--out <path>', 'folder for the pruned checkpoint, or a file name ending in .svdckpt (default: pruned-e<E>/ next to the input)')
    .option('--backend <name>', 'auto | tensorflow | native | wasm | cpu (default: the checkpoint run\'s)')
    .option('--data <dir>', `CIFAR-10 folder whose training images re-estimate the batch-norm statistics (${BN_RECALIBRATION_IMAGES} of them; default: the run's, then SVD_TRAIN_DATA, then the cache)`)
    .option('--no-recalibrate-bn', 'keep the trained batch-norm statistics (pruning shifts them; re-estimating costs one forward pass over the images)')
    .action(async (p: string, o: PruneOptions) => setCode(await pruneCommand(p, o, io)));
}
