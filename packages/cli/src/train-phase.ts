/**
 * One training run of `svd-coord start`: the coordinator on a resolved config, the local workers
 * of --spawn, checkpoints, metrics and progress output. `start` runs it once, and the pipeline a
 * second time to fine-tune the pruned model.
 */
import { existsSync, mkdirSync, renameSync, statSync } from 'node:fs';
import { join, resolve } from 'node:path';
import {
  DEFAULTS,
  EpochSampler,
  ProgressBar,
  SvdTrainError,
  archLabel,
  configHash,
  latestCheckpoint,
  listCheckpoints,
  parseConfig,
  replaceFile,
  saveCheckpoint,
  serializeConfig,
  teachersOf,
  stepsPerEpoch as stepsInEpoch,
  type Checkpoint,
  type DatasetInfo,
  type RunConfig,
  type TeacherSpec,
} from '@svd-train/core';
import { buildResNetForConfig, buildTeacherForConfig, getBuffers, getParameters, noDecayParameterNames } from '@svd-train/layers';
import { Coordinator, type EpochEvent, type LogLevel, type StepEvent } from '@svd-train/coordinator';
import { usageError } from './cli-errors.js';
import type { CliIo } from './cli-io.js';
import { checkpointRanks, loadCheckpointFile } from './checkpoint-model.js';
import type { readTlsFiles } from './secrets.js';
import { spawnWorkers } from './spawn-workers.js';

/** Shared by both phases of `start`: where the data is and who prints. */
export interface StartContext {
  dataDir: string;
  info: DatasetInfo;
  io: CliIo;
  /** --tls-cert/--tls-key read, and the certificate's path (spawned workers trust exactly it). */
  tls?: { tls: NonNullable<ReturnType<typeof readTlsFiles>>; certPath: string };
}

/**
 * Refuses a --from checkpoint whose tensors do not fit the model the config builds (another
 * --model or --decomposition, or --ranks other than the checkpoint's): workers build from the
 * config, so they could never take it.
 */
function checkShapes(ckpt: Checkpoint, want: { name: string; shape: number[] }[], flag: '--from' | '--teacher', path: string): void {
  const got = new Map(ckpt.params.map((t) => [t.name, t.shape]));
  for (const w of want) {
    const g = got.get(w.name);
    if (!g || g.join(',') !== w.shape.join(',')) {
      throw new SvdTrainError(
        'CHECKPOINT_CONFIG_MISMATCH',
        `${flag} ${path}: parameter ${w.name} has shape ${g ? `[${g.join(', ')}]` : 'nothing'} in the checkpoint, the ${flag === '--teacher' ? 'teacher' : 'model'} of this config has [${w.shape.join(', ')}]. ` +
          (flag === '--teacher'
            ? 'Fix: pass a checkpoint written by svd-coord start, prune or average (any ResNet of this data set, full rank or pruned); its model comes from its own config.'
            : 'Fix: pass the same --model and --decomposition as the checkpoint, and no --ranks (the checkpoint\'s own ranks are then used).'),
      );
    }
  }
}

type TeacherWeights = { params: Checkpoint['params']; buffers: Checkpoint['buffers'] };

/**
 * One teacher of a distilling run: its checkpoint read, its architecture (model, svd, decomposition)
 * filled in where it differs from the run's, its per-layer ranks (so every worker builds its
 * shapes), and its tensors checked against that model.
 */
