/**
 * `svd-coord`: start a distributed training run, and work on its checkpoints (eval, prune, average, decompose,
 * export, report, download). Each command lives in commands/; this module builds the program from them and
 * is the entry point of bin/svd-coord.js.
 */
import { Command } from 'commander';
import { EXIT_INTERRUPTED, reportError, quietOnClosedStdout } from './cli-errors.js';
import { processIo, type CliIo, type SetExitCode } from './cli-io.js';
import { registerAverageCommand } from './commands/average.js';
import { registerDecomposeCommand } from './commands/decompose.js';
import { registerDownloadCommand } from './commands/download.js';
import { registerEvalCommand } from './commands/eval.js';
import { registerExportCommand } from './commands/export.js';
import { registerPruneCommand } from './commands/prune.js';
import { registerReportCommand } from './commands/report.js';
import { registerStartCommand } from './commands/start.js';

/** Builds the `svd-coord` program; `io` is injectable for tests. */
export function buildCoordProgram(io: CliIo = processIo, setCode: SetExitCode = () => {}): Command {
  const program = new Command('svd-coord')
    .description('Train SVD-decomposed ResNets on CIFAR-10, data-parallel over WebSocket workers.')
    .exitOverride()
    .configureOutput({ writeOut: io.out, writeErr: io.err })
    .showHelpAfterError('(run with --help for usage)');
  // Registered in this order, which is the order `svd-coord --help` lists them in.
  for (const register of [registerStartCommand, registerEvalCommand, registerPruneCommand, registerAverageCommand, registerDecomposeCommand, registerExportCommand, registerReportCommand, registerDownloadCommand]) {
    register(program, io, setCode);
  }
  return program;
}

/** Entry point of bin/svd-coord.js. */
export async function runCoordCli(argv: string[]): Promise<void> {
  quietOnClosedStdout();
  let code = 0;
  try {
    await buildCoordProgram(processIo, (c) => (code = c)).parseAsync(argv);
  } catch (e) {
    code = reportError(e);
  }
  process.exitCode = code;
  // Stopped by a signal: exit now. Left to drain, node's teardown closes the SIGINT/SIGTERM handlers
  // before the process ends (tens of ms), and the echo of the same Ctrl-C (pnpm's forwarded copy)
  // landing there kills the process by signal instead of exit code 130. Everything the stop owes is
  // done by now: the checkpoint, the metrics and the "stopped:" line are written synchronously.
  if (code === EXIT_INTERRUPTED) process.exit(code);
  // The command is over: a peer's socket or a stray timer must not keep `svd-coord start` alive
  // after training. An unref'd timer fires only if something else still holds the event loop.
  setTimeout(() => process.exit(code), 2000).unref();
}
