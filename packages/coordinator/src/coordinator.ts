/**
 * The coordinator of synchronous data-parallel training: it hands each worker its slice of every
 * global batch, validates and sample-weight-averages the gradients, applies the optimizer and
 * broadcasts the new weights (one encoded frame, the same bytes to every worker). This file is the
 * train loop and the wiring; each other job has its module:
 *   peer-server.ts / peer-session.ts  connections, the bounds before trust, the handshake of one peer
 *   job-scheduler.ts                  which worker computes which slice; re-assignment; outliers
 *   weight-store.ts                   the authoritative weights and their cached broadcast frame
 *   step-metrics.ts                   loss, accuracy and timing aggregation of steps and epochs
 *
 * It never imports TensorFlow.js: parameters are Float32Arrays in manifest (PyTorch
 * named_parameters) order. The single-worker run is the N=1 case of this same code.
 *
 * Faults: a worker that disconnects, stalls past stepTimeoutMs, or sends anything invalid is named
 * in the log, told why (error message) and disconnected; each of its unanswered slices of the
 * current step (or evaluation) goes WHOLE, with a new attempt number, to the least-busy survivor,
 * which computes it as its own sub-batch (from the broadcast BN running statistics). So each sample
 * is used exactly once, with the same BN sub-batches as without the fault. With fewer than
 * minWorkers left, the coordinator waits. A (re)joining worker receives the current weights first.
 *
 * Numbers: sums are float64 (all-reduce.ts). A step whose average gradient or updated parameters
 * are not finite is never applied or checkpointed: the run aborts with DIVERGED, as it does when the
 * scheduler finds that every attempt at a slice failed (non-finite or outlier results).
 */
import { performance } from 'node:perf_hooks';
import {
  EpochSampler,
  type SamplerState,
  SvdTrainError,
  configHash as computeConfigHash,
  createOptimizer,
  lrAt as scheduleLrAt,
  momentumAt,
  sparsityEndStep,
  sparsityStartStep,
  effectiveRanks,
  encodeMessage,
  MAX_TIMER_MS,
  serializeConfig,
  type EvalResultMessage,
  type GradientsMessage,
  type Optimizer,
  type ParamSet,
  type RunConfig,
} from '@svd-train/core';
import { AllReduce } from './all-reduce.js';
import type { CoordinatorOptions, TrainingSummary } from './coordinator-options.js';
import { DatasetServer } from './dataset-server.js';
import { authPolicy } from './handshake.js';
import { JobScheduler, type Answer, type JobMeta, type Task } from './job-scheduler.js';
import { MetricsWriter, type EpochEvent, type EpochMetrics } from './metrics.js';
import { PeerServer } from './peer-server.js';
import type { PeerSession } from './peer-session.js';
import type { LogLevel } from './quiet-log.js';
import { checkGradients } from './round.js';
import { StallDetector } from './stall-detector.js';
import { EpochTotals, evalTotals, stepEvent, stepLine, stepTotals, workerTimings } from './step-metrics.js';
import { WeightStore, firstNonFinite } from './weight-store.js';

export type { LogLevel } from './quiet-log.js';
export type { StepEvent } from './step-metrics.js';
export type { CoordinatorCheckpoint, CoordinatorOptions, TrainingSummary } from './coordinator-options.js';
export { OUTLIER_RATIO, MAX_SLICE_FAULTS } from './job-scheduler.js';

const now = (): number => performance.now();

/**
 * The first checkpoint comes after this many steps (when checkpointEvery is larger), so that a run
 * killed before its first regular checkpoint (step 200 by default) is not lost.
 */
export const EARLY_CHECKPOINT_STEP = 20;
/** Error codes that are numeric faults of a step (count towards divergence) rather than protocol ones. */
const NUMERIC_FAULTS = new Set(['NON_FINITE', 'GRADIENT_OUTLIER']);

