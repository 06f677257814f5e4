/**
 * The coordinator's log sink, and rate limiting for events anyone on the network can cause
 * (refused connections, peers dropped before authenticating): thousands a second must not turn
 * into a log flood.
 */

export type LogLevel = 'debug' | 'info' | 'warn' | 'error';

export type LogFn = (level: LogLevel, msg: string) => void;

/** Events of one kind are logged at most once per this long (plus a count). */
export const QUIET_LOG_MS = 5000;

export class QuietLog {
  private readonly quiet = new Map<string, { more: number }>();

  constructor(private readonly log: LogFn) {}

  /**
   * Logs the first event of `kind`, then at most one line per QUIET_LOG_MS saying how many more
   * there were.
   */
  event(kind: string, level: LogLevel, msg: string): void {
    const q = this.quiet.get(kind);
    if (q) {
      q.more++;
      return;
    }
    this.log(level, msg);
    const entry = { more: 0 };
    this.quiet.set(kind, entry);
    setTimeout(() => {
      this.quiet.delete(kind);
      if (entry.more) this.log(level, `${msg} (and ${entry.more} more like this within ${QUIET_LOG_MS / 1000} s)`);
    }, QUIET_LOG_MS).unref?.();
  }
}
