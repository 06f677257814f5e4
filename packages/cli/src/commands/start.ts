/**
 * `svd-coord start`: the coordinator of a training run (and with --spawn K, K local workers), then
 * with --prune-energy / --prune-macs the pruning pipeline, then the report. Every training option
 * goes through core's `resolveConfig(flags, file, env)`, so flags, a --config JSON file and
 * SVD_TRAIN_* variables mean the same thing everywhere; the defaults the help shows are read from
 * core's DEFAULTS, the ones resolveConfig fills in.
 */
import { join, resolve } from 'node:path';
import type { Command } from 'commander';
import {
  BACKENDS,
  CIFAR_SPLIT_FILES,
  DECAY_ON,
  DECOMPOSITIONS,
  DEFAULTS,
  MAX_TEACHERS,
  MODELS,
  OPTIMIZERS,
  SCHEDULES,
  SPARSITIES,
  SvdTrainError,
  ensureCifar10,
  md5File,
  readCifar10,
  resolveConfig,
  type DatasetInfo,
  type RunConfig,
} from '@svd-train/core';
import { initEngine } from '@svd-train/layers';
import type { CliIo, SetExitCode } from '../cli-io.js';
import { checkMacBudget, pruneAndFinetune, type FinetuneDistill } from '../prune-pipeline.js';
import { readTlsFiles, resolveToken } from '../secrets.js';
import { plainPhase } from '../plain-phase.js';
import type { PretrainedPoint } from '../report-pipeline.js';
import { claimOutDir, trainPhase, withoutDistillation, type StartContext } from '../train-phase.js';
import { coerceFlagValues } from '../flag-values.js';
import { reportCommand } from './report.js';

/** A default as the help shows it, read from DEFAULTS so that the help cannot drift from resolveConfig. */
function shown(key: keyof typeof DEFAULTS): string {
  const v: unknown = DEFAULTS[key];
  if (typeof v === 'number') return v !== 0 && Math.abs(v) < 1e-3 ? v.toExponential() : String(v);
  if (Array.isArray(v)) return v.join(',');
  return String(v);
}

