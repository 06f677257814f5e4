/**
 * The method after training, `svd-coord start --prune-energy e | --prune-macs N [--finetune-epochs
 * k]`: evaluate the trained model and a sweep of pruning energies, save the model pruned at e,
 * fine-tune it, and write pipeline.json for the report.
 */
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import {
  EpochSampler,
  SvdTrainError,
  averageTensors,
  configHash,
  latestCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  parseConfig,
  readCifar10,
  replaceFile,
  stepsPerEpoch,
  teachersOf,
  type Checkpoint,
  type RunConfig,
  type SplitLike,
} from '@svd-train/core';
import {
  buildResNetForConfig,
  countMacs,
  depthOf,
  energyForMacs,
  evaluateSplit,
  FLOOR_ENERGY,
  macsAfterPruning,
  plainResNetCost,
  pruneByEnergy,
  BN_RECALIBRATION_IMAGES,
  setWeights,
  svdRanks,
} from '@svd-train/layers';
import { recalibrateOnTrain, recalibratePruned, writeDerivedCheckpoint, writePrunedCheckpoint, type Model } from './checkpoint-model.js';
import { reportCommand } from './commands/report.js';
import { readMetrics } from './report.js';
import { runMetrics, runSeconds } from './run-metrics.js';
import { resumesIn, trainPhase, type StartContext } from './train-phase.js';
import { macWeightRule, macWeightText, phaseTimes, type PhaseSeconds, type PipelinePoint, type PipelineSummary, type PretrainedPoint } from './report-pipeline.js';

/**
 * Fails at once when `--prune-macs` asks for less than any pruning of this architecture can give:
 * every SVD layer at one singular value (a bound for every MAC weight, which only keeps more in the
 * cheaper layers). Without this check the run would train for hours and fail at the pruning.
 * Returns that floor in MACs per image (null without a budget).
 */
export function checkMacBudget(cfg: RunConfig): number | null {
  if (cfg.pruneMacs === null) return null;
  const model = buildResNetForConfig({ ...cfg, ranks: null });
  const floor = macsAfterPruning(model, FLOOR_ENERGY);
  model.dispose();
  if (cfg.pruneMacs < floor) {
    throw new SvdTrainError(
      'CONFIG_INVALID',
      `--prune-macs ${cfg.pruneMacs}: below the least any pruning of ${cfg.model} (${cfg.decomposition}) can reach, ${floor} MACs per image with one singular value in every SVD layer (the plain ${cfg.model} costs ${plainResNetCost({ depth: depthOf(cfg.model) }).macs}). Fix: give --prune-macs ${floor} or more, or --prune-energy instead.`,
    );
  }
  return floor;
}

/** Distillation for the fine-tuning phase: α, T, and the teacher (null: the trained model). */
export interface FinetuneDistill {
  alpha: number;
  temperature: number;
  teacher: string | null;
  teacherRanks: Record<string, number> | null;
  teacherArch: RunConfig['teacherArch'];
  /** Further teachers of an ensemble (only with `teacher`). */
  extraTeachers: RunConfig['extraTeachers'];
}

/**
 * The method after training (`start --prune-energy e [--finetune-epochs k]`), on the training
 * phase's final checkpoint: test accuracy of the trained model; a sweep of energies pruned and
 * evaluated without fine-tuning (the accuracy-vs-MACs curve, cheap: one inference pass each,
 * after re-estimating the batch-norm statistics of each pruned model on BN_RECALIBRATION_IMAGES
 * training images, see recalibrateBatchNorm);
 * the model pruned at e saved as <out>/pruned-e<e>.svdckpt; then, with k > 0, a fine-tuning run
 * in <out>/finetune (its own config, metrics and checkpoints; fresh optimizer, peak lr
 * finetuneLr or lr/10, no sparsity term) and its test accuracy; with finetuneAverage k, the mean
 * of the fine-tuning's last k epochs too (see averageLastEpochs). Everything goes to
 * <out>/pipeline.json, which the report plots.
 */
