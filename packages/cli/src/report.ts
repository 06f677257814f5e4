/**
 * `svd-coord report runs/NAME`: one self-contained HTML file (inline SVG, no external assets)
 * that shows how a run went: loss and accuracy curves, the regularizer terms over time, the
 * singular-value spectrum and effective rank of every SVD layer, MACs per image before and after
 * pruning against the plain ResNet, and, for a `start --prune-energy` run, the pipeline: accuracy
 * before pruning, after pruning and after fine-tuning, and the accuracy-vs-MACs curve.
 *
 * Units: MACs (multiply-accumulates) per image, counted in the form each layer runs; FLOPs = 2·MACs.
 *
 * Inputs are what the coordinator writes into the run folder: config.json, metrics.jsonl (one JSON
 * object per line; step records and epoch records), pipeline.json and checkpoints. Field names are read
 * tolerantly (e.g. `ce` or `loss`) so an older metrics file still plots.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { basename, join, resolve } from 'node:path';
import { effectiveRank, singularValues, SvdTrainError } from '@svd-train/core';
import { barChart, linePlot, PALETTE, type Series } from './svg-plot.js';

/** One singular-value vector from a checkpoint (a parameter named `*.s`). */
export interface Spectrum {
  layer: string;
  s: Float32Array | number[];
}

/** MACs per image of a model: the plain ResNet, the SVD model, or a prune of it. */
export interface MacsRow {
  label: string;
  macs: number;
  /** Weights in the form that runs (what the stock export stores). */
  params?: number;
}

/** One evaluated model of the pipeline (pipeline.json). */
export interface PipelinePoint {
  /** Pruning energy (0: not pruned). */
  energy: number;
  /** Test accuracy in [0, 1] and mean cross-entropy. */
  acc: number;
  loss: number;
  /** MACs per image in the form each layer runs; FLOPs = 2·MACs. */
  macs: number;
  /** Stored parameters (U, s, V, BN, …) and the weights of the form that runs. */
  params: number;
  exportParams: number;
}

/** pipeline.json: what `start --prune-energy e [--finetune-epochs k]` measured. */
export interface PipelineSummary {
  model: string;
  energy: number;
  testImages: number;
  plain: { macs: number; params: number };
  trained: PipelinePoint;
  pruned: PipelinePoint;
  prunedCheckpoint: string;
  finetuned: (PipelinePoint & { epochs: number; lr: number; run: string }) | null;
  /** The accuracy-vs-MACs curve: the trained model (energy 0) and each sweep energy, no fine-tuning. */
  sweep: PipelinePoint[];
}

export interface ReportInput {
  title: string;
  config: Record<string, unknown> | null;
  records: Record<string, unknown>[];
  spectra: Spectrum[];
  macs: MacsRow[];
  pipeline?: PipelineSummary | null;
  notes?: string[];
}

/**
 * Parses metrics.jsonl. Only the last line may be torn (the coordinator was killed mid-append)
 * and is then skipped. A malformed line anywhere else means the file was damaged or edited, and
 * plotting around it would hide that, so it is DATA_CORRUPT naming the line number.
 */
export function readMetrics(path: string): Record<string, unknown>[] {
  if (!existsSync(path)) return [];
  const lines = readFileSync(path, 'utf8').split('\n');
  let last = lines.length - 1;
  while (last >= 0 && !lines[last].trim()) last--;
  const out: Record<string, unknown>[] = [];
  for (let i = 0; i <= last; i++) {
    const line = lines[i];
    if (!line.trim()) continue;
    let r: unknown;
    let why = 'not a JSON object';
    try {
      r = JSON.parse(line);
    } catch (e) {
      why = (e as Error).message;
    }
    if (r !== null && typeof r === 'object' && !Array.isArray(r)) {
      out.push(r as Record<string, unknown>);
    } else if (i !== last) {
      const shown = line.length > 80 ? `${line.slice(0, 80)}…` : line;
      throw new SvdTrainError(
        'DATA_CORRUPT',
        `${path} line ${i + 1} of ${last + 1} is malformed (${why}): ${JSON.stringify(shown)}; expected one JSON object per line, ` +
          'and only the last line may be cut short (a killed run). Fix: repair or delete that line, or resume the run (--resume rewrites the file).',
        { path, line: i + 1 },
      );
    }
  }
  return out;
}

const kindOf = (r: Record<string, unknown>) => String(r.kind ?? r.type ?? (r.step !== undefined && r.testAcc === undefined ? 'step' : 'epoch'));
/** First numeric field among `keys`; a key may be a dotted path ('loss.ce'). */
const num = (r: Record<string, unknown>, ...keys: string[]): number => {
  for (const k of keys) {
    let v: unknown = r;
    for (const part of k.split('.')) v = v !== null && typeof v === 'object' ? (v as Record<string, unknown>)[part] : undefined;
    if (typeof v === 'number') return v;
  }
  return NaN;
};

