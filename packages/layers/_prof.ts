import { loadCheckpoint } from '@svd-train/core';
import { buildResNet, evaluate, initEngine, profileKernels, computeGradients } from '@svd-train/layers';
const info = await initEngine({ backend: 'native' });
console.error(info.reason);
const path = process.argv[2]!;
const c = loadCheckpoint('/work/main/'+path);
const ranks: Record<string, number> = {};
for (const p of c.params) if (p.name.endsWith('.s')) ranks[p.name.slice(0, -2)] = p.data.length;
const decomposition = c.config.decomposition === 'spatial' ? 'spatial' : 'channel';
const full = buildResNet({ depth: 20, svd: true, decomposition, seed: 1 });
const m = buildResNet({ depth: 20, svd: true, decomposition, ranks, seed: 1 });
const n = 256;
const x = Float32Array.from({ length: n * 3072 }, () => Math.random());
const y = Int32Array.from({ length: n }, (_, i) => i % 10);
const mode = process.argv[3] ?? 'infer';
for (const [label, model] of [['full', full], ['pruned', m]] as const) {
  const run = mode === 'infer' ? () => void evaluate(model, x, y, n) : () => void computeGradients(model, x.subarray(0, 64 * 3072), y.subarray(0, 64), { lambdaO: 1, lambdaS: 0.07, sparsity: 'hoyer' });
  run(); run();
  const acc = new Map<string, { ms: number; calls: number }>();
  for (let k = 0; k < 3; k++) {
    const p = profileKernels(run, true);
    for (const e of p.kernels) { const a = acc.get(e.kernel) ?? { ms: 0, calls: 0 }; a.ms += e.ms / 3; a.calls += e.calls / 3; acc.set(e.kernel, a); }
  }
  { let t=0; const by=new Map<string,number>(); for (const [k,v] of acc) { t+=v.ms; const op=k.split(" ")[0]!; by.set(op,(by.get(op)??0)+v.ms); } console.log(`\n== ${label} ${mode} kernels ${t.toFixed(1)} ms`); for (const [k,v] of [...by].sort((a,b)=>b[1]-a[1]).slice(0,16)) console.log("   op", v.toFixed(2).padStart(7), k); }
  for (const [k, v] of [...acc].sort((a, b) => b[1].ms - a[1].ms).slice(0, 80)) if (k.startsWith("Conv2DBackpropFilter")||k.startsWith("Conv2D ")) console.log(v.ms.toFixed(2).padStart(7), String(v.calls).padStart(3), k);
}