export class Coordinator {
  readonly config: RunConfig;
  readonly configHash: string;
  private readonly opts: CoordinatorOptions;
  private readonly weights: WeightStore;
  private readonly server: PeerServer;
  private readonly scheduler: JobScheduler<PeerSession>;
  private readonly stall: StallDetector;
  private readonly metrics: MetricsWriter;
  private waiters: (() => void)[] = [];
  /** Set by requestStop: the training ends after checkpointing (see there). */
  private stop: SvdTrainError | null = null;
  private fatal: SvdTrainError | null = null;
  private closed = false;

  constructor(opts: CoordinatorOptions) {
    this.opts = opts;
    this.config = opts.config;
    this.configHash = computeConfigHash(opts.config);
    const auth = authPolicy(opts.config.host, opts.config.token, opts.config.insecure);
    this.metrics = new MetricsWriter(opts.metricsPath ?? null, (level, msg) => this.log(level, msg));
    const dataServer = opts.dataDir ? new DatasetServer(opts.dataDir, Object.keys(opts.datasetInfo.md5s)) : null;
    this.stall = new StallDetector({
      warnMs: opts.config.stallWarnMs,
      timeoutMs: opts.config.stepTimeoutMs,
      onWarn: (w, what, ms) => this.log('warn', `worker ${this.peerName(w)} is late: no answer to ${what} after ${Math.round(ms)} ms`),
      onTimeout: (w, what, ms) => this.onStallTimeout(w, what, ms),
    });
    const initial = opts.resume ?? opts.from ?? (opts.initialParams ? { params: opts.initialParams, buffers: opts.initialBuffers ?? [] } : null);
    if (opts.resume && opts.resume.configHash !== this.configHash) {
      throw new SvdTrainError(
        'CHECKPOINT_CONFIG_MISMATCH',
        `checkpoint at step ${opts.resume.step} was written with config hash ${opts.resume.configHash}, this run has ${this.configHash}; resume with the same math settings or use --from to fine-tune`,
      );
    }
    if (opts.resume) {
      // The killed run may have logged steps past its last checkpoint; they are trained again now.
      const dropped = this.metrics.truncateAfter(opts.resume.step);
      if (dropped) this.log('info', `metrics.jsonl: dropped ${dropped} line(s) written after the checkpoint at step ${opts.resume.step}; those steps are trained again`);
    }
    const distills = opts.config.distillAlpha > 0;
    if (distills !== Boolean(opts.teacher)) {
      throw new SvdTrainError(
        'CONFIG_INVALID',
        distills
          ? `distillAlpha is ${opts.config.distillAlpha} but no teacher weights were given. Fix: pass --teacher CKPT (svd-coord start loads it).`
          : 'teacher weights were given but distillAlpha is 0. Fix: set --distill-alpha above 0, or drop the teacher.',
      );
    }
    const extra = opts.extraTeachers ?? [];
    if (extra.length !== (distills ? opts.config.extraTeachers.length : 0)) {
      throw new SvdTrainError(
        'CONFIG_INVALID',
        `config.extraTeachers names ${opts.config.extraTeachers.length} further teacher(s) but ${extra.length} were given. Fix: pass one set of weights per entry (svd-coord start loads them from --teacher).`,
      );
    }
    this.weights = new WeightStore(opts.expectedManifest);
    if (initial) this.weights.set(initial.params, initial.buffers, 'coordinator');
    this.server = new PeerServer({
      config: opts.config,
      configHash: this.configHash,
      authRequired: auth.required,
      datasetInfo: opts.datasetInfo,
      dataServer,
      weights: this.weights,
      teacherFrames: opts.teacher ? [opts.teacher, ...extra].map((t, index) => encodeMessage({ type: 'teacher', index, params: t.params, buffers: t.buffers })) : [],
      tls: opts.tls,
      log: (level, msg) => this.log(level, msg),
      onReady: (peer) => this.onPeerReady(peer),
      onResult: (peer, msg) => this.onResult(peer, msg),
      onLeaving: (peer, code, why) => this.onPeerLeaving(peer, code, why),
      onGone: (peer) => this.scheduler.release(peer),
    });
    this.scheduler = new JobScheduler<PeerSession>({
      live: () => this.server.live(),
      minWorkers: opts.config.minWorkers,
      send: (peer, t, meta) => this.sendTask(peer, t, meta),
      dropOutlier: (peer, why) => this.server.drop(peer, 'GRADIENT_OUTLIER', why),
      onFatal: (e) => this.abort(e),
      log: (level, msg) => this.log(level, msg),
      // A worker evaluates maxWorkerBatch samples at a time anyway; as many per request keeps each
      // request far inside the step timeout however large the test set.
      evalSlice: opts.config.maxWorkerBatch,
      now,
    });
  }

