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

/** Linux /proc/cpuinfo, read once ('' where it cannot be read: every probe below is then false). */
let cpuinfoText: string | undefined;
function cpuinfo(): string {
  if (cpuinfoText === undefined) {
    try {
      cpuinfoText = readFileSync('/proc/cpuinfo', 'utf8');
    } catch {
      cpuinfoText = '';
    }
  }
  return cpuinfoText;
}

/** Whether this CPU has AVX-512F: our own native kernels need it. */
export function cpuHasAvx512(): boolean {
  return /\bavx512f\b/.test(cpuinfo());
}

/** Whether this CPU has AVX2 and FMA: batch_norm.cc's AVX2 kernels need them. */
export function cpuHasAvx2Fma(): boolean {
  return /\bavx2\b/.test(cpuinfo()) && /\bfma\b/.test(cpuinfo());
}

/** Whether the CPU is an AMD of family 1Ah (26) or later, Zen 5, where small_oc_conv.h takes wider limits (read from /proc/cpuinfo, independently of the addon's CPUID). */
export function cpuIsZen5OrLater(): boolean {
  const info = cpuinfo();
  const family = Number(/^cpu family\s*:\s*(\d+)/m.exec(info)?.[1] ?? 0);
  return /^vendor_id\s*:\s*AuthenticAMD/m.test(info) && family >= 26;
}
