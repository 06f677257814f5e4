import { defineConfig } from 'vitest/config';

// Unit tests import workspace packages from source (the "source" export condition), so they
// need no build; the multi-process suites in tests/ spawn the built CLI and need `pnpm build`.
export default defineConfig({
  resolve: { conditions: ['source'] },
  ssr: { resolve: { conditions: ['source'] } },
  test: {
    // CI asks for a JSON summary too (SVD_TRAIN_TEST_JSON) to print one plain closing line.
    ...(process.env.SVD_TRAIN_TEST_JSON
      ? { reporters: ['default', 'json'], outputFile: { json: process.env.SVD_TRAIN_TEST_JSON } }
      : {}),
    projects: [
      {
        extends: true,
        test: { name: 'unit', include: ['packages/*/src/**/*.test.ts'], testTimeout: 60_000, pool: 'forks' },
      },
      {
        extends: true,
        test: { name: 'e2e', include: ['tests/**/*.test.ts'], testTimeout: 300_000, hookTimeout: 120_000, pool: 'forks', fileParallelism: false },
      },
    ],
  },
});
