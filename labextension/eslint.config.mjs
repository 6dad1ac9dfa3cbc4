// Lint config (flat): TypeScript-aware recommended rules; formatting is prettier's job.
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['lib/**', 'node_modules/**', '../jupyter_pipeline/**', 'src/api/types.ts'] },
  ...tseslint.configs.recommended,
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['warn', { args: 'none' }],
      '@typescript-eslint/no-explicit-any': 'off',
      eqeqeq: 'error',
      curly: ['error', 'all']
    }
  }
);
