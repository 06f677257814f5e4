/**
 * Does pruning pay? `pnpm bench prune [--backend auto|wasm|cpu|tensorflow] [--batch 64]
 * [--infer-batch 256] [--reps 5] [--warmup 2] [--burst 3] [--energies 0.001,0.01,0.05,0.1] [--ckpt FILE]
 * [--profile] [--no-torch] [--ranks-ckpt FILE] [--also-ranks FILE,FILE…]`.
 *
 * Times, on one engine in one run, ResNet-20 at full rank against the same model pruned at several
 * energies: one training step (`computeGradients`: train-mode forward, CE + both SVD regularizers,
 * backward, read-back) and inference (`evaluate`: eval-mode forward of the whole batch, read-back),
 * images/s from the median of `--reps` interleaved rounds after `--warmup` rounds, so drifting load
 * from other processes hits every model alike; in each round each model runs `--burst` times in a
 * row and all but the first are timed (one model's calls follow each other in training and
 * evaluation; a lone call after another model's ran on caches full of that model's buffers and
 * varied a row by up to 6% against the same model's next row), and each round starts one model
 * further on. Every SVD layer
 * runs its cheaper form ('auto'), so the full-rank model is all merged and costs what the plain
 * ResNet-20 costs.
 *
 * Speed depends on the ranks only, not on the values, so the pruned models come from a spectrum:
 * with `--ckpt`, the singular values of a trained checkpoint; by default a synthetic one,
 * s_j = exp(−8·j/r) in every layer (energy e then keeps about ln(1/e)/16 of each rank). One more
 * row uses the real per-layer ranks of the 3-epoch run pruned at e=0.01
 * (docs/results/resnet20-channel-hoyer-3ep/prune-e0.01.txt), and two rows force that model all
 * merged or all factored, to check the MAC-based choice against measured time; on the native
 * engine one more row runs it with every conv on oneDNN (our small-OC kernels off), one (inference
 * only) with each factored layer's second conv (1×1, or 1×k spatial) and its batch norm as two
 * kernels (fused-inference.ts off), one (training) with the regularizer as taped tfjs ops instead
 * of one addon call (native-regularizer.ts off), one with the addon's prefetches off (with a
 * full-rank row the same way), and one with batch norm, ReLU and the shortcut's add as separate layers (`fuseBatchNorm: false`).
 * Inference on the native engine runs the whole model as one lanes-network call (lanes-inference.ts)
 * where the CPU has AVX-512; two inference-only rows time the full-rank and the real-ranks model per
 * op instead, and every inference ratio is against the faster of the full rank's two. `--ranks-ckpt` takes
 * those ranks from a pruned checkpoint instead (e.g. a pipeline's `pruned-e*.svdckpt`), and its
 * decomposition: a spatial checkpoint's ranks are benched against the spatial full-rank model.
 * `--also-ranks` adds one row per further pruned checkpoint of the same decomposition (e.g. the same
 * trained model pruned another way), timed in the same interleaved rounds, so their ratios are
 * taken in one run with the rest. Two inference-only
 * rows time the deployment path, `export --stock --fold-bn`, of the full-rank and the pruned model
 * (their speed-up is against the full-rank export). `--profile` adds, for the full-rank and the
 * real-ranks model, the time per kernel of one training step (on tfjs' tape) and one inference, and
 * on the native engine the time per addon call of the native training step, by call and by shape,
 * to show where a pruned model's time goes.
 *
 * Is the speed-up ours to gain, or the ranks'? bench/prune_torch.py times the full-rank and the
 * real-ranks model in PyTorch (1 thread, each layer in the same cheaper form), and the table adds
 * PyTorch's speed-ups beside ours (`--no-torch` skips it).
 */
