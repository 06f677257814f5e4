// Lint exists mainly to enforce the architecture: nx module-boundary tags make a forbidden
// import (e.g. core -> layers, coordinator -> @tensorflow/tfjs) fail `pnpm lint`.
import nx from '@nx/eslint-plugin';
import tsParser from '@typescript-eslint/parser';

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
];
