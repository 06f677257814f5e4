/**
 * Which worker computes which slice of a job (a training step or an evaluation), and what happens
 * to a slice whose worker leaves, stalls or answers nonsense. No sockets: the coordinator tells the
 * scheduler who is live, and the scheduler calls `send` when a worker should start a task.
 *
 * Slices: a step is split into `slicesPerStep` contiguous sub-batches: the number of live workers
 * at the first step, raised when more are live at a later step, never lowered (batch norm
 * normalizes each slice with its own statistics, so the slicing is part of the math). The slices go
 * round-robin over the live workers in join order; a worker computes its slices one at a time.
 * Evaluation has no batch statistics and is split over the live workers, in slices of at most
 * `evalSlice` samples, so that no one request runs past the step timeout (a whole test set on one
 * slow worker did, and was dropped and re-sent whole, forever).
 *
 * Faults: a slice whose worker leaves goes WHOLE, under a new attempt id, to the least-busy live
 * worker (first in join order on ties), or is parked until at least `minWorkers` are live. Before a
 * step is done, a slice whose gradient norm is more than OUTLIER_RATIO times the median of the other
 * workers' slices of comparable size marks its worker as faulty: the worker is dropped and every
 * slice it answered is recomputed elsewhere. A slice that fails MAX_SLICE_FAULTS times, or
 * MAX_SLICE_FAULTS failures with no good slice at all, is divergence: `onFatal` gets DIVERGED.
 */
import { performance } from 'node:perf_hooks';
import { SvdTrainError, splitBatch, type EvalResultMessage, type GradientsMessage } from '@svd-train/core';
import { l2Norm } from './all-reduce.js';

/** A gradient this many times larger (L2 norm) than the median of the other workers' is a fault. */
export const OUTLIER_RATIO = 1e3;
/** Failures of one slice of a step (every worker that tried it) after which the run has diverged. */
export const MAX_SLICE_FAULTS = 3;

export type JobKind = 'step' | 'eval';

/** What a job computes: the step (or, for evaluation, the weights version), its epoch and lr, and the split. */
export interface JobMeta {
  step: number;
  epoch: number;
  lr: number;
  split: 'train' | 'test';
}

interface TaskBase<W> {
  /** Unique id: the attempt of a step slice, the evalId of an eval slice. */
  id: number;
  /** Position of the slice in the job's index list (reduce order). */
  offset: number;
  indices: Int32Array;
  /** Who computes it; null for an empty slice, which needs no worker. */
  worker: W | null;
  sentAt: number;
  /** Milliseconds from sending the task to its answer. */
  rttMs: number;
}

export interface StepTask<W> extends TaskBase<W> {
  kind: 'step';
  result: GradientsMessage | null;
  /** L2 norm of the result's gradients (for outlier attribution). */
  norm: number;
}

export interface EvalTask<W> extends TaskBase<W> {
  kind: 'eval';
  result: EvalResultMessage | null;
}

export type Task<W> = StepTask<W> | EvalTask<W>;

/** One answered slice of a finished job, in index-list order. */
export interface Answer<W, R> {
  /** Null for an empty slice (no samples, no worker). */
  worker: W | null;
  indices: Int32Array;
  rttMs: number;
  result: R;
}

interface Job<W> {
  kind: JobKind;
  meta: JobMeta;
  tasks: Task<W>[];
  /** Tasks parked while fewer than minWorkers are live. */
  unassigned: Task<W>[];
  resolve: (tasks: Task<W>[]) => void;
  reject: (e: Error) => void;
  /** Numeric faults so far (non-finite or outlier results), per slice offset and in total, with why. */
  faultsBySlice: Map<number, number>;
  faults: string[];
}

/** Outstanding work of one worker: the task it computes and the ones waiting behind it. */
interface Load<W> {
  current: Task<W> | null;
  queue: Task<W>[];
}

