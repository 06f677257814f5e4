/**
 * The coordinator <-> worker wire protocol: one definition of every message, its encoding and its
 * validation. This is the only module that touches msgpackr.
 *
 * Frames are msgpack with `moreTypes` so Float32Array / Int32Array / Uint8Array travel as raw
 * bytes (no per-element encoding). Nothing decoded is trusted: `decodeMessage` checks the frame
 * size, the message type, every field's type, every tensor's length against its shape and, for
 * gradients, that every value is finite. Bad input always becomes a typed `SvdTrainError`
 * (FRAME_TOO_LARGE, PROTOCOL_INVALID, PROTOCOL_VERSION, SHAPE_MISMATCH, NON_FINITE), never a crash.
 *
 * Before msgpackr sees a frame, `scanMsgpack` walks its headers without allocating: every declared
 * string, binary and extension length must fit in the frame, every array or map count in the bytes
 * left, and the whole frame must be one value of bounded depth and item count. A crafted header
 * ("an array of 2^32 elements") is refused in O(frame) time instead of being allocated.
 *
 * Session flow (W = worker, C = coordinator):
 *   W hello(worker nonce) -> C challenge(coordinator nonce, coordinator's proof) -> W auth(worker's
 *   proof) -> C welcome -> (W data-request -> C data-chunk*)
 *   -> W manifest -> C weights -> repeat { C step -> W gradients -> C weights } , C eval -> W eval-result
 *   -> C shutdown. Either side may send `error` and then close.
 */
import { Packr } from 'msgpackr';
import { NONCE_BYTES } from './auth.js';
import { SvdTrainError } from './errors.js';

/** Bumped on every incompatible change of a message shape. */
export const PROTOCOL_VERSION = 2;

/** Default frame limit when the caller does not pass one (RunConfig.maxMessageBytes default). */
export const DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024;

/** A named float32 tensor on the wire; `data` is row-major with `data.length === product(shape)`. */
export interface WireTensor {
  name: string;
  shape: number[];
  data: Float32Array;
}

/** A tensor's name and shape without values (the manifest entry). */
export interface TensorSpec {
  name: string;
  shape: number[];
}

/** What the coordinator knows about the training data, so a worker can check or fetch its copy. */
export interface DatasetInfo {
  /** Number of training samples in use (after limitTrain). */
  trainCount: number;
  /** Number of test samples in use (after limitTest). */
  testCount: number;
  /** md5 hex of each dataset file, keyed by file name (e.g. 'data_batch_1.bin'). */
  md5s: Record<string, string>;
}

/** Loss terms of one forward pass, averaged over the worker's sub-batch. */
export interface LossTerms {
  ce: number;
  orth: number;
  sparsity: number;
  total: number;
}

/** W -> C, first frame after connecting: who the worker is and what it can do. */
export interface HelloMessage {
  type: 'hello';
  protocolVersion: number;
  workerName: string;
  /** Resolved tfjs backend, e.g. 'tensorflow', 'wasm', 'cpu'. */
  backend: string;
  /** Human-readable device, e.g. 'CPU x8 (wasm simd)'. */
  device: string;
  /** Free-form capability flags, e.g. ['simd', 'threads']. */
  capabilities: string[];
  pid: number;
  hostname: string;
  /** True when the worker has a verified local copy of the dataset; false asks the coordinator to serve it. */
  hasData: boolean;
  /** NONCE_BYTES fresh random bytes the coordinator must prove the token on (mutual authentication). */
  nonce: Uint8Array;
}

/**
 * C -> W, answer to hello: a fresh nonce for the worker to prove the token on, and the
 * coordinator's own proof on both nonces (`authProof(token, 'coordinator', …)`; '' when it has no
 * token). A worker that has a token refuses a coordinator whose proof does not verify. With
 * authRequired false the worker may answer with any mac.
 */
export interface ChallengeMessage {
  type: 'challenge';
  nonce: Uint8Array;
  authRequired: boolean;
  proof: string;
}

/** W -> C: mac = authProof(token, 'worker', {worker: hello.nonce, coordinator: challenge.nonce}); the token never travels. */
export interface AuthMessage {
  type: 'auth';
  mac: string;
}

