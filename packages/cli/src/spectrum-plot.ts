/**
 * Singular-value spectra as small multiples: one panel per SVD layer, s/s_max sorted descending on
 * a log axis shared by all panels (so layers compare at a glance), with the energy cut drawn: the
 * values right of the dashed line are the ones `svd-coord prune --energy e` removes (core's
 * `selectRankByEnergy`, the one copy of that rule).
 */
import { effectiveRank } from '@svd-train/core';
import { logTicks, tickLabels } from './plot-scales.js';
import { escapeXml as esc } from './svg-plot.js';

/** Smallest s/s_max a panel shows; smaller values (and exact zeros) sit on the bottom edge, hollow. */
export const SPECTRUM_FLOOR = 1e-6;

export interface SpectrumPanelInput {
  layer: string;
  /** Singular values [r], any order, any sign (s is a free parameter). */
  s: ArrayLike<number>;
}

/** Normalized spectrum: |s| sorted descending, divided by the largest (all zeros stays zeros). */
export function normalizedSpectrum(s: ArrayLike<number>): number[] {
  const v = Array.from(s, Math.abs).sort((a, b) => b - a);
  const top = v[0] ?? 0;
  return top > 0 ? v.map((x) => x / top) : v;
}

/** The shared log10 range of the panels: from the decade below the smallest positive s/s_max (at least the floor) to 1. */
export function spectrumRange(spectra: readonly SpectrumPanelInput[]): [number, number] {
  let min = 1;
  for (const sp of spectra) for (const v of normalizedSpectrum(sp.s)) if (v > 0 && v < min) min = v;
  const lo = Math.max(Math.log10(SPECTRUM_FLOOR), Math.floor(Math.log10(min) - 1e-9));
  return [Math.min(lo, -1), 0];
}

/**
 * One SVG per layer (class "spectrum", `data-layer` its name), each `width`×`height`.
 * @param energy the pruning energy e whose cut is drawn.
 */
export function spectrumPanels(spectra: readonly SpectrumPanelInput[], energy: number, o: { width?: number; height?: number } = {}): string[] {
  const W = o.width ?? 190;
  const H = o.height ?? 150;
  const m = { l: 40, r: 8, t: 34, b: 24 };
  const pw = W - m.l - m.r;
  const ph = H - m.t - m.b;
  const [lo, hi] = spectrumRange(spectra);
  const y0 = lo - 0.05 * (hi - lo);
  const y1 = hi + 0.05 * (hi - lo);
  const sy = (logv: number) => m.t + ph - ((logv - y0) / (y1 - y0)) * ph;
  const ticks = logTicks(lo, hi);
  // Decades (1-2-5 when the range spans fewer than three), at most five labels, so the narrow
  // panels stay legible; counted from the top so that 1 is always labelled.
  const decades = ticks.major.filter((v) => Number.isInteger(Math.round(Math.log10(v) * 1e6) / 1e6));
  const candidates = decades.length >= 3 ? decades : ticks.major;
  const every = Math.ceil(candidates.length / 5);
  const labelled = candidates.filter((_, i) => (candidates.length - 1 - i) % every === 0);
  const labels = tickLabels(labelled);
  return spectra.map((sp) => {
    const v = normalizedSpectrum(sp.s);
    const r = v.length;
    const k = effectiveRank(sp.s, energy);
    const sx = (i: number) => m.l + ((i - 0.5) / Math.max(1, r)) * pw; // i: 1-based index, slot centres
    const parts: string[] = [
      `<svg class="spectrum" data-layer="${esc(sp.layer)}" xmlns="http://www.w3.org/2000/svg" width="${W}" height="${H}" viewBox="0 0 ${W} ${H}" font-family="sans-serif" font-size="10">`,
      `<rect width="${W}" height="${H}" fill="#fff"/>`,
      `<text x="${m.l + pw / 2}" y="13" text-anchor="middle" font-size="11" font-weight="bold">${esc(sp.layer)}</text>`,
      `<text x="${m.l + pw / 2}" y="26" text-anchor="middle" fill="#555">keeps ${k} of ${r}</text>`,
    ];
    labelled.forEach((t, i) => {
      const y = sy(Math.log10(t));
      parts.push(`<line x1="${m.l}" x2="${m.l + pw}" y1="${y.toFixed(1)}" y2="${y.toFixed(1)}" stroke="#eee"/><text x="${m.l - 4}" y="${(y + 3).toFixed(1)}" text-anchor="end">${labels[i]}</text>`);
    });
    // What the cut removes: shaded, right of the dashed line between index k and k+1.
    const cutX = m.l + (k / Math.max(1, r)) * pw;
    if (k < r) parts.push(`<rect x="${cutX.toFixed(1)}" y="${m.t}" width="${(m.l + pw - cutX).toFixed(1)}" height="${ph}" fill="#d62728" fill-opacity="0.07"/>`);
    parts.push(`<line class="cut" x1="${cutX.toFixed(1)}" x2="${cutX.toFixed(1)}" y1="${m.t}" y2="${m.t + ph}" stroke="#d62728" stroke-dasharray="3 2"/>`);
    const floorY = sy(lo);
    const pts = v.map((x, i) => [sx(i + 1), x > 0 && Math.log10(x) >= lo ? sy(Math.log10(x)) : floorY, x > 0 && Math.log10(x) >= lo] as const);
    parts.push(`<path d="${pts.map(([x, y], i) => `${i ? 'L' : 'M'}${x.toFixed(1)},${y.toFixed(1)}`).join('')}" fill="none" stroke="#1f77b4" stroke-width="1" stroke-opacity="0.6"/>`);
    const dot = Math.max(1, Math.min(2.4, (pw / Math.max(1, r)) * 0.4));
    pts.forEach(([x, y, onScale], i) => {
      const color = i < k ? '#1f77b4' : '#d62728';
      parts.push(onScale ? `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="${dot}" fill="${color}"/>` : `<circle cx="${x.toFixed(1)}" cy="${y.toFixed(1)}" r="${dot}" fill="none" stroke="${color}"/>`);
    });
    parts.push(`<rect x="${m.l}" y="${m.t}" width="${pw}" height="${ph}" fill="none" stroke="#444"/>`);
    parts.push(`<text x="${sx(1).toFixed(1)}" y="${H - 10}" text-anchor="middle">1</text>`);
    if (r > 1) parts.push(`<text x="${sx(r).toFixed(1)}" y="${H - 10}" text-anchor="middle">${r}</text>`);
    parts.push(`<text x="${m.l + pw / 2}" y="${H - 10}" text-anchor="middle" fill="#777">index</text>`);
    parts.push('</svg>');
    return parts.join('');
  });
}