import { readFileSync } from 'node:fs';
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { loadCheckpoint, type BackendChoice, type Checkpoint } from '@svd-train/core';
import {
  buildResNet,
  computeGradients,
  countMacs,
  evaluate,
  exportToStockLayers,
  getParameters,
  initEngine,
  lanesInferenceAvailable,
  moduleNameFor,
  plainResNetCost,
  profileKernels,
  pruneByEnergy,
  setFusedInference,
  setFusedTraining,
  setShortcutGradientSum,
  setNativeTrainingStep,
  setRankSpaceBatchNormUpTo,
  setHugePageBuffers,
  setLanesInference,
  setNativeRegularizer,
  setParameters,
  setWeights,
} from '@svd-train/layers';
import { loadNative } from '@svd-train/native';
import { median, rand } from './lib/stats.js';
import { batchNormModeRuns, profileAddonCalls } from './lib/native.js';
import { runTorchScript } from './lib/torch.js';

const args = process.argv.slice(2);
const arg = (k: string) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : undefined;
};
const backend = (arg('--backend') ?? 'wasm') as BackendChoice;
const batch = Number(arg('--batch') ?? 64);
const inferBatch = Number(arg('--infer-batch') ?? 256);
const reps = Math.max(3, Number(arg('--reps') ?? 5));
const warmup = Number(arg('--warmup') ?? 2);
const burst = Math.max(2, Number(arg('--burst') ?? 3));
const energies = (arg('--energies') ?? '0.001,0.01,0.05,0.1').split(',').map(Number);
const ckptPath = arg('--ckpt');
const profile = args.includes('--profile');
const withTorch = !args.includes('--no-torch');
const root = join(dirname(fileURLToPath(import.meta.url)), '..');


/**
 * Median seconds of each of `fns`, measured in interleaved rounds (every fn once per round, `reps`
 * rounds, after `warmup` rounds), so that load from other processes drifting during the run hits
 * every model alike and the ratios stay fair.
 */
function timeInterleaved(fns: (() => void)[]): number[] {
  for (let k = 0; k < warmup; k++) fns.forEach((f) => f());
  const ts = fns.map(() => [] as number[]);
  for (let k = 0; k < reps; k++) {
    // Each round starts one model further on, so that no model always follows the same one.
    fns.forEach((_, j) => {
      const i = (j + k) % fns.length;
      const f = fns[i]!;
      // A burst of runs, the first untimed: training and evaluation run one model call after call,
      // and the first call after another model's finds the caches holding that model's buffers.
      f();
      for (let b = 1; b < burst; b++) {
        const t0 = performance.now();
        f();
        ts[i]!.push((performance.now() - t0) / 1000);
      }
    });
  }
  return ts.map(median);
}

/** The per-layer ranks of the recorded e=0.01 prune of the 3-epoch run (module name -> rank). */
function recordedRanks(): Record<string, number> {
  const txt = readFileSync(join(root, 'docs/results/resnet20-channel-hoyer-3ep/prune-e0.01.txt'), 'utf8');
  const out: Record<string, number> = {};
  for (const line of txt.split('\n')) {
    const c = line.trim().split(/\s+/);
    if (/^(stem|layers|fc)/.test(c[0] ?? '')) out[moduleNameFor(c[0]!)] = Number(c[2]);
  }
  return out;
}

/** The per-layer ranks of a pruned checkpoint: the length of each layer's s. */
function ranksOf(ckpt: Checkpoint): Record<string, number> {
  const out: Record<string, number> = {};
  for (const p of ckpt.params) if (p.name.endsWith('.s')) out[p.name.slice(0, -2)] = p.data.length;
  return out;
}

const info = await initEngine({ backend });
console.error(`backend ${info.reason}`);
const reg = { lambdaO: 1, lambdaS: 0.07, sparsity: 'hoyer' as const };
const plain = plainResNetCost({ depth: 20 });

const ranksCkpt = arg('--ranks-ckpt');
const ranksSource = ranksCkpt ? loadCheckpoint(ranksCkpt) : null;
// The decomposition is the ranks checkpoint's (a spatial run's pruned model is benched against the
// spatial full-rank model); without one, channel, the decomposition of the recorded ranks.
const decompositionOf = (c: Checkpoint | null) => (c?.config.decomposition === 'spatial' ? 'spatial' : 'channel');
const decomposition = decompositionOf(ranksSource);
const base = buildResNet({ depth: 20, svd: true, decomposition, seed: 1 });
if (ckptPath) {
  const c = loadCheckpoint(ckptPath);
  setWeights(base, c);
  console.error(`spectra from ${ckptPath} (step ${c.step})`);
} else {
  setParameters(
    base,
    getParameters(base).map((p) => (p.name.endsWith('.s') ? { ...p, data: Float32Array.from(p.data, (_, j) => Math.exp((-8 * j) / p.data.length)) } : p)),
  );
  console.error('synthetic spectra s_j = exp(-8 j / r)');
}