export { effectiveRank };

const esc = (s: string) => s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;');

/** Renders the report HTML. Pure: tests feed it records directly. */
export function renderReport(inp: ReportInput): string {
  const steps = inp.records.filter((r) => kindOf(r) === 'step');
  const epochs = inp.records.filter((r) => kindOf(r) === 'epoch');
  const sx = (r: Record<string, unknown>) => num(r, 'step');
  // metrics.jsonl counts epochs from 0; people count from 1.
  const ex = (r: Record<string, unknown>) => num(r, 'epoch') + 1;
  const pts = (rs: Record<string, unknown>[], x: (r: Record<string, unknown>) => number, ...keys: string[]) =>
    rs.map((r) => [x(r), num(r, ...keys)] as [number, number]);
  const pct = (p: [number, number][]) => p.map(([a, b]) => [a, b <= 1 ? b * 100 : b] as [number, number]);

  const figs: string[] = [];
  figs.push(linePlot([
    { label: 'train cross-entropy', points: pts(steps, sx, 'loss.ce', 'ce', 'loss'), smooth: true },
    { label: 'train total loss', points: pts(steps, sx, 'loss.total', 'total'), dashed: true, smooth: true },
    { label: 'test loss', points: pts(epochs.map((r) => ({ ...r, step: num(r, 'step', 'endStep') })), sx, 'testLoss') },
  ], { title: 'Loss', xLabel: 'step', yLabel: 'loss', logY: true }));
  figs.push(linePlot([
    { label: 'train acc (batch)', points: pct(pts(steps, sx, 'trainAcc', 'acc')), smooth: true },
    { label: 'train acc (epoch mean)', points: pct(pts(epochs.filter((r) => Number.isFinite(num(r, 'step'))), sx, 'trainAcc')), dashed: true },
    { label: 'test acc', points: pct(pts(epochs.filter((r) => Number.isFinite(num(r, 'step'))), sx, 'testAcc')) },
  ], { title: 'Accuracy', xLabel: 'step', yLabel: 'accuracy %' }));
  figs.push(linePlot([
    { label: 'test acc', points: pct(pts(epochs, ex, 'testAcc')), color: PALETTE[1] },
    { label: 'train acc', points: pct(pts(epochs, ex, 'trainAcc')), color: PALETTE[0] },
  ], { title: 'Accuracy per epoch', xLabel: 'epoch', yLabel: 'accuracy %' }));
  // Two plots: the terms differ by orders of magnitude, and each one's trend is what matters.
  figs.push(linePlot([{ label: 'orthogonality L_o', points: pts(steps, sx, 'loss.orth', 'orth'), smooth: true }], { title: 'Regularizer terms: orthogonality', xLabel: 'step', yLabel: 'L_o (unweighted)' }));
  figs.push(linePlot([{ label: 'sparsity L_s', points: pts(steps, sx, 'loss.sparsity', 'sparsity'), color: PALETTE[1], smooth: true }], { title: 'Regularizer terms: singular-value sparsity', xLabel: 'step', yLabel: 'L_s (unweighted)' }));
  const rankEpochs = epochs.filter((r) => r.effectiveRanks && typeof r.effectiveRanks === 'object' && Object.keys(r.effectiveRanks).length > 0);
  if (rankEpochs.length) {
    const total = (r: Record<string, unknown>) => Object.values(r.effectiveRanks as Record<string, number>).reduce((a, b) => a + b, 0);
    figs.push(linePlot([{ label: 'Σ effective rank (energy 0.01)', points: rankEpochs.map((r) => [ex(r), total(r)] as [number, number]), color: PALETTE[2] }], {
      title: 'Effective rank over training (sum over SVD layers)', xLabel: 'epoch', yLabel: 'Σ rank',
    }));
  }
  figs.push(linePlot([{ label: 'learning rate', points: pts(steps, sx, 'lr') }], { title: 'Learning rate', xLabel: 'step', yLabel: 'lr' }));
  figs.push(linePlot([{ label: 'images/s', points: pts(steps, sx, 'imgPerSec', 'throughput'), smooth: true }], { title: 'Throughput', xLabel: 'step', yLabel: 'images / s' }));

  // Spectra: |s| sorted descending on a log scale; one line per layer, normalized index so wide
  // and narrow layers share an axis.
  const spec = inp.spectra.map((sp, i) => {
    const v = Array.from(sp.s, Math.abs).sort((a, b) => b - a);
    return { label: sp.layer, points: v.map((y, k) => [v.length > 1 ? k / (v.length - 1) : 0, y] as [number, number]), color: PALETTE[i % PALETTE.length] } as Series;
  });
  const specFig = linePlot(spec.length > 10 ? spec.filter((_, i) => i % Math.ceil(spec.length / 10) === 0) : spec, {
    title: 'Singular-value spectra (latest checkpoint)', xLabel: 'normalized index (0 = largest)', yLabel: '|s|', logY: true, width: 760, height: 380,
  });
  const rankRows = inp.spectra
    .map((sp) => `<tr><td>${esc(sp.layer)}</td><td>${sp.s.length}</td><td>${effectiveRank(sp.s, 0.01)}</td><td>${effectiveRank(sp.s, 0.05)}</td></tr>`)
    .join('');
  // Markers, not lines: neighbouring layers are separate things, and a line between them would
  // read as a trend along the network.
  const rankFig = linePlot([
    { label: 'full rank', points: inp.spectra.map((sp, i) => [i, sp.s.length] as [number, number]), color: '#bbb', style: 'markers', marker: 5 },
    { label: 'rank @ energy 0.01', points: inp.spectra.map((sp, i) => [i, effectiveRank(sp.s, 0.01)] as [number, number]), style: 'markers' },
    { label: 'rank @ energy 0.05', points: inp.spectra.map((sp, i) => [i, effectiveRank(sp.s, 0.05)] as [number, number]), style: 'markers', marker: 2.5 },
  ], { title: 'Effective rank per layer', xLabel: 'layer index (table below)', yLabel: 'rank', width: 760, legend: 'below' });
  const plainRow = inp.macs.find((r) => r.label.startsWith('plain'));
  const macsFig = inp.macs.length
    ? barChart(inp.macs.map((f) => ({ label: f.label, value: f.macs / 1e6, color: f === plainRow ? '#999' : undefined })), { title: 'MACs per image: plain ResNet, this model, pruned', yLabel: 'million MACs per image (FLOPs = 2·MACs)' }) +
      `<table><tr><th>model</th><th>MACs / image</th><th>% of plain</th><th>weights (form that runs)</th></tr>${inp.macs
        .map((r) => `<tr><td>${esc(r.label)}</td><td>${(r.macs / 1e6).toFixed(2)}M</td><td>${plainRow ? ((100 * r.macs) / plainRow.macs).toFixed(1) + '%' : '–'}</td><td>${r.params ?? '–'}</td></tr>`)
        .join('')}</table>`
    : '<p class="note">MACs before/after pruning: not available (no checkpoint, or the layers package could not count MACs).</p>';
  const pipelineHtml = inp.pipeline ? renderPipeline(inp.pipeline) : '<p class="note">No pipeline.json: this run did not prune and fine-tune (start --prune-energy e --finetune-epochs k does).</p>';

  const last = epochs[epochs.length - 1];
  const summary = last
    ? `epoch ${ex(last)}: test accuracy ${(num(last, 'testAcc') * (num(last, 'testAcc') <= 1 ? 100 : 1)).toFixed(2)}%`
    : `${steps.length} steps recorded, no epoch finished`;
  const cfg = inp.config ? `<details><summary>run config</summary><pre>${esc(JSON.stringify(inp.config, null, 2))}</pre></details>` : '';
  return `<!doctype html><html><head><meta charset="utf-8"><title>${esc(inp.title)}</title><style>
body{font-family:sans-serif;margin:24px;color:#222;max-width:1200px}h1{font-size:22px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.grid{display:flex;flex-wrap:wrap;gap:12px}.note{color:#666}table{border-collapse:collapse;font-size:12px}td,th{border:1px solid #ddd;padding:2px 8px;text-align:right}td:first-child{text-align:left}
</style></head><body><h1>${esc(inp.title)}</h1><p>${esc(summary)}</p>${(inp.notes ?? []).map((n) => `<p class="note">${esc(n)}</p>`).join('')}
<h2>Training</h2><div class="grid">${figs.join('')}</div>
<h2>Singular values</h2><div class="grid">${specFig}${rankFig}</div>
${rankRows ? `<table><tr><th>layer</th><th>full rank</th><th>rank @0.01</th><th>rank @0.05</th></tr>${rankRows}</table>` : '<p class="note">No checkpoint with singular values found.</p>'}
<h2>Pruning: MACs</h2>${macsFig}
<h2>Train → prune → fine-tune</h2>${pipelineHtml}
${cfg}</body></html>`;
}

