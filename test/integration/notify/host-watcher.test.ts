// The host side of share notify against the real kernel (fanotify needs root): the tree watcher reports what
// OTHER processes change, as tree-relative create/modify/attrib/rename/delete, keeps new and moved directories
// watched, ignores this process's own changes (the 9P server's writes for the guest), and bounds the marks. The
// share notifier then turns a burst into bounded batches whose replay plan is consistent.
import assert from 'node:assert/strict';
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { HostWatcher } from '../../../src/notify/host-watcher.js';
import { ShareNotifier, type OutgoingChange } from '../../../src/notify/share-notifier.js';
import type { HostChange } from '../../../src/notify/coalescer.js';
import { ReplayPlan } from '../../../src/p9/replay-plan.js';
import { silentLogger } from '../../../src/util/log.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';

const sh = (cwd: string, script: string): void => void execFileSync('sh', ['-c', script], { cwd });
const show = (c: HostChange): string => `${c.kind} ${c.path}${c.to ? ' -> ' + c.to : ''}${c.dir ? ' (dir)' : ''}`;

async function until(cond: () => boolean, ms = 5000): Promise<void> {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not reached');
    await new Promise((r) => setTimeout(r, 10));
  }
}

describe('share notify: host watcher (fanotify)', function () {
  this.timeout(30_000);
  let dir: string;
  before(function () {
    requirePrerequisite(this, process.getuid?.() === 0 ? undefined : 'fanotify needs root');
  });
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'lcow-notify-'));
    mkdirSync(join(dir, 'sub/deep'), { recursive: true });
  });
  afterEach(() => rmSync(dir, { recursive: true, force: true }));

  it("reports other processes' changes, relative to the tree, with renames paired; ignores its own", async () => {
    const got: string[] = [];
    const w = new HostWatcher({ pollMs: 5 });
    const tree = await w.watch(dir, { log: silentLogger, onChanges: (cs) => (got.push(...cs.map(show)), true) });
    try {
      assert.equal(tree.keys.size, 3);
      writeFileSync(join(dir, 'own.txt'), 'this process'); // the 9P server's writes look like this
      sh(dir, 'echo a > sub/a; echo b >> sub/a; mv sub/a sub/deep/b; chmod 600 sub/deep/b; mkdir nd');
      await until(() => got.includes('create nd (dir)'));
      await until(() => tree.keys.has('nd'));
      sh(dir, 'touch nd/inside; mv nd moved; rm sub/deep/b; touch moved/after');
      await until(() => got.includes('create moved/after'));
      for (const want of [
        'create sub/a',
        'modify sub/a',
        'rename sub/a -> sub/deep/b',
        'attrib sub/deep/b',
        'rename nd -> moved (dir)',
        'delete sub/deep/b',
      ])
        assert.ok(got.includes(want), `missing ${want} in ${JSON.stringify(got)}`);
      assert.ok(!got.some((l) => l.includes('own.txt')), 'own change reported');
      assert.ok(tree.keys.has('moved') && !tree.keys.has('nd'), 'marks follow the move');
    } finally {
      tree.close();
    }
    assert.equal(w.watchedDirs, 0);
  });

  it('stops at maxDirs directories per tree', async () => {
    for (let i = 0; i < 20; i++) mkdirSync(join(dir, `d${i}`));
    const w = new HostWatcher({ pollMs: 5 });
    const tree = await w.watch(dir, { log: silentLogger, maxDirs: 8, onChanges: () => true });
    try {
      assert.equal(tree.keys.size, 8);
      assert.ok(tree.skippedDirs > 0);
    } finally {
      tree.close();
    }
  });

  it('a notifier turns a burst into bounded batches with a consistent replay plan', async () => {
    const plan = new ReplayPlan(4096);
    const batches: OutgoingChange[][] = [];
    const hiddenAtSend: string[][] = [];
    const n = await ShareNotifier.start({
      shareId: 's1',
      hostPath: dir,
      plan,
      log: silentLogger,
      maxBatch: 100,
      watcher: new HostWatcher({ pollMs: 5 }),
      send: async (changes) => {
        batches.push(changes);
        hiddenAtSend.push(changes.filter((c) => c.kind === 'create').map((c) => String(plan.isHidden(c.path))));
        await new Promise((r) => setTimeout(r, 5));
        return { replayed: changes.length, failed: 0 };
      },
    });
    try {
      sh(dir, 'for i in $(seq 1 300); do echo $i > f$i; echo again >> f$i; done; rm f1; echo back > f1');
      await until(() => new Set(batches.flat().map((o) => o.path)).size >= 300 && n.stats().pending === 0);
      await n.idle();
      const ops = batches.flat();
      assert.ok(
        batches.every((b) => b.length <= 102),
        'batch bound',
      );
      const paths = new Set(ops.map((o) => o.path));
      for (let i = 1; i <= 300; i++) assert.ok(paths.has(`f${i}`), `f${i} never replayed`);
      assert.ok(ops.length < n.stats().hostChanges, `not coalesced: ${ops.length} operations`);
      assert.ok(
        hiddenAtSend.flat().every((h) => h === 'true'),
        'a create was sent without its name hidden',
      );
      assert.equal(plan.size, 0, 'the plan is cleared after each batch');
      const st = n.stats();
      assert.ok(st.merged > 0 && st.batches === batches.length);
    } finally {
      n.close();
    }
  });
});

