// The 9P server on NTFS, on Linux: the real 9P operations (through the server's message handling, over TCP from
// the test client) over the NTFS host layer (src/p9/ntfs) on a FAKE NTFS volume (test/fakes/ntfs-volume-fake.ts:
// a temp directory with NTFS's case-insensitive lookups and named streams emulated). Nothing here ran on Windows.

import assert from 'node:assert/strict';
import fs from 'node:fs';
import os from 'node:os';
import path from 'node:path';
import { Errno } from '../../../src/p9/errno.js';
import { hostFsFor } from '../../../src/p9/hostfs-select.js';
import { linuxHostFs } from '../../../src/p9/hostfs-linux.js';
import { MsgType } from '../../../src/p9/messages.js';
import { NtfsHostFs } from '../../../src/p9/ntfs/hostfs-ntfs.js';
import { META_STREAM, XATTR_STREAM, decodeMeta, decodeXattrs } from '../../../src/p9/ntfs/meta.js';
import { checkCreateName, ntfsNameProblem } from '../../../src/p9/ntfs/names.js';
import { P9Server } from '../../../src/p9/server.js';
import { FakeNtfsVolume } from '../../fakes/ntfs-volume-fake.js';
import { P9ClientError, type P9Client } from '../../helpers/p9client.js';
import { Fixture } from './fixture.js';

const S_IFMT = 0o170000;
const S_IFREG = 0o100000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const S_IFCHR = 0o020000;
const S_IFIFO = 0o010000;
const QTSYMLINK = 0x02;
const O_RDWR = 2;

async function errnoOf(p: Promise<unknown>): Promise<number> {
  try {
    await p;
    return 0;
  } catch (e) {
    if (e instanceof P9ClientError) return e.ecode;
    throw e;
  }
}

/** How many names of a Twalk the server walked (a short walk stops where a step failed). */
async function walkedNames(c: P9Client, fid: number, names: string[]): Promise<number> {
  const newfid = c.allocFid();
  const r = await c.rpc({ type: MsgType.Twalk, fid, newfid, names }, MsgType.Rwalk);
  if (r.qids.length === names.length) await c.clunk(newfid);
  return r.qids.length;
}

describe('p9 on NTFS: names NTFS cannot hold', () => {
  it('refuses stream syntax, separators, wildcards, control characters, trailing dot/space, DOS device names', () => {
    for (const bad of [
      'a:b',
      'file::$DATA',
      'a\\b',
      'a*b',
      'a?b',
      'a<b',
      'a>b',
      'a|b',
      'a"b',
      'tab\there',
      'x.',
      'x ',
      'CON',
      'con',
      'nul.txt',
      'COM1',
      'lpt9.tar.gz',
      'COM\u00b9',
      'CONIN$',
      'x'.repeat(256),
    ]) {
      assert.notEqual(ntfsNameProblem(bad), undefined, bad);
      assert.throws(
        () => checkCreateName(bad),
        (e: { errno?: number }) => e.errno === Errno.EINVAL,
        bad,
      );
    }
    for (const good of ['a.b', 'CONSOLE', 'com10', 'nul_', '.hidden', 'ümlaut', 'x'.repeat(255), 'a b', '$MFTx']) {
      assert.equal(ntfsNameProblem(good), undefined, good);
    }
  });
});

