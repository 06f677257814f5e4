import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';
import { loadNative, type NativeAddon } from '@svd-train/native';

/**
 * Runs `fn` while counting the calls of the named kernels on the active backend: the registry hands
 * out its config objects, so their functions are wrapped for the call and put back after it.
 * A name the backend does not have counts 0.
 */
export function countKernelCalls<T>(names: readonly string[], fn: () => T): { result: T; calls: Record<string, number> } {
  const calls: Record<string, number> = Object.fromEntries(names.map((n) => [n, 0]));
  const restore: (() => void)[] = [];
  for (const name of names) {
    const cfg = tf.getKernel(name, tf.getBackend());
    const orig = cfg?.kernelFunc;
    if (!cfg || !orig) continue;
    (cfg as { kernelFunc: tf.KernelFunc }).kernelFunc = (args) => {
      calls[name]!++;
      return orig(args);
    };
    restore.push(() => ((cfg as { kernelFunc: tf.KernelFunc }).kernelFunc = orig));
  }
  try {
    return { result: fn(), calls };
  } finally {
    restore.forEach((f) => f());
  }
}

/** `CODE: message` of the error `fn` throws (the native addon's errors carry a code), or 'no error'. */
export function errorCodeOf(fn: () => void): string {
  try {
    fn();
  } catch (e) {
    return `${(e as { code?: string }).code}: ${(e as Error).message}`;
  }
  return 'no error';
}

/**
 * The CPU as the native kernels see it: the addon's CPUID where it loads (an emulator such as
 * qemu-user's AVX2-only CPU shows the host's /proc/cpuinfo, not what the code can run), else Linux
 * /proc/cpuinfo ('' where it cannot be read: every probe below is then false).
 */
type CpuFeatures = ReturnType<NonNullable<NativeAddon['cpuFeatures']>>;
let features: CpuFeatures | undefined;
function cpu(): CpuFeatures {
  if (features) return features;
  const nat = loadNative();
  if (nat.ok && nat.addon.cpuFeatures) return (features = nat.addon.cpuFeatures());
  let info = '';
  try {
    info = readFileSync('/proc/cpuinfo', 'utf8');
  } catch {
    // no /proc: no features
  }
  const family = Number(/^cpu family\s*:\s*(\d+)/m.exec(info)?.[1] ?? 0);
  return (features = {
    avx512f: /\bavx512f\b/.test(info),
    avx2: /\bavx2\b/.test(info),
    fma: /\bfma\b/.test(info),
    zen5OrLater: /^vendor_id\s*:\s*AuthenticAMD/m.test(info) && family >= 26,
  });
}

/** Whether this CPU has AVX-512F: our own native kernels need it. */
export function cpuHasAvx512(): boolean {
  return cpu().avx512f;
}

/** Whether this CPU has AVX2 and FMA: batch_norm.cc's AVX2 kernels need them. */
export function cpuHasAvx2Fma(): boolean {
  return cpu().avx2 && cpu().fma;
}

/** Whether the CPU is an AMD of family 1Ah (26) or later, Zen 5, where small_oc_conv.h takes wider limits. */
export function cpuIsZen5OrLater(): boolean {
  return cpu().zen5OrLater;
}