function loadOneTeacher(cfg: RunConfig, t: TeacherSpec, io: CliIo): { fields: TeacherSpec; weights: TeacherWeights } {
  const path = t.teacher;
  const ckpt = loadCheckpointFile(path);
  if (ckpt.buffers.length === 0) {
    throw new SvdTrainError('CHECKPOINT_CONFIG_MISMATCH', `--teacher ${path}: the checkpoint has no batch-norm statistics, and the teacher runs in eval mode. Fix: pass a checkpoint written by svd-coord start or prune.`);
  }
  const own = parseConfig(ckpt.config);
  if (t.teacherArch && archLabel(t.teacherArch) !== archLabel(own)) {
    throw new SvdTrainError(
      'CHECKPOINT_CONFIG_MISMATCH',
      `--teacher ${path} is a ${archLabel(own)} checkpoint, but the config's teacherArch says ${archLabel(t.teacherArch)}. Fix: drop teacherArch from the config; it is filled in from the teacher checkpoint.`,
    );
  }
  const sameArch = archLabel(own) === archLabel(cfg);
  const teacherArch = sameArch ? null : { model: own.model, svd: own.svd, decomposition: own.decomposition };
  const teacherRanks = t.teacherRanks ?? checkpointRanks(ckpt, { ...cfg, ...teacherArch });
  const model = buildTeacherForConfig({ ...cfg, teacherRanks, teacherArch });
  try {
    checkShapes(ckpt, getParameters(model), '--teacher', path);
  } finally {
    model.dispose();
  }
  const sv = teacherRanks ? `${Object.values(teacherRanks).reduce((a, b) => a + b, 0)} singular values in ${Object.keys(teacherRanks).length} pruned layers` : 'full rank';
  const arch = teacherArch ? `${archLabel(teacherArch)}, ` : '';
  io.err(`distilling from --teacher ${path} (${arch}step ${ckpt.step}, ${sv})\n`);
  return { fields: { teacher: path, teacherRanks, teacherArch }, weights: { params: ckpt.params, buffers: ckpt.buffers } };
}

/**
 * The teachers of a distilling run (config.distillAlpha > 0): config.teacher and each of
 * config.extraTeachers loaded (`loadOneTeacher`), their ranks and architectures filled into the
 * config. Returns the config and the weights the coordinator sends, in that order.
 */
export function loadTeacher(cfg: RunConfig, io: CliIo): { cfg: RunConfig; teacher: TeacherWeights; extraTeachers: TeacherWeights[] } {
  const specs = teachersOf(cfg);
  if (specs.length === 0) throw usageError(`--distill-alpha ${cfg.distillAlpha} needs a teacher. Fix: pass --teacher CKPT (e.g. the trained full-rank model's checkpoint).`);
  const [first, ...more] = specs.map((t) => loadOneTeacher(cfg, t, io));
  const n = 1 + more.length;
  io.err(
    `distillation: data term (1 − ${cfg.distillAlpha})·CE + ${cfg.distillAlpha}·T²·KL at T ${cfg.distillTemperature}` +
      (n > 1 ? `, against the mean softened output of ${n} teachers\n` : '\n'),
  );
  return {
    cfg: { ...cfg, ...first.fields, extraTeachers: more.map((m) => m.fields) },
    teacher: first.weights,
    extraTeachers: more.map((m) => m.weights),
  };
}

/** `cfg` with distillation off (its other fields back at their defaults). */
export function withoutDistillation(cfg: RunConfig): RunConfig {
  return { ...cfg, distillAlpha: 0, distillTemperature: DEFAULTS.distillTemperature, teacher: null, teacherRanks: null, teacherArch: null, extraTeachers: [], distillTraining: false };
}

/**
 * Whether a phase of a resumed run (`cfg.resume`) resumes in `runDir`: once it has a checkpoint
 * there. Before its first one it starts afresh (its stray metrics moved aside by claimOutDir).
 */
export function resumesIn(cfg: RunConfig, runDir: string): boolean {
  return cfg.resume && listCheckpoints(join(runDir, 'checkpoints')).length > 0;
}

/** Which run a phase is, for its messages: `start` alone, or one phase of the pipeline. */
export interface PhaseInfo {
  /** What comes after it, said when --resume finds it finished (e.g. 'going on with the pruning'). */
  next?: string;
  /** How to start this phase afresh when --resume finds nothing to resume (default: drop --resume). */
  freshFix?: string;
  /** Another phase follows on the same port (the pipeline's fine-tuning): workers reconnect to it. */
  nextRunFollows?: boolean;
}

/**
 * A fresh (not --resume) run must not write into a folder that holds another run's checkpoints:
 * the two runs' checkpoints and metrics would mix, and the latest checkpoint could be the old
 * run's. A metrics.jsonl without any checkpoint (a run stopped before its first one) describes
 * nothing that can be continued: it is moved aside, not mixed in, and not deleted.
 */