export async function pruneAndFinetune(
  cfg: RunConfig,
  outDir: string,
  ctx: StartContext,
  distill: FinetuneDistill | null = null,
  pretrained: PretrainedPoint | null = null,
): Promise<PipelineSummary> {
  const { io } = ctx;
  const t0 = performance.now();
  const latest = latestCheckpoint(join(outDir, 'checkpoints'), { configHash: configHash(cfg), onWarning: (m) => io.err(`warning: ${m}\n`) });
  if (!latest) throw new SvdTrainError('CHECKPOINT_CORRUPT', `--prune-energy: no valid checkpoint of this run in ${join(outDir, 'checkpoints')} to prune; expected the training phase to have written one. Fix: rerun start, or prune a checkpoint with svd-coord prune.`);
  const test = readCifar10(ctx.dataDir, 'test');
  const n = Math.min(test.count, cfg.limitTest ?? test.count);
  const chunk = cfg.maxWorkerBatch;
  const firstN = Int32Array.from({ length: n }, (_, i) => i);
  const model = buildResNetForConfig(cfg);
  setWeights(model, latest.checkpoint);
  // BN re-estimation images: spread over the (possibly limited) train split, the same for every energy.
  const train = readCifar10(ctx.dataDir, 'train');
  const trainN = Math.min(train.count, cfg.limitTrain ?? train.count);
  const calN = Math.min(BN_RECALIBRATION_IMAGES, trainN);
  const point = (m: Model, energy: number): PipelinePoint => testPoint(m, test, firstN, chunk, energy);
  const plain = plainResNetCost({ depth: depthOf(cfg.model) });
  let e = cfg.pruneEnergy ?? 0;
  if (cfg.pruneMacs !== null) {
    let found: { energy: number; macs: number };
    try {
      found = energyForMacs(model, cfg.pruneMacs, { macWeight: cfg.pruneMacWeight });
    } catch (err) {
      // The start-time check (checkMacBudget) knows the floor at MAC weight 0 only: a weighted
      // floor depends on the trained spectra. Nothing trained is lost.
      if (err instanceof SvdTrainError) {
        throw new SvdTrainError(err.code, `${err.message} The training is finished and kept: the same command with --resume and the new --prune-macs or --prune-mac-weight prunes it without training again.`, err.details, { cause: err });
      }
      throw err;
    }
    e = found.energy;
    io.err(`pipeline: --prune-macs ${cfg.pruneMacs}: energy ${e} is the smallest that prunes to at most that (${(found.macs / 1e6).toFixed(2)}M MACs per image)${weighted(cfg)}\n`);
  }
  const energies = [...new Set([...cfg.sweepEnergies, e])].sort((a, b) => a - b);
  const reuse = cfg.resume ? reusablePipeline(outDir, cfg, { step: latest.checkpoint.step, energy: e, macWeight: cfg.pruneMacWeight, energies, testImages: n, bnRecalibrationImages: calN }) : null;
  if (reuse && 'reason' in reuse) io.err(`pipeline: --resume: evaluating and pruning again, because ${reuse.reason}\n`);
  if (reuse && 'summary' in reuse) {
    model.dispose();
    io.err(`pipeline: --resume: the sweep and the model pruned at e=${e} (${reuse.summary.prunedCheckpoint}) are in ${join(outDir, 'pipeline.json')}, made from this checkpoint (step ${latest.checkpoint.step}): reusing them (delete pipeline.json to redo them)\n`);
    // The pruning's time is the start's that did it; the training's is read again (it may have grown).
    const seconds = trainingSeconds(outDir, pretrained, reuse.summary.seconds?.pruning ?? null, io);
    const summary = { ...reuse.summary, ...(pretrained ? { pretrained } : {}), finetuned: null, averaged: undefined, seconds };
    return finetunePruned(cfg, outDir, ctx, distill, summary, reuse.ranks, latest.path, point, train);
  }
  io.err(`pipeline: evaluating the trained model and ${cfg.sweepEnergies.length} pruning energies on ${n} test images (each pruned model's batch-norm statistics re-estimated on ${calN} training images first)${weighted(cfg)}\n`);
  const full = point(model, 0);
  const sweep: PipelinePoint[] = [full];
  let prunedPoint: PipelinePoint | null = null;
  let prunedPath = '';
  let ranks: Record<string, number> = {};
  for (const energy of energies) {
    if (energy === 0) continue;
    const { model: pruned, report } = pruneByEnergy(model, energy, cfg.pruneMacWeight);
    // Nothing removed, nothing re-estimated: the point then is the trained model's, to the digit.
    recalibratePruned(pruned, report, train, trainN, Math.min(cfg.batch, chunk), cfg);
    const p = point(pruned, energy);
    sweep.push(p);
    io.err(`  e=${energy}: test accuracy ${(100 * p.acc).toFixed(2)}%, ${(p.macs / 1e6).toFixed(2)}M MACs (${((100 * p.macs) / plain.macs).toFixed(1)}% of plain ${cfg.model})\n`);
    if (energy === e) {
      prunedPoint = p;
      ranks = svdRanks(pruned);
      prunedPath = writePrunedCheckpoint(latest.checkpoint, cfg, pruned, e, join(outDir, `pruned-e${e}.svdckpt`), latest.path);
    }
    pruned.dispose();
  }
  model.dispose();
  if (e === 0) {
    // Energy 0 prunes nothing: the "pruned" model is the trained one, saved as such for fine-tuning.
    const again = buildResNetForConfig(cfg);
    setWeights(again, latest.checkpoint);
    prunedPoint = full;
    ranks = svdRanks(again);
    prunedPath = writePrunedCheckpoint(latest.checkpoint, cfg, again, 0, join(outDir, 'pruned-e0.svdckpt'), latest.path);
    again.dispose();
  }
  const summary: PipelineSummary = {
    model: cfg.model,
    ...(pretrained ? { pretrained } : {}),
    energy: e,
    macWeight: cfg.pruneMacWeight,
    trainedStep: latest.checkpoint.step,
    testImages: n,
    bnRecalibrationImages: calN,
    plain: { macs: plain.macs, params: plain.params },
    trained: full,
    pruned: prunedPoint!,
    prunedCheckpoint: prunedPath,
    finetuned: null,
    sweep,
    seconds: trainingSeconds(outDir, pretrained, (performance.now() - t0) / 1000, io),
  };
  writePipelineJson(outDir, summary);
  return finetunePruned(cfg, outDir, ctx, distill, summary, ranks, latest.path, point, train);
}

