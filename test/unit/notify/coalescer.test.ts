// The coalescer (src/notify/coalescer.ts): host changes -> the operations the guest replays, in order, one entry
// per path between renames, at least one operation per changed path, bounded.
import assert from 'node:assert/strict';
import { Coalescer, type HostChange, type ReplayOp } from '../../../src/notify/coalescer.js';

const c = (kind: HostChange['kind'], path: string, extra: Partial<HostChange> = {}): HostChange => ({
  kind,
  path,
  dir: false,
  ...extra,
});
const show = (ops: ReplayOp[]): string[] =>
  ops.map((o) => `${o.kind} ${o.path}${o.to ? ' ' + o.to : ''}${o.content ? ' +data' : ''}${o.dir ? ' dir' : ''}`);

function run(changes: HostChange[], max = 1000): string[] {
  const q = new Coalescer();
  for (const ch of changes) q.push(ch);
  return show(q.take(max));
}

describe('share notify coalescer', () => {
  it('merges repeated writes and attribute changes of a path into one operation each', () => {
    assert.deepEqual(run([c('modify', 'a'), c('modify', 'a'), c('attrib', 'a'), c('modify', 'a')]), [
      'modify a',
      'attrib a',
    ]);
  });

  it('a created then written file is one create with data; create+delete still fires both', () => {
    assert.deepEqual(run([c('create', 'n'), c('modify', 'n'), c('modify', 'n')]), ['create n +data']);
    assert.deepEqual(run([c('create', 't'), c('modify', 't'), c('delete', 't')]), ['create t', 'delete t']);
  });

  it('a deleted then re-created path is delete + create (the object changed)', () => {
    assert.deepEqual(run([c('modify', 'x'), c('delete', 'x'), c('create', 'x'), c('modify', 'x')]), [
      'delete x',
      'create x +data',
    ]);
  });

  it('keeps renames in order and seals the entries of both ends (and below a directory)', () => {
    assert.deepEqual(
      run([
        c('create', 'tmp'),
        c('modify', 'tmp'),
        c('rename', 'tmp', { to: 'file' }),
        c('modify', 'file'),
        c('modify', 'd/x'),
        c('rename', 'd', { to: 'e', dir: true }),
        c('modify', 'd/x'),
        c('create', 'tmp'),
      ]),
      [
        'create tmp +data',
        'rename tmp file',
        'modify file',
        'modify d/x',
        'rename d e dir',
        'modify d/x',
        'create tmp',
      ],
    );
  });

  it('keeps the order of paths as first changed, and take() pages through the queue', () => {
    const q = new Coalescer();
    for (let i = 0; i < 10; i++) q.push(c('create', `f${i}`));
    for (let i = 9; i >= 0; i--) q.push(c('modify', `f${i}`));
    assert.deepEqual(show(q.take(3)), ['create f0 +data', 'create f1 +data', 'create f2 +data']);
    assert.equal(q.size, 7);
    assert.equal(show(q.take(100)).length, 7);
    assert.equal(q.size, 0);
    // a path taken is a new entry afterwards
    q.push(c('modify', 'f0'));
    assert.deepEqual(show(q.take(10)), ['modify f0']);
  });

  it('10,000 changes on 500 paths stay 500 entries; `full` reports the bound', () => {
    const q = new Coalescer(400);
    for (let i = 0; i < 10_000; i++) q.push(c(i < 500 ? 'create' : 'modify', `p${i % 500}`));
    assert.equal(q.size, 500);
    assert.equal(q.merged, 9_500);
    assert.equal(q.full, true);
    const ops = q.take(10_000);
    assert.equal(ops.length, 500);
    assert.ok(ops.every((o) => o.kind === 'create' && o.content));
    assert.equal(q.full, false);
  });
});

describe('share notify: replay paths from the shim (agent side)', () => {
  it('accepts only plain relative paths', async () => {
    const { validSharePath } = await import('../../../src/agent/share-replay.js');
    for (const ok of ['', 'a', 'a/b.txt', 'dir with space/ü']) assert.equal(validSharePath(ok), true, ok);
    for (const bad of ['/etc', 'a/../b', '..', './a', 'a//b', 'a/', 'a\0b', 'x'.repeat(256)])
      assert.equal(validSharePath(bad), false, bad);
  });
});
