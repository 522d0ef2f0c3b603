// ESLint flat config: the recommended JS rules, React's Rules of Hooks (and the React Compiler's
// checks that eslint-plugin-react-hooks 7 ships as "recommended"), browser and test globals.
import js from '@eslint/js'
import reactHooks from 'eslint-plugin-react-hooks'
import globals from 'globals'

export default [
  { ignores: ['dist/', 'node_modules/'] },
  js.configs.recommended,
  reactHooks.configs.flat.recommended,
  {
    files: ['**/*.{js,jsx}'],
    languageOptions: {
      ecmaVersion: 'latest',
      sourceType: 'module',
      parserOptions: { ecmaFeatures: { jsx: true } },
      globals: { ...globals.browser },
    },
    rules: {
      // `_` marks a value left out on purpose (e.g. `({ [id]: _, ...rest })`).
      'no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_', caughtErrors: 'none' }],
      // Only says the React Compiler would skip a component; this build does not use the compiler.
      'react-hooks/preserve-manual-memoization': 'off',
    },
  },
  {
    files: ['vite.config.js', 'eslint.config.js'],
    languageOptions: { globals: { ...globals.node } },
  },
]