/** How a MAC weight shares each energy out, for the log (nothing at 0, the paper's rule). */
function weighted(cfg: RunConfig): string {
  return cfg.pruneMacWeight > 0 ? `; at MAC weight ${cfg.pruneMacWeight}, ${macWeightRule(cfg.pruneMacWeight)}` : '';
}

/**
 * The run's time (runSeconds) from <runDir>/metrics.jsonl; null, with a warning, where it has none
 * or cannot be read: the time is a report's figure, not worth failing a finished pipeline over.
 */
function phaseSeconds(runDir: string, io: StartContext['io']): number | null {
  const path = join(runDir, 'metrics.jsonl');
  try {
    const s = runSeconds(runMetrics(readMetrics(path)).epochs);
    if (Number.isFinite(s)) return s;
    io.err(`warning: pipeline: no epoch times in ${path}; that phase's time is not recorded\n`);
  } catch (err) {
    io.err(`warning: pipeline: that phase's time is not recorded: ${(err as Error).message}\n`);
  }
  return null;
}

/** The phases' times up to the pruning: the plain phase (in <out>/plain) where there was one, the training, and `pruning`. */
function trainingSeconds(outDir: string, pretrained: PretrainedPoint | null, pruning: number | null, io: StartContext['io']): PhaseSeconds {
  return { ...(pretrained ? { plain: phaseSeconds(join(outDir, 'plain'), io) } : {}), training: phaseSeconds(outDir, io), pruning };
}

