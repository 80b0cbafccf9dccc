// The guest cache mode of 9P shares: the runtime config default (share_cache), the per-bind-mount OCI option
// x-lcow.cache=MODE (removed before the spec reaches runc), and container rootfs snapshots' own default
// (rootfs_share_cache: mmap unless configured loose).
import assert from 'node:assert/strict';
import { qemuConfig } from '../../../src/sandbox/qemu/config.js';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Sandbox, ShareOptions } from '../../../src/sandbox/index.js';
import { shareBindMounts, takeCacheOption } from '../../../src/task/uvm-fs.js';

describe('sandbox: share cache mode', () => {
  it('defaults to mmap; share_cache (top level or [qemu]) picks none; anything else is refused', () => {
    assert.equal(qemuConfig({}, {}).shareCache, 'mmap');
    assert.equal(qemuConfig({ share_cache: 'none' }, {}).shareCache, 'none');
    assert.equal(qemuConfig({ qemu: { share_cache: 'none' } }, {}).shareCache, 'none');
    assert.throws(() => qemuConfig({ share_cache: 'loose' }, {}), /share_cache must be one of none, mmap/);
    assert.throws(() => qemuConfig({ share_cache: 1 }, {}), /share_cache/);
  });

  it('rootfs snapshots default to mmap; rootfs_share_cache picks loose or none; share_cache does not change it', () => {
    assert.equal(qemuConfig({}, {}).rootfsShareCache, 'mmap');
    assert.equal(qemuConfig({ share_cache: 'none' }, {}).rootfsShareCache, 'mmap');
    assert.equal(qemuConfig({ rootfs_share_cache: 'loose' }, {}).rootfsShareCache, 'loose');
    assert.equal(qemuConfig({ qemu: { rootfs_share_cache: 'none' } }, {}).rootfsShareCache, 'none');
    assert.throws(
      () => qemuConfig({ rootfs_share_cache: 'fscache' }, {}),
      /rootfs_share_cache must be one of none, mmap, loose/,
    );
  });

  it('x-lcow.cache=MODE is taken out of the mount options; other options stay in order', () => {
    assert.deepEqual(takeCacheOption(['rbind', 'x-lcow.cache=none', 'rw']), { cache: 'none', rest: ['rbind', 'rw'] });
    assert.deepEqual(takeCacheOption(['rbind', 'ro']), { cache: undefined, rest: ['rbind', 'ro'] });
    assert.deepEqual(takeCacheOption(['x-lcow.cache=mmap']), { cache: 'mmap', rest: [] });
  });

  it('an unknown mode or a repeated option is refused (the container is not created)', () => {
    assert.throws(() => takeCacheOption(['x-lcow.cache=loose']), /cache mode must be one of none, mmap/);
    assert.throws(() => takeCacheOption(['x-lcow.cache=']), /cache mode/);
    assert.throws(() => takeCacheOption(['x-lcow.cache=none', 'x-lcow.cache=mmap']), /given twice/);
  });

  it('a bind mount with x-lcow.cache=none is shared with that mode; runc never sees the option', async () => {
    const dir = mkdtempSync(join(tmpdir(), 'lcow-share-cache-'));
    try {
      const asked: ShareOptions[] = [];
      const sandbox = {
        backend: 'recording',
        addShare: async (_path: string, o: ShareOptions) => {
          asked.push(o);
          return { shareId: `s${asked.length}`, guestPath: `/g/s${asked.length}` };
        },
      } as unknown as Sandbox;
      const spec = {
        mounts: [
          { destination: '/a', type: 'bind', source: dir, options: ['rbind', 'x-lcow.cache=none', 'rw'] },
          { destination: '/b', type: 'bind', source: dir, options: ['rbind', 'ro'] },
        ],
      };
      await shareBindMounts(sandbox, spec, { shareIds: [], fileHolders: [] });
      assert.deepEqual(
        asked.map((o) => [o.cache, o.readOnly, o.role]),
        [
          ['none', false, 'host-directory'],
          [undefined, true, 'host-directory'],
        ],
      );
      assert.deepEqual(spec.mounts[0]!.options, ['rbind', 'rw']);
      assert.equal(spec.mounts[0]!.source, '/g/s1');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});
