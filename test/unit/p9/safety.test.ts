// Path safety and read-only exports: host symlinks are never followed, `..` never leaves the root, special
// files are never opened, and a read-only export refuses every mutation with EROFS.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Errno } from '../../../src/p9/errno.js';
import { MsgType, QidType, type TMessage } from '../../../src/p9/messages.js';
import { P9ClientError } from '../../helpers/p9client.js';
import { Fixture } from './fixture.js';

async function errnoOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
  } catch (e) {
    if (e instanceof P9ClientError) return e.ecode;
    throw e;
  }
  return 0;
}

describe('p9 path safety', function () {
  this.timeout(20_000);
  let fx: Fixture;
  let outside: string;
  beforeEach(async () => {
    fx = await Fixture.start({ maxHostFds: 4 });
    outside = fs.mkdtempSync(path.join(os.tmpdir(), 'p9outside-'));
    fs.writeFileSync(path.join(outside, 'secret'), 'top secret');
    fs.symlinkSync(outside, fx.host('dirlink'));
    fs.symlinkSync(path.join(outside, 'secret'), fx.host('filelink'));
  });
  afterEach(async () => {
    await fx.stop();
    fs.rmSync(outside, { recursive: true, force: true });
  });

  it('walking through a host symlink to a directory outside stops at the link', async () => {
    const { c, root } = await fx.client();
    const r = await c.send({ type: MsgType.Twalk, fid: root, newfid: 20, names: ['dirlink', 'secret'] });
    assert.equal(r.type, MsgType.Rwalk);
    const qids = (r as { qids: Array<{ type: number }> }).qids;
    assert.equal(qids.length, 1);
    assert.equal(qids[0]!.type, QidType.SYMLINK);
    assert.equal(await errnoOf(c.getattr(20)), Errno.EBADF);
  });

  it('a symlink to a file outside is a symlink to the guest: never opened, chmod/truncate never reach the target', async () => {
    const { c, root } = await fx.client();
    const l = await c.walk(root, ['filelink']);
    const ga = await c.getattr(l.fid);
    assert.equal(ga.mode & 0o170000, 0o120000);
    assert.notEqual(await errnoOf(c.lopen(l.fid, 0)), 0);
    const setattr = (valid: number): TMessage => ({
      type: MsgType.Tsetattr,
      fid: l.fid,
      valid,
      mode: 0o777,
      uid: 0,
      gid: 0,
      size: 0n,
      atimeSec: 0n,
      atimeNsec: 0n,
      mtimeSec: 0n,
      mtimeNsec: 0n,
    });
    assert.notEqual(await errnoOf(c.rpc(setattr(0x1))), 0);
    assert.notEqual(await errnoOf(c.rpc(setattr(0x8))), 0);
    assert.equal(fs.readFileSync(path.join(outside, 'secret'), 'utf8'), 'top secret');
    assert.notEqual(fs.statSync(path.join(outside, 'secret')).mode & 0o777, 0o777);
  });

  it('lcreate over a symlink pointing outside neither follows nor truncates it', async () => {
    const { c, root } = await fx.client();
    const d = await c.walk(root, []);
    assert.notEqual(await errnoOf(c.lcreate(d.fid, 'filelink', 0o1001)), 0);
    assert.notEqual(await errnoOf(c.lcreate(d.fid, 'dirlink', 1)), 0);
    assert.equal(fs.readFileSync(path.join(outside, 'secret'), 'utf8'), 'top secret');
  });

  it('a guest-made absolute symlink is stored verbatim and never followed on walk', async () => {
    const { c, root } = await fx.client();
    await c.rpc({ type: MsgType.Tsymlink, fid: root, name: 'abs', symtgt: outside, gid: 0 });
    const r = await c.send({ type: MsgType.Twalk, fid: root, newfid: 21, names: ['abs', 'secret'] });
    assert.equal((r as { qids: unknown[] }).qids.length, 1);
    assert.equal(fs.readlinkSync(fx.host('abs')), outside);
  });

  it('`..` cannot climb out of the export, however many', async () => {
    const { c, root } = await fx.client();
    const rootQid = (await c.getattr(root)).qid;
    const w = await c.walk(root, new Array(16).fill('..'));
    assert.deepEqual(w.qids[15], rootQid);
    const r = await c.send({ type: MsgType.Twalk, fid: root, newfid: 22, names: ['..', path.basename(outside)] });
    assert.equal(r.type, MsgType.Rwalk);
    assert.equal((r as { qids: unknown[] }).qids.length, 1);
  });

  it('a directory swapped for a symlink on the host is not followed when its fid is reopened (ESTALE)', async () => {
    fs.mkdirSync(fx.host('d'));
    fs.writeFileSync(fx.host('d/inside'), 'in');
    const { c, root } = await fx.client();
    const d = await c.walk(root, ['d']);
    fs.renameSync(fx.host('d'), fx.host('d.old'));
    fs.symlinkSync(outside, fx.host('d'));
    // Push d's O_PATH fd out of the 4-entry LRU so the next use reopens by path.
    for (let i = 0; i < 6; i++) await c.walk(root, []);
    const e = await errnoOf(c.walk(d.fid, ['secret']));
    assert.ok(e === Errno.ESTALE || e === Errno.ENOENT, `errno ${e}`);
    assert.equal(await errnoOf(c.readFile(root, ['d', 'secret'])), Errno.ENOENT);
  });

  it('names with a slash, empty names, `.` and `..` are refused for creation', async () => {
    const { c, root } = await fx.client();
    assert.equal(await errnoOf(c.mkdir(root, 'a/b')), Errno.ENOENT);
    assert.equal(await errnoOf(c.mkdir(root, '')), Errno.ENOENT);
    assert.equal(await errnoOf(c.mkdir(root, '.')), Errno.EEXIST);
    assert.equal(await errnoOf(c.mkdir(root, '..')), Errno.EEXIST);
    const d = await c.walk(root, []);
    assert.equal(await errnoOf(c.lcreate(d.fid, '../escape', 1)), Errno.ENOENT);
    assert.equal(fs.existsSync(path.join(path.dirname(fx.dir), 'escape')), false);
  });
});

