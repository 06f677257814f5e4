/**
 * Inline SVG charts for the HTML report, written by hand so the page needs no script, library or
 * network: line plots (axes with ticks, axis labels, a legend, optional log-scale y with decade
 * ticks, EMA smoothing for noisy per-batch series, marker-only series for values that are not a
 * sequence, vertical marks), horizontal stacked bars and overlaid columns.
 */
import { ema, emaSpan, fmtTick, logTicks, niceTicks, tickLabels } from './plot-scales.js';

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
  style?: 'line' | 'markers' | 'line+markers';
  /** Text drawn next to each point (same order as `points`; '' for none), e.g. the energy of a sweep point. */
  pointLabels?: string[];
}

/** A vertical line across the plot at data x, with a label at its top. */
export interface VerticalMark {
  x: number;
  label?: string;
  color?: string;
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
  legend?: 'inside' | 'below' | 'none';
  /** Fixed axis ranges in data units (y as values, also on a log axis); default: the data's. */
  xRange?: [number, number];
  yRange?: [number, number];
  /** Vertical lines, e.g. epoch boundaries or the plain model's MACs. */
  marks?: VerticalMark[];
  /** A line of smaller text under the title. */
  subtitle?: string;
  /** Only whole-number x ticks (epochs). */
  xInteger?: boolean;
}

/** [min, max] by a loop: spreading a long run's per-step series into Math.min overflows the stack. */
function extent(v: readonly number[]): [number, number] {
  let lo = Infinity;
  let hi = -Infinity;
  for (const x of v) {
    if (x < lo) lo = x;
    if (x > hi) hi = x;
  }
  return [lo, hi];
}

export const PALETTE = ['#1f77b4', '#d62728', '#2ca02c', '#ff7f0e', '#9467bd', '#8c564b', '#e377c2', '#7f7f7f', '#bcbd22', '#17becf'];

/** Text for SVG/HTML: escapes &, <, > and ". */
export const escapeXml = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
const esc = escapeXml;

/** EMA span a series is drawn with; 1 (no smoothing) unless it asks for it and is long enough to need it. */
function smoothSpan(s: Series): number {
  return s.smooth && s.style !== 'markers' ? emaSpan(s.points.length) : 1;
}

/** Most points a raw path keeps; longer series are drawn from every k-th point (their EMA from all). */
const MAX_PATH_POINTS = 1500;

function thin<T>(pts: readonly T[]): T[] {
  if (pts.length <= MAX_PATH_POINTS) return [...pts];
  const k = Math.ceil(pts.length / MAX_PATH_POINTS);
  const out = pts.filter((_, i) => i % k === 0);
  if ((pts.length - 1) % k !== 0) out.push(pts[pts.length - 1]);
  return out;
}

const svgHead = (W: number, H: number, title: string, subtitle?: string) =>
  `<svg xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="11">` +
  `<rect width="${W}" height="${H}" fill="#fff"/><text x="${W / 2}" y="18" text-anchor="middle" font-size="14" font-weight="bold">${esc(title)}</text>` +
  (subtitle ? `<text x="${W / 2}" y="33" text-anchor="middle" fill="#555">${esc(subtitle)}</text>` : '');

