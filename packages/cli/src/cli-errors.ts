/**
 * How the CLIs end on bad input: a one-paragraph message naming the value, what was expected and
 * the fix, exit code 2, no stack trace. Unexpected errors (bugs) keep their stack, exit code 1.
 */
import { CommanderError } from 'commander';
import { SvdTrainError } from '@svd-train/core';

/** Exit code for usage / input errors (like most Unix tools). */
export const EXIT_USAGE = 2;
/** Exit code of a run stopped by SIGINT/SIGTERM (128 + SIGINT's 2, as shells report Ctrl-C). */
export const EXIT_INTERRUPTED = 130;

/** Error codes that mean "the user gave us something wrong", not "svd-train has a bug". */
const INPUT_CODES = new Set([
  'CONFIG_INVALID', 'CONFIG_UNKNOWN_KEY', 'CONFIG_FILE', 'DATA_MISSING', 'DATA_CORRUPT', 'CHECKPOINT_CORRUPT', 'CHECKPOINT_UNREADABLE',
  'CHECKPOINT_CONFIG_MISMATCH', 'AUTH_FAILED', 'PROTOCOL_VERSION', 'MANIFEST_MISMATCH', 'BACKEND_UNAVAILABLE', 'CLI_USAGE',
]);

/** A usage error raised by the CLI itself (bad option value, missing file). */
export function usageError(message: string): SvdTrainError {
  return new SvdTrainError('CLI_USAGE', message);
}

/** Prints `err` for a human and returns the exit code to use. */
export function reportError(err: unknown, write: (s: string) => void = (s) => process.stderr.write(s)): number {
  if (err instanceof CommanderError) {
    // commander already printed its message (unknown option, missing argument ...).
    return err.exitCode === 0 ? 0 : EXIT_USAGE;
  }
  if (err instanceof SvdTrainError && err.code === 'INTERRUPTED') {
    // A stop the user asked for (Ctrl-C): the shell's code for SIGINT, and no "error".
    write(`stopped: ${err.message}\n`);
    return EXIT_INTERRUPTED;
  }
  if (err instanceof SvdTrainError) {
    write(`error [${err.code}]: ${err.message}\n`);
    return INPUT_CODES.has(err.code) ? EXIT_USAGE : 1;
  }
  const e = err as Error;
  write(`internal error: ${e?.stack ?? String(err)}\n`);
  return 1;
}

/** Parses a number option, naming the flag and the expectation when it is not one. */
export function parseNumberOption(flag: string, expected: string, check: (n: number) => boolean = () => true) {
  return (raw: string): number => {
    const n = Number(raw);
    if (raw.trim() === '' || !Number.isFinite(n) || !check(n)) {
      throw usageError(`${flag} ${JSON.stringify(raw)} is not valid; expected ${expected}. Fix: e.g. ${flag} ${expected.match(/e\.g\. (\S+)/)?.[1] ?? '1'}.`);
    }
    return n;
  };
}

/**
 * A reader that stops early (`svd-coord --help | head`, a pager quit) closes stdout; Node then
 * raises EPIPE on the next write as an uncaught stack trace. Output nobody reads is not an error.
 */
export function quietOnClosedStdout(): void {
  for (const s of [process.stdout, process.stderr]) {
    s.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EPIPE') process.exit(process.exitCode ?? 0);
      throw e;
    });
  }
}
