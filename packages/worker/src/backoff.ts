/**
 * Reconnect delays for a worker whose coordinator is not up yet or went away.
 *
 * Exponential with a cap and "full jitter" (AWS architecture blog): many workers restarted at once
 * must not hammer a coordinator in lock-step, so each delay is uniform in [0, min(cap, base·2^k)].
 * A delay is never above MAX_TIMER_MS, which Node's setTimeout would fire after 1 ms.
 */
import { MAX_TIMER_MS } from '@svd-train/core';

export interface BackoffOptions {
  /** First delay ceiling in ms (default 250). */
  baseMs?: number;
  /** Largest delay in ms (default 10 000). */
  capMs?: number;
  /** Random source in [0,1) (default Math.random); tests pass a fixed one. */
  random?: () => number;
}

/** Delay before reconnect attempt `attempt` (0-based). */
export function backoffDelay(attempt: number, opts: BackoffOptions = {}): number {
  const base = opts.baseMs ?? 250;
  const cap = opts.capMs ?? 10_000;
  const random = opts.random ?? Math.random;
  const ceiling = Math.min(cap, base * 2 ** Math.min(attempt, 30));
  // Never 0: a zero delay would spin when the coordinator refuses instantly.
  return Math.min(MAX_TIMER_MS, Math.max(base / 4, ceiling * random()));
}