export interface JobSchedulerOptions<W> {
  /** The workers past the handshake, in join order. */
  live: () => readonly W[];
  /** Fewer live workers than this park re-assigned slices until more join. */
  minWorkers: number;
  /** `w` should compute `t` now (the coordinator sends the weights if needed and the request). */
  send: (w: W, t: Task<W>, meta: JobMeta) => void;
  /** `w` sent an outlier gradient: disconnect it (the scheduler recomputes its slices). */
  dropOutlier: (w: W, why: string) => void;
  /** The current step cannot succeed (DIVERGED); the job is already rejected with it. */
  onFatal: (e: SvdTrainError) => void;
  log?: (level: 'info' | 'warn', msg: string) => void;
  /** Most samples in one evaluation slice (default: no limit, one slice per live worker). */
  evalSlice?: number;
  /** Clock for round-trip times (ms); default performance.now. */
  now?: () => number;
}

export class JobScheduler<W extends { readonly name: string }> {
  private job: Job<W> | null = null;
  private readonly loads = new Map<W, Load<W>>();
  private nextTaskId = 1;
  private slices = 0;
  private halted = false;
  private readonly now: () => number;

  constructor(private readonly opts: JobSchedulerOptions<W>) {
    this.now = opts.now ?? (() => performance.now());
  }

  /** Sub-batches per step so far (0 before the first step); saved in checkpoints so a resume keeps it. */
  get slicesPerStep(): number {
    return this.slices;
  }

  /** A resumed run keeps the checkpoint's number of sub-batches per step. */
  restoreSlicesPerStep(n: number): void {
    this.slices = n;
  }

  /** Kind of the job in progress, or null. */
  get activeKind(): JobKind | null {
    return this.job?.kind ?? null;
  }

  /** The task `w` is computing, or null. */
  currentTask(w: W): Task<W> | null {
    return this.loads.get(w)?.current ?? null;
  }

  /** Splits a step's indices over the live workers; resolves with every slice answered (outliers recomputed). */
  async runStep(indices: Int32Array, meta: JobMeta): Promise<Answer<W, GradientsMessage>[]> {
    const tasks = await this.run('step', indices, meta);
    return tasks.map((t) => {
      if (t.kind !== 'step' || !t.result) throw new SvdTrainError('INTERNAL', `step ${meta.step} finished with an unanswered or non-step slice at offset ${t.offset}`);
      return { worker: t.worker, indices: t.indices, rttMs: t.rttMs, result: t.result };
    });
  }

  /** Splits evaluation indices over the live workers; resolves with every slice answered. */
  async runEval(indices: Int32Array, meta: JobMeta): Promise<Answer<W, EvalResultMessage>[]> {
    const tasks = await this.run('eval', indices, meta);
    return tasks.map((t) => {
      if (t.kind !== 'eval' || !t.result) throw new SvdTrainError('INTERNAL', `evaluation finished with an unanswered or non-eval slice at offset ${t.offset}`);
      return { worker: t.worker, indices: t.indices, rttMs: t.rttMs, result: t.result };
    });
  }

  /**
   * The task an answer from `w` belongs to, with the step it was asked for.
   * @throws ROUND_MISMATCH when `w` was asked for nothing, for another kind, or (eval) another id or count.
   */
  expectedTask(w: W, msg: GradientsMessage | EvalResultMessage): { task: Task<W>; step: number } {
    const t = this.currentTask(w);
    const job = this.job;
    if (!t || !job) throw new SvdTrainError('ROUND_MISMATCH', `worker ${w.name} sent '${msg.type}' but was asked for nothing`);
    if (msg.type === 'gradients') {
      if (t.kind !== 'step') throw new SvdTrainError('ROUND_MISMATCH', `worker ${w.name} sent gradients but was asked for eval ${t.id}`);
    } else {
      if (t.kind !== 'eval' || msg.evalId !== t.id) {
        throw new SvdTrainError('ROUND_MISMATCH', `worker ${w.name} sent eval-result ${msg.evalId}, but the coordinator asked for ${t.kind} ${t.id}`);
      }
      if (msg.n !== t.indices.length || msg.correct > msg.n) {
        throw new SvdTrainError('ROUND_MISMATCH', `worker ${w.name} evaluated n=${msg.n} (correct ${msg.correct}), but was given ${t.indices.length} samples`);
      }
    }
    return { task: t, step: job.meta.step };
  }