/** C -> W, after a good auth: the worker's id and the authoritative run config. */
export interface WelcomeMessage {
  type: 'welcome';
  workerId: string;
  /** serializeConfig(RunConfig): a plain JSON object. */
  config: Record<string, unknown>;
  configHash: string;
  datasetInfo: DatasetInfo;
}

/**
 * W -> C, after welcome (and after any data transfer): the worker's parameter and buffer manifest
 * in PyTorch named_parameters() order, plus the config hash it computed. `initial` optionally
 * carries the worker's freshly initialised values, used when the coordinator was given none.
 */
export interface ManifestMessage {
  type: 'manifest';
  configHash: string;
  params: TensorSpec[];
  buffers: TensorSpec[];
  initial?: { params: WireTensor[]; buffers: WireTensor[] };
}

/** W -> C: asks for one dataset file; the coordinator answers with its data-chunk frames in order. */
export interface DataRequestMessage {
  type: 'data-request';
  file: string;
}

/** C -> W: chunk `index` of `total` of dataset file `file`; `md5` is of the whole file. */
export interface DataChunkMessage {
  type: 'data-chunk';
  file: string;
  index: number;
  total: number;
  bytes: Uint8Array;
  md5: string;
}

/**
 * C -> W, broadcast: the authoritative parameters and BN buffers in effect *before* global step
 * `step` (encoded once, the same bytes sent to every worker).
 */
export interface WeightsMessage {
  type: 'weights';
  step: number;
  params: WireTensor[];
  buffers: WireTensor[];
}

/**
 * C -> W: compute gradients for global step `step` on dataset samples `indices` (this worker's
 * slice of the global batch). `attempt` increases when a slice is re-assigned after a failure,
 * so late answers to an older attempt are recognisable. `lr` is for logging only.
 */
export interface StepMessage {
  type: 'step';
  step: number;
  epoch: number;
  seed: number;
  indices: Int32Array;
  lr: number;
  attempt: number;
}

/**
 * W -> C: the answer to a step: mean gradients over the worker's `n` samples, in manifest order,
 * and the BN running stats after its forward pass.
 */
export interface GradientsMessage {
  type: 'gradients';
  step: number;
  attempt: number;
  n: number;
  grads: WireTensor[];
  buffers: WireTensor[];
  loss: LossTerms;
  correct: number;
  computeMs: number;
}

/** C -> W: evaluate the current weights on samples `indices` of `split` (no augmentation). */
export interface EvalMessage {
  type: 'eval';
  evalId: number;
  split: 'train' | 'test';
  indices: Int32Array;
}

/** W -> C: the sums over the eval slice (the coordinator divides by the total n). */
export interface EvalResultMessage {
  type: 'eval-result';
  evalId: number;
  n: number;
  correct: number;
  /** Sum (not mean) of per-sample cross-entropy. */
  lossSum: number;
  computeMs?: number;
}

/** Either direction: a typed failure; the sender usually closes the connection afterwards. */
export interface ErrorMessage {
  type: 'error';
  code: string;
  message: string;
}

/** C -> W: training is over (or the coordinator is going away); the worker should exit. */
export interface ShutdownMessage {
  type: 'shutdown';
  reason: string;
}

/** Every message of the protocol, discriminated on `type`. */
export type Message =
  | HelloMessage
  | ChallengeMessage
  | AuthMessage
  | WelcomeMessage
  | ManifestMessage
  | DataRequestMessage
  | DataChunkMessage
  | WeightsMessage
  | StepMessage
  | GradientsMessage
  | EvalMessage
  | EvalResultMessage
  | ErrorMessage
  | ShutdownMessage;

export type MessageType = Message['type'];

/** All message types, for validation and tests. */
export const MESSAGE_TYPES: readonly MessageType[] = [
  'hello',
  'challenge',
  'auth',
  'welcome',
  'manifest',
  'data-request',
  'data-chunk',
  'weights',
  'step',
  'gradients',
  'eval',
  'eval-result',
  'error',
  'shutdown',
];

/**
 * useRecords:false keeps every frame self-describing: a record-structure table shared between
 * frames would make a frame decodable only by the exact Packr that saw the earlier ones.
 */
const packr = new Packr({ moreTypes: true, useRecords: false, structuredClone: false, mapsAsObjects: true, int64AsType: 'number' });

