/**
 * Typed errors with stable codes for every svd-train package.
 *
 * Callers (the CLI, tests, the coordinator when it relays a worker failure) switch on `code`,
 * never on message text, so codes are a stable union and messages are free to improve.
 * Each message states the actual value, the expected value and how to fix it.
 */

/** Every error code any svd-train package may throw. Append new codes; never rename one. */
export const ERROR_CODES = [
  'SHAPE_MISMATCH',
  'CONFIG_INVALID',
  'CONFIG_UNKNOWN_KEY',
  'CONFIG_FILE',
  'DATA_MISSING',
  'DATA_CORRUPT',
  'DOWNLOAD_FAILED',
  'CHECKPOINT_CORRUPT',
  'CHECKPOINT_CONFIG_MISMATCH',
  'PROTOCOL_VERSION',
  'PROTOCOL_INVALID',
  'FRAME_TOO_LARGE',
  'NON_FINITE',
  'AUTH_FAILED',
  'MANIFEST_MISMATCH',
  'ROUND_MISMATCH',
  'BACKEND_UNAVAILABLE',
  'INTERNAL',
  'CLI_USAGE',
  /** Every attempt at one step produced non-finite numbers: the run diverged (e.g. --lr too high). */
  'DIVERGED',
  /** A worker's gradient is out of all proportion to the other workers' (finite but ~1e3x larger). */
  'GRADIENT_OUTLIER',
  /** The coordinator stopped the run with an error; sent to workers so they exit non-zero. */
  'RUN_ABORTED',
  'PEER_TIMEOUT',
  /** A checkpoint folder exists but cannot be listed (permissions, not a folder, I/O error). */
  'CHECKPOINT_UNREADABLE',
  /** A checkpoint could not be written (disk full, read-only or missing folder); the older ones stay. */
  'CHECKPOINT_WRITE_FAILED',
  /** A worker gave up reaching the coordinator after its allowed number of attempts. */
  'CONNECTION_FAILED',
  /** Every worker `svd-coord start --spawn` launched exited with an error: nobody is left to train. */
  'WORKERS_FAILED',
  /** The coordinator cannot listen on its --host/--port (in use, not this machine's, no permission). */
  'LISTEN_FAILED',
  /** The run was stopped on request (SIGINT/SIGTERM) after checkpointing what it had trained. */
  'INTERRUPTED',
] as const;

export type ErrorCode = (typeof ERROR_CODES)[number];

/** The one error class of svd-train; `code` is stable, `details` is optional machine-readable context. */
export class SvdTrainError extends Error {
  readonly code: ErrorCode;
  readonly details?: Record<string, unknown>;

  constructor(code: ErrorCode, message: string, details?: Record<string, unknown>, options?: { cause?: unknown }) {
    super(message, options);
    this.name = 'SvdTrainError';
    this.code = code;
    if (details !== undefined) this.details = details;
  }
}

/**
 * True when `v` is one of ERROR_CODES. Codes that arrive over the wire are plain strings (a newer
 * peer may send a code this build does not know), so they are checked here before being typed.
 */
export function isErrorCode(v: unknown): v is ErrorCode {
  return typeof v === 'string' && (ERROR_CODES as readonly string[]).includes(v);
}

/** True when `e` is an SvdTrainError, optionally with the given code. */
export function isSvdTrainError(e: unknown, code?: ErrorCode): e is SvdTrainError {
  return e instanceof SvdTrainError && (code === undefined || e.code === code);
}

/**
 * Throws `SvdTrainError(code, msg())` when `cond` is false. The message is a thunk so hot paths
 * (per-tensor checks on every round) pay nothing for string building when the check passes.
 */
export function assert(cond: unknown, msg: () => string, code: ErrorCode = 'INTERNAL'): asserts cond {
  if (!cond) throw new SvdTrainError(code, msg());
}