interface Variant {
  label: string;
  model: ReturnType<typeof buildResNet>;
  /** false: an inference-only export, timed for inference only. */
  train: boolean;
  /** false: timed with the native engine's small-OC kernels switched off. */
  smallOc?: boolean;
  /** false: inference timed with each factored conv's 1×1 conv and batch norm as separate kernels. */
  fused?: boolean;
  /** false: training timed with batch norm computed from the 1×1 conv's output, not from rank space. */
  fusedTraining?: boolean;
  /** false: training timed with the regularizer as taped tfjs ops, not one addon call. */
  nativeReg?: boolean;
  /** false: inference timed per op (the fused kernels), not as one lanes-network call. */
  lanes?: boolean;
  /** false: timed with the addon's prefetches off (packages/native/src/prefetch.h). */
  prefetch?: boolean;
  /** false: training timed with a block input's two gradients summed by tfjs' Add (fused-inference.ts `Step.branch` off). */
  shortcutSum?: boolean;
  /** false: inference timed with the lanes network writing every 1×1 conv's output whole (addon setLanesPairs off). */
  lanesPairs?: boolean;
  /** false: training timed on tfjs' tape, not the native step (native-step.ts). */
  nativeStep?: boolean;
  /** false: timed with training batch norm on the addon's generic loops, not batch_norm.cc's AVX-512 kernels (addon setFastBatchNorm off); 'avx2': on its AVX2 kernels, what a CPU without AVX-512 runs. */
  fastBn?: false | 'avx2';
  /** false: the native step takes batch norm from rank space at every rank (setRankSpaceBatchNormUpTo(Infinity)), not of the 1×1 conv's output above rank 16. */
  expanded?: boolean;
  /** false: the native step's buffers on plain 4 KiB pages (setHugePageBuffers(false)); a model of its own, since its program is compiled so. */
  hugePages?: boolean;
}
const variants: Variant[] = [{ label: 'full rank', model: base, train: true }];
// Inference of the full-rank model per op too: the ratios are against the faster of the two.
const lanesOn = info.backend === 'native' && lanesInferenceAvailable();
if (lanesOn) variants.push({ label: '  full rank, inference per op (lanes network off)', model: base, train: false, lanes: false });
// And its training step on tfjs' tape (the native step off), as it ran before native-step.ts.
const stepOn = info.backend === 'native';
if (stepOn) variants.push({ label: '  full rank, step on the tape (native step off)', model: base, train: true, nativeStep: false });
// And with the addon's streaming kernels not prefetching (here and for the real ranks below).
const prefetchSwitch = info.backend === 'native' ? loadNative() : null;
const canPrefetch = prefetchSwitch?.ok === true && typeof prefetchSwitch.addon.setPrefetch === 'function';
if (canPrefetch) variants.push({ label: '  full rank, prefetch off', model: base, train: true, prefetch: false });
// And with training batch norm on the addon's generic loops (full rank's merged layers run plain batch norm).
const fastBnSwitch = prefetchSwitch?.ok === true && typeof prefetchSwitch.addon.setFastBatchNorm === 'function' ? prefetchSwitch.addon : null;
if (fastBnSwitch) variants.push({ label: '  full rank, batch norm on the generic loops', model: base, train: true, fastBn: false });
// And on batch_norm.cc's AVX2 kernels (setFastBatchNorm([2]) throws where the CPU lacks AVX2 + FMA).
const avx2Bn = fastBnSwitch !== null && batchNormModeRuns(fastBnSwitch, 2);
if (avx2Bn) variants.push({ label: '  full rank, batch norm on the AVX2 kernels', model: base, train: true, fastBn: 'avx2' });
// And with the native step's buffers on 4 KiB pages (here and for the real ranks below): a copy of
// the model, whose program is compiled that way.
const hugeOn = stepOn && prefetchSwitch?.ok === true && typeof prefetchSwitch.addon.hugeFloat32 === 'function';
const copyOf = (m: ReturnType<typeof buildResNet>) => {
  const c = buildResNet({ depth: 20, svd: true, decomposition, seed: 1 });
  setParameters(c, getParameters(m));
  return c;
};
if (hugeOn) variants.push({ label: '  full rank, buffers on 4 KiB pages (huge pages off)', model: copyOf(base), train: true, hugePages: false });
for (const e of energies) variants.push({ label: `pruned e=${e}`, model: pruneByEnergy(base, e).model, train: true });
const ranks = ranksSource ? ranksOf(ranksSource) : recordedRanks();
const realLabel = ranksCkpt ? `real ranks (${basename(ranksCkpt)})` : 'real ranks e=0.01 (3-ep run)';
for (const forward of ['auto', 'reconstruct', 'factored'] as const) {
  const label = forward === 'auto' ? realLabel : `  same, all ${forward === 'reconstruct' ? 'merged' : 'factored'}`;
  variants.push({ label, model: buildResNet({ depth: 20, svd: true, decomposition, ranks, forward, seed: 1 }), train: true });
}
if (stepOn) variants.push({ label: '  same, step on the tape (native step off)', model: buildResNet({ depth: 20, svd: true, decomposition, ranks, seed: 1 }), train: true, nativeStep: false });
if (stepOn && decomposition === 'channel') {
  variants.push({ label: '  same, batch norm from rank space at every rank (above 16 too)', model: buildResNet({ depth: 20, svd: true, decomposition, ranks, seed: 1 }), train: true, expanded: false });
}
// On the native engine: the real-ranks model once more with every conv on oneDNN, to show what
// the small-OC kernels (packages/native/src/small_oc_conv.cc) gain.
const addon = info.backend === 'native' ? loadNative() : null;
if (addon?.ok) {
  variants.push({ label: '  same, every conv on oneDNN (small-OC kernels off)', model: buildResNet({ depth: 20, svd: true, decomposition, ranks, seed: 1 }), train: true, smallOc: false });
}
// And once more with the second conv (1×1 channel-wise, 1×k spatial) and batch norm of each
// factored layer as two kernels at inference (fused-inference.ts off), to show what the fused
// SvdPointwiseAffine / SvdRowConvAffine gains.
// And with inference per op (the fused kernels of the next row but one), to show what running the
// whole model as one lanes-network call (lanes-inference.ts) gains.
if (lanesOn) {
  variants.push({ label: '  same, inference per op (lanes network off)', model: buildResNet({ depth: 20, svd: true, decomposition, ranks, seed: 1 }), train: false, lanes: false });
  if (addon?.ok && typeof addon.addon.setLanesPairs === 'function') {
    variants.push({ label: '  same, lanes network without the row-by-row conv pairs', model: buildResNet({ depth: 20, svd: true, decomposition, ranks, seed: 1 }), train: false, lanesPairs: false });
  }
}
if (addon?.ok) {
  const second = decomposition === 'channel' ? '1×1' : '1×k';
  variants.push({ label: `  same, ${second} conv and batch norm as separate kernels at inference`, model: buildResNet({ depth: 20, svd: true, decomposition, ranks, seed: 1 }), train: false, fused: false });
}
if (addon?.ok && decomposition === 'channel') {
  // And in training with batch norm taken from the 1×1 conv's output (rank-space-batch-norm.ts off;
  // channel only: a spatial layer's second conv is 1×k, and its training batch norm is not fused).
  // (The tape's walk: the native step always takes batch norm from rank space and sums the gradients in the kernel.)
  variants.push({ label: '  same, on the tape, batch norm of the 1×1 conv\'s output in training', model: buildResNet({ depth: 20, svd: true, decomposition, ranks, seed: 1 }), train: true, fusedTraining: false, nativeStep: false });
  // And with a residual block input's two gradients summed by a separate Add, not in the conv's input-gradient kernel.
  variants.push({ label: '  same, on the tape, shortcut gradients summed by a separate Add', model: buildResNet({ depth: 20, svd: true, decomposition, ranks, seed: 1 }), train: true, shortcutSum: false, nativeStep: false });
}
// On the native engine, training with the regularizer as taped tfjs ops (native-regularizer.ts off).
if (info.backend === 'native') variants.push({ label: '  same, on the tape, regularizer as taped tfjs ops (not one native call)', model: buildResNet({ depth: 20, svd: true, decomposition, ranks, seed: 1 }), train: true, nativeReg: false, nativeStep: false });
if (canPrefetch) variants.push({ label: '  same, prefetch off', model: buildResNet({ depth: 20, svd: true, decomposition, ranks, seed: 1 }), train: true, prefetch: false });
if (hugeOn) variants.push({ label: '  same, buffers on 4 KiB pages (huge pages off)', model: buildResNet({ depth: 20, svd: true, decomposition, ranks, seed: 1 }), train: true, hugePages: false });
// The real-ranks model once more with batch norm, ReLU and the shortcut's add as separate layers
// (fuseBatchNorm: false), to show what carrying them in one batch-norm layer gains.
variants.push({ label: '  same, BN / ReLU / add as separate layers', model: buildResNet({ depth: 20, svd: true, decomposition, ranks, seed: 1, fuseBatchNorm: false }), train: true });
// Further pruned checkpoints, each in its cheaper forms (after the real-ranks model's own variants), in the same rounds.
for (const path of (arg('--also-ranks') ?? '').split(',').filter(Boolean)) {
  const c = loadCheckpoint(path);
  const d = decompositionOf(c);
  if (d !== decomposition) throw new Error(`--also-ranks ${path} is a ${d} checkpoint; expected ${decomposition}, the decomposition of the other rows (pass checkpoints of one decomposition)`);
  variants.push({ label: `ranks of ${basename(path)}`, model: buildResNet({ depth: 20, svd: true, decomposition, ranks: ranksOf(c), seed: 1 }), train: true });
}
variants.push({ label: 'plain ResNet-20', model: buildResNet({ depth: 20, svd: false, seed: 1 }), train: true });
// The deployment path: export --stock --fold-bn (filters merged once, BN folded into the convs).
const realRanks = variants.find((v) => v.label.startsWith('real ranks'))!.model;
variants.push({ label: 'full rank, stock export + folded BN', model: exportToStockLayers(base, { foldBatchNorm: true }), train: false });
variants.push({ label: `${realLabel}, stock export + folded BN`, model: exportToStockLayers(realRanks, { foldBatchNorm: true }), train: false });