  /** Starts listening; resolves with the bound port (config.port 0 picks a free one). */
  listen(): Promise<{ host: string; port: number }> {
    return this.server.listen();
  }

  address(): { host: string; port: number } {
    return this.server.address();
  }

  /** Number of workers past the handshake. */
  get liveWorkers(): number {
    return this.server.live().length;
  }

  /** Sub-batches per step so far (0 before the first step); saved in checkpoints so a resume keeps it. */
  get stepSlices(): number {
    return this.scheduler.slicesPerStep;
  }

  // ------------------------------------------------------------------------------------------
  // Peers: the server's hooks
  // ------------------------------------------------------------------------------------------

  private log(level: LogLevel, msg: string): void {
    this.opts.onLog?.(level, msg);
  }

  private peerName(id: string): string {
    const p = this.server.peer(id);
    return p ? `${p.name} (${p.id})` : id;
  }

  private onPeerReady(peer: PeerSession): void {
    const { backend, device } = peer.engine();
    this.log('info', `worker ${peer.name} (${peer.id}) joined: backend ${backend}, ${device}`);
    this.opts.onWorkerJoin?.({ id: peer.id, name: peer.name, backend, device });
    this.wake();
    this.scheduler.joined(peer);
  }

  private onResult(peer: PeerSession, msg: GradientsMessage | EvalResultMessage): void {
    const { task, step } = this.scheduler.expectedTask(peer, msg);
    if (msg.type === 'gradients') checkGradients(msg, { step, attempt: task.id, n: task.indices.length }, this.weights.requireManifest(), peer.name);
    this.stall.clear(peer.id);
    this.scheduler.complete(peer, msg);
  }

  /**
   * A numeric fault (NaN gradients, a gradient outlier) counts against the slice the peer was
   * computing: if every worker that tries a slice fails it, the run diverged. Counted before the
   * peer is told why, so that the fault that ends the run tells this peer RUN_ABORTED (it exits)
   * rather than NON_FINITE (it would reconnect to a coordinator that is going away).
   */
  private onPeerLeaving(peer: PeerSession, code: string | null, why: string): { code: string | null; why: string } {
    this.stall.clear(peer.id);
    if (code && NUMERIC_FAULTS.has(code) && this.scheduler.countFault(peer, `worker ${peer.name}: ${why}`) && this.fatal) {
      return { code: 'RUN_ABORTED', why: `the coordinator stopped the run: [${this.fatal.code}] ${this.fatal.message}` };
    }
    return { code, why };
  }

  /** The scheduler's `send`: the current weights first if the peer holds another version, then the request. */
  private sendTask(peer: PeerSession, t: Task<PeerSession>, meta: JobMeta): void {
    if (peer.weightsVersion !== this.weights.version) {
      peer.send(this.weights.frame());
      peer.weightsVersion = this.weights.version;
    }
    if (t.kind === 'step') {
      peer.send({ type: 'step', step: meta.step, epoch: meta.epoch, seed: this.config.seed, indices: t.indices, lr: meta.lr, attempt: t.id });
      this.stall.track(peer.id, `step ${meta.step} attempt ${t.id}`);
    } else {
      peer.send({ type: 'eval', evalId: t.id, split: meta.split, indices: t.indices });
      this.stall.track(peer.id, `eval ${t.id} (${t.indices.length} ${meta.split} samples)`);
    }
  }

