import { describe, it, expect } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { loadNative } from '@svd-train/native';
import { batchNormInfer, batchNormTrain } from '../batch-norm.js';
import { AFFINE, POINTWISE_AFFINE, RANK_CONV, ROW_CONV_AFFINE, SPATIAL_AFFINE, meanPool } from './native.js';
import { TOL, cpuHasAvx2Fma, cpuHasAvx512, cpuIsZen5OrLater, errorCodeOf, expectClose, expectNoLeakedTensors, gradCheck, onBackend, seededUniform } from '../test-support/index.js';

// Each native kernel against the cpu backend (the slow, trusted reference) on the shapes that
// break convolution code: stride 2, 1×1, the k×1 and 1×k convs of spatial SVD, asymmetric and
// 'same'/'valid' padding, dilation, batch 1 and odd channel counts. Skipped (visibly) where the
// addon does not load; CI requires it to load (SVD_TRAIN_REQUIRE_NATIVE=1, engine.test.ts).
const native = loadNative();

type Pad = 'same' | 'valid' | number | [[number, number], [number, number], [number, number], [number, number]];
interface ConvCase {
  x: [number, number, number, number];
  k: [number, number];
  f: number;
  s: [number, number];
  pad: Pad;
  d?: [number, number];
}
const p = (t: number, b: number, l: number, r: number): Pad => [[0, 0], [t, b], [l, r], [0, 0]];
const CONV_CASES: ConvCase[] = [
  { x: [2, 8, 8, 3], k: [3, 3], f: 4, s: [1, 1], pad: p(1, 1, 1, 1) },
  { x: [2, 8, 8, 3], k: [3, 3], f: 5, s: [2, 2], pad: p(1, 1, 1, 1) },
  { x: [2, 7, 9, 5], k: [3, 3], f: 7, s: [2, 2], pad: p(1, 1, 1, 1) },
  { x: [1, 6, 10, 4], k: [3, 1], f: 3, s: [2, 1], pad: p(1, 1, 0, 0) },
  { x: [1, 6, 10, 4], k: [1, 3], f: 3, s: [1, 2], pad: p(0, 0, 1, 1) },
  { x: [3, 8, 8, 8], k: [1, 1], f: 16, s: [2, 2], pad: 'valid' },
  { x: [2, 9, 6, 3], k: [3, 3], f: 2, s: [1, 1], pad: 'same' },
  { x: [2, 8, 6, 3], k: [3, 3], f: 2, s: [2, 2], pad: 'same' },
  { x: [2, 10, 10, 3], k: [3, 3], f: 2, s: [2, 2], pad: 'valid' },
  { x: [2, 11, 10, 3], k: [5, 3], f: 4, s: [3, 2], pad: p(2, 1, 0, 2) },
  { x: [1, 5, 5, 1], k: [3, 3], f: 1, s: [1, 1], pad: 1 },
  { x: [2, 4, 4, 16], k: [3, 3], f: 16, s: [1, 1], pad: p(1, 1, 1, 1) },
  // Pointwise (1×1, stride 1, no padding) runs as a matmul: few input channels (the second half
  // of a factored layer), many, and 1×1 with padding or dilation-free 'same', which stays a conv.
  { x: [2, 5, 7, 2], k: [1, 1], f: 16, s: [1, 1], pad: 'valid' },
  { x: [1, 3, 4, 24], k: [1, 1], f: 9, s: [1, 1], pad: 'same' },
  { x: [2, 4, 4, 3], k: [1, 1], f: 5, s: [1, 1], pad: p(1, 0, 0, 1) },
  // 16 < f < 32: the forward runs oneDNN at 32 output channels (zero filter columns) and keeps f.
  { x: [2, 4, 4, 64], k: [3, 3], f: 18, s: [1, 1], pad: p(1, 1, 1, 1) },
  { x: [3, 5, 5, 32], k: [3, 3], f: 29, s: [2, 2], pad: 'same' },
  { x: [1, 6, 10, 4], k: [1, 3], f: 31, s: [1, 2], pad: p(0, 0, 1, 1) },
];
// Few output channels from a multiple of 16 input channels: the forward and filter gradient run on
// our AVX-512 kernels (small_oc_conv.cc) where the CPU has AVX-512 (see smallOcRuns). Rows whose
// width is not a whole number of pixel blocks, strides,
// asymmetric and 'valid' padding, k×1 and 1×k, every f from 1 to 13, two and four channel blocks,
// and batches of 17 and 18 images: the forward works on groups of 16 images, so these cover a full
// group followed by a partial one, and outputs whose size is not a multiple of 16.
const SMALL_OC_CASES: ConvCase[] = [
  { x: [2, 7, 9, 16], k: [3, 3], f: 1, s: [1, 1], pad: p(1, 1, 1, 1) },
  { x: [1, 6, 19, 16], k: [3, 3], f: 2, s: [1, 1], pad: 'same' },
  { x: [2, 9, 11, 16], k: [3, 3], f: 3, s: [2, 2], pad: p(1, 1, 1, 1) },
  { x: [3, 4, 6, 16], k: [3, 3], f: 4, s: [1, 1], pad: p(1, 1, 1, 1) },
  { x: [2, 8, 8, 32], k: [3, 3], f: 5, s: [1, 1], pad: p(0, 2, 2, 0) },
  { x: [1, 6, 10, 16], k: [3, 1], f: 6, s: [2, 1], pad: p(1, 1, 0, 0) },
  { x: [1, 6, 10, 16], k: [1, 3], f: 7, s: [1, 2], pad: p(0, 0, 1, 1) },
  { x: [3, 5, 17, 16], k: [3, 3], f: 8, s: [1, 1], pad: 'valid' },
  { x: [1, 5, 5, 16], k: [3, 3], f: 9, s: [1, 1], pad: p(1, 1, 1, 1) },
  { x: [18, 5, 7, 16], k: [3, 3], f: 3, s: [1, 1], pad: p(1, 1, 1, 1) },
  { x: [17, 6, 6, 64], k: [3, 3], f: 10, s: [2, 2], pad: p(0, 1, 0, 1) },
  // From 64 channels at stride 1 the forward takes up to 48 outputs (41 = 7 + 7 + 7 + 7 + 7 + 6),
  // not 49, nor a multiple of 16 (oneDNN's blocking).
  { x: [17, 8, 8, 64], k: [3, 3], f: 41, s: [1, 1], pad: p(1, 1, 1, 1) },
  { x: [3, 5, 6, 64], k: [3, 3], f: 47, s: [1, 1], pad: 'same' },
  { x: [3, 5, 6, 64], k: [3, 3], f: 48, s: [1, 1], pad: 'same' },
  { x: [3, 5, 6, 64], k: [3, 3], f: 49, s: [1, 1], pad: 'same' },
  { x: [2, 5, 9, 32], k: [3, 3], f: 11, s: [1, 1], pad: 'same' },
  { x: [17, 4, 5, 16], k: [3, 3], f: 12, s: [1, 1], pad: p(1, 1, 1, 1) },
  { x: [2, 6, 6, 16], k: [3, 3], f: 13, s: [1, 1], pad: p(1, 1, 1, 1) },
  // The filter gradient's output chunks (at most 8 each: 13 = 7 + 6, 17 = 6 + 6 + 5, 48 = 6 × 8)
  // for the spatial form's k×1 half, one past its limit, and 1×1 convs (forward on oneDNN).
  { x: [3, 7, 5, 16], k: [3, 1], f: 13, s: [1, 1], pad: p(1, 1, 0, 0) },
  { x: [2, 6, 4, 32], k: [3, 1], f: 17, s: [1, 1], pad: p(1, 1, 0, 0) },
  { x: [2, 4, 3, 16], k: [3, 1], f: 48, s: [1, 1], pad: p(1, 1, 0, 0) },
  { x: [2, 4, 3, 16], k: [3, 1], f: 49, s: [1, 1], pad: p(1, 1, 0, 0) },
  { x: [2, 5, 5, 16], k: [1, 1], f: 5, s: [1, 1], pad: 'valid' },
  { x: [2, 6, 6, 32], k: [1, 1], f: 9, s: [2, 2], pad: 'valid' },
  // The input gradient (stride 1, 16 or 32 channels, kw 1 or 3, up to 6 outputs alone): rows of
  // 16 pixels and a tail (21 = 16 + 5), 'valid' (dy smaller than dx), 6 outputs and one past.
  { x: [2, 4, 21, 16], k: [1, 3], f: 6, s: [1, 1], pad: p(0, 0, 1, 1) },
  { x: [2, 7, 9, 16], k: [3, 3], f: 6, s: [1, 1], pad: 'valid' },
  { x: [3, 6, 5, 32], k: [3, 3], f: 7, s: [1, 1], pad: 'same' },
];
/** How many of a case's forward, filter and input gradients run on our kernels (small_oc_conv.cc's MaxF, AppliesBackwardInput). */
function smallOcRuns(c: ConvCase): number {
  const taps = c.k[0] * c.k[1];
  // A 1×1 conv at stride 1 without padding never reaches them: it runs as a matmul (isPointwise).
  if (taps === 1 && c.s[0] === 1 && c.s[1] === 1 && c.pad === 'valid') return 0;
  const wide = c.x[3] >= 64 && taps === 9 && c.s[0] === 1 && c.s[1] === 1 && c.f % 16 !== 0;
  // On AMD Zen 5 the forward takes up to 13 (3×3, or from 32 channels), the 9-tap filter gradient up
  // to 13 from 16 or 32 channels and 8 from 64 (small_oc_conv.h).
  const forward = taps > 1 && c.f <= (wide ? 48 : zen5 && (taps === 9 || c.x[3] >= 32) ? 13 : 8);
  const strided = c.s[0] > 1 || c.s[1] > 1;
  const filterMax = taps === 1 || strided ? 8 : taps <= 3 ? 48 : zen5 ? (c.x[3] >= 64 ? 8 : 13) : 10;
  // (Without a residual's gradient to sum, as here, up to 6 outputs.)
  const input = !strided && (c.x[3] === 16 || c.x[3] === 32) && (c.k[1] === 1 || c.k[1] === 3) && c.f <= 6;
  return Number(forward) + Number(c.f <= filterMax) + Number(input);
}
const hasAvx512 = cpuHasAvx512();
const zen5 = cpuIsZen5OrLater();
const convName = (c: ConvCase) =>
  `x=[${c.x}] f=[${c.k},${c.x[3]},${c.f}] s=[${c.s}] pad=${typeof c.pad === 'object' ? JSON.stringify(c.pad.slice(1, 3)) : c.pad}`;

