// The two layouts make build writes (tsc's dist/ and the esbuild bundle the launchers run) find the same install
// root and spawn entry points of their own layout. That the bundled code finds the guest image and spawns the
// bundled agent and lcowctl is exercised by every suite that runs the shim through bin/ (integration, e2e).
import assert from 'node:assert/strict';
import { spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { INSTALL_ROOT, entryScript } from '../../../src/util/install.js';

describe('install layout', () => {
  it('finds the repository root and the unbundled entry points from dist/src', () => {
    assert.equal(JSON.parse(readFileSync(join(INSTALL_ROOT, 'package.json'), 'utf8')).name, 'containerd-shim-lcow');
    for (const name of ['containerd-shim-lcow-v1', 'lcowctl', 'lcow-agent'] as const) {
      assert.equal(entryScript(name), join(INSTALL_ROOT, 'dist', 'shim', `${name}.js`));
      assert.ok(existsSync(entryScript(name)), entryScript(name));
    }
  });

  it('the launchers run the bundle, and the bundle starts', function () {
    this.timeout(20_000);
    const bundle = join(INSTALL_ROOT, 'dist', 'bundle');
    const launcher = readFileSync(join(INSTALL_ROOT, 'bin', 'containerd-shim-lcow-v1'), 'utf8');
    assert.match(launcher, /dist\/bundle\/containerd-shim-lcow-v1\.js/);
    const version = spawnSync(process.execPath, [join(bundle, 'containerd-shim-lcow-v1.js'), '-v'], {
      encoding: 'utf8',
    });
    assert.equal(version.status, 0, version.stderr);
    assert.match(version.stdout, /^containerd-shim-lcow-v1\n {2}Version: /);
  });
});
