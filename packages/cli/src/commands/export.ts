/**
 * `svd-coord export CKPT --out DIR`: the model as a tfjs LayersModel folder, with our SVD layers or
 * (--stock) as plain Conv2D/Dense layers that load without svd-train.
 */
import type { Command } from 'commander';
import { checkModelFolder, countMacs, exportToStockLayers, fileSystemIO } from '@svd-train/layers';
import { usageError } from '../cli-errors.js';
import type { CliIo, SetExitCode } from '../cli-io.js';
import { checkpointArgument, modelFromCheckpoint } from '../checkpoint-model.js';

interface ExportOptions {
  out: string;
  stock?: boolean;
  foldBn?: boolean;
  backend?: string;
}

async function exportCommand(pathArg: string, opts: ExportOptions, io: CliIo): Promise<number> {
  if (opts.foldBn && !opts.stock) throw usageError('--fold-bn needs --stock: only the stock export folds batch norm into the convs. Fix: add --stock.');
  // Before the checkpoint is read: --out naming the checkpoint, its folder or any other file is refused at once.
  checkModelFolder(opts.out);
  const { model } = await modelFromCheckpoint(checkpointArgument(pathArg, io), opts.backend, io);
  const m = opts.stock ? exportToStockLayers(model, { foldBatchNorm: Boolean(opts.foldBn) }) : model;
  await m.save(fileSystemIO(opts.out));
  const c = countMacs(m);
  io.out(
    `model written to ${opts.out}${opts.stock ? ` (stock tfjs layers${opts.foldBn ? ', BN folded into the convs' : ''}, loadable without svd-train)` : ''}: ` +
      `${(c.total / 1e6).toFixed(2)}M MACs per image, ${c.exportParams} weights in the form that runs\n`,
  );
  return 0;
}

/** Adds `export` to the `svd-coord` program. */
export function registerExportCommand(program: Command, io: CliIo, setCode: SetExitCode): void {
  program
    .command('export')
    .description('write the model as a tfjs LayersModel folder')
    .argument('<ckpt>', 'checkpoint file')
    .requiredOption('--out <dir>', 'output folder')
    .option('--stock', 'write stock Conv2D/Dense layers: one per SVD layer where merged is cheaper, two where factored is')
    .option('--fold-bn', 'with --stock: fold each batch norm into the conv before it (inference only)')
    .option('--backend <name>', 'auto | tensorflow | native | wasm | cpu (default: the checkpoint run\'s)')
    .action(async (p: string, o: ExportOptions) => setCode(await exportCommand(p, o, io)));
}
