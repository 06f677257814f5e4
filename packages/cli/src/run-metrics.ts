/**
 * metrics.jsonl as typed rows for the report: one `StepRow` per training step and one `EpochRow`
 * per epoch, with the wall-clock time of each. The coordinator writes `StepMetrics` and
 * `EpochMetrics` (coordinator's metrics.ts); fields are read tolerantly (`ce` or `loss.ce`, a
 * missing `time`) so that a metrics file of an older version still plots. Missing numbers are NaN,
 * which the plots leave out.
 */
import type { WorkerTiming } from '@svd-train/coordinator';

export interface StepRow {
  step: number;
  epoch: number;
  lr: number;
  ce: number;
  total: number;
  orth: number;
  sparsity: number;
  /** T²·KL to the teacher while distilling; NaN otherwise. */
  distill: number;
  /** Batch accuracy in [0, 1]. */
  trainAcc: number;
  imgPerSec: number;
  /** Coordinator: the whole step, and its validation + all-reduce + optimizer part. */
  stepMs: number;
  reduceMs: number;
  /** Per worker: images, compute time, round trip minus compute. Empty in old files. */
  workers: WorkerTiming[];
  /** Wall-clock end of the step, ms since 1970 (NaN when the line has no `time`). */
  timeMs: number;
}

export interface EpochRow {
  /** 0-based, as metrics.jsonl counts. */
  epoch: number;
  /** Steps done at the end of the epoch (NaN in old files). */
  step: number;
  trainLoss: number;
  /** Accuracies in [0, 1]; NaN when not evaluated. */
  trainAcc: number;
  testAcc: number;
  testLoss: number;
  /** Per SVD layer, the rank energy 0.01 keeps; empty without SVD layers or in old files. */
  effectiveRanks: Record<string, number>;
  timeMs: number;
  /** Wall time of the epoch's steps and of its test evaluation (NaN: not recorded, or not evaluated). */
  epochMs: number;
  evalMs: number;
}

export interface RunMetrics {
  steps: StepRow[];
  epochs: EpochRow[];
  /** Wall-clock start of training (start of the first step), ms since 1970; NaN if unknown. */
  startMs: number;
}

type Raw = Record<string, unknown>;

const isObject = (v: unknown): v is Raw => v !== null && typeof v === 'object' && !Array.isArray(v);

/** First numeric field among `keys`; a key may be a dotted path ('loss.ce'). NaN if none. */
export function numberField(r: Raw, ...keys: string[]): number {
  for (const k of keys) {
    let v: unknown = r;
    for (const part of k.split('.')) v = isObject(v) ? v[part] : undefined;
    if (typeof v === 'number') return v;
  }
  return NaN;
}

/** Accuracy as a fraction: old files wrote percent. */
const fraction = (v: number) => (v > 1 ? v / 100 : v);

function kindOf(r: Raw): 'step' | 'epoch' | 'other' {
  const k = r.kind ?? r.type;
  if (k === 'step' || k === 'epoch') return k;
  if (k !== undefined) return 'other';
  return r.step !== undefined && r.testAcc === undefined ? 'step' : 'epoch';
}

function workersOf(v: unknown): WorkerTiming[] {
  if (!Array.isArray(v)) return [];
  return v.filter(isObject).map((w) => ({
    worker: typeof w.worker === 'string' || typeof w.worker === 'number' ? String(w.worker) : '?',
    n: numberField(w, 'n'),
    computeMs: numberField(w, 'computeMs'),
    commMs: numberField(w, 'commMs'),
  }));
}

function ranksOf(v: unknown): Record<string, number> {
  if (!isObject(v)) return {};
  return Object.fromEntries(Object.entries(v).filter((e): e is [string, number] => typeof e[1] === 'number'));
}

const timeOf = (r: Raw) => (typeof r.time === 'string' ? Date.parse(r.time) : NaN);

