import { describe, it, expect } from 'vitest';
import fc from 'fast-check';
import { Packr } from 'msgpackr';
import { serializeConfig } from '../config/hash.js';
import { parseConfig } from '../config/resolve.js';
import { MAX_TEACHERS } from '../config/schema.js';
import { SvdTrainError } from '../errors.js';
import type { WireTensor } from '../tensor.js';
import { MAX_FRAME_ITEMS, decodeMessage, encodeMessage, scanMsgpack } from './codec.js';
import { MESSAGE_TYPES, PROTOCOL_VERSION, type Message } from './messages.js';

const t = (name: string, shape: number[], fill = 0.5): WireTensor => ({ name, shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(fill) });

/** One valid example of every message type. */
const SAMPLES: Message[] = [
  { type: 'hello', protocolVersion: PROTOCOL_VERSION, workerName: 'w1', backend: 'wasm', device: 'cpu', capabilities: ['simd'], pid: 42, hostname: 'h', hasData: true, nonce: new Uint8Array(32).fill(3) },
  { type: 'challenge', nonce: new Uint8Array(32).fill(1), authRequired: true, proof: 'cd'.repeat(32) },
  { type: 'auth', mac: 'ab'.repeat(32) },
  { type: 'welcome', workerId: 'w-1', config: serializeConfig(parseConfig({ model: 'resnet20', lr: 0.1 })), configHash: 'abc', datasetInfo: { trainCount: 50, testCount: 10, md5s: { 'a.bin': 'ff' } } },
  { type: 'manifest', configHash: 'abc', params: [{ name: 'fc.weight', shape: [10, 64] }], buffers: [{ name: 'bn.running_mean', shape: [16] }] },
  { type: 'manifest', configHash: 'abc', params: [{ name: 'p', shape: [2] }], buffers: [], initial: { params: [t('p', [2])], buffers: [] } },
  { type: 'data-request', file: 'data_batch_1.bin' },
  { type: 'data-chunk', file: 'data_batch_1.bin', index: 0, total: 2, bytes: new Uint8Array([9, 8, 7]), md5: 'ff' },
  { type: 'weights', step: 3, params: [t('a', [2, 3]), t('b', [])], buffers: [t('bn', [4])] },
  { type: 'step', step: 3, epoch: 0, seed: 7, indices: new Int32Array([5, 1, 9]), lr: 0.01, attempt: 0 },
  { type: 'gradients', step: 3, attempt: 1, n: 3, grads: [t('a', [2, 3], -1)], buffers: [t('bn', [4])], loss: { ce: 2.3, orth: 0.1, sparsity: 0.2, total: 2.6 }, correct: 1, computeMs: 12.5 },
  { type: 'eval', evalId: 1, split: 'test', indices: new Int32Array([0, 1]) },
  { type: 'eval-result', evalId: 1, n: 2, correct: 1, lossSum: 4.2 },
  { type: 'error', code: 'AUTH_FAILED', message: 'nope' },
  { type: 'shutdown', reason: 'done' },
  { type: 'shutdown', reason: 'training finished', reconnect: true },
  { type: 'teacher', index: 0, params: [t('a', [2, 3]), t('b', [])], buffers: [t('bn', [4])] },
  { type: 'teacher', index: 2, params: [t('a', [2, 3])], buffers: [] },
  { type: 'gradients', step: 4, attempt: 0, n: 3, grads: [t('a', [2, 3], -1)], buffers: [], loss: { ce: 2.3, orth: 0.1, sparsity: 0, total: 2.1, distill: 1.5 }, correct: 2, computeMs: 9 },
];

/** Encodes an arbitrary object the way a hostile peer could. */
const raw = new Packr({ moreTypes: true, useRecords: false });
const codeOf = (f: () => unknown): string => {
  try {
    f();
  } catch (e) {
    expect(e).toBeInstanceOf(SvdTrainError);
    return (e as SvdTrainError).code;
  }
  return 'no error';
};

describe('protocol round-trip', () => {
  it('covers every message type', () => {
    expect(new Set(SAMPLES.map((m) => m.type))).toEqual(new Set(MESSAGE_TYPES));
  });
  for (const m of SAMPLES) {
    it(`${m.type} round-trips`, () => {
      const back = decodeMessage(encodeMessage(m));
      expect(back).toEqual(m);
    });
  }
  it('typed arrays come back as aligned, independent arrays of the right class', () => {
    const g = SAMPLES.find((m) => m.type === 'gradients')!;
    const bytes = encodeMessage(g);
    const back = decodeMessage(bytes) as Extract<Message, { type: 'gradients' }>;
    const d = back.grads[0].data;
    expect(d).toBeInstanceOf(Float32Array);
    expect(d.byteOffset % 4).toBe(0);
    expect(d.buffer).not.toBe(bytes.buffer);
    const s = decodeMessage(encodeMessage(SAMPLES[9])) as Extract<Message, { type: 'step' }>;
    expect(s.indices).toBeInstanceOf(Int32Array);
    expect(Array.from(s.indices)).toEqual([5, 1, 9]);
  });
  it('accepts ArrayBuffer and fragment lists as ws delivers them', () => {
    const b = encodeMessage(SAMPLES[0]);
    const ab = b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength) as ArrayBuffer;
    expect(decodeMessage(ab)).toEqual(SAMPLES[0]);
    expect(decodeMessage([b.subarray(0, 5), b.subarray(5)])).toEqual(SAMPLES[0]);
  });
});

