/**
 * `svd-coord report runs/NAME`: one self-contained HTML file (inline SVG, no script, no external
 * assets) that shows how a run went: loss and accuracy curves (per-batch values EMA-smoothed,
 * against the step or wall-clock time), the regularizer terms over time, each worker's compute,
 * communication and reduce time per step, the singular-value spectrum of every SVD layer with the
 * pruning energy's cut and the rank it keeps, MACs per image before and after pruning against the
 * plain ResNet, and, for a `start --prune-energy` run, the pipeline: accuracy before pruning, after
 * pruning and after fine-tuning, and the accuracy-vs-MACs curve.
 *
 * Units: MACs (multiply-accumulates) per image, counted in the form each layer runs; FLOPs = 2·MACs.
 *
 * Inputs are what the coordinator writes into the run folder: config.json, metrics.jsonl (one JSON
 * object per line; step records and epoch records), pipeline.json and checkpoints. Field names are read
 * tolerantly (e.g. `ce` or `loss`) so an older metrics file still plots.
 */
import { existsSync, readFileSync } from 'node:fs';
import { basename, dirname, join, resolve, sep } from 'node:path';
import { effectiveRank, replaceFile, singularValues, SvdTrainError } from '@svd-train/core';
import type { WorkerTiming } from '@svd-train/coordinator';
import { formatDuration, median, runMetrics, workerTimings, type EpochRow, type RunMetrics, type StepRow, type WorkerTimingSummary } from './run-metrics.js';
import { SPECTRUM_FLOOR, spectrumPanels } from './spectrum-plot.js';
import { pctText } from './plot-scales.js';
import { renderPipeline, type PipelineSummary } from './report-pipeline.js';
import { columnChart, escapeXml, hBarChart, linePlot, PALETTE, type PlotOptions, type Series } from './svg-plot.js';

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