describe('p9 read-only export', function () {
  this.timeout(20_000);
  let fx: Fixture;
  beforeEach(async () => {
    fx = await Fixture.start({ readOnly: true });
    fx.file('f.txt', 'ro');
    fs.mkdirSync(fx.host('d'));
  });
  afterEach(async () => {
    await fx.stop();
  });

  it('rejects every mutation with EROFS and still serves reads', async () => {
    const { c, root } = await fx.client();
    const fid = async (names: string[]): Promise<number> => (await c.walk(root, names)).fid;
    const zeroTimes = { atimeSec: 0n, atimeNsec: 0n, mtimeSec: 0n, mtimeNsec: 0n };
    const cases: Array<[string, () => Promise<unknown>]> = [
      ['lcreate', async () => c.lcreate(await fid([]), 'n', 1)],
      ['lopen WRONLY', async () => c.lopen(await fid(['f.txt']), 1)],
      ['lopen RDWR', async () => c.lopen(await fid(['f.txt']), 2)],
      ['lopen TRUNC', async () => c.lopen(await fid(['f.txt']), 0o1000)],
      ['mkdir', async () => c.mkdir(root, 'n')],
      [
        'mknod',
        async () => c.rpc({ type: MsgType.Tmknod, dfid: root, name: 'n', mode: 0o10644, major: 0, minor: 0, gid: 0 }),
      ],
      ['symlink', async () => c.rpc({ type: MsgType.Tsymlink, fid: root, name: 'n', symtgt: 'x', gid: 0 })],
      ['link', async () => c.rpc({ type: MsgType.Tlink, dfid: root, fid: await fid(['f.txt']), name: 'n' })],
      ['rename', async () => c.rpc({ type: MsgType.Trename, fid: await fid(['f.txt']), dfid: root, name: 'n' })],
      [
        'renameat',
        async () =>
          c.rpc({ type: MsgType.Trenameat, olddirfid: root, oldname: 'f.txt', newdirfid: root, newname: 'n' }),
      ],
      ['unlinkat', async () => c.unlinkat(root, 'f.txt')],
      ['unlinkat dir', async () => c.unlinkat(root, 'd', 0x200)],
      ['remove', async () => c.rpc({ type: MsgType.Tremove, fid: await fid(['f.txt']) })],
      [
        'setattr',
        async () =>
          c.rpc({
            type: MsgType.Tsetattr,
            fid: await fid(['f.txt']),
            valid: 1,
            mode: 0o777,
            uid: 0,
            gid: 0,
            size: 0n,
            ...zeroTimes,
          }),
      ],
      [
        'xattrcreate',
        async () =>
          c.rpc({ type: MsgType.Txattrcreate, fid: await fid(['f.txt']), name: 'user.x', attrSize: 1n, flags: 0 }),
      ],
    ];
    for (const [name, run] of cases) assert.equal(await errnoOf(run()), Errno.EROFS, name);
    assert.equal(fs.readFileSync(fx.host('f.txt'), 'utf8'), 'ro');
    assert.ok(fs.existsSync(fx.host('d')));
    assert.deepEqual(await c.readFile(root, ['f.txt']), Buffer.from('ro'));
  });
});
