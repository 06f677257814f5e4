/**
 * Inline SVG line plots for the HTML report: axes with ticks, axis labels, a legend, optional
 * log-scale y (decade ticks), EMA smoothing for noisy per-batch series, and marker-only series for
 * values that are not a sequence. No external assets, so a report opens anywhere, offline.
 */

export interface Series {
  label: string;
  points: [number, number][];
  color?: string;
  dashed?: boolean;
  /** Radius of the marker drawn when the series is a single point (default 3). */
  marker?: number;
  /**
   * Per-batch values are noisy: draw them faint, with their EMA (`emaSpan`) as the line on top, so
   * the trend reads at a glance and the raw spread stays visible.
   */
  smooth?: boolean;
  /**
   * 'markers': one dot per point, no connecting line, for values of separate things (a rank per
   * layer) where a line would suggest a trend between neighbours. Default 'line'.
   */
  style?: 'line' | 'markers';
}

export interface PlotOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  logY?: boolean;
  width?: number;
  height?: number;
  /**
   * Where the legend goes: 'inside' (default) the top-right corner of the plot, or 'below' it,
   * for plots whose data fill that corner (ranks of the widest layers sit at the top right).
   */
  legend?: 'inside' | 'below';
}

export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

/**
 * The EMA span (in points) used for `smooth` series: about 1/25 of the series, so a short run is
 * barely smoothed and a long one shows its trend (pandas `ewm(span)` convention, α = 2/(span+1)).
 */
export function emaSpan(n: number): number {
  return Math.max(1, Math.round(n / 25));
}

/** EMA span a series is drawn with; 1 (no smoothing) unless it asks for it and is long enough to need it. */
function smoothSpan(s: Series): number {
  return s.smooth && s.style !== 'markers' ? emaSpan(s.points.length) : 1;
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

function fmtTick(v: number): string {
  if (v === 0) return '0';
  const a = Math.abs(v);
  if (a >= 1e4 || a < 1e-3) return v.toExponential(0);
  return String(+v.toPrecision(4));
}

/** Tick labels with just enough digits that neighbours differ (119.91, 119.92 rather than 119.9 twice). */
export function tickLabels(ticks: number[]): string[] {
  for (let p = 3; p <= 10; p++) {
    const l = ticks.map((v) => (v === 0 ? '0' : Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3 ? v.toExponential(p - 3) : String(+v.toPrecision(p))));
    if (new Set(l).size === l.length) return l;
  }
  return ticks.map(String);
}

/** An SVG line plot; series with no finite points are left out; an empty plot says "no data". */
export function linePlot(series: Series[], o: PlotOptions): string {
  const W = o.width ?? 560;
  const H = o.height ?? 320;
  const m = { l: 64, r: 16, t: 30, b: 46 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const ty = (v: number) => (o.logY ? Math.log10(v) : v);
  const live = series
    .map((s, i) => ({ ...s, color: s.color ?? PALETTE[i % PALETTE.length]!, points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!o.logY || y > 0)) }))
    .filter((s) => s.points.length > 0);
  const below = o.legend === 'below' && live.length > 0;
  const HT = below ? H + live.length * 15 + 8 : H;
  const head = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${HT}" viewBox="0 0 ${W} ${HT}" font-family="sans-serif" font-size="11">` +
    `<rect width="${W}" height="${HT}" fill="#fff"/><text x="${W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">${esc(o.title)}</text>`;
  if (live.length === 0) return `${head}<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#888">no data</text></svg>`;
  const xs = live.flatMap((s) => s.points.map((p) => p[0]));
  const ys = live.flatMap((s) => s.points.map((p) => ty(p[1])));
  let [x0, x1] = [Math.min(...xs), Math.max(...xs)];
  let [y0, y1] = [Math.min(...ys), Math.max(...ys)];
  if (x1 === x0) [x0, x1] = [x0 - 1, x1 + 1];
  if (y1 === y0) [y0, y1] = [y0 - (Math.abs(y0) || 1) * 0.1, y1 + (Math.abs(y1) || 1) * 0.1];
  const pad = (y1 - y0) * 0.05;
  y0 -= pad;
  y1 += pad;
  const sx = (x: number) => m.l + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.t + ph - ((y - y0) / (y1 - y0)) * ph;
  const parts: string[] = [head];
  // Grid and ticks.
  for (const v of niceTicks(x0, x1, 6)) {
    parts.push(`<line x1="${sx(v)}" x2="${sx(v)}" y1="${m.t}" y2="${m.t + ph}" stroke="#eee"/>`);
    parts.push(`<text x="${sx(v)}" y="${m.t + ph + 14}" text-anchor="middle">${fmtTick(v)}</text>`);
  }
  // A log axis ticks at values people read (0.5, 1, 2, 5 or 1e-6, 1e-5, ...), placed at their logs.
  const log = o.logY ? logTicks(y0, y1) : null;
  const yTicks = log ? log.major.map(Math.log10) : niceTicks(y0, y1, 5);
  const yLabels = tickLabels(log ? log.major : yTicks);
  for (const v of log?.minor ?? []) parts.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${sy(Math.log10(v))}" y2="${sy(Math.log10(v))}" stroke="#f4f4f4"/>`);
  yTicks.forEach((v, i) => {
    parts.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${sy(v)}" y2="${sy(v)}" stroke="#eee"/>`);
    parts.push(`<text x="${m.l - 6}" y="${sy(v) + 4}" text-anchor="end">${yLabels[i]}</text>`);
  });
  parts.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`);
  parts.push(`<text x="${m.l + pw / 2}" y="${H - 8}" text-anchor="middle" font-size="12">${esc(o.xLabel)}</text>`);
  parts.push(`<text transform="translate(14 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle" font-size="12">${esc(o.yLabel)}${o.logY ? ' (log)' : ''}</text>`);
  const path = (pts: [number, number][]) => pts.map(([x, y], i) => `${i ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(ty(y)).toFixed(1)}`).join('');
  for (const s of live) {
    if (s.style === 'markers') {
      for (const [x, y] of s.points) parts.push(`<circle cx="${sx(x).toFixed(1)}" cy="${sy(ty(y)).toFixed(1)}" r="${s.marker ?? 3}" fill="${s.color}"/>`);
      continue;
    }
    const dash = s.dashed ? ' stroke-dasharray="5 3"' : '';
    const span = smoothSpan(s);
    if (span > 1) {
      const smoothed = ema(s.points.map((p) => p[1]), span);
      parts.push(`<path d="${path(s.points)}" fill="none" stroke="${s.color}" stroke-width="1" stroke-opacity="0.25"${dash}/>`);
      parts.push(`<path d="${path(s.points.map((p, i) => [p[0], smoothed[i]!]))}" fill="none" stroke="${s.color}" stroke-width="1.8"${dash}/>`);
    } else parts.push(`<path d="${path(s.points)}" fill="none" stroke="${s.color}" stroke-width="1.6"${dash}/>`);
    if (s.points.length === 1) parts.push(`<circle cx="${sx(s.points[0]![0])}" cy="${sy(ty(s.points[0]![1]))}" r="${s.marker ?? 3}" fill="${s.color}"/>`);
  }
  // Legend, top-right inside the plot on a white box so it stays readable over lines, or below it.
  const legendLabel = (s: Series) => (smoothSpan(s) > 1 ? `${s.label}: EMA span ${smoothSpan(s)} (raw faint)` : s.label);
  const lw = Math.min(300, 20 + Math.max(...live.map((s) => legendLabel(s).length)) * 6.2);
  const lx = below ? m.l : m.l + pw - lw - 6;
  const ly = below ? H - 4 : m.t + 6;
  if (!below) parts.push(`<rect x="${lx}" y="${ly}" width="${lw}" height="${live.length * 15 + 6}" fill="#fff" fill-opacity="0.85" stroke="#ccc"/>`);
  live.forEach((s, i) => {
    const y = ly + 11 + i * 15;
    if (s.style === 'markers') parts.push(`<circle cx="${lx + 13.5}" cy="${y - 4}" r="3.5" fill="${s.color}"/>`);
    else parts.push(`<line x1="${lx + 5}" x2="${lx + 22}" y1="${y - 4}" y2="${y - 4}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`);
    parts.push(`<text x="${lx + 27}" y="${y}">${esc(legendLabel(s))}</text>`);
  });
  parts.push('</svg>');
  return parts.join('');
}

