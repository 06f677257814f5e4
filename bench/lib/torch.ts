/**
 * Running the PyTorch baselines in bench/*.py from a benchmark. Each script sets up PyTorch at its
 * best itself (bench/torch_malloc.py: glibc told to keep freed memory), so a benchmark and a person
 * running it by hand time the same PyTorch.
 */
import { spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';

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
  const r = spawnSync('/usr/bin/python3', [script, ...args], { encoding: 'utf8' });
  if (r.status === 0) return JSON.parse(r.stdout.trim().split('\n').pop()!) as T;
  console.error(`${what} skipped: ${(r.stderr || r.error?.message || '').split('\n').slice(-2).join(' ')}`);
  return undefined;
}
