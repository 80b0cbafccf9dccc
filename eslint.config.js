import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import js from '@eslint/js';
import tseslint from 'typescript-eslint';

// Layering (docs/architecture.md, "Layers"): which folders of src/ each folder may import. Per folder, either
// `only` (everything of ours outside the folder is refused except these) or `never` (these are refused; an entry
// may name a subfolder, e.g. sandbox/qemu). Checked on import/export declarations (type-only ones too) and on
// dynamic import() with a literal path.
const HOST_NEVER = ['agent'];
const BACKENDS = ['sandbox/qemu', 'sandbox/hcs', 'sandbox/process'];
const LAYERS = {
  util: { only: [] },
  ttrpc: { only: ['util', 'gen'] }, // gen: google.rpc.Status
  p9: { only: ['util'] },
  transport: { only: ['util'] },
  // The guest agent shares only these with the host side.
  agent: { only: ['gen', 'telemetry', 'transport', 'ttrpc', 'util'] },
  notify: { never: HOST_NEVER },
  telemetry: { never: HOST_NEVER },
  // Backends are loaded by name through sandbox/index.ts; the shim and the Task service use that and the
  // Sandbox interface only.
  shim: { never: [...HOST_NEVER, ...BACKENDS] },
  task: { never: [...HOST_NEVER, ...BACKENDS, 'shim', 'ops'] },
  sandbox: { never: [...HOST_NEVER, 'task', 'shim', 'ops'] },
  ops: { never: HOST_NEVER },
  doctor: { never: HOST_NEVER },
};

const alt = (names) => names.map((n) => n.replace(/[.]/g, '\\.')).join('|');

/** How deep below src/<folder>/ its .ts files sit (0: directly in it). */
function depths(folder) {
  const found = new Set([0]);
  for (const f of readdirSync(join(import.meta.dirname, 'src', folder), { recursive: true }))
    if (String(f).endsWith('.ts')) found.add(String(f).split(/[\\/]/).length - 1);
  return [...found];
}

/** One config object per folder and depth (relative specifiers climb one `../` per level to reach src/). */
function layering() {
  for (const d of readdirSync(join(import.meta.dirname, 'src'), { withFileTypes: true }))
    if (d.isDirectory() && d.name !== 'gen' && !(d.name in LAYERS))
      throw new Error(`eslint.config.js: src/${d.name} has no entry in LAYERS (see docs/architecture.md, Layers)`);
  const configs = [];
  for (const [folder, rule] of Object.entries(LAYERS)) {
    for (const depth of depths(folder)) {
      const up = '\\.\\./'.repeat(depth + 1);
      const regex = rule.only
        ? `^${up}${rule.only.length ? `(?!(?:${alt(rule.only)})/)` : ''}`
        : `^${up}(?:${alt(rule.never)})(?:/|$)`;
      const message = rule.only
        ? `src/${folder} may import only ${rule.only.length ? rule.only.map((f) => `src/${f}`).join(', ') : 'itself'} of ours (docs/architecture.md, Layers).`
        : `src/${folder} must not import ${rule.never.map((f) => `src/${f}`).join(', ')} (docs/architecture.md, Layers).`;
      configs.push({
        files: [`src/${folder}/${'*/'.repeat(depth)}*.ts`],
        rules: {
          'no-restricted-imports': ['error', { patterns: [{ regex, message }] }],
          // esquery regex literals cannot hold a '/', even escaped: \x2f stands for it.
          'no-restricted-syntax': [
            'error',
            { selector: `ImportExpression[source.value=/${regex.replaceAll('/', '\\x2f')}/]`, message },
          ],
        },
      });
    }
  }
  // Entry points: only the agent's own imports src/agent.
  const message = 'Only shim/lcow-agent.ts may import src/agent (docs/architecture.md, Layers).';
  configs.push({
    files: ['shim/*.ts'],
    ignores: ['shim/lcow-agent.ts'],
    rules: {
      'no-restricted-imports': ['error', { patterns: [{ regex: '^\\.\\./src/agent(?:/|$)', message }] }],
      'no-restricted-syntax': [
        'error',
        { selector: 'ImportExpression[source.value=/^\\.\\.\\x2fsrc\\x2fagent(?:\\x2f|$)/]', message },
      ],
    },
  });
  return configs;
}

export default tseslint.config(
  { ignores: ['dist/**', 'build/**', 'src/gen/**', 'node_modules/**'] },
  js.configs.recommended,
  ...tseslint.configs.recommended,
  {
    files: ['**/*.cjs'],
    languageOptions: {
      sourceType: 'commonjs',
      globals: { require: 'readonly', module: 'writable', process: 'readonly' },
    },
    rules: { '@typescript-eslint/no-require-imports': 'off' },
  },
  {
    rules: {
      '@typescript-eslint/no-unused-vars': ['error', { argsIgnorePattern: '^_', varsIgnorePattern: '^_' }],
      'no-constant-condition': ['error', { checkLoops: false }],
    },
  },
  {
    files: ['**/*.ts'],
    languageOptions: {
      parserOptions: { project: './tsconfig.json', tsconfigRootDir: import.meta.dirname },
    },
    rules: {
      '@typescript-eslint/no-floating-promises': 'error',
      '@typescript-eslint/no-misused-promises': 'error',
    },
  },
  ...layering(),
);