/** Encodes one message into a single frame. Call once per broadcast and send the same bytes to all. */
export function encodeMessage(msg: Message): Uint8Array {
  return packr.pack(msg);
}

/**
 * A gradients frame split so that a simulated worker (tests, benchmarks) can answer any
 * (step, attempt, n) without re-encoding megabytes: `prefix` holds everything else including the
 * tensors, `tail(...)` the three small trailing fields. Sending `prefix` then `tail` as one
 * fragmented WebSocket message (or concatenating them) gives a valid frame for `decodeMessage`.
 */
export function gradientsFrameTemplate(body: Omit<GradientsMessage, 'type' | 'step' | 'attempt' | 'n'>): {
  prefix: Uint8Array;
  tail: (step: number, attempt: number, n: number) => Uint8Array;
} {
  const tail = (step: number, attempt: number, n: number): Uint8Array => {
    const parts = ['step', step, 'attempt', attempt, 'n', n].map((v) => packr.pack(v));
    return Buffer.concat(parts);
  };
  // Key order is encoding order: step/attempt/n last, so they form the frame's tail.
  const full = packr.pack({ type: 'gradients', grads: body.grads, buffers: body.buffers, loss: body.loss, correct: body.correct, computeMs: body.computeMs, step: 0, attempt: 0, n: 0 });
  const t0 = tail(0, 0, 0);
  const prefix = full.subarray(0, full.length - t0.length);
  if (Buffer.compare(full.subarray(full.length - t0.length), t0) !== 0) {
    throw new SvdTrainError('INTERNAL', 'gradientsFrameTemplate: msgpack encoder did not place the trailing fields last');
  }
  return { prefix, tail };
}

export interface DecodeOptions {
  /** Frames longer than this are refused with FRAME_TOO_LARGE before parsing. */
  maxBytes?: number;
  /** Skip the per-value finiteness scan of gradients (benchmarks only). */
  skipFiniteCheck?: boolean;
}

/** Accepts what `ws` hands to a message listener. */
export type FrameInput = Uint8Array | ArrayBuffer | readonly Uint8Array[];

function toBytes(input: FrameInput): Uint8Array {
  if (input instanceof Uint8Array) return input;
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  if (Array.isArray(input)) {
    let len = 0;
    for (const c of input) len += c.byteLength;
    const out = new Uint8Array(len);
    let off = 0;
    for (const c of input) {
      out.set(c, off);
      off += c.byteLength;
    }
    return out;
  }
  throw new SvdTrainError('PROTOCOL_INVALID', `frame is a ${typeof input}; expected binary data`);
}

/**
 * Decodes and validates one frame.
 * @throws SvdTrainError FRAME_TOO_LARGE | PROTOCOL_INVALID | PROTOCOL_VERSION | SHAPE_MISMATCH | NON_FINITE
 */
export function decodeMessage(input: FrameInput, opts: DecodeOptions = {}): Message {
  const bytes = toBytes(input);
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  if (bytes.byteLength > maxBytes) {
    throw new SvdTrainError(
      'FRAME_TOO_LARGE',
      `frame of ${bytes.byteLength} bytes exceeds the limit of ${maxBytes} bytes; raise --max-message-bytes if the model really is that large`,
      { bytes: bytes.byteLength, maxBytes },
    );
  }
  scanMsgpack(bytes);
  let raw: unknown;
  try {
    raw = packr.unpack(bytes);
  } catch (e) {
    throw new SvdTrainError('PROTOCOL_INVALID', `frame is not valid msgpack (${(e as Error)?.message ?? String(e)}); is the peer an svd-train process?`, undefined, { cause: e });
  }
  return validateMessage(raw, opts);
}

// ---------------------------------------------------------------------------------------------
// Header scan: declared sizes are checked before msgpackr allocates anything
// ---------------------------------------------------------------------------------------------

/** Items (values, keys included) one frame may hold: a ResNet-110 manifest with initial values has ~10k. */
export const MAX_FRAME_ITEMS = 1 << 16;
/** Nesting depth one frame may have (messages nest 4 deep). */
export const MAX_FRAME_DEPTH = 32;

function scanInvalid(what: string): never {
  throw new SvdTrainError('PROTOCOL_INVALID', `frame refused before decoding: ${what}; is the peer an svd-train process of the same version?`);
}