/** [flag, description]; values stay strings and `coerceFlagValues` converts them. */
const START_OPTIONS: [string, string][] = [
  ['--model <name>', `${MODELS.join(' | ')} (default ${shown('model')})`],
  ['--decomposition <kind>', `${DECOMPOSITIONS.join(' | ')} (default ${shown('decomposition')})`],
  ['--sparsity <kind>', `singular-value sparsity: ${SPARSITIES.join(' | ')} (default ${shown('sparsity')})`],
  ['--lambda-o <x>', `orthogonality weight λ_o (default ${shown('lambdaO')})`],
  ['--lambda-s <x>', `sparsity weight λ_s (default ${shown('lambdaS')})`],
  ['--sparsity-start <f>', `no sparsity term for the first fraction f of the training steps, in [0, 1) (default ${shown('sparsityStart')})`],
  ['--sparsity-end <f>', `no sparsity term from the fraction f of the training steps on, in (sparsity-start, 1] (default ${shown('sparsityEnd')}: to the last step)`],
  ['--optimizer <name>', `${OPTIMIZERS.join(' | ')} (default ${shown('optimizer')})`],
  ['--lr <x>', `peak learning rate (default ${shown('lr')})`],
  ['--momentum <x>', `SGD momentum when it does not cycle (default ${shown('momentum')})`],
  ['--weight-decay <x>', `L2 weight decay (default ${shown('weightDecay')})`],
  ['--decay-on <set>', `${DECAY_ON.join(' | ')}: decay every parameter, or only U, V and plain weights (not singular values, BN, biases) (default ${shown('decayOn')})`],
  ['--schedule <name>', `${SCHEDULES.join(' | ')} (default ${shown('schedule')})`],
  ['--epochs <n>', `epochs to train (default ${shown('epochs')})`],
  ['--batch <n>', `global batch size, split across workers (default ${shown('batch')})`],
  ['--seed <n>', `seed for init, data order and augmentation (default ${shown('seed')})`],
  ['--cutout <px>', `Cutout augmentation on top of crop + flip: a square of px pixels (e.g. 16), centred anywhere, set to the mean; 0 = off (default ${shown('cutout')})`],
  ['--data <dir>', 'CIFAR-10 binary folder (or SVD_TRAIN_DATA; default: the cache folder)'],
  ['--limit-train <n>', 'use only the first n training images'],
  ['--limit-test <n>', 'use only the first n test images'],
  ['--host <addr>', `address to listen on (default ${shown('host')}; a token is required off loopback)`],
  ['--port <n>', `port to listen on (default ${shown('port')})`],
  ['--min-workers <n>', `wait for this many workers before each step (default ${shown('minWorkers')})`],
  ['--spawn <k>', `start k local worker processes (default ${shown('spawn')})`],
  ['--out <dir>', `run folder for config, metrics, checkpoints, report (default ${shown('out')})`],
  ['--from <ckpt>', 'start from this checkpoint\'s weights with a fresh optimizer and schedule (fine-tuning, e.g. after prune; its per-layer ranks are used)'],
  ['--ranks <spec>', 'per-layer SVD ranks, e.g. "stem.0=3,layers.0.conv1=4" or JSON (default: full rank, or the --from checkpoint\'s)'],
  ['--token <secret>', 'shared worker token; visible in `ps`: prefer --token-file or SVD_TRAIN_TOKEN'],
  ['--eval-every <n>', `evaluate on the test set every n epochs (0 = never; default ${shown('evalEvery')})`],
  ['--checkpoint-every <n>', `also checkpoint every n steps (default ${shown('checkpointEvery')})`],
  ['--keep-checkpoints <n>', `checkpoint files to keep in <out>/checkpoints, newest first; raise it to average the epochs of a run with \`svd-coord average\` (default ${shown('keepCheckpoints')})`],
  ['--max-worker-batch <n>', `largest slice a worker computes at once (default ${shown('maxWorkerBatch')})`],
  ['--step-timeout-ms <n>', `drop a worker that has not answered a step after this long (default ${shown('stepTimeoutMs')})`],
  ['--stall-warn-ms <n>', `warn about a worker that has not answered after this long (default ${shown('stallWarnMs')}, or a quarter of a shorter --step-timeout-ms)`],
  ['--backend <name>', `engine for spawned workers: ${BACKENDS.join(' | ')} (default ${shown('backend')}: the first that loads, in that order)`],
  ['--threads <n>', `oneDNN threads per spawned worker on the native engine (default ${shown('threads')}: one worker per core)`],
  ['--plain-epochs <n>', `first train the plain ResNet of the same depth (no SVD) for n epochs in <out>/plain, decompose it into its exact full-rank SVD and train the method from there; with --distill-alpha and no --teacher, the plain model teaches (default ${shown('plainEpochs')}: off)`],
  ['--plain-lr <x>', `peak learning rate of the --plain-epochs phase (default: ${shown('lr')}, the standard recipe's; --lr is the method's training)`],
  ['--prune-energy <e>', 'after training, prune singular values holding at most a fraction e of each layer\'s energy, evaluate before/after and a sweep of energies (writes pipeline.json)'],
  ['--prune-macs <n>', 'instead of --prune-energy: prune at the smallest energy whose model costs at most n MACs per image (e.g. 13.6e6, a third of plain ResNet-20)'],
  ['--prune-mac-weight <a>', `share the pruning energy out by cost: each layer gives up a fraction e·(c/c_max)^a of its energy, c the MACs one unit of its rank costs per image and c_max the costliest layer's, so the MAC budget comes off where ranks are dear (stage 1) rather than where they are cheap (stage 3); 0 = every layer e, the paper's rule (default ${shown('pruneMacWeight')})`],
  ['--finetune-epochs <n>', `with --prune-energy or --prune-macs: then fine-tune the pruned model for n epochs in <out>/finetune (default ${shown('finetuneEpochs')})`],
  ['--finetune-lr <x>', 'peak learning rate of the fine-tuning (default: --lr / 10); sparsity is off while fine-tuning'],
  ['--finetune-lambda-o <x>', 'orthogonality weight λ_o of the fine-tuning (default: --lambda-o)'],
  ['--finetune-weight-decay <x>', 'weight decay of the fine-tuning (default: --weight-decay)'],
  ['--finetune-average <k>', `then average the fine-tuning's last k epochs (stochastic weight averaging: their parameters' mean, batch-norm statistics re-estimated on the training images), evaluate it and save it as <out>/finetune/averaged-last<k>.svdckpt; 0 = off (default ${shown('finetuneAverage')})`],
  ['--distill-alpha <a>', `knowledge distillation: the data term becomes (1 − a)·CE + a·T²·KL(teacher ‖ model), in [0, 1]; with --prune-* and --finetune-epochs it applies to the fine-tuning only (see --distill-training), and the trained model teaches unless --teacher names another (default ${shown('distillAlpha')}: off)`],
  ['--distill-temperature <t>', `softmax temperature T of the distillation term (default ${shown('distillTemperature')})`],
  ['--sweep-energies <list>', `energies of the accuracy-vs-MACs curve, evaluated without fine-tuning (default ${shown('sweepEnergies')})`],
];