/** A model's point of the pipeline: test accuracy and loss on the test images `indices`, and its cost. */
export function testPoint(m: Model, test: SplitLike, indices: Int32Array, chunk: number, energy: number): PipelinePoint {
  const c = countMacs(m);
  const r = evaluateSplit(m, test, indices, chunk);
  const n = indices.length;
  return { energy, acc: r.correct / n, loss: r.lossSum / n, macs: c.total, params: c.params, exportParams: c.exportParams };
}

/**
 * The pipeline from the pruned model on: with finetuneEpochs > 0, fine-tunes `summary.prunedCheckpoint`
 * (of per-layer `ranks`) in <out>/finetune and evaluates it with `point`; writes pipeline.json and
 * prints the before / after table. `trainedPath` is the trained checkpoint, the default teacher;
 * `train` the training split, whose images re-estimate an average's batch-norm statistics.
 */
async function finetunePruned(
  cfg: RunConfig,
  outDir: string,
  ctx: StartContext,
  distill: FinetuneDistill | null,
  summary: PipelineSummary,
  ranks: Record<string, number>,
  trainedPath: string,
  point: (m: Model, energy: number) => PipelinePoint,
  train: SplitLike,
): Promise<PipelineSummary> {
  const { io } = ctx;
  const e = summary.energy;
  const prunedPath = summary.prunedCheckpoint;
  const write = () => writePipelineJson(outDir, summary);
  write();
  if (cfg.finetuneEpochs > 0) {
    const ftDir = join(outDir, 'finetune');
    const ftCfg = finetuneConfig(cfg, prunedPath, ranks, ftDir, distill, trainedPath, train.count);
    const { lr } = ftCfg;
    const k = cfg.finetuneAverage;
    const kd = distill ? `, distilled from ${teachersOf(distill).map((t) => t.teacher).join(' + ') || 'the trained model'} (α ${distill.alpha}, T ${distill.temperature})` : '';
    io.err(`pipeline: fine-tuning the model pruned at e=${e} for ${cfg.finetuneEpochs} epoch(s), peak lr ${lr}, λ_o ${ftCfg.lambdaO}, weight decay ${ftCfg.weightDecay}, no sparsity term${kd}, in ${ftDir}\n`);
    const ft = await trainPhase(ftCfg, ctx, {
      next: 'going on with its evaluation',
      freshFix: `delete ${ftDir} to fine-tune afresh (the trained model and the pruning are kept)`,
    });
    const last = latestCheckpoint(join(ftDir, 'checkpoints'), { configHash: configHash(ft) });
    if (!last) throw new SvdTrainError('CHECKPOINT_CORRUPT', `fine-tuning wrote no valid checkpoint in ${join(ftDir, 'checkpoints')}; expected one at its end. Fix: rerun, or fine-tune with start --from ${prunedPath}.`);
    const m = buildResNetForConfig(ft);
    setWeights(m, last.checkpoint);
    summary.finetuned = { ...point(m, e), epochs: cfg.finetuneEpochs, lr, run: 'finetune' };
    if (summary.seconds) summary.seconds.finetuning = phaseSeconds(ftDir, io);
    m.dispose();
    write();
    if (k > 0) {
      summary.averaged = averageLastEpochs(ft, ftDir, k, ctx, train, (avg) => point(avg, e));
      write();
    }
    try {
      await reportCommand(ftDir, { out: io.err, err: io.err });
    } catch (err) {
      io.err(`fine-tuning report not written: ${(err as Error).message}\n`);
    }
  }
  io.err(`${describePipeline(summary)}\n`);
  return summary;
}

