/**
 * The report's train → prune → fine-tune section, from pipeline.json: accuracy and MACs before
 * pruning, after pruning, after fine-tuning and (with --finetune-average) of its averaged last
 * epochs, against the plain ResNet, and the accuracy-vs-MACs curve of the energy sweep with the
 * fine-tuned (and averaged) point marked.
 */
import { isAbsolute } from 'node:path';
import { pctText } from './plot-scales.js';
import { formatDuration } from './run-metrics.js';
import { escapeXml as esc, linePlot, PALETTE, type Series } from './svg-plot.js';

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

/** With --plain-epochs: the plain model the training starts from, its epochs and checkpoint. */
export type PretrainedPoint = PipelinePoint & { epochs: number; checkpoint: string };

/** pipeline.json: what `start --prune-energy e [--finetune-epochs k]` measured. */
export interface PipelineSummary {
  model: string;
  energy: number;
  /** --prune-mac-weight α the energy was shared out by (layerEnergies; absent: 0, older runs). */
  macWeight?: number;
  /** Step of the trained checkpoint that was pruned (absent: older runs). */
  trainedStep?: number;
  testImages: number;
  /** Training images each pruned model's batch-norm statistics were re-estimated on (absent: none, older runs). */
  bnRecalibrationImages?: number;
  plain: { macs: number; params: number };
  /** With --plain-epochs: the plain model the training started from (decomposed); absent otherwise. */
  pretrained?: PretrainedPoint;
  trained: PipelinePoint;
  pruned: PipelinePoint;
  prunedCheckpoint: string;
  finetuned: (PipelinePoint & { epochs: number; lr: number; run: string }) | null;
  /** With --finetune-average k: the mean of the fine-tuning's last k epochs (absent: not asked, older runs; null: too few epochs left). */
  averaged?: (PipelinePoint & { epochs: number; run: string; checkpoint: string }) | null;
  /** The accuracy-vs-MACs curve: the trained model (energy 0) and each sweep energy, no fine-tuning. */
  sweep: PipelinePoint[];
  /** Each phase's time in seconds (see PhaseSeconds); absent in older runs. */
  seconds?: PhaseSeconds;
}

/**
 * How long each phase of the pipeline took, in seconds: a training phase its epochs' steps and
 * test evaluations (runSeconds of its metrics.jsonl: resume-proof, time between starts not counted);
 * the pruning its evaluation of the trained model, the sweep and the pruned model. null: not
 * recorded (a metrics file without times); absent: the phase did not run.
 */
export interface PhaseSeconds {
  plain?: number | null;
  training: number | null;
  pruning: number | null;
  finetuning?: number | null;
}

const PHASE_NAMES: [keyof PhaseSeconds, string][] = [
  ['plain', 'plain'],
  ['training', 'training'],
  ['pruning', 'pruning'],
  ['finetuning', 'fine-tuning'],
];

/** "plain 58 min + training 23 min + … = 2 h 15 min", over the phases that ran; '' without times. */
export function phaseTimes(s: PhaseSeconds | undefined): string {
  if (!s) return '';
  const ran = PHASE_NAMES.filter(([k]) => s[k] !== undefined).map(([k, name]) => ({ name, v: s[k] ?? null }));
  const known = ran.flatMap(({ v }) => (v === null ? [] : [v]));
  if (!known.length) return '';
  const total = known.reduce((acc, v) => acc + v, 0);
  const parts = ran.map(({ name, v }) => `${name} ${v === null ? 'not recorded' : formatDuration(1000 * v)}`);
  return `${parts.join(' + ')} = ${formatDuration(1000 * total)}${known.length < ran.length ? ' (of the phases with times)' : ''}`;
}

/** What MAC weight α does, in words, for the pipeline's log and `prune --mac-weight`'s table. */
export function macWeightRule(macWeight: number): string {
  return `each layer gives up e·(its MACs per rank / the costliest layer's)^${macWeight} of its energy`;
}

/** ', MAC weight α' where the energy was shared out by cost (see --prune-mac-weight); '' at 0. */
export function macWeightText(p: Pick<PipelineSummary, 'macWeight'>): string {
  return p.macWeight ? `, MAC weight ${p.macWeight}` : '';
}