function addStartOptions(cmd: Command): Command {
  cmd.option('--config <file>', 'JSON file with any of these options (camelCase keys); flags override it');
  for (const [flags, desc] of START_OPTIONS) cmd.option(flags, desc);
  cmd.option(
    '--teacher <ckpt>',
    'checkpoint of the teacher: any ResNet trained on this data set (another depth or --decomposition, plain or SVD, full rank or pruned; its own config says which); required with --distill-alpha outside the pipeline\'s fine-tuning. ' +
      `Repeat it for an ensemble (up to ${MAX_TEACHERS}): the target is the mean of the teachers' softened outputs`,
    (path: string, prev: string[] | undefined) => [...(prev ?? []), path],
  );
  cmd.option('--distill-training', 'the teacher (--teacher, or with --plain-epochs the plain model) teaches the training too, not only the fine-tuning of --prune-* --finetune-epochs (needs --distill-alpha, and --teacher or --plain-epochs)');
  cmd.option('--resume', 'continue from the latest checkpoint in --out');
  cmd.option('--insecure', 'allow workers without a token on a non-loopback address');
  cmd.option('--token-file <file>', 'read the shared worker token from the first line of this file (stays out of `ps`)');
  cmd.option('--tls-cert <file>', 'PEM certificate (chain): serve wss:// (with --tls-key)');
  cmd.option('--tls-key <file>', 'PEM private key of --tls-cert');
  cmd.option('--download', 'download CIFAR-10 first if it is missing');
  cmd.option('--no-augment', 'turn off crop+flip augmentation');
  cmd.option('--no-nesterov', 'plain momentum instead of Nesterov');
  cmd.option('--no-cycle-momentum', `onecycle: keep --momentum constant instead of cycling it ${shown('maxMomentum')} -> ${shown('baseMomentum')} -> ${shown('maxMomentum')}`);
  return cmd;
}

/**
 * The options commander hands `start`: the CLI-only ones by name, every training option as the
 * string typed (`coerceFlagValues` converts it, resolveConfig checks it).
 */
export interface StartOptions {
  config?: string;
  download?: boolean;
  token?: string;
  tokenFile?: string;
  tlsCert?: string;
  tlsKey?: string;
  /** Negatable: commander reports true when absent, false for --no-X. */
  augment?: boolean;
  nesterov?: boolean;
  cycleMomentum?: boolean;
  [option: string]: unknown;
}