/**
 * Walks the msgpack headers of `bytes` without decoding: every str/bin/ext length must fit in the
 * bytes left, every array/map count too (each item takes at least one byte), the frame must be
 * exactly one value, at most `maxItems` items and `maxDepth` levels. O(number of items), no allocation.
 * @throws SvdTrainError PROTOCOL_INVALID naming the offset and the declared size.
 */
export function scanMsgpack(bytes: Uint8Array, maxItems = MAX_FRAME_ITEMS, maxDepth = MAX_FRAME_DEPTH): void {
  const n = bytes.length;
  const dv = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  // pending[d]: values still to read at depth d; the frame itself is one value at depth 0.
  const pending: number[] = [1];
  let off = 0;
  let items = 0;
  const need = (k: number, what: string): void => {
    if (off + k > n) scanInvalid(`${what} at byte ${off - 1} declares ${k} bytes but only ${n - off} are left`);
  };
  const container = (count: number, what: string): void => {
    if (count > n - off) scanInvalid(`${what} at byte ${off} declares ${count} items but only ${n - off} bytes are left`);
    if (count > 0) {
      if (pending.length >= maxDepth) scanInvalid(`nesting deeper than ${maxDepth}`);
      pending.push(count);
    }
  };
  while (pending.length) {
    if (pending[pending.length - 1] === 0) {
      pending.pop();
      continue;
    }
    pending[pending.length - 1]--;
    if (++items > maxItems) scanInvalid(`more than ${maxItems} items`);
    if (off >= n) scanInvalid(`frame ends at byte ${n} with values still declared`);
    const b = bytes[off++]!;
    if (b <= 0x7f || b >= 0xe0 || b === 0xc0 || b === 0xc2 || b === 0xc3) continue;
    if (b >= 0x80 && b <= 0x8f) { container(2 * (b & 0x0f), 'map'); continue; }
    if (b >= 0x90 && b <= 0x9f) { container(b & 0x0f, 'array'); continue; }
    if (b >= 0xa0 && b <= 0xbf) { need(b & 0x1f, 'string'); off += b & 0x1f; continue; }
    let len: number;
    switch (b) {
      case 0xc4: case 0xd9: need(1, 'length'); len = dv.getUint8(off); off += 1; need(len, b === 0xc4 ? 'binary' : 'string'); off += len; continue;
      case 0xc5: case 0xda: need(2, 'length'); len = dv.getUint16(off); off += 2; need(len, b === 0xc5 ? 'binary' : 'string'); off += len; continue;
      case 0xc6: case 0xdb: need(4, 'length'); len = dv.getUint32(off); off += 4; need(len, b === 0xc6 ? 'binary' : 'string'); off += len; continue;
      case 0xc7: need(2, 'ext header'); len = dv.getUint8(off); off += 2; need(len, 'extension'); off += len; continue;
      case 0xc8: need(3, 'ext header'); len = dv.getUint16(off); off += 3; need(len, 'extension'); off += len; continue;
      case 0xc9: need(5, 'ext header'); len = dv.getUint32(off); off += 5; need(len, 'extension'); off += len; continue;
      case 0xca: need(4, 'float32'); off += 4; continue;
      case 0xcb: need(8, 'float64'); off += 8; continue;
      case 0xcc: case 0xd0: need(1, 'integer'); off += 1; continue;
      case 0xcd: case 0xd1: need(2, 'integer'); off += 2; continue;
      case 0xce: case 0xd2: need(4, 'integer'); off += 4; continue;
      case 0xcf: case 0xd3: need(8, 'integer'); off += 8; continue;
      case 0xd4: need(2, 'fixext1'); off += 2; continue;
      case 0xd5: need(3, 'fixext2'); off += 3; continue;
      case 0xd6: need(5, 'fixext4'); off += 5; continue;
      case 0xd7: need(9, 'fixext8'); off += 9; continue;
      case 0xd8: need(17, 'fixext16'); off += 17; continue;
      case 0xdc: need(2, 'array length'); len = dv.getUint16(off); off += 2; container(len, 'array'); continue;
      case 0xdd: need(4, 'array length'); len = dv.getUint32(off); off += 4; container(len, 'array'); continue;
      case 0xde: need(2, 'map length'); len = dv.getUint16(off); off += 2; container(2 * len, 'map'); continue;
      case 0xdf: need(4, 'map length'); len = dv.getUint32(off); off += 4; container(2 * len, 'map'); continue;
      default:
        scanInvalid(`byte 0x${b.toString(16)} at offset ${off - 1} is not a msgpack type`);
    }
  }
  if (off !== n) scanInvalid(`${n - off} trailing bytes after the message`);
}

