/** Switches of the native addon that more than one benchmark probes. */
import type { NativeAddon } from '@svd-train/native';

/**
 * Whether this addon and CPU run training batch norm in `mode` (setFastBatchNorm: 1 the best
 * kernels, 2 the AVX2 kernels, which throws on a CPU without AVX2 + FMA, 0 the generic loops);
 * leaves the default (1) set.
 */
export function batchNormModeRuns(addon: NativeAddon, mode: 0 | 1 | 2): boolean {
  if (typeof addon.setFastBatchNorm !== 'function') return false;
  try {
    addon.setFastBatchNorm([mode]);
    return true;
  } catch {
    return false;
  } finally {
    addon.setFastBatchNorm([1]);
  }
}

/** One kind of addon call in a profile: the call's name and its shape argument, time and count per run. */
export interface AddonCallTime {
  call: string;
  shape: string;
  ms: number;
  calls: number;
}

/**
 * A conv call's 17-int shape ([N, H, W, C, F, KH, KW, OH, OW, SH, SW, …], addon.cc's ConvShape) as
 * "H×W×C→F KH×KW" (with "/S", or "/SH×SW", at a stride); any other call's array arguments as JSON, shortened.
 */
function shapeOf(call: string, args: unknown[]): string {
  const arrays = args.filter((a): a is number[] => Array.isArray(a));
  const conv = call.startsWith('conv2d') ? arrays.find((a) => a.length === 17) : undefined;
  if (conv) {
    const [, h, w, c, f, kh, kw, , , sh, sw] = conv;
    const stride = sh === sw ? `${sh}` : `${sh}×${sw}`;
    return `${h}×${w}×${c}→${f} ${kh}×${kw}${sh! > 1 || sw! > 1 ? ` /${stride}` : ''}`;
  }
  const s = arrays.map((a) => JSON.stringify(a)).join(' ');
  return s.length > 48 ? `${s.slice(0, 47)}…` : s;
}

/**
 * Wall-clock time of every addon call `fn` makes, per run of `runs` runs (after one untimed run):
 * each function of the addon object is wrapped for the profile and restored after it. Callers reach
 * the addon through this object (native-step.ts, kernels/native.ts), so every call is seen. The
 * total of the calls against the runs' wall time shows what the JS around them costs.
 */
export function profileAddonCalls(addon: NativeAddon, fn: () => void, runs: number): { wallMs: number; calls: AddonCallTime[] } {
  fn();
  const table = addon as unknown as Record<string, unknown>;
  const saved = new Map<string, (...a: unknown[]) => unknown>();
  const times = new Map<string, AddonCallTime>();
  for (const [name, f] of Object.entries(table)) {
    if (typeof f !== 'function') continue;
    const g = f as (...a: unknown[]) => unknown;
    saved.set(name, g);
    table[name] = (...args: unknown[]) => {
      const t0 = performance.now();
      try {
        return g(...args);
      } finally {
        const ms = performance.now() - t0;
        const shape = shapeOf(name, args);
        const key = `${name} ${shape}`;
        const e = times.get(key) ?? { call: name, shape, ms: 0, calls: 0 };
        e.ms += ms;
        e.calls++;
        times.set(key, e);
      }
    };
  }
  let wall: number;
  try {
    const t0 = performance.now();
    for (let i = 0; i < runs; i++) fn();
    wall = performance.now() - t0;
  } finally {
    for (const [name, g] of saved) table[name] = g;
  }
  const calls = [...times.values()].map((e) => ({ ...e, ms: e.ms / runs, calls: e.calls / runs })).sort((a, b) => b.ms - a.ms);
  return { wallMs: wall / runs, calls };
}
