/**
 * oneDNN's kernels below AVX-512 stay inside their buffers for the conv shapes our models make: a
 * child process runs the three conv ops with oneDNN held to AVX2 (DNNL_MAX_CPU_ISA) and a guard
 * page after every aligned block it allocates (test-support/guard_pages.c, LD_PRELOAD), so an
 * overflow faults there and then. oneDNN 2.6's jit_1x1:avx2 filter gradient overflowed for a
 * strided 1×1 conv from fewer than 8 channels (a pruned spatial model's downsampling shortcut):
 * silent heap corruption, then a crash, on CPUs without AVX-512. The filter gradients are checked
 * against a float64 reference too, so the implementation taken instead is right.
 */
import { spawnSync, type SpawnSyncReturns } from 'node:child_process';
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { loadNative } from './index.js';

const here = dirname(fileURLToPath(import.meta.url));
const ADDON = join(here, '..', 'build', 'Release', 'svd_native.node');
const SHIM_SOURCE = join(here, 'test-support', 'guard_pages.c');
const hasCc = process.platform === 'linux' && spawnSync('cc', ['--version']).status === 0;

/** [n, h, w, c, f, kh, kw, oh, ow, sh, sw, dh, dw, pt, pl, pb, pr] of a 1×1 conv, no padding. */
function pointwise(c: number, sh: number, sw: number): number[] {
  const [n, h, w, f] = [2, 8, 8, 16];
  return [n, h, w, c, f, 1, 1, Math.floor((h - 1) / sh) + 1, Math.floor((w - 1) / sw) + 1, sh, sw, 1, 1, 0, 0, 0, 0];
}

// Runs in the child: every op of every shape, each filter gradient against float64, then the
// implementations oneDNN chose. Exits 0 with one JSON line, 1 on a wrong gradient.
const CHILD = `
const addon = require(process.env.ADDON);
const shapes = JSON.parse(process.env.SHAPES);
let worst = 0;
for (const s of shapes) {
  const [n, h, w, c, f, kh, kw, oh, ow, sh, sw] = s;
  let seed = 1;
  const rnd = (len) => Float32Array.from({ length: len }, () => ((seed = (seed * 1103515245 + 12345) % 2147483648) / 2147483648) - 0.5);
  const x = rnd(n * h * w * c), dy = rnd(n * oh * ow * f), filt = rnd(kh * kw * c * f);
  addon.conv2d(x, filt, new Float32Array(n * oh * ow * f), s);
  addon.conv2dBackpropInput(dy, filt, new Float32Array(n * h * w * c), s);
  const dw = new Float32Array(kh * kw * c * f);
  addon.conv2dBackpropFilter(x, dy, dw, s);
  for (let ci = 0; ci < c; ci++) for (let fi = 0; fi < f; fi++) {
    let ref = 0;
    for (let b = 0; b < n; b++) for (let i = 0; i < oh; i++) for (let j = 0; j < ow; j++)
      ref += x[((b * h + i * sh) * w + j * sw) * c + ci] * dy[((b * oh + i) * ow + j) * f + fi];
    worst = Math.max(worst, Math.abs(dw[ci * f + fi] - ref));
  }
}
console.log(JSON.stringify({ worst, implementations: addon.implementations() }));
process.exit(worst < 1e-4 ? 0 : 1);
`;

describe.skipIf(!loadNative().ok || !hasCc || !existsSync(ADDON))('oneDNN held to AVX2, with guard pages after its buffers', () => {
  it('runs strided and unit-stride 1×1 convs from 1 to 12 channels (forward, input and filter gradients) without overflowing, and the filter gradients are right', () => {
    const dir = mkdtempSync(join(tmpdir(), 'svd-guard-'));
    const shim = join(dir, 'guard_pages.so');
    const shapes = [1, 3, 6, 7, 8, 12].flatMap((c) => [pointwise(c, 1, 1), pointwise(c, 1, 2), pointwise(c, 2, 1), pointwise(c, 2, 2)]);
    let run: SpawnSyncReturns<string>;
    try {
      const cc = spawnSync('cc', ['-O2', '-shared', '-fPIC', SHIM_SOURCE, '-o', shim, '-ldl'], { encoding: 'utf8' });
      expect(cc.status, cc.stderr).toBe(0);
      run = spawnSync(process.execPath, ['-e', CHILD], {
        encoding: 'utf8',
        env: { ...process.env, ADDON, SHAPES: JSON.stringify(shapes), DNNL_MAX_CPU_ISA: 'AVX2', LD_PRELOAD: shim },
        timeout: 120_000,
      });
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
    // A fault in a guard page ends the child by SIGSEGV (status null).
    expect({ status: run.status, signal: run.signal }, run.stderr).toEqual({ status: 0, signal: null });
    const out = JSON.parse(run.stdout.trim().split('\n').pop()!) as { worst: number; implementations: Record<string, string> };
    expect(out.worst).toBeLessThan(1e-4);
    // Every shape ran on oneDNN (none of ours take 1×1 filter gradients from so few channels), and
    // none of the strided ones from under 8 channels on the overflowing kernel.
    for (const s of shapes) {
      const impl = out.implementations[`w,${s.join(',')}`];
      expect(impl, `filter gradient of ${s.join(',')}`).toBeDefined();
      if (s[3]! < 8 && (s[9]! > 1 || s[10]! > 1)) expect(impl).not.toBe('jit_1x1:avx2');
    }
  });
});