/** Commander options -> resolveConfig flags (CLI-only keys removed). */
export function configFromOptions(opts: StartOptions, env: NodeJS.ProcessEnv = process.env, warn: (s: string) => void = () => {}): RunConfig {
  const { config, download: _d, augment, nesterov, cycleMomentum, tokenFile, tlsCert: _c, tlsKey: _k, token, ...rest } = opts;
  const flags: Record<string, unknown> = { ...rest };
  // --teacher may be repeated (an ensemble): the first is `teacher`, the others `extraTeachers`.
  if (Array.isArray(rest.teacher)) {
    const [first, ...more] = rest.teacher as string[];
    flags.teacher = first;
    flags.extraTeachers = more.map((teacher) => ({ teacher, teacherRanks: null, teacherArch: null }));
  }
  // The token file wins over SVD_TRAIN_TOKEN like any flag; it goes through resolveConfig as `token`.
  if (token !== undefined || tokenFile !== undefined) flags.token = resolveToken({ token, tokenFile }, warn, env);
  // commander sets negatable options to true when absent; only an explicit --no-X overrides the config file.
  if (augment === false) flags.augment = false;
  if (nesterov === false) flags.nesterov = false;
  if (cycleMomentum === false) flags.cycleMomentum = false;
  return resolveConfig(coerceFlagValues(flags), typeof config === 'string' ? config : undefined, env);
}

/** What the coordinator tells workers about the data: sizes after the limits, md5 of every file. */
function datasetInfoFor(dir: string, cfg: RunConfig): DatasetInfo {
  const train = readCifar10(dir, 'train');
  const test = readCifar10(dir, 'test');
  const md5s: Record<string, string> = {};
  for (const f of [...CIFAR_SPLIT_FILES.train, ...CIFAR_SPLIT_FILES.test]) md5s[f] = md5File(join(dir, f));
  return {
    trainCount: Math.min(train.count, cfg.limitTrain ?? train.count),
    testCount: Math.min(test.count, cfg.limitTest ?? test.count),
    md5s,
  };
}

/** Whether `start` goes on after the training: pruning (at an energy or a MAC budget), then fine-tuning if asked. */
function runsPipeline(cfg: RunConfig): boolean {
  return cfg.pruneEnergy !== null || cfg.pruneMacs !== null;
}

/**
 * Where a run distills. Outside the pipeline's fine-tuning, the training is distilled whenever α > 0.
 * In the pipeline with fine-tuning, the fine-tuning is (from --teacher, or else the trained model),
 * and the training only with --distill-training; the training phase then runs, hashes and resumes
 * without distillation.
 */
export function distillationPlan(cfg: RunConfig): { train: RunConfig; finetune: FinetuneDistill | null } {
  const distillLater = runsPipeline(cfg) && cfg.finetuneEpochs > 0 && cfg.distillAlpha > 0;
  return {
    train: distillLater && !cfg.distillTraining ? withoutDistillation(cfg) : cfg,
    finetune: distillLater ? { alpha: cfg.distillAlpha, temperature: cfg.distillTemperature, teacher: cfg.teacher, teacherRanks: cfg.teacherRanks, teacherArch: cfg.teacherArch, extraTeachers: cfg.extraTeachers } : null,
  };
}

/**
 * Options that only shape a phase the run does not have would be accepted and do nothing: refused
 * here, naming the option and the one that turns its phase on. (Not in the config schema: the
 * configs of derived checkpoints and of a pipeline's own phases keep such fields by design.)
 */
