// The guest cache mode of 9P shares: the runtime config default (share_cache), the per-bind-mount OCI option
// x-lcow.cache=MODE (removed before the spec reaches runc).
import assert from 'node:assert/strict';
import { qemuConfig } from '../../../src/sandbox/qemu/config.js';
import { takeCacheOption } from '../../../src/task/uvm-fs.js';

describe('sandbox: share cache mode', () => {
  it('defaults to mmap; share_cache (top level or [qemu]) picks none; anything else is refused', () => {
    assert.equal(qemuConfig({}, {}).shareCache, 'mmap');
    assert.equal(qemuConfig({ share_cache: 'none' }, {}).shareCache, 'none');
    assert.equal(qemuConfig({ qemu: { share_cache: 'none' } }, {}).shareCache, 'none');
    assert.throws(() => qemuConfig({ share_cache: 'loose' }, {}), /share_cache must be one of none, mmap/);
    assert.throws(() => qemuConfig({ share_cache: 1 }, {}), /share_cache/);
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
});
