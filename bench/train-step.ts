/**
 * Training-step throughput: `pnpm bench train-step [--backend native|wasm|cpu|tensorflow|auto|A,B]
 * [--batches 32,128] [--reps 5] [--warmup 2] [--no-torch] [--profile]`.
 *
 * Times one full worker step, `computeGradients` (forward in train mode, CE + SVD regularizers,
 * backward, read-back of every gradient), for ResNet-20 plain, SVD reconstruct and SVD factored
 * (channel decomposition, full rank), and reports images/s from the median of `--reps` runs after
 * `--warmup` runs. Several engines run in one process, one after the other (`--backend native`
 * means native and wasm, so the table has both). When /usr/bin/python3 has torch,
 * bench/train_step_torch.py times the same models in PyTorch with 1 thread and with all cores,
 * and the table shows engine/torch ratios and which BLAS torch used. `--profile` adds the time
 * per tfjs kernel of one SVD-reconstruct step at the largest batch, per engine.
 */
import { availableParallelism } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { initEngine, buildResNet, computeGradients, profileKernels, setNativeTrainingStep } from '@svd-train/layers';
import type { BackendChoice } from '@svd-train/core';
import { median, rand } from './lib/stats.js';
import { runTorchScript } from './lib/torch.js';

const args = process.argv.slice(2);
const arg = (k: string) => {
  const i = args.indexOf(k);
  return i >= 0 ? args[i + 1] : undefined;
};
const requested = (arg('--backend') ?? 'native').split(',') as BackendChoice[];
// The native engine is measured against the engine it replaces, in the same run.
const engines = requested.length === 1 && requested[0] === 'native' ? (['native', 'wasm'] as BackendChoice[]) : requested;
const batches = (arg('--batches') ?? '32,128').split(',').map(Number);
const reps = Math.max(5, Number(arg('--reps') ?? 5));
const warmup = Number(arg('--warmup') ?? 2);
const withTorch = !args.includes('--no-torch');
const profile = args.includes('--profile');

const VARIANTS = [
  { name: 'plain', svd: false, forward: 'auto' as const },
  { name: 'svd reconstruct', svd: true, forward: 'reconstruct' as const },
  { name: 'svd factored', svd: true, forward: 'factored' as const },
];


console.error(`ResNet-20 (channel decomposition, full rank), CIFAR-sized random batch; median of ${reps} after ${warmup} warm-up steps`);
const reg = { lambdaO: 1, lambdaS: 0.07, sparsity: 'hoyer' as const };
/** images/s by engine, then `${model}@${batch}`. */
const rows = new Map<string, Map<string, number>>();
const engineNames: string[] = [];
const profiles: string[] = [];
for (const want of engines) {
  const info = await initEngine({ backend: want });
  console.error(`backend ${info.reason}`);
  const name = info.backend;
  engineNames.push(name);
  const byCase = new Map<string, number>();
  rows.set(name, byCase);
  for (const v of VARIANTS) {
    const model = buildResNet({ depth: 20, svd: v.svd, decomposition: 'channel', forward: v.forward, numClasses: 10 });
    for (const batch of batches) {
      const x = rand(batch * 32 * 32 * 3, 1);
      const y = Int32Array.from({ length: batch }, (_, i) => i % 10);
      for (let k = 0; k < warmup; k++) computeGradients(model, x, y, reg);
      const ts: number[] = [];
      for (let k = 0; k < reps; k++) {
        const t0 = performance.now();
        computeGradients(model, x, y, reg);
        ts.push((performance.now() - t0) / 1000);
      }
      const med = median(ts);
      byCase.set(`${v.name}@${batch}`, batch / med);
      console.error(`${name} ${v.name} batch ${batch}: median ${(med * 1000).toFixed(0)} ms, ${(batch / med).toFixed(1)} img/s`);
      if (profile && v.forward === 'reconstruct' && batch === Math.max(...batches)) {
        // On the tape: the native step (native-step.ts) runs no tfjs kernels for a profile to see.
        setNativeTrainingStep(false);
        const p = profileKernels(() => computeGradients(model, x, y, reg));
        setNativeTrainingStep(true);
        const inKernels = p.kernels.reduce((a, k) => a + k.ms, 0);
        const lines = [`\n${name}: one SVD-reconstruct step at batch ${batch} on tfjs' tape (the native training step off): ${p.wallMs.toFixed(0)} ms, ${inKernels.toFixed(0)} ms in kernels (the rest is tfjs' op dispatch, autograd tape and JS; a kernel that calls another, like wasm's filter gradient, counts that time twice)\n`, '| kernel | ms | share | calls |', '|---|---:|---:|---:|'];
        for (const k of p.kernels.slice(0, 12)) lines.push(`| ${k.kernel} | ${k.ms.toFixed(1)} | ${((100 * k.ms) / p.wallMs).toFixed(0)}% | ${k.calls} |`);
        profiles.push(lines.join('\n'));
      }
    }
    model.dispose();
  }
}

type TorchOut = { threads: number; torch: string; blas?: string; results: { model: string; batch: number; img_per_s: number }[] };
const torchRuns: TorchOut[] = [];
const script = join(dirname(fileURLToPath(import.meta.url)), 'train_step_torch.py');
if (withTorch) {
  // PyTorch's own default here is 1 thread (it counts physical cores), so the second run asks for
  // every logical core explicitly.
  for (const threads of [...new Set([1, availableParallelism()])]) {
    const out = runTorchScript<TorchOut>(script, ['--batches', batches.join(','), '--reps', String(reps), '--warmup', String(warmup), '--threads', String(threads)], `torch baseline (threads=${threads})`);
    if (out) torchRuns.push(out);
  }
}

const fmt = (x: number | undefined) => (x === undefined ? '–' : x.toFixed(1));
const torchAt = (run: TorchOut | undefined, model: string, batch: number) =>
  run?.results.find((r) => r.model === model && r.batch === batch)?.img_per_s;
const head = ['model', 'batch', ...engineNames.map((e) => `${e} img/s`)];
for (const t of torchRuns) {
  head.push(`torch ${t.threads} thr img/s`);
  for (const e of engineNames) head.push(`${e} / torch ${t.threads} thr`);
}
console.log(`\nResNet-20 training step, images/s (torch ${torchRuns[0]?.torch ?? 'not run'}${torchRuns[0] ? `, BLAS ${torchRuns[0].blas ?? '?'}` : ''}; ratio > 1: tfjs faster)\n`);
console.log(`| ${head.join(' | ')} |`);
console.log(`|${head.map(() => '---').join('|')}|`);
for (const v of VARIANTS) {
  for (const batch of batches) {
    const key = `${v.name}@${batch}`;
    const cells = [v.name, String(batch), ...engineNames.map((e) => fmt(rows.get(e)!.get(key)))];
    for (const t of torchRuns) {
      const ti = torchAt(t, v.name, batch);
      cells.push(fmt(ti));
      for (const e of engineNames) {
        const mine = rows.get(e)!.get(key);
        cells.push(ti === undefined || mine === undefined ? '–' : (mine / ti).toFixed(2));
      }
    }
    console.log(`| ${cells.join(' | ')} |`);
  }
}
for (const p of profiles) console.log(p);
