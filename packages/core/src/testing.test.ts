import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { decodeMessage } from './protocol/codec.js';
import { gradientsFrameTemplate, referenceDir, referenceFile, referenceMissing, requireReferenceFile } from './testing.js';
import { thrown } from './test-support/thrown.js';

const REPO = resolve(dirname(fileURLToPath(import.meta.url)), '..', '..', '..');

describe('reference dumps are found the same way by every package', () => {
  it('default is ../shared/reference next to the repository, whatever the cwd', () => {
    expect(existsSync(join(REPO, 'pnpm-workspace.yaml'))).toBe(true);
    expect(referenceDir({})).toBe(resolve(REPO, '..', 'shared', 'reference'));
  });

  it('SVD_TRAIN_REFERENCE_DIR overrides it; names get .json once', () => {
    const env = { SVD_TRAIN_REFERENCE_DIR: '/tmp/ref-x' };
    expect(referenceDir(env)).toBe('/tmp/ref-x');
    expect(referenceFile('optim', env)).toBe('/tmp/ref-x/optim.json');
    expect(referenceFile('optim.json', env)).toBe('/tmp/ref-x/optim.json');
  });

  it('a missing dump may skip off CI, but under CI it is DATA_MISSING naming the file and the variable', () => {
    const env = { SVD_TRAIN_REFERENCE_DIR: '/nonexistent/ref' };
    expect(referenceMissing('optim', env)).toBe(true);
    const e = thrown(() => referenceMissing('optim', { ...env, CI: 'true' }));
    expect(e.code).toBe('DATA_MISSING');
    expect(e.message).toContain('/nonexistent/ref/optim.json');
    expect(e.message).toContain('SVD_TRAIN_REFERENCE_DIR');
  });

  it('suites that never skip get DATA_MISSING with the fix, CI or not', () => {
    const env = { SVD_TRAIN_REFERENCE_DIR: '/nonexistent/ref' };
    const e = thrown(() => requireReferenceFile('layers', env));
    expect(e.code).toBe('DATA_MISSING');
    expect(e.message).toMatch(/\/nonexistent\/ref\/layers\.json does not exist\. .*SVD_TRAIN_REFERENCE_DIR/);
  });
});

describe('gradients frame template', () => {
  it('prefix + tail(step, attempt, n) decodes to the full message for any values', () => {
    const t = (name: string, shape: number[], fill: number) => ({ name, shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)).fill(fill) });
    const g = { type: 'gradients' as const, step: 3, attempt: 1, n: 3, grads: [t('a', [2, 3], -1)], buffers: [t('bn', [4], 0.5)], loss: { ce: 2.3, orth: 0.1, sparsity: 0.2, total: 2.6 }, correct: 1, computeMs: 12.5 };
    const tpl = gradientsFrameTemplate(g);
    for (const [step, attempt, n] of [[0, 0, 0], [3, 1, 3], [70000, 1e6, 128], [2 ** 31, 5, 65536]]) {
      const bytes = new Uint8Array([...tpl.prefix, ...tpl.tail(step, attempt, n)]);
      expect(decodeMessage(bytes)).toEqual({ ...g, step, attempt, n });
    }
  });
});
