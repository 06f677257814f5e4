/**
 * The coordinator <-> worker messages: one zod schema per message, from which both the TypeScript
 * type (`z.output`) and the validation of a decoded frame (validate.ts) come. Each schema says who
 * sends it to whom. A field's `error` text is what it expects ("an integer >= 0"); validate.ts
 * turns the first issue into a typed SvdTrainError naming the message, the field and the value.
 *
 * Session flow (W = worker, C = coordinator):
 *   W hello(worker nonce) -> C challenge(coordinator nonce, coordinator's proof) -> W auth(worker's
 *   proof) -> C welcome -> (W data-request -> C data-chunk*)
 *   -> W manifest -> C weights -> repeat { C step -> W gradients -> C weights } , C eval -> W eval-result
 *   -> C shutdown. Either side may send `error` and then close.
 */
import { z } from 'zod';
import { NONCE_BYTES } from '../auth.js';
import { MAX_TEACHERS, type SerializedRunConfig } from '../config/schema.js';
import type { ErrorCode } from '../errors.js';
import { TensorSpecSchema, WireTensorSchema } from '../tensor.js';

/** Bumped on every incompatible change of a message shape. */
export const PROTOCOL_VERSION = 3;

/**
 * What a schema may attach to an issue (`params`) beyond its expectation text: the error code when
 * it is not PROTOCOL_INVALID, a `body` replacing "is VALUE; expected TEXT", a `text` replacing the
 * whole message, and the error's details.
 */
export interface IssueParams {
  code?: ErrorCode;
  body?: string;
  text?: string;
  details?: Record<string, unknown>;
}

// ---------------------------------------------------------------------------------------------
// Fields. Numbers are checked by hand rather than with z.number(), which refuses ±Infinity: a
// field such as `lr` or `computeMs` accepts any number but NaN, and a loss that is not finite is a
// numeric fault (NON_FINITE), not a malformed message. Typed arrays are z.custom rather than
// z.instanceof, which would narrow them to Float32Array<ArrayBuffer> and refuse any other view.
// ---------------------------------------------------------------------------------------------

const str = () => z.string({ error: 'string' });
const bool = () => z.boolean({ error: 'boolean' });
const num = () => z.custom<number>((v) => typeof v === 'number' && !Number.isNaN(v), { error: 'a number' });
const int = (min = 0) => z.custom<number>((v) => typeof v === 'number' && Number.isInteger(v) && v >= min, { error: `an integer >= ${min}` });

/** Losses and loss sums: NaN or ±Infinity is NON_FINITE. */
const finite = () =>
  z.custom<number>().superRefine((v, ctx) => {
    if (typeof v !== 'number') ctx.addIssue({ code: 'custom', message: 'a number' });
    else if (!Number.isFinite(v)) {
      ctx.addIssue({
        code: 'custom',
        message: 'a finite number',
        params: { code: 'NON_FINITE', body: `is ${v}; expected a finite number; the worker diverged (lower --lr?) or is faulty` } satisfies IssueParams,
      });
    }
  });

const bytes = () => z.custom<Uint8Array>((v) => v instanceof Uint8Array, { error: 'Uint8Array' });

const nonce = () =>
  bytes().superRefine((v, ctx) => {
    if (v.length !== NONCE_BYTES) {
      ctx.addIssue({ code: 'custom', message: `${NONCE_BYTES} fresh random bytes`, params: { body: `has ${v.length} bytes; expected ${NONCE_BYTES} fresh random bytes` } satisfies IssueParams });
    }
  });

/** Dataset sample indices: an Int32Array of non-negative values. */
const indices = () =>
  z.custom<Int32Array>((v) => v instanceof Int32Array, { error: 'Int32Array' }).superRefine((v, ctx) => {
    for (let i = 0; i < v.length; i++) {
      if (v[i] < 0) {
        ctx.addIssue({ code: 'custom', message: 'sample indices >= 0', params: { body: `[${i}] is ${v[i]}; sample indices must be >= 0` } satisfies IssueParams });
        return;
      }
    }
  });

const isPlainObject = (v: unknown): v is Record<string, unknown> => typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v);

const tensors = () => z.array(WireTensorSchema, { error: 'an array of tensors' });
const specs = () => z.array(TensorSpecSchema, { error: 'an array of {name, shape}' });

// ---------------------------------------------------------------------------------------------
// Shared parts
// ---------------------------------------------------------------------------------------------

/** What the coordinator knows about the training data, so a worker can check or fetch its copy. */
export const DatasetInfoSchema = z.object(
  {
    /** Number of training samples in use (after limitTrain). */
    trainCount: int(),
    /** Number of test samples in use (after limitTest). */
    testCount: int(),
    /** md5 hex of each dataset file, keyed by file name (e.g. 'data_batch_1.bin'). */
    md5s: z.record(z.string(), z.string({ error: 'an md5 string' }), { error: 'a {file: md5} object' }),
  },
  { error: 'an object {trainCount, testCount, md5s}' },
);
export type DatasetInfo = z.output<typeof DatasetInfoSchema>;