  private onStallTimeout(workerId: string, what: string, ms: number): void {
    const peer = this.server.peer(workerId);
    if (!peer) return;
    const why = `no answer to ${what} within ${Math.round(ms)} ms (--step-timeout-ms ${this.config.stepTimeoutMs})`;
    if (this.config.stallAction === 'abort') {
      this.abort(new SvdTrainError('PEER_TIMEOUT', `worker ${peer.name} stalled: ${why}; aborting as --stall-action abort says`));
      return;
    }
    // A stall is a peer that did not answer in time, not a malformed round: PEER_TIMEOUT, which the
    // worker treats as retryable (it reconnects), as it did before.
    this.server.drop(peer, 'PEER_TIMEOUT', `stalled: ${why}`);
  }

  /**
   * Stops the training at once, for SIGINT/SIGTERM: the step or evaluation in flight is abandoned
   * (its update was not applied), a checkpoint of every step applied so far is written unless the
   * last one holds them, and start() rejects with INTERRUPTED naming the step. Safe to call twice.
   */
  requestStop(reason: string): void {
    if (this.stop) return;
    this.stop = new SvdTrainError('INTERRUPTED', reason);
    this.scheduler.halt(this.stop);
    this.wake();
  }

  /** Stops the run with `e`: the job in progress is rejected and whoever waits for workers wakes up to it. */
  private abort(e: SvdTrainError): void {
    this.fatal = e;
    this.log('error', e.message);
    this.scheduler.halt(e);
    this.wake();
  }

  private minLive(): number {
    return Math.max(1, this.config.minWorkers);
  }

  /** Resolves once at least `n` workers are ready (and weights are known), or false at `deadline` (ms, `now()` clock). */
  private async waitForWorkers(n: number, deadline = Infinity): Promise<boolean> {
    while (this.server.live().length < n || !this.weights.ready) {
      this.throwIfFatal();
      if (this.closed) throw new SvdTrainError('INTERNAL', 'coordinator closed while waiting for workers');
      const left = deadline - now();
      if (left <= 0) return false;
      let timer: NodeJS.Timeout | undefined;
      await new Promise<void>((r) => {
        this.waiters.push(r);
        if (Number.isFinite(left)) timer = setTimeout(r, Math.min(left, MAX_TIMER_MS));
      });
      clearTimeout(timer);
    }
    return true;
  }

  private throwIfFatal(): void {
    if (this.fatal) throw this.fatal;
    if (this.stop) throw this.stop;
  }

  private wake(): void {
    const w = this.waiters;
    this.waiters = [];
    for (const f of w) f();
  }

  // ------------------------------------------------------------------------------------------
  // Training
  // ------------------------------------------------------------------------------------------

  /** Listens (if not yet), trains for config.epochs, shuts the workers down and resolves with a summary. */
  async start(): Promise<TrainingSummary> {
    const t0 = now();
    await this.listen();
    let summary: TrainingSummary;
    try {
      summary = await this.train(t0);
    } catch (e) {
      // Workers must learn that the run failed: told "training finished" they exited 0 while the
      // coordinator was dying with an error. They get RUN_ABORTED naming the cause, and exit non-zero.
      const err = e instanceof SvdTrainError ? e : new SvdTrainError('INTERNAL', String((e as Error)?.message ?? e));
      await this.close(`coordinator stopped with ${err.code}`, err);
      throw e;
    }
    await this.close(summary.alreadyFinished ? 'the run was already finished' : 'training finished', undefined, this.opts.nextRunFollows === true);
    return summary;
  }

