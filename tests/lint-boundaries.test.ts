/**
 * The architecture rule "the coordinator is framework-free" is enforced by lint, not memory: a file
 * in packages/coordinator/src that imports @tensorflow/tfjs must fail @nx/enforce-module-boundaries.
 */
import { execFileSync } from 'node:child_process';
import { rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { ESLint } from 'eslint';
import { beforeAll, describe, expect, it } from 'vitest';
import { ROOT } from './harness.js';

const FIXTURE = join(ROOT, 'packages/coordinator/src/__lint_fixture__.ts');

describe('forbidden-import lint check', () => {
  beforeAll(() => {
    // The nx eslint rule reads the project graph, which `nx show projects` computes and caches.
    execFileSync(process.execPath, [join(ROOT, 'node_modules/nx/bin/nx.js'), 'show', 'projects'], { cwd: ROOT, stdio: 'ignore', env: { ...process.env, NX_DAEMON: 'false' } });
  }, 120_000);

  it('coordinator importing @tensorflow/tfjs is an @nx/enforce-module-boundaries error', async () => {
    try {
      writeFileSync(FIXTURE, "import * as tf from '@tensorflow/tfjs';\nexport const x = tf.version;\n");
      const eslint = new ESLint({ cwd: ROOT });
      const [res] = await eslint.lintFiles([FIXTURE]);
      const hits = res!.messages.filter((m) => m.ruleId === '@nx/enforce-module-boundaries');
      expect(hits.length, JSON.stringify(res!.messages)).toBeGreaterThan(0);
      expect(hits[0]!.severity).toBe(2);
      expect(hits[0]!.message).toContain('@tensorflow/tfjs');
    } finally {
      rmSync(FIXTURE, { force: true });
    }
  });

  it('the same file importing only @svd-train/core is clean (the rule is not blanket)', async () => {
    try {
      writeFileSync(FIXTURE, "import { PROTOCOL_VERSION } from '@svd-train/core';\nexport const v = PROTOCOL_VERSION;\n");
      const [res] = await new ESLint({ cwd: ROOT }).lintFiles([FIXTURE]);
      expect(res!.messages.filter((m) => m.ruleId === '@nx/enforce-module-boundaries')).toEqual([]);
    } finally {
      rmSync(FIXTURE, { force: true });
    }
  });
});
