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
