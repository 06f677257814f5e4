/**
 * `@svd-train/core`: the framework-free part of svd-train (config, errors, CIFAR-10, input
 * pipeline, sharding, optimizers, LR schedules, wire protocol, checkpoints).
 *
 * The export list is explicit: what the other packages, bench/ and tests/ use, plus the surface
 * docs/CONTRACTS.md documents, with the types their signatures name. Helpers that only core uses
 * (key case conversion, hashing primitives, formatting, the message schemas) stay internal, so
 * they can change without breaking another package. Test plumbing lives in `@svd-train/core/testing`.
 */

export { ERROR_CODES, SvdTrainError, assert, isErrorCode, isSvdTrainError, type ErrorCode } from './errors.js';

export {
  BACKENDS,
  CIFAR10_URL,
  DECAY_ON,
  DECOMPOSITIONS,
  DEFAULTS,
  MAX_TIMER_MS,
  MODELS,
  OPTIMIZERS,
  RESNET_DEPTHS,
  SCHEDULES,
  SPARSITIES,
  type BackendChoice,
  type Decomposition,
  type ResNetDepth,
  type SparsityKind,
} from './defaults.js';
export { MAX_TEACHERS, RunConfigSchema, type RunConfig, type SerializedRunConfig } from './config/schema.js';
export { parseConfig, resolveConfig } from './config/resolve.js';
export { archLabel, teachersOf, type TeacherSpec } from './config/arch.js';
export { configHash, serializeConfig } from './config/hash.js';
export { replaceFile } from './replace-file.js';

export {
  CIFAR_FILES,
  CIFAR_MD5,
  CIFAR_OFFICIAL_FILE_BYTES,
  CIFAR_SPLIT_FILES,
  md5File,
  md5Hex,
  readCifar10,
  verifyCifar10,
  type Cifar10FileReport,
  type Cifar10Split,
  type Cifar10SplitName,
  type CifarFileName,
  type VerifyCifar10Options,
} from './cifar10.js';
export { writeSyntheticCifar10, type SyntheticCifar10Options } from './synthetic-cifar10.js';
export { cacheRoot, resolveDataDir, selectDataDir, type DataDir, type DataDirSource, type ResolveDataDirOptions } from './data-dir.js';
export {
  downloadCifar10,
  ensureCifar10,
  type DownloadCifar10Options,
  type DownloadResult,
  type EnsureCifar10Options,
} from './cifar10-download.js';
export { CIFAR_MEAN, CIFAR_STD, assembleBatch, type AssembleOptions, type Batch, type SplitLike } from './input-pipeline.js';
export { EpochSampler, epochPermutation, splitBatch, stepsPerEpoch, type EpochSamplerOptions, type SampledBatch, type SamplerState } from './sampler.js';
export { mulberry32, type RngState } from './rng.js';
export { ProgressBar, type ProgressBarOptions, type ProgressStream } from './progress-bar.js';

export { assertFinite, shapeSize, type TensorSpec, type WireTensor } from './tensor.js';
export {
  PROTOCOL_VERSION,
  type AuthMessage,
  type ChallengeMessage,
  type DataChunkMessage,
  type DataRequestMessage,
  type DatasetInfo,
  type ErrorMessage,
  type EvalMessage,
  type EvalResultMessage,
  type GradientsMessage,
  type HelloMessage,
  type LossTerms,
  type ManifestMessage,
  type Message,
  type MessageType,
  type ShutdownMessage,
  type StepMessage,
  type TeacherMessage,
  type WeightsMessage,
  type WelcomeMessage,
} from './protocol/messages.js';
export { decodeMessage, encodeMessage, scanMsgpack, type DecodeOptions, type FrameInput } from './protocol/codec.js';
export { validateMessage, type ValidateOptions } from './protocol/validate.js';
export { authProof, makeNonce, verifyAuthProof, type AuthNonces, type AuthRole } from './auth.js';
export {
  AUTH_DEADLINE_MS,
  CONTROL_MAX_BYTES,
  DATA_CHUNK_BYTES,
  DATA_CHUNK_FRAME_BYTES,
  HANDSHAKE_MAX_BYTES,
  IDLE_TIMEOUT_MS,
  MAX_UNAUTHENTICATED_CONNECTIONS,
  PING_INTERVAL_MS,
  setReceiveLimit,
  tensorFrameBytes,
} from './wire-limits.js';
export { escapeForLog } from './log-escape.js';

export { createOptimizer, type CreateOptimizerOptions, type Optimizer, type OptimizerConfig, type OptimizerState, type ParamSet } from './optimizers.js';
export { lrAt, momentumAt, sparsityEndStep, sparsityStartStep, sparsityWeightAt, type MomentumScheduleConfig, type ScheduleConfig, type SparsityScheduleConfig } from './lr-schedule.js';
export {
  CHECKPOINT_FORMAT_VERSION,
  checkpointFileName,
  latestCheckpoint,
  listCheckpoints,
  loadCheckpoint,
  saveCheckpoint,
  type Checkpoint,
  type LatestCheckpointOptions,
  type LoadCheckpointOptions,
  type SaveCheckpointOptions,
} from './checkpoint.js';
export { averageTensors, type AverageInput } from './average.js';
export { effectiveRank, effectiveRanks, selectRankByEnergy, singularValues } from './spectrum.js';
