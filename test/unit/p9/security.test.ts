// The share security model below the wire: the record layout and xattr name mapping of the Linux store, the
// policy's trust rule, and what each model does to the host, through a real server on a temp export.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Errno } from '../../../src/p9/errno.js';
import { MsgType } from '../../../src/p9/messages.js';
import { UserXattrStore, decodeRecord, encodeRecord } from '../../../src/p9/metadata-xattr.js';
import { SharePolicy } from '../../../src/p9/security.js';
import { lgetxattr, llistxattr, lsetxattr } from '../../../src/util/syscalls.js';
import { P9ClientError, type P9Client } from '../../helpers/p9client.js';
import { Fixture } from './fixture.js';

function hostNames(p: string): string[] {
  const buf = Buffer.alloc(65536);
  return buf.subarray(0, llistxattr(p, buf)).toString().split('\0').filter(Boolean).sort();
}

async function errnoOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 0;
  } catch (e) {
    if (e instanceof P9ClientError) return e.ecode;
    throw e;
  }
}

describe('p9 share security: record layout and name mapping (Linux store)', () => {
  it('a record is 24 bytes: version 1, field mask, then mode uid gid rdev-major rdev-minor as u32 LE', () => {
    const b = encodeRecord({ mode: 0o060666, uid: 1000, rdevMajor: 7, rdevMinor: 0 });
    assert.deepEqual([...b], [1, 1 | 2 | 8, 0, 0, 0xb6, 0x61, 0, 0, 0xe8, 3, 0, 0, 0, 0, 0, 0, 7, 0, 0, 0, 0, 0, 0, 0]);
    assert.deepEqual(decodeRecord(b), { mode: 0o060666, uid: 1000, rdevMajor: 7, rdevMinor: 0 });
  });

  it('malformed records from the host are no record: wrong size, version, or no mode', () => {
    assert.equal(decodeRecord(Buffer.alloc(23)), undefined);
    const v2 = encodeRecord({ mode: 0o100644 });
    v2[0] = 2;
    assert.equal(decodeRecord(v2), undefined);
    assert.equal(decodeRecord(encodeRecord({ uid: 1 })), undefined);
  });

  it('guest names: user.* as they are, everything else (and user.lcow.*) under user.lcow.x.', () => {
    const s = new UserXattrStore();
    assert.equal(s.hostName('user.mime_type'), 'user.mime_type');
    assert.equal(s.hostName('security.capability'), 'user.lcow.x.security.capability');
    assert.equal(s.hostName('trusted.overlay.opaque'), 'user.lcow.x.trusted.overlay.opaque');
    assert.equal(s.hostName('system.posix_acl_access'), 'user.lcow.x.system.posix_acl_access');
    assert.equal(s.hostName('user.lcow.meta'), 'user.lcow.x.user.lcow.meta');
    for (const bad of ['nonamespace', 'user.', 'os2.x']) {
      assert.throws(
        () => s.hostName(bad),
        (e: { errno?: number }) => e.errno === Errno.EOPNOTSUPP,
        bad,
      );
    }
    assert.throws(
      () => s.hostName('security.' + 'x'.repeat(240)),
      (e: { errno?: number }) => e.errno === Errno.ERANGE,
    );
  });

  it('the mapped model trusts records only on objects the server owns and nobody else can write', () => {
    const p = new SharePolicy('mapped', new UserXattrStore(), 0, 0);
    const st = (uid: number, mode: number) => ({ uid, mode }) as Parameters<SharePolicy['trusts']>[0];
    assert.equal(p.trusts(st(0, 0o100644)), true);
    assert.equal(p.trusts(st(0, 0o100664)), false, 'group-writable');
    assert.equal(p.trusts(st(0, 0o100646)), false, 'other-writable');
    assert.equal(p.trusts(st(1000, 0o100644)), false, 'a host user owns it');
    assert.equal(new SharePolicy('passthrough-existing', new UserXattrStore(), 0, 0).trusts(st(1000, 0o100666)), true);
    assert.equal(p.hostPerm(0o104777), 0o755, 'mapped: never setuid, never group/other-writable on the host');
    assert.equal(p.hostPerm(0o020666), 0o600, 'a special file is a 0600 placeholder');
    assert.equal(new SharePolicy('passthrough-existing', new UserXattrStore(), 0, 0).hostPerm(0o043777), 0o777);
  });
});

