import { describe, it, expect } from 'vitest';
import { decodeMessage, type ManifestMessage, type WireTensor } from '@svd-train/core';
import { WeightStore, firstNonFinite } from './weight-store.js';

const t = (name: string, values: number[]): WireTensor => ({ name, shape: [values.length], data: Float32Array.from(values) });
const PARAMS = [t('conv.U', [1, 2, 3]), t('fc.bias', [4, 5])];
const BUFFERS = [t('bn.running_mean', [0.5, 0.25])];
const manifestOf = (params: WireTensor[], buffers: WireTensor[], initial = true): ManifestMessage => ({
  type: 'manifest',
  configHash: 'h',
  params: params.map((p) => ({ name: p.name, shape: p.shape })),
  buffers: buffers.map((b) => ({ name: b.name, shape: b.shape })),
  ...(initial ? { initial: { params, buffers } } : {}),
});

describe('WeightStore', () => {
  it('copies the weights it is given, and the weights frame decodes to them at the current version', () => {
    const w = new WeightStore();
    w.set(PARAMS, BUFFERS, 'coordinator');
    PARAMS[0].data[0] = 99; // the caller's array is not the store's
    try {
      expect([...w.params.get('conv.U')!]).toEqual([1, 2, 3]);
    } finally {
      PARAMS[0].data[0] = 1;
    }
    w.advance(7);
    const msg = decodeMessage(w.frame());
    expect(msg.type).toBe('weights');
    if (msg.type !== 'weights') return;
    expect(msg.step).toBe(7);
    expect(msg.params.map((p) => [p.name, [...p.data]])).toEqual([
      ['conv.U', [1, 2, 3]],
      ['fc.bias', [4, 5]],
    ]);
    expect([...msg.buffers[0].data]).toEqual([0.5, 0.25]);
  });

  it('builds the frame once per version: the same bytes until advance(), new bytes after an in-place update', () => {
    const w = new WeightStore();
    w.set(PARAMS, BUFFERS, 'coordinator');
    const f0 = w.frame();
    expect(w.frame()).toBe(f0);
    w.params.get('fc.bias')!.set([6, 7]);
    w.setBuffers([Float32Array.of(1, 2)]);
    w.advance(1);
    const f1 = w.frame();
    expect(f1).not.toBe(f0);
    const msg = decodeMessage(f1);
    if (msg.type !== 'weights') throw new Error(`decoded ${msg.type}`);
    expect([...msg.params[1].data]).toEqual([6, 7]);
    expect([...msg.buffers[0].data]).toEqual([1, 2]);
  });

  it("without weights, the first worker's manifest brings them (and defines the manifest)", () => {
    const w = new WeightStore();
    expect(w.ready).toBe(false);
    w.admit(manifestOf(PARAMS, BUFFERS), 'w0@host');
    expect(w.ready).toBe(true);
    expect(w.requireManifest().source).toBe('w0@host');
    expect(w.paramTensors().map((p) => p.name)).toEqual(['conv.U', 'fc.bias']);
  });

  it('refuses a worker with no initial weights when it has none (PROTOCOL_INVALID), and a manifest that differs (MANIFEST_MISMATCH naming both)', () => {
    expect(() => new WeightStore().admit(manifestOf(PARAMS, BUFFERS, false), 'w0@host')).toThrow(expect.objectContaining({ code: 'PROTOCOL_INVALID' }));
    const w = new WeightStore();
    w.set(PARAMS, BUFFERS, 'coordinator');
    const other = [t('conv.U', [1, 2]), t('fc.bias', [4, 5])];
    expect(() => w.admit(manifestOf(other, BUFFERS, false), 'w1@host')).toThrow(/w1@host .*'conv.U' with shape \[2\], but the manifest of coordinator has \[3\]/);
  });

  it('firstNonFinite names the first NaN or infinity, or null', () => {
    expect(firstNonFinite(new Map([['a', Float32Array.of(1, 2)]]))).toBeNull();
    expect(firstNonFinite(new Map([['a', Float32Array.of(1)], ['b', Float32Array.of(0, Infinity, NaN)]]))).toEqual({ name: 'b', index: 1, value: Infinity });
  });
});