/**
 * The fine-tuning phase's run config: the training's, from the checkpoint pruned at `ranks`, for
 * finetuneEpochs at peak lr finetuneLr (default lr / 10), λ_o finetuneLambdaO and weight decay
 * finetuneWeightDecay (default: the training's), without the sparsity term, in `ftDir`; distilled
 * from `distill`'s teachers, or the trained model (`trainedPath`) when it names none.
 * `trainCount` is the training split's size (how many checkpoints an average needs kept).
 */
export function finetuneConfig(
  cfg: RunConfig,
  prunedPath: string,
  ranks: Record<string, number>,
  ftDir: string,
  distill: FinetuneDistill | null,
  trainedPath: string,
  trainCount: number,
): RunConfig {
  const k = cfg.finetuneAverage;
  return {
    ...cfg,
    from: prunedPath,
    ranks,
    epochs: cfg.finetuneEpochs,
    lr: cfg.finetuneLr ?? cfg.lr / 10,
    lambdaO: cfg.finetuneLambdaO ?? cfg.lambdaO,
    weightDecay: cfg.finetuneWeightDecay ?? cfg.weightDecay,
    lambdaS: 0,
    pruneEnergy: null,
    pruneMacs: null,
    finetuneEpochs: 0,
    finetuneAverage: 0,
    distillTraining: false,
    out: ftDir,
    // The average needs the last k epochs' checkpoints still on disk.
    keepCheckpoints: k > 0 ? Math.max(cfg.keepCheckpoints, checkpointsForEpochs(k, cfg, trainCount)) : cfg.keepCheckpoints,
    // A resumed pipeline resumes its fine-tuning too, once that has a checkpoint.
    resume: resumesIn(cfg, ftDir),
    ...(distill
      ? {
          distillAlpha: distill.alpha,
          distillTemperature: distill.temperature,
          // The trained model (the checkpoint just pruned) teaches unless the user named a teacher.
          teacher: distill.teacher ?? trainedPath,
          teacherRanks: distill.teacher ? distill.teacherRanks : null,
          teacherArch: distill.teacher ? distill.teacherArch : null,
          extraTeachers: distill.teacher ? distill.extraTeachers : [],
        }
      : {}),
  };
}

/**
 * How many checkpoints hold the last `epochs` epochs of a run of `cfg` on a training split of
 * `trainImages` (at most): one at each epoch's end, one every checkpointEvery steps, and the early one.
 */
export function checkpointsForEpochs(epochs: number, cfg: Pick<RunConfig, 'checkpointEvery' | 'batch' | 'limitTrain'>, trainImages: number): number {
  const spe = stepsPerEpoch(Math.min(trainImages, cfg.limitTrain ?? trainImages), cfg.batch);
  return epochs * (1 + (cfg.checkpointEvery > 0 ? Math.ceil(spe / cfg.checkpointEvery) : 0)) + 1;
}

/**
 * Stochastic weight averaging at the end of the pipeline: the mean of the parameters of the last
 * `k` epoch-end checkpoints of the fine-tuning run `ft` (in <ftDir>/checkpoints), its batch-norm
 * statistics re-estimated in one pass over the training split `train` (augmented as the run trained, as
 * `svd-coord average` does), evaluated by `point` and written as <ftDir>/averaged-last<k>.svdckpt.
 * Returns null, and says why, when fewer than 2 epoch ends are left (the average is then skipped:
 * the fine-tuned model stands).
 */