/** A simple vertical bar chart (used for MACs per image before/after pruning). */
export function barChart(bars: { label: string; value: number; color?: string }[], o: Omit<PlotOptions, 'xLabel' | 'logY'>): string {
  const W = o.width ?? 560;
  const H = o.height ?? 300;
  const m = { l: 70, r: 16, t: 30, b: 50 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const max = Math.max(1e-12, ...bars.map((b) => b.value));
  const ticks = niceTicks(0, max, 5);
  const top = Math.max(max, ticks[ticks.length - 1]!);
  const sy = (v: number) => m.t + ph - (v / top) * ph;
  const parts = [`<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" font-family="sans-serif" font-size="11"><rect width="${W}" height="${H}" fill="#fff"/>`,
    `<text x="${W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">${esc(o.title)}</text>`];
  for (const v of ticks) {
    parts.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${sy(v)}" y2="${sy(v)}" stroke="#eee"/><text x="${m.l - 6}" y="${sy(v) + 4}" text-anchor="end">${fmtTick(v)}</text>`);
  }
  const bw = pw / Math.max(1, bars.length);
  bars.forEach((b, i) => {
    const x = m.l + i * bw + bw * 0.15;
    parts.push(`<rect x="${x}" y="${sy(b.value)}" width="${bw * 0.7}" height="${m.t + ph - sy(b.value)}" fill="${b.color ?? PALETTE[i % PALETTE.length]}"/>`);
    parts.push(`<text x="${x + bw * 0.35}" y="${sy(b.value) - 4}" text-anchor="middle">${fmtTick(b.value)}</text>`);
    parts.push(`<text x="${x + bw * 0.35}" y="${m.t + ph + 14}" text-anchor="middle">${esc(b.label)}</text>`);
  });
  parts.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`);
  parts.push(`<text transform="translate(14 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle" font-size="12">${esc(o.yLabel)}</text></svg>`);
  return parts.join('');
}