describe('protocol validation', () => {
  it('FRAME_TOO_LARGE before parsing', () => {
    expect(codeOf(() => decodeMessage(encodeMessage(SAMPLES[8]), { maxBytes: 10 }))).toBe('FRAME_TOO_LARGE');
  });
  it('PROTOCOL_INVALID for non-msgpack, non-objects and unknown types', () => {
    expect(codeOf(() => decodeMessage(new Uint8Array([0xc1])))).toBe('PROTOCOL_INVALID');
    expect(codeOf(() => decodeMessage(raw.pack(5)))).toBe('PROTOCOL_INVALID');
    expect(codeOf(() => decodeMessage(raw.pack({ type: 'launch-missiles' })))).toBe('PROTOCOL_INVALID');
    expect(codeOf(() => decodeMessage(raw.pack({ type: 'shutdown', reason: 'x', reconnect: 'yes' })))).toBe('PROTOCOL_INVALID');
  });
  it('PROTOCOL_VERSION names both versions', () => {
    const bad = raw.pack({ ...SAMPLES[0], protocolVersion: 99 });
    let err: SvdTrainError | undefined;
    try {
      decodeMessage(bad);
    } catch (e) {
      err = e as SvdTrainError;
    }
    expect(err?.code).toBe('PROTOCOL_VERSION');
    expect(err?.message).toContain('99');
    expect(err?.message).toContain(String(PROTOCOL_VERSION));
  });
  it('PROTOCOL_INVALID for wrong field types', () => {
    expect(codeOf(() => decodeMessage(raw.pack({ ...SAMPLES[9], indices: [1, 2] })))).toBe('PROTOCOL_INVALID');
    expect(codeOf(() => decodeMessage(raw.pack({ ...SAMPLES[9], step: 'x' })))).toBe('PROTOCOL_INVALID');
    expect(codeOf(() => decodeMessage(raw.pack({ ...SAMPLES[9], indices: new Int32Array([-1]) })))).toBe('PROTOCOL_INVALID');
    expect(codeOf(() => decodeMessage(raw.pack({ ...SAMPLES[0], hasData: 1 })))).toBe('PROTOCOL_INVALID');
    expect(codeOf(() => decodeMessage(raw.pack({ type: 'weights', step: 0, params: [{ name: 'a', shape: [2], data: [1, 2] }], buffers: [] })))).toBe('PROTOCOL_INVALID');
    expect(codeOf(() => decodeMessage(raw.pack({ type: 'weights', step: 0, params: [{ name: 'a', shape: [-2], data: new Float32Array(2) }], buffers: [] })))).toBe('PROTOCOL_INVALID');
  });
  it('teacher: index 0 when absent (one teacher), refused outside 0..MAX_TEACHERS − 1', () => {
    const teacher = { type: 'teacher', params: [], buffers: [] };
    expect(decodeMessage(raw.pack(teacher))).toMatchObject({ type: 'teacher', index: 0 });
    expect(decodeMessage(raw.pack({ ...teacher, index: MAX_TEACHERS - 1 }))).toMatchObject({ index: MAX_TEACHERS - 1 });
    for (const index of [MAX_TEACHERS, -1, 0.5, '1']) expect(codeOf(() => decodeMessage(raw.pack({ ...teacher, index })))).toBe('PROTOCOL_INVALID');
  });
  it('SHAPE_MISMATCH when data length != product(shape)', () => {
    const m = { type: 'weights', step: 0, params: [{ name: 'conv.U', shape: [3, 3], data: new Float32Array(8) }], buffers: [] };
    expect(codeOf(() => decodeMessage(raw.pack(m)))).toBe('SHAPE_MISMATCH');
    expect(() => decodeMessage(raw.pack(m))).toThrow(/conv\.U/);
  });
  it('NON_FINITE in gradients names the tensor and index', () => {
    const g = SAMPLES[10] as Extract<Message, { type: 'gradients' }>;
    for (const bad of [NaN, Infinity, -Infinity]) {
      const data = new Float32Array(6);
      data[4] = bad;
      const m = { ...g, grads: [{ name: 'layer1.S', shape: [2, 3], data }] };
      expect(codeOf(() => decodeMessage(encodeMessage(m)))).toBe('NON_FINITE');
      expect(() => decodeMessage(encodeMessage(m))).toThrow(/layer1\.S.*index 4/);
    }
    // A NaN loss is a numeric fault with a message that says NaN (it used to read
    // "field 'ce' is number; expected number").
    expect(codeOf(() => decodeMessage(encodeMessage({ ...g, loss: { ...g.loss, ce: NaN } })))).toBe('NON_FINITE');
    expect(() => decodeMessage(encodeMessage({ ...g, loss: { ...g.loss, ce: NaN } }))).toThrow(/field 'ce' is NaN; expected a finite number/);
    expect(codeOf(() => decodeMessage(encodeMessage({ ...g, loss: { ...g.loss, total: Infinity } })))).toBe('NON_FINITE');
    expect(codeOf(() => decodeMessage(raw.pack({ ...g, loss: { ...g.loss, ce: 'x' } })))).toBe('PROTOCOL_INVALID');
    expect(codeOf(() => decodeMessage(encodeMessage({ ...g, loss: { ...g.loss, distill: NaN } })))).toBe('NON_FINITE');
    expect(() => decodeMessage(raw.pack({ ...SAMPLES[9], lr: NaN }))).toThrow(/field 'lr' is NaN; expected a number/);
  });
});

