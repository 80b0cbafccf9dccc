// The replay tree (src/p9/ops/replay.ts): attaches with the export's replay uid get a tree whose operations are
// acknowledged without touching the host, walks that follow the plan (hidden names, phantoms for what the host
// no longer has), and refusals for everything a replayer does not need.
import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Fixture } from './fixture.js';
import { MsgType, QidType } from '../../../src/p9/messages.js';
import { Errno } from '../../../src/p9/errno.js';
import { P9ClientError, type P9Client } from '../../helpers/p9client.js';

const REPLAY_UID = 4_000_000_001;

async function rejects(p: Promise<unknown>, ecode: number): Promise<void> {
  await assert.rejects(p, (err: unknown) => err instanceof P9ClientError && err.ecode === ecode);
}

/** A snapshot of the whole export (names, types, contents, modes, times) to prove nothing changed. */
function snapshot(dir: string): string {
  const out: string[] = [];
  const walk = (rel: string): void => {
    for (const name of fs.readdirSync(`${dir}/${rel}`).sort()) {
      const p = rel ? `${rel}/${name}` : name;
      const st = fs.lstatSync(`${dir}/${p}`);
      const data = st.isFile() ? fs.readFileSync(`${dir}/${p}`).toString('base64') : '';
      out.push(`${p} ${st.mode} ${st.uid} ${st.gid} ${st.size} ${st.mtimeMs} ${st.ino} ${data}`);
      if (st.isDirectory()) walk(p);
    }
  };
  walk('');
  return out.join('\n');
}