describe('p9 on NTFS: the server selects its host layer by platform', () => {
  it('win32 gets the NTFS layer (built, not called), anything else the Linux syscalls', () => {
    assert.ok(hostFsFor('win32') instanceof NtfsHostFs);
    assert.equal(hostFsFor('win32').kind, 'ntfs');
    assert.equal(hostFsFor('linux'), linuxHostFs);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p9sel-'));
    try {
      const server = new P9Server({ exports: [{ name: 'x', path: dir }] });
      assert.equal(server.fs, linuxHostFs);
      server.close();
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('p9 on NTFS (fake volume) through the server', function () {
  this.timeout(20_000);
  let fx: Fixture;
  let vol: FakeNtfsVolume;
  let ntfs: NtfsHostFs;
  let streams: string;
  let outside: string;

  async function start(configure?: (v: FakeNtfsVolume) => void): Promise<{ c: P9Client; root: number }> {
    streams = fs.mkdtempSync(path.join(os.tmpdir(), 'p9ntfs-streams-'));
    outside = fs.mkdtempSync(path.join(os.tmpdir(), 'p9ntfs-outside-'));
    vol = new FakeNtfsVolume(streams);
    configure?.(vol);
    ntfs = new NtfsHostFs(vol);
    fx = await Fixture.start({ hostFs: ntfs });
    return fx.client();
  }

  afterEach(async () => {
    const followed = vol.followedLinks;
    await fx.stop();
    fs.rmSync(streams, { recursive: true, force: true });
    fs.rmSync(outside, { recursive: true, force: true });
    assert.equal(followed, 0, 'no metadata stream was opened through a host reparse point');
  });

  function meta(rel: string) {
    return decodeMeta(vol.streamOf(fx.host(rel), META_STREAM));
  }

  it('files and directories: create, write, read, list; default modes leave no stream; handles are released', async () => {
    const { c, root } = await start();
    const { fid } = await c.walk(root, []);
    await c.lcreate(fid, 'hello.txt', O_RDWR, 0o644);
    assert.equal(await c.write(fid, 0, Buffer.from('hello ntfs')), 10);
    assert.equal((await c.read(fid, 0, 100)).toString(), 'hello ntfs');
    await c.clunk(fid);
    await c.mkdir(root, 'dir', 0o755);
    assert.equal(fs.readFileSync(fx.host('hello.txt'), 'utf8'), 'hello ntfs');
    assert.ok(fs.statSync(fx.host('dir')).isDirectory());
    assert.equal(vol.streamCount(), 0, 'a root guest making 0644 files and 0755 dirs needs no metadata');
    const ga = await c.getattr((await c.walk(root, ['hello.txt'])).fid);
    assert.equal(ga.mode, S_IFREG | 0o644);
    assert.equal(ga.size, 10n);
    assert.equal(ga.uid, process.geteuid!());
    const { fid: d } = await c.walk(root, []);
    await c.lopen(d, 0);
    const names = (await c.readdirAll(d)).map((e) => e.name).sort();
    assert.deepEqual(names, ['.', '..', 'dir', 'hello.txt']);
    await c.clunk(d);
    assert.equal(await c.read((await c.walk(root, [])).fid, 0, 1).catch((e: P9ClientError) => e.ecode), Errno.EBADF);
    c.close();
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(ntfs.openHandles, 1, 'only the export root handle is left once the client is gone');
  });

  it('mode, owner and guest uid/gid live in the lcow.meta stream; setuid reaches the guest, never the host', async () => {
    const { c } = await start();
    const root = (await c.attach('test', c.allocFid(), 1000)).fid;
    const { fid } = await c.walk(root, []);
    await c.lcreate(fid, 'tool', O_RDWR, 0o600, 1000);
    let ga = await c.getattr(fid);
    assert.equal(ga.uid, 1000);
    assert.equal(ga.gid, 1000);
    assert.equal(ga.mode, S_IFREG | 0o600);
    assert.deepEqual(meta('tool')?.record, { mode: S_IFREG | 0o600, uid: 1000, gid: 1000 });
    await c.setattr(fid, { mode: 0o4755, uid: 0, gid: 0 });
    ga = await c.getattr(fid);
    assert.equal(ga.mode, S_IFREG | 0o4755);
    assert.equal(ga.uid, 0);
    const m = meta('tool')!;
    assert.equal(m.perm! & 0o6000, 0, 'the emulated host bits never carry setuid/setgid');
    assert.equal(m.perm! & 0o1000, 0o1000, 'the record marker');
    assert.equal(fs.statSync(fx.host('tool')).mode & 0o6000, 0, 'the real file gets nothing');
    // Back to a plain root 0644 file: the record goes, and with it the stream.
    await c.setattr(fid, { mode: 0o644 });
    assert.equal(vol.streamOf(fx.host('tool'), META_STREAM), undefined);
    assert.equal((await c.getattr(fid)).mode, S_IFREG | 0o644);
  });

  it('symlinks are regular files holding the target, marked in lcow.meta; their owner is their own record', async () => {
    const { c, root } = await start();
    await c.rpc(
      { type: MsgType.Tsymlink, fid: root, name: 'ln', symtgt: '../../etc/passwd', gid: 0 },
      MsgType.Rsymlink,
    );
    const host = fs.lstatSync(fx.host('ln'));
    assert.ok(host.isFile(), 'no host symlink is made');
    assert.equal(fs.readFileSync(fx.host('ln'), 'utf8'), '../../etc/passwd');
    assert.equal(meta('ln')?.symlink, true);
    const { fid, qids } = await c.walk(root, ['ln']);
    assert.equal(qids[0]!.type & QTSYMLINK, QTSYMLINK);
    const rl = await c.rpc({ type: MsgType.Treadlink, fid }, MsgType.Rreadlink);
    assert.equal(rl.target, '../../etc/passwd');
    assert.equal((await c.getattr(fid)).mode, S_IFLNK | 0o777);
    await c.setattr(fid, { uid: 42, gid: 43 });
    const ga = await c.getattr(fid);
    assert.equal(ga.uid, 42);
    assert.equal(ga.gid, 43);
    assert.equal(meta('ln')?.symlink, true, 'the link flag survives the owner change');
    assert.equal(await errnoOf(c.setattr(fid, { mode: 0o600 })), Errno.EOPNOTSUPP);
    assert.equal(await errnoOf(c.lopen(fid, 0)), Errno.ENXIO, 'a symlink is never opened');
    assert.equal(await walkedNames(c, root, ['ln', 'x']), 1, 'the walk stops at the link');
    const { fid: d } = await c.walk(root, []);
    await c.lopen(d, 0);
    const entry = (await c.readdirAll(d)).find((e) => e.name === 'ln')!;
    assert.equal(entry.type, 10, 'DT_LNK in the listing');
    // Renamed, it keeps being a link with its owner (the stream belongs to the file).
    await c.rpc(
      { type: MsgType.Trenameat, olddirfid: root, oldname: 'ln', newdirfid: root, newname: 'ln2' },
      MsgType.Rrenameat,
    );
    const moved = await c.getattr((await c.walk(root, ['ln2'])).fid);
    assert.equal(moved.mode, S_IFLNK | 0o777);
    assert.equal(moved.uid, 42);
  });

  it('device nodes and FIFOs are empty regular files whose type and rdev are in the record; never opened', async () => {
    const { c, root } = await start();
    await c.mknod(root, 'null', S_IFCHR | 0o666, 1, 3);
    await c.mknod(root, 'fifo', S_IFIFO | 0o644);
    for (const n of ['null', 'fifo']) {
      const st = fs.lstatSync(fx.host(n));
      assert.ok(st.isFile() && st.size === 0, n);
    }
    const { fid } = await c.walk(root, ['null']);
    const ga = await c.getattr(fid);
    assert.equal(ga.mode, S_IFCHR | 0o666);
    assert.equal(ga.rdev, (1n << 8n) | 3n);
    assert.equal(await errnoOf(c.lopen(fid, 0)), Errno.ENXIO);
    assert.equal((await c.getattr((await c.walk(root, ['fifo'])).fid)).mode & S_IFMT, S_IFIFO);
  });

  it('xattrs (any namespace) live in the lcow.xattr stream, bounded per object; never on symlinks', async () => {
    const { c, root } = await start();
    const { fid } = await c.walk(root, []);
    await c.lcreate(fid, 'f', O_RDWR);
    await c.clunk(fid);
    const { fid: f } = await c.walk(root, ['f']);
    await c.xattrSet(f, 'user.mime', Buffer.from('text/plain'));
    await c.xattrSet(f, 'security.capability', Buffer.from([1, 2, 3]));
    assert.equal((await c.xattrGet(f, 'user.mime')).toString(), 'text/plain');
    assert.deepEqual([...(await c.xattrGet(f, 'security.capability'))], [1, 2, 3]);
    assert.deepEqual((await c.xattrGet(f, '')).toString().split('\0').filter(Boolean).sort(), [
      'security.capability',
      'user.mime',
    ]);
    const stored = decodeXattrs(vol.streamOf(fx.host('f'), XATTR_STREAM));
    assert.deepEqual([...stored.keys()].sort(), ['security.capability', 'user.mime']);
    assert.equal(await errnoOf(c.xattrSet(f, 'user.mime', Buffer.from('x'), 1)), Errno.EEXIST);
    assert.equal(await errnoOf(c.xattrSet(f, 'user.none', Buffer.from('x'), 2)), Errno.ENODATA);
    assert.equal(await errnoOf(c.xattrSet(f, 'os2.x', Buffer.from('x'))), Errno.EOPNOTSUPP);
    await c.xattrSet(f, 'user.big1', Buffer.alloc(40_000, 1));
    assert.equal(await errnoOf(c.xattrSet(f, 'user.big2', Buffer.alloc(40_000, 2))), Errno.ENOSPC);
    await c.xattrSet(f, 'user.big1', Buffer.alloc(0));
    await c.xattrSet(f, 'user.mime', Buffer.alloc(0));
    await c.xattrSet(f, 'security.capability', Buffer.alloc(0));
    assert.equal(vol.streamOf(fx.host('f'), XATTR_STREAM), undefined, 'the last one removed drops the stream');
    await c.rpc({ type: MsgType.Tsymlink, fid: root, name: 'l', symtgt: 'f', gid: 0 }, MsgType.Rsymlink);
    assert.equal(await errnoOf(c.xattrSet((await c.walk(root, ['l'])).fid, 'user.a', Buffer.from('1'))), Errno.EPERM);
  });

  it('names NTFS cannot hold: lookups ENOENT, creates EINVAL, and nothing appears on the host', async () => {
    const { c, root } = await start();
    fx.file('base', 'x');
    const before = fs.readdirSync(fx.dir).sort();
    for (const bad of ['base:evil', 'base::$DATA', 'CON', 'nul.txt', 'x.', 'x ', 'a\\..\\b', 'a*']) {
      assert.equal(await errnoOf(c.walk(root, [bad])), Errno.ENOENT, `walk ${bad}`);
      const { fid } = await c.walk(root, []);
      assert.equal(await errnoOf(c.lcreate(fid, bad, O_RDWR)), Errno.EINVAL, `lcreate ${bad}`);
      await c.clunk(fid);
      assert.equal(await errnoOf(c.mkdir(root, bad)), Errno.EINVAL, `mkdir ${bad}`);
      assert.equal(await errnoOf(c.mknod(root, bad, S_IFIFO | 0o644)), Errno.EINVAL, `mknod ${bad}`);
      assert.equal(
        await errnoOf(c.rpc({ type: MsgType.Tsymlink, fid: root, name: bad, symtgt: 'x', gid: 0 }, MsgType.Rsymlink)),
        Errno.EINVAL,
        `symlink ${bad}`,
      );
      assert.equal(
        await errnoOf(
          c.rpc(
            { type: MsgType.Trenameat, olddirfid: root, oldname: 'base', newdirfid: root, newname: bad },
            MsgType.Rrenameat,
          ),
        ),
        Errno.EINVAL,
        `rename to ${bad}`,
      );
      const { fid: t } = await c.walk(root, ['base']);
      assert.equal(
        await errnoOf(c.rpc({ type: MsgType.Tlink, dfid: root, fid: t, name: bad }, MsgType.Rlink)),
        Errno.EINVAL,
        `link ${bad}`,
      );
      await c.clunk(t);
    }
    assert.deepEqual(fs.readdirSync(fx.dir).sort(), before);
    assert.equal(vol.streamCount(), 0, 'no stream was written through a smuggled name');
  });

  it('case-insensitive host directories: only the stored name is found, a second name differing in case is EEXIST', async () => {
    const { c, root } = await start();
    // Made on the host (no case-sensitive flag): NTFS would find Readme for any case.
    fx.file('docs/Readme', 'r');
    fx.file('docs/other', 'o');
    const { fid: docs } = await c.walk(root, ['docs']);
    assert.equal((await c.walk(docs, ['Readme'])).qids.length, 1);
    assert.equal(await errnoOf(c.walk(docs, ['README'])), Errno.ENOENT, 'no alias through another case');
    assert.equal(await errnoOf(c.walk(docs, ['readme'])), Errno.ENOENT);
    const { fid: d2 } = await c.walk(docs, []);
    assert.equal(await errnoOf(c.lcreate(d2, 'README', O_RDWR)), Errno.EEXIST, 'O_CREAT must not open Readme');
    assert.equal(await errnoOf(c.mkdir(docs, 'readme')), Errno.EEXIST);
    assert.equal(await errnoOf(c.mknod(docs, 'README', S_IFIFO | 0o600)), Errno.EEXIST);
    assert.equal(
      await errnoOf(
        c.rpc(
          { type: MsgType.Trenameat, olddirfid: docs, oldname: 'other', newdirfid: docs, newname: 'README' },
          MsgType.Rrenameat,
        ),
      ),
      Errno.EEXIST,
      'a rename must not replace Readme under another name',
    );
    assert.equal(fs.readFileSync(fx.host('docs/Readme'), 'utf8'), 'r', 'Readme untouched');
    // A change of case of the file itself is a rename like any other.
    await c.rpc(
      { type: MsgType.Trenameat, olddirfid: docs, oldname: 'Readme', newdirfid: docs, newname: 'README' },
      MsgType.Rrenameat,
    );
    assert.deepEqual(fs.readdirSync(fx.host('docs')).sort(), ['README', 'other']);
    assert.equal((await c.walk(docs, ['README'])).qids.length, 1);
    assert.equal(await errnoOf(c.walk(docs, ['Readme'])), Errno.ENOENT);
  });

  it('directories the server makes get the case-sensitive flag: two names differing in case are two files', async () => {
    const { c, root } = await start();
    await c.mkdir(root, 'src', 0o755);
    assert.equal(vol.isCaseSensitiveDir(fx.host('src')), true);
    const { fid: src } = await c.walk(root, ['src']);
    for (const [name, body] of [
      ['Makefile', 'upper'],
      ['makefile', 'lower'],
    ]) {
      const { fid } = await c.walk(src, []);
      await c.lcreate(fid, name!, O_RDWR);
      await c.write(fid, 0, Buffer.from(body!));
      await c.clunk(fid);
    }
    assert.equal((await c.readFile(src, ['Makefile'])).toString(), 'upper');
    assert.equal((await c.readFile(src, ['makefile'])).toString(), 'lower');
  });

  it('where the host refuses the flag, a new directory stays case-insensitive and aliases are still refused', async () => {
    const { c, root } = await start((v) => (v.caseFlagWorks = false));
    await c.mkdir(root, 'src', 0o755);
    assert.equal(ntfs.caseFlagRefused, 1);
    const { fid: src } = await c.walk(root, ['src']);
    const { fid } = await c.walk(src, []);
    await c.lcreate(fid, 'Makefile', O_RDWR);
    await c.clunk(fid);
    const { fid: again } = await c.walk(src, []);
    assert.equal(await errnoOf(c.lcreate(again, 'makefile', O_RDWR)), Errno.EEXIST);
  });

  it('host reparse points show as symlinks, are never followed, carry no metadata and cannot be linked', async () => {
    const { c, root } = await start();
    fs.writeFileSync(path.join(outside, 'secret'), 'host secret');
    fs.symlinkSync(outside, fx.host('escape'));
    fs.symlinkSync(path.join(outside, 'secret'), fx.host('fileLink'));
    const { fid, qids } = await c.walk(root, ['escape']);
    assert.equal(qids[0]!.type & QTSYMLINK, QTSYMLINK);
    assert.equal((await c.getattr(fid)).mode & S_IFMT, S_IFLNK);
    assert.equal((await c.rpc({ type: MsgType.Treadlink, fid }, MsgType.Rreadlink)).target, outside);
    assert.equal(await walkedNames(c, root, ['escape', 'secret']), 1, 'never walked through');
    const { fid: fl } = await c.walk(root, ['fileLink']);
    assert.equal(await errnoOf(c.lopen(fl, 0)), Errno.ENXIO);
    assert.equal(await errnoOf(c.setattr(fl, { uid: 7 })), Errno.EPERM);
    assert.equal(await errnoOf(c.xattrSet(fl, 'user.a', Buffer.from('1'))), Errno.EPERM);
    assert.equal(
      await errnoOf(c.rpc({ type: MsgType.Tlink, dfid: root, fid: fl, name: 'hard' }, MsgType.Rlink)),
      Errno.EPERM,
    );
    // The guest replaces the link: the link goes, its target stays.
    await c.unlinkat(root, 'fileLink');
    assert.equal(fs.readFileSync(path.join(outside, 'secret'), 'utf8'), 'host secret');
    assert.deepEqual(fs.readdirSync(outside), ['secret']);
  });

  it('rename over, hard links and unlink keep metadata with the file and drop it with the last name', async () => {
    const { c, root } = await start();
    const { fid } = await c.walk(root, []);
    await c.lcreate(fid, 'a', O_RDWR, 0o600);
    await c.clunk(fid);
    await c.mkdir(root, 'd', 0o700);
    await c.mkdir(root, 'empty', 0o755);
    const { fid: a } = await c.walk(root, ['a']);
    await c.rpc({ type: MsgType.Tlink, dfid: root, fid: a, name: 'b' }, MsgType.Rlink);
    assert.equal((await c.getattr((await c.walk(root, ['b'])).fid)).mode, S_IFREG | 0o600, 'shared by hard links');
    await c.rpc(
      { type: MsgType.Trenameat, olddirfid: root, oldname: 'a', newdirfid: root, newname: 'c' },
      MsgType.Rrenameat,
    );
    assert.equal((await c.getattr(a)).mode, S_IFREG | 0o600, 'the fid followed the rename');
    // A directory over an empty one replaces it (Windows will not: the layer removes it first); over a file: ENOTDIR.
    await c.rpc(
      { type: MsgType.Trenameat, olddirfid: root, oldname: 'd', newdirfid: root, newname: 'empty' },
      MsgType.Rrenameat,
    );
    assert.equal((await c.getattr((await c.walk(root, ['empty'])).fid)).mode, S_IFDIR | 0o700);
    assert.equal(
      await errnoOf(
        c.rpc(
          { type: MsgType.Trenameat, olddirfid: root, oldname: 'empty', newdirfid: root, newname: 'c' },
          MsgType.Rrenameat,
        ),
      ),
      Errno.ENOTDIR,
    );
    await c.unlinkat(root, 'b');
    await c.unlinkat(root, 'c');
    await c.unlinkat(root, 'empty', 0x200);
    assert.equal(vol.streamCount(), 0, 'no stream outlives its file');
    assert.equal(await errnoOf(c.unlinkat(root, 'nothing')), Errno.ENOENT);
  });

  it('an export on a volume without named streams is refused with the reason', async () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'p9ntfs-fat-'));
    const v = new FakeNtfsVolume(path.join(dir, '.streams'));
    v.streams = false;
    try {
      assert.throws(
        () => new P9Server({ exports: [{ name: 'x', path: dir }], hostFs: new NtfsHostFs(v) }),
        /no alternate data streams/,
      );
    } finally {
      fs.rmSync(dir, { recursive: true, force: true });
    }
    // The suite's afterEach needs a fixture.
    await start();
  });
});