function averageLastEpochs(ft: RunConfig, ftDir: string, k: number, ctx: StartContext, train: SplitLike, point: (m: Model) => PipelinePoint): PipelineSummary['averaged'] {
  const { io } = ctx;
  const ckptDir = join(ftDir, 'checkpoints');
  const hash = configHash(ft);
  const ends: { path: string; checkpoint: Checkpoint }[] = [];
  for (const { path } of listCheckpoints(ckptDir)) {
    if (ends.length === k) break;
    let c: Checkpoint;
    let atEpochEnd: boolean;
    try {
      c = loadCheckpoint(path, { configHash: hash });
      atEpochEnd = EpochSampler.fromState(c.sampler).atEpochEnd;
    } catch (err) {
      if (err instanceof SvdTrainError && err.code === 'CHECKPOINT_CORRUPT') {
        io.err(`warning: --finetune-average: skipping ${path}: ${err.message}\n`);
        continue;
      }
      throw err;
    }
    if (atEpochEnd) ends.push({ path, checkpoint: c });
  }
  if (ends.length < 2) {
    io.err(`warning: --finetune-average ${k}: only ${ends.length} epoch-end checkpoint(s) of the fine-tuning left in ${ckptDir}, at least 2 needed; no average (average its checkpoints with svd-coord average)\n`);
    return null;
  }
  if (ends.length < k) io.err(`warning: --finetune-average ${k}: only ${ends.length} epoch-end checkpoints of the fine-tuning left in ${ckptDir}; averaging those\n`);
  ends.reverse(); // oldest first
  const newest = ends[ends.length - 1];
  const model = buildResNetForConfig(ft);
  const mean = averageTensors(ends.map((x) => ({ path: x.path, params: x.checkpoint.params, buffers: x.checkpoint.buffers })));
  setWeights(model, mean);
  const trainN = Math.min(train.count, ft.limitTrain ?? train.count);
  io.err(`pipeline: averaging the fine-tuning's last ${ends.length} epochs (steps ${ends.map((x) => x.checkpoint.step).join(', ')}), batch-norm statistics re-estimated on ${trainN} training images\n`);
  const recalibrated = recalibrateOnTrain(model, train, trainN, Math.min(ft.batch, ft.maxWorkerBatch), ft, trainN);
  const files = ends.map((x) => x.path);
  const written = writeDerivedCheckpoint(newest.checkpoint, ft, model, { averagedFrom: files, bnRecalibratedImages: recalibrated }, join(ftDir, `averaged-last${ends.length}.svdckpt`), files);
  const p = point(model);
  model.dispose();
  return { ...p, epochs: ends.length, run: 'finetune', checkpoint: written };
}

/** Writes <out>/pipeline.json whole or not at all. */
function writePipelineJson(outDir: string, summary: PipelineSummary): void {
  replaceFile(join(outDir, 'pipeline.json'), JSON.stringify(summary, null, 2) + '\n');
}

/** What a resumed pipeline's pipeline.json must have been made from to be reused. */
export interface PipelineExpectation {
  /** Step of the trained checkpoint being pruned. */
  step: number;
  energy: number;
  /** --prune-mac-weight (0: the paper's rule). */
  macWeight: number;
  /** The sweep's energies, sorted, with `energy` among them (0 is the trained model). */
  energies: number[];
  testImages: number;
  bnRecalibrationImages: number;
}

const isPoint = (q: unknown): q is PipelinePoint =>
  typeof q === 'object' && q !== null && ['energy', 'acc', 'loss', 'macs', 'params', 'exportParams'].every((k) => Number.isFinite((q as Record<string, unknown>)[k]));

/**
 * On --resume, the sweep and the pruned model an earlier start of this pipeline left in
 * <out>/pipeline.json, when they were made from the same trained checkpoint, energy, sweep and test
 * images and the pruned checkpoint it names is still there and is this run's (its config is `cfg`
 * with the pruned ranks): `{ summary, ranks }`. Otherwise `{ reason }` (a file that is not what
 * this code writes, or one of another checkpoint or settings), or null when there is no
 * pipeline.json. Evaluating and pruning again costs minutes; reusing must never mix two runs.
 */
