/** Running the PyTorch baselines in bench/*.py from a benchmark, with PyTorch at its best. */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

/**
 * PyTorch's CPU allocator hands every freed activation back to glibc, which unmaps blocks over its
 * mmap threshold; at batch 128 each step then page-faults its activations in again, and measured
 * here 1.5-3x slower than at batch 32. These settings keep freed memory in the heap (what a
 * jemalloc/tcmalloc set-up gives), so the baseline is PyTorch at its best, not its allocator.
 */
export const TORCH_MALLOC_ENV = { MALLOC_MMAP_THRESHOLD_: '33554432', MALLOC_TRIM_THRESHOLD_: '68719476736', MALLOC_TOP_PAD_: '1073741824' };

/**
 * Runs `script` with /usr/bin/python3 and parses the JSON object on its last line of stdout; on any
 * failure (no python3, no torch, a crash) says why on stderr and returns undefined, so the rest of
 * the benchmark's table still prints.
 */
export function runTorchScript<T>(script: string, args: string[], what: string): T | undefined {
  if (!existsSync('/usr/bin/python3')) {
    console.error(`${what} skipped: no /usr/bin/python3`);
    return undefined;
  }
  const r = spawnSync('/usr/bin/python3', [script, ...args], { encoding: 'utf8', env: { ...process.env, ...TORCH_MALLOC_ENV } });
  if (r.status === 0) return JSON.parse(r.stdout.trim().split('\n').pop()!) as T;
  console.error(`${what} skipped: ${(r.stderr || r.error?.message || '').split('\n').slice(-2).join(' ')}`);
  return undefined;
}
