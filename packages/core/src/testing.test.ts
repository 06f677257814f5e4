import { existsSync } from 'node:fs';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';
import { referenceDir, referenceFile, referenceMissing, requireReferenceFile } from './testing.js';
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
