import tseslint from 'typescript-eslint';
export default [
  { ignores: ['**/dist/**', '**/node_modules/**', '**/.turbo/**', '**/.nx/**', 'runs/**', 'docs/**', '**/*.test.ts', 'tests/**', 'bench/**', 'examples/**', '**/*.mjs', '**/*.js'] },
  ...tseslint.configs.recommendedTypeChecked.map((c) => ({ ...c, files: ['packages/*/src/**/*.ts'] })),
  { files: ['packages/*/src/**/*.ts'], languageOptions: { parserOptions: { projectService: true, tsconfigRootDir: '/work/wt-integrate' } } },
];