/** The pipeline section: before / after table and the accuracy-vs-MACs curve with the fine-tuned point marked. */
export function renderPipeline(p: PipelineSummary): string {
  const pct = (x: number) => ((100 * x) / p.plain.macs).toFixed(1);
  const rows: [string, PipelinePoint | null][] = [
    ['trained, before pruning', p.trained],
    [`after pruning at e=${p.energy} (no fine-tuning)`, p.pruned],
    [p.finetuned ? `after fine-tuning ${p.finetuned.epochs} epoch(s), peak lr ${p.finetuned.lr}` : 'after fine-tuning (not run)', p.finetuned],
  ];
  const table =
    `<table><tr><th>stage</th><th>test accuracy</th><th>MACs / image</th><th>% of plain ${esc(p.model)}</th><th>weights (form that runs)</th></tr>` +
    rows.map(([label, r]) => `<tr><td>${esc(label)}</td>${r ? `<td>${(100 * r.acc).toFixed(2)}%</td><td>${(r.macs / 1e6).toFixed(2)}M</td><td>${pct(r.macs)}%</td><td>${r.exportParams}</td>` : '<td>–</td><td>–</td><td>–</td><td>–</td>'}</tr>`).join('') +
    `<tr><td>plain ${esc(p.model)} (reference)</td><td>–</td><td>${(p.plain.macs / 1e6).toFixed(2)}M</td><td>100%</td><td>${p.plain.params}</td></tr></table>` +
    `<p class="note">Test accuracy on ${p.testImages} test images. MACs per image in the form each layer runs; FLOPs = 2·MACs.</p>`;
  const sweep = [...p.sweep].sort((a, b) => a.macs - b.macs);
  const accs = [...sweep.map((q) => q.acc), ...(p.finetuned ? [p.finetuned.acc] : [])].map((a) => 100 * a);
  const series: Series[] = [
    { label: 'pruned, no fine-tuning (sweep of e)', points: sweep.map((q) => [q.macs / 1e6, 100 * q.acc] as [number, number]), color: PALETTE[0] },
  ];
  // The fine-tuned point is larger and drawn before the pruned one, so both stay visible where they
  // land on each other (same MACs, and the same accuracy when fine-tuning gained nothing).
  if (p.finetuned) series.push({ label: `fine-tuned (e=${p.energy}, ${p.finetuned.epochs} ep)`, points: [[p.finetuned.macs / 1e6, 100 * p.finetuned.acc]], color: PALETTE[1], marker: 6 });
  series.push({ label: `pruned at e=${p.energy}`, points: [[p.pruned.macs / 1e6, 100 * p.pruned.acc]], color: PALETTE[3] });
  series.push({ label: `plain ${p.model} MACs`, points: [[p.plain.macs / 1e6, Math.min(...accs)], [p.plain.macs / 1e6, Math.max(...accs)]], color: '#999', dashed: true });
  const curve = linePlot(series, { title: 'Test accuracy vs MACs per image', xLabel: 'million MACs per image', yLabel: 'test accuracy %', width: 640, height: 360 });
  const sweepTable =
    '<table><tr><th>energy e</th><th>test accuracy</th><th>MACs / image</th><th>% of plain</th><th>weights</th></tr>' +
    [...p.sweep].sort((a, b) => a.energy - b.energy).map((q) => `<tr><td>${q.energy === 0 ? '0 (trained)' : q.energy}</td><td>${(100 * q.acc).toFixed(2)}%</td><td>${(q.macs / 1e6).toFixed(2)}M</td><td>${pct(q.macs)}%</td><td>${q.exportParams}</td></tr>`).join('') +
    '</table>';
  return `${table}<div class="grid">${curve}${sweepTable}</div>`;
}