describe('share notify: the agent replay worker (setfsuid thread)', function () {
  this.timeout(30_000);
  before(function () {
    requirePrerequisite(this, process.getuid?.() === 0 ? undefined : 'setfsuid needs root');
  });

  it('replays each kind of change below the root with the replay fsuid and pins new directories', async () => {
    const { ShareReplayer } = await import('../../../src/agent/share-replay.js');
    const { lstatSync, readdirSync } = await import('node:fs');
    // Here the "mount" is a plain host directory, so the replays really happen: this checks the worker's
    // operations and credentials; the 9P server's replay tree (test/unit/p9/replay.test.ts) is what makes them
    // no-ops on a share.
    const d = mkdtempSync(join(tmpdir(), 'lcow-replay-'));
    mkdirSync(join(d, 'sub'));
    writeFileSync(join(d, 'old'), 'x');
    writeFileSync(join(d, 'm'), 'abc');
    const uid = 4294901760;
    const r = new ShareReplayer(d, uid, 100, silentLogger);
    try {
      await r.pinTree();
      assert.equal(r.pinned, 2);
      const res = await r.replay([
        { kind: 'create', path: 'sub/new', dir: false, type: 'file', content: true },
        { kind: 'create', path: 'nd', dir: true, type: 'dir' },
        { kind: 'modify', path: 'm', dir: false },
        { kind: 'attrib', path: 'm', dir: false },
        { kind: 'rename', path: 'old', to: 'sub/renamed', dir: false },
        { kind: 'delete', path: 'sub/renamed', dir: false },
        { kind: 'delete', path: 'no/such', dir: false },
      ]);
      assert.equal(res.replayed, 6);
      assert.equal(res.failed, 1);
      assert.deepEqual(readdirSync(d).sort(), ['m', 'nd', 'sub']);
      assert.equal(lstatSync(join(d, 'sub/new')).uid, uid, 'created with the replay fsuid');
      assert.equal(r.pinned, 3, 'the new directory is pinned');
      // Never out of the root: a symlink in the path is refused (openat2 RESOLVE_NO_SYMLINKS).
      const outside = mkdtempSync(join(tmpdir(), 'lcow-replay-out-'));
      const { symlinkSync, existsSync } = await import('node:fs');
      symlinkSync(outside, join(d, 'link'));
      const bad = await r.replay([{ kind: 'create', path: 'link/escaped', dir: false, type: 'file' }]);
      assert.equal(bad.failed, 1);
      assert.equal(existsSync(join(outside, 'escaped')), false);
      rmSync(outside, { recursive: true });
    } finally {
      r.close();
      rmSync(d, { recursive: true, force: true });
    }
  });
});
