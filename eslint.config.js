import js from '@eslint/js';
import tseslint from 'typescript-eslint';

export default tseslint.config(
  { ignores: ['dist/', 'node_modules/', 'gen/', 'proto/gen/', 'coverage/'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    languageOptions: { globals: { process: 'readonly', console: 'readonly', Buffer: 'readonly', setTimeout: 'readonly', clearTimeout: 'readonly', setInterval: 'readonly', clearInterval: 'readonly', setImmediate: 'readonly', URL: 'readonly' } },
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
    },
  },
  // Architecture (STYLE.md): operator/ and dataplane/ never import each other (they meet in proto/ and lib/config);
  // the data plane never needs the Kubernetes client; the codec and the header parser are leaves.
  {
    files: ['operator/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ regex: '(^|/)dataplane/', message: 'operator/ never imports dataplane/: they meet in proto/ and lib/config (STYLE.md).' }] }],
    },
  },
  {
    files: ['dataplane/**/*.ts'],
    rules: {
      'no-restricted-imports': [
        'error',
        {
          paths: [{ name: '@kubernetes/client-node', message: 'the data plane never talks to the API server: it gets its config over the config channel (proto/).' }],
          patterns: [
            { regex: '(^|/)operator/', message: 'dataplane/ never imports operator/: they meet in proto/ and lib/config (STYLE.md).' },
            { regex: '(^|/)examples/', message: 'dataplane/ is the packet path alone: demos live in examples/ and import it, never the reverse.' },
          ],
        },
      ],
    },
  },
  {
    files: ['lib/quiclb/**/*.ts', 'lib/quic/**/*.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ regex: '^\\.\\./', message: 'lib/quiclb and lib/quic are leaves: they import nothing else of the project.' }] }],
    },
  },
);