  private async train(t0: number): Promise<TrainingSummary> {
    const cfg = this.config;
    const resume = this.opts.resume;
    const sampler = resume ? EpochSampler.fromState(resume.sampler) : new EpochSampler({ size: this.opts.datasetInfo.trainCount, batch: cfg.batch, seed: cfg.seed });
    const spe = sampler.stepsPerEpoch;
    const totalSteps = spe * cfg.epochs;
    const lrAt = this.opts.lrAt ?? ((step: number, stepsPerEpoch: number) => scheduleLrAt(cfg, step, stepsPerEpoch));
    const summary = (extra: Partial<TrainingSummary> = {}): TrainingSummary => ({
      steps: sampler.state().step,
      epochs: cfg.epochs,
      finalTestAcc: null,
      finalTrainAcc: null,
      params: this.weights.paramTensors(),
      buffers: this.weights.bufferTensors(),
      wallMs: now() - t0,
      ...extra,
    });
    if (resume) {
      this.weights.advance(resume.step);
      const slices = Number(resume.metrics?.slicesPerStep ?? 0);
      if (Number.isInteger(slices) && slices > 0) this.scheduler.restoreSlicesPerStep(slices);
      if (sampler.state().step >= totalSteps) {
        // Nothing left to train: waiting for workers here would wait forever on a finished run.
        this.log('info', `the checkpoint at step ${resume.step} already completes the run's ${totalSteps} steps (${cfg.epochs} epochs); nothing to resume`);
        return summary({ alreadyFinished: true });
      }
      this.log('info', `resuming at step ${resume.step} (epoch ${resume.epoch})`);
    }

    if ((cfg.sparsityStart > 0 || cfg.sparsityEnd < 1) && cfg.lambdaS > 0) {
      const first = sparsityStartStep(cfg, spe);
      const last = Math.min(sparsityEndStep(cfg, spe), totalSteps) - 1;
      const flags = `--sparsity-start ${cfg.sparsityStart} --sparsity-end ${cfg.sparsityEnd}`;
      if (last < first) {
        this.log('warn', `${flags} leave the sparsity term no step of this ${totalSteps}-step run: it trains without it`);
      } else {
        const epochs = `epochs ${Math.floor(first / spe) + 1} to ${Math.floor(last / spe) + 1}`;
        this.log('info', `sparsity term (λ_s ${cfg.lambdaS}) on steps ${first} to ${last} of 0 to ${totalSteps - 1}, ${epochs} (${flags})`);
      }
    }
    const expect = Math.max(this.minLive(), this.opts.expectWorkers ?? 0);
    this.log('info', `waiting for ${expect} worker(s)`);
    if (expect > this.minLive() && !(await this.waitForWorkers(expect, now() + cfg.handshakeTimeoutMs))) {
      this.log('warn', `${this.liveWorkers} of ${expect} expected worker(s) joined within ${cfg.handshakeTimeoutMs} ms; starting with those (at least --min-workers ${this.minLive()})`);
    }
    await this.waitForWorkers(this.minLive());
    const manifest = this.weights.requireManifest();
    const names = manifest.params.map((s) => s.name);
    const optimizer: Optimizer = createOptimizer(cfg, names, { noDecay: this.opts.noDecay ? new Set(this.opts.noDecay) : undefined });
    if (resume) optimizer.loadState(resume.optimizer);
    const reducer = new AllReduce(manifest.params, manifest.buffers);

    const epochTotals = new EpochTotals(now);
    if (resume && sampler.state().step % spe !== 0) {
      // Mid-epoch: the epoch's train loss and accuracy go on from the checkpoint's totals.
      const why = epochTotals.restore(resume.metrics?.epochTotals, (sampler.state().step % spe) * cfg.batch);
      if (why) this.log('warn', `${why}; epoch ${sampler.currentEpoch + 1}'s train loss and accuracy cover only the steps after the resume`);
    }
    let lastTest: number | null = null;
    let lastTrain: number | null = null;
    let lastCkptStep = resume?.step ?? -1;

    // The sampler as it was before the step in flight, whose update is not applied yet (null between
    // steps): what a checkpoint written on a stop request holds.
    let beforeStep: SamplerState | null = null;
    try {
      while (sampler.state().step < totalSteps) {
        this.throwIfFatal();
        beforeStep = sampler.state();
        const b = sampler.nextBatch();
        const lr = lrAt(b.step, spe);
        const momentum = momentumAt(cfg, b.step, spe);
        const stepT0 = now();
        const answers = await this.runStep(b.indices, { step: b.step, epoch: b.epoch, lr, split: 'train' });
        const tr = now();
        const contribs = answers.map((a) => a.result).filter((g) => g.n > 0);
        const red = reducer.reduce(contribs);
        if (red.nonFinite) this.diverged(b.step, lr, `the averaged ${red.nonFinite.name}[${red.nonFinite.index}] is ${red.nonFinite.value}`, lastCkptStep);
        const gradSet: ParamSet = new Map(names.map((n, i) => [n, red.grads[i]]));
        optimizer.step(this.weights.params, gradSet, lr, momentum);
        // The update itself can overflow (finite gradients, huge lr). Those parameters must never be
        // broadcast or checkpointed: the run stops here and its last checkpoint stays the good one.
        const badParam = firstNonFinite(this.weights.params);
        if (badParam) this.diverged(b.step, lr, `after the optimizer step, parameter ${badParam.name}[${badParam.index}] is ${badParam.value}`, lastCkptStep);
        this.weights.setBuffers(red.buffers);
        this.weights.advance(b.step + 1);
        beforeStep = null;
        const reduceMs = now() - tr;
        const stepMs = now() - stepT0;

        const totals = stepTotals(contribs);
        epochTotals.add(totals);
        const line = stepLine({ step: b.step, epoch: b.epoch, lr, momentum }, totals, { stepMs, reduceMs }, workerTimings(answers));
        this.metrics.write(line);
        this.opts.onStep?.(stepEvent({ stepInEpoch: b.stepInEpoch, stepsPerEpoch: spe, totalSteps }, line, this.liveWorkers, answers));

        const epochEnd = b.stepInEpoch === spe - 1;
        if (epochEnd) {
          const e: EpochEvent = {
            epoch: b.epoch,
            step: b.step + 1,
            ...epochTotals.summary(),
            effectiveRanks: effectiveRanks([...this.weights.params].map(([name, data]) => ({ name, data })), 0.01),
          };
          lastTrain = e.trainAcc;
          // evalEvery 0 turns evaluation off; otherwise every evalEvery epochs and after the last one.
          if (cfg.evalEvery > 0 && ((b.epoch + 1) % cfg.evalEvery === 0 || b.step + 1 === totalSteps)) {
            const t0 = now();
            const r = await this.evaluate('test');
            if (r) {
              e.testAcc = r.acc;
              e.testLoss = r.loss;
              e.evalMs = now() - t0;
              lastTest = r.acc;
            }
          }
          const em: EpochMetrics = { kind: 'epoch', ...e, time: new Date().toISOString() };
          this.metrics.write(em);
          this.opts.onEpoch?.(e);
          this.log('info', `epoch ${b.epoch + 1}/${cfg.epochs}: train loss ${e.trainLoss.toFixed(4)} acc ${(e.trainAcc * 100).toFixed(2)}%${e.testAcc !== undefined ? `, test acc ${(e.testAcc * 100).toFixed(2)}%` : ''}`);
          epochTotals.reset();
        }
        const early = cfg.checkpointEvery > EARLY_CHECKPOINT_STEP && b.step + 1 === EARLY_CHECKPOINT_STEP;
        if (epochEnd || early || (cfg.checkpointEvery > 0 && (b.step + 1) % cfg.checkpointEvery === 0)) {
          await this.checkpoint(b.step + 1, sampler, optimizer, epochTotals);
          lastCkptStep = b.step + 1;
        }
      }
    } catch (e) {
      if (!this.stop || e !== this.stop) throw e;
      const at = beforeStep ? EpochSampler.fromState(beforeStep) : sampler;
      const step = at.state().step;
      const kept = step === lastCkptStep || step === 0;
      if (!kept) await this.checkpoint(step, at, optimizer, epochTotals);
      const where = step === 0 ? 'nothing was trained yet' : kept ? `the last checkpoint (step ${step}) holds every step applied` : `checkpoint written at step ${step}, every step applied`;
      throw new SvdTrainError('INTERRUPTED', `${this.stop.message}: stopped at step ${step} of ${totalSteps}; ${where}. Fix: the same command with --resume goes on from there.`);
    }
    if (lastCkptStep !== sampler.state().step) await this.checkpoint(sampler.state().step, sampler, optimizer, epochTotals);
    return summary({ finalTestAcc: lastTest, finalTrainAcc: lastTrain });
  }

