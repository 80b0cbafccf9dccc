// The hot paths built for speed, checked against the general ones they replace: hand-written decoding against
// the layout table, Rgetattr written from raw statx against the host's stat and the view path, readdir
// encoded in place against the host's listing, the reply arena (ordering, reuse, streams that keep chunks),
// the raw qid helpers, the fd budget when every fd is pinned, and the sync-write guard.

import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { PassThrough } from 'node:stream';
import fc from 'fast-check';
import { decode, decodeAt, encode } from '../../../src/p9/codec.js';
import { Errno } from '../../../src/p9/errno.js';
import { linuxHostFs } from '../../../src/p9/hostfs-linux.js';
import { HostFdTable } from '../../../src/p9/hostfd.js';
import { MsgType, QidType, type AnyMessage } from '../../../src/p9/messages.js';
import { QidMapper, qidFromStat, qidVersion, qidVersionRaw, writeQidRaw } from '../../../src/p9/qid.js';
import { ReplyOut } from '../../../src/p9/reply.js';
import { SyncWriteGuard } from '../../../src/p9/syncwrite.js';
import { O, close, fstatx, fstatxRaw, openat, AT_FDCWD, statxFromRaw } from '../../../src/util/syscalls.js';
import { Fixture } from './fixture.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';

const hot: AnyMessage[] = [
  { type: MsgType.Tgetattr, fid: 7, requestMask: 0x3fffn },
  { type: MsgType.Tclunk, fid: 0xfffffffe },
  { type: MsgType.Tread, fid: 3, offset: 0xfedcba9876543210n, count: 65512 },
  { type: MsgType.Treaddir, fid: 3, offset: 0x7fffffffffffffffn, count: 8168 },
  { type: MsgType.Tlopen, fid: 9, flags: 0o100002 },
  { type: MsgType.Twrite, fid: 4, offset: 5n * 2n ** 32n, data: Buffer.from('payload') },
  { type: MsgType.Twalk, fid: 1, newfid: 2, names: [] },
  { type: MsgType.Twalk, fid: 1, newfid: 2, names: ['a', 'bé', 'x'.repeat(255)] },
];

