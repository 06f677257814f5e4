/**
 * Learning rate as a pure function of the global step, in PyTorch's scheduler forms.
 *
 * The coordinator calls `lrAt(cfg, step, stepsPerEpoch)` before every optimizer step, so a
 * resumed run needs no scheduler state: the step number in the checkpoint is enough.
 * `step` is 0-based: `lrAt(cfg, 0, …)` is the lr of the first optimizer step, which is what
 * PyTorch uses after `scheduler.step()` has been called `step` times.
 */
import type { RunConfig } from './config/schema.js';
import { SvdTrainError } from './errors.js';

export type ScheduleConfig = Pick<
  RunConfig,
  'schedule' | 'lr' | 'milestones' | 'gamma' | 'warmupEpochs' | 'pctStart' | 'divFactor' | 'finalDivFactor' | 'epochs'
>;

export type MomentumScheduleConfig = Pick<RunConfig, 'schedule' | 'epochs' | 'pctStart' | 'cycleMomentum' | 'baseMomentum' | 'maxMomentum' | 'optimizer' | 'momentum' | 'adamBetas'>;

/**
 * `MultiStepLR`: lr multiplied by `gamma` once per milestone reached (`milestone ≤ step`),
 * multiplying repeatedly like PyTorch (0.1·0.1·0.1, not 0.1·0.1², so the float64 values match).
 * @param milestoneSteps milestones in optimizer steps.
 */
export function multistepLr(baseLr: number, milestoneSteps: readonly number[], gamma: number, step: number): number {
  let lr = baseLr;
  for (const m of milestoneSteps) if (m <= step) lr *= gamma;
  return lr;
}

/** `CosineAnnealingLR(T_max = totalSteps, eta_min = 0)` in closed form. */
export function cosineLr(baseLr: number, totalSteps: number, step: number): number {
  if (step >= totalSteps) return 0;
  return (baseLr * (1 + Math.cos((Math.PI * step) / totalSteps))) / 2;
}

function cosAnneal(start: number, end: number, pct: number): number {
  return end + ((start - end) / 2) * (Math.cos(Math.PI * pct) + 1);
}

/**
 * `OneCycleLR(max_lr, total_steps, pct_start, anneal_strategy='cos', div_factor, final_div_factor,
 * three_phase=False)`: cosine warm-up from max/div to max over the first pct_start of the steps,
 * then cosine down to max/div/final_div, per step. Same phase boundaries as PyTorch.
 */
export function onecycleLr(maxLr: number, totalSteps: number, step: number, pctStart = 0.3, divFactor = 25, finalDivFactor = 1e4): number {
  const initial = maxLr / divFactor;
  return onecycle(initial, maxLr, initial / finalDivFactor, totalSteps, step, pctStart);
}

/**
 * `OneCycleLR(cycle_momentum=True)`'s momentum: cosine from `maxMomentum` down to `baseMomentum`
 * while the lr rises, then back up to `maxMomentum`, on the same phase boundaries.
 */
export function onecycleMomentum(baseMomentum: number, maxMomentum: number, totalSteps: number, step: number, pctStart = 0.3): number {
  return onecycle(maxMomentum, baseMomentum, maxMomentum, totalSteps, step, pctStart);
}

/** PyTorch's two-phase one-cycle curve: start -> peak over pctStart of the steps, then peak -> end. */
function onecycle(start: number, peak: number, end: number, totalSteps: number, step: number, pctStart: number): number {
  const phase1End = pctStart * totalSteps - 1;
  const phase2End = totalSteps - 1;
  const s = Math.min(step, phase2End);
  if (s <= phase1End) return cosAnneal(start, peak, s / phase1End);
  return cosAnneal(peak, end, (s - phase1End) / (phase2End - phase1End));
}

/**
 * The lr of optimizer step `step` (0-based, global across epochs). Milestones are in epochs
 * (converted to steps here); a linear warm-up over `warmupEpochs` multiplies any schedule by
 * (step + 1) / warmupSteps until it reaches 1.
 */
