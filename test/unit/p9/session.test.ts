// Core session behaviour over a real socket: version, attach, walk, open/read/write, readdir, getattr,
// rename/unlink, mknod, setattr, statfs.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import { Errno } from '../../../src/p9/errno.js';
import { MsgType, QidType } from '../../../src/p9/messages.js';
import { P9ClientError } from '../../helpers/p9client.js';
import { Fixture } from './fixture.js';

const O_RDONLY = 0;
const O_WRONLY = 1;
const O_RDWR = 2;
const O_TRUNC = 0o1000;
const O_EXCL = 0o200;

async function rejectsErrno(p: Promise<unknown>, errno: number): Promise<void> {
  await assert.rejects(p, (e: unknown) => {
    assert.ok(e instanceof P9ClientError, String(e));
    assert.equal(e.ecode, errno, `expected errno ${errno}, got ${e.ecode}`);
    return true;
  });
}

describe('p9 session', function () {
  this.timeout(20_000);
  let fx: Fixture;
  beforeEach(async () => {
    fx = await Fixture.start();
  });
  afterEach(async () => {
    await fx.stop();
  });

  describe('version and attach', () => {
    it('clamps msize to 1 MiB + 24 and accepts 9P2000.L', async () => {
      const { c } = await fx.client(64 * 1024 * 1024, false);
      assert.equal(c.msize, 1024 * 1024 + 24);
      const r = await c.version(8192);
      assert.deepEqual(r, { type: MsgType.Rversion, tag: 0xffff, msize: 8192, version: '9P2000.L' });
    });

    it('answers "unknown" to other versions and to msize below 4096', async () => {
      const { c } = await fx.client(65536, false);
      assert.equal((await c.version(65536, '9P2000.u')).version, 'unknown');
      assert.equal((await c.version(2048)).version, 'unknown');
    });

    it('Tversion resets the session: fids from before are gone', async () => {
      const { c, root } = await fx.client();
      await c.version(65536);
      await rejectsErrno(c.getattr(root), Errno.EBADF);
      assert.equal(fx.server.fidCount, 0);
    });

    it('Tauth answers ENOENT (no authentication required)', async () => {
      const { c } = await fx.client(65536, false);
      const r = await c.send({ type: MsgType.Tauth, afid: 5, uname: 'root', aname: 'test', nUname: 0 });
      assert.deepEqual(r, { type: MsgType.Rlerror, tag: r.tag, ecode: Errno.ENOENT });
    });

    it('attaches by name, by directory path, and by "" when there is one export', async () => {
      const { c } = await fx.client(65536, false);
      const a = await c.attach('test');
      const b = await c.attach(fx.dir);
      const e = await c.attach('');
      assert.equal(a.qid.type, QidType.DIR);
      assert.deepEqual(a.qid, b.qid);
      assert.deepEqual(a.qid, e.qid);
      await rejectsErrno(c.attach('nope'), Errno.ENOENT);
      await rejectsErrno(c.attach('test', a.fid), Errno.EINVAL);
    });
  });

  describe('walk', () => {
    it('clones with zero names and walks several names', async () => {
      fx.file('a/b/c.txt', 'x');
      const { c, root } = await fx.client();
      const clone = await c.walk(root, []);
      assert.deepEqual(clone.qids, []);
      const w = await c.walk(root, ['a', 'b', 'c.txt']);
      assert.deepEqual(
        w.qids.map((q) => q.type),
        [QidType.DIR, QidType.DIR, QidType.FILE],
      );
      assert.equal(w.qids[2]!.path, BigInt(fs.statSync(fx.host('a/b/c.txt'), { bigint: true }).ino));
      assert.notEqual(w.qids[2]!.version, 0);
    });

    it('a partial walk returns the qids so far and does not create newfid', async () => {
      fx.file('a/x', '');
      const { c, root } = await fx.client();
      const r = await c.send({ type: MsgType.Twalk, fid: root, newfid: 50, names: ['a', 'missing', 'z'] });
      assert.equal(r.type, MsgType.Rwalk);
      assert.equal((r as { qids: unknown[] }).qids.length, 1);
      await rejectsErrno(c.getattr(50), Errno.EBADF);
      // The Linux client clunks the never-created newfid: error, and the connection goes on.
      await rejectsErrno(c.clunk(50), Errno.EBADF);
      assert.equal((await c.getattr(root)).qid.type, QidType.DIR);
    });

    it('first-name failure is Rlerror; illegal names are ENOENT; more than 16 names is an error', async () => {
      const { c, root } = await fx.client();
      await rejectsErrno(c.walk(root, ['missing']), Errno.ENOENT);
      await rejectsErrno(c.walk(root, ['']), Errno.ENOENT);
      await rejectsErrno(c.walk(root, ['a/b']), Errno.ENOENT);
      await assert.rejects(c.walk(root, new Array(17).fill('.')), P9ClientError);
    });

    it('`..` at the root stays at the root', async () => {
      const { c, root } = await fx.client();
      fx.file('d/f', '');
      const rootQid = (await c.getattr(root)).qid;
      const w = await c.walk(root, ['..', '..']);
      assert.deepEqual(w.qids, [rootQid, rootQid]);
      const up = await c.walk(root, ['d', '..']);
      assert.deepEqual(up.qids[1], rootQid);
    });

    it('walks from an open fid to a new fid; fid==newfid on an open fid is EINVAL', async () => {
      fx.file('d/f', 'data');
      const { c, root } = await fx.client();
      const d = await c.walk(root, ['d']);
      await c.lopen(d.fid, O_RDONLY | 0o200000);
      const f = await c.walk(d.fid, ['f']);
      assert.equal((await c.getattr(f.fid)).size, 4n);
      await rejectsErrno(c.walk(d.fid, ['f'], d.fid), Errno.EINVAL);
      await rejectsErrno(c.walk(root, [], f.fid), Errno.EINVAL); // newfid in use
    });
  });

  describe('files', () => {
    it('lcreate, write, read back, getattr size and real nlink', async () => {
      const { c, root } = await fx.client();
      const dir = await c.walk(root, []);
      const cr = await c.lcreate(dir.fid, 'new.txt', O_RDWR, 0o640);
      assert.equal(cr.qid.type, QidType.FILE);
      assert.ok(cr.iounit > 0 && cr.iounit <= c.msize - 24);
      assert.equal(await c.write(dir.fid, 0, Buffer.from('hello world')), 11);
      assert.equal((await c.read(dir.fid, 6, 100)).toString(), 'world');
      assert.equal(fs.readFileSync(fx.host('new.txt'), 'utf8'), 'hello world');
      assert.equal(fs.statSync(fx.host('new.txt')).mode & 0o777, 0o640);
      const other = await c.walk(root, []);
      await c.rpc({ type: MsgType.Tlink, dfid: other.fid, fid: dir.fid, name: 'hard' }, MsgType.Rlink);
      const ga = await c.getattr(dir.fid);
      assert.equal(ga.nlink, 2n);
      assert.equal(ga.size, 11n);
      assert.equal(ga.valid & 0x7ffn, 0x7ffn);
      await rejectsErrno(c.lcreate((await c.walk(root, [])).fid, 'new.txt', O_RDWR | O_EXCL), Errno.EEXIST);
    });

    it('lopen honours TRUNC and refuses writes on a read-only fid', async () => {
      fx.file('t.txt', 'something long');
      const { c, root } = await fx.client();
      const f = await c.walk(root, ['t.txt']);
      await c.lopen(f.fid, O_WRONLY | O_TRUNC);
      assert.equal(fs.statSync(fx.host('t.txt')).size, 0);
      const g = await c.walk(root, ['t.txt']);
      await c.lopen(g.fid, O_RDONLY);
      await rejectsErrno(c.write(g.fid, 0, Buffer.from('x')), Errno.EBADF);
      await rejectsErrno(c.lopen(g.fid, O_RDONLY), Errno.EINVAL);
    });

    it('reads a large file in msize-bounded chunks, never returning more than asked', async () => {
      const data = Buffer.alloc(300_000);
      for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
      fx.file('big.bin', data);
      const { c, root } = await fx.client(16384);
      const f = await c.walk(root, ['big.bin']);
      await c.lopen(f.fid, O_RDONLY);
      const chunk = await c.read(f.fid, 1000, 1_000_000);
      assert.equal(chunk.length, 16384 - 24);
      assert.deepEqual(chunk, data.subarray(1000, 1000 + chunk.length));
      assert.deepEqual(await c.readFile(root, ['big.bin']), data);
      assert.equal((await c.read(f.fid, 10_000_000, 100)).length, 0);
    });

    it('rsize reads of small files return the file then 0, also after it grew; small and large writes land', async () => {
      fx.file('small.bin', Buffer.alloc(5000, 1));
      const { c, root } = await fx.client(262144);
      const f = await c.walk(root, ['small.bin']);
      await c.lopen(f.fid, O_RDWR);
      const rsize = c.msize - 24;
      assert.deepEqual(await c.read(f.fid, 0, rsize), Buffer.alloc(5000, 1));
      assert.equal((await c.read(f.fid, 5000, rsize)).length, 0);
      assert.equal((await c.read(f.fid, 9000, rsize)).length, 0);
      fs.appendFileSync(fx.host('small.bin'), Buffer.alloc(3000, 2)); // grows behind the client's back
      assert.deepEqual(await c.read(f.fid, 4000, rsize), Buffer.concat([Buffer.alloc(1000, 1), Buffer.alloc(3000, 2)]));
      // 4 KiB (synchronous path) and 200 KiB (threadpool) writes, then read back across both.
      assert.equal(await c.write(f.fid, 8000, Buffer.alloc(4096, 3)), 4096);
      assert.equal(await c.write(f.fid, 12096, Buffer.alloc(200_000, 4)), 200_000);
      const all = await c.readFile(root, ['small.bin']);
      assert.equal(all.length, 212_096);
      assert.deepEqual(all.subarray(8000), Buffer.concat([Buffer.alloc(4096, 3), Buffer.alloc(200_000, 4)]));
      await rejectsErrno(c.write((await c.walk(root, ['small.bin'])).fid, 0, Buffer.from('x')), Errno.EBADF);
    });

    it('a file unlinked while open keeps working for read, write, getattr and truncate', async () => {
      fx.file('gone.txt', 'still here');
      const { c, root } = await fx.client();
      const f = await c.walk(root, ['gone.txt']);
      await c.lopen(f.fid, O_RDWR);
      await c.unlinkat(root, 'gone.txt');
      assert.equal(fs.existsSync(fx.host('gone.txt')), false);
      assert.equal((await c.read(f.fid, 0, 100)).toString(), 'still here');
      await c.write(f.fid, 0, Buffer.from('STILL'));
      const ga = await c.getattr(f.fid);
      assert.equal(ga.nlink, 0n);
      await c.rpc(
        {
          type: MsgType.Tsetattr,
          fid: f.fid,
          valid: 0x8,
          mode: 0,
          uid: 0,
          gid: 0,
          size: 3n,
          atimeSec: 0n,
          atimeNsec: 0n,
          mtimeSec: 0n,
          mtimeNsec: 0n,
        },
        MsgType.Rsetattr,
      );
      assert.equal((await c.read(f.fid, 0, 100)).toString(), 'STI');
    });
  });

  describe('directories', () => {
    it('readdir lists . and .. and every entry; each entry offset resumes right after it', async () => {
      for (let i = 0; i < 5; i++) fx.file(`f${i}`, '');
      fs.mkdirSync(fx.host('sub'));
      const { c, root } = await fx.client();
      const d = await c.walk(root, []);
      await c.lopen(d.fid, O_RDONLY);
      const entries = await c.readdirAll(d.fid);
      assert.deepEqual(entries.map((e) => e.name).sort(), ['.', '..', 'f0', 'f1', 'f2', 'f3', 'f4', 'sub']);
      assert.equal(entries.find((e) => e.name === 'sub')!.qid.type, QidType.DIR);
      assert.equal(entries.find((e) => e.name === 'sub')!.type, 4); // DT_DIR
      const { parseDirents } = await import('../../helpers/p9client.js');
      for (let i = 0; i < entries.length; i++) {
        const r = await c.rpc(
          { type: MsgType.Treaddir, fid: d.fid, offset: entries[i]!.offset, count: 8192 },
          MsgType.Rreaddir,
        );
        assert.deepEqual(
          parseDirents(r.data).map((x) => x.name),
          entries.slice(i + 1).map((x) => x.name),
        );
      }
    });

    for (const count of [128, 256, 512]) {
      it(`readdir split into ${count}-byte replies resumes exactly (only whole entries)`, async () => {
        for (let i = 0; i < 100; i++) fx.file(`entry-with-a-longish-name-${i}`, '');
        const { c, root } = await fx.client();
        const d = await c.walk(root, []);
        await c.lopen(d.fid, O_RDONLY);
        const whole = await c.readdirAll(d.fid, 60000);
        const e = await c.walk(root, []);
        await c.lopen(e.fid, O_RDONLY);
        const split = await c.readdirAll(e.fid, count);
        assert.equal(split.length, 102);
        assert.deepEqual(
          split.map((x) => x.name),
          whole.map((x) => x.name),
        );
      });
    }

    it('readdir restarts from a rewound offset and resumes after an arbitrary cookie', async () => {
      for (let i = 0; i < 20; i++) fx.file(`n${i}`, '');
      const { c, root } = await fx.client();
      const d = await c.walk(root, []);
      await c.lopen(d.fid, O_RDONLY);
      const all = await c.readdirAll(d.fid);
      const { parseDirents } = await import('../../helpers/p9client.js');
      const r = await c.rpc(
        { type: MsgType.Treaddir, fid: d.fid, offset: all[9]!.offset, count: 8192 },
        MsgType.Rreaddir,
      );
      assert.deepEqual(
        parseDirents(r.data).map((x) => x.name),
        all.slice(10).map((x) => x.name),
      );
      // Another fid of the same directory reads from its own offsets (the host fd is shared, not the position).
      const e = await c.walk(root, []);
      await c.lopen(e.fid, O_RDONLY);
      const again = await c.rpc({ type: MsgType.Treaddir, fid: e.fid, offset: 0n, count: 8192 }, MsgType.Rreaddir);
      assert.deepEqual(
        parseDirents(again.data).map((x) => x.name),
        all.map((x) => x.name),
      );
    });

    it('mkdir, renameat and rename move entries; fids follow the rename', async () => {
      fx.file('d1/inner.txt', 'inner');
      const { c, root } = await fx.client();
      const inner = await c.walk(root, ['d1', 'inner.txt']);
      const q = await c.mkdir(root, 'd2');
      assert.equal(q.type, QidType.DIR);
      await c.rpc(
        { type: MsgType.Trenameat, olddirfid: root, oldname: 'd1', newdirfid: root, newname: 'moved' },
        MsgType.Rrenameat,
      );
      assert.ok(fs.existsSync(fx.host('moved/inner.txt')));
      const d2 = await c.walk(root, ['d2']);
      await c.rpc({ type: MsgType.Trename, fid: inner.fid, dfid: d2.fid, name: 'x.txt' }, MsgType.Rrename);
      assert.equal(fs.readFileSync(fx.host('d2/x.txt'), 'utf8'), 'inner');
      assert.equal((await c.getattr(inner.fid)).size, 5n);
      await c.lopen(inner.fid, O_RDONLY);
      assert.equal((await c.read(inner.fid, 0, 10)).toString(), 'inner');
    });

    it('unlinkat: `.` is EINVAL, `..` ENOTEMPTY, AT_REMOVEDIR removes dirs, works on an open dir fid', async () => {
      fs.mkdirSync(fx.host('e'));
      fx.file('e/f', '');
      const { c, root } = await fx.client();
      const e = await c.walk(root, ['e']);
      await c.lopen(e.fid, O_RDONLY);
      await rejectsErrno(c.unlinkat(e.fid, '.'), Errno.EINVAL);
      await rejectsErrno(c.unlinkat(e.fid, '..'), Errno.ENOTEMPTY);
      await c.unlinkat(e.fid, 'f');
      assert.equal(fs.existsSync(fx.host('e/f')), false);
      await rejectsErrno(c.unlinkat(root, 'e'), Errno.EISDIR);
      await c.unlinkat(root, 'e', 0x200);
      assert.equal(fs.existsSync(fx.host('e')), false);
    });

    it('Tremove removes and clunks even on failure', async () => {
      fx.file('r/x', '');
      const { c, root } = await fx.client();
      const r = await c.walk(root, ['r']);
      await rejectsErrno(c.rpc({ type: MsgType.Tremove, fid: r.fid }, MsgType.Rremove), Errno.ENOTEMPTY);
      await rejectsErrno(c.getattr(r.fid), Errno.EBADF);
      const x = await c.walk(root, ['r', 'x']);
      await c.rpc({ type: MsgType.Tremove, fid: x.fid }, MsgType.Rremove);
      assert.equal(fs.existsSync(fx.host('r/x')), false);
    });

    it('mknod of a FIFO: a FIFO for the guest, a plain 0600 file on the host, never opened (ENXIO); symlink', async () => {
      const { c, root } = await fx.client();
      const q = await c.rpc(
        { type: MsgType.Tmknod, dfid: root, name: 'fifo', mode: 0o010644, major: 0, minor: 0, gid: 0 },
        MsgType.Rmknod,
      );
      assert.equal(q.qid.type, QidType.FILE);
      const host = fs.lstatSync(fx.host('fifo'));
      assert.ok(host.isFile(), 'a regular file on the host');
      assert.equal(host.mode & 0o777, 0o600);
      const f = await c.walk(root, ['fifo']);
      assert.equal((await c.getattr(f.fid)).mode, 0o010644);
      await rejectsErrno(c.lopen(f.fid, O_RDONLY), Errno.ENXIO);
      const s = await c.rpc(
        { type: MsgType.Tsymlink, fid: root, name: 'ln', symtgt: '../../outside', gid: 0 },
        MsgType.Rsymlink,
      );
      assert.equal(s.qid.type, QidType.SYMLINK);
      const l = await c.walk(root, ['ln']);
      const rl = await c.rpc({ type: MsgType.Treadlink, fid: l.fid }, MsgType.Rreadlink);
      assert.equal(rl.target, '../../outside');
      await rejectsErrno(
        c.rpc({ type: MsgType.Tmknod, dfid: root, name: '..', mode: 0o010644, major: 0, minor: 0, gid: 0 }),
        Errno.EEXIST,
      );
    });

    it('mknod of a character device: the guest sees 1:3, the host a plain 0600 file; never opened', async () => {
      const { c, root } = await fx.client();
      await c.rpc(
        { type: MsgType.Tmknod, dfid: root, name: 'null', mode: 0o020666, major: 1, minor: 3, gid: 0 },
        MsgType.Rmknod,
      );
      const host = fs.lstatSync(fx.host('null'));
      assert.ok(host.isFile() && !host.isCharacterDevice());
      assert.equal(host.mode & 0o7777 & ~0o1000, 0o600);
      assert.equal(host.rdev, 0);
      const f = await c.walk(root, ['null']);
      const ga = await c.getattr(f.fid);
      assert.equal(ga.mode, 0o020666);
      assert.equal(ga.rdev, (1n << 8n) | 3n);
      await rejectsErrno(c.lopen(f.fid, O_RDWR), Errno.ENXIO);
    });
  });

  describe('attributes', () => {
    it('setattr: mode, explicit mtime, atime "now", ctime-only', async () => {
      fx.file('s.txt', 'abc');
      const { c, root } = await fx.client();
      const f = await c.walk(root, ['s.txt']);
      const base = { type: MsgType.Tsetattr, fid: f.fid, mode: 0, uid: 0, gid: 0, size: 0n } as const;
      const zero = { atimeSec: 0n, atimeNsec: 0n, mtimeSec: 0n, mtimeNsec: 0n };
      await c.rpc({ ...base, ...zero, valid: 0x1, mode: 0o600 }, MsgType.Rsetattr);
      assert.equal(fs.statSync(fx.host('s.txt')).mode & 0o777, 0o600);
      await c.rpc({ ...base, ...zero, valid: 0x20 | 0x100, mtimeSec: 1_000_000_000n, mtimeNsec: 5n }, MsgType.Rsetattr);
      const st = fs.statSync(fx.host('s.txt'), { bigint: true });
      assert.equal(st.mtimeNs, 1_000_000_000n * 1_000_000_000n + 5n);
      const before = Date.now();
      await c.rpc({ ...base, ...zero, valid: 0x10 }, MsgType.Rsetattr);
      assert.ok(fs.statSync(fx.host('s.txt')).atimeMs >= before - 1000);
      await c.rpc({ ...base, ...zero, valid: 0x40 }, MsgType.Rsetattr);
      const ga = await c.getattr(f.fid);
      assert.equal(ga.mtimeSec, 1_000_000_000n);
      assert.equal(ga.mode & 0o777, 0o600);
    });

    it('chmod as the kernel sends it (MODE|CTIME): the guest keeps setuid, the host file never has it', async () => {
      fx.file('suid', 'x');
      const { c, root } = await fx.client();
      const f = await c.walk(root, ['suid']);
      const req = (valid: number, mode: number) =>
        c.rpc(
          {
            type: MsgType.Tsetattr,
            fid: f.fid,
            valid,
            mode,
            uid: 0,
            gid: 0,
            size: 0n,
            atimeSec: 0n,
            atimeNsec: 0n,
            mtimeSec: 0n,
            mtimeNsec: 0n,
          },
          MsgType.Rsetattr,
        );
      await req(0x1 | 0x40, 0o104755);
      assert.equal(fs.statSync(fx.host('suid')).mode & 0o6000, 0, 'no setuid bit on the host');
      assert.equal((await c.getattr(f.fid)).mode & 0o7777, 0o4755);
      const before = fs.statSync(fx.host('suid'), { bigint: true }).ctimeNs;
      await new Promise((r) => setTimeout(r, 10));
      await req(0x40, 0);
      const after = fs.statSync(fx.host('suid'), { bigint: true });
      assert.equal(Number(after.mode) & 0o6000, 0);
      assert.equal((await c.getattr(f.fid)).mode & 0o7777, 0o4755, 'ctime-only keeps the guest setuid');
      assert.ok(after.ctimeNs > before, 'ctime not bumped');
    });

    it('statfs reports the host filesystem', async () => {
      const { c, root } = await fx.client();
      const r = await c.rpc({ type: MsgType.Tstatfs, fid: root }, MsgType.Rstatfs);
      const host = fs.statfsSync(fx.dir);
      assert.equal(r.bsize, host.bsize);
      assert.equal(r.blocks, BigInt(host.blocks));
      assert.equal(r.namelen, 255);
    });

    it('fsync and datasync on an open file', async () => {
      const { c, root } = await fx.client();
      const d = await c.walk(root, []);
      await c.lcreate(d.fid, 'sync.txt', O_RDWR);
      await c.write(d.fid, 0, Buffer.from('durable'));
      await c.rpc({ type: MsgType.Tfsync, fid: d.fid, datasync: 0 }, MsgType.Rfsync);
      await c.rpc({ type: MsgType.Tfsync, fid: d.fid, datasync: 1 }, MsgType.Rfsync);
      await rejectsErrno(c.rpc({ type: MsgType.Tfsync, fid: root, datasync: 0 }), Errno.EBADF);
    });
  });

  it('unknown message types get EOPNOTSUPP and the connection continues', async () => {
    const { c, root } = await fx.client();
    const frame = Buffer.from([7, 0, 0, 0, 112, 9, 0]); // Topen (9P2000), not part of 9P2000.L
    const r = await c.sendFrame(frame, 9);
    assert.deepEqual(r, { type: MsgType.Rlerror, tag: 9, ecode: Errno.EOPNOTSUPP });
    assert.equal((await c.getattr(root)).qid.type, QidType.DIR);
  });
});