/** Loss terms of one forward pass, averaged over the worker's sub-batch. */
export const LossTermsSchema = z.object(
  {
    ce: finite(),
    orth: finite(),
    sparsity: finite(),
    total: finite(),
    /** T²·KL(teacher ‖ student) while distilling; absent otherwise. */
    distill: finite().optional(),
  },
  { error: 'an object {ce, orth, sparsity, total}' },
);
export type LossTerms = z.output<typeof LossTermsSchema>;

// ---------------------------------------------------------------------------------------------
// Messages
// ---------------------------------------------------------------------------------------------

/** W -> C, first frame after connecting: who the worker is and what it can do. */
export const HelloMessageSchema = z.object({
  type: z.literal('hello'),
  /** Checked first: a peer of another version gets PROTOCOL_VERSION naming both versions. */
  protocolVersion: z.custom<number>().superRefine((v, ctx) => {
    if (typeof v !== 'number' || Number.isNaN(v)) ctx.addIssue({ code: 'custom', message: 'a number' });
    else if (v !== PROTOCOL_VERSION) {
      ctx.addIssue({
        code: 'custom',
        message: `protocol version ${PROTOCOL_VERSION}`,
        params: {
          code: 'PROTOCOL_VERSION',
          text: `peer speaks protocol version ${v}, this side speaks ${PROTOCOL_VERSION}; run the same svd-train version on coordinator and workers`,
          details: { actual: v, expected: PROTOCOL_VERSION },
        } satisfies IssueParams,
      });
    }
  }),
  workerName: str(),
  /** Resolved tfjs backend, e.g. 'tensorflow', 'wasm', 'cpu'. */
  backend: str(),
  /** Human-readable device, e.g. 'CPU x8 (wasm simd)'. */
  device: str(),
  /** Free-form capability flags, e.g. ['simd', 'threads']. */
  capabilities: z.array(str(), { error: 'string[]' }),
  pid: int(),
  hostname: str(),
  /** True when the worker has a verified local copy of the dataset; false asks the coordinator to serve it. */
  hasData: bool(),
  /** NONCE_BYTES fresh random bytes the coordinator must prove the token on (mutual authentication). */
  nonce: nonce(),
});
export type HelloMessage = z.output<typeof HelloMessageSchema>;

/**
 * C -> W, answer to hello: a fresh nonce for the worker to prove the token on, and the
 * coordinator's own proof on both nonces (`authProof(token, 'coordinator', …)`; '' when it has no
 * token). A worker that has a token refuses a coordinator whose proof does not verify. With
 * authRequired false the worker may answer with any mac.
 */
export const ChallengeMessageSchema = z.object({
  type: z.literal('challenge'),
  nonce: nonce(),
  authRequired: bool(),
  proof: str(),
});
export type ChallengeMessage = z.output<typeof ChallengeMessageSchema>;

/** W -> C: mac = authProof(token, 'worker', {worker: hello.nonce, coordinator: challenge.nonce}); the token never travels. */
export const AuthMessageSchema = z.object({
  type: z.literal('auth'),
  mac: str(),
});
export type AuthMessage = z.output<typeof AuthMessageSchema>;

/** C -> W, after a good auth: the worker's id and the authoritative run config. */
export const WelcomeMessageSchema = z.object({
  type: z.literal('welcome'),
  workerId: str(),
  /**
   * serializeConfig(RunConfig). Only its being an object is checked here: the worker validates every
   * field with parseConfig, where a bad config is CONFIG_INVALID (fatal: the worker stops) rather
   * than PROTOCOL_INVALID (it would reconnect and get the same config again).
   */
  config: z.custom<SerializedRunConfig>(isPlainObject, { error: 'an object' }),
  configHash: str(),
  datasetInfo: DatasetInfoSchema,
});
export type WelcomeMessage = z.output<typeof WelcomeMessageSchema>;

/**
 * W -> C, after welcome (and after any data transfer): the worker's parameter and buffer manifest
 * in PyTorch named_parameters() order, plus the config hash it computed. `initial` optionally
 * carries the worker's freshly initialised values, used when the coordinator was given none.
 */
export const ManifestMessageSchema = z.object({
  type: z.literal('manifest'),
  configHash: str(),
  params: specs(),
  buffers: specs(),
  /** null reads as absent. */
  initial: z.preprocess(
    (v) => v ?? undefined,
    z.object({ params: tensors(), buffers: tensors() }, { error: 'an object {params, buffers}' }).optional(),
  ),
});
export type ManifestMessage = z.output<typeof ManifestMessageSchema>;

/** W -> C: asks for one dataset file; the coordinator answers with its data-chunk frames in order. */
export const DataRequestMessageSchema = z.object({
  type: z.literal('data-request'),
  file: str(),
});
export type DataRequestMessage = z.output<typeof DataRequestMessageSchema>;

/** C -> W: chunk `index` of `total` of dataset file `file`; `md5` is of the whole file. */
export const DataChunkMessageSchema = z
  .object({
    type: z.literal('data-chunk'),
    file: str(),
    index: int(),
    total: int(1),
    bytes: bytes(),
    md5: str(),
  })
  .superRefine((m, ctx) => {
    if (m.index >= m.total) ctx.addIssue({ code: 'custom', message: `chunk index ${m.index} >= total ${m.total}` });
  });