const xTrain = rand(batch * 32 * 32 * 3, 1);
const yTrain = Int32Array.from({ length: batch }, (_, i) => i % 10);
const xInfer = rand(inferBatch * 32 * 32 * 3, 2);
const yInfer = Int32Array.from({ length: inferBatch }, (_, i) => i % 10);
console.error(`timing ${variants.length} models in ${reps} interleaved rounds (bursts of ${burst}, the first untimed) after ${warmup} warm-up rounds`);
const trainable = variants.filter((v) => v.train);
/** Runs f with the variant's small-OC setting, and leaves them on. */
const withKernels = (v: Variant, f: () => void) => () => {
  if (v.smallOc === false && addon?.ok) addon.addon.setSmallOcKernels([0]);
  // Every conv on oneDNN means per op at inference too (the lanes network is our own kernels).
  if (v.lanes === false || v.smallOc === false) setLanesInference(false);
  if (v.fused === false) setFusedInference(false);
  if (v.lanesPairs === false && addon?.ok) addon.addon.setLanesPairs?.([0]);
  if (v.fusedTraining === false) setFusedTraining(false);
  if (v.shortcutSum === false) setShortcutGradientSum(false);
  if (v.nativeReg === false) setNativeRegularizer(false);
  if (v.nativeStep === false) setNativeTrainingStep(false);
  if (v.prefetch === false && prefetchSwitch?.ok) prefetchSwitch.addon.setPrefetch?.([0, 0]);
  if (v.fastBn !== undefined) fastBnSwitch?.setFastBatchNorm?.([v.fastBn === 'avx2' ? 2 : 0]);
  if (v.expanded === false) setRankSpaceBatchNormUpTo(Infinity);
  if (v.hugePages === false) setHugePageBuffers(false);
  try {
    f();
  } finally {
    if (v.smallOc === false && addon?.ok) addon.addon.setSmallOcKernels([1]);
    setFusedInference(true);
    if (v.lanesPairs === false && addon?.ok) addon.addon.setLanesPairs?.([1]);
    setFusedTraining(true);
    setShortcutGradientSum(true);
    setNativeRegularizer(true);
    setNativeTrainingStep(true);
    setLanesInference(true);
    if (v.prefetch === false && prefetchSwitch?.ok) prefetchSwitch.addon.setPrefetch?.([1, 1]);
    if (v.fastBn !== undefined) fastBnSwitch?.setFastBatchNorm?.([1]);
    setRankSpaceBatchNormUpTo();
    setHugePageBuffers(true);
  }
};
const trainS = new Map(timeInterleaved(trainable.map((v) => withKernels(v, () => void computeGradients(v.model, xTrain, yTrain, reg)))).map((t, i) => [trainable[i]!, t]));
// Eval-mode forward of the whole batch at once, plus the arg-max and loss read-back.
const inferS = timeInterleaved(variants.map((v) => withKernels(v, () => void evaluate(v.model, xInfer, yInfer, inferBatch))));
const rows = variants.map((v, i) => ({ label: v.label, macs: countMacs(v.model).total, train: v.train ? batch / trainS.get(v)! : NaN, infer: inferBatch / inferS[i]! }));
// Inference ratios are against the faster of the full rank's two inference paths (lanes network, per op).
const fullPerOp = rows.find((r) => r.label.startsWith('  full rank, inference per op'));
const full = { ...rows[0]!, infer: Math.max(rows[0]!.infer, fullPerOp?.infer ?? 0) };
const fullStock = rows.find((r) => r.label.startsWith('full rank, stock'))!;
const fmt = (x: number, d = 1) => (Number.isFinite(x) ? x.toFixed(d) : '–');
console.log(`\nResNet-20 (${decomposition}) on ${info.backend}: train step batch ${batch}, inference batch ${inferBatch}, median of ${reps} interleaved rounds (each model ${burst - 1} timed runs after an untimed one) after ${warmup}; MACs per image in the form each layer runs (FLOPs = 2·MACs), plain ResNet-20 = ${(plain.macs / 1e6).toFixed(2)}M\n`);
console.log('| model | MACs/image | % of plain | train img/s | train × full | infer img/s | infer × full |');
console.log('|---|---:|---:|---:|---:|---:|---:|');
for (const r of rows) {
  // Exports are compared with the full-rank export, the rest with the full-rank SVD model.
  const ref = r.label.includes('stock export') ? fullStock : full;
  console.log(
    `| ${r.label} | ${(r.macs / 1e6).toFixed(2)}M | ${((100 * r.macs) / plain.macs).toFixed(1)}% | ${fmt(r.train)} | ${fmt(r.train / ref.train, 2)} | ${fmt(r.infer)} | ${fmt(r.infer / ref.infer, 2)} |`,
  );
}

