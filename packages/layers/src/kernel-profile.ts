/**
 * Wall-clock time per tfjs kernel over one call of `fn`, for `pnpm bench train-step --profile`.
 *
 * tf.profile() reports kernel times only on backends with timers, and on wasm it counts each
 * kernel's JS wrapper as zero; wrapping the registered kernel functions measures what a step
 * really spends in each. A kernel that calls another (our wasm filter gradient calls BatchMatMul)
 * counts that time twice: `nested` marks the kernels that did.
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelFunc } from '@tensorflow/tfjs';

export interface KernelTime {
  kernel: string;
  ms: number;
  calls: number;
}

/**
 * @param byShape also split each kernel's time by its inputs' shapes (e.g. `Conv2D [128,32,32,16]
 *   [3,3,16,16]`), to find the one layer that costs the most.
 */
export function profileKernels<T>(fn: () => T, byShape = false): { result: T; wallMs: number; kernels: KernelTime[] } {
  const backend = tf.getBackend();
  const configs = tf.getKernelsForBackend(backend);
  const times = new Map<string, KernelTime>();
  const originals = configs.map((c) => c.kernelFunc);
  configs.forEach((c, i) => {
    const f = originals[i];
    const entry = (args: Parameters<KernelFunc>[0]): KernelTime => {
      const key = byShape
        ? `${c.kernelName} ${Object.values(args.inputs).map((t) => `[${t?.shape.join(',')}]`).join(' ')}`
        : c.kernelName;
      let e = times.get(key);
      if (!e) times.set(key, (e = { kernel: key, ms: 0, calls: 0 }));
      return e;
    };
    // The registry hands out the config objects themselves, so replacing the function on them is
    // seen by the engine's next lookup; it is put back in `finally`.
    (c as { kernelFunc: KernelFunc }).kernelFunc = ((args: Parameters<KernelFunc>[0]) => {
      const e = entry(args);
      const t = performance.now();
      try {
        return f(args);
      } finally {
        e.ms += performance.now() - t;
        e.calls++;
      }
    });
  });
  const t0 = performance.now();
  try {
    const result = fn();
    const wallMs = performance.now() - t0;
    const kernels = [...times.values()].filter((k) => k.calls > 0).sort((a, b) => b.ms - a.ms);
    return { result, wallMs, kernels };
  } finally {
    configs.forEach((c, i) => ((c as { kernelFunc: KernelFunc }).kernelFunc = originals[i]!));
  }
}