// ---------------------------------------------------------------------------------------------
// Validation
// ---------------------------------------------------------------------------------------------

type Obj = Record<string, unknown>;

function invalid(where: string, what: string): never {
  throw new SvdTrainError('PROTOCOL_INVALID', `${where}: ${what}`);
}

function describe(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (ArrayBuffer.isView(v)) return v.constructor.name;
  return typeof v;
}

function isObj(v: unknown): v is Obj {
  return typeof v === 'object' && v !== null && !Array.isArray(v) && !ArrayBuffer.isView(v);
}

function str(o: Obj, k: string, where: string): string {
  const v = o[k];
  if (typeof v !== 'string') invalid(where, `field '${k}' is ${describe(v)}; expected string`);
  return v;
}

function num(o: Obj, k: string, where: string): number {
  const v = o[k];
  // NaN is typeof 'number': name it, or the message reads "is number; expected number".
  if (typeof v !== 'number' || Number.isNaN(v)) invalid(where, `field '${k}' is ${Number.isNaN(v) ? 'NaN' : describe(v)}; expected a number`);
  return v;
}

/** Losses and loss sums: NaN or ±Infinity is a numeric fault (NON_FINITE), not a malformed message. */
function finiteNum(o: Obj, k: string, where: string): number {
  const v = o[k];
  if (typeof v === 'number' && !Number.isFinite(v)) {
    throw new SvdTrainError('NON_FINITE', `${where}: field '${k}' is ${v}; expected a finite number; the worker diverged (lower --lr?) or is faulty`);
  }
  return num(o, k, where);
}

function int(o: Obj, k: string, where: string, min = 0): number {
  const v = num(o, k, where);
  if (!Number.isInteger(v) || v < min) invalid(where, `field '${k}' is ${v}; expected an integer >= ${min}`);
  return v;
}

function bool(o: Obj, k: string, where: string): boolean {
  const v = o[k];
  if (typeof v !== 'boolean') invalid(where, `field '${k}' is ${describe(v)}; expected boolean`);
  return v;
}

function bytesField(o: Obj, k: string, where: string): Uint8Array {
  const v = o[k];
  if (!(v instanceof Uint8Array)) invalid(where, `field '${k}' is ${describe(v)}; expected Uint8Array`);
  return v;
}

function nonceField(o: Obj, where: string): Uint8Array {
  const v = bytesField(o, 'nonce', where);
  if (v.length !== NONCE_BYTES) invalid(where, `field 'nonce' has ${v.length} bytes; expected ${NONCE_BYTES} fresh random bytes`);
  return v;
}

function int32Field(o: Obj, k: string, where: string): Int32Array {
  const v = o[k];
  if (!(v instanceof Int32Array)) invalid(where, `field '${k}' is ${describe(v)}; expected Int32Array`);
  for (let i = 0; i < v.length; i++) {
    if (v[i] < 0) invalid(where, `field '${k}'[${i}] is ${v[i]}; sample indices must be >= 0`);
  }
  return v;
}

function shapeOf(v: unknown, where: string): number[] {
  if (!Array.isArray(v)) invalid(where, `shape is ${describe(v)}; expected number[]`);
  if (v.length > 8) invalid(where, `shape has rank ${v.length}; expected rank <= 8`);
  for (const d of v) {
    if (typeof d !== 'number' || !Number.isInteger(d) || d < 0 || d > 2 ** 31) invalid(where, `shape [${v.join(', ')}] has a bad dimension; expected non-negative integers`);
  }
  return v as number[];
}