export function lrAt(cfg: ScheduleConfig, step: number, stepsPerEpoch: number): number {
  if (!(Number.isInteger(stepsPerEpoch) && stepsPerEpoch > 0)) {
    throw new SvdTrainError('CONFIG_INVALID', `lrAt: stepsPerEpoch ${stepsPerEpoch} must be a positive integer; check --batch against the dataset size`);
  }
  const total = cfg.epochs * stepsPerEpoch;
  let lr: number;
  switch (cfg.schedule) {
    case 'constant':
      lr = cfg.lr;
      break;
    case 'multistep':
      lr = multistepLr(cfg.lr, cfg.milestones.map((e) => e * stepsPerEpoch), cfg.gamma, step);
      break;
    case 'cosine':
      lr = cosineLr(cfg.lr, total, step);
      break;
    case 'onecycle':
      lr = onecycleLr(cfg.lr, total, step, cfg.pctStart, cfg.divFactor, cfg.finalDivFactor);
      break;
    default:
      throw new SvdTrainError('CONFIG_INVALID', `unknown schedule '${String(cfg.schedule)}'; expected onecycle, multistep, cosine or constant`);
  }
  const warmup = Math.round(cfg.warmupEpochs * stepsPerEpoch);
  if (warmup > 0 && step < warmup) lr *= (step + 1) / warmup;
  return lr;
}

/**
 * The momentum (SGD) or β1 (Adam) of optimizer step `step`: the one-cycle curve when the schedule
 * is onecycle with `cycleMomentum` (as PyTorch's OneCycleLR, which then overrides the optimizer's
 * own value), else the configured constant.
 */
export function momentumAt(cfg: MomentumScheduleConfig, step: number, stepsPerEpoch: number): number {
  if (cfg.schedule === 'onecycle' && cfg.cycleMomentum) {
    return onecycleMomentum(cfg.baseMomentum, cfg.maxMomentum, cfg.epochs * stepsPerEpoch, step, cfg.pctStart);
  }
  return cfg.optimizer === 'adam' ? cfg.adamBetas[0] : cfg.momentum;
}

export type SparsityScheduleConfig = Pick<RunConfig, 'lambdaS' | 'sparsityStart' | 'sparsityEnd' | 'epochs'>;

/** The first optimizer step at or after the fraction f of the run's steps (the step count at f = 1). */
function firstStepAt(f: number, cfg: Pick<RunConfig, 'epochs'>, stepsPerEpoch: number): number {
  return Math.ceil(f * cfg.epochs * stepsPerEpoch);
}

/** The first optimizer step with the sparsity term: the first at or after the `sparsityStart` fraction of the run. */
export function sparsityStartStep(cfg: SparsityScheduleConfig, stepsPerEpoch: number): number {
  return firstStepAt(cfg.sparsityStart, cfg, stepsPerEpoch);
}

/** The first optimizer step without the sparsity term again: the first at or after the `sparsityEnd` fraction (the step count at 1). */
export function sparsityEndStep(cfg: SparsityScheduleConfig, stepsPerEpoch: number): number {
  return firstStepAt(cfg.sparsityEnd, cfg, stepsPerEpoch);
}

/**
 * The sparsity weight λ_s of optimizer step `step`: `lambdaS` from the `sparsityStart` fraction of
 * the run's steps up to the `sparsityEnd` fraction, 0 outside (bench/torch_train.py's
 * `--sparsity-start` and `--sparsity-end`, step for step). Workers call it with the step number of
 * each step message, so both ends agree without more state.
 */
export function sparsityWeightAt(cfg: SparsityScheduleConfig, step: number, stepsPerEpoch: number): number {
  return step >= sparsityStartStep(cfg, stepsPerEpoch) && step < sparsityEndStep(cfg, stepsPerEpoch) ? cfg.lambdaS : 0;
}
