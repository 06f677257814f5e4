/**
 * The run configuration's shape: one zod schema, every field's default from `DEFAULTS`, and the
 * types inferred from it (`RunConfig`, `SerializedRunConfig`).
 *
 * Config flows one way: CLI flags, environment and an optional JSON file go through
 * `resolveConfig()` (resolve.ts), the result is validated by `RunConfigSchema`, and
 * `serializeConfig()` (hash.ts) turns it into the plain object that the coordinator sends to workers
 * in the handshake and stores in checkpoints.
 */
import { z } from 'zod';
import {
  BACKENDS,
  DECAY_ON,
  DECOMPOSITIONS,
  DEFAULTS,
  FORWARD_MODES,
  MODELS,
  OPTIMIZERS,
  SCHEDULES,
  SPARSITIES,
  MAX_TIMER_MS,
  STALL_ACTIONS,
} from '../defaults.js';

const int = (min: number, max = Number.MAX_SAFE_INTEGER) => z.int().min(min).max(max);
const nonNeg = () => z.number().min(0);
const positive = () => z.number().positive();
const path = () => z.string().min(1);
const ranksRecord = () => z.record(z.string(), int(1));
const archObject = () => z.strictObject({ model: z.enum(MODELS), svd: z.boolean(), decomposition: z.enum(DECOMPOSITIONS) });

/** Most teachers one run distills from (`teacher` and `extraTeachers` together): each costs every step a forward. */
export const MAX_TEACHERS = 8;

/**
 * PyTorch module names of the SVD layers our ResNets have (resnet.ts): the stem conv, the convs of
 * each block, the 1×1 shortcut conv and the classifier. Keys of `ranks` must be one of these.
 */
export const SVD_MODULE_NAME_RE = /^(stem\.0|layers\.\d+\.(conv1|conv2|shortcut\.0)|fc)$/;