export type DataChunkMessage = z.output<typeof DataChunkMessageSchema>;

/**
 * C -> W, broadcast: the authoritative parameters and BN buffers in effect *before* global step
 * `step` (encoded once, the same bytes sent to every worker). Their values are not scanned for
 * NaN on receipt: they come from the coordinator's own optimizer, and a NaN there shows in the
 * worker's loss (the worker checks them itself before computing).
 */
export const WeightsMessageSchema = z.object({
  type: z.literal('weights'),
  step: int(),
  params: tensors(),
  buffers: tensors(),
});
export type WeightsMessage = z.output<typeof WeightsMessageSchema>;

/**
 * C -> W, once per teacher and connection before the first `weights`, only when the run distills
 * (config.distillAlpha > 0): a teacher's parameters and BN buffers, in the manifest order of the
 * model its ranks build. `index` 0 (the default) is config.teacher, k ≥ 1 config.extraTeachers[k − 1].
 * The worker checks names and shapes against that model.
 */
export const TeacherMessageSchema = z.object({
  type: z.literal('teacher'),
  index: z.int().min(0).max(MAX_TEACHERS - 1).default(0),
  params: tensors(),
  buffers: tensors(),
});
export type TeacherMessage = z.output<typeof TeacherMessageSchema>;

/**
 * C -> W: compute gradients for global step `step` on dataset samples `indices` (this worker's
 * slice of the global batch). `attempt` increases when a slice is re-assigned after a failure,
 * so late answers to an older attempt are recognisable. `lr` is for logging only.
 */
export const StepMessageSchema = z.object({
  type: z.literal('step'),
  step: int(),
  epoch: int(),
  seed: num(),
  indices: indices(),
  lr: num(),
  attempt: int(),
});
export type StepMessage = z.output<typeof StepMessageSchema>;

/**
 * W -> C: the answer to a step: mean gradients over the worker's `n` samples, in manifest order,
 * and the BN running stats after its forward pass. Every value of `grads` and `buffers` must be
 * finite (checked after parsing by validate.ts' scan, unless a benchmark turns it off).
 */
export const GradientsMessageSchema = z.object({
  type: z.literal('gradients'),
  step: int(),
  attempt: int(),
  n: int(),
  grads: tensors(),
  buffers: tensors(),
  loss: LossTermsSchema,
  correct: int(),
  computeMs: num(),
});
export type GradientsMessage = z.output<typeof GradientsMessageSchema>;

/** C -> W: evaluate the current weights on samples `indices` of `split` (no augmentation). */
export const EvalMessageSchema = z.object({
  type: z.literal('eval'),
  evalId: int(),
  split: z.enum(['train', 'test'], { error: "'train' or 'test'" }),
  indices: indices(),
});
export type EvalMessage = z.output<typeof EvalMessageSchema>;

/** W -> C: the sums over the eval slice (the coordinator divides by the total n). */
export const EvalResultMessageSchema = z.object({
  type: z.literal('eval-result'),
  evalId: int(),
  n: int(),
  correct: int(),
  /** Sum (not mean) of per-sample cross-entropy. */
  lossSum: finite(),
  computeMs: num().optional(),
});
export type EvalResultMessage = z.output<typeof EvalResultMessageSchema>;

/** Either direction: a typed failure; the sender usually closes the connection afterwards. */
export const ErrorMessageSchema = z.object({
  type: z.literal('error'),
  code: str(),
  message: str(),
});
export type ErrorMessage = z.output<typeof ErrorMessageSchema>;

/**
 * C -> W: training is over (or the coordinator is going away); the worker should exit. With
 * `reconnect`, another run follows on the same coordinator address (the pipeline's fine-tuning
 * after its training): the worker reconnects instead, as after a lost connection. Older workers
 * ignore the field and exit, as before.
 */
export const ShutdownMessageSchema = z.object({
  type: z.literal('shutdown'),
  reason: str(),
  reconnect: z.boolean().optional(),
});
export type ShutdownMessage = z.output<typeof ShutdownMessageSchema>;

/** Every message of the protocol, discriminated on `type`. */
export const MessageSchema = z.discriminatedUnion('type', [
  HelloMessageSchema,
  ChallengeMessageSchema,
  AuthMessageSchema,
  WelcomeMessageSchema,
  ManifestMessageSchema,
  DataRequestMessageSchema,
  DataChunkMessageSchema,
  WeightsMessageSchema,
  TeacherMessageSchema,
  StepMessageSchema,
  GradientsMessageSchema,
  EvalMessageSchema,
  EvalResultMessageSchema,
  ErrorMessageSchema,
  ShutdownMessageSchema,
]);
export type Message = z.output<typeof MessageSchema>;
export type MessageType = Message['type'];

/** All message types, for validation and tests. */
export const MESSAGE_TYPES: readonly MessageType[] = Object.freeze(MessageSchema.options.map((s) => s.shape.type.value));
