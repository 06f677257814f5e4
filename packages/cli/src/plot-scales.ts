/**
 * The numbers behind the report's axes, with no SVG in them: tick values for linear and log10
 * axes, their labels, and the EMA that smooths noisy per-batch curves.
 */

/**
 * The EMA span (in points) used for `smooth` series: about 1/25 of the series, so a short run is
 * barely smoothed and a long one shows its trend (pandas `ewm(span)` convention, α = 2/(span+1)).
 */
export function emaSpan(n: number): number {
  return Math.max(1, Math.round(n / 25));
}

/**
 * Exponential moving average with bias correction (as TensorBoard's smoothing), so the first
 * values are not pulled towards 0: out[t] = Σ_{i≤t} (1−α)^{t−i}·α·y[i] / (1 − (1−α)^{t+1}).
 */
export function ema(values: readonly number[], span: number): number[] {
  const beta = 1 - 2 / (span + 1);
  let acc = 0;
  let weight = 0;
  return values.map((v) => {
    acc = beta * acc + (1 - beta) * v;
    weight = beta * weight + (1 - beta);
    return acc / weight;
  });
}

/**
 * Ticks of a log10 axis spanning [lo, hi] (log10 values). Labelled ticks: 1-2-5 × 10^k when the
 * axis spans at most about three decades, every decade (thinned to at most 8 labels) beyond that;
 * the 1-9 mantissas, then nice linear values, when a short axis leaves fewer than three. Unlabelled minor ticks at 2-9 × 10^k
 * mark the log scale where decades are labelled. Values are returned as plain numbers, not logs.
 */
export function logTicks(lo: number, hi: number): { major: number[]; minor: number[] } {
  const k0 = Math.floor(lo);
  const k1 = Math.ceil(hi);
  const inRange = (v: number) => Math.log10(v) >= lo - 1e-9 && Math.log10(v) <= hi + 1e-9;
  const mantissas = (ms: number[]) => {
    const out: number[] = [];
    for (let k = k0; k <= k1; k++) for (const m of ms) out.push(+(m * 10 ** k).toPrecision(12));
    return out.filter(inRange);
  };
  if (hi - lo <= 3.2) {
    let major = mantissas([1, 2, 5]);
    if (major.length < 3) major = mantissas([1, 2, 3, 4, 5, 6, 7, 8, 9]);
    // Within a fraction of a decade the scale is nearly linear: nice linear values read best.
    for (let count = 4; major.length < 3 && count <= 12; count += 2) major = niceTicks(10 ** lo, 10 ** hi, count).filter((v) => v > 0 && inRange(v));
    return { major, minor: [] };
  }
  const decades = mantissas([1]);
  const every = Math.ceil(decades.length / 8);
  const major = decades.filter((v) => Math.round(Math.log10(v)) % every === 0);
  const minor = hi - lo <= 8 ? mantissas([2, 3, 4, 5, 6, 7, 8, 9]) : decades.filter((v) => !major.includes(v));
  return { major, minor };
}

/** "Nice" tick values covering [lo, hi] (1-2-5 steps). */
export function niceTicks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const step = [1, 2, 5, 10].map((m) => m * mag).find((s) => s >= raw) ?? 10 * mag;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toPrecision(12));
  return out;
}

/** A short axis label for a value: 0.25, 120, 1e-4, 2e5. */
export function fmtTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(0).replace('e+', 'e');
  return String(+v.toPrecision(4));
}

/** Tick labels with just enough digits that neighbours differ (119.91, 119.92 rather than 119.9 twice). */
export function tickLabels(ticks: number[]): string[] {
  for (let p = 3; p <= 10; p++) {
    const l = ticks.map((v) => (v === 0 ? '0' : Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3 ? v.toExponential(p - 3).replace('e+', 'e') : String(+v.toPrecision(p))));
    if (new Set(l).size === l.length) return l;
  }
  return ticks.map(String);
}

/** An accuracy in [0, 1] as text: 0.9074 → "90.74%". */
export const pctText = (acc: number): string => `${(100 * acc).toFixed(2)}%`;