describe('p9 hot paths', function () {
  this.timeout(20_000);

  describe('hand-written decoding', () => {
    it('decodes every hot message like the layout table, also at an offset inside a larger buffer', () => {
      for (const m of hot) {
        const frame = encode(m, 0x1234);
        const pad = Buffer.alloc(37, 0xaa);
        const buf = Buffer.concat([pad, frame, pad]);
        assert.deepEqual(decodeAt(buf, pad.length, frame.length), decode(frame));
        assert.deepEqual(decode(frame), { ...m, tag: 0x1234 });
      }
    });

    it('rejects every truncation of a hot message with DecodeError', () => {
      for (const m of hot) {
        const frame = encode(m, 1);
        for (let n = 7; n < frame.length; n++) {
          const cut = Buffer.from(frame.subarray(0, n));
          cut.writeUInt32LE(n, 0);
          assert.throws(
            () => decode(cut),
            (e: Error) => e.name === 'DecodeError',
            `${m.type} cut at ${n}`,
          );
        }
      }
    });
  });

  describe('raw statx and qids', () => {
    it('qid version and path from raw statx equal the StatX object path, for arbitrary field values', () => {
      fc.assert(
        fc.property(fc.uint8Array({ minLength: 256, maxLength: 256 }), (bytes) => {
          const raw = Buffer.from(bytes);
          raw.writeUInt32LE(raw.readUInt32LE(136) % 3, 136); // a few devices
          raw[39] = 0; // inodes below 2^56 take the direct path, others the overflow table
          const st = statxFromRaw(raw);
          assert.equal(qidVersionRaw(raw), qidVersion(st));
          const a = new QidMapper();
          const b = new QidMapper();
          const out = Buffer.alloc(13);
          writeQidRaw(a, out, 0, raw);
          const q = qidFromStat(b, st);
          assert.deepEqual({ type: out[0], version: out.readUInt32LE(1), path: out.readBigUInt64LE(5) }, q);
        }),
      );
    });

    it('fstatxRaw and fstatx agree on a real file', () => {
      const fd = openat(AT_FDCWD, process.execPath, O.PATH);
      try {
        assert.deepEqual(statxFromRaw(Buffer.from(fstatxRaw(fd))), fstatx(fd));
      } finally {
        close(fd);
      }
    });
  });

  describe('replies built in place', () => {
    let fx: Fixture;
    beforeEach(async () => {
      fx = await Fixture.start();
    });
    afterEach(async () => {
      await fx.stop();
    });

    it('Rgetattr from raw statx matches the host stat, and the view path for an object with a record', async () => {
      fx.file('plain', 'hello');
      fs.utimesSync(fx.host('plain'), new Date(1_500_000_000_123), new Date(1_600_000_000_456));
      const { c, root } = await fx.client();
      const { fid, qids } = await c.walk(root, ['plain']);
      const ga = await c.getattr(fid);
      const st = fs.statSync(fx.host('plain'), { bigint: true });
      assert.equal(ga.mode, Number(st.mode));
      assert.equal(ga.uid, Number(st.uid));
      assert.equal(ga.gid, Number(st.gid));
      assert.equal(ga.nlink, st.nlink);
      assert.equal(ga.size, 5n);
      assert.equal(ga.blocks, st.blocks);
      assert.equal(ga.blksize, st.blksize);
      assert.equal(ga.atimeSec * 1_000_000_000n + ga.atimeNsec, st.atimeNs);
      assert.equal(ga.mtimeSec * 1_000_000_000n + ga.mtimeNsec, st.mtimeNs);
      assert.equal(ga.ctimeSec * 1_000_000_000n + ga.ctimeNsec, st.ctimeNs);
      assert.equal(ga.rdev, 0n);
      assert.deepEqual(ga.qid, qids[0]);
      // A setuid bit goes into a record (mapped share): the view path answers, with the guest's mode.
      await c.setattr(fid, { mode: 0o4755 });
      const rec = await c.getattr(fid);
      assert.equal(rec.mode & 0o7777, 0o4755);
      assert.equal(fs.statSync(fx.host('plain')).mode & 0o4000, 0, 'the host file has no setuid bit');
      assert.equal(rec.size, 5n);
    });

    it('Rgetattr carries a host device number in glibc makedev encoding', async function () {
      requirePrerequisite(this, process.getuid?.() !== 0 ? 'mknod of a character device needs root' : undefined);
      const { c, root } = await fx.client();
      const r = spawn('mknod', [fx.host('chr'), 'c', '4095', '1048575']);
      assert.equal(await new Promise((res) => r.once('exit', res)), 0);
      const { fid } = await c.walk(root, ['chr']);
      const ga = await c.getattr(fid);
      // The largest major and minor Linux encodes: every bit of the low word is used.
      assert.equal(ga.rdev, fs.statSync(fx.host('chr'), { bigint: true }).rdev);
      assert.equal(ga.rdev, 0xffffffffn);
    });

    it('a walk opens nothing for its last name: first use opens it, checked against the walked file', async () => {
      fx.file('a/b/c/deep', 'deep');
      fx.file('x', 'walked');
      fx.file('other', 'replacement');
      const { c, root } = await fx.client();
      const before = fx.server.hostFdCount;
      const { fid: dir } = await c.walk(root, ['a', 'b', 'c']);
      const { fid: x } = await c.walk(root, ['x']);
      assert.equal(fx.server.hostFdCount, before, 'walks held no fd');
      // Opened through the parent directory's fd when a fid holds one, else beneath the root: same answers.
      await c.getattr(dir);
      const { fid: deep } = await c.walk(dir, ['deep']);
      assert.equal((await c.getattr(deep)).size, 4n);
      await c.lopen(deep, 0);
      assert.equal((await c.read(deep, 0, 100)).toString(), 'deep');
      // The name now names another file: the fid does not silently switch to it.
      fs.renameSync(fx.host('other'), fx.host('x'));
      await assert.rejects(c.getattr(x), (e: unknown) => (e as { ecode?: number }).ecode === Errno.ESTALE);
      fx.file('a/b/c/later', 'later');
      const { fid: gone } = await c.walk(root, ['a', 'b', 'c', 'later']);
      fs.rmSync(fx.host('a'), { recursive: true });
      await assert.rejects(c.getattr(gone), (e: unknown) => (e as { ecode?: number }).ecode === Errno.ENOENT);
      // A fid that was opened keeps its file (and so does any fid of the same inode).
      assert.equal((await c.read(deep, 0, 100)).toString(), 'deep');
      const { fid: same } = await c.walk(dir, ['deep']).catch(() => ({ fid: -1 }));
      assert.equal(same, -1, 'the name is gone');
    });

    it('Tlopen of a walked directory opens one fd, checked against the walked one; fids opened alike share it', async () => {
      fx.file('d/one', '1');
      fx.file('d/two', '2');
      fs.mkdirSync(fx.host('e'));
      const { c, root } = await fx.client();
      const before = fx.server.hostFdCount;
      const { fid: a } = await c.walk(root, ['d']);
      await c.lopen(a, 0);
      assert.equal(fx.server.hostFdCount, before + 1, 'the listing fd only, no O_PATH handle');
      const { fid: b } = await c.walk(root, ['d']);
      await c.lopen(b, 0);
      assert.equal(fx.server.hostFdCount, before + 1, 'a second fid opened the same way shares the fd');
      const names = (fids: Array<{ name: string }>): string[] => fids.map((e) => e.name).sort();
      const listed = names(await c.readdirAll(a, 4096));
      assert.deepEqual(listed, ['.', '..', 'one', 'two']);
      assert.deepEqual(names(await c.readdirAll(b, 4096)), listed);
      await c.clunk(a);
      assert.deepEqual(names(await c.readdirAll(b, 4096)), listed, 'the shared fd outlives the first fid');
      await c.clunk(b);
      assert.equal(fx.server.hostFdCount, before);
      // The name now names another directory: ESTALE, never a listing of the other one.
      const { fid: stale } = await c.walk(root, ['d']);
      fs.renameSync(fx.host('d'), fx.host('d.old'));
      fs.renameSync(fx.host('e'), fx.host('d'));
      await assert.rejects(c.lopen(stale, 0), (e: unknown) => (e as { ecode?: number }).ecode === Errno.ESTALE);
      // Replaced by a FIFO: refused without opening it (O_DIRECTORY: an open for reading would block the server),
      // and the connection goes on.
      fs.rmdirSync(fx.host('d'));
      const { fid: dirAgain } = await c.walk(root, ['d.old']);
      fs.renameSync(fx.host('d.old'), fx.host('d'));
      execFileSync('mkfifo', [fx.host('d.old')]);
      await assert.rejects(c.lopen(dirAgain, 0), (e: unknown) =>
        ([Errno.ENOTDIR, Errno.ESTALE] as number[]).includes((e as { ecode?: number }).ecode ?? -1),
      );
      const { fid: fifoWalk } = await c.walk(root, ['d.old']);
      await assert.rejects(c.lopen(fifoWalk, 0), (e: unknown) => (e as { ecode?: number }).ecode === Errno.ENXIO);
      assert.equal((await c.getattr(root)).mode & 0o170000, 0o040000, 'still serving');
    });

    it('readdir encodes names of every length, UTF-8 and types exactly as the host lists them', async () => {
      const names = ['a', 'bb', 'é', '日本語', 'x'.repeat(200), 'y'.repeat(255), 'z.with.dots'];
      for (let i = 0; i < 300; i++) names.push(`n${'-'.repeat(i % 40)}${i}`);
      for (const n of names) fx.file(`d/${n}`, '');
      fs.mkdirSync(fx.host('d/sub'));
      fs.symlinkSync('a', fx.host('d/link'));
      const { c, root } = await fx.client();
      const { fid } = await c.walk(root, ['d']);
      await c.lopen(fid, 0);
      for (const count of [300, 4096, 65000]) {
        const listed = await c.readdirAll(fid, count);
        const byName = new Map(listed.map((e) => [e.name, e]));
        const host = fs.readdirSync(fx.host('d'));
        assert.deepEqual([...byName.keys()].sort(), ['.', '..', ...host].sort());
        for (const h of host) {
          const st = fs.lstatSync(fx.host(`d/${h}`), { bigint: true });
          const want = st.isDirectory() ? QidType.DIR : st.isSymbolicLink() ? QidType.SYMLINK : QidType.FILE;
          assert.equal(byName.get(h)!.qid.type, want, h);
          assert.equal(byName.get(h)!.qid.path & ((1n << 56n) - 1n), st.ino, h);
        }
      }
    });

    it('a Tread that is not in the page cache is completed from the threadpool into a reply of its own', async () => {
      const data = Buffer.alloc(3 << 20);
      for (let i = 0; i < data.length; i++) data[i] = (i * 7) & 0xff;
      fx.file('big', data);
      // Drop the file's pages so that RWF_NOWAIT misses (posix_fadvise DONTNEED through dd's nocache flag).
      const dd = spawn('dd', [`if=${fx.host('big')}`, 'iflag=nocache', 'count=0'], { stdio: 'ignore' });
      await new Promise((res) => dd.once('exit', res));
      const { c, root } = await fx.client(1024 * 1024 + 24);
      const { fid } = await c.walk(root, ['big']);
      await c.lopen(fid, 0);
      const got: Buffer[] = [];
      for (let off = 0; off < data.length;) {
        const b = await c.read(fid, off, 1024 * 1024);
        got.push(b);
        off += b.length;
      }
      assert.ok(Buffer.concat(got).equals(data));
      // And pipelined small reads that fill several arenas come back in order, each with its own bytes.
      const reads = Array.from({ length: 64 }, (_, i) => c.read(fid, i * 40_000, 40_000));
      const back = await Promise.all(reads);
      back.forEach((b, i) => assert.ok(b.equals(data.subarray(i * 40_000, i * 40_000 + 40_000)), `read ${i}`));
    });
  });

  describe('Twrite frames spanning socket chunks (written from the pieces)', () => {
    let fx: Fixture;
    beforeEach(async () => {
      fx = await Fixture.start();
    });
    afterEach(async () => {
      await fx.stop();
    });

    it('large and pipelined writes land byte-exactly, synchronous and threadpool ones', async () => {
      const { c, root } = await fx.client(1024 * 1024 + 24);
      const { fid } = await c.walk(root, []);
      await c.lcreate(fid, 'w', 2);
      const data = Buffer.alloc(5 * 1024 * 1024 + 12345);
      for (let i = 0; i < data.length; i++) data[i] = (i * 13 + (i >> 16)) & 0xff;
      // 1 MiB writes (threadpool) one after the other, then 100 KB and 60 KB ones (synchronous) pipelined.
      for (let off = 0; off < 2 << 20; off += 1 << 20) await c.write(fid, off, data.subarray(off, off + (1 << 20)));
      const writes: Array<Promise<number>> = [];
      for (let off = 2 << 20; off < data.length;) {
        const n = Math.min(off % 3 === 0 ? 100_000 : 60_000, data.length - off);
        writes.push(c.write(fid, off, data.subarray(off, off + n)));
        off += n;
      }
      await Promise.all(writes);
      assert.ok(fs.readFileSync(fx.host('w')).equals(data));
    });
  });

  describe('the reply arena', () => {
    it('keeps reply order across arena and own buffers, and never reuses an arena a stream may hold', async () => {
      const stream = new PassThrough();
      const out = new ReplyOut(stream);
      const expected: Buffer[] = [];
      const got: Buffer[] = [];
      stream.on('data', (d: Buffer) => got.push(d));
      for (let round = 0; round < 50; round++) {
        for (let i = 0; i < 20; i++) {
          const n = ((round * 31 + i * 17) % 5000) + 7;
          if (i % 7 === 3) {
            const own = Buffer.alloc(n + 100_000, round & 0xff);
            out.push(own);
            expected.push(Buffer.from(own));
          } else {
            const at = out.reserve(n);
            out.buf.fill((round * 20 + i) & 0xff, at, at + n);
            out.commit(at + n);
            expected.push(Buffer.alloc(n, (round * 20 + i) & 0xff));
          }
        }
        out.flush();
      }
      await new Promise((r) => setImmediate(r));
      // A PassThrough keeps the chunks it was given: had an arena been reused, earlier bytes would have changed.
      assert.ok(Buffer.concat(got).equals(Buffer.concat(expected)));
    });
  });

  describe('bounds on the fast paths', () => {
    it('the fd budget answers ENFILE when every fd is pinned, and recovers when they go', () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p9fds-'));
      const rootFd = openat(AT_FDCWD, dir, O.PATH | O.DIRECTORY);
      const table = new HostFdTable(
        4,
        linuxHostFs,
        (root, p) => openat(root, p, O.PATH | O.NOFOLLOW),
        (p) => p,
      );
      const inodes: ReturnType<HostFdTable['ref']>[] = [];
      try {
        for (let i = 0; i < 4; i++) {
          fs.writeFileSync(path.join(dir, `f${i}`), '');
          const fd = openat(rootFd, `f${i}`, O.PATH);
          const st = fstatx(fd);
          const ino = table.ref(`k${i}`, { devMajor: st.devMajor, devMinor: st.devMinor, ino: st.ino }, rootFd, fd);
          inodes.push(ino);
          const held = table.holdForUnlink([{ inode: ino, path: `f${i}` }]);
          fs.unlinkSync(path.join(dir, `f${i}`));
          table.pinAfterUnlink(held, true);
        }
        assert.equal(table.pinnedFds, 4);
        fs.writeFileSync(path.join(dir, 'next'), '');
        assert.throws(
          () => table.reserveRoom(1),
          (e: unknown) => (e as { errno?: number }).errno === Errno.ENFILE,
        );
        table.unref(inodes.shift()!);
        table.reserveRoom(1);
        assert.equal(table.openFds, 3);
      } finally {
        for (const ino of inodes) table.unref(ino);
        assert.equal(table.openFds, 0);
        close(rootFd);
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });

    it('small writes stay synchronous while they do not block, and go to the threadpool once they sleep', async () => {
      const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p9sync-'));
      const fifo = path.join(dir, 'fifo');
      try {
        const guard = new SyncWriteGuard();
        const file = fs.openSync(path.join(dir, 'f'), 'w');
        for (let i = 0; i < 100; i++) assert.equal(guard.write(file, Buffer.alloc(8192), i * 8192), 8192);
        const pieces = [Buffer.from('ab'), Buffer.alloc(0), Buffer.from('cdef')];
        assert.equal(guard.write(file, pieces, 3), 6);
        fs.closeSync(file);
        assert.equal(fs.readFileSync(path.join(dir, 'f')).subarray(0, 12).toString('latin1'), '\0\0\0abcdef\0\0\0');
        // A pipe whose reader drains it slowly: each 256 KiB write blocks (sleeps) until the reader catches up.
        const mk = spawn('mkfifo', [fifo]);
        assert.equal(await new Promise((r) => mk.once('exit', r)), 0);
        const reader = spawn('sh', [
          '-c',
          `exec 3<"${fifo}"; while :; do sleep 0.02; dd bs=65536 count=1 <&3 >/dev/null 2>&1 || exit 0; done`,
        ]);
        const w = fs.openSync(fifo, 'w');
        try {
          for (let i = 0; i < 3 && guard.allowed(); i++) guard.write(w, Buffer.alloc(256 * 1024), null);
          assert.equal(guard.allowed(), false, 'writes that slept turn the synchronous path off');
        } finally {
          fs.closeSync(w);
          reader.kill('SIGKILL');
        }
      } finally {
        fs.rmSync(dir, { recursive: true, force: true });
      }
    });
  });
});
