// Lint exists mainly to enforce the architecture: nx module-boundary tags make a forbidden
// import (e.g. core -> layers, coordinator -> @tensorflow/tfjs) fail `pnpm lint`.
import nx from '@nx/eslint-plugin';
import tsParser from '@typescript-eslint/parser';
import tseslint from 'typescript-eslint';

export const depConstraints = [
  { sourceTag: 'scope:core', onlyDependOnLibsWithTags: [], bannedExternalImports: ['@tensorflow/*', 'ml-matrix', 'ws'] },
  // native is the oneDNN addon's loader: framework-free like core; layers turns it into tfjs kernels.
  { sourceTag: 'scope:native', onlyDependOnLibsWithTags: [], bannedExternalImports: ['@tensorflow/*', 'ml-matrix', 'ws'] },
  { sourceTag: 'scope:layers', onlyDependOnLibsWithTags: ['scope:core', 'scope:native'] },
  { sourceTag: 'scope:coordinator', onlyDependOnLibsWithTags: ['scope:core'], bannedExternalImports: ['@tensorflow/*', 'ml-matrix'] },
  { sourceTag: 'scope:worker', onlyDependOnLibsWithTags: ['scope:core', 'scope:layers'] },
  { sourceTag: 'scope:cli', onlyDependOnLibsWithTags: ['scope:core', 'scope:native', 'scope:layers', 'scope:coordinator', 'scope:worker'] },
  { sourceTag: 'scope:tests', onlyDependOnLibsWithTags: ['*'] },
];

const SHIPPED = ['packages/*/src/**/*.ts'];
const TEST_FILES = ['**/*.test.ts', '**/test-support/**'];

export default [
  { ignores: ['**/dist/**', '**/node_modules/**', '**/.turbo/**', '**/.nx/**', 'runs/**', 'docs/**'] },
  {
    files: ['**/*.ts'],
    languageOptions: { parser: tsParser, parserOptions: { ecmaVersion: 2022, sourceType: 'module' } },
    plugins: { '@nx': nx },
    rules: {
      '@nx/enforce-module-boundaries': ['error', { allow: [], enforceBuildableLibDependency: false, depConstraints }],
    },
  },
  // The shipped sources are linted with type information (typescript-eslint's
  // recommended-type-checked): unsafe `any`, floating promises, needless assertions.
  ...tseslint.configs.recommendedTypeChecked.map((c) => ({ ...c, files: SHIPPED, ignores: TEST_FILES })),
  {
    files: SHIPPED,
    ignores: TEST_FILES,
    languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: import.meta.dirname } },
    rules: {
      // Shapes are number arrays; `${[2, 3]}` printing "2,3" is what the error messages want.
      '@typescript-eslint/restrict-template-expressions': ['error', { allowNumber: true, allowBoolean: true, allowArray: true }],
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
    },
  },
];