  /** Records `w`'s (validated, see expectedTask) answer, sends it its next task and resolves the job when all are in. */
  complete(w: W, msg: GradientsMessage | EvalResultMessage): void {
    const t = this.currentTask(w);
    if (!t) return;
    t.rttMs = this.now() - t.sentAt;
    if (t.kind === 'step' && msg.type === 'gradients') {
      t.norm = l2Norm(msg.grads);
      t.result = msg;
    } else if (t.kind === 'eval' && msg.type === 'eval-result') {
      t.result = msg;
    } else {
      throw new SvdTrainError('ROUND_MISMATCH', `worker ${w.name} sent '${msg.type}' for ${t.kind} ${t.id}`);
    }
    this.loadOf(w).current = null;
    this.dispatch(w);
    this.checkDone();
  }

  /** A worker became live: parked slices go out once enough workers are live. */
  joined(w: W): void {
    const job = this.job;
    if (job && job.unassigned.length && this.opts.live().length >= this.minLive()) {
      const parked = job.unassigned;
      job.unassigned = [];
      this.reassign(parked, `worker ${w.name} joined`);
    }
  }

  /**
   * `w` is gone (no longer in `live()`): its unanswered slices go, whole, to the others. Call after
   * `countFault` when it left over a numeric fault.
   */
  release(w: W): void {
    const load = this.loads.get(w);
    this.loads.delete(w);
    if (!load) return;
    const orphans = [...(load.current ? [load.current] : []), ...load.queue].filter((t) => !t.result);
    if (this.job && orphans.length && !this.halted) this.reassign(orphans, `worker ${w.name} left`);
  }

  /**
   * Counts a numeric fault (non-finite or outlier result) against the step slice `w` is computing.
   * @returns false when there is none (no step, or its slice already answered).
   */
  countFault(w: W, why: string): boolean {
    const t = this.currentTask(w);
    if (!t || t.result || this.job?.kind !== 'step') return false;
    this.noteFault(t, why);
    return true;
  }

  /** The run stopped: the job in progress is rejected with `e`, and nothing is re-assigned any more. */
  halt(e: Error): void {
    this.halted = true;
    this.job?.reject(e);
  }

  private minLive(): number {
    return Math.max(1, this.opts.minWorkers);
  }

  private loadOf(w: W): Load<W> {
    let load = this.loads.get(w);
    if (!load) {
      load = { current: null, queue: [] };
      this.loads.set(w, load);
    }
    return load;
  }

  private run(kind: JobKind, indices: Int32Array, meta: JobMeta): Promise<Task<W>[]> {
    return new Promise<Task<W>[]>((resolve, reject) => {
      const job: Job<W> = { kind, meta, tasks: [], unassigned: [], resolve, reject, faultsBySlice: new Map(), faults: [] };
      this.job = job;
      const live = this.opts.live();
      if (!live.length) throw new SvdTrainError('INTERNAL', `${kind} ${meta.step} started with no live worker`);
      const slices = splitBatch(indices, Array.from({ length: this.slicesFor(kind, live.length, meta.step, indices.length) }, () => 1));
      let off = 0;
      slices.forEach((s, i) => {
        const t = this.newTask(kind, off, s);
        off += s.length;
        job.tasks.push(t);
        // Round-robin: with fewer workers than slices, a worker computes several, one at a time.
        this.assign(t, live[i % live.length]);
      });
      this.checkDone();
    }).finally(() => {
      this.job = null;
    });
  }