  private async runStep(indices: Int32Array, meta: JobMeta): Promise<Answer<PeerSession, GradientsMessage>[]> {
    await this.waitForWorkers(this.minLive());
    return this.scheduler.runStep(indices, meta);
  }

  /** Stops the run: a step whose numbers are not finite is never applied (see the module header). */
  private diverged(step: number, lr: number, what: string, lastCkptStep: number): never {
    this.fatal = new SvdTrainError(
      'DIVERGED',
      `step ${step} (lr ${lr.toExponential(2)}): ${what}; expected finite numbers. The step was not applied and not checkpointed` +
        `${lastCkptStep > 0 ? ` (the last checkpoint holds the ${lastCkptStep} steps before it)` : ''}. ` +
        'Fix: lower --lr (or --lambda-o/--lambda-s) and start again, or fine-tune from the last checkpoint with --from CKPT and a lower --lr.',
      { step },
    );
    this.scheduler.halt(this.fatal);
    throw this.fatal;
  }

  /** Evaluates the current weights on a split (test: datasetInfo.testCount samples), scattered over the workers. */
  async evaluate(split: 'train' | 'test'): Promise<{ acc: number; loss: number; n: number } | null> {
    const count = split === 'test' ? this.opts.datasetInfo.testCount : this.opts.datasetInfo.trainCount;
    if (count === 0) return null;
    const indices = new Int32Array(count);
    for (let i = 0; i < count; i++) indices[i] = i;
    await this.waitForWorkers(this.minLive());
    const answers = await this.scheduler.runEval(indices, { step: this.weights.version, epoch: 0, lr: 0, split });
    return evalTotals(answers.map((a) => a.result));
  }

