/**
 * What a Coordinator is given (the run, its data, its starting weights, where its checkpoints and
 * metrics go, and the callbacks that watch it) and what it returns at the end of training.
 */
import type { Checkpoint, DatasetInfo, RunConfig, WireTensor } from '@svd-train/core';
import type { EpochEvent } from './metrics.js';
import type { LogLevel } from './quiet-log.js';
import type { StepEvent } from './step-metrics.js';

/** What the coordinator saves and resumes from: core's checkpoint, so there is one definition. */
export type CoordinatorCheckpoint = Checkpoint;

export interface TrainingSummary {
  steps: number;
  epochs: number;
  finalTestAcc: number | null;
  finalTrainAcc: number | null;
  params: WireTensor[];
  buffers: WireTensor[];
  wallMs: number;
  /** `resume` was given a checkpoint of a run that had already trained all its steps. */
  alreadyFinished?: boolean;
}

export interface CoordinatorOptions {
  config: RunConfig;
  /** Sizes (after limitTrain/limitTest) and md5s of the dataset the workers train on. */
  datasetInfo: DatasetInfo;
  /** Folder of the dataset files, to serve workers that have no copy; without it such workers are refused. */
  dataDir?: string;
  /** Authoritative initial weights (the CLI builds the model with @svd-train/layers). */
  initialParams?: WireTensor[];
  initialBuffers?: WireTensor[];
  /** The manifest every worker must present; default: the initial weights' specs, else the first worker's. */
  expectedManifest?: { params: { name: string; shape: number[] }[]; buffers: { name: string; shape: number[] }[] };
  /** Resume exactly from this checkpoint (weights, optimizer, sampler position). */
  resume?: CoordinatorCheckpoint;
  /**
   * The teacher's weights, required while config.distillAlpha > 0 (and refused otherwise): sent to
   * every worker once per connection. Its tensors must fit the model of config.teacherRanks; the
   * CLI checks that, and each worker checks it again.
   */
  teacher?: { params: WireTensor[]; buffers: WireTensor[] };
  /** The weights of config.extraTeachers, in order (one per entry, required with them): sent after `teacher`. */
  extraTeachers?: { params: WireTensor[]; buffers: WireTensor[] }[];
  /** Fine-tune: start from these weights with a fresh optimizer and sampler. */
  from?: { params: WireTensor[]; buffers: WireTensor[] };
  /**
   * Workers expected at the start (the ones `--spawn` launches): the first step waits up to
   * handshakeTimeoutMs for this many, so that it does not start on whichever joined first, then goes
   * on with at least minWorkers.
   */
  expectWorkers?: number;
  /**
   * Another run follows on this address (the pipeline's fine-tuning): at a normal end, workers are
   * told to reconnect instead of to exit, so workers started by hand on other machines take part
   * in it. A failed run still tells them to exit.
   */
  nextRunFollows?: boolean;
  /** Parameters never weight-decayed (BN gammas/betas: their names look like conv weights). */
  noDecay?: Iterable<string>;
  /** Persists a checkpoint (atomically); called every epoch and every checkpointEvery steps. */
  saveCheckpoint?: (ckpt: CoordinatorCheckpoint) => void | Promise<void>;
  /** metrics.jsonl path; null/undefined writes none. */
  metricsPath?: string | null;
  /** Learning rate at a global step; default core's lrAt(config, step, stepsPerEpoch). */
  lrAt?: (step: number, stepsPerEpoch: number) => number;
  onStep?: (e: StepEvent) => void;
  onEpoch?: (e: EpochEvent) => void;
  onLog?: (level: LogLevel, msg: string) => void;
  /** A worker finished its handshake. */
  onWorkerJoin?: (w: { id: string; name: string; backend: string; device: string }) => void;
  /** PEM certificate chain and private key: serve wss:// instead of ws://. */
  tls?: { cert: string | Buffer; key: string | Buffer };
}
