/**
 * Our few-output-channel conv kernels against oneDNN, layer by layer: `pnpm bench small-oc
 * [--batch 64] [--reps 15]`.
 *
 * For the convs a pruned ResNet-20 runs in the first half of its factored layers (3×3 in the channel
 * form, 3×1 in the spatial one, 1×1 in a factored shortcut; 32×32×16, 16×16×32 and 8×8×64 inputs,
 * stride 1, and 32×32×16 at stride 2) to a range of ranks (output channels), times the
 * forward and the filter gradient through the addon directly, with the small-OC kernels switched on
 * and off in the same process, and checks that both give the same numbers. The time is the minimum
 * of `--reps` calls after two warm-up calls: these calls take milliseconds, so on a shared machine
 * the minimum is the run that was not interrupted. The addon only takes a shape when the CPU has
 * AVX-512 and the channel counts fit (see packages/native/src/small_oc_conv.h); elsewhere both
 * columns are oneDNN's.
 *
 * A last table puts a spatial layer's six conv ops (its 3×1 conv to the rank r and 1×3 conv back,
 * forward, filter and input gradients, each on the faster of ours and oneDNN's) beside the full-rank
 * 3×3 conv's three, with the MACs each op runs per ms: what a pruned spatial layer gains in a
 * training step for its MACs.
 */
import { loadNative } from '@svd-train/native';
import { rand } from './lib/stats.js';

const args = process.argv.slice(2);
const arg = (k: string, d: string) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1]! : d;
};
const batch = Number(arg('--batch', '64'));
const reps = Math.max(3, Number(arg('--reps', '15')));
const nat = loadNative();
if (!nat.ok) {
  console.error(`the native addon is not available (${nat.reason}); fix: ${nat.fix}`);
  process.exit(2);
}
const a = nat.addon;

function best(fn: () => void): number {
  fn();
  fn();
  let t = Infinity;
  for (let i = 0; i < reps; i++) {
    const t0 = performance.now();
    fn();
    t = Math.min(t, performance.now() - t0);
  }
  return t;
}

/** Largest |difference| relative to the largest |value| of `want`. */
function relErr(got: Float32Array, want: Float32Array): number {
  let d = 0;
  let m = 0;
  for (let i = 0; i < want.length; i++) {
    d = Math.max(d, Math.abs(got[i]! - want[i]!));
    m = Math.max(m, Math.abs(want[i]!));
  }
  return d / Math.max(m, 1e-30);
}

/** One table: convs of kh×kw taps (pad (kh−1)/2, (kw−1)/2) from each input to each output count. */
function table(kh: number, kw: number, title: string, fs: readonly number[]): void {
  const ph = (kh - 1) / 2;
  const pw = (kw - 1) / 2;
  console.log(`\n${title}, batch ${batch}: ms (min of ${reps}); × = oneDNN / ours\n`);
  console.log('| input | stride | out ch | fwd oneDNN | fwd ours | fwd × | filter grad oneDNN | filter grad ours | filter grad × | max rel diff |');
  console.log('|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|');
  for (const [h, c, s] of [
    [32, 16, 1],
    [32, 16, 2],
    [16, 32, 1],
    [8, 64, 1],
  ] as const) {
    for (const f of fs) {
      const oh = Math.floor((h + 2 * ph - kh) / s) + 1;
      const ow = Math.floor((h + 2 * pw - kw) / s) + 1;
      const shape = [batch, h, h, c, f, kh, kw, oh, ow, s, s, 1, 1, ph, pw, ph, pw];
      const x = rand(batch * h * h * c, 1);
      const w = rand(kh * kw * c * f, 2);
      const dy = rand(batch * oh * ow * f, 3);
      const y = [new Float32Array(dy.length), new Float32Array(dy.length)];
      const dw = [new Float32Array(w.length), new Float32Array(w.length)];
      const t: number[] = [];
      for (const on of [0, 1]) {
        a.setSmallOcKernels([on]);
        t.push(best(() => a.conv2d(x, w, y[on]!, shape)), best(() => a.conv2dBackpropFilter(x, dy, dw[on]!, shape)));
      }
      a.setSmallOcKernels([1]);
      const [f0, w0, f1, w1] = t as [number, number, number, number];
      const err = Math.max(relErr(y[1]!, y[0]!), relErr(dw[1]!, dw[0]!));
      console.log(`| ${h}×${h}×${c} | ${s} | ${f} | ${f0.toFixed(2)} | ${f1.toFixed(2)} | ${(f0 / f1).toFixed(2)} | ${w0.toFixed(2)} | ${w1.toFixed(2)} | ${(w0 / w1).toFixed(2)} | ${err.toExponential(1)} |`);
    }
  }
}

