// Container filesystem preparation for VM sandboxes (root: performs real bind mounts on the host).
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { existsSync, mkdtempSync, readdirSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Sandbox, Share, ShareOptions, ShareRole } from '../../../src/sandbox/index.js';
import {
  prepareContainerFs,
  releaseContainerFs,
  type HostMountSandbox,
  type OciSpecLike,
} from '../../../src/task/uvm-fs.js';
import { silentLogger } from '../../../src/util/log.js';

/** Records what would be shared with the guest; the guest path is the host path (no VM needed here). */
function recordingSandbox(): HostMountSandbox & {
  shared: Array<{ path: string; readOnly: boolean; role?: ShareRole }>;
  mounts: Set<string>;
} {
  const shared: Array<{ path: string; readOnly: boolean; role?: ShareRole }> = [];
  const mounts = new Set<string>();
  const sandbox: Partial<Sandbox> & Record<string, unknown> = {
    backend: 'recording',
    isolated: true,
    mountsRootfsOnHost: true,
    shared,
    mounts,
    trackHostMount: (path: string, present: boolean) => (present ? mounts.add(path) : mounts.delete(path)),
    addShare: async (path: string, opts: ShareOptions): Promise<Share> => {
      shared.push({ path, readOnly: opts.readOnly, role: opts.role });
      return { shareId: String(shared.length), guestPath: path };
    },
    removeShare: async () => undefined,
  };
  return sandbox as unknown as HostMountSandbox & { shared: typeof shared; mounts: typeof mounts };
}

function mountedAt(path: string): boolean {
  return readFileSync('/proc/self/mountinfo', 'utf8')
    .split('\n')
    .some((line) => line.split(' ')[4] === path);
}

describe('uvm-fs: container filesystem for VM sandboxes', () => {
  let dir: string;
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'lcow-uvmfs-'));
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it('a single-file bind mount shares a holder with only that file, never its siblings; release undoes it', async () => {
    const hostEtc = join(dir, 'etc');
    const bundle = join(dir, 'bundle');
    for (const d of [hostEtc, bundle, join(bundle, 'rootfs')]) execFileSync('mkdir', ['-p', d]);
    writeFileSync(join(hostEtc, 'app.conf'), 'setting=1\n');
    writeFileSync(join(hostEtc, 'secret.key'), 'do not share');
    const spec: OciSpecLike = {
      root: { path: 'rootfs' },
      mounts: [
        { destination: '/etc/app.conf', type: 'bind', source: join(hostEtc, 'app.conf'), options: ['rbind', 'ro'] },
        { destination: '/data', type: 'bind', source: hostEtc, options: ['rbind', 'rw'] },
      ],
    };
    const sandbox = recordingSandbox();
    const prepared = await prepareContainerFs(sandbox, bundle, spec, [], silentLogger);

    const fileShare = sandbox.shared[1]!;
    assert.notEqual(fileShare.path, hostEtc, 'the parent directory of a single file must not be shared');
    assert.ok(fileShare.path.startsWith(bundle), fileShare.path);
    assert.equal(fileShare.readOnly, true);
    assert.deepEqual(readdirSync(fileShare.path), ['app.conf']);
    assert.equal(readFileSync(join(fileShare.path, 'app.conf'), 'utf8'), 'setting=1\n');
    assert.equal(spec.mounts![0]!.source, join(fileShare.path, 'app.conf'));
    assert.ok(mountedAt(join(fileShare.path, 'app.conf')));
    assert.throws(
      () => writeFileSync(join(fileShare.path, 'app.conf'), 'x'),
      /EROFS/,
      'read-only on the host side too',
    );
    // A directory bind mount is shared as itself, as a host directory (mapped security model by default).
    assert.deepEqual(sandbox.shared[2], { path: hostEtc, readOnly: false, role: 'host-directory' });
    assert.equal(fileShare.role, 'host-directory');
    // A rootfs given by path (no snapshot mounts from containerd) is a host directory too.
    assert.equal(sandbox.shared[0]!.role, 'host-directory');

    await releaseContainerFs(sandbox, prepared, silentLogger);
    assert.ok(!existsSync(fileShare.path), 'holder removed');
    assert.ok(!mountedAt(join(fileShare.path, 'app.conf')), 'bind mount undone');
    assert.equal(sandbox.mounts.size, 0);
    assert.equal(readFileSync(join(hostEtc, 'app.conf'), 'utf8'), 'setting=1\n', 'the source file is untouched');
    assert.ok(existsSync(join(hostEtc, 'secret.key')));
  });

  it('a rootfs snapshot mounted from containerd mounts is shared with the rootfs-snapshot role', async () => {
    const lower = join(dir, 'layer');
    const bundle = join(dir, 'bundle2');
    for (const d of [lower, bundle]) execFileSync('mkdir', ['-p', d]);
    writeFileSync(join(lower, 'etc-passwd'), 'root:x:0:0\n');
    const spec: OciSpecLike = { root: { path: 'rootfs' }, mounts: [] };
    const sandbox = recordingSandbox();
    const prepared = await prepareContainerFs(
      sandbox,
      bundle,
      spec,
      [{ type: 'bind', source: lower, target: '', options: ['rbind', 'ro'] }],
      silentLogger,
    );
    try {
      assert.deepEqual(sandbox.shared, [{ path: join(bundle, 'rootfs'), readOnly: false, role: 'rootfs-snapshot' }]);
    } finally {
      await releaseContainerFs(sandbox, prepared, silentLogger);
    }
    assert.ok(!mountedAt(join(bundle, 'rootfs')));
  });
});