// bench/prune_torch.py builds the channel decomposition only.
if (withTorch && decomposition === 'channel') {
  type TorchPrune = { threads: number; torch: string; results: Record<'full rank' | 'pruned', { train_img_per_s: number; infer_img_per_s: number }> };
  const t = runTorchScript<TorchPrune>(
    join(root, 'bench/prune_torch.py'),
    ['--ranks', JSON.stringify(ranks), '--batch', String(batch), '--infer-batch', String(inferBatch), '--reps', String(reps), '--warmup', String(warmup), '--threads', '1'],
    'torch baseline',
  );
  const ours = rows.find((r) => r.label.startsWith('real ranks'))!;
  if (t) {
    const [f, p] = [t.results['full rank'], t.results.pruned];
    console.log(`\nThe same full-rank and ${realLabel} models in PyTorch ${t.torch}, ${t.threads} thread, each layer in the same form, run after the table above:\n`);
    console.log('| engine | train img/s full | train img/s pruned | train × full | infer img/s full | infer img/s pruned | infer × full |');
    console.log('|---|---:|---:|---:|---:|---:|---:|');
    console.log(`| ${info.backend} | ${fmt(full.train)} | ${fmt(ours.train)} | ${fmt(ours.train / full.train, 2)} | ${fmt(full.infer)} | ${fmt(ours.infer)} | ${fmt(ours.infer / full.infer, 2)} |`);
    console.log(`| torch | ${fmt(f.train_img_per_s)} | ${fmt(p.train_img_per_s)} | ${fmt(p.train_img_per_s / f.train_img_per_s, 2)} | ${fmt(f.infer_img_per_s)} | ${fmt(p.infer_img_per_s)} | ${fmt(p.infer_img_per_s / f.infer_img_per_s, 2)} |`);
  }
}