  /** Sub-batches of a job: see the module header. */
  private slicesFor(kind: JobKind, live: number, step: number, samples: number): number {
    if (kind === 'eval') return Math.max(live, Math.ceil(samples / (this.opts.evalSlice ?? Infinity)));
    if (live > this.slices) {
      if (this.slices > 0) {
        this.opts.log?.('info', `${live} workers live: from step ${step} on, each step is split into ${live} sub-batches instead of ${this.slices} (batch norm normalizes each one separately)`);
      }
      this.slices = live;
    }
    return this.slices;
  }

  private newTask(kind: JobKind, offset: number, indices: Int32Array): Task<W> {
    const base = { id: this.nextTaskId++, offset, indices, worker: null, sentAt: 0, rttMs: 0, result: null };
    return kind === 'step' ? { ...base, kind, norm: 0 } : { ...base, kind };
  }

  /** The live worker with the least outstanding work (first in join order on ties). */
  private leastBusy(live: readonly W[]): W {
    const load = (w: W): number => {
      const l = this.loads.get(w);
      return l ? l.queue.length + (l.current ? 1 : 0) : 0;
    };
    return live.reduce((best, w) => (load(w) < load(best) ? w : best));
  }

  /**
   * Gives each unanswered task, whole and under a new id (attempt), to the least-busy live worker,
   * or parks it until enough workers are back. Whole, not re-split: the slice is one BN sub-batch.
   */
  private reassign(tasks: Task<W>[], why: string): void {
    const job = this.job;
    if (!job) return;
    job.tasks = job.tasks.filter((t) => !tasks.includes(t));
    const live = this.opts.live();
    if (live.length < this.minLive()) {
      this.opts.log?.('warn', `${why}: ${live.length} worker(s) left, fewer than --min-workers ${this.minLive()}; waiting for workers`);
      for (const t of tasks) {
        const fresh = this.newTask(t.kind, t.offset, t.indices);
        job.tasks.push(fresh);
        job.unassigned.push(fresh);
      }
      return;
    }
    let moved = 0;
    const to = new Set<string>();
    for (const t of tasks) {
      const fresh = this.newTask(t.kind, t.offset, t.indices);
      job.tasks.push(fresh);
      const w = this.leastBusy(live);
      to.add(w.name);
      this.assign(fresh, w);
      moved += t.indices.length;
    }
    if (moved) {
      this.opts.log?.('info', `${why}: re-assigned ${tasks.length} slice(s), ${moved} sample(s) of ${job.kind} ${job.kind === 'step' ? job.meta.step : job.meta.split}, whole, to ${[...to].join(', ')}`);
    }
    this.checkDone();
  }

  private assign(t: Task<W>, w: W): void {
    if (t.indices.length === 0) {
      // An empty slice (batch smaller than the slice count) is answered without a worker.
      if (t.kind === 'eval') t.result = { type: 'eval-result', evalId: t.id, n: 0, correct: 0, lossSum: 0 };
      else t.result = { type: 'gradients', step: this.job?.meta.step ?? 0, attempt: t.id, n: 0, grads: [], buffers: [], loss: { ce: 0, orth: 0, sparsity: 0, total: 0 }, correct: 0, computeMs: 0 };
      return;
    }
    t.worker = w;
    const load = this.loadOf(w);
    load.queue.push(t);
    if (!load.current) this.dispatch(w);
  }

  private dispatch(w: W): void {
    const job = this.job;
    const load = this.loadOf(w);
    const t = load.queue.shift();
    if (!t || !job) return;
    load.current = t;
    t.sentAt = this.now();
    this.opts.send(w, t, job.meta);
  }

  private checkDone(): void {
    const job = this.job;
    if (!job || job.unassigned.length || this.halted) return;
    if (job.tasks.every((t) => t.result)) {
      if (job.kind === 'step' && this.dropOutliers(job)) return;
      job.resolve([...job.tasks].sort((a, b) => a.offset - b.offset));
    }
  }