export function claimOutDir(outDir: string, ckptDir: string, io: CliIo): void {
  const old = listCheckpoints(ckptDir);
  if (old.length > 0) {
    throw usageError(
      `--out ${outDir} already holds a run: ${old.length} checkpoint(s) in ${ckptDir}, the latest at step ${old[0].step}. ` +
        'A fresh start there would mix the two runs\' checkpoints and metrics. Fix: pass --resume to continue that run, choose another --out, or delete the folder first.',
    );
  }
  const metrics = join(outDir, 'metrics.jsonl');
  if (existsSync(metrics) && statSync(metrics).size > 0) {
    const aside = `${metrics}.${new Date().toISOString().replace(/[:.]/g, '-')}.old`;
    renameSync(metrics, aside);
    io.err(`${metrics} is from a run that wrote no checkpoint; moved it to ${aside} and starting afresh\n`);
  }
}

/**
 * One training run of `start` (the whole run, or the fine-tuning phase of the pipeline): the
 * coordinator on `cfg`, spawned workers, checkpoints and metrics in `cfg.out`. Returns the config
 * it trained (with the --from checkpoint's ranks filled in).
 */
export async function trainPhase(startCfg: RunConfig, ctx: StartContext, phase: PhaseInfo = {}): Promise<RunConfig> {
  let cfg = startCfg;
  const { io, info } = ctx;
  const data = { dir: ctx.dataDir };
  const outDir = resolve(cfg.out);
  let fromCkpt: Checkpoint | undefined;
  if (cfg.from) {
    // Fine-tuning (also when resuming a fine-tuning run): the model takes the checkpoint's
    // per-layer ranks unless the user gave some, so a pruned checkpoint builds its smaller
    // shapes here and, through the config, on every worker. They are part of the config hash.
    fromCkpt = loadCheckpointFile(cfg.from);
    const fromCfg = parseConfig(fromCkpt.config);
    if (cfg.svd && !fromCfg.svd) {
      throw usageError(
        `--from ${cfg.from} holds a plain model (${archLabel(fromCfg)}); this run trains ${archLabel(cfg)}. ` +
          `Fix: first write its weights as SVD factors with \`svd-coord decompose ${cfg.from} --decomposition ${cfg.decomposition} --out NAME.svdckpt\`, then pass --from NAME.svdckpt.`,
      );
    }
    if (cfg.ranks === null) {
      const ranks = checkpointRanks(fromCkpt, cfg);
      if (ranks) {
        cfg = { ...cfg, ranks };
        io.err(`--from ${cfg.from}: per-layer ranks of the checkpoint (${Object.values(ranks).reduce((a, b) => a + b, 0)} singular values in ${Object.keys(ranks).length} SVD layers)\n`);
      }
    }
  }
  let teacher: ReturnType<typeof loadTeacher>['teacher'] | undefined;
  let extraTeachers: ReturnType<typeof loadTeacher>['extraTeachers'] = [];
  if (cfg.distillAlpha > 0) ({ cfg, teacher, extraTeachers } = loadTeacher(cfg, io));
  const hash = configHash(cfg);
  const ckptDir = join(outDir, 'checkpoints');
  let resume: Checkpoint | undefined;
  let from: Checkpoint | undefined;
  if (cfg.resume) {
    const latest = latestCheckpoint(ckptDir, { configHash: hash, onWarning: (m) => io.err(`warning: ${m}\n`) });
    if (!latest) throw usageError(`--resume: no valid checkpoint in ${ckptDir}. Fix: ${phase.freshFix ?? 'drop --resume to start fresh'}, or point --out at the run to continue.`);
    resume = latest.checkpoint;
    const total = EpochSampler.fromState(resume.sampler).stepsPerEpoch * cfg.epochs;
    if (resume.step >= total) {
      // Nothing to train: starting the server would wait for workers forever. config.json still
      // takes this start's settings: the hash matched, so only what follows the phase (the
      // pruning's options, ports, paths) can differ, and the folder should say what was run last.
      writeRunConfig(outDir, cfg, hash);
      if (phase.next) {
        io.err(`--resume: ${outDir} already finished this phase (${latest.path}, step ${resume.step} of ${total}); ${phase.next}\n`);
        return cfg;
      }
      io.err(
        `--resume: the run in ${outDir} already finished: ${latest.path} is at step ${resume.step} of ${total} (${cfg.epochs} epochs); nothing to do. ` +
          `Fix: to train longer, fine-tune from it with \`svd-coord start --from ${latest.path} --epochs N --out NEW_DIR\`; to evaluate it, \`svd-coord eval ${latest.path}\`.\n`,
      );
      return cfg;
    }
    io.err(`resuming from ${latest.path} (step ${resume.step}, epoch ${resume.epoch})\n`);
  } else {
    claimOutDir(outDir, ckptDir, io);
  }
  if (!resume && fromCkpt) {
    // Weights and BN statistics only: the optimizer, schedule, sampler and step count start fresh.
    from = fromCkpt;
    io.err(`starting from the weights of ${cfg.from} (step ${from.step}), with a fresh optimizer and schedule\n`);
  }
  // The model is built even when resuming: its manifest and BN parameter names are authoritative.
  const model = buildResNetForConfig(cfg);
  if (from) checkShapes(from, getParameters(model), '--from', cfg.from!);
  try {
    mkdirSync(ckptDir, { recursive: true });
    writeRunConfig(outDir, cfg, hash);
  } catch (e) {
    const errno = (e as NodeJS.ErrnoException | null)?.code;
    if (typeof errno !== 'string') throw e;
    throw new SvdTrainError('CHECKPOINT_WRITE_FAILED', `cannot write the run folder ${outDir} (${errno}: ${(e as Error).message}); nothing was trained. Fix: pass an --out on a writable disk with free space.`, { path: outDir, errno }, { cause: e });
  }

  const tty = Boolean(process.stderr.isTTY);
  let bar: ProgressBar | null = null;
  let stepsPerEpoch: number | null = null;
  let barDrawn = false;
  const newBar = (epoch: number) =>
    new ProgressBar({ label: `epoch ${epoch + 1}/${cfg.epochs}`, total: stepsPerEpoch ?? stepsInEpoch(info.trainCount, cfg.batch), unit: 'steps' });
  const coord = new Coordinator({
    config: cfg,
    datasetInfo: info,
    dataDir: data.dir,
    initialParams: getParameters(model),
    initialBuffers: getBuffers(model),
    ...(resume ? { resume } : {}),
    ...(from ? { from: { params: from.params, buffers: from.buffers } } : {}),
    ...(teacher ? { teacher, extraTeachers } : {}),
    noDecay: noDecayParameterNames(model),
    expectWorkers: cfg.spawn,
    ...(phase.nextRunFollows ? { nextRunFollows: true } : {}),
    ...(ctx.tls ? { tls: ctx.tls.tls } : {}),
    saveCheckpoint: (c) => void saveCheckpoint(ckptDir, c, { keep: cfg.keepCheckpoints }),
    metricsPath: join(outDir, 'metrics.jsonl'),
    onLog: (level: LogLevel, line: string) => {
      if (level === 'debug') return;
      // End a half-drawn bar line first, so the log line starts at column 0.
      if (barDrawn) io.err('\n');
      barDrawn = false;
      io.err(`${level === 'info' ? '' : `${level}: `}${line}\n`);
    },
    onStep: (s: StepEvent) => {
      const note = `${Math.round(s.imgPerSec)} img/s loss ${s.loss.ce.toFixed(3)} acc ${(100 * s.trainAcc).toFixed(1)}%`;
      if (tty) {
        bar ??= newBar(s.epoch);
        bar.update(s.stepInEpoch + 1, note);
        barDrawn = s.stepInEpoch + 1 < s.stepsPerEpoch;
      } else if (s.step % 10 === 0 || s.stepInEpoch === s.stepsPerEpoch - 1) {
        io.err(`step ${s.step + 1}/${s.totalSteps} epoch ${s.epoch + 1} ${note} lr ${s.lr.toExponential(2)} workers ${s.workers}\n`);
      }
      stepsPerEpoch = s.stepsPerEpoch;
    },
    // The coordinator logs the epoch line itself (onLog); here the bar of the next epoch starts,
    // so its rate and ETA count from the epoch's start rather than from its first step's end.
    onEpoch: (e: EpochEvent) => {
      bar?.done();
      bar = tty && e.epoch + 1 < cfg.epochs ? newBar(e.epoch + 1) : null;
    },
    onWorkerJoin: () => {
      if (tty && !bar && stepsPerEpoch === null) bar = newBar(resume?.epoch ?? 0);
    },
  });
  let workers: ReturnType<typeof spawnWorkers> | null = null;
  // Set by the workers' exit callback. A property, not a `let`: TypeScript would narrow a local
  // initialised to null to null for good, as it cannot see the callback assign it.
  const failure: { fatal?: SvdTrainError } = {};
  let stopping = false;
  // The first SIGINT/SIGTERM stops the training and checkpoints every step applied (start() then
  // rejects with INTERRUPTED, exit 130); a second one, if that hangs, exits at once. One within a
  // second of the first is the same Ctrl-C: `pnpm svd-coord` forwards the terminal's SIGINT to this
  // process as a SIGTERM, on top of the SIGINT it gets itself.
  let signalled = false;
  let firstSignalAt = 0;
  const onSignal = (sig: NodeJS.Signals) => {
    stopping = true;
    if (signalled) {
      if (Date.now() - firstSignalAt < SAME_SIGNAL_MS) return;
      io.err(`received ${sig} again; exiting without waiting for the checkpoint\n`);
      void Promise.all([coord.close(`coordinator got ${sig}`), workers?.killAll()]).finally(() => process.exit(130));
      return;
    }
    signalled = true;
    firstSignalAt = Date.now();
    io.err(`received ${sig}; stopping and checkpointing the steps trained (${sig} again exits at once)\n`);
    coord.requestStop(`received ${sig}`);
  };
  process.on('SIGINT', onSignal);
  process.on('SIGTERM', onSignal);
  try {
    const { port } = await coord.listen();
    if (cfg.spawn > 0) {
      let failed = 0;
      workers = spawnWorkers(cfg.spawn, {
        port,
        backend: cfg.backend,
        threads: cfg.threads,
        token: cfg.token,
        // Spawned workers verify the certificate against itself, so it must name 127.0.0.1.
        ...(ctx.tls ? { tlsCa: ctx.tls.certPath } : {}),
        data: data.dir,
        write: io.err,
        // A spawned worker that exits with an error was refused or crashed; if all of them did,
        // nobody is left to train and waiting would hang forever.
        onExit: (i, code, signal) => {
          if (code === 0 || stopping) return;
          io.err(`worker w${i} exited (${code ?? signal})\n`);
          if (++failed === cfg.spawn) {
            // Not BACKEND_UNAVAILABLE: the workers may have died of anything (a crash, a refusal),
            // and this is no usage error, so it exits 1, not 2.
            failure.fatal = new SvdTrainError(
              'WORKERS_FAILED',
              `all ${cfg.spawn} spawned worker(s) exited with an error (see their [wN] lines above); stopping. Fix: read the first [wN] error; if it names the engine, try --backend wasm or cpu.`,
            );
            void coord.close('all spawned workers failed');
          }
        },
      });
    }
    const summary = await coord.start().catch((e: unknown) => {
      if (failure.fatal) throw failure.fatal;
      throw e;
    });
    if (failure.fatal) throw failure.fatal;
    // A signal that came as the training ended found nothing left to stop: the next phase must not start.
    if (signalled) {
      throw new SvdTrainError('INTERRUPTED', `stopped as the training ended: its ${summary.steps} steps are checkpointed. Fix: the same command with --resume goes on with what follows.`);
    }
    const acc = summary.finalTestAcc !== null ? `, test accuracy ${(100 * summary.finalTestAcc).toFixed(2)}%` : '';
    io.err(`training finished: ${summary.steps} steps in ${(summary.wallMs / 1000).toFixed(1)} s${acc}\n`);
  } finally {
    stopping = true;
    await workers?.killAll();
    // After a signal the run ends with INTERRUPTED, and the handler stays until the process exits:
    // a stop that finishes within the echo's second (a wrapper's forwarded copy of the same Ctrl-C)
    // must not leave that echo to kill the process by signal instead of the exit code 130.
    if (!signalled) {
      process.removeListener('SIGINT', onSignal);
      process.removeListener('SIGTERM', onSignal);
    }
    // The pipeline runs a second phase in this process: free this one's initial weights.
    model.dispose();
  }
  return cfg;
}

/** Signals this close after the first are its echo (a wrapper forwarding it), not a second Ctrl-C. */
const SAME_SIGNAL_MS = 1000;

/** <outDir>/config.json: the run's config as this start resolved it, with its hash. */
function writeRunConfig(outDir: string, cfg: RunConfig, hash: string): void {
  replaceFile(join(outDir, 'config.json'), JSON.stringify({ ...serializeConfig(cfg), configHash: hash }, null, 2) + '\n');
}