export interface ReportInput {
  /** The run's name (its folder's basename), never a path. */
  title: string;
  /** Model name shown next to the title; default: `config.model`. */
  model?: string;
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

export { effectiveRank };

const esc = escapeXml;

/** Pruning energy the spectra and rank bars show when the run has no pipeline.json to take it from. */
export const DEFAULT_REPORT_ENERGY = 0.01;

const finite = (x: number) => Number.isFinite(x);

/** The run's one-line description from its config: model, decomposition, regularizers, optimizer. */
/** ' from 30% of the steps', ' until 80% of the steps', ' from 30% to 80% of the steps', or '' for the whole run. */
function sparsityWindow(start: number, end: number): string {
  const pct = (f: number) => `${Math.round(100 * f)}%`;
  const from = start > 0 ? pct(start) : null;
  const until = end < 1 ? pct(end) : null;
  if (from && until) return ` from ${from} to ${until} of the steps`;
  if (from) return ` from ${from} of the steps`;
  return until ? ` until ${until} of the steps` : '';
}

function configLine(cfg: Record<string, unknown> | null): string {
  if (!cfg) return '';
  const str = (k: string) => (typeof cfg[k] === 'string' || typeof cfg[k] === 'number' || typeof cfg[k] === 'boolean' ? String(cfg[k]) : undefined);
  const parts = [
    cfg.svd === false ? 'plain (no SVD)' : str('decomposition') && `SVD ${str('decomposition')}`,
    str('sparsity') && str('sparsity') !== 'none'
      ? `${str('sparsity')} λ_s=${str('lambdaS')}${sparsityWindow(Number(cfg.sparsityStart ?? 0), Number(cfg.sparsityEnd ?? 1))}`
      : undefined,
    str('lambdaO') && `λ_o=${str('lambdaO')}`,
    str('optimizer') && `${str('optimizer')} lr ${str('lr')} (${str('schedule') ?? ''})`,
    str('batch') && `batch ${str('batch')}`,
    str('epochs') && `${str('epochs')} epochs`,
    str('from') && `from ${basename(str('from')!)}`,
    Number(cfg.distillAlpha) > 0 && str('teacher') ? `distilled from ${teacherNames(str('teacher')!, cfg.extraTeachers)} (α ${str('distillAlpha')}, T ${str('distillTemperature')})` : undefined,
  ];
  return parts.filter((p): p is string => !!p).join(' · ');
}

/** The teachers' file names, 'a.svdckpt + b.svdckpt' for an ensemble (extraTeachers from a config.json, unchecked). */
function teacherNames(first: string, extra: unknown): string {
  const more = Array.isArray(extra) ? extra.flatMap((t: unknown) => (t && typeof t === 'object' && typeof (t as { teacher?: unknown }).teacher === 'string' ? [(t as { teacher: string }).teacher] : [])) : [];
  return [first, ...more].map((p) => basename(p)).join(' + ');
}

/**
 * The per-step charts twice, against the step and against wall-clock time, with a switch between
 * them that needs no script (radio buttons and CSS): the page stays one offline file.
 */
function stepAndTimeCharts(run: RunMetrics, charts: (x: { of: (r: StepRow) => number; axis: Pick<PlotOptions, 'xLabel' | 'marks' | 'xRange'> }) => string[]): string {
  const { steps, epochs, startMs } = run;
  const spanMs = steps.length ? steps[steps.length - 1].timeMs - startMs : NaN;
  const hours = finite(spanMs) && spanMs > 3 * 3600e3;
  const unit = hours ? 3600e3 : 60e3;
  const epochMarks = (of: (e: EpochRow) => number) =>
    epochs.length <= 30 ? epochs.filter((e) => finite(of(e))).map((e) => ({ x: of(e), label: `ep ${e.epoch + 1}` })) : [];
  const byStep = charts({ of: (r) => r.step, axis: { xLabel: 'step', marks: epochMarks((e) => e.step) } });
  const hasTime = steps.some((r) => finite(r.timeMs)) && finite(startMs);
  if (!hasTime) return `<div class="grid">${byStep.join('')}</div><p class="note">No wall-clock times in metrics.jsonl (an older run): charts against steps only.</p>`;
  const byTime = charts({
    of: (r) => Math.max(0, (r.timeMs - startMs) / unit),
    axis: {
      xLabel: `wall-clock ${hours ? 'hours' : 'minutes'} since the first step`,
      marks: epochMarks((e) => (e.timeMs - startMs) / unit),
      xRange: [0, spanMs / unit],
    },
  });
  return (
    '<div class="xswitch"><span>x axis:</span><input type="radio" name="xaxis" id="x-step" checked><label for="x-step">step</label>' +
    '<input type="radio" name="xaxis" id="x-time"><label for="x-time">wall-clock time</label>' +
    `<div class="grid by-step">${byStep.join('')}</div><div class="grid by-time">${byTime.join('')}</div></div>`
  );
}

function trainingSection(run: RunMetrics): string {
  const { steps, epochs } = run;
  const at = (x: (r: StepRow) => number, y: (r: StepRow) => number) => steps.map((r) => [x(r), y(r)] as [number, number]);
  const perStep = stepAndTimeCharts(run, ({ of, axis }) => {
    // Test results sit at the x of the epoch's last step.
    const endOf = (e: EpochRow) => {
      const s = steps.find((r) => r.step === e.step - 1);
      return s ? of(s) : NaN;
    };
    const epochAt = (y: (e: EpochRow) => number) => epochs.map((e) => [endOf(e), y(e)] as [number, number]);
    return [
      linePlot([
        { label: 'train cross-entropy', points: at(of, (r) => r.ce), smooth: true },
        { label: 'train total loss', points: at(of, (r) => r.total), dashed: true, smooth: true },
        { label: 'test loss', points: epochAt((e) => e.testLoss), style: 'line+markers', color: PALETTE[2] },
        ...(steps.some((r) => Number.isFinite(r.distill))
          ? [{ label: 'distillation T²·KL (teacher)', points: at(of, (r) => r.distill), smooth: true, color: PALETTE[4] }]
          : []),
      ], { title: 'Loss', ...axis, yLabel: 'loss', logY: true, legend: 'below' }),
      linePlot([
        { label: 'train acc (batch)', points: at(of, (r) => 100 * r.trainAcc), smooth: true },
        { label: 'train acc (epoch mean)', points: epochAt((e) => 100 * e.trainAcc), dashed: true, style: 'line+markers', color: PALETTE[3] },
        { label: 'test acc', points: epochAt((e) => 100 * e.testAcc), style: 'line+markers', color: PALETTE[2] },
      ], { title: 'Accuracy', ...axis, yLabel: 'accuracy %', legend: 'below' }),
      // Two plots: the terms differ by orders of magnitude, and each one's trend is what matters.
      linePlot([{ label: 'orthogonality L_o', points: at(of, (r) => r.orth), smooth: true }], { title: 'Regularizer terms: orthogonality', ...axis, yLabel: 'L_o (unweighted)' }),
      linePlot([{ label: 'sparsity L_s', points: at(of, (r) => r.sparsity), color: PALETTE[1], smooth: true }], { title: 'Regularizer terms: singular-value sparsity', ...axis, yLabel: 'L_s (unweighted)' }),
      linePlot([{ label: 'learning rate', points: at(of, (r) => r.lr) }], { title: 'Learning rate', ...axis, yLabel: 'lr' }),
      linePlot([{ label: 'images/s', points: at(of, (r) => r.imgPerSec), smooth: true }], { title: 'Throughput', ...axis, yLabel: 'images / s' }),
    ];
  });
  const perEpoch: string[] = [];
  const ex = (e: EpochRow) => e.epoch + 1; // metrics.jsonl counts epochs from 0; people count from 1.
  perEpoch.push(linePlot([
    { label: 'test acc', points: epochs.map((e) => [ex(e), 100 * e.testAcc] as [number, number]), color: PALETTE[2], style: 'line+markers' },
    { label: 'train acc', points: epochs.map((e) => [ex(e), 100 * e.trainAcc] as [number, number]), color: PALETTE[0], style: 'line+markers' },
  ], { title: 'Accuracy per epoch', xLabel: 'epoch', yLabel: 'accuracy %', legend: 'below', xInteger: true }));
  const rankEpochs = epochs.filter((e) => Object.keys(e.effectiveRanks).length > 0);
  if (rankEpochs.length) {
    const total = (e: EpochRow) => Object.values(e.effectiveRanks).reduce((a, b) => a + b, 0);
    perEpoch.push(linePlot([{ label: 'Σ effective rank (energy 0.01)', points: rankEpochs.map((e) => [ex(e), total(e)] as [number, number]), color: PALETTE[2], style: 'line+markers' }], {
      title: 'Effective rank over training (sum over SVD layers)', xLabel: 'epoch', yLabel: 'Σ rank', legend: 'below', xInteger: true,
    }));
  }
  return `<h2>Training</h2>${perStep}<div class="grid">${perEpoch.join('')}</div>`;
}

const TIMING_COLORS = { compute: '#1f77b4', comm: '#ff7f0e', reduce: '#7f7f7f' };

/** Per worker: median compute, communication and reduce time per step (stacked bars, a table) and compute time over the steps. */
function workerSection(run: RunMetrics): string {
  const ws = workerTimings(run.steps);
  if (!ws.length) return '<h2 id="workers">Workers: time per step</h2><p class="note">No per-worker timing in metrics.jsonl (an older run).</p>';
  const ms = (v: number) => (finite(v) ? `${v < 10 ? v.toFixed(1) : Math.round(v)} ms` : '–');
  const bars = hBarChart(
    ws.map((w) => ({
      label: w.worker,
      segments: [
        { value: w.computeMs.median, color: TIMING_COLORS.compute },
        { value: w.commMs.median, color: TIMING_COLORS.comm },
        { value: w.reduceMs.median, color: TIMING_COLORS.reduce },
      ],
      note: `${ms(w.computeMs.median + w.commMs.median + (finite(w.reduceMs.median) ? w.reduceMs.median : 0))}`,
    })),
    {
      title: 'Median time per step, by worker',
      valueLabel: 'ms per step',
      segmentLabels: [
        { label: 'compute (forward + backward)', color: TIMING_COLORS.compute },
        { label: 'communication (round trip − compute)', color: TIMING_COLORS.comm },
        { label: 'coordinator reduce + optimizer', color: TIMING_COLORS.reduce },
      ],
      width: 620,
      valueFormat: ms,
    },
  );
  const table =
    '<table><tr><th>worker</th><th>steps</th><th>images / step</th><th>compute median</th><th>compute p90</th><th>comm median</th><th>comm p90</th><th>reduce median</th><th>compute img/s</th></tr>' +
    ws
      .map((w) => `<tr><td>${esc(w.worker)}</td><td>${w.steps}</td><td>${w.n}</td><td>${ms(w.computeMs.median)}</td><td>${ms(w.computeMs.p90)}</td><td>${ms(w.commMs.median)}</td><td>${ms(w.commMs.p90)}</td><td>${ms(w.reduceMs.median)}</td><td>${finite(w.n / w.computeMs.median) ? ((1000 * w.n) / w.computeMs.median).toFixed(1) : '–'}</td></tr>`)
      .join('') +
    '</table>';
  const of = (w: WorkerTimingSummary, y: (x: WorkerTiming) => number) =>
    run.steps.flatMap((s) => s.workers.filter((x) => x.worker === w.worker).map((x) => [s.step, y(x)] as [number, number]));
  const series: Series[] = ws.flatMap((w, i) => [
    { label: `${w.worker} compute`, points: of(w, (x) => x.computeMs), color: PALETTE[i % PALETTE.length], smooth: true },
    { label: `${w.worker} communication`, points: of(w, (x) => x.commMs), color: PALETTE[i % PALETTE.length], smooth: true, dashed: true },
  ]);
  series.push({ label: 'coordinator reduce', points: run.steps.map((s) => [s.step, s.reduceMs] as [number, number]), color: TIMING_COLORS.reduce, smooth: true });
  const overSteps = linePlot(series, { title: 'Time per step, by worker', xLabel: 'step', yLabel: 'ms', logY: true, legend: 'below' });
  return (
    '<h2 id="workers">Workers: time per step</h2>' +
    `<div class="grid">${bars}${overSteps}</div>${table}` +
    '<p class="note">A synchronous step waits for its slowest worker: step time ≈ max over workers of (compute + communication) + reduce. ' +
    'Communication is each worker\'s round trip minus its compute time (serialization, transfer, queueing); reduce is the coordinator\'s validation, all-reduce and optimizer step.</p>'
  );
}

function spectraSection(spectra: Spectrum[], pipeline: PipelineSummary | null | undefined, checkpointNote: string): string {
  if (!spectra.length) return '<h2>Singular values</h2><p class="note">No checkpoint with singular values found: no spectra or ranks.</p>';
  const energy = pipeline ? pipeline.energy : DEFAULT_REPORT_ENERGY;
  const source = pipeline
    ? `the energy this run pruned at (pipeline.json: e = ${energy})`
    : `e = ${energy}, a default: this run has no pipeline.json; \`svd-coord prune --energy e\` takes any e`;
  const panels = spectrumPanels(spectra, energy);
  const caption =
    `<p class="note">Each SVD layer's singular values, |s| / max |s| sorted descending, log scale shared by all ${spectra.length} panels. ` +
    `Dashed line: the energy cut at ${source}; the red values right of it hold at most a fraction e of the layer's energy (Σ s²) and pruning removes them. ` +
    `Values below ${SPECTRUM_FLOOR.toExponential().replace('e+', 'e')} (or exactly 0) are drawn hollow on the bottom edge.${checkpointNote ? ` ${esc(checkpointNote)}` : ''}</p>`;
  const layers = spectra.map((sp) => sp.layer);
  const full = spectra.map((sp) => sp.s.length);
  const keep = (e: number) => spectra.map((sp) => effectiveRank(sp.s, e));
  const rankFig = columnChart(layers, [
    { label: 'full rank', values: full, color: '#ccc', width: 0.8 },
    { label: `rank kept at e = ${energy}`, values: keep(energy), color: PALETTE[0], width: 0.5 },
  ], { title: 'Rank per layer', yLabel: 'rank', width: 1000, height: 260 });
  const energies = [...new Set([0.01, 0.05, energy])].sort((a, b) => a - b);
  const rankRows = spectra
    .map((sp) => `<tr><td>${esc(sp.layer)}</td><td>${sp.s.length}</td>${energies.map((e) => `<td>${effectiveRank(sp.s, e)}</td>`).join('')}</tr>`)
    .join('');
  return (
    `<h2>Singular values</h2>${caption}<div class="multiples">${panels.join('')}</div>${rankFig}` +
    `<details><summary>ranks per layer (table)</summary><table><tr><th>layer</th><th>full rank</th>${energies.map((e) => `<th>rank @${e}</th>`).join('')}</tr>${rankRows}</table></details>`
  );
}

function macsSection(macs: MacsRow[]): string {
  if (!macs.length) return '<h2>Pruning: MACs</h2><p class="note">MACs before/after pruning: not available (no checkpoint, or the layers package could not count MACs).</p>';
  const plainRow = macs.find((r) => r.label.startsWith('plain'));
  const ofPlain = (v: number) => (plainRow ? `${((100 * v) / plainRow.macs).toFixed(1)}%` : '–');
  const fig = hBarChart(
    macs.map((f, i) => ({ label: f.label, segments: [{ value: f.macs / 1e6, color: f === plainRow ? '#999' : PALETTE[i % PALETTE.length] }], note: `${(f.macs / 1e6).toFixed(2)}M${plainRow ? ` (${ofPlain(f.macs)})` : ''}` })),
    { title: 'MACs per image: plain ResNet, this model, pruned', valueLabel: 'million MACs per image (FLOPs = 2·MACs)', width: 640 },
  );
  const table =
    `<table><tr><th>model</th><th>MACs / image</th><th>% of plain</th><th>weights (form that runs)</th></tr>${macs
      .map((r) => `<tr><td>${esc(r.label)}</td><td>${(r.macs / 1e6).toFixed(2)}M</td><td>${ofPlain(r.macs)}</td><td>${r.params ?? '–'}</td></tr>`)
      .join('')}</table>`;
  return `<h2>Pruning: MACs</h2><div class="grid">${fig}${table}</div><p class="note">MACs (multiply-accumulates) per image, each layer counted in the form it runs (merged or factored); FLOPs = 2·MACs.</p>`;
}

/** Renders the report HTML. Pure: tests feed it records directly. */
export function renderReport(inp: ReportInput): string {
  const run = runMetrics(inp.records);
  const { steps, epochs } = run;
  const model = inp.model ?? (typeof inp.config?.model === 'string' ? inp.config.model : undefined);
  const heading = model ? `${inp.title} · ${model}` : inp.title;
  const lastTest = [...epochs].reverse().find((e) => finite(e.testAcc));
  const last = epochs[epochs.length - 1];
  const best = epochs.reduce<EpochRow | undefined>((b, e) => (finite(e.testAcc) && (!b || e.testAcc > b.testAcc) ? e : b), undefined);
  const lastStep = steps[steps.length - 1];
  const facts = [
    last ? `epoch ${last.epoch + 1}: test accuracy ${lastTest ? pctText(lastTest.testAcc) : '–'}` : `${steps.length} steps recorded, no epoch finished`,
    best && lastTest && best !== lastTest ? `best ${pctText(best.testAcc)} after epoch ${best.epoch + 1}` : '',
    steps.length ? `${steps.length} steps` : '',
    lastStep && finite(run.startMs) && finite(lastStep.timeMs) ? `${formatDuration(lastStep.timeMs - run.startMs)} wall-clock` : '',
    finite(median(steps.map((r) => r.imgPerSec))) ? `median ${Math.round(median(steps.map((r) => r.imgPerSec)))} images/s` : '',
  ].filter(Boolean);
  const cfgLine = configLine(inp.config);
  const cfg = inp.config ? `<details><summary>run config</summary><pre>${esc(JSON.stringify(inp.config, null, 2))}</pre></details>` : '';
  const checkpointNote = (inp.notes ?? []).find((n) => n.startsWith('Spectra and MACs from')) ?? '';
  const pipelineHtml = inp.pipeline
    ? renderPipeline(inp.pipeline)
    : '<p class="note">No pipeline.json: this run did not prune and fine-tune (start --prune-energy e --finetune-epochs k does).</p>';
  return `<!doctype html><html><head><meta charset="utf-8"><meta name="viewport" content="width=device-width"><title>${esc(heading)} · svd-train report</title><style>
body{font-family:sans-serif;margin:24px;color:#222;max-width:1240px}h1{font-size:22px;margin-bottom:4px}h2{font-size:17px;margin-top:28px;border-bottom:1px solid #ddd}
.sub{color:#555;margin-top:0}.grid{display:flex;flex-wrap:wrap;gap:12px;align-items:flex-start}.multiples{display:flex;flex-wrap:wrap;gap:4px}.note{color:#666;font-size:13px}
table{border-collapse:collapse;font-size:12px;margin:6px 0}td,th{border:1px solid #ddd;padding:2px 8px;text-align:right}td:first-child,th:first-child{text-align:left}
.xswitch>span{font-size:13px;color:#555;margin-right:6px}.xswitch>input{margin-left:10px}.xswitch>label{font-size:13px}
.by-time{display:none}#x-time:checked~.by-time{display:flex}#x-time:checked~.by-step{display:none}.xswitch>.grid{margin-top:8px}
</style></head><body><h1>${esc(heading)}</h1>${cfgLine ? `<p class="sub">${esc(cfgLine)}</p>` : ''}<p>${esc(facts.join(' · '))}</p>${(inp.notes ?? []).map((n) => `<p class="note">${esc(n)}</p>`).join('')}
${trainingSection(run)}
${workerSection(run)}
${spectraSection(inp.spectra, inp.pipeline, checkpointNote)}
${macsSection(inp.macs)}
<h2>Train → prune → fine-tune</h2>${pipelineHtml}
${cfg}</body></html>`;
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
  // The run's name, not the path: the page is shared and opened elsewhere, where the path of the
  // machine that wrote it means nothing (and tells more than it should). Notes name files inside
  // the run folder relative to it, for the same reason.
  const root = resolve(runDir);
  // A pipeline's fine-tuning run lives in <run>/finetune: name it after its parent run too.
  const name = basename(root) === 'finetune' ? `${basename(dirname(root))}/finetune` : basename(root);
  const html = renderReport({
    title: name,
    config,
    records: readMetrics(join(runDir, 'metrics.jsonl')),
    spectra: spectraOf(extras.params ?? []),
    macs: extras.macs ?? [],
    pipeline: extras.pipeline ?? null,
    notes: (extras.notes ?? []).map((n) => n.split(root + sep).join('')),
  });
  const out = join(runDir, 'report.html');
  replaceFile(out, html);
  return out;
}
