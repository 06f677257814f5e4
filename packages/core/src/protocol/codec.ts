/**
 * Frames: the one place that touches msgpackr. `encodeMessage` packs a message into one frame;
 * `decodeMessage` refuses a frame over the size limit before parsing (FRAME_TOO_LARGE), walks its
 * msgpack headers (`scanMsgpack`), unpacks it and hands the value to `validateMessage`.
 *
 * Frames are msgpack with `moreTypes` so Float32Array / Int32Array / Uint8Array travel as raw
 * bytes (no per-element encoding).
 *
 * Before msgpackr sees a frame, `scanMsgpack` walks its headers without allocating: every declared
 * string, binary and extension length must fit in the frame, every array or map count in the bytes
 * left, and the whole frame must be one value of bounded depth and item count. A crafted header
 * ("an array of 2^32 elements") is refused in O(frame) time instead of being allocated.
 */
import { Packr } from 'msgpackr';
import { SvdTrainError } from '../errors.js';
import type { Message } from './messages.js';
import { validateMessage, type ValidateOptions } from './validate.js';

/** Default frame limit when the caller does not pass one (RunConfig.maxMessageBytes default). */
export const DEFAULT_MAX_MESSAGE_BYTES = 256 * 1024 * 1024;

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
 * Packs any value with the frames' msgpack settings, for test helpers that build a frame from parts
 * (`gradientsFrameTemplate` in core/testing). Not exported from the package entry.
 */
export function packValue(value: unknown): Uint8Array {
  return packr.pack(value);
}

export interface DecodeOptions extends ValidateOptions {
  /** Frames longer than this are refused with FRAME_TOO_LARGE before parsing. */
  maxBytes?: number;
}

/** Accepts what `ws` hands to a message listener. */
export type FrameInput = Uint8Array | ArrayBuffer | readonly Uint8Array[];

function toBytes(input: FrameInput): Uint8Array {
  if (input instanceof Uint8Array) return input;
  if (input instanceof ArrayBuffer) return new Uint8Array(input);
  if (Array.isArray(input)) {
    const chunks: Uint8Array[] = [];
    let len = 0;
    for (const c of input as unknown[]) {
      if (!(c instanceof Uint8Array)) throw new SvdTrainError('PROTOCOL_INVALID', 'frame fragment is not binary data; expected Uint8Array chunks');
      chunks.push(c);
      len += c.byteLength;
    }
    const out = new Uint8Array(len);
    let off = 0;
    for (const c of chunks) {
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
    const b = bytes[off++];
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
