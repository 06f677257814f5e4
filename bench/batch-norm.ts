/**
 * Training batch norm's kernels against each other, call by call: `pnpm bench batch-norm [--batch 64]
 * [--reps 40]`.
 *
 * For the ResNets' three shapes (32×32×16, 16×16×32, 8×8×64 at the given batch), times the addon's
 * batchNormForward (with a shortcut, the ReLU and its mask) and batchNormBackward (mask, shortcut
 * gradient) on batch_norm.cc's AVX-512 kernels, its AVX2 kernels (what a CPU without AVX-512 runs)
 * and the generic loops, switched in one process (setFastBatchNorm 1, 2, 0) and interleaved, median
 * of --reps. Modes the CPU cannot run are left out.
 */
import { loadNative } from '@svd-train/native';
import { batchNormModeRuns } from './lib/native.js';
import { median, rand } from './lib/stats.js';

const args = process.argv.slice(2);
const arg = (k: string, d: string) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1]! : d;
};
const batch = Number(arg('--batch', '64'));
const reps = Math.max(5, Number(arg('--reps', '40')));
const nat = loadNative();
if (!nat.ok || typeof nat.addon.setFastBatchNorm !== 'function') {
  console.error(`the native addon with setFastBatchNorm is not available${nat.ok ? '' : ` (${nat.reason}); fix: ${nat.fix}`}`);
  process.exit(2);
}
const a = nat.addon;
const setMode = a.setFastBatchNorm!.bind(a);
const names: Record<number, string> = { 1: 'AVX-512 kernels (or AVX2 where the CPU lacks AVX-512)', 2: 'AVX2 kernels', 0: 'generic loops' };
const modes = ([1, 2, 0] as const).filter((m) => batchNormModeRuns(a, m));

console.log(`\nTraining batch norm, batch ${batch}: ms per call (median of ${reps}, modes interleaved)\n`);
console.log('| activation | kernels | forward | backward | both | generic loops ÷ this |');
console.log('|---|---|---:|---:|---:|---:|');
for (const [h, c] of [
  [32, 16],
  [16, 32],
  [8, 64],
] as const) {
  const m = batch * h * h;
  const [x, dy, res] = [rand(m * c, 1), rand(m * c, 2), rand(m * c, 3)];
  const gamma = rand(c, 4).map((v) => 1 + v);
  const beta = rand(c, 5);
  const [y, dx, dres] = [new Float32Array(m * c), new Float32Array(m * c), new Float32Array(m * c)];
  const [mean, variance, dgamma, dbeta] = [new Float32Array(c), new Float32Array(c), new Float32Array(c), new Float32Array(c)];
  const mask = new Uint16Array((m * c) / 16);
  const t = new Map(modes.map((k) => [k, { fwd: [] as number[], bwd: [] as number[] }]));
  for (let rep = 0; rep < reps + 2; rep++) {
    for (let j = 0; j < modes.length; j++) {
      const k = modes[(j + rep) % modes.length]!;
      setMode([k]);
      const t0 = performance.now();
      a.batchNormForward(x, gamma, beta, y, mean, variance, [m, c], 1e-5, res, 1, mask);
      const t1 = performance.now();
      a.batchNormBackward(x, dy, mean, variance, gamma, dx, dgamma, dbeta, [m, c], 1e-5, y, dres, mask);
      const t2 = performance.now();
      if (rep >= 2) t.get(k)!.fwd.push(t1 - t0), t.get(k)!.bwd.push(t2 - t1);
    }
  }
  setMode([1]);
  const both = (k: 0 | 1 | 2) => median(t.get(k)!.fwd) + median(t.get(k)!.bwd);
  for (const k of modes) {
    const { fwd, bwd } = t.get(k)!;
    console.log(`| ${h}×${h}×${c} | ${names[k]} | ${median(fwd).toFixed(3)} | ${median(bwd).toFixed(3)} | ${both(k).toFixed(3)} | ${(both(0) / both(k)).toFixed(2)} |`);
  }
}
