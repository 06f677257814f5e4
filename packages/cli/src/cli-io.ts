/**
 * Where the commands print, injectable so tests can read it: `out` is the command's result
 * (stdout, e.g. an accuracy line or a table), `err` is progress, warnings and logs (stderr).
 */
export interface CliIo {
  out: (s: string) => void;
  err: (s: string) => void;
}

export const processIo: CliIo = { out: (s) => process.stdout.write(s), err: (s) => process.stderr.write(s) };

/** How a command's action hands back its exit code (tests read it; the bin sets process.exitCode). */
export type SetExitCode = (code: number) => void;