/** y, dx and dw of L = Σ conv2d(x, w)·r on the active engine. */
function convAll(c: ConvCase, seed: number): { y: Float32Array; dx: Float32Array; dw: Float32Array } {
  return tf.tidy(() => {
    const x = tf.tensor4d(seededUniform(c.x.reduce((a, b) => a * b, 1), seed), c.x);
    const w = tf.tensor4d(seededUniform(c.k[0] * c.k[1] * c.x[3] * c.f, seed + 1), [c.k[0], c.k[1], c.x[3], c.f]);
    const conv = (a: tf.Tensor, b: tf.Tensor) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.s, c.pad as 'same');
    const y = conv(x, w);
    const r = tf.tensor(seededUniform(y.size, seed + 2), y.shape);
    const [dx, dw] = tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(conv(a, b), r)))([x, w]);
    return { y: y.dataSync() as Float32Array, dx: dx!.dataSync() as Float32Array, dw: dw!.dataSync() as Float32Array };
  });
}

interface MatCase {
  a: number[];
  b: number[];
  ta: boolean;
  tb: boolean;
  /** tfjs' BatchMatMul gradient does not reduce over broadcast batch dims (on any backend). */
  forwardOnly?: boolean;
}
const MAT_CASES: MatCase[] = [
  { a: [4, 5], b: [5, 3], ta: false, tb: false },
  { a: [5, 4], b: [5, 3], ta: true, tb: false },
  { a: [4, 5], b: [3, 5], ta: false, tb: true },
  { a: [5, 4], b: [3, 5], ta: true, tb: true },
  { a: [3, 4, 5], b: [3, 5, 2], ta: false, tb: false },
  { a: [1, 4, 5], b: [3, 5, 2], ta: false, tb: false, forwardOnly: true },
  { a: [3, 5, 4], b: [1, 2, 5], ta: true, tb: true, forwardOnly: true },
  { a: [1, 7], b: [7, 1], ta: false, tb: false },
  // Broadcasting across two batch dims: oneDNN's matmul can't, so the stock kernel must run.
  { a: [2, 1, 3, 4], b: [1, 5, 4, 2], ta: false, tb: false, forwardOnly: true },
];
const matName = (c: MatCase) => `a=[${c.a}]${c.ta ? 'ᵀ' : ''} b=[${c.b}]${c.tb ? 'ᵀ' : ''}`;

function matAll(c: MatCase, seed: number): { y: Float32Array; da: Float32Array; db: Float32Array } {
  return tf.tidy(() => {
    const size = (s: number[]) => s.reduce((x, y) => x * y, 1);
    const a = tf.tensor(seededUniform(size(c.a), seed), c.a);
    const b = tf.tensor(seededUniform(size(c.b), seed + 1), c.b);
    const mm = (x: tf.Tensor, z: tf.Tensor) => tf.matMul(x, z, c.ta, c.tb);
    const y = mm(a, b);
    if (c.forwardOnly) return { y: y.dataSync() as Float32Array, da: new Float32Array(), db: new Float32Array() };
    const r = tf.tensor(seededUniform(y.size, seed + 2), y.shape);
    const [da, db] = tf.grads((x: tf.Tensor, z: tf.Tensor) => tf.sum(tf.mul(mm(x, z), r)))([a, b]);
    return { y: y.dataSync() as Float32Array, da: da!.dataSync() as Float32Array, db: db!.dataSync() as Float32Array };
  });
}