/** An SVG line plot; series with no finite points are left out; an empty plot says "no data". */
export function linePlot(series: Series[], o: PlotOptions): string {
  const W = o.width ?? 560;
  const H = o.height ?? 320;
  const m = { l: 64, r: 16, t: o.subtitle ? 42 : 30, b: 46 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const ty = (v: number) => (o.logY ? Math.log10(v) : v);
  const live = series
    .map((s, i) => ({ ...s, color: s.color ?? PALETTE[i % PALETTE.length], points: s.points.filter(([x, y]) => Number.isFinite(x) && Number.isFinite(y) && (!o.logY || y > 0)) }))
    .filter((s) => s.points.length > 0);
  const legend = o.legend ?? 'inside';
  const below = legend === 'below' && live.length > 0;
  const HT = below ? H + live.length * 15 + 8 : H;
  const head = svgHead(W, HT, o.title, o.subtitle);
  if (live.length === 0) return `${head}<text x="${W / 2}" y="${H / 2}" text-anchor="middle" fill="#888">no data</text></svg>`;
  const xs = live.flatMap((s) => s.points.map((p) => p[0]));
  const ys = live.flatMap((s) => s.points.map((p) => ty(p[1])));
  let [x0, x1] = o.xRange ?? extent(xs);
  let [y0, y1] = o.yRange ? [ty(o.yRange[0]), ty(o.yRange[1])] : extent(ys);
  if (x1 === x0) [x0, x1] = [x0 - 1, x1 + 1];
  if (y1 === y0) [y0, y1] = [y0 - (Math.abs(y0) || 1) * 0.1, y1 + (Math.abs(y1) || 1) * 0.1];
  if (!o.yRange) {
    // More room where labels or large markers sit next to the points.
    const pad = (y1 - y0) * (live.some((s) => s.pointLabels || (s.marker ?? 3) > 4) ? 0.1 : 0.05);
    y0 -= pad;
    y1 += pad;
  }
  const sx = (x: number) => m.l + ((x - x0) / (x1 - x0)) * pw;
  const sy = (y: number) => m.t + ph - ((y - y0) / (y1 - y0)) * ph;
  const parts: string[] = [head];
  // Grid and ticks.
  const xTicks = niceTicks(x0, x1, 6).filter((v) => !o.xInteger || Number.isInteger(v));
  for (const v of xTicks) {
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
  for (const mk of o.marks ?? []) {
    if (!(mk.x >= x0 && mk.x <= x1)) continue;
    parts.push(`<line x1="${sx(mk.x)}" x2="${sx(mk.x)}" y1="${m.t}" y2="${m.t + ph}" stroke="${mk.color ?? '#999'}" stroke-dasharray="4 3"/>`);
    // The label goes right of the line, or left of it near the right edge so it stays inside.
    const right = sx(mk.x) < m.l + pw * 0.75;
    if (mk.label) parts.push(`<text x="${sx(mk.x) + (right ? 3 : -3)}" y="${m.t + ph - 4}" text-anchor="${right ? 'start' : 'end'}" fill="${mk.color ?? '#777'}" font-size="10">${esc(mk.label)}</text>`);
  }
  parts.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`);
  parts.push(`<text x="${m.l + pw / 2}" y="${H - 8}" text-anchor="middle" font-size="12">${esc(o.xLabel)}</text>`);
  parts.push(`<text transform="translate(14 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle" font-size="12">${esc(o.yLabel)}${o.logY ? ' (log)' : ''}</text>`);
  // Clip to the plot area so a fixed range cuts lines at the frame.
  const clip = `clip${Math.abs(hashString([o.title, o.subtitle, o.xLabel, W, H].join('|')))}`;
  parts.push(`<clipPath id="${clip}"><rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}"/></clipPath><g clip-path="url(#${clip})">`);
  const path = (pts: [number, number][]) => thin(pts).map(([x, y], i) => `${i ? 'L' : 'M'}${sx(x).toFixed(1)},${sy(ty(y)).toFixed(1)}`).join('');
  const dots = (s: (typeof live)[number], r: number) => s.points.map(([x, y]) => `<circle cx="${sx(x).toFixed(1)}" cy="${sy(ty(y)).toFixed(1)}" r="${r}" fill="${s.color}"/>`).join('');
  const markerLayers: string[] = [];
  for (const s of live) {
    if (s.style === 'markers') {
      markerLayers.push(dots(s, s.marker ?? 3));
      continue;
    }
    const dash = s.dashed ? ' stroke-dasharray="5 3"' : '';
    const span = smoothSpan(s);
    if (span > 1) {
      const smoothed = ema(s.points.map((p) => p[1]), span);
      parts.push(`<path d="${path(s.points)}" fill="none" stroke="${s.color}" stroke-width="1" stroke-opacity="0.25"${dash}/>`);
      parts.push(`<path d="${path(s.points.map((p, i) => [p[0], smoothed[i]]))}" fill="none" stroke="${s.color}" stroke-width="1.8"${dash}/>`);
    } else parts.push(`<path d="${path(s.points)}" fill="none" stroke="${s.color}" stroke-width="1.6"${dash}/>`);
    if (s.style === 'line+markers' || s.points.length === 1) markerLayers.push(dots(s, s.marker ?? 3));
  }
  parts.push('</g>');
  // Markers outside the clip: a point on the frame (the first and last epoch) stays a whole dot.
  parts.push(...markerLayers);
  // Point labels: above-right of the point, else below-right, above-left, below-left, whichever
  // first overlaps no label already placed and stays in the plot; a label with no room is left out
  // (the tables next to the plots list every value).
  // Every marker counts as placed (a box as tall as a label around it), so labels avoid them too.
  const placed: { x: number; y: number; w: number }[] = live
    .filter((s) => s.style === 'markers' || s.style === 'line+markers' || s.points.length === 1)
    .flatMap((s) => s.points.map(([x, y]) => ({ x: sx(x) - 4, y: sy(ty(y)) + 5, w: 8 })));
  for (const s of live) {
    s.pointLabels?.forEach((text, i) => {
      const p = s.points[i];
      if (!text || !p) return;
      const w = text.length * 5.6;
      const px = sx(p[0]);
      const py = sy(ty(p[1]));
      for (const [dx, dy] of [[6, -6], [6, 13], [-6 - w, -6], [-6 - w, 13]] as const) {
        const x = px + dx;
        const y = py + dy;
        const free = placed.every((b) => x + w < b.x || b.x + b.w < x || Math.abs(y - b.y) >= 12);
        if (free && x >= m.l && x + w <= m.l + pw && y - 10 >= m.t && y <= m.t + ph) {
          placed.push({ x, y, w });
          parts.push(`<text x="${x.toFixed(1)}" y="${y.toFixed(1)}" font-size="10" fill="${s.color}">${esc(text)}</text>`);
          return;
        }
      }
    });
  }
  if (legend !== 'none') {
    // Legend, top-right inside the plot on a white box so it stays readable over lines, or below it.
    const legendLabel = (s: Series) => (smoothSpan(s) > 1 ? `${s.label}: EMA span ${smoothSpan(s)} (raw faint)` : s.label);
    const lw = Math.min(pw - 12, 20 + Math.max(...live.map((s) => legendLabel(s).length)) * 6.2);
    const lx = below ? m.l : m.l + pw - lw - 6;
    const ly = below ? H - 4 : m.t + 6;
    if (!below) parts.push(`<rect x="${lx}" y="${ly}" width="${lw}" height="${live.length * 15 + 6}" fill="#fff" fill-opacity="0.85" stroke="#ccc"/>`);
    live.forEach((s, i) => {
      const y = ly + 11 + i * 15;
      if (s.style !== 'markers' && s.points.length > 1) parts.push(`<line x1="${lx + 5}" x2="${lx + 22}" y1="${y - 4}" y2="${y - 4}" stroke="${s.color}" stroke-width="2"${s.dashed ? ' stroke-dasharray="5 3"' : ''}/>`);
      if (s.style === 'markers' || s.style === 'line+markers' || s.points.length === 1) parts.push(`<circle cx="${lx + 13.5}" cy="${y - 4}" r="${Math.min(5, s.marker ?? 3.5)}" fill="${s.color}"/>`);
      parts.push(`<text x="${lx + 27}" y="${y}">${esc(legendLabel(s))}</text>`);
    });
  }
  parts.push('</svg>');
  return parts.join('');
}

/** A stable small hash, for ids that must differ between the plots of one page. */
function hashString(s: string): number {
  let h = 0;
  for (let i = 0; i < s.length; i++) h = (Math.imul(31, h) + s.charCodeAt(i)) | 0;
  return h;
}

/** One horizontal bar: its segments are stacked left to right. */
export interface HBar {
  label: string;
  segments: { value: number; color?: string }[];
  /** Text after the bar's end; default: the total, formatted with `valueFormat`. */
  note?: string;
}

export interface HBarOptions {
  title: string;
  /** Label of the value axis (along the bottom). */
  valueLabel: string;
  /** Names of the segments, in order, for the legend (none when omitted). */
  segmentLabels?: { label: string; color: string }[];
  width?: number;
  valueFormat?: (v: number) => string;
}

/**
 * Horizontal bars, one row per item, labelled on the left, with segments stacked left to right and
 * the total written after each bar. Rows read without rotated text however long their labels, and
 * the values stay clear of the title.
 */
export function hBarChart(bars: HBar[], o: HBarOptions): string {
  const W = o.width ?? 640;
  const fmt = o.valueFormat ?? fmtTick;
  const row = 26;
  const labelW = Math.min(W * 0.45, 16 + Math.max(0, ...bars.map((b) => b.label.length)) * 7);
  // Legend entries flow left to right and wrap to a new row where the width runs out.
  const legend: { x: number; y: number; label: string; color: string }[] = [];
  let lx = 16;
  let ly = 30;
  for (const sg of o.segmentLabels ?? []) {
    const w = 28 + sg.label.length * 6.2;
    if (lx + w > W && lx > 16) [lx, ly] = [16, ly + 16];
    legend.push({ x: lx, y: ly, ...sg });
    lx += w;
  }
  const legendH = legend.length ? ly - 30 + 20 : 0;
  const m = { l: labelW, r: 16, t: 30 + legendH, b: 40 };
  const pw = W - m.l - m.r;
  const ph = Math.max(1, bars.length) * row;
  const H = m.t + ph + m.b;
  const totals = bars.map((b) => b.segments.reduce((a, s) => a + (Number.isFinite(s.value) ? Math.max(0, s.value) : 0), 0));
  const max = Math.max(1e-12, ...totals);
  // Room after the longest bar for its value label.
  const ticks = niceTicks(0, max * 1.18, 5);
  const top = Math.max(max * 1.18, ticks[ticks.length - 1]);
  const sx = (v: number) => m.l + (v / top) * pw;
  const parts = [svgHead(W, H, o.title)];
  for (const e of legend) parts.push(`<rect x="${e.x}" y="${e.y}" width="12" height="10" fill="${e.color}"/><text x="${e.x + 16}" y="${e.y + 9}">${esc(e.label)}</text>`);
  for (const v of ticks) {
    parts.push(`<line x1="${sx(v)}" x2="${sx(v)}" y1="${m.t}" y2="${m.t + ph}" stroke="#eee"/><text x="${sx(v)}" y="${m.t + ph + 14}" text-anchor="middle">${fmtTick(v)}</text>`);
  }
  bars.forEach((b, i) => {
    const y = m.t + i * row + row * 0.18;
    const h = row * 0.64;
    let x = 0;
    b.segments.forEach((sg, j) => {
      const v = Number.isFinite(sg.value) ? Math.max(0, sg.value) : 0;
      parts.push(`<rect x="${sx(x).toFixed(1)}" y="${y.toFixed(1)}" width="${(sx(x + v) - sx(x)).toFixed(1)}" height="${h.toFixed(1)}" fill="${sg.color ?? PALETTE[(b.segments.length > 1 ? j : i) % PALETTE.length]}"/>`);
      x += v;
    });
    parts.push(`<text x="${m.l - 6}" y="${(y + h / 2 + 4).toFixed(1)}" text-anchor="end">${esc(b.label)}</text>`);
    parts.push(`<text x="${(sx(x) + 4).toFixed(1)}" y="${(y + h / 2 + 4).toFixed(1)}">${esc(b.note ?? fmt(totals[i]))}</text>`);
  });
  parts.push(`<line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${m.t + ph}" stroke="#444"/><line x1="${m.l}" x2="${m.l + pw}" y1="${m.t + ph}" y2="${m.t + ph}" stroke="#444"/>`);
  parts.push(`<text x="${m.l + pw / 2}" y="${H - 8}" text-anchor="middle" font-size="12">${esc(o.valueLabel)}</text></svg>`);
  return parts.join('');
}

/** Single-segment horizontal bars (MACs per image before/after pruning); `yLabel` names the value axis. */
export function barChart(bars: { label: string; value: number; color?: string }[], o: Omit<PlotOptions, 'xLabel' | 'logY'>): string {
  return hBarChart(bars.map((b) => ({ label: b.label, segments: [{ value: b.value, color: b.color }] })), { title: o.title, valueLabel: o.yLabel, width: o.width });
}

/** One series of a column chart: a value per category, drawn as a bar of relative `width` (0..1) or as a marker. */
export interface ColumnSeries {
  label: string;
  values: number[];
  color: string;
  /** Bar width as a fraction of the category slot (default 0.8); series are overlaid in order, so draw the widest first. */
  width?: number;
  style?: 'bar' | 'marker';
}

/**
 * Columns per category with series overlaid (e.g. a layer's full rank as a wide grey bar and the rank
 * that pruning keeps as a narrower coloured one in front), category names rotated under the axis.
 */
export function columnChart(categories: string[], series: ColumnSeries[], o: { title: string; yLabel: string; width?: number; height?: number; subtitle?: string }): string {
  const W = o.width ?? 760;
  const labelH = 10 + Math.max(0, ...categories.map((c) => c.length)) * 4.6;
  const m = { l: 56, r: 16, t: (o.subtitle ? 42 : 30) + 18, b: labelH + 10 };
  const H = (o.height ?? 280) + labelH;
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const max = Math.max(1e-12, ...series.flatMap((s) => s.values.filter(Number.isFinite)));
  const ticks = niceTicks(0, max, 5);
  const top = Math.max(max, ticks[ticks.length - 1]);
  const sy = (v: number) => m.t + ph - (v / top) * ph;
  const slot = pw / Math.max(1, categories.length);
  const parts = [svgHead(W, H, o.title, o.subtitle)];
  let lx = m.l;
  for (const s of series) {
    const ly = m.t - 14;
    parts.push(s.style === 'marker' ? `<circle cx="${lx + 6}" cy="${ly}" r="3.5" fill="${s.color}"/>` : `<rect x="${lx}" y="${ly - 5}" width="12" height="10" fill="${s.color}"/>`);
    parts.push(`<text x="${lx + 16}" y="${ly + 4}">${esc(s.label)}</text>`);
    lx += 30 + s.label.length * 6.2;
  }
  for (const v of ticks) parts.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${sy(v)}" y2="${sy(v)}" stroke="#eee"/><text x="${m.l - 6}" y="${sy(v) + 4}" text-anchor="end">${fmtTick(v)}</text>`);
  for (const s of series) {
    s.values.forEach((v, i) => {
      if (!Number.isFinite(v)) return;
      const cx = m.l + (i + 0.5) * slot;
      if (s.style === 'marker') {
        parts.push(`<circle cx="${cx.toFixed(1)}" cy="${sy(v).toFixed(1)}" r="3" fill="${s.color}"/>`);
        return;
      }
      const bw = slot * (s.width ?? 0.8);
      parts.push(`<rect x="${(cx - bw / 2).toFixed(1)}" y="${sy(v).toFixed(1)}" width="${bw.toFixed(1)}" height="${(m.t + ph - sy(v)).toFixed(1)}" fill="${s.color}"><title>${esc(`${categories[i]}: ${s.label} ${v}`)}</title></rect>`);
    });
  }
  categories.forEach((c, i) => {
    const cx = m.l + (i + 0.5) * slot;
    parts.push(`<text transform="translate(${(cx + 3).toFixed(1)} ${m.t + ph + 8}) rotate(-50)" text-anchor="end" font-size="10">${esc(c)}</text>`);
  });
  parts.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${m.t + ph}" y2="${m.t + ph}" stroke="#444"/><line x1="${m.l}" x2="${m.l}" y1="${m.t}" y2="${m.t + ph}" stroke="#444"/>`);
  parts.push(`<text transform="translate(14 ${m.t + ph / 2}) rotate(-90)" text-anchor="middle" font-size="12">${esc(o.yLabel)}</text></svg>`);
  return parts.join('');
}