  private async checkpoint(step: number, sampler: EpochSampler, optimizer: Optimizer, epochTotals: EpochTotals): Promise<void> {
    if (!this.opts.saveCheckpoint) return;
    await this.opts.saveCheckpoint({
      version: 1,
      config: serializeConfig(this.config),
      configHash: this.configHash,
      step,
      epoch: sampler.currentEpoch,
      params: this.weights.paramTensors(),
      buffers: this.weights.bufferTensors(),
      optimizer: optimizer.state(),
      sampler: sampler.state(),
      // How many BN sub-batches a step has: a resumed run keeps it, so it equals the uninterrupted one;
      // and the epoch's totals so far, so a resume mid-epoch reports the whole epoch.
      metrics: { slicesPerStep: this.scheduler.slicesPerStep, epochTotals: epochTotals.state() },
    });
  }

  /**
   * Tells every worker to exit and stops the server. Safe to call twice. With `failure`, workers get
   * a RUN_ABORTED error naming it instead of a shutdown, so they exit non-zero too. Never waits on a
   * peer (see PeerServer.close). With `reconnect` (and no failure) they are told that another run
   * follows on this address, and reconnect to it.
   */
  async close(reason = 'coordinator shutting down', failure?: SvdTrainError, reconnect = false): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.stall.clearAll();
    this.wake();
    await this.server.close(reason, failure, reconnect);
  }
}