/** Singular-value vectors of a parameter list (names ending in `.s`). */
export function spectraOf(params: { name: string; data: Float32Array }[]): Spectrum[] {
  return singularValues(params);
}

/**
 * Writes `<runDir>/report.html`. `extras` supplies what needs the other packages (the latest
 * checkpoint's parameters, MACs before/after pruning, the pipeline); missing pieces are shown as "not available".
 */
export function writeReport(
  runDir: string,
  extras: { params?: { name: string; data: Float32Array }[]; macs?: MacsRow[]; pipeline?: PipelineSummary; notes?: string[] } = {},
): string {
  const cfgPath = join(runDir, 'config.json');
  const config = existsSync(cfgPath) ? (JSON.parse(readFileSync(cfgPath, 'utf8')) as Record<string, unknown>) : null;
  const html = renderReport({
    // The run's name, not the path: the page is shared and opened elsewhere, where the path of
    // the machine that wrote it means nothing (and tells more than it should).
    title: `svd-train report: ${basename(resolve(runDir))}`,
    config,
    records: readMetrics(join(runDir, 'metrics.jsonl')),
    spectra: spectraOf(extras.params ?? []),
    macs: extras.macs ?? [],
    pipeline: extras.pipeline ?? null,
    notes: extras.notes ?? [],
  });
  const out = join(runDir, 'report.html');
  writeFileSync(out, html);
  return out;
}