describe('p9 share security through the server', function () {
  this.timeout(20_000);
  let fx: Fixture;
  afterEach(async () => {
    await fx.stop();
  });

  async function setup(security: 'mapped' | 'passthrough-existing'): Promise<{ c: P9Client; root: number }> {
    fx = await Fixture.start({ exportsFor: (dir) => [{ name: 'test', path: dir, security }] });
    return fx.client();
  }

  it('mapped: a root guest making 0644 files and 0755 dirs leaves no record and no marker (no extra cost)', async () => {
    const { c, root } = await setup('mapped');
    const { fid } = await c.walk(root, []);
    await c.lcreate(fid, 'plain', 2, 0o644);
    await c.mkdir(root, 'dir', 0o755);
    for (const n of ['plain', 'dir']) {
      assert.equal(fs.lstatSync(fx.host(n)).mode & 0o7777, n === 'dir' ? 0o755 : 0o644);
      assert.deepEqual(hostNames(fx.host(n)), []);
    }
  });

  it('mapped: another guest user owns its files in the guest only; the host file stays the server’s', async () => {
    const { c } = await setup('mapped');
    const root = (await c.attach('test', c.allocFid(), 1000)).fid;
    const { fid } = await c.walk(root, []);
    await c.lcreate(fid, 'users', 2, 0o600, 1000);
    const ga = await c.getattr(fid);
    assert.equal(ga.uid, 1000);
    assert.equal(ga.gid, 1000);
    assert.equal(ga.mode & 0o7777, 0o600);
    const host = fs.lstatSync(fx.host('users'));
    assert.equal(host.uid, process.geteuid!());
    assert.deepEqual(hostNames(fx.host('users')), ['user.lcow.meta']);
    assert.equal(host.mode & 0o1000, 0o1000, 'marked as having a record');
  });

  it("mapped: permission bits of a host user's file change, privileged changes are EPERM", async () => {
    const { c, root } = await setup('mapped');
    fx.file('theirs', 'x');
    fs.chownSync(fx.host('theirs'), 4242, 4242);
    fs.chmodSync(fx.host('theirs'), 0o644);
    const { fid } = await c.walk(root, ['theirs']);
    await c.setattr(fid, { mode: 0o664 });
    assert.equal(fs.lstatSync(fx.host('theirs')).mode & 0o7777, 0o664);
    assert.equal(await errnoOf(c.setattr(fid, { mode: 0o4755 })), Errno.EPERM);
    assert.equal(await errnoOf(c.setattr(fid, { uid: 0 })), Errno.EPERM);
    assert.equal(await errnoOf(c.xattrSet(fid, 'security.capability', Buffer.alloc(20))), Errno.EPERM);
    // A record a host user forged on its own file is not honoured.
    lsetxattr(fx.host('theirs'), 'user.lcow.meta', encodeRecord({ mode: 0o104755, uid: 0, gid: 0 }), 0);
    fs.chmodSync(fx.host('theirs'), 0o1644);
    const ga = await c.getattr(fid);
    assert.equal(ga.uid, 4242);
    assert.equal(ga.mode & 0o7777, 0o1644);
  });

  it('mapped: a symlink’s guest owner is kept by its directory and follows renames and unlinks', async () => {
    const { c, root } = await setup('mapped');
    await c.rpc({ type: MsgType.Tsymlink, fid: root, name: 'ln', symtgt: 'target', gid: 0 }, MsgType.Rsymlink);
    const { fid } = await c.walk(root, ['ln']);
    await c.setattr(fid, { uid: 42, gid: 43 });
    let ga = await c.getattr(fid);
    assert.equal(ga.uid, 42);
    assert.equal(fs.lstatSync(fx.host('ln')).uid, process.geteuid!(), 'never chowned on the host');
    await c.rpc(
      { type: MsgType.Trenameat, olddirfid: root, oldname: 'ln', newdirfid: root, newname: 'ln2' },
      MsgType.Rrenameat,
    );
    const moved = await c.walk(root, ['ln2']);
    ga = await c.getattr(moved.fid);
    assert.equal(ga.uid, 42);
    assert.deepEqual(
      hostNames(fx.dir).filter((n) => n.startsWith('user.lcow.l.')),
      ['user.lcow.l.ln2'],
    );
    await c.unlinkat(root, 'ln2');
    assert.deepEqual(
      hostNames(fx.dir).filter((n) => n.startsWith('user.lcow.l.')),
      [],
    );
  });

  it('passthrough-existing: owners go to the host, setuid stays in the record', async () => {
    const { c } = await setup('passthrough-existing');
    const root = (await c.attach('test', c.allocFid(), 1000)).fid;
    const { fid } = await c.walk(root, []);
    await c.lcreate(fid, 'tool', 2, 0o4755, 1000);
    const host = fs.lstatSync(fx.host('tool'));
    assert.equal(host.uid, 1000);
    assert.equal(host.gid, 1000);
    assert.equal(host.mode & 0o6000, 0);
    assert.equal((await c.getattr(fid)).mode & 0o7777, 0o4755);
    // Removing the guest's setuid bit removes the record and the marker.
    await c.setattr(fid, { mode: 0o755 });
    assert.equal(fs.lstatSync(fx.host('tool')).mode & 0o7777, 0o755);
    assert.deepEqual(hostNames(fx.host('tool')), []);
  });

  it('passthrough-existing: a host file capability is visible; the guest can drop it but not forge one', async () => {
    const { c, root } = await setup('passthrough-existing');
    fx.file('ping', 'x');
    const cap = Buffer.alloc(20);
    cap.writeUInt32LE(0x02000001, 0);
    cap.writeUInt32LE(1 << 13, 4);
    lsetxattr(fx.host('ping'), 'security.capability', cap, 0);
    lsetxattr(fx.host('ping'), 'trusted.label', Buffer.from('host'), 0);
    const { fid } = await c.walk(root, ['ping']);
    assert.deepEqual(await c.xattrGet(fid, 'security.capability'), cap);
    assert.equal(await errnoOf(c.xattrSet(fid, 'security.capability', cap, 1 /* XATTR_CREATE */)), Errno.EEXIST);
    // Removing a host attribute other than the capability is refused; removing the capability works.
    assert.equal(await errnoOf(c.xattrSet(fid, 'trusted.label', Buffer.alloc(0))), Errno.EPERM);
    await c.xattrSet(fid, 'security.capability', Buffer.alloc(0));
    assert.throws(() => lgetxattr(fx.host('ping'), 'security.capability', null));
  });

  it('Tlink to a privileged host file (setuid, setgid-executable) is EPERM; to a plain one it works', async () => {
    const { c, root } = await setup('passthrough-existing');
    for (const [name, mode] of [
      ['passwd', 0o4755],
      ['wall', 0o2755],
      ['plain', 0o755],
    ] as const) {
      fx.file(name, 'x');
      fs.chmodSync(fx.host(name), mode);
      const { fid } = await c.walk(root, [name]);
      const r = await errnoOf(c.rpc({ type: MsgType.Tlink, dfid: root, fid, name: `${name}-link` }, MsgType.Rlink));
      assert.equal(r, name === 'plain' ? 0 : Errno.EPERM, name);
    }
  });
});