describe('9P replay tree (host changes replayed in the guest)', () => {
  let fx: Fixture;
  beforeEach(async () => {
    fx = await Fixture.start({
      exportsFor: (dir) => [{ name: 'test', path: dir, replay: { uid: REPLAY_UID, maxPlanEntries: 16 } }],
    });
  });
  afterEach(() => fx.stop());

  const plan = (): NonNullable<(typeof fx.server.exports)[0]['replay']>['plan'] => fx.server.exports[0]!.replay!.plan;

  async function replayClient(): Promise<{ c: P9Client; root: number }> {
    const { c } = await fx.client(65536, false);
    const { fid } = await c.attach('test', undefined, REPLAY_UID);
    return { c, root: fid };
  }

  it('acknowledges a replayed create, mkdir, unlink, rename and setattr without touching the host', async () => {
    fx.file('new.txt', 'host wrote this');
    fs.mkdirSync(fx.host('newdir'));
    fx.file('moved.txt', 'renamed on the host');
    fx.file('mod.txt', 'modified');
    const before = snapshot(fx.dir);
    plan().hide('new.txt');
    plan().hide('newdir');
    plan().hide('moved.txt');
    plan().phantomDir('gone-dir');
    const { c, root } = await replayClient();

    // create: the name is hidden until the create is acknowledged, which answers the host file's qid
    await rejects(c.walk(root, ['new.txt']), Errno.ENOENT);
    const { fid: dir } = await c.walk(root, []);
    const created = await c.lcreate(dir, 'new.txt', 0o301 /* O_WRONLY|O_CREAT|O_EXCL */, 0o644);
    const { fid: seen } = await c.walk(root, ['new.txt']);
    const attr = await c.getattr(seen);
    assert.equal(attr.qid.path, created.qid.path, 'the create answers the host object');
    assert.equal(attr.size, BigInt('host wrote this'.length));

    // mkdir of a hidden directory
    await rejects(c.walk(root, ['newdir']), Errno.ENOENT);
    const q = await c.mkdir(root, 'newdir');
    assert.equal(q.type, QidType.DIR);

    // delete: the host no longer has it; the walk answers a phantom (a directory when the plan says so)
    const { fid: ghost, qids } = await c.walk(root, ['gone.txt']);
    assert.equal(qids[0]!.type, QidType.FILE);
    const gattr = await c.getattr(ghost);
    assert.equal(gattr.mode & 0o170000, 0o100000);
    await c.unlinkat(root, 'gone.txt');
    const { qids: dq } = await c.walk(root, ['gone-dir']);
    assert.equal(dq[0]!.type, QidType.DIR);
    await c.unlinkat(root, 'gone-dir', 0x200);

    // rename old -> moved.txt: the source is a phantom, the target hidden until the rename
    await c.walk(root, ['old.txt']);
    await rejects(c.walk(root, ['moved.txt']), Errno.ENOENT);
    await c.rpc({
      type: MsgType.Trenameat,
      olddirfid: root,
      oldname: 'old.txt',
      newdirfid: root,
      newname: 'moved.txt',
    });
    await c.walk(root, ['moved.txt']);

    // modify and attributes: open for writing, truncate, chmod, utimes are all acknowledged no-ops
    const { fid: m } = await c.walk(root, ['mod.txt']);
    await c.lopen(m, 1 /* O_WRONLY */);
    await c.setattr(m, { size: 0, mode: 0o4777, uid: 0 });
    await c.rpc({ type: MsgType.Tfsync, fid: m, datasync: 0 });
    await c.clunk(m);
    await c.mknod(root, 'fifo', 0o010644);
    await c.rpc({ type: MsgType.Tsymlink, fid: root, name: 'link', symtgt: '/etc/shadow', gid: 0 });
    assert.equal(snapshot(fx.dir), before, 'the host is byte-identical');
  });

  it('refuses reads, writes, readdir, xattrs and locks in the replay tree (never a privilege)', async () => {
    fx.file('secret', 'x');
    const before = snapshot(fx.dir);
    const { c, root } = await replayClient();
    const { fid } = await c.walk(root, ['secret']);
    await c.lopen(fid, 2 /* O_RDWR */);
    await rejects(c.read(fid, 0, 10), Errno.EPERM);
    await rejects(c.write(fid, 0, Buffer.from('pwned')), Errno.EPERM);
    const { fid: d } = await c.walk(root, []);
    await c.lopen(d, 0);
    await rejects(c.readdirAll(d), Errno.EPERM);
    await rejects(c.xattrGet(root, 'user.x'), Errno.ENODATA);
    await rejects(
      c.rpc({ type: MsgType.Txattrcreate, fid: root, name: 'security.capability', attrSize: 4n, flags: 0 }),
      Errno.EPERM,
    );
    await rejects(
      c.rpc({ type: MsgType.Tlock, fid, lockType: 1, flags: 0, start: 0n, length: 0n, procId: 1, clientId: 'x' }),
      Errno.EPERM,
    );
    await rejects(c.rpc({ type: MsgType.Treadlink, fid }), Errno.EPERM);
    assert.equal(snapshot(fx.dir), before);
  });

  it('keeps the ordinary tree untouched on the same connection (mixing the trees is refused)', async () => {
    fx.file('a.txt', 'one');
    plan().hide('a.txt');
    const { c } = await fx.client(65536, false);
    const { fid: normal } = await c.attach('test', undefined, 0);
    const { fid: replay } = await c.attach('test', undefined, REPLAY_UID);
    // the plan hides names only from the replay tree
    assert.equal((await c.readFile(normal, ['a.txt'])).toString(), 'one');
    await rejects(c.walk(replay, ['a.txt']), Errno.ENOENT);
    // the ordinary tree still writes to the host
    const { fid: f } = await c.walk(normal, ['a.txt']);
    await c.lopen(f, 1);
    await c.write(f, 0, Buffer.from('two'));
    await c.clunk(f);
    assert.equal(fs.readFileSync(fx.host('a.txt'), 'utf8'), 'two');
    await rejects(
      c.rpc({ type: MsgType.Trenameat, olddirfid: normal, oldname: 'a.txt', newdirfid: replay, newname: 'b' }),
      Errno.EXDEV,
    );
    assert.ok(fs.existsSync(fx.host('a.txt')));
  });

  it('bounds the plan and releases phantom fids on clunk', async () => {
    for (let i = 0; i < 16; i++) plan().hide(`f${i}`);
    assert.throws(() => plan().hide('one-too-many'), /replay plan full/);
    plan().clear();
    const { c, root } = await replayClient();
    const before = fx.server.fidCount;
    const fids: number[] = [];
    for (let i = 0; i < 50; i++) fids.push((await c.walk(root, [`nothing-${i}`])).fid);
    assert.equal(fx.server.fidCount, before + 50);
    for (const f of fids) await c.clunk(f);
    assert.equal(fx.server.fidCount, before);
    assert.equal(fx.server.hostFdCount <= 2, true);
  });

  it('treats the replay uid as an ordinary uid on an export without a replay tree', async () => {
    const plain = await Fixture.start();
    try {
      const { c } = await plain.client(65536, false);
      const { fid } = await c.attach('test', undefined, REPLAY_UID);
      const { fid: d } = await c.walk(fid, []);
      await c.lcreate(d, 'real', 1, 0o644);
      await c.write(d, 0, Buffer.from('written'));
      await c.clunk(d);
      assert.equal(fs.readFileSync(plain.host('real'), 'utf8'), 'written');
    } finally {
      await plain.stop();
    }
  });

  it('refuses a replay uid of 0 (root must never be the replay tree)', () => {
    assert.throws(
      () =>
        new (fx.server.constructor as typeof import('../../../src/p9/server.js').P9Server)({
          exports: [{ name: 'x', path: fx.dir, replay: { uid: 0 } }],
        }),
      /replay uid/,
    );
  });
});