describe.skipIf(!native.ok)('native engine kernels (oneDNN) match the cpu backend', () => {
  for (const [i, c] of CONV_CASES.entries()) {
    it(`Conv2D, Conv2DBackpropInput, Conv2DBackpropFilter ${convName(c)}`, async () => {
      const want = await onBackend('cpu', () => convAll(c, 10 * i));
      const got = await onBackend('native', () => convAll(c, 10 * i));
      expectClose(`${convName(c)} y`, got.y, want.y, TOL.backendRel * 10);
      expectClose(`${convName(c)} dx`, got.dx, want.dx, TOL.backendRel * 10);
      expectClose(`${convName(c)} dw`, got.dw, want.dw, TOL.backendRel * 10);
    });
  }

  for (const [i, c] of SMALL_OC_CASES.entries()) {
    it(`small-OC kernels, and oneDNN with them off: ${convName(c)}`, async () => {
      const want = await onBackend('cpu', () => convAll(c, 7 * i + 3));
      for (const on of [1, 0] as const) {
        const tag = `${convName(c)} small-OC ${on ? 'on' : 'off'}`;
        // Inside onBackend: initEngine sets the switch from SVD_TRAIN_SMALL_OC, and clears the record of which ran.
        const { got, ours } = await onBackend('native', () => {
          native.ok && native.addon.setSmallOcKernels([on]);
          try {
            const got = convAll(c, 7 * i + 3);
            const ours = Object.values(native.ok ? native.addon.implementations() : {}).filter((v) => v === 'svd:small_oc_avx512').length;
            return { got, ours };
          } finally {
            native.ok && native.addon.setSmallOcKernels([1]);
          }
        });
        expectClose(`${tag} y`, got.y, want.y, TOL.backendRel * 10);
        expectClose(`${tag} dx`, got.dx, want.dx, TOL.backendRel * 10);
        expectClose(`${tag} dw`, got.dw, want.dw, TOL.backendRel * 10);
        // Which kernels ran, on an AVX-512 CPU (smallOcRuns); never when off.
        expect(ours, tag).toBe(on && hasAvx512 ? smallOcRuns(c) : 0);
      }
    });
  }

  // The channel decomposition's first conv with its filter built from V and s inside the kernel
  // (RANK_CONV), and with `branch` x again as a second output: a residual block's input, read by
  // its first conv and by its shortcut, whose two gradients the kernel's gradient sums in the
  // input-gradient call (one addon call with res, no Add). Shapes our input-gradient kernel runs
  // (16 and 32 channels, up to 16 outputs) and ones oneDNN runs (64 channels, 17 outputs: res added
  // after it); a strided one, and a 1×1 at stride 1 (a matmul) without the branch.
  const RANK_CASES: (ConvCase & { branch: boolean; noInputGradient?: boolean })[] = [
    { x: [2, 6, 7, 16], k: [3, 3], f: 5, s: [1, 1], pad: p(1, 1, 1, 1), branch: true },
    { x: [3, 5, 4, 32], k: [3, 1], f: 9, s: [1, 1], pad: p(1, 1, 0, 0), branch: true },
    { x: [2, 4, 4, 64], k: [3, 3], f: 11, s: [1, 1], pad: p(1, 1, 1, 1), branch: true },
    { x: [2, 7, 9, 16], k: [3, 3], f: 16, s: [1, 1], pad: p(0, 0, 0, 0), branch: true },
    { x: [3, 6, 5, 32], k: [3, 3], f: 17, s: [1, 1], pad: p(1, 1, 1, 1), branch: true },
    { x: [2, 9, 8, 16], k: [3, 3], f: 6, s: [2, 2], pad: p(1, 1, 1, 1), branch: false },
    { x: [2, 4, 5, 16], k: [1, 1], f: 7, s: [1, 1], pad: p(0, 0, 0, 0), branch: false },
    // Told x needs no gradient, and asked for it all the same: a second call gives it.
    { x: [2, 6, 7, 16], k: [3, 3], f: 5, s: [1, 1], pad: p(1, 1, 1, 1), branch: false, noInputGradient: true },
  ];
  for (const [i, c] of RANK_CASES.entries()) {
    it(`SvdRankConv2D${c.branch ? ' with the branch' : ''}${c.noInputGradient ? ' (told x needs no gradient)' : ''}: y${c.branch ? ', x again' : ''} and the gradients of x, V, s ${convName(c)}`, async () => {
      const [kh, kw] = c.k;
      const cin = c.x[3];
      const dims: [number, number, number, number] = [cin, kh, kw, c.f];
      // L = Σ conv(x, filter(V, s))·r (+ Σ x·q): on cpu with tfjs ops (x read twice, its gradients
      // summed by an Add), on native through the kernel, whose second output stands for x.
      const run = (ours: boolean) =>
        tf.tidy(() => {
          const x = tf.tensor4d(seededUniform(c.x.reduce((a, b) => a * b, 1), 40 + i), c.x);
          const v = tf.tensor2d(seededUniform(cin * kh * kw * c.f, 41 + i), [cin * kh * kw, c.f]);
          const sv = tf.tensor1d(seededUniform(c.f, 44 + i, 1, 0.5));
          const both = (a: tf.Tensor, b: tf.Tensor, d: tf.Tensor): [tf.Tensor, tf.Tensor] => {
            if (!ours) {
              const filter = tf.transpose(tf.reshape(tf.mul(b, d), dims), [1, 2, 0, 3]) as tf.Tensor4D;
              return [tf.conv2d(a as tf.Tensor4D, filter, c.s, c.pad as 'same'), a];
            }
            const attrs = { strides: c.s, pad: c.pad, dataFormat: 'NHWC', dilations: [1, 1], dims, perm: [1, 2, 0, 3], branch: c.branch, inputGradient: !c.noInputGradient } as unknown as tf.NamedAttrMap;
            const out = tf.engine().runKernel(RANK_CONV, { x: a, v: b, s: d }, attrs) as unknown as tf.Tensor | tf.Tensor[];
            return Array.isArray(out) ? [out[0]!, out[1]!] : [out, a];
          };
          const [y, again] = both(x, v, sv);
          const r = tf.tensor(seededUniform(y.size, 42 + i), y.shape);
          const q = tf.tensor(seededUniform(x.size, 43 + i), x.shape);
          const [dx, dv, ds] = tf.grads((a: tf.Tensor, b: tf.Tensor, d: tf.Tensor) => {
            const [ya, aa] = both(a, b, d);
            return c.branch ? tf.add(tf.sum(tf.mul(ya, r)), tf.sum(tf.mul(aa, q))) : tf.sum(tf.mul(ya, r));
          })([x, v, sv]);
          return { y: y.dataSync(), again: again.dataSync(), x: x.dataSync(), dx: dx!.dataSync(), dv: dv!.dataSync(), ds: ds!.dataSync() };
        });
      const want = await onBackend('cpu', () => run(false));
      const addon = native.ok ? native.addon : undefined;
      const stock = addon?.conv2dBackpropInput;
      let withRes = 0;
      if (addon && stock) addon.conv2dBackpropInput = (...args) => ((withRes += args[4] ? 1 : 0), stock(...args));
      try {
        const got = await onBackend('native', () => expectNoLeakedTensors(() => run(true)));
        expect(Array.from(got.again), 'the second output is x').toEqual(Array.from(got.x));
        expectClose(`${convName(c)} y`, got.y, want.y, TOL.backendRel * 10);
        expectClose(`${convName(c)} dx`, got.dx, want.dx, TOL.backendRel * 10);
        expectClose(`${convName(c)} dV`, got.dv, want.dv, TOL.backendRel * 10);
        expectClose(`${convName(c)} ds`, got.ds, want.ds, TOL.backendRel * 10);
        // A 1×1 conv at stride 1 runs as a matmul (no conv2dBackpropInput call, res or not).
        expect(withRes, 'input-gradient calls given the shortcut gradient').toBe(c.branch ? 1 : 0);
      } finally {
        if (addon && stock) addon.conv2dBackpropInput = stock;
      }
    });
  }

  it('SvdRankConv2D skips the input gradient where its caller says x needs none (the network\'s input), and its dV and ds stay right', async () => {
    const c = { x: [2, 8, 8, 3] as const, f: 6 };
    const dims: [number, number, number, number] = [3, 3, 3, c.f];
    const run = (ours: boolean) =>
      tf.tidy(() => {
        const x = tf.tensor4d(seededUniform(2 * 8 * 8 * 3, 60), [...c.x]);
        const v = tf.tensor2d(seededUniform(27 * c.f, 61), [27, c.f]);
        const sv = tf.tensor1d(seededUniform(c.f, 62, 1, 0.5));
        const r = tf.tensor(seededUniform(2 * 8 * 8 * c.f, 63), [2, 8, 8, c.f]);
        const conv = (b: tf.Tensor, d: tf.Tensor) =>
          ours
            ? (tf.engine().runKernel(RANK_CONV, { x, v: b, s: d }, { strides: [1, 1], pad: p(1, 1, 1, 1), dataFormat: 'NHWC', dilations: [1, 1], dims, perm: [1, 2, 0, 3], branch: false, inputGradient: false } as unknown as tf.NamedAttrMap) as tf.Tensor)
            : tf.conv2d(x, tf.transpose(tf.reshape(tf.mul(b, d), dims), [1, 2, 0, 3]) as tf.Tensor4D, 1, p(1, 1, 1, 1) as 'same');
        const [dv, ds] = tf.grads((b: tf.Tensor, d: tf.Tensor) => tf.sum(tf.mul(conv(b, d), r)))([v, sv]);
        return { dv: dv!.dataSync(), ds: ds!.dataSync() };
      });
    const want = await onBackend('cpu', () => run(false));
    const addon = native.ok ? native.addon : undefined;
    const stock = addon!.conv2dBackpropInput;
    let inputGradients = 0;
    addon!.conv2dBackpropInput = (...args) => (inputGradients++, stock(...args));
    try {
      const got = await onBackend('native', () => run(true));
      expectClose('dV', got.dv, want.dv, TOL.backendRel * 10);
      expectClose('ds', got.ds, want.ds, TOL.backendRel * 10);
      expect(inputGradients, 'input-gradient calls').toBe(0);
    } finally {
      addon!.conv2dBackpropInput = stock;
    }
  });

  it('SvdMeanPool (global average pooling) and its gradient match tf.mean over axes 1, 2', async () => {
    for (const shape of [[3, 8, 8, 64], [2, 1, 5, 7], [1, 1, 1, 3]] as [number, number, number, number][]) {
      const run = (ours: boolean) =>
        tf.tidy(() => {
          const x = tf.tensor4d(seededUniform(shape.reduce((a, b) => a * b, 1), 50, 2, 0.3), shape);
          const r = tf.tensor2d(seededUniform(shape[0] * shape[3], 51), [shape[0], shape[3]]);
          const pool = (a: tf.Tensor) => (ours ? meanPool(a as tf.Tensor4D) : tf.mean(a, [1, 2]));
          const [dx] = tf.grads((a: tf.Tensor) => tf.sum(tf.mul(pool(a), r)))([x]);
          return { y: pool(x).dataSync(), dx: dx!.dataSync() };
        });
      const want = await onBackend('cpu', () => run(false));
      const addon = native.ok ? native.addon : undefined;
      const stock = addon?.meanPoolGrad;
      let calls = 0;
      if (addon && stock) addon.meanPoolGrad = (...args) => (calls++, stock(...args));
      try {
        const got = await onBackend('native', () => run(true));
        expectClose(`[${shape}] y`, got.y, want.y, TOL.backendRel);
        expectClose(`[${shape}] dx`, got.dx, want.dx, TOL.backendRel);
        expect(calls, `[${shape}] the gradient ran on the addon`).toBe(1);
      } finally {
        if (addon && stock) addon.meanPoolGrad = stock;
      }
    }
  });

  it('Conv2D with dilation 2 (forward; tfjs has no dilated conv gradient)', async () => {
    const run = () =>
      tf.tidy(() => {
        const x = tf.tensor4d(seededUniform(2 * 9 * 9 * 3, 1), [2, 9, 9, 3]);
        const w = tf.tensor4d(seededUniform(3 * 3 * 3 * 4, 2), [3, 3, 3, 4]);
        return tf.conv2d(x, w, 1, 'same', 'NHWC', 2).dataSync() as Float32Array;
      });
    expectClose('dilated conv', await onBackend('native', run), await onBackend('cpu', run), TOL.backendRel * 10);
  });

  it('FusedConv2D (tfjs-layers Conv2D): bias and ReLU x=[2,7,6,3] f=[3,3,3,5] s=2 same, and without bias', async () => {
    const run = () =>
      tf.tidy(() => {
        const x = tf.tensor4d(seededUniform(2 * 7 * 6 * 3, 31), [2, 7, 6, 3]);
        const w = tf.tensor4d(seededUniform(3 * 3 * 3 * 5, 32), [3, 3, 3, 5]);
        const bias = tf.tensor1d(seededUniform(5, 33));
        const a = tf.fused.conv2d({ x, filter: w, strides: 2, pad: 'same', bias, activation: 'relu' });
        const b = tf.fused.conv2d({ x, filter: w, strides: 1, pad: 'valid' });
        const c = tf.fused.conv2d({ x, filter: w, strides: 1, pad: 'same', bias, activation: 'elu' }); // the wasm kernel's
        const d = tf.fused.conv2d({ x, filter: w, strides: 1, pad: 'same', bias: tf.tensor1d([-0.25]), activation: 'relu' });
        const e = tf.fused.conv2d({ x, filter: w, strides: 1, pad: 'same', activation: 'relu' });
        return [a, b, c, d, e].map((t) => t.dataSync() as Float32Array);
      });
    const want = await onBackend('cpu', run);
    const got = await onBackend('native', run);
    ['bias+relu', 'plain', 'bias+elu (stock)', 'one bias for all channels+relu', 'relu alone'].forEach((n, k) =>
      expectClose(`fused conv ${n}`, got[k]!, want[k]!, TOL.backendRel * 10),
    );
  });

  for (const [i, c] of MAT_CASES.entries()) {
    it(`BatchMatMul${c.forwardOnly ? '' : ' and its gradients'} ${matName(c)}`, async () => {
      const want = await onBackend('cpu', () => matAll(c, 7 * i));
      const got = await onBackend('native', () => matAll(c, 7 * i));
      expectClose(`${matName(c)} y`, got.y, want.y, TOL.backendRel * 10);
      expectClose(`${matName(c)} da`, got.da, want.da, TOL.backendRel * 10);
      expectClose(`${matName(c)} db`, got.db, want.db, TOL.backendRel * 10);
    });
  }

  it('batch norm forward and gradients x=[3,5,4,7] (odd channels) and x=[1,1,1,16] (M = 1)', async () => {
    for (const shape of [[3, 5, 4, 7], [1, 1, 1, 16], [6, 3]]) {
      const c = shape[shape.length - 1]!;
      const run = () =>
        tf.tidy(() => {
          const x = tf.tensor(seededUniform(shape.reduce((a, b) => a * b, 1), 3), shape);
          const g = tf.tensor1d(seededUniform(c, 4));
          const b = tf.tensor1d(seededUniform(c, 5));
          const r = tf.tensor(seededUniform(x.size, 6), shape);
          const f = (xa: tf.Tensor, ga: tf.Tensor, ba: tf.Tensor) => batchNormTrain(xa, ga, ba, 1e-5).y;
          const [dx, dg, db] = tf.grads((xa: tf.Tensor, ga: tf.Tensor, ba: tf.Tensor) => tf.sum(tf.mul(f(xa, ga, ba), r)))([x, g, b]);
          const { y, mean, variance } = batchNormTrain(x, g, b, 1e-5);
          return [y, mean, variance, dx!, dg!, db!].map((t) => t.dataSync() as Float32Array);
        });
      const want = await onBackend('cpu', run);
      const got = await onBackend('native', run);
      // M = 1: x̂ = 0 everywhere, so dx and dγ are exactly zero-sized in norm: compare absolutely.
      ['y', 'mean', 'variance', 'dx', 'dgamma', 'dbeta'].forEach((n, k) => {
        const ref = want[k]!;
        const norm = Math.hypot(...ref);
        if (norm < 1e-6) expect(Math.max(...got[k]!.map(Math.abs))).toBeLessThan(1e-5);
        else expectClose(`bn x=[${shape}] ${n}`, got[k]!, ref, TOL.backendRel * 10);
      });
    }
  });

  it('few-output conv kernels give the same gradients on two threads as on one (images split across threads)', () => {
    if (!native.ok) return;
    const a = native.addon;
    const before = a.getThreads();
    try {
      // 32×32×16 to 5 outputs (filter and input gradient), 16×16×32 to 7 (the filter gradient's unit groups of two channel blocks).
      for (const [n, h, c, f] of [[6, 32, 16, 5], [5, 16, 32, 7]] as const) {
        const shape = [n, h, h, c, f, 3, 3, h, h, 1, 1, 1, 1, 1, 1, 1, 1];
        const x = seededUniform(n * h * h * c, 101 + f);
        const dy = seededUniform(n * h * h * f, 102 + f);
        const w = seededUniform(9 * c * f, 103 + f);
        const res = seededUniform(n * h * h * c, 104 + f);
        const run = (threads: number) => {
          a.setThreads([threads]);
          const dw = new Float32Array(9 * c * f);
          const dx = new Float32Array(n * h * h * c);
          a.conv2dBackpropFilter(x, dy, dw, shape);
          a.conv2dBackpropInput(dy, w, dx, shape, res);
          return { dw, dx };
        };
        const one = run(1);
        const two = run(2);
        expectClose(`[${n},${h},${h},${c}] → ${f} filter gradient, 2 threads`, two.dw, one.dw, 1e-5);
        expectClose(`[${n},${h},${h},${c}] → ${f} input gradient, 2 threads`, two.dx, one.dx, 1e-6);
      }
    } finally {
      a.setThreads([before]);
    }
  });

  it('conv2dBackpropInputAdd adds an input gradient into dx in place: 1×1 convs against a float64 reference (AVX-512 at 16, 32 and 64 channels, the plain loop at 3 and 48; one and two threads), a 3×3 through oneDNN and an add', () => {
    if (!native.ok) return;
    const a = native.addon;
    const add = a.conv2dBackpropInputAdd!;
    const before = a.getThreads();
    try {
      // [n, h, w, c, f, sh, sw]: the downsampling shortcuts' shapes, odd sizes (a last row and column
      // the stride skips), stride 1, unequal strides, more outputs than inputs.
      const cases = [[3, 5, 5, 16, 7, 2, 2], [2, 6, 4, 32, 32, 2, 2], [2, 3, 3, 64, 11, 2, 2], [3, 4, 6, 16, 9, 2, 1], [2, 5, 4, 48, 5, 2, 2], [2, 4, 4, 3, 4, 1, 1], [1, 2, 2, 16, 40, 1, 1]] as const;
      for (const [n, h, w, c, f, sh, sw] of cases) {
        const [oh, ow] = [Math.floor((h - 1) / sh) + 1, Math.floor((w - 1) / sw) + 1];
        const shape = [n, h, w, c, f, 1, 1, oh, ow, sh, sw, 1, 1, 0, 0, 0, 0];
        const dy = seededUniform(n * oh * ow * f, 201 + f);
        const wt = seededUniform(c * f, 202 + f);
        const dx0 = seededUniform(n * h * w * c, 203 + f);
        const want = Float64Array.from(dx0);
        for (let i = 0; i < n * oh * ow; i++) {
          const [img, row, col] = [Math.floor(i / (oh * ow)), Math.floor(i / ow) % oh, i % ow];
          const at = ((img * h + row * sh) * w + col * sw) * c;
          for (let o = 0; o < f; o++) for (let k = 0; k < c; k++) want[at + k]! += dy[i * f + o]! * wt[k * f + o]!;
        }
        for (const threads of [1, 2]) {
          a.setThreads([threads]);
          const dx = dx0.slice();
          add(dy, wt, dx, shape);
          expectClose(`1×1 [${n},${h},${w},${c}] → ${f} stride ${sh}×${sw}, ${threads} thread(s)`, dx, Float32Array.from(want), 1e-6);
        }
      }
      // Through oneDNN and an add: a 3×3 conv (stride 2, pad 1), and a 1×1 conv with bottom and right
      // padding (output pixels past the image, which the in-place kernel must not take: it would
      // write past dx).
      for (const [label, shape] of [
        ['3×3 stride 2', [2, 6, 6, 16, 5, 3, 3, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0]],
        ['1×1 with bottom and right padding', [2, 4, 4, 16, 5, 1, 1, 6, 5, 1, 1, 1, 1, 0, 0, 2, 1]],
      ] as const) {
        const [n, h, w, c, f, kh, kw, oh, ow] = shape;
        const [dy, wt, dx0] = [seededUniform(n * oh * ow * f, 211), seededUniform(kh * kw * c * f, 212), seededUniform(n * h * w * c, 213)];
        const grad = new Float32Array(dx0.length);
        a.conv2dBackpropInput(dy, wt, grad, [...shape]);
        const dx = dx0.slice();
        add(dy, wt, dx, [...shape]);
        expectClose(label, dx, dx0.map((v, i) => v + grad[i]!), 1e-6);
      }
    } finally {
      a.setThreads([before]);
    }
  });

  it('hugeFloat32 gives a zeroed, writable Float32Array of the length asked (on huge pages where the system allows), and refuses bad lengths', () => {
    if (!native.ok) return;
    const a = native.addon;
    for (const n of [1, 262_144, 1_000_003]) {
      const arr = a.hugeFloat32!([n]);
      expect(arr).toBeInstanceOf(Float32Array);
      expect(arr.length).toBe(n);
      expect(arr.every((v) => v === 0), `${n} zeros`).toBe(true);
      arr[n - 1] = 7;
      arr.fill(3, 0, Math.min(n, 100));
      expect(arr[n - 1]).toBe(n <= 100 ? 3 : 7);
    }
    for (const bad of [[0], [-1], [1.5], []] as unknown as [number][]) expect(errorCodeOf(() => a.hugeFloat32!(bad)), JSON.stringify(bad)).toMatch(/^NATIVE_BAD_ARGUMENT: hugeFloat32/);
  });

  it('training batch norm on the AVX-512 kernels, the AVX2 kernels (C 16, 32, 64) and the generic loops against a float64 reference, mask bits included', () => {
    if (!native.ok) return;
    const a = native.addon;
    // [M, C, offset]: M not a multiple of the kernels' 64-row blocks; M = 1; C 48 (generic only);
    // an offset of 1000 with unit spread (the one-pass variance about the first rows' mean).
    const cases: [number, number, number][] = [[200, 16, 0], [130, 32, 0], [70, 64, 0], [1, 16, 0], [90, 48, 0], [300, 16, 1000]];
    for (const [m, c, offset] of cases) {
      const x = seededUniform(m * c, 91 + c).map((v, i) => offset + v * (1 + (i % c) / c));
      const gamma = seededUniform(c, 92).map((v) => 1 + v);
      const beta = seededUniform(c, 93);
      const res = seededUniform(m * c, 94);
      const dy = seededUniform(m * c, 95);
      // The reference, in float64: the same residual and ReLU.
      const mean = new Float64Array(c);
      const vr = new Float64Array(c);
      for (let i = 0; i < m; i++) for (let j = 0; j < c; j++) mean[j] += x[i * c + j]! / m;
      for (let i = 0; i < m; i++) for (let j = 0; j < c; j++) vr[j] += (x[i * c + j]! - mean[j]!) ** 2 / m;
      const inv = vr.map((v) => 1 / Math.sqrt(v + 1e-5));
      const y = new Float64Array(m * c);
      const g = new Float64Array(m * c);
      const sdy = new Float64Array(c);
      const sdyx = new Float64Array(c);
      for (let i = 0; i < m; i++)
        for (let j = 0; j < c; j++) {
          const k = i * c + j;
          y[k] = Math.max(0, (x[k]! - mean[j]!) * inv[j]! * gamma[j]! + beta[j]! + res[k]!);
          g[k] = y[k]! > 0 ? dy[k]! : 0;
          sdy[j] += g[k]!;
          sdyx[j] += g[k]! * (x[k]! - mean[j]!) * inv[j]!;
        }
      const dx = new Float64Array(m * c);
      for (let i = 0; i < m; i++)
        for (let j = 0; j < c; j++) {
          const k = i * c + j;
          dx[k] = (gamma[j]! * inv[j]! / m) * (m * g[k]! - sdy[j]! - (x[k]! - mean[j]!) * inv[j]! * sdyx[j]!);
        }
      // 2: the AVX2 kernels, which a CPU without AVX-512 runs, here too where the CPU has AVX-512.
      for (const fast of cpuHasAvx2Fma() ? ([1, 2, 0] as const) : ([1, 0] as const)) {
        a.setFastBatchNorm!([fast]);
        const tag = `bn [${m}, ${c}] offset ${offset} fast ${fast}`;
        const [yo, mo, vo] = [new Float32Array(m * c), new Float32Array(c), new Float32Array(c)];
        const mask = new Uint16Array(m * Math.ceil(c / 16));
        a.batchNormForward(x, gamma, beta, yo, mo, vo, [m, c], 1e-5, res, 1, mask);
        // M = 1: zero variance, x̂ = (x − mean)·316 amplifies the rounding of the scale and shift; at
        // an offset of 1000 a float mean is good to ~3e-5 (what would fail is a variance lost to cancellation).
        const loose = m === 1 || offset !== 0;
        expectClose(`${tag} y`, yo, Float32Array.from(y), loose ? 1e-4 : 1e-5);
        expectClose(`${tag} mean`, mo, Float32Array.from(mean), 1e-6);
        if (m > 1) expectClose(`${tag} variance`, vo, Float32Array.from(vr), loose ? 1e-3 : 1e-4);
        // The mask holds y > 0 wherever the fast backward could read it.
        if (c % 16 === 0 && c !== 48 && (cpuHasAvx512() || cpuHasAvx2Fma())) {
          for (let i = 0; i < m; i++)
            for (let j = 0; j < c; j++) expect(((mask[i * (c / 16) + (j >> 4)]! >> (j & 15)) & 1) === 1, `${tag} mask bit ${i},${j}`).toBe(yo[i * c + j]! > 0);
        }
        for (const withMask of [true, false]) {
          const [dxo, dg, db, dres] = [new Float32Array(m * c), new Float32Array(c), new Float32Array(c), new Float32Array(m * c)];
          a.batchNormBackward(x, dy, mo, vo, gamma, dxo, dg, db, [m, c], 1e-5, yo, dres, withMask ? mask : undefined);
          expectClose(`${tag} mask ${withMask} dres`, dres, Float32Array.from(g), 1e-6);
          expectClose(`${tag} mask ${withMask} dbeta`, db, Float32Array.from(sdy), 1e-5);
          if (m > 1) {
            expectClose(`${tag} mask ${withMask} dgamma`, dg, Float32Array.from(sdyx), loose ? 1e-3 : 1e-4);
            expectClose(`${tag} mask ${withMask} dx`, dxo, Float32Array.from(dx), loose ? 1e-3 : 1e-4);
          }
        }
      }
      a.setFastBatchNorm!([1]);
    }
  });

  it('eval-mode batch norm (one SvdAffine pass) and its gradients x=[2,3,4,5] and x=[7,16]', async () => {
    const run = (shape: number[]) => () =>
      tf.tidy(() => {
        const c = shape[shape.length - 1]!;
        const x = tf.tensor(seededUniform(shape.reduce((a, b) => a * b, 1), 41), shape);
        const [mean, gamma, beta] = [42, 43, 44].map((seed) => tf.tensor1d(seededUniform(c, seed)));
        const variance = tf.abs(tf.tensor1d(seededUniform(c, 45)));
        const r = tf.tensor(seededUniform(x.size, 46), shape);
        const f = (xa: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => batchNormInfer(xa, mean!, variance, g, b, 1e-5);
        const [dx, dg, db] = tf.grads((xa: tf.Tensor, g: tf.Tensor, b: tf.Tensor) => tf.sum(tf.mul(f(xa, g, b), r)))([x, gamma!, beta!]);
        return [f(x, gamma!, beta!), dx!, dg!, db!].map((t) => t.dataSync() as Float32Array);
      });
    for (const shape of [[2, 3, 4, 5], [7, 16]]) {
      const want = await onBackend('cpu', run(shape));
      const got = await onBackend('native', run(shape));
      expect(tf.getKernel(AFFINE, 'wasm'), 'SvdAffine is registered while the native kernels are').toBeDefined();
      ['y', 'dx', 'dgamma', 'dbeta'].forEach((n, k) => expectClose(`bn infer [${shape}] ${n}`, got[k]!, want[k]!, TOL.backendRel * 10));
    }
  });

  it('a forward with 16 < f < 32 output channels runs oneDNN at 32 and returns f', async () => {
    // From 32 input channels: from 64 our few-output kernel takes f up to 48 (above).
    const c: ConvCase = { x: [2, 4, 4, 32], k: [3, 3], f: 23, s: [1, 1], pad: p(1, 1, 1, 1) };
    const want = await onBackend('cpu', () => convAll(c, 5));
    const { got, keys } = await onBackend('native', () => ({ got: convAll(c, 5), keys: Object.keys(native.ok ? native.addon.implementations() : {}) }));
    expectClose('f=23 y', got.y, want.y, TOL.backendRel * 10);
    expect(keys).toContain('f,2,4,4,32,32,3,3,4,4,1,1,1,1,1,1,1,1');
    expect(keys).not.toContain('f,2,4,4,32,23,3,3,4,4,1,1,1,1,1,1,1,1');
  });

  // [M, R, C]: C = 16, 32, 48, 64 take the AVX-512 kernel (rows in blocks of 8, 8, 6, 4, so M is
  // chosen to leave partial blocks), C = 24 and 1 the plain loop.
  const PW_CASES: [number, number, number][] = [[37, 5, 16], [13, 41, 64], [9, 3, 32], [11, 2, 48], [5, 7, 24], [1, 1, 1], [64, 1, 16]];
  for (const [m, r, c] of PW_CASES) {
    it(`SvdPointwiseAffine [M=${m}, R=${r}] x [R, C=${c}] + shift (+ residual) (ReLU) matches t·w + shift in float64`, async () => {
      for (const [relu, withRes] of [[false, false], [true, true], [true, false], [false, true]] as const) {
        const t = seededUniform(m * r, 61 + m);
        const w = seededUniform(r * c, 62 + r);
        const shift = seededUniform(c, 63);
        const res = seededUniform(m * c, 64);
        const want = new Float64Array(m * c);
        for (let i = 0; i < m; i++) {
          for (let j = 0; j < c; j++) {
            let v = shift[j]! + (withRes ? res[i * c + j]! : 0);
            for (let o = 0; o < r; o++) v += t[i * r + o]! * w[o * c + j]!;
            want[i * c + j] = relu ? Math.max(v, 0) : v;
          }
        }
        const got = await onBackend('native', () =>
          tf.tidy(() => {
            const inputs: Record<string, tf.Tensor> = { t: tf.tensor2d(t, [m, r]), w: tf.tensor2d(w, [r, c]), shift: tf.tensor1d(shift) };
            if (withRes) inputs.residual = tf.tensor2d(res, [m, c]);
            return tf.engine().runKernel<tf.Tensor>(POINTWISE_AFFINE, inputs, { relu }).dataSync() as Float32Array;
          }),
        );
        expectClose(`pointwise [${m},${r},${c}] relu=${relu} residual=${withRes}`, got, want, TOL.backendRel * 10);
      }
    });
  }

  it('ReLU gradient kernel x=[2,3,4,5] matches dy·step(x), ties at 0 included', async () => {
    const run = () =>
      tf.tidy(() => {
        const xs = seededUniform(120, 9);
        xs[0] = 0;
        xs[1] = -0;
        const x = tf.tensor(xs, [2, 3, 4, 5]);
        const r = tf.tensor(seededUniform(120, 10), [2, 3, 4, 5]);
        return tf.grad((a: tf.Tensor) => tf.sum(tf.mul(tf.relu(a), r)))(x).dataSync() as Float32Array;
      });
    // dy·step(x) is −0 where dy < 0 and x ≤ 0; the kernel writes +0. The sign of a zero gradient
    // changes nothing, so zeros are compared without it.
    const unsigned = (a: Float32Array) => Array.from(a, (v) => (v === 0 ? 0 : v));
    expect(unsigned(await onBackend('native', run))).toEqual(unsigned(await onBackend('cpu', run)));
  });

  it('Add: a same-shape float32 pair from 16,384 elements runs on the addon; smaller, broadcast or int32 on wasm; all equal to cpu', async () => {
    const cases: [number[], number[], 'float32' | 'int32', number][] = [
      [[4, 32, 32, 16], [4, 32, 32, 16], 'float32', 1],
      [[16384], [16384], 'float32', 1],
      [[3, 5], [3, 5], 'float32', 0],
      [[64, 8, 8, 64], [64], 'float32', 0],
      [[20000], [20000], 'int32', 0],
    ];
    const addon = native.ok ? native.addon : undefined;
    const nativeAdd = addon?.add;
    let addonCalls = 0;
    if (addon && nativeAdd) addon.add = (...args) => (addonCalls++, nativeAdd(...args));
    try {
      for (const [sa, sb, dtype, want] of cases) {
        const run = () =>
          tf.tidy(() => {
            const make = (shape: number[], seed: number) => {
              const n = shape.reduce((p, d) => p * d, 1);
              return dtype === 'int32' ? tf.tensor(Int32Array.from({ length: n }, (_, i) => (i * seed) % 97), shape, 'int32') : tf.tensor(seededUniform(n, seed), shape);
            };
            return Array.from(tf.add(make(sa, 31), make(sb, 32)).dataSync());
          });
        addonCalls = 0;
        const got = await onBackend('native', run);
        expect(addonCalls, `[${sa}] + [${sb}] ${dtype}: addon calls`).toBe(want);
        expect(got, `[${sa}] + [${sb}] ${dtype}`).toEqual(await onBackend('cpu', run));
      }
    } finally {
      if (addon) addon.add = nativeAdd;
    }
  });

  it('central-difference gradient checks on native: conv (stride 2, asymmetric pad), matmul, batch norm', async () => {
    await onBackend('native', () => {
      const x = tf.tensor4d(seededUniform(1 * 5 * 6 * 3, 21), [1, 5, 6, 3]);
      const w = tf.tensor4d(seededUniform(3 * 2 * 3 * 2, 22), [3, 2, 3, 2]);
      gradCheck((a, b) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, 2, [[0, 0], [1, 0], [0, 1], [0, 0]]), [x, w], { label: 'native conv' });
      const a = tf.tensor3d(seededUniform(2 * 3 * 4, 23), [2, 3, 4]);
      const b = tf.tensor3d(seededUniform(2 * 4 * 5, 24), [2, 4, 5]);
      gradCheck((p1, p2) => tf.matMul(p1 as tf.Tensor3D, p2 as tf.Tensor3D), [a, b], { label: 'native matmul' });
      const bx = tf.tensor4d(seededUniform(2 * 3 * 2 * 4, 25), [2, 3, 2, 4]);
      const g = tf.tensor1d(seededUniform(4, 26));
      const bb = tf.tensor1d(seededUniform(4, 27));
      gradCheck((p1, p2, p3) => batchNormTrain(p1, p2, p3, 1e-5).y, [bx, g, bb], { label: 'native batch norm' });
      tf.dispose([x, w, a, b, bx, g, bb]);
    });
  });

  it('leaks no tensors or backend buffers through conv, matmul, batch norm (train and eval) and ReLU, forward and backward', async () => {
    await onBackend('native', () =>
      expectNoLeakedTensors(() => {
        convAll(CONV_CASES[1]!, 1);
        matAll(MAT_CASES[4]!, 1);
        tf.tidy(() => {
          const x = tf.tensor4d(seededUniform(2 * 4 * 4 * 3, 1), [2, 4, 4, 3]);
          const g = tf.ones([3]);
          const b = tf.zeros([3]);
          tf.grads((xa: tf.Tensor, ga: tf.Tensor) => tf.sum(tf.relu(batchNormTrain(xa, ga, b, 1e-5).y)))([x, g]);
          batchNormTrain(x, g, b, 1e-5).mean.dispose();
          tf.grads((xa: tf.Tensor, ga: tf.Tensor) => tf.sum(batchNormInfer(xa, b, g, ga, b, 1e-5)))([x, g]);
        });
      }, 'native kernels'),
    );
  });

  /**
   * The float64 reference of a row conv + affine: y[q, x, :] = Σ_j t[q, x·sw + j − pl, :]·w[j] + shift
   * (+ res[q, x, :]), then the ReLU; t [Q, Win, R] (any float array), w [kw, R, C], columns outside
   * the row read as zero.
   */
  const rowConvReference = (
    t: ArrayLike<number>, g: { q: number; win: number; wout: number; kw: number; sw: number; pl: number; r: number; c: number },
    w: Float32Array, shift: Float32Array, res: Float32Array | null, relu: boolean,
  ): Float64Array => {
    const { q, win, wout, kw, sw, pl, r, c } = g;
    const want = new Float64Array(q * wout * c);
    for (let i = 0; i < q; i++)
      for (let x = 0; x < wout; x++)
        for (let k = 0; k < c; k++) {
          let v = shift[k]! + (res ? res[(i * wout + x) * c + k]! : 0);
          for (let j = 0; j < kw; j++) {
            const col = x * sw + j - pl;
            if (col < 0 || col >= win) continue;
            for (let o = 0; o < r; o++) v += t[(i * win + col) * r + o]! * w[(j * r + o) * c + k]!;
          }
          want[(i * wout + x) * c + k] = relu ? Math.max(v, 0) : v;
        }
    return want;
  };

  // [Q, Win, kw, sw, pl, pr, R, C]: the spatial layers' 1×3 convs at stride 1 and 2 ('same' pads 1/1
  // and 0/1), a 5-tap kernel with pads 2/2, a row narrower than the kernel (no interior column: every
  // pixel takes the edge path), rows long enough for blocks of 8, 4, 2 and 1 pixels; C = 16, 32,
  // 48, 64 take the AVX-512 kernel, C = 24 and 3 the plain loop.
  const ROW_CASES: [number, number, number, number, number, number, number, number][] = [
    [3, 32, 3, 1, 1, 1, 13, 16],
    [2, 32, 3, 2, 0, 1, 5, 32],
    [4, 15, 3, 2, 1, 1, 7, 64],
    [2, 19, 5, 1, 2, 2, 4, 48],
    [3, 2, 3, 1, 1, 1, 3, 16],
    [2, 9, 3, 1, 1, 1, 6, 24],
    [1, 7, 1, 1, 0, 0, 2, 3],
  ];
  for (const [q, win, kw, sw, pl, pr, r, c] of ROW_CASES) {
    const wout = Math.floor((win + pl + pr - kw) / sw) + 1;
    it(`SvdRowConvAffine [Q=${q}, Win=${win}, R=${r}] * [kw=${kw}, stride ${sw}, pads ${pl}/${pr}] -> C=${c} + shift (+ residual) (ReLU) matches the float64 conv`, async () => {
      for (const [relu, withRes] of [[false, false], [true, true], [true, false], [false, true]] as const) {
        const t = seededUniform(q * win * r, 71 + win);
        const w = seededUniform(kw * r * c, 72 + r);
        const shift = seededUniform(c, 73);
        const res = seededUniform(q * wout * c, 74);
        const want = rowConvReference(t, { q, win, wout, kw, sw, pl, r, c }, w, shift, withRes ? res : null, relu);
        const got = await onBackend('native', () =>
          tf.tidy(() => {
            const inputs: Record<string, tf.Tensor> = { t: tf.tensor4d(t, [1, q, win, r]), w: tf.tensor3d(w, [kw, r, c]), shift: tf.tensor1d(shift) };
            if (withRes) inputs.residual = tf.tensor4d(res, [1, q, wout, c]);
            const y = tf.engine().runKernel<tf.Tensor>(ROW_CONV_AFFINE, inputs, { outWidth: wout, strideW: sw, padLeft: pl, relu });
            expect(y.shape).toEqual([1, q, wout, c]);
            return y.dataSync() as Float32Array;
          }),
        );
        expectClose(`row conv relu=${relu} residual=${withRes}`, got, want, TOL.backendRel * 10);
      }
    });
  }

  // [N, H, W, Cin, kh, sh, pt, pb, R, kw, sw, pl, pr, C]: whole spatial layers at stride 1 and 2
  // ('same' pads), R above and below 16 and above 48 (1-4 padded vectors), an image narrower and
  // shorter than the kernel, a 5×5 layer with wide pads; C = 16..64 take the AVX-512 kernel, C = 24
  // and 3 the plain loop.
  const SPATIAL_CASES: [number, number, number, number, number, number, number, number, number, number, number, number, number, number][] = [
    [2, 8, 32, 16, 3, 1, 1, 1, 13, 3, 1, 1, 1, 16],
    [2, 8, 9, 32, 3, 2, 0, 1, 18, 3, 2, 0, 1, 64],
    [1, 5, 7, 8, 3, 1, 1, 1, 50, 3, 1, 1, 1, 48],
    [1, 2, 2, 16, 3, 1, 1, 1, 5, 3, 1, 1, 1, 32],
    [2, 9, 11, 5, 5, 2, 2, 2, 33, 5, 1, 2, 2, 16],
    [1, 6, 6, 3, 3, 1, 1, 1, 4, 3, 1, 1, 1, 24],
    [1, 4, 5, 2, 1, 1, 0, 0, 2, 1, 1, 0, 0, 3],
  ];
  for (const [n, h, w, cin, kh, sh, pt, pb, r, kw, sw, pl, pr, c] of SPATIAL_CASES) {
    const oh = Math.floor((h + pt + pb - kh) / sh) + 1;
    const ow = Math.floor((w + pl + pr - kw) / sw) + 1;
    it(`SvdSpatialAffine [${n},${h},${w},${cin}] * [${kh}x1 to R=${r}, stride ${sh}, pads ${pt}/${pb}] * [1x${kw} to C=${c}, stride ${sw}, pads ${pl}/${pr}] matches the two float64 convs`, async () => {
      for (const [relu, withRes] of [[false, false], [true, true]] as const) {
        const x = seededUniform(n * h * w * cin, 81 + h);
        const k1 = seededUniform(kh * cin * r, 82 + r);
        const w2 = seededUniform(kw * r * c, 83 + c);
        const shift = seededUniform(c, 84);
        const res = seededUniform(n * oh * ow * c, 85);
        const t = new Float64Array(n * oh * w * r);
        for (let b = 0; b < n; b++)
          for (let i = 0; i < oh; i++)
            for (let col = 0; col < w; col++)
              for (let o = 0; o < r; o++) {
                let v = 0;
                for (let j = 0; j < kh; j++) {
                  const row = i * sh + j - pt;
                  if (row < 0 || row >= h) continue;
                  for (let ci = 0; ci < cin; ci++) v += x[((b * h + row) * w + col) * cin + ci]! * k1[(j * cin + ci) * r + o]!;
                }
                t[((b * oh + i) * w + col) * r + o] = v;
              }
        const want = rowConvReference(t, { q: n * oh, win: w, wout: ow, kw, sw, pl, r, c }, w2, shift, withRes ? res : null, relu);
        const got = await onBackend('native', () =>
          tf.tidy(() => {
            const inputs: Record<string, tf.Tensor> = { x: tf.tensor4d(x, [n, h, w, cin]), k1: tf.tensor3d(k1, [kh, cin, r]), w2: tf.tensor3d(w2, [kw, r, c]), shift: tf.tensor1d(shift) };
            if (withRes) inputs.residual = tf.tensor4d(res, [n, oh, ow, c]);
            const attrs = { strideH: sh, padTop: pt, outHeight: oh, strideW: sw, padLeft: pl, outWidth: ow, relu };
            const y = tf.engine().runKernel<tf.Tensor>(SPATIAL_AFFINE, inputs, attrs);
            expect(y.shape).toEqual([n, oh, ow, c]);
            return y.dataSync() as Float32Array;
          }),
        );
        expectClose(`spatial layer relu=${relu} residual=${withRes}`, got, want, TOL.backendRel * 10);
      }
    });
  }

  it('bad arguments become JS errors with a code, never a crash', () => {
    if (!native.ok) return;
    const a = native.addon;
    const f = (n: number) => new Float32Array(n);
    const code = errorCodeOf;
    expect(code(() => a.conv2d(f(4), f(4), f(4), [1, 2]))).toMatch(/^NATIVE_BAD_ARGUMENT: conv2d: shape has 2 entries; expected 17/);
    // A y buffer too small for the output: refused before oneDNN writes past it.
    expect(code(() => a.conv2d(f(16), f(9), f(3), [1, 4, 4, 1, 1, 3, 3, 2, 2, 1, 1, 1, 1, 0, 0, 0, 0]))).toMatch(/^NATIVE_BAD_ARGUMENT: .*y has 3 elements; expected 4/);
    // An output size that does not follow from the rest.
    expect(code(() => a.conv2d(f(16), f(9), f(9), [1, 4, 4, 1, 1, 3, 3, 3, 3, 1, 1, 1, 1, 0, 0, 0, 0]))).toMatch(/^NATIVE_BAD_ARGUMENT: .*does not follow/);
    expect(code(() => a.matmul(f(6), f(6), f(4), [1, 1, 2, 3, 2, 0, 0]))).toBe('no error');
    expect(code(() => a.matmul(f(6), f(6), f(4), [2, 3, 2, 3, 2, 0, 0]))).toMatch(/^NATIVE_BAD_ARGUMENT: matmul: .*batch sizes must be equal or 1/);
    expect(code(() => a.batchNormForward(f(6), f(3), f(3), f(6), f(3), f(3), [2, 3], Number.NaN))).toBe('no error');
    expect(code(() => a.matmul(new Int32Array(6) as unknown as Float32Array, f(6), f(4), [1, 1, 2, 3, 2, 0, 0]))).toMatch(/^NATIVE_BAD_ARGUMENT: matmul: a must be a Float32Array/);
    expect(code(() => a.setThreads([0]))).toMatch(/^NATIVE_BAD_ARGUMENT/);
    expect(code(() => a.setPrefetch!([1, 2]))).toMatch(/^NATIVE_BAD_ARGUMENT: setPrefetch: flags must be 0 or 1/);
    expect(code(() => a.setPrefetch!([1, 1]))).toBe('no error');
    expect(code(() => a.setFastBatchNorm!([3]))).toMatch(/^NATIVE_BAD_ARGUMENT: setFastBatchNorm: on must be 0, 1 or 2/);
    if (!cpuHasAvx2Fma()) expect(code(() => a.setFastBatchNorm!([2]))).toMatch(/^NATIVE_BAD_ARGUMENT: setFastBatchNorm: 2 \(the AVX2 kernels\) needs a CPU with AVX2 and FMA/);
    a.setFastBatchNorm!([1]);
    expect(code(() => a.batchNormForward(f(32), f(16), f(16), f(32), f(16), f(16), [2, 16], 1e-5, f(0), 1, new Uint16Array(1)))).toMatch(/^NATIVE_BAD_ARGUMENT: batchNormForward: mask has 1 elements; expected 2/);
    expect(code(() => a.batchNormBackward(f(32), f(32), f(16), f(16), f(16), f(32), f(16), f(16), [2, 16], 1e-5, f(0), f(0), new Uint16Array(2)))).toMatch(/^NATIVE_BAD_ARGUMENT: batchNormBackward: mask stands in for y/);
    expect(code(() => a.scalePermute!(f(12), f(3), f(12), [4, 3], [1, 0]))).toBe('no error');
    expect(code(() => a.scalePermute!(f(12), f(3), f(12), [5, 3], [1, 0]))).toMatch(/^NATIVE_BAD_ARGUMENT: scalePermute: dims do not hold the elements of a/);
    expect(code(() => a.scalePermute!(f(12), f(3), f(12), [4, 3], [1, 1]))).toMatch(/^NATIVE_BAD_ARGUMENT: scalePermute: perm is not a permutation/);
    expect(code(() => a.scalePermuteGrad!(f(12), f(12), f(5), f(12), f(5), [4, 3], [0, 1]))).toMatch(/^NATIVE_BAD_ARGUMENT: scalePermuteGrad: a's length must be a multiple of s's/);
    expect(code(() => a.meanPool!(f(12), f(4), [2, 3, 2]))).toBe('no error');
    expect(code(() => a.meanPool!(f(12), f(3), [2, 3, 2]))).toMatch(/^NATIVE_BAD_ARGUMENT: meanPool: .*y has 3 elements; expected 4/);
    expect(code(() => a.meanPoolGrad!(f(4), f(12), [2, 0, 2]))).toMatch(/^NATIVE_BAD_ARGUMENT: meanPoolGrad: shape must be \[N >= 1, P >= 1, C >= 1\]/);
    expect(code(() => a.conv2dBackpropInput(f(16), f(9), f(16), [1, 4, 4, 1, 1, 3, 3, 4, 4, 1, 1, 1, 1, 1, 1, 1, 1], f(15)))).toMatch(/^NATIVE_BAD_ARGUMENT: .*res has 15 elements; expected 16/);
    expect(code(() => a.conv2dBackpropInputAdd!(f(4 * 7), f(16 * 7), f(16 * 16 - 1), [1, 4, 4, 16, 7, 1, 1, 2, 2, 2, 2, 1, 1, 0, 0, 0, 0]))).toMatch(/^NATIVE_BAD_ARGUMENT: .*dx has 255 elements; expected 256/);
    expect(code(() => a.conv2dBackpropInputAdd!(f(4 * 7), f(16 * 7), f(256), [1, 4, 4, 16, 7, 1, 1, 3, 3, 2, 2, 1, 1, 0, 0, 0, 0]))).toMatch(/^NATIVE_BAD_ARGUMENT: .*does not follow/);
    expect(code(() => a.add!(f(6), f(5), f(6)))).toMatch(/^NATIVE_BAD_ARGUMENT: add: b has 5 elements; expected 6/);
    expect(code(() => a.add!(f(6), f(6), f(7)))).toMatch(/^NATIVE_BAD_ARGUMENT: add: out has 7 elements; expected 6/);
    expect(code(() => a.affine(f(6), f(3), f(3), f(6), [2, 3, 0]))).toBe('no error');
    expect(code(() => a.affine(f(6), f(0), f(0), f(6), [2, 3, 1]))).toBe('no error');
    expect(code(() => a.affine(f(6), f(2), f(3), f(6), [2, 3, 0]))).toMatch(/^NATIVE_BAD_ARGUMENT: affine: scale has 2 elements; expected 3/);
    expect(code(() => a.affine(f(6), f(3), f(3), f(5), [2, 3, 0]))).toMatch(/^NATIVE_BAD_ARGUMENT: affine: y has 5 elements; expected 6/);
    expect(code(() => a.affine(f(6), f(3), f(3), f(6), [2, 3, 2]))).toMatch(/^NATIVE_BAD_ARGUMENT: affine: .*relu 0 or 1/);
    // M = 2 rows, R = 3, C = 2: t 6, w 6, shift 2, y and residual 4.
    expect(code(() => a.pointwiseAffine(f(6), f(6), f(2), f(4), [2, 3, 2, 1], f(4)))).toBe('no error');
    expect(code(() => a.pointwiseAffine(f(6), f(6), f(2), f(4), [2, 3, 2, 0], f(0)))).toBe('no error');
    expect(code(() => a.pointwiseAffine(f(6), f(5), f(2), f(4), [2, 3, 2, 0]))).toMatch(/^NATIVE_BAD_ARGUMENT: pointwiseAffine: w has 5 elements; expected 6/);
    expect(code(() => a.pointwiseAffine(f(6), f(6), f(2), f(4), [2, 3, 2, 0], f(5)))).toMatch(/^NATIVE_BAD_ARGUMENT: pointwiseAffine: residual has 5 elements; expected 4/);
    expect(code(() => a.pointwiseAffine(f(0), f(0), f(2), f(4), [2, 0, 2, 0]))).toMatch(/^NATIVE_BAD_ARGUMENT: pointwiseAffine: .*R >= 1/);
    expect(code(() => a.pointwiseAffine(f(6), f(6), f(2), f(4), [2, 3, 2, 2]))).toMatch(/^NATIVE_BAD_ARGUMENT: pointwiseAffine: .*relu 0 or 1/);
    // Q = 2 rows of Win = 4, kw = 3, stride 1, pl = 1 (Wout 4), R = 2, C = 3: t 16, w 18, shift 3, y and residual 24.
    expect(code(() => a.rowConvAffine(f(16), f(18), f(3), f(24), [2, 4, 4, 3, 1, 1, 2, 3, 1], f(24)))).toBe('no error');
    expect(code(() => a.rowConvAffine(f(16), f(18), f(3), f(24), [2, 4, 4, 3, 1, 1, 2, 3, 1, 0] as unknown as Parameters<typeof a.rowConvAffine>[4]))).toMatch(/^NATIVE_BAD_ARGUMENT: rowConvAffine: shape has 10 entries; expected 9/);
    expect(code(() => a.rowConvAffine(f(15), f(18), f(3), f(24), [2, 4, 4, 3, 1, 1, 2, 3, 0]))).toMatch(/^NATIVE_BAD_ARGUMENT: rowConvAffine: t has 15 elements; expected 16/);
    expect(code(() => a.rowConvAffine(f(16), f(18), f(3), f(24), [2, 4, 4, 3, 1, 1, 2, 3, 0], f(23)))).toMatch(/^NATIVE_BAD_ARGUMENT: rowConvAffine: residual has 23 elements; expected 24/);
    // An output wider than the row and padding allow (its last column would lie wholly in padding).
    expect(code(() => a.rowConvAffine(f(16), f(18), f(3), f(36), [2, 4, 6, 3, 1, 1, 2, 3, 0]))).toMatch(/^NATIVE_BAD_ARGUMENT: rowConvAffine: Wout 6 does not fit Win 4/);
    expect(code(() => a.rowConvAffine(f(16), f(18), f(3), f(24), [2, 4, 4, 3, 1, 3, 2, 3, 0]))).toMatch(/^NATIVE_BAD_ARGUMENT: rowConvAffine: .*0 <= pl < kw/);
    expect(code(() => a.rowConvAffine(f(16), f(18), f(3), f(24), [2, 4, 4, 3, 0, 1, 2, 3, 0]))).toMatch(/^NATIVE_BAD_ARGUMENT: rowConvAffine: .*sw >= 1/);
    // N 1, H 3, W 4, Cin 2, 3×1 to R 2 (pt 1), 1×3 to C 3 (pl 1), stride 1: x 24, k1 12, w2 18, shift 3, y and residual 36.
    const sp = (...v: number[]) => v as unknown as Parameters<typeof a.spatialAffine>[5];
    expect(code(() => a.spatialAffine(f(24), f(12), f(18), f(3), f(36), sp(1, 3, 4, 2, 3, 1, 1, 3, 2, 3, 1, 1, 4, 3, 1), f(36)))).toBe('no error');
    expect(code(() => a.spatialAffine(f(24), f(11), f(18), f(3), f(36), sp(1, 3, 4, 2, 3, 1, 1, 3, 2, 3, 1, 1, 4, 3, 1)))).toMatch(/^NATIVE_BAD_ARGUMENT: spatialAffine: k1 has 11 elements; expected 12/);
    expect(code(() => a.spatialAffine(f(24), f(12), f(18), f(3), f(36), sp(1, 3, 4, 2, 3, 1, 1, 3, 2, 3, 1, 1, 4, 3, 1), f(35)))).toMatch(/^NATIVE_BAD_ARGUMENT: spatialAffine: residual has 35 elements; expected 36/);
    expect(code(() => a.spatialAffine(f(24), f(12), f(18), f(3), f(60), sp(1, 3, 4, 2, 3, 1, 1, 5, 2, 3, 1, 1, 4, 3, 1)))).toMatch(/^NATIVE_BAD_ARGUMENT: spatialAffine: OH 5 does not fit H 3/);
    expect(code(() => a.spatialAffine(f(24), f(12), f(18), f(3), f(54), sp(1, 3, 4, 2, 3, 1, 1, 3, 2, 3, 1, 1, 6, 3, 1)))).toMatch(/^NATIVE_BAD_ARGUMENT: spatialAffine: OW 6 does not fit W 4/);
    expect(code(() => a.spatialAffine(f(24), f(12), f(18), f(3), f(36), sp(1, 3, 4, 2, 3, 1, 3, 3, 2, 3, 1, 1, 4, 3, 1)))).toMatch(/^NATIVE_BAD_ARGUMENT: spatialAffine: .*0 <= pt < kh/);
    expect(code(() => a.spatialAffine(f(24), f(12), f(18), f(3), f(36), sp(1, 3, 4, 2, 3, 1, 1, 3, 2, 3, 1, 1, 4, 3)))).toMatch(/^NATIVE_BAD_ARGUMENT: spatialAffine: shape has 14 entries; expected 15/);
    expect(code(() => a.spatialAffine(f(24), f(12), f(18), f(3), f(36), sp(2 ** 20, 2 ** 20, 4, 2 ** 10, 3, 1, 1, 3, 2, 3, 1, 1, 4, 3, 1)))).toMatch(/^NATIVE_BAD_ARGUMENT: spatialAffine: a tensor of .* elements is too large/);
    // No images but a row 2^30 wide: nothing to compute, and the row buffer is refused, not allocated.
    expect(code(() => a.spatialAffine(f(0), f(12), f(18), f(3), f(0), sp(0, 3, 2 ** 30, 2, 3, 1, 1, 3, 2, 3, 1, 1, 2 ** 30, 3, 1)))).toMatch(/^NATIVE_BAD_ARGUMENT: spatialAffine: a row of W 1073741824 x R 2 .*too large/);
    // Sizes whose products would overflow: refused before any buffer is read.
    expect(code(() => a.rowConvAffine(f(16), f(18), f(3), f(24), [2 ** 20, 2 ** 20, 1, 1, 1, 0, 2 ** 20, 3, 0]))).toMatch(/^NATIVE_BAD_ARGUMENT: rowConvAffine: a tensor of .* elements is too large/);
    // Every entry point, with sizes whose products wrap int64 to 0 (so that empty arrays would pass
    // the length checks): once a segfault, a floating-point exception or an abort, now refused.
    const e = f(0);
    const big = 2 ** 32;
    const tooLarge = (name: string) => new RegExp(`^NATIVE_BAD_ARGUMENT: ${name}: a tensor of .* elements is too large`);
    expect(code(() => a.affine(e, e, e, e, [big, big, 0]))).toMatch(tooLarge('affine'));
    expect(code(() => a.matmul(e, e, e, [big, 1, big, 1, 1, 0, 0]))).toMatch(tooLarge('matmul'));
    expect(code(() => a.conv2d(e, e, e, [big, big, 1, 16, 1, 3, 3, big, 1, 1, 1, 1, 1, 1, 1, 1, 1]))).toMatch(tooLarge('conv2d'));
    expect(code(() => a.batchNormForward(e, e, e, e, e, e, [2 ** 40, 2], 1e-5))).toMatch(tooLarge('batchNormForward'));
    expect(code(() => a.batchNormBackward(e, e, e, e, e, e, e, e, [2 ** 40, 2], 1e-5))).toMatch(tooLarge('batchNormBackward'));
    expect(code(() => a.pointwiseAffine(e, e, e, e, [big, 1, big, 0]))).toMatch(tooLarge('pointwiseAffine'));
    expect(code(() => a.rankBnForward(e, e, e, e, e, e, e, e, e, e, e, [big, 1, big, 0, 0], 1e-5))).toMatch(tooLarge('rankBnForward'));
    expect(code(() => a.rankBnBackward(e, e, e, e, e, e, e, e, e, e, e, e, e, [big, 1, big, 0]))).toMatch(tooLarge('rankBnBackward'));
  });

  it('an int32 matmul is not ours: it reaches the stock wasm kernel (and its own error), not oneDNN', async () => {
    const run = () => tf.tidy(() => tf.matMul(tf.tensor2d([1, 2, 3, 4], [2, 2], 'int32'), tf.tensor2d([5, 6, 7, 8], [2, 2], 'int32')).dataSync());
    await expect(onBackend('native', run)).rejects.toThrow(/BatchMatMul for non non-float32 tensors not yet supported/);
  });
});