export function refuseIgnoredOptions(cfg: RunConfig): void {
  const finetune = '--finetune-epochs N (with --prune-energy or --prune-macs)';
  // [flag, value (null: not given), what turns its phase on]
  const options: [string, number | null, string][] = [
    ['--finetune-lr', cfg.finetuneEpochs === 0 ? cfg.finetuneLr : null, finetune],
    ['--finetune-lambda-o', cfg.finetuneEpochs === 0 ? cfg.finetuneLambdaO : null, finetune],
    ['--finetune-weight-decay', cfg.finetuneEpochs === 0 ? cfg.finetuneWeightDecay : null, finetune],
    ['--prune-mac-weight', cfg.pruneEnergy === null && cfg.pruneMacs === null && cfg.pruneMacWeight > 0 ? cfg.pruneMacWeight : null, '--prune-energy e or --prune-macs N'],
    ['--plain-lr', cfg.plainEpochs === 0 ? cfg.plainLr : null, '--plain-epochs N'],
  ];
  const hit = options.find(([, value]) => value !== null);
  if (hit) {
    const [flag, value, needs] = hit;
    throw new SvdTrainError('CONFIG_INVALID', `${flag} ${value}: it shapes a phase this run does not have, so it would be ignored. Fix: add ${needs}, or drop ${flag}.`);
  }
}

async function startCommand(opts: StartOptions, io: CliIo): Promise<number> {
  let cfg = configFromOptions(opts, process.env, io.err);
  refuseIgnoredOptions(cfg);
  const tls = readTlsFiles(opts);
  const outDir = resolve(cfg.out);
  const data = await ensureCifar10({ flag: cfg.data, download: Boolean(opts.download) });
  // config.json and the checkpoints keep the folder resolved to an absolute path, so `eval` run
  // from another folder still finds the data (a relative --data used to break it). Run-local:
  // not part of the config hash.
  cfg = { ...cfg, data: data.dir };
  const info = datasetInfoFor(data.dir, cfg);
  const engine = await initEngine({ backend: 'auto', resolveFrom: import.meta.url });
  io.err(`coordinator: data ${data.dir} (${info.trainCount} train / ${info.testCount} test); initial weights on ${engine.backend}\n`);
  // A MAC budget no pruning can meet fails now, not after the training.
  checkMacBudget(cfg);
  const ctx: StartContext = { dataDir: data.dir, info, io, ...(tls ? { tls: { tls, certPath: String(opts.tlsCert) } } : {}) };
  let pretrained: PretrainedPoint | null = null;
  if (cfg.plainEpochs > 0) {
    // The training's folder is checked now, not after the plain phase's hour: a fresh run must not
    // mix into another run's checkpoints (trainPhase's own check would come too late).
    if (!cfg.resume) claimOutDir(outDir, join(outDir, 'checkpoints'), io);
    ({ cfg, pretrained } = await plainPhase(cfg, outDir, ctx));
  }
  const pipeline = runsPipeline(cfg);
  const plan = distillationPlan(cfg);
  // Workers started by hand (not --spawn) are told to reconnect at the end of the training, so that
  // they fine-tune too.
  const trained = await trainPhase(plan.train, ctx, pipeline ? { next: 'going on with the pruning', nextRunFollows: cfg.finetuneEpochs > 0 } : {});
  if (pipeline) await pruneAndFinetune(trained, outDir, ctx, plan.finetune, pretrained);
  try {
    await reportCommand(outDir, { out: io.err, err: io.err });
  } catch (e) {
    io.err(`report not written: ${(e as Error).message}\n`);
  }
  return 0;
}

/** Adds `start` to the `svd-coord` program. */
export function registerStartCommand(program: Command, io: CliIo, setCode: SetExitCode): void {
  addStartOptions(program.command('start').description('run the coordinator (and with --spawn K, K local workers)'))
    .addHelpText('after', `\nExamples:\n  svd-coord start --spawn 2 --epochs 3\n  svd-coord start --host 0.0.0.0 --token-file token.txt --tls-cert cert.pem --tls-key key.pem   # then svd-worker --coordinator wss://HOST:${shown('port')} --ca cert.pem --token-file token.txt on each machine`)
    .action(async (opts: StartOptions) => setCode(await startCommand(opts, io)));
}
