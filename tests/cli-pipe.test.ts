/**
 * `svd-coord --help | head` and `svd-worker --help | head`: a reader that closes the pipe early must
 * not turn into an EPIPE stack trace; the CLI exits quietly with status 0.
 */
import { spawn } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import { COORD_BIN, WORKER_BIN, requireBuild } from './harness.js';

function helpIntoClosedPipe(bin: string, args: string[]): Promise<{ code: number | null; stderr: string }> {
  return new Promise((resolve) => {
    const child = spawn(process.execPath, [bin, ...args], { stdio: ['ignore', 'pipe', 'pipe'] });
    let stderr = '';
    child.stderr.on('data', (d: Buffer) => (stderr += d.toString()));
    // Like `head -1`: read the first chunk, then close our end before the rest is written.
    child.stdout.once('data', () => child.stdout.destroy());
    child.on('close', (code) => resolve({ code, stderr }));
  });
}

describe('CLI output into a pipe that closes early', () => {
  for (const [name, bin, args] of [
    ['svd-coord start --help', COORD_BIN, ['start', '--help']],
    ['svd-worker --help', WORKER_BIN, ['--help']],
  ] as const) {
    it(`${name}: exit 0, no EPIPE trace`, async () => {
      requireBuild();
      const r = await helpIntoClosedPipe(bin, [...args]);
      expect(r.stderr).not.toMatch(/EPIPE|Unhandled 'error'/);
      expect(r.code).toBe(0);
    });
  }
});
