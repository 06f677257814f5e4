/**
 * Inline SVG line plots for the HTML report: axes with ticks, axis labels, a legend, optional
 * log-scale y. No external assets, so a report opens anywhere, offline.
 */

export interface Series {
  label: string;
  points: [number, number][];
  color?: string;
  dashed?: boolean;
  /** Radius of the marker drawn when the series is a single point (default 3). */
  marker?: number;
}

export interface PlotOptions {
  title: string;
  xLabel: string;
  yLabel: string;
  logY?: boolean;
  width?: number;
  height?: number;
}

export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');

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
    const l = ticks.map((v) => (v === 0 ? '0' : Math.abs(v) >= 1e4 || Math.abs(v) < 1e-3 ? v.toExponential(p - 2) : String(+v.toPrecision(p))));
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
  const head = `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">` +
    `<rect width="${W}" height="${H}" fill="#fff"/><text x="${W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">${esc(o.title)}</text>`;
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
  // Log axes tick at powers of ten when they span at least two, else at nice exponents between.
  const decades = Array.from({ length: Math.max(0, Math.floor(y1) - Math.ceil(y0) + 1) }, (_, i) => Math.ceil(y0) + i);
  const yTicks = o.logY ? (decades.length >= 2 ? decades : niceTicks(y0, y1, 4)) : niceTicks(y0, y1, 5);
  const yLabels = o.logY && decades.length >= 2 ? yTicks.map((v) => `1e${v}`) : tickLabels(o.logY ? yTicks.map((v) => 10 ** v) : yTicks);
  yTicks.forEach((v, i) => {
    parts.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${sy(v)}" y2="${sy(v)}" stroke="#eee"/>`);
    parts.push(`<text x="${m.l - 6}" y="${sy(v) + 4}" text-anchor="end">${yLabels[i]}</text>`);
  });
  parts.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`);
  parts.push(`<text x="${m.l + pw / 2}" y="${H - 8}" text-anchor="middle" font-size="12">${esc(o.xLabel)}</text>`);
  parts.push(`<text transform="translate(14 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle" font-size="12">${esc(o.yLabel)}${o.logY ? ' (log)' : ''}</text>`);
  for (const s of live) {
    const d = s.points.map(([x, y], i) => `${i ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(ty(y)).toFixed(1)}`).join('');
    parts.push(`<path d="${d}" fill="none" stroke="${s.color}" stroke-width="1.6"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`);
    if (s.points.length === 1) parts.push(`<circle cx="${sx(s.points[0]![0])}" cy="${sy(ty(s.points[0]![1]))}" r="${s.marker ?? 3}" fill="${s.color}"/>`);
  }
  // Legend, top-right inside the plot, on a white box so it stays readable over lines.
  const lw = Math.min(220, 20 + Math.max(...live.map((s) => s.label.length)) * 6.2);
  const lx = m.l + pw - lw - 6;
  parts.push(`<rect x="${lx}" y="${m.t + 6}" width="${lw}" height="${live.length * 15 + 6}" fill="#fff" fill-opacity="0.85" stroke="#ccc"/>`);
  live.forEach((s, i) => {
    const y = m.t + 17 + i * 15;
    parts.push(`<line x1="${lx + 5}" x2="${lx + 22}" y1="${y - 4}" y2="${y - 4}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`);
    parts.push(`<text x="${lx + 27}" y="${y}">${esc(s.label)}</text>`);
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