export function reusablePipeline(outDir: string, cfg: RunConfig, want: PipelineExpectation): { summary: PipelineSummary; ranks: Record<string, number> } | { reason: string } | null {
  const path = join(outDir, 'pipeline.json');
  if (!existsSync(path)) return null;
  let p: PipelineSummary;
  try {
    p = JSON.parse(readFileSync(path, 'utf8')) as PipelineSummary;
  } catch (err) {
    return { reason: `${path} is not JSON (${(err as Error).message})` };
  }
  if (typeof p !== 'object' || p === null || !isPoint(p.trained) || !isPoint(p.pruned) || !Array.isArray(p.sweep) || !p.sweep.every(isPoint) || typeof p.prunedCheckpoint !== 'string') {
    return { reason: `${path} does not have the fields a pipeline writes` };
  }
  const sweep = p.sweep.filter((q) => q.energy !== 0).map((q) => q.energy);
  const wanted = want.energies.filter((x) => x !== 0);
  const differs: [string, unknown, unknown][] = [
    ['trained checkpoint step', p.trainedStep, want.step],
    ['energy', p.energy, want.energy],
    ['MAC weight', p.macWeight ?? 0, want.macWeight],
    ['sweep energies', sweep.join(','), wanted.join(',')],
    ['test images', p.testImages, want.testImages],
    ['batch-norm re-estimation images', p.bnRecalibrationImages, want.bnRecalibrationImages],
  ];
  const bad = differs.find(([, had, expected]) => had !== expected);
  if (bad) return { reason: `${path} has ${bad[0]} ${JSON.stringify(bad[1] ?? null)}, this run ${JSON.stringify(bad[2])}` };
  if (!existsSync(p.prunedCheckpoint)) return { reason: `the pruned checkpoint it names, ${p.prunedCheckpoint}, is gone` };
  let pruned: ReturnType<typeof loadCheckpoint>;
  let ranks: Record<string, number> | null;
  try {
    pruned = loadCheckpoint(p.prunedCheckpoint);
    ranks = parseConfig(pruned.config).ranks;
  } catch (err) {
    return { reason: `the pruned checkpoint ${p.prunedCheckpoint} does not load (${(err as Error).message})` };
  }
  // Its config is this run's with the pruned ranks, as writeDerivedCheckpoint wrote it.
  if (ranks === null || configHash({ ...cfg, ranks, pruneEnergy: null, finetuneEpochs: 0 }) !== pruned.configHash || pruned.step !== want.step || pruned.metrics?.['prunedEnergy'] !== want.energy) {
    return { reason: `${p.prunedCheckpoint} is not this run's model pruned at e=${want.energy} from step ${want.step}` };
  }
  return { summary: p, ranks };
}

/** The pipeline's before / after table, for the terminal. */
export function describePipeline(p: PipelineSummary): string {
  const pct = (x: number) => `${((100 * x) / p.plain.macs).toFixed(1)}%`;
  const rows: [string, PipelinePoint | null][] = [
    [`plain start, ${p.pretrained?.epochs ?? 0} epoch(s)`, p.pretrained ?? null],
    ['trained, full rank', p.trained],
    [`pruned at e=${p.energy}${macWeightText(p)}`, p.pruned],
    [`fine-tuned ${p.finetuned?.epochs ?? 0} epoch(s)`, p.finetuned],
    [`average of last ${p.averaged?.epochs ?? 0} epochs`, p.averaged ?? null],
  ];
  const width = Math.max(24, ...rows.map(([label]) => label.length));
  const lines = [
    `pipeline result on ${p.testImages} test images (MACs per image; FLOPs = 2·MACs):`,
    ...rows.filter(([, r]) => r).map(([label, r]) => `  ${label.padEnd(width)} test accuracy ${(100 * r!.acc).toFixed(2).padStart(6)}%  ${(r!.macs / 1e6).toFixed(2).padStart(7)}M MACs (${pct(r!.macs)} of plain ${p.model})  ${r!.exportParams} weights`),
    `  ${`plain ${p.model}`.padEnd(width)} ${' '.repeat(22)}${(p.plain.macs / 1e6).toFixed(2).padStart(7)}M MACs (100%)  ${p.plain.params} weights`,
  ];
  const times = phaseTimes(p.seconds);
  if (times) lines.push(`time: ${times} (a training phase: its epochs and their evaluations)`);
  return lines.join('\n');
}