/** The pipeline section: before / after table and the accuracy-vs-MACs curve with the fine-tuned point marked. */
export function renderPipeline(p: PipelineSummary): string {
  const pct = (x: number) => ((100 * x) / p.plain.macs).toFixed(1);
  const rows: [string, PipelinePoint | null, keyof PhaseSeconds | null][] = [
    ...(p.pretrained ? [[`plain ${p.model} trained ${p.pretrained.epochs} epoch(s), the start of the method (decomposed)`, p.pretrained, 'plain'] as [string, PipelinePoint, 'plain']] : []),
    ['trained, before pruning', p.trained, 'training'],
    [`after pruning at e=${p.energy}${macWeightText(p)} (no fine-tuning)`, p.pruned, 'pruning'],
    [p.finetuned ? `after fine-tuning ${p.finetuned.epochs} epoch(s), peak lr ${p.finetuned.lr}` : 'after fine-tuning (not run)', p.finetuned, 'finetuning'],
    ...(p.averaged ? [[`average of the fine-tuning's last ${p.averaged.epochs} epochs (batch-norm statistics re-estimated)`, p.averaged, null] as [string, PipelinePoint, null]] : []),
  ];
  const time = (k: keyof PhaseSeconds | null) => {
    const v = k && p.seconds ? p.seconds[k] : undefined;
    return typeof v === 'number' ? formatDuration(1000 * v) : '–';
  };
  const times = phaseTimes(p.seconds);
  const ftLink = p.finetuned && p.finetuned.run && !isAbsolute(p.finetuned.run) ? ` The fine-tuning run has its own report: <a href="${esc(p.finetuned.run)}/report.html">${esc(p.finetuned.run)}/report.html</a>.` : '';
  const table =
    `<table><tr><th>stage</th><th>test accuracy</th><th>MACs / image</th><th>% of plain ${esc(p.model)}</th><th>weights (form that runs)</th><th>time of its phase</th></tr>` +
    rows.map(([label, r, k]) => `<tr><td>${esc(label)}</td>${r ? `<td>${pctText(r.acc)}</td><td>${(r.macs / 1e6).toFixed(2)}M</td><td>${pct(r.macs)}%</td><td>${r.exportParams}</td>` : '<td>–</td><td>–</td><td>–</td><td>–</td>'}<td>${time(k)}</td></tr>`).join('') +
    `<tr><td>plain ${esc(p.model)} (reference)</td><td>–</td><td>${(p.plain.macs / 1e6).toFixed(2)}M</td><td>100%</td><td>${p.plain.params}</td><td></td></tr></table>` +
    `<p class="note">Test accuracy on ${p.testImages} test images${p.bnRecalibrationImages ? `; each pruned model's batch-norm statistics re-estimated on ${p.bnRecalibrationImages} training images before it was evaluated` : ''}. MACs per image in the form each layer runs; FLOPs = 2·MACs.${ftLink}` +
    `${times ? ` Time: ${esc(times)} (a training phase: its epochs and their evaluations; the pruning: the sweep and the pruned model).` : ''}</p>`;
  // The sweep as a curve from cheap to expensive; points of equal MACs (energies too small to
  // remove anything) are one point, labelled with the smallest and largest energy.
  const byMacs = new Map<number, PipelinePoint[]>();
  for (const q of p.sweep) byMacs.set(q.macs, [...(byMacs.get(q.macs) ?? []), q]);
  const sweep = [...byMacs.entries()].sort((a, b) => a[0] - b[0]).map(([, qs]) => {
    const es = qs.map((q) => q.energy).sort((a, b) => a - b);
    const name = (e: number) => (e === 0 ? '0 (trained)' : String(e));
    const label = es.length > 1 ? `e=${name(es[0])}…${es[es.length - 1]}` : `e=${name(es[0])}`;
    return { q: qs.find((q) => q.energy === es[0])!, label };
  });
  const series: Series[] = [
    { label: 'pruned, no fine-tuning (sweep of e)', points: sweep.map(({ q }) => [q.macs / 1e6, 100 * q.acc] as [number, number]), color: PALETTE[0], style: 'line+markers', pointLabels: sweep.map((s) => s.label) },
  ];
  // The fine-tuned point is larger and drawn before the pruned one, so both stay visible where they
  // land on each other (same MACs, and the same accuracy when fine-tuning gained nothing).
  if (p.finetuned) {
    series.push({ label: 'fine-tuning gain', points: [[p.pruned.macs / 1e6, 100 * p.pruned.acc], [p.finetuned.macs / 1e6, 100 * p.finetuned.acc]], color: PALETTE[1], dashed: true });
    // The averaged point lands beside the fine-tuned one (same MACs, accuracy tenths apart), where
    // two labels would collide and one be dropped: it then carries both numbers.
    const ftText = `fine-tuned ${pctText(p.finetuned.acc)}`;
    series.push({ label: `fine-tuned (e=${p.energy}, ${p.finetuned.epochs} ep)`, points: [[p.finetuned.macs / 1e6, 100 * p.finetuned.acc]], color: PALETTE[1], marker: 6, pointLabels: p.averaged ? undefined : [ftText] });
    if (p.averaged) {
      series.push({ label: `average of its last ${p.averaged.epochs} epochs`, points: [[p.averaged.macs / 1e6, 100 * p.averaged.acc]], color: PALETTE[2], marker: 6, pointLabels: [`averaged ${pctText(p.averaged.acc)} (${ftText})`] });
    }
  }
  series.push({ label: `pruned at e=${p.energy}`, points: [[p.pruned.macs / 1e6, 100 * p.pruned.acc]], color: PALETTE[3] });
  const xs = [...p.sweep.map((q) => q.macs), p.plain.macs, ...(p.finetuned ? [p.finetuned.macs] : []), ...(p.averaged ? [p.averaged.macs] : [])].map((v) => v / 1e6);
  const xPad = Math.max(0.5, 0.06 * (Math.max(...xs) - Math.min(...xs)));
  const curve = linePlot(series, {
    title: 'Test accuracy vs MACs per image',
    subtitle: `${p.testImages} test images; pruned models not fine-tuned unless marked`,
    xLabel: 'million MACs per image (FLOPs = 2·MACs)',
    yLabel: 'test accuracy %',
    width: 700,
    height: 400,
    legend: 'below',
    xRange: [Math.max(0, Math.min(...xs) - xPad), Math.max(...xs) + xPad],
    marks: [{ x: p.plain.macs / 1e6, label: `plain ${p.model}`, color: '#777' }],
  });
  const sweepTable =
    `<table><tr><th>energy e${macWeightText(p)}</th><th>test accuracy</th><th>MACs / image</th><th>% of plain</th><th>weights</th></tr>` +
    [...p.sweep].sort((a, b) => a.energy - b.energy).map((q) => `<tr><td>${q.energy === 0 ? '0 (trained)' : q.energy}</td><td>${pctText(q.acc)}</td><td>${(q.macs / 1e6).toFixed(2)}M</td><td>${pct(q.macs)}%</td><td>${q.exportParams}</td></tr>`).join('') +
    '</table>';
  return `${table}<div class="grid">${curve}${sweepTable}</div>`;
}
