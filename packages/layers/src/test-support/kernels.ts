import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs';

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

/** Whether this CPU has AVX-512F (Linux /proc/cpuinfo; false where it cannot be read): our own native kernels need it. */
export function cpuHasAvx512(): boolean {
  try {
    return /\bavx512f\b/.test(readFileSync('/proc/cpuinfo', 'utf8'));
  } catch {
    return false;
  }
}

/** Whether this CPU has AVX2 and FMA (Linux /proc/cpuinfo; false where it cannot be read): batch_norm.cc's AVX2 kernels need them. */
export function cpuHasAvx2Fma(): boolean {
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    return /\bavx2\b/.test(info) && /\bfma\b/.test(info);
  } catch {
    return false;
  }
}

/** Whether the CPU is an AMD of family 1Ah (26) or later, Zen 5, where small_oc_conv.h takes wider limits (read from /proc/cpuinfo, independently of the addon's CPUID). */
export function cpuIsZen5OrLater(): boolean {
  try {
    const info = readFileSync('/proc/cpuinfo', 'utf8');
    const family = Number(/^cpu family\s*:\s*(\d+)/m.exec(info)?.[1] ?? 0);
    return /^vendor_id\s*:\s*AuthenticAMD/m.test(info) && family >= 26;
  } catch {
    return false;
  }
}
