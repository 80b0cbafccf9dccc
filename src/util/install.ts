// Where this installation's files are. The code runs in one of two layouts that `make build` writes: tsc's
// output (modules in dist/src/<layer>/, entry points in dist/shim/) and the esbuild bundle the launchers in bin/
// run (entry points and their shared chunks side by side in dist/bundle/). Entry points are spawned in the
// layout of the running code, so a bundled shim never mixes in tsc's modules and the tests' unbundled code
// never spawns a bundle that may be older than dist/.
import { basename, dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const HERE = dirname(fileURLToPath(import.meta.url));
const BUNDLED = basename(HERE) === 'bundle';

/** The install (or repository) root: the directory holding dist/, build/ and package.json. */
export const INSTALL_ROOT = BUNDLED ? join(HERE, '..', '..') : join(HERE, '..', '..', '..');

/** The script of one of our executables, in the running code's layout. */
export function entryScript(name: 'containerd-shim-lcow-v1' | 'lcowctl' | 'lcow-agent'): string {
  return join(INSTALL_ROOT, 'dist', BUNDLED ? 'bundle' : 'shim', `${name}.js`);
}