  /** Counts a numeric fault of `t`'s slice; halts the run (DIVERGED) when the step cannot succeed. */
  private noteFault(t: Task<W>, why: string): void {
    const job = this.job;
    if (!job || this.halted) return;
    const n = (job.faultsBySlice.get(t.offset) ?? 0) + 1;
    job.faultsBySlice.set(t.offset, n);
    job.faults.push(why);
    const anyGood = job.tasks.some((x) => x.result && x.result.n > 0);
    if (n < MAX_SLICE_FAULTS && (anyGood || job.faults.length < MAX_SLICE_FAULTS)) return;
    // The same fault repeated (one worker retrying) is listed once with a count.
    const distinct = new Map<string, number>();
    for (const f of job.faults) distinct.set(f, (distinct.get(f) ?? 0) + 1);
    const listed = [...distinct].slice(0, 3).map(([f, k]) => (k > 1 ? `${f} (${k} times)` : f));
    const fatal = new SvdTrainError(
      'DIVERGED',
      `step ${job.meta.step} (lr ${job.meta.lr.toExponential(2)}) failed ${job.faults.length} time(s)${n >= MAX_SLICE_FAULTS ? `, ${n} times on the same slice of ${t.indices.length} samples` : ' with no good slice'}: ` +
        `${listed.join('; ')}. Expected finite gradients of ordinary size; the training diverged (every worker that tried failed). ` +
        'Fix: lower --lr (or --lambda-o/--lambda-s) and start again, or fine-tune from the last checkpoint with --from CKPT and a lower --lr.',
      { step: job.meta.step, faults: job.faults.length },
    );
    this.halt(fatal);
    this.opts.onFatal(fatal);
  }

  /**
   * Fault attribution before the reduce: a slice whose gradient norm is more than OUTLIER_RATIO
   * times the median norm of the OTHER workers' slices of comparable size (within 2x samples) came
   * from a faulty or hostile worker. That worker is dropped, every slice it answered in this step is
   * discarded and recomputed elsewhere. Needs at least one other worker's slice to compare with.
   * @returns true when something was dropped (the job is not done yet).
   */
  private dropOutliers(job: Job<W>): boolean {
    const done = job.tasks.filter((t): t is StepTask<W> => t.kind === 'step' && t.worker !== null && t.result !== null && t.result.n > 0);
    const bad = new Map<W, string>();
    for (const t of done) {
      const others = done
        .filter((o) => o.worker !== t.worker && Math.max(o.indices.length, t.indices.length) <= 2 * Math.min(o.indices.length, t.indices.length))
        .map((o) => o.norm)
        .sort((a, b) => a - b);
      if (!others.length || !t.worker) continue;
      const median = others[others.length >> 1];
      if (median > 0 && t.norm > OUTLIER_RATIO * median && !bad.has(t.worker)) {
        bad.set(
          t.worker,
          `its gradient for step ${job.meta.step} (${t.indices.length} samples) has L2 norm ${t.norm.toExponential(2)}, ${(t.norm / median).toExponential(1)} times the median ${median.toExponential(2)} of the other workers' slices; expected at most ${OUTLIER_RATIO} times. Its slices are recomputed elsewhere; if this worker is healthy, check its hardware and svd-train version`,
        );
      }
    }
    if (!bad.size) return false;
    for (const [w, why] of bad) {
      const answered = job.tasks.filter((t) => t.worker === w && t.result);
      for (const t of answered) t.result = null;
      this.noteFault(answered[0], `worker ${w.name}: gradient norm outlier`);
      if (this.halted) return true;
      this.opts.dropOutlier(w, why);
      if (this.job === job) this.reassign(answered, `worker ${w.name} sent an outlier gradient`);
    }
    return true;
  }
}
