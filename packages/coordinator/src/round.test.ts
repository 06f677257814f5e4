import { describe, it, expect } from 'vitest';
import { mkdtempSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { createHash } from 'node:crypto';
import { SvdTrainError, type GradientsMessage, type WireTensor } from '@svd-train/core';
import { checkGradients, checkManifest, type Manifest } from './round.js';
import { AllReduce, l2Norm } from './all-reduce.js';
import { authPolicy } from './handshake.js';
import { StallDetector } from './stall-detector.js';
import { DatasetServer } from './dataset-server.js';

const manifest: Manifest = { params: [{ name: 'a', shape: [2, 2] }, { name: 'b', shape: [3] }], buffers: [{ name: 'bn', shape: [1] }], source: 'worker alpha' };
const t = (name: string, shape: number[], vals: number[]): WireTensor => ({ name, shape, data: Float32Array.from(vals) });
const grads = (over: Partial<GradientsMessage> = {}): GradientsMessage => ({
  type: 'gradients',
  step: 5,
  attempt: 2,
  n: 4,
  grads: [t('a', [2, 2], [1, 2, 3, 4]), t('b', [3], [1, 1, 1])],
  buffers: [t('bn', [1], [0.5])],
  loss: { ce: 1, orth: 0, sparsity: 0, total: 1 },
  correct: 1,
  computeMs: 1,
  ...over,
});
const err = (f: () => void): SvdTrainError => {
  try {
    f();
  } catch (e) {
    return e as SvdTrainError;
  }
  throw new Error('expected a throw');
};

describe('round validation', () => {
  const want = { step: 5, attempt: 2, n: 4 };
  it('accepts a matching round', () => {
    expect(() => checkGradients(grads(), want, manifest, 'beta')).not.toThrow();
  });
  it('ROUND_MISMATCH on wrong step / attempt / n, with both values', () => {
    const e = err(() => checkGradients(grads({ step: 4 }), want, manifest, 'beta'));
    expect(e.code).toBe('ROUND_MISMATCH');
    expect(e.message).toMatch(/beta.*step 4 attempt 2.*step 5 attempt 2/);
    expect(err(() => checkGradients(grads({ attempt: 1 }), want, manifest, 'beta')).code).toBe('ROUND_MISMATCH');
    expect(err(() => checkGradients(grads({ n: 3 }), want, manifest, 'beta')).message).toMatch(/n=3.*given 4/);
    const acc = err(() => checkGradients(grads({ correct: 5 }), want, manifest, 'beta'));
    expect(acc.code).toBe('ROUND_MISMATCH');
    expect(acc.message).toMatch(/beta reports correct=5 of n=4.*expected 0 <= correct <= n/);
  });
  it('names both workers and values on a name/order mismatch', () => {
    const e = err(() => checkGradients(grads({ grads: [t('b', [3], [1, 1, 1]), t('a', [2, 2], [1, 2, 3, 4])] }), want, manifest, 'beta'));
    expect(e.code).toBe('ROUND_MISMATCH');
    expect(e.message).toMatch(/worker beta.*'b'.*worker alpha.*'a'/);
    // A name from the wire reaches the message escaped: no forged log line, no terminal escape.
    const forged = err(() => checkGradients(grads({ grads: [t('a\n[coordinator] all good\u001b[2J', [2, 2], [1, 2, 3, 4]), t('b', [3], [1, 1, 1])] }), want, manifest, 'beta'));
    expect(forged.message).toContain("named 'a\\x0a[coordinator] all good\\x1b[2J'");
    expect(forged.message).not.toMatch(/[\n\u001b]/);
  });
  it('SHAPE_MISMATCH names both shapes; wrong tensor count is ROUND_MISMATCH', () => {
    const e = err(() => checkGradients(grads({ grads: [t('a', [4], [1, 2, 3, 4]), t('b', [3], [1, 1, 1])] }), want, manifest, 'beta'));
    expect(e.code).toBe('SHAPE_MISMATCH');
    expect(e.message).toMatch(/beta.*\[4\].*alpha.*\[2, 2\]/);
    expect(err(() => checkGradients(grads({ buffers: [] }), want, manifest, 'beta')).code).toBe('ROUND_MISMATCH');
  });
  it('MANIFEST_MISMATCH for a differing manifest', () => {
    const e = err(() => checkManifest({ params: [{ name: 'a', shape: [2, 3] }, { name: 'b', shape: [3] }], buffers: manifest.buffers }, manifest, 'gamma'));
    expect(e.code).toBe('MANIFEST_MISMATCH');
    expect(e.message).toMatch(/gamma.*\[2, 3\].*alpha.*\[2, 2\]/);
  });
});

describe('all-reduce', () => {
  it('sample-weighted mean of gradients and buffers: a=[2,2] b=[3], n=(1,3)', () => {
    const r = new AllReduce(manifest.params, manifest.buffers);
    const out = r.reduce([
      { n: 1, grads: [t('a', [2, 2], [4, 4, 4, 4]), t('b', [3], [0, 0, 8])], buffers: [t('bn', [1], [1])] },
      { n: 3, grads: [t('a', [2, 2], [0, 4, 8, 0]), t('b', [3], [4, 0, 0])], buffers: [t('bn', [1], [5])] },
    ]);
    expect(Array.from(out.grads[0])).toEqual([1, 4, 7, 1]);
    expect(Array.from(out.grads[1])).toEqual([3, 0, 2]);
    expect(Array.from(out.buffers[0])).toEqual([4]);
    expect(out.n).toBe(4);
    // Reuses its buffers: a second round starts from zero.
    const again = r.reduce([{ n: 2, grads: [t('a', [2, 2], [1, 1, 1, 1]), t('b', [3], [1, 2, 3])], buffers: [t('bn', [1], [7])] }]);
    expect(Array.from(again.grads[1])).toEqual([1, 2, 3]);
    expect(again.grads[0]).toBe(out.grads[0]);
    expect(again.nonFinite).toBeNull();
  });

  it('sums in float64: two finite 3e38 gradients with n=4 each average to 3e38, not Infinity', () => {
    const r = new AllReduce(manifest.params, manifest.buffers);
    const huge = { n: 4, grads: [t('a', [2, 2], [3e38, -3e38, 1, 0]), t('b', [3], [3e38, 3e38, 3e38])], buffers: [t('bn', [1], [1])] };
    const out = r.reduce([huge, huge]);
    expect(out.nonFinite).toBeNull();
    expect(out.grads[0][0]).toBe(Math.fround(3e38));
    expect(out.grads[0][1]).toBe(Math.fround(-3e38));
    expect(Array.from(out.grads[1])).toEqual([Math.fround(3e38), Math.fround(3e38), Math.fround(3e38)]);
  });

  it('names the first average that is not finite (a=[2,2] with NaN at index 2)', () => {
    const r = new AllReduce(manifest.params, manifest.buffers);
    const out = r.reduce([{ n: 1, grads: [t('a', [2, 2], [0, 0, NaN, 0]), t('b', [3], [0, 0, 0])], buffers: [t('bn', [1], [1])] }]);
    expect(out.nonFinite).toEqual({ name: 'a', index: 2, value: NaN });
  });

  it('l2Norm of a tensor list: a=[2,2] b=[3] = sqrt(1+4+9+16+0+0+4) ', () => {
    expect(l2Norm([t('a', [2, 2], [1, 2, 3, 4]), t('b', [3], [0, 0, 2])])).toBeCloseTo(Math.sqrt(34), 12);
  });
});

describe('handshake', () => {
  it('token required off loopback unless insecure', () => {
    expect(authPolicy('127.0.0.1', null, false).required).toBe(false);
    expect(authPolicy('0.0.0.0', 't', false).required).toBe(true);
    expect(authPolicy('0.0.0.0', null, true).required).toBe(false);
    expect(err(() => authPolicy('0.0.0.0', null, false)).code).toBe('AUTH_FAILED');
  });
});

describe('stall detector', () => {
  it('warns then times out, naming the worker; clear stops both', async () => {
    const events: string[] = [];
    const d = new StallDetector({ warnMs: 10, timeoutMs: 40, onWarn: (w) => events.push(`warn ${w}`), onTimeout: (w) => events.push(`timeout ${w}`) });
    d.track('w1', 'step 1');
    d.track('w2', 'step 1');
    d.clear('w2');
    await new Promise((r) => setTimeout(r, 80));
    expect(events).toEqual(['warn w1', 'timeout w1']);
    expect(d.size).toBe(0);
  });
});

describe('dataset server', () => {
  it('serves announced files in md5-tagged chunks that reassemble exactly, and nothing else', () => {
    const dir = mkdtempSync(join(tmpdir(), 'svd-ds-'));
    const bytes = Uint8Array.from({ length: 1000 }, (_, i) => (i * 7) & 255);
    writeFileSync(join(dir, 'f.bin'), bytes);
    writeFileSync(join(dir, 'secret.txt'), 'no');
    const s = new DatasetServer(dir, ['f.bin'], 300);
    const chunks = [...s.chunks('f.bin')];
    expect(chunks.map((c) => [c.index, c.total])).toEqual([[0, 4], [1, 4], [2, 4], [3, 4]]);
    const joined = Buffer.concat(chunks.map((c) => c.bytes));
    expect(joined.equals(Buffer.from(bytes))).toBe(true);
    expect(chunks[0].md5).toBe(createHash('md5').update(bytes).digest('hex'));
    expect(() => [...s.chunks('secret.txt')]).toThrow(/not one of the served/);
    expect(() => [...s.chunks('../secret.txt')]).toThrow(SvdTrainError);
    expect(() => [...s.chunks('x\r\nforged')]).toThrow("worker asked for 'x\\x0d\\x0aforged'");
  });
});