describe('protocol fuzz', () => {
  const decodesOrThrowsTyped = (bytes: Uint8Array): void => {
    try {
      const m = decodeMessage(bytes, { maxBytes: 1 << 20 });
      expect(MESSAGE_TYPES).toContain(m.type);
    } catch (e) {
      if (!(e instanceof SvdTrainError)) throw e;
    }
  };
  it('random bytes decode to a valid message or a SvdTrainError', () => {
    fc.assert(fc.property(fc.uint8Array({ maxLength: 256 }), (b) => decodesOrThrowsTyped(b)), { numRuns: 2000, seed: 1 });
  });
  it('mutated valid frames decode to a valid message or a SvdTrainError', () => {
    const frames = SAMPLES.map((m) => encodeMessage(m));
    fc.assert(
      fc.property(
        fc.nat(frames.length - 1),
        fc.array(fc.tuple(fc.nat(), fc.integer({ min: 0, max: 255 })), { minLength: 1, maxLength: 6 }),
        fc.option(fc.nat(), { nil: undefined }),
        (fi, edits, cut) => {
          const f = frames[fi].slice();
          for (const [pos, val] of edits) f[pos % f.length] = val;
          decodesOrThrowsTyped(cut === undefined ? f : f.subarray(0, cut % (f.length + 1)));
        },
      ),
      { numRuns: 3000, seed: 2 },
    );
  });
});

describe('msgpack header scan (before msgpackr allocates)', () => {
  const scanCode = (b: number[] | Uint8Array) => codeOf(() => scanMsgpack(b instanceof Uint8Array ? b : new Uint8Array(b)));
  it('passes every encoded message, including fragmented gradient frames', () => {
    for (const m of SAMPLES) expect(scanCode(encodeMessage(m))).toBe('no error');
  });
  it('array32 declaring 2^32-1 items in a 5-byte frame is refused, naming the count', () => {
    expect(() => scanMsgpack(new Uint8Array([0xdd, 0xff, 0xff, 0xff, 0xff]))).toThrow(/4294967295 items but only 0 bytes/);
  });
  it('map32, bin32, str32 and ext32 lengths beyond the frame are refused', () => {
    expect(scanCode([0xdf, 0x7f, 0xff, 0xff, 0xff, 0x01])).toBe('PROTOCOL_INVALID');
    expect(scanCode([0xc6, 0x10, 0x00, 0x00, 0x00, 0x01])).toBe('PROTOCOL_INVALID');
    expect(scanCode([0xdb, 0x10, 0x00, 0x00, 0x00, 0x61])).toBe('PROTOCOL_INVALID');
    expect(scanCode([0xc9, 0x10, 0x00, 0x00, 0x00, 0x74, 0x00])).toBe('PROTOCOL_INVALID');
  });
  it('too many items, too deep, trailing bytes and the never-used byte are refused', () => {
    const many = new Uint8Array(5 + MAX_FRAME_ITEMS + 1);
    many.set([0xdd, 0, 0, 0, 0]);
    new DataView(many.buffer).setUint32(1, MAX_FRAME_ITEMS + 1);
    expect(() => scanMsgpack(many)).toThrow(/more than 65536 items/);
    expect(() => scanMsgpack(new Uint8Array(40).fill(0x91))).toThrow(/nesting deeper/);
    expect(scanCode([0xc0, 0xc0])).toBe('PROTOCOL_INVALID');
    expect(scanCode([0xc1])).toBe('PROTOCOL_INVALID');
  });
  it('a 60 MB frame of zeros inside one array is refused in well under a second, before any decode', () => {
    const big = new Uint8Array(60 * 1024 * 1024);
    big.set([0xdd, 0x03, 0xc0, 0x00, 0x00]);
    const t0 = performance.now();
    expect(codeOf(() => decodeMessage(big, { maxBytes: 1 << 30 }))).toBe('PROTOCOL_INVALID');
    expect(performance.now() - t0).toBeLessThan(1000);
  });
});