/** Product of the dimensions (1 for a scalar). */
export function shapeSize(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

function specList(o: Obj, k: string, where: string): TensorSpec[] {
  const v = o[k];
  if (!Array.isArray(v)) invalid(where, `field '${k}' is ${describe(v)}; expected array of {name, shape}`);
  return v.map((e, i) => {
    const w = `${where}.${k}[${i}]`;
    if (!isObj(e)) invalid(w, `is ${describe(e)}; expected {name, shape}`);
    return { name: str(e, 'name', w), shape: shapeOf(e.shape, w) };
  });
}

function tensorList(o: Obj, k: string, where: string, checkFinite: boolean): WireTensor[] {
  const v = o[k];
  if (!Array.isArray(v)) invalid(where, `field '${k}' is ${describe(v)}; expected array of tensors`);
  return v.map((e, i) => {
    const w = `${where}.${k}[${i}]`;
    if (!isObj(e)) invalid(w, `is ${describe(e)}; expected {name, shape, data}`);
    const name = str(e, 'name', w);
    const shape = shapeOf(e.shape, `${w} '${name}'`);
    const data = e.data;
    if (!(data instanceof Float32Array)) invalid(`${w} '${name}'`, `data is ${describe(data)}; expected Float32Array`);
    const want = shapeSize(shape);
    if (data.length !== want) {
      throw new SvdTrainError(
        'SHAPE_MISMATCH',
        `${where}: tensor '${name}' has ${data.length} values but shape [${shape.join(', ')}] needs ${want}`,
        { name, shape, length: data.length },
      );
    }
    if (checkFinite) assertFinite(data, name, where);
    return { name, shape, data };
  });
}

/** Throws NON_FINITE naming the tensor and the first bad index. Hot path: a tight loop. */
export function assertFinite(data: Float32Array, name: string, where = 'tensor'): void {
  for (let i = 0; i < data.length; i++) {
    const x = data[i];
    // x - x is NaN for both NaN and ±Infinity and 0 otherwise; one compare per value.
    if (x - x !== 0) {
      throw new SvdTrainError('NON_FINITE', `${where}: tensor '${name}' has ${x} at index ${i}; the worker diverged (lower --lr?) or is faulty`, {
        name,
        index: i,
        value: x,
      });
    }
  }
}

/** Validates a decoded plain value as a Message; exported for transports that do not use frames. */
export function validateMessage(raw: unknown, opts: DecodeOptions = {}): Message {
  if (!isObj(raw)) invalid('message', `is ${describe(raw)}; expected an object with a 'type' field`);
  const type = raw.type;
  if (typeof type !== 'string' || !(MESSAGE_TYPES as readonly string[]).includes(type)) {
    invalid('message', `unknown type ${JSON.stringify(type)?.slice(0, 64)}; expected one of ${MESSAGE_TYPES.join(', ')}`);
  }
  const w = `'${type}' message`;
  const o = raw;
  switch (type as MessageType) {
    case 'hello': {
      const protocolVersion = num(o, 'protocolVersion', w);
      if (protocolVersion !== PROTOCOL_VERSION) {
        throw new SvdTrainError(
          'PROTOCOL_VERSION',
          `peer speaks protocol version ${protocolVersion}, this side speaks ${PROTOCOL_VERSION}; run the same svd-train version on coordinator and workers`,
          { actual: protocolVersion, expected: PROTOCOL_VERSION },
        );
      }
      const caps = o.capabilities;
      if (!Array.isArray(caps) || caps.some((c) => typeof c !== 'string')) invalid(w, `field 'capabilities' is ${describe(caps)}; expected string[]`);
      return {
        type: 'hello',
        protocolVersion,
        workerName: str(o, 'workerName', w),
        backend: str(o, 'backend', w),
        device: str(o, 'device', w),
        capabilities: caps as string[],
        pid: int(o, 'pid', w),
        hostname: str(o, 'hostname', w),
        hasData: bool(o, 'hasData', w),
        nonce: nonceField(o, w),
      };
    }
    case 'challenge':
      return { type: 'challenge', nonce: nonceField(o, w), authRequired: bool(o, 'authRequired', w), proof: str(o, 'proof', w) };
    case 'auth':
      return { type: 'auth', mac: str(o, 'mac', w) };
    case 'welcome': {
      const config = o.config;
      if (!isObj(config)) invalid(w, `field 'config' is ${describe(config)}; expected an object`);
      const di = o.datasetInfo;
      if (!isObj(di)) invalid(w, `field 'datasetInfo' is ${describe(di)}; expected {trainCount, testCount, md5s}`);
      const md5s = di.md5s;
      if (!isObj(md5s) || Object.values(md5s).some((v) => typeof v !== 'string')) invalid(w, `datasetInfo.md5s is not a {file: md5} object`);
      return {
        type: 'welcome',
        workerId: str(o, 'workerId', w),
        config,
        configHash: str(o, 'configHash', w),
        datasetInfo: { trainCount: int(di, 'trainCount', w), testCount: int(di, 'testCount', w), md5s: md5s as Record<string, string> },
      };
    }
    case 'manifest': {
      const msg: ManifestMessage = {
        type: 'manifest',
        configHash: str(o, 'configHash', w),
        params: specList(o, 'params', w),
        buffers: specList(o, 'buffers', w),
      };
      if (o.initial !== undefined && o.initial !== null) {
        if (!isObj(o.initial)) invalid(w, `field 'initial' is ${describe(o.initial)}; expected {params, buffers}`);
        msg.initial = {
          params: tensorList(o.initial, 'params', `${w}.initial`, !opts.skipFiniteCheck),
          buffers: tensorList(o.initial, 'buffers', `${w}.initial`, !opts.skipFiniteCheck),
        };
      }
      return msg;
    }
    case 'data-request':
      return { type: 'data-request', file: str(o, 'file', w) };
    case 'data-chunk': {
      const index = int(o, 'index', w);
      const total = int(o, 'total', w, 1);
      if (index >= total) invalid(w, `chunk index ${index} >= total ${total}`);
      return { type: 'data-chunk', file: str(o, 'file', w), index, total, bytes: bytesField(o, 'bytes', w), md5: str(o, 'md5', w) };
    }
    case 'weights':
      return {
        type: 'weights',
        step: int(o, 'step', w),
        // Weights come from the coordinator's own optimizer; a NaN there is reported by the worker's
        // loss, so the O(params) scan is skipped on the receiving side of every broadcast.
        params: tensorList(o, 'params', w, false),
        buffers: tensorList(o, 'buffers', w, false),
      };
    case 'step':
      return {
        type: 'step',
        step: int(o, 'step', w),
        epoch: int(o, 'epoch', w),
        seed: num(o, 'seed', w),
        indices: int32Field(o, 'indices', w),
        lr: num(o, 'lr', w),
        attempt: int(o, 'attempt', w),
      };
    case 'gradients': {
      const loss = o.loss;
      if (!isObj(loss)) invalid(w, `field 'loss' is ${describe(loss)}; expected {ce, orth, sparsity, total}`);
      const check = !opts.skipFiniteCheck;
      return {
        type: 'gradients',
        step: int(o, 'step', w),
        attempt: int(o, 'attempt', w),
        n: int(o, 'n', w),
        grads: tensorList(o, 'grads', w, check),
        buffers: tensorList(o, 'buffers', w, check),
        loss: {
          ce: finiteNum(loss, 'ce', `${w}.loss`),
          orth: finiteNum(loss, 'orth', `${w}.loss`),
          sparsity: finiteNum(loss, 'sparsity', `${w}.loss`),
          total: finiteNum(loss, 'total', `${w}.loss`),
        },
        correct: int(o, 'correct', w),
        computeMs: num(o, 'computeMs', w),
      };
    }
    case 'eval': {
      const split = o.split;
      if (split !== 'train' && split !== 'test') invalid(w, `field 'split' is ${JSON.stringify(split)?.slice(0, 32)}; expected 'train' or 'test'`);
      return { type: 'eval', evalId: int(o, 'evalId', w), split, indices: int32Field(o, 'indices', w) };
    }
    case 'eval-result': {
      const msg: EvalResultMessage = {
        type: 'eval-result',
        evalId: int(o, 'evalId', w),
        n: int(o, 'n', w),
        correct: int(o, 'correct', w),
        lossSum: finiteNum(o, 'lossSum', w),
      };
      if (o.computeMs !== undefined) msg.computeMs = num(o, 'computeMs', w);
      return msg;
    }
    case 'error':
      return { type: 'error', code: str(o, 'code', w), message: str(o, 'message', w) };
    case 'shutdown':
      return { type: 'shutdown', reason: str(o, 'reason', w) };
  }
}