if (profile) {
  const models = [
    { label: 'full rank', model: base },
    { label: realLabel, model: realRanks },
  ];
  for (const { label, model } of models) {
    for (const [what, run] of [
      // On the tape: the native step (native-step.ts) runs no tfjs kernels to profile.
      [`train step on the tape, batch ${batch}`, () => {
        setNativeTrainingStep(false);
        try {
          computeGradients(model, xTrain, yTrain, reg);
        } finally {
          setNativeTrainingStep(true);
        }
      }],
      [`inference, batch ${inferBatch}`, () => void evaluate(model, xInfer, yInfer, inferBatch)],
    ] as const) {
      run();
      const p = profileKernels(run);
      const inKernels = p.kernels.reduce((a, k) => a + k.ms, 0);
      console.log(`\n${label}, ${what}: ${p.wallMs.toFixed(0)} ms, ${inKernels.toFixed(0)} ms in kernels (the rest is tfjs dispatch, autograd tape and JS)\n`);
      console.log('| kernel | ms | share | calls |');
      console.log('|---|---:|---:|---:|');
      for (const k of p.kernels.slice(0, 14)) console.log(`| ${k.kernel} | ${k.ms.toFixed(1)} | ${((100 * k.ms) / p.wallMs).toFixed(0)}% | ${k.calls} |`);
    }
    // The native step runs no tfjs kernels: its addon calls, by call and by shape.
    if (stepOn && addon?.ok) {
      const p = profileAddonCalls(addon.addon, () => void computeGradients(model, xTrain, yTrain, reg), reps);
      const inCalls = p.calls.reduce((a, k) => a + k.ms, 0);
      console.log(`\n${label}, native train step, batch ${batch}: ${p.wallMs.toFixed(1)} ms, ${inCalls.toFixed(1)} ms in addon calls (mean of ${reps} steps; the rest is JS, the profile's own bookkeeping included)\n`);
      const byCall = new Map<string, { ms: number; calls: number }>();
      for (const k of p.calls) {
        const e = byCall.get(k.call) ?? { ms: 0, calls: 0 };
        byCall.set(k.call, { ms: e.ms + k.ms, calls: e.calls + k.calls });
      }
      console.log('| addon call | ms | share | calls |');
      console.log('|---|---:|---:|---:|');
      for (const [call, e] of [...byCall].sort((a, b) => b[1].ms - a[1].ms)) console.log(`| ${call} | ${e.ms.toFixed(2)} | ${((100 * e.ms) / p.wallMs).toFixed(0)}% | ${e.calls} |`);
      console.log('\n| addon call | shape | ms | calls |');
      console.log('|---|---|---:|---:|');
      for (const k of p.calls.slice(0, 20)) console.log(`| ${k.call} | ${k.shape} | ${k.ms.toFixed(3)} | ${k.calls} |`);
    }
  }
}
// Several rows time the same model with other kernels switched: dispose each model once.
for (const m of new Set(variants.map((v) => v.model))) m.dispose();
