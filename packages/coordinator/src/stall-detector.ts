/**
 * Stall detection for outstanding work (cf. Horovod StallInspector).
 *
 * Every request sent to a worker is tracked. After `warnMs` without an answer the detector warns,
 * naming the worker; after `timeoutMs` it reports a timeout and the coordinator drops the worker
 * (re-assigning its slice) or aborts the run, as `stallAction` says.
 */
export interface StallDetectorOptions {
  warnMs: number;
  timeoutMs: number;
  onWarn: (worker: string, what: string, waitedMs: number) => void;
  onTimeout: (worker: string, what: string, waitedMs: number) => void;
}

interface Pending {
  warn: NodeJS.Timeout | null;
  kill: NodeJS.Timeout;
}

export class StallDetector {
  private readonly pending = new Map<string, Pending>();
  constructor(private readonly opts: StallDetectorOptions) {}

  /** Starts (or restarts) the clock for `worker`'s outstanding request `what`. */
  track(worker: string, what: string): void {
    this.clear(worker);
    const t0 = Date.now();
    const { warnMs, timeoutMs } = this.opts;
    const warn = warnMs > 0 && warnMs < timeoutMs ? setTimeout(() => this.opts.onWarn(worker, what, Date.now() - t0), warnMs) : null;
    const kill = setTimeout(() => {
      this.pending.delete(worker);
      this.opts.onTimeout(worker, what, Date.now() - t0);
    }, timeoutMs);
    warn?.unref?.();
    kill.unref?.();
    this.pending.set(worker, { warn, kill });
  }

  /** The worker answered (or is gone): stop its clock. */
  clear(worker: string): void {
    const p = this.pending.get(worker);
    if (!p) return;
    if (p.warn) clearTimeout(p.warn);
    clearTimeout(p.kill);
    this.pending.delete(worker);
  }

  clearAll(): void {
    for (const w of [...this.pending.keys()]) this.clear(w);
  }

  get size(): number {
    return this.pending.size;
  }
}
