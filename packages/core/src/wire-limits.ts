/**
 * How large a frame each side accepts, and when: bounded before trusted.
 *
 * Until the peer has authenticated, only handshake-sized frames (HANDSHAKE_MAX_BYTES) are read.
 * After that the limit follows the model: a weights or gradients frame is the manifest's float32
 * bytes plus framing (`tensorFrameBytes`), a dataset chunk DATA_CHUNK_BYTES plus framing, and every
 * other message is small. `setReceiveLimit` moves the limit of one live `ws` socket, so the check
 * happens on the frame header's declared length, before a byte of the payload is buffered.
 */
import { SvdTrainError } from './errors.js';
import { shapeSize, type TensorSpec } from './tensor.js';

/**
 * Largest frame before authentication, either direction: hello, challenge, auth, error and the
 * welcome (the serialized run config, with per-layer ranks of a pruned ResNet-110 about 10 KB).
 */
export const HANDSHAKE_MAX_BYTES = 64 * 1024;

/** Dataset files travel in chunks of this many bytes (the coordinator's DatasetServer). */
export const DATA_CHUNK_BYTES = 4 * 1024 * 1024;

/** Framing allowance of a data-chunk frame beyond its bytes (file name, md5, keys). */
export const DATA_CHUNK_FRAME_BYTES = DATA_CHUNK_BYTES + 4096;

/**
 * Largest frame of a message that carries no tensors, after authentication (manifest specs of a
 * ResNet-110 are ~30 KB; a step's indices are 4 bytes per sample of the global batch).
 */
export const CONTROL_MAX_BYTES = 1024 * 1024;

/** Unauthenticated connections (raw TCP included) the coordinator holds at once; more are closed at once. */
export const MAX_UNAUTHENTICATED_CONNECTIONS = 64;

/** A connection must finish its WebSocket upgrade and authenticate within this long (or handshakeTimeoutMs, if shorter). */
export const AUTH_DEADLINE_MS = 10_000;

/** The coordinator pings every connected worker this often, so a worker can tell a dead coordinator from a busy one. */
export const PING_INTERVAL_MS = 10_000;

/** A worker waiting for work that hears nothing (no frame, no ping) for this long gives the connection up. */
export const IDLE_TIMEOUT_MS = 6 * PING_INTERVAL_MS;

/**
 * Upper bound of one frame carrying every tensor of `specs` (weights, gradients, a manifest with
 * initial values): 4 bytes per value plus per-tensor framing (name, shape, ext header, keys) and
 * a margin for the message's scalar fields.
 */
export function tensorFrameBytes(specs: { params: readonly TensorSpec[]; buffers: readonly TensorSpec[] }): number {
  let bytes = CONTROL_MAX_BYTES;
  for (const s of [...specs.params, ...specs.buffers]) bytes += 4 * shapeSize(s.shape) + 3 * s.name.length + 128;
  return bytes;
}

/**
 * Sets the largest message `ws` (a `ws` WebSocket, either end) accepts from now on; a larger one
 * is refused on its header with close code 1009. ws fixes maxPayload per server or client, so this
 * reaches the receiver's own limit; it throws rather than silently leaving a socket unbounded if a
 * `ws` upgrade ever renames it (tests exercise it on both ends).
 */
export function setReceiveLimit(ws: unknown, bytes: number): void {
  const receiver = (ws as { _receiver?: { _maxPayload?: unknown } })?._receiver;
  if (!receiver || typeof receiver._maxPayload !== 'number') {
    throw new SvdTrainError('INTERNAL', 'setReceiveLimit: this version of the ws package has no per-socket payload limit (_receiver._maxPayload); pin ws 8.x');
  }
  receiver._maxPayload = Math.max(1, Math.floor(bytes));
}