/** Shape of a run config; every field has a default from `DEFAULTS`. */
export const RunConfigSchema = z
  .strictObject({
    model: z.enum(MODELS).default(DEFAULTS.model),
    svd: z.boolean().default(DEFAULTS.svd),
    decomposition: z.enum(DECOMPOSITIONS).default(DEFAULTS.decomposition),
    forward: z.enum(FORWARD_MODES).default(DEFAULTS.forward),
    ranks: z.record(z.string(), int(1)).nullable().default(DEFAULTS.ranks),
    sparsity: z.enum(SPARSITIES).default(DEFAULTS.sparsity),
    lambdaO: nonNeg().default(DEFAULTS.lambdaO),
    lambdaS: nonNeg().default(DEFAULTS.lambdaS),
    sparsityStart: z.number().min(0).lt(1).default(DEFAULTS.sparsityStart),
    sparsityEnd: z.number().gt(0).max(1).default(DEFAULTS.sparsityEnd),
    optimizer: z.enum(OPTIMIZERS).default(DEFAULTS.optimizer),
    lr: positive().default(DEFAULTS.lr),
    momentum: z.number().min(0).lt(1).default(DEFAULTS.momentum),
    nesterov: z.boolean().default(DEFAULTS.nesterov),
    weightDecay: nonNeg().default(DEFAULTS.weightDecay),
    decayOn: z.enum(DECAY_ON).default(DEFAULTS.decayOn),
    adamBetas: z.tuple([z.number().min(0).lt(1), z.number().min(0).lt(1)]).default((): [number, number] => [DEFAULTS.adamBetas[0], DEFAULTS.adamBetas[1]]),
    adamEps: positive().default(DEFAULTS.adamEps),
    schedule: z.enum(SCHEDULES).default(DEFAULTS.schedule),
    milestones: z.array(int(1)).default(() => [...DEFAULTS.milestones]),
    gamma: positive().default(DEFAULTS.gamma),
    warmupEpochs: nonNeg().default(DEFAULTS.warmupEpochs),
    cycleMomentum: z.boolean().default(DEFAULTS.cycleMomentum),
    baseMomentum: z.number().min(0).lt(1).default(DEFAULTS.baseMomentum),
    maxMomentum: z.number().min(0).lt(1).default(DEFAULTS.maxMomentum),
    pctStart: z.number().gt(0).lt(1).default(DEFAULTS.pctStart),
    divFactor: positive().default(DEFAULTS.divFactor),
    finalDivFactor: positive().default(DEFAULTS.finalDivFactor),
    epochs: int(1).default(DEFAULTS.epochs),
    batch: int(1).default(DEFAULTS.batch),
    seed: int(0).default(DEFAULTS.seed),
    augment: z.boolean().default(DEFAULTS.augment),
    cutout: int(0, 32).default(DEFAULTS.cutout),
    data: path().nullable().default(DEFAULTS.data),
    limitTrain: int(1).nullable().default(DEFAULTS.limitTrain),
    limitTest: int(1).nullable().default(DEFAULTS.limitTest),
    plainEpochs: int(0).default(DEFAULTS.plainEpochs),
    plainLr: positive().nullable().default(DEFAULTS.plainLr),
    pruneEnergy: z.number().min(0).lt(1).nullable().default(DEFAULTS.pruneEnergy),
    pruneMacs: positive().nullable().default(DEFAULTS.pruneMacs),
    pruneMacWeight: nonNeg().default(DEFAULTS.pruneMacWeight),
    finetuneEpochs: int(0).default(DEFAULTS.finetuneEpochs),
    finetuneLr: positive().nullable().default(DEFAULTS.finetuneLr),
    finetuneLambdaO: nonNeg().nullable().default(DEFAULTS.finetuneLambdaO),
    finetuneWeightDecay: nonNeg().nullable().default(DEFAULTS.finetuneWeightDecay),
    finetuneAverage: int(0).default(DEFAULTS.finetuneAverage),
    distillAlpha: z.number().min(0).max(1).default(DEFAULTS.distillAlpha),
    distillTemperature: positive().default(DEFAULTS.distillTemperature),
    teacher: path().nullable().default(DEFAULTS.teacher),
    teacherRanks: ranksRecord().nullable().default(DEFAULTS.teacherRanks),
    teacherArch: archObject().nullable().default(DEFAULTS.teacherArch),
    extraTeachers: z
      .array(z.strictObject({ teacher: path(), teacherRanks: ranksRecord().nullable().default(null), teacherArch: archObject().nullable().default(null) }))
      .max(MAX_TEACHERS - 1)
      .default(() => [...DEFAULTS.extraTeachers]),
    distillTraining: z.boolean().default(DEFAULTS.distillTraining),
    sweepEnergies: z.array(z.number().min(0).lt(1)).max(64).default(() => [...DEFAULTS.sweepEnergies]),
    host: z.string().min(1).default(DEFAULTS.host),
    port: int(0, 65535).default(DEFAULTS.port),
    minWorkers: int(1).default(DEFAULTS.minWorkers),
    spawn: int(0).default(DEFAULTS.spawn),
    out: path().default(DEFAULTS.out),
    resume: z.boolean().default(DEFAULTS.resume),
    from: path().nullable().default(DEFAULTS.from),
    token: z.string().min(1).nullable().default(DEFAULTS.token),
    insecure: z.boolean().default(DEFAULTS.insecure),
    evalEvery: int(0).default(DEFAULTS.evalEvery),
    checkpointEvery: int(0).default(DEFAULTS.checkpointEvery),
    keepCheckpoints: int(1).default(DEFAULTS.keepCheckpoints),
    stepTimeoutMs: int(1, MAX_TIMER_MS).default(DEFAULTS.stepTimeoutMs),
    stallWarnMs: int(1, MAX_TIMER_MS).default(DEFAULTS.stallWarnMs),
    stallAction: z.enum(STALL_ACTIONS).default(DEFAULTS.stallAction),
    handshakeTimeoutMs: int(1, MAX_TIMER_MS).default(DEFAULTS.handshakeTimeoutMs),
    maxMessageBytes: int(1024).default(DEFAULTS.maxMessageBytes),
    maxWorkerBatch: int(1).default(DEFAULTS.maxWorkerBatch),
    backend: z.enum(BACKENDS).default(DEFAULTS.backend),
    threads: int(1, 1024).default(DEFAULTS.threads),
  })
  .superRefine((c, ctx) => {
    // Every teacher's fields, and where they sit in the config: `teacher` at the top, then extraTeachers[i].
    const teachers = [{ at: [] as (string | number)[], t: c }, ...c.extraTeachers.map((t, i) => ({ at: ['extraTeachers', i], t }))];
    const rankKeys: (readonly (string | number)[])[] = [
      ...Object.keys(c.ranks ?? {}).map((k) => ['ranks', k]),
      ...teachers.flatMap(({ at, t }) => Object.keys(t.teacherRanks ?? {}).map((k) => [...at, 'teacherRanks', k])),
    ];
    for (const where of rankKeys) {
      const key = String(where[where.length - 1]);
      if (!SVD_MODULE_NAME_RE.test(key)) {
        ctx.addIssue({
          code: 'custom',
          path: [...where],
          message: `a PyTorch module name of an SVD layer as key ('stem.0', 'layers.K.conv1', 'layers.K.conv2', 'layers.K.shortcut.0' or 'fc'), not ${JSON.stringify(key)}`,
        });
      }
    }
    if (c.ranks !== null && Object.keys(c.ranks).length > 0 && !c.svd) {
      ctx.addIssue({ code: 'custom', path: ['ranks'], message: 'null with svd off: only SVD layers have a rank' });
    }
    for (let i = 1; i < c.milestones.length; i++) {
      if (c.milestones[i] <= c.milestones[i - 1]) {
        ctx.addIssue({
          code: 'custom',
          path: ['milestones'],
          message: `strictly ascending epochs (element ${i} = ${c.milestones[i]} is not above ${c.milestones[i - 1]})`,
        });
        break;
      }
    }
    if (c.cutout > 0 && !c.augment) {
      ctx.addIssue({ code: 'custom', path: ['cutout'], message: `0 with augmentation off: cutout (${c.cutout}) is part of the training augmentation; drop --no-augment, or --cutout` });
    }
    if (c.sparsityEnd <= c.sparsityStart) {
      ctx.addIssue({
        code: 'custom',
        path: ['sparsityEnd'],
        message: `above sparsityStart (${c.sparsityStart}): the sparsity term runs from the sparsityStart fraction of the steps to the sparsityEnd fraction, so ${c.sparsityEnd} would leave it no step`,
      });
    }
    if (c.optimizer === 'sgd' && c.nesterov && c.momentum === 0) {
      // PyTorch refuses this combination too: Nesterov without momentum is plain SGD in disguise.
      ctx.addIssue({ code: 'custom', path: ['momentum'], message: 'momentum > 0 when nesterov is on (or pass --no-nesterov)' });
    }
    if (c.cycleMomentum && c.baseMomentum > c.maxMomentum) {
      ctx.addIssue({ code: 'custom', path: ['baseMomentum'], message: `at most maxMomentum (${c.maxMomentum}): one-cycle momentum falls from maxMomentum to baseMomentum` });
    }
    for (const { at, t } of teachers) {
      if (t.teacherRanks !== null && Object.keys(t.teacherRanks).length > 0 && !(t.teacherArch?.svd ?? c.svd)) {
        ctx.addIssue({ code: 'custom', path: [...at, 'teacherRanks'], message: "null with this teacher's svd off: only SVD layers have a rank" });
      }
    }
    if (c.extraTeachers.length > 0 && (c.teacher === null || c.distillAlpha === 0)) {
      ctx.addIssue({
        code: 'custom',
        path: ['extraTeachers'],
        message: `empty without a teacher and distillAlpha > 0 (distillAlpha is ${c.distillAlpha}, teacher ${c.teacher === null ? 'none' : c.teacher}): further teachers join the first one (pass --teacher CKPT once per teacher, with --distill-alpha a)`,
      });
    }
    if (c.plainEpochs > 0) {
      const conflict = !c.svd
        ? 'svd is off: the plain phase trains the model that the SVD training then starts from, so the run itself must be an SVD one (drop {"svd": false})'
        : c.from !== null
          ? `from is set (${c.from}): the plain phase makes the starting point itself (drop --from, or drop --plain-epochs to start from that checkpoint)`
          : c.ranks !== null && Object.keys(c.ranks).length > 0
            ? 'ranks are set: the plain model is decomposed at full rank (drop --ranks; pruning is --prune-energy or --prune-macs)'
            : null;
      if (conflict) ctx.addIssue({ code: 'custom', path: ['plainEpochs'], message: `0 when ${conflict}` });
    }
    const pipelineTeacher = ((c.pruneEnergy !== null || c.pruneMacs !== null) && c.finetuneEpochs > 0) || c.plainEpochs > 0;
    if (c.distillAlpha > 0 && c.teacher === null && !pipelineTeacher) {
      ctx.addIssue({
        code: 'custom',
        path: ['teacher'],
        message: `a checkpoint path when distillAlpha is ${c.distillAlpha}: distillation needs a teacher (pass --teacher CKPT, or use it with --prune-energy/--prune-macs and --finetune-epochs, where the trained model teaches, or with --plain-epochs, where the plain model does)`,
      });
    }
    if (c.distillTraining && (c.distillAlpha === 0 || (c.teacher === null && c.plainEpochs === 0))) {
      ctx.addIssue({
        code: 'custom',
        path: ['distillTraining'],
        message: `false without a teacher and distillAlpha > 0 (distillAlpha is ${c.distillAlpha}, teacher ${c.teacher === null ? 'none' : c.teacher}): the training is distilled from a checkpoint that exists before it (pass --teacher CKPT --distill-alpha a, or --plain-epochs N so that the plain model teaches, or drop --distill-training)`,
      });
    }
    if (c.pruneEnergy === null && c.pruneMacs === null && c.finetuneEpochs > 0) {
      ctx.addIssue({ code: 'custom', path: ['finetuneEpochs'], message: '0 without --prune-energy or --prune-macs: fine-tuning follows pruning (pass --prune-energy e, or use start --from CKPT to fine-tune a checkpoint)' });
    }
    if (c.finetuneAverage === 1 || (c.finetuneAverage > 0 && c.finetuneAverage > c.finetuneEpochs)) {
      ctx.addIssue({
        code: 'custom',
        path: ['finetuneAverage'],
        message: `0 (off) or a whole number of epochs from 2 to finetuneEpochs (${c.finetuneEpochs}), got ${c.finetuneAverage}: the average is over the fine-tuning's last epoch-end checkpoints (pass e.g. --finetune-average 5 with --finetune-epochs 20 or more)`,
      });
    }
    if (!c.svd && (c.pruneEnergy !== null || c.pruneMacs !== null)) {
      ctx.addIssue({
        code: 'custom',
        path: [c.pruneEnergy !== null ? 'pruneEnergy' : 'pruneMacs'],
        message: 'null when svd is off: only SVD layers have singular values to prune, so the plain model would come out unchanged (drop {"svd": false}, or --prune-energy/--prune-macs; --plain-epochs N trains a plain model first and then the SVD one)',
      });
    }
    if (c.pruneEnergy !== null && c.pruneMacs !== null) {
      ctx.addIssue({ code: 'custom', path: ['pruneMacs'], message: `null when pruneEnergy is set (${c.pruneEnergy}): give either an energy or a MAC budget, not both` });
    }
    if (c.stallWarnMs > c.stepTimeoutMs) {
      ctx.addIssue({
        code: 'custom',
        path: ['stallWarnMs'],
        message: `at most stepTimeoutMs (${c.stepTimeoutMs}): the stall warning must come before the step timeout`,
      });
    }
  });

/** A fully resolved, validated run configuration. */
export type RunConfig = z.output<typeof RunConfigSchema>;
/** What `serializeConfig` returns: the run config as plain JSON, without the secret token. */
export type SerializedRunConfig = Omit<RunConfig, 'token'>;
/** A config field name (camelCase). */
export type ConfigKey = keyof RunConfig;

// Compile-time check that the defaults table and the schema agree.
const _defaultsMatchSchema: RunConfig = DEFAULTS;
void _defaultsMatchSchema;

/** All config keys, in schema order (camelCase). */
export const CONFIG_KEYS = Object.freeze(Object.keys(RunConfigSchema.shape) as ConfigKey[]);