table(3, 3, '3×3 convs (the channel form\'s first half), pad 1', [1, 2, 3, 5, 8, 10, 12, 13, 16, 24]);
table(3, 1, '3×1 convs (the spatial form\'s first half), pad (1, 0)', [4, 7, 9, 13, 18, 24, 39, 64]);
table(1, 1, '1×1 convs (a factored shortcut\'s first half)', [5, 13, 24, 39, 64]);

/** A conv's forward, filter gradient and input gradient in ms, each the faster with the small-OC kernels on and off, and its MACs. */
function threeOps(h: number, c: number, f: number, kh: number, kw: number): { ms: number[]; macs: number } {
  const [ph, pw] = [(kh - 1) / 2, (kw - 1) / 2];
  const shape = [batch, h, h, c, f, kh, kw, h, h, 1, 1, 1, 1, ph, pw, ph, pw];
  const x = rand(batch * h * h * c, 1);
  const w = rand(kh * kw * c * f, 2);
  const dy = rand(batch * h * h * f, 3);
  const [y, dw, dx] = [new Float32Array(dy.length), new Float32Array(w.length), new Float32Array(x.length)];
  const ms = [Infinity, Infinity, Infinity];
  for (const on of [0, 1]) {
    a.setSmallOcKernels([on]);
    const t = [best(() => a.conv2d(x, w, y, shape)), best(() => a.conv2dBackpropFilter(x, dy, dw, shape)), best(() => a.conv2dBackpropInput(dy, w, dx, shape))];
    t.forEach((v, i) => (ms[i] = Math.min(ms[i]!, v)));
  }
  a.setSmallOcKernels([1]);
  return { ms, macs: batch * h * h * c * f * kh * kw };
}

console.log(`\nA spatial layer's six conv ops against the full-rank 3×3 conv's three, stride 1, batch ${batch}: ms (min of ${reps}, the faster of ours and oneDNN's), MACs per ns in brackets\n`);
console.log('| input | rank | conv | forward | filter grad | input grad | all | full rank ÷ this |');
console.log('|---|---:|---|---:|---:|---:|---:|---:|');
for (const [h, c, ranks] of [
  [32, 16, [6, 8, 12]],
  [16, 32, [8, 12, 16]],
  [8, 64, [13, 24, 41]],
] as const) {
  const row = (r: number | string, conv: string, o: { ms: number[]; macs: number }, full?: number) => {
    const all = o.ms.reduce((p, q) => p + q);
    console.log(`| ${h}×${h}×${c} | ${r} | ${conv} | ${o.ms.map((t) => `${t.toFixed(2)} (${(o.macs / t / 1e6).toFixed(0)})`).join(' | ')} | ${all.toFixed(2)} | ${full ? (full / all).toFixed(2) : '–'} |`);
    return all;
  };
  const full = row('full', `3×3 ${c}→${c}`, threeOps(h, c, c, 3, 3));
  for (const r of ranks) {
    const first = threeOps(h, c, r, 3, 1);
    const second = threeOps(h, r, c, 1, 3);
    row(r, `3×1 ${c}→${r}`, first);
    const both = { ms: first.ms.map((t, i) => t + second.ms[i]!), macs: first.macs + second.macs };
    row(r, `1×3 ${r}→${c}`, second);
    row(r, `both (${((100 * both.macs) / (batch * h * h * c * c * 9)).toFixed(0)}% of the MACs)`, both, full);
  }
}
