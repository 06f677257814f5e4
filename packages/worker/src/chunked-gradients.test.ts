import { beforeAll, describe, expect, it } from 'vitest';
import { buildResNet, computeGradients, getBuffers, initEngine, setBuffers, teacherLogits } from '@svd-train/layers';
import { sliceGradients } from './chunked-gradients.js';

const REG = { lambdaO: 1, lambdaS: 0.07, sparsity: 'hoyer' as const };
const tiny = () => buildResNet({ depth: 20, widths: [4, 8, 16], blocks: [1, 1, 1], svd: true, decomposition: 'channel', numClasses: 10, seed: 3, inputShape: [8, 8, 3] });

function batch(n: number, seed: number) {
  let s = seed;
  const rnd = () => ((s = (s * 1103515245 + 12345) >>> 0) / 2 ** 32) * 2 - 1;
  return { x: Float32Array.from({ length: n * 8 * 8 * 3 }, rnd), y: Int32Array.from({ length: n }, (_, i) => (i * 7 + seed) % 10) };
}

describe('sliceGradients (maxWorkerBatch chunking)', () => {
  beforeAll(async () => {
    await initEngine({ backend: 'cpu' });
  });

  it('n ≤ maxChunk is exactly computeGradients', () => {
    const m = tiny();
    const { x, y } = batch(4, 1);
    const start = getBuffers(m);
    const a = sliceGradients(m, x, y, REG, 4);
    setBuffers(m, start);
    const b = computeGradients(m, x, y, REG);
    expect(a.grads.map((g) => Array.from(g.data))).toEqual(b.grads.map((g) => Array.from(g.data)));
  });

  it('n=10, chunk 4 (4+4+2): sample-weighted mean of the chunks\' gradients and BN stats, from the same start stats', () => {
    const m = tiny();
    const { x, y } = batch(10, 2);
    const start = getBuffers(m);
    const got = sliceGradients(m, x, y, REG, 4);
    expect(got.n).toBe(10);
    // The model is left holding the averaged running stats (what the worker reports).
    expect(Array.from(getBuffers(m)[0]!.data)).toEqual(Array.from(got.buffers[0]!.data));
    const parts = [[0, 4], [4, 8], [8, 10]].map(([lo, hi]) => {
      setBuffers(m, start);
      return { w: (hi! - lo!) / 10, r: computeGradients(m, x.subarray(lo! * 192, hi! * 192), y.subarray(lo!, hi!), REG) };
    });
    for (let t = 0; t < got.grads.length; t++) {
      const want = got.grads[t]!.data.map((_, i) => parts.reduce((a, p) => a + p.w * p.r.grads[t]!.data[i]!, 0));
      for (let i = 0; i < want.length; i++) expect(got.grads[t]!.data[i]).toBeCloseTo(want[i]!, 6);
    }
    for (let t = 0; t < got.buffers.length; t++) {
      const want = got.buffers[t]!.data.map((_, i) => parts.reduce((a, p) => a + p.w * p.r.buffers[t]!.data[i]!, 0));
      for (let i = 0; i < want.length; i++) expect(got.buffers[t]!.data[i]).toBeCloseTo(want[i]!, 6);
    }
    expect(got.ce).toBeCloseTo(parts.reduce((a, p) => a + p.w * p.r.ce, 0), 6);
    expect(got.correct).toBe(parts.reduce((a, p) => a + p.r.correct, 0));
    expect(got.total - got.ce).toBeCloseTo(parts[0]!.r.total - parts[0]!.r.ce, 6);
  });

  it('with a teacher, each chunk is distilled against the teacher\'s logits of its own images; terms are sample-weighted', () => {
    const m = tiny();
    const teacher = buildResNet({ depth: 20, widths: [4, 8, 16], blocks: [1, 1, 1], svd: true, decomposition: 'channel', numClasses: 10, seed: 8, inputShape: [8, 8, 3] });
    const { x, y } = batch(10, 4);
    const start = getBuffers(m);
    const got = sliceGradients(m, x, y, REG, 4, { teachers: [teacher], alpha: 0.3, temperature: 2 });
    const parts = [[0, 4], [4, 8], [8, 10]].map(([lo, hi]) => {
      setBuffers(m, start);
      const cx = x.subarray(lo! * 192, hi! * 192);
      return { w: (hi! - lo!) / 10, r: computeGradients(m, cx, y.subarray(lo!, hi!), REG, { logits: teacherLogits(teacher, cx, hi! - lo!), alpha: 0.3, temperature: 2 }) };
    });
    expect(got.distill).toBeGreaterThan(1e-3);
    expect(got.distill).toBeCloseTo(parts.reduce((a, p) => a + p.w * p.r.distill, 0), 6);
    expect(got.data).toBeCloseTo(0.7 * got.ce + 0.3 * got.distill, 6);
    expect(got.total - got.data).toBeCloseTo(parts[0]!.r.total - parts[0]!.r.data, 6);
    for (let t = 0; t < got.grads.length; t++) {
      const want = got.grads[t]!.data.map((_, i) => parts.reduce((a, p) => a + p.w * p.r.grads[t]!.data[i]!, 0));
      for (let i = 0; i < want.length; i++) expect(got.grads[t]!.data[i]).toBeCloseTo(want[i]!, 6);
    }
    teacher.dispose();
    m.dispose();
  });
});