/** Splits parsed metrics.jsonl lines into step and epoch rows. */
export function runMetrics(records: readonly Raw[]): RunMetrics {
  const steps: StepRow[] = [];
  const epochs: EpochRow[] = [];
  for (const r of records) {
    const kind = kindOf(r);
    if (kind === 'step') {
      steps.push({
        step: numberField(r, 'step'),
        epoch: numberField(r, 'epoch'),
        lr: numberField(r, 'lr'),
        ce: numberField(r, 'loss.ce', 'ce', 'loss'),
        total: numberField(r, 'loss.total', 'total'),
        orth: numberField(r, 'loss.orth', 'orth'),
        sparsity: numberField(r, 'loss.sparsity', 'sparsity'),
        distill: numberField(r, 'loss.distill'),
        trainAcc: fraction(numberField(r, 'trainAcc', 'acc')),
        imgPerSec: numberField(r, 'imgPerSec', 'throughput'),
        stepMs: numberField(r, 'stepMs'),
        reduceMs: numberField(r, 'reduceMs'),
        workers: workersOf(r.workers),
        timeMs: timeOf(r),
      });
    } else if (kind === 'epoch') {
      epochs.push({
        epoch: numberField(r, 'epoch'),
        step: numberField(r, 'step', 'endStep'),
        trainLoss: numberField(r, 'trainLoss'),
        trainAcc: fraction(numberField(r, 'trainAcc')),
        testAcc: fraction(numberField(r, 'testAcc')),
        testLoss: numberField(r, 'testLoss'),
        effectiveRanks: ranksOf(r.effectiveRanks),
        timeMs: timeOf(r),
        epochMs: numberField(r, 'epochMs'),
        evalMs: numberField(r, 'evalMs'),
      });
    }
  }
  const first = steps.find((s) => Number.isFinite(s.timeMs));
  const startMs = first ? first.timeMs - (Number.isFinite(first.stepMs) ? first.stepMs : 0) : NaN;
  return { steps, epochs, startMs };
}

/**
 * The time a run took, in seconds: its epochs' steps plus their test evaluations, each epoch counted
 * once (an epoch a resume redid counts as its last record says; a checkpoint carries an epoch's time
 * so far across a resume, so the time between two starts is not counted). Evaluation times are
 * missing from runs of older versions. NaN when no epoch recorded its time.
 */
export function runSeconds(epochs: readonly EpochRow[]): number {
  const last = new Map<number, EpochRow>();
  for (const e of epochs) if (Number.isFinite(e.epochMs)) last.set(e.epoch, e);
  if (!last.size) return NaN;
  let ms = 0;
  for (const e of last.values()) ms += e.epochMs + (Number.isFinite(e.evalMs) ? e.evalMs : 0);
  return ms / 1000;
}

/** "1 h 23 min", "4 min 10 s", "12 s"; '–' for no duration. */
export function formatDuration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '–';
  const s = Math.round(ms / 1000);
  if (s < 60) return `${s} s`;
  if (s < 3600) return `${Math.floor(s / 60)} min ${s % 60} s`;
  const h = Math.floor(s / 3600);
  const m = Math.round((s % 3600) / 60);
  return m === 60 ? `${h + 1} h 0 min` : `${h} h ${m} min`;
}

/** The middle value (mean of the two middle ones for an even count); NaN for no finite value. */
export function median(values: readonly number[]): number {
  return quantile(values, 0.5);
}

/** Linear-interpolated quantile q ∈ [0, 1] of the finite values; NaN for none. */
export function quantile(values: readonly number[], q: number): number {
  const v = values.filter(Number.isFinite).sort((a, b) => a - b);
  if (!v.length) return NaN;
  const pos = (v.length - 1) * q;
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return v[lo] + (v[hi] - v[lo]) * (pos - lo);
}

/** Per-worker timing summary over the steps each worker took part in. */
export interface WorkerTimingSummary {
  worker: string;
  steps: number;
  /** Median images per step. */
  n: number;
  computeMs: { median: number; p90: number };
  commMs: { median: number; p90: number };
  /** The coordinator's reduce + optimizer time of those steps (the same for every worker of a step). */
  reduceMs: { median: number; p90: number };
}

/** Medians and 90th percentiles of each worker's compute, communication and reduce time per step, by worker id. */
export function workerTimings(steps: readonly StepRow[]): WorkerTimingSummary[] {
  const by = new Map<string, { n: number[]; compute: number[]; comm: number[]; reduce: number[] }>();
  for (const s of steps) {
    for (const w of s.workers) {
      let acc = by.get(w.worker);
      if (!acc) by.set(w.worker, (acc = { n: [], compute: [], comm: [], reduce: [] }));
      acc.n.push(w.n);
      acc.compute.push(w.computeMs);
      acc.comm.push(w.commMs);
      acc.reduce.push(s.reduceMs);
    }
  }
  const stats = (v: number[]) => ({ median: median(v), p90: quantile(v, 0.9) });
  return [...by.entries()]
    .sort(([a], [b]) => a.localeCompare(b, 'en', { numeric: true }))
    .map(([worker, a]) => ({ worker, steps: a.compute.length, n: median(a.n), computeMs: stats(a.compute), commMs: stats(a.comm), reduceMs: stats(a.reduce) }));
}
