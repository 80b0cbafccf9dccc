// Attacks of a hostile guest on `lcowctl 9p serve` running as root (as the shim runs it), one per 9P row of the
// threat table in docs/security.md, written with the raw 9P client. Each asserts that
//  - nothing privileged appears on the host: a second, unprivileged local user created here tries to use what
//    the guest made (runs it, opens it) and never gains anything; a positive control proves the same harness
//    does detect a real setuid file and a real file capability;
//  - another connection is answered within PROBE_BOUND_MS during the attack (latency probe in a worker);
//  - the server's fds and memory stay within the bounds docs/security.md states.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import {
  chmodSync,
  chownSync,
  closeSync,
  copyFileSync,
  lstatSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readdirSync,
  rmSync,
  writeFileSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { Errno } from '../../../src/p9/errno.js';
import { LockStatus, LockType, MsgType } from '../../../src/p9/messages.js';
import { lsetxattr, mknodat, AT_FDCWD, S_IFCHR } from '../../../src/util/syscalls.js';
import { processRssBytes } from '../../../src/util/proc.js';
import { createHostUser, hostUserUnavailable, type HostUser } from '../../helpers/host-user.js';
import { hostPrivileges, hostXattr } from '../../helpers/host-privileges.js';
import { startLatencyProbe, type ProbeResult } from '../../helpers/latency-probe.js';
import { P9Client, P9ClientError, parseDirents } from '../../helpers/p9client.js';
import { startOurServer, type RunningServer } from '../../helpers/p9-servers.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';

/** Another connection must be answered within this while an attack runs (the stalls found were 3.7 s and death). */
const PROBE_BOUND_MS = 250;
/** RSS the server may gain during one attack (per-connection bounds: docs/security.md). */
const RSS_BOUND = 96 * 1024 * 1024;
const MAX_HOST_FDS = 1024; // the server default

const O_RDONLY = 0;
const O_RDWR = 2;
const S_IFBLK = 0o060000;
const S_IFIFO = 0o010000;

/** vfs_cap_data v2 with the effective flag and cap_setuid,cap_setgid permitted: what `setcap cap_setuid,cap_setgid=ep` writes. */
function capSetuidValue(): Buffer {
  const v = Buffer.alloc(20);
  v.writeUInt32LE(0x02000001, 0);
  v.writeUInt32LE((1 << 7) | (1 << 6), 4);
  return v;
}

const ESCALATE_C = `#define _GNU_SOURCE
#include <stdio.h>
#include <unistd.h>
int main(void) {
  uid_t r, e, s;
  getresuid(&r, &e, &s);
  int ok = setresuid(0, 0, 0) == 0;
  printf("euid=%d setuid0=%d\\n", (int)e, ok);
  return 0;
}
`;

function fdCount(pid: number): number {
  return readdirSync(`/proc/${pid}/fd`).length;
}

async function rss(pid: number): Promise<number> {
  return (await processRssBytes(pid)) ?? 0;
}

function errnoOf(p: Promise<unknown>): Promise<number> {
  return p.then(
    () => 0,
    (e: unknown) => {
      if (e instanceof P9ClientError) return e.ecode;
      throw e;
    },
  );
}

interface Attacker {
  c: P9Client;
  root: number;
}

async function attach(srv: RunningServer, msize = 262144): Promise<Attacker> {
  const c = await P9Client.connect(srv.port);
  await c.version(msize);
  return { c, root: (await c.attach(srv.aname)).fid };
}

/** Pipelines `n` requests made by `make(i)` in windows of `window`; returns each one's errno (0 for success). */
async function flood<T>(n: number, make: (i: number) => Promise<T>, window = 1000): Promise<number[]> {
  const out: number[] = [];
  for (let i = 0; i < n; i += window) {
    const batch: Array<Promise<number>> = [];
    for (let j = i; j < Math.min(n, i + window); j++) batch.push(errnoOf(make(j)));
    out.push(...(await Promise.all(batch)));
  }
  return out;
}

describe('9P attacks by a hostile guest (raw 9P client against `lcowctl 9p serve` as root)', function () {
  this.timeout(300_000);
  let missing: string | undefined;
  let work: string;
  let elf: Buffer;
  let user: HostUser | undefined;
  const servers: RunningServer[] = [];
  const clients: P9Client[] = [];
  const measures: string[] = [];

  before(function () {
    missing = hostUserUnavailable();
    if (!missing) {
      try {
        execFileSync('sh', ['-c', 'command -v gcc && command -v inotifywait'], { stdio: 'ignore' });
      } catch {
        missing = 'gcc and inotify-tools are needed';
      }
    }
    requirePrerequisite(this, missing);
    work = mkdtempSync(join(tmpdir(), 'p9attack-'));
    chmodSync(work, 0o755); // the second user must reach what it tries to use
    writeFileSync(join(work, 'escalate.c'), ESCALATE_C);
    execFileSync('gcc', ['-O2', '-o', join(work, 'escalate'), join(work, 'escalate.c')]);
    elf = execFileSync('cat', [join(work, 'escalate')]);
    user = createHostUser('p9atk');
  });

  after(async function () {
    for (const c of clients) c.close();
    await Promise.all(servers.map((s) => s.stop()));
    user?.remove();
    if (work) rmSync(work, { recursive: true, force: true });
    if (measures.length) process.stderr.write(`      [p9-attacks] ${measures.join('; ')}\n`);
  });

  async function server(
    name: string,
    opts: { security?: 'mapped' | 'passthrough-existing'; extraArgs?: string[] } = {},
  ) {
    const dir = join(work, name);
    mkdirSync(dir, { mode: 0o755 });
    chmodSync(dir, 0o755);
    const srv = await startOurServer({ exportDir: dir, ...opts });
    servers.push(srv);
    return { srv, dir };
  }

  async function attacker(srv: RunningServer, msize?: number): Promise<Attacker> {
    const a = await attach(srv, msize);
    clients.push(a.c);
    return a;
  }

  /** Runs a file as the second user: what it printed (euid and whether setuid(0) worked). */
  async function runAsUser(file: string): Promise<{ euid: number; setuid0: boolean; raw: string }> {
    const r = await user!.run([file]);
    const m = /euid=(\d+) setuid0=(\d)/.exec(r.stdout);
    return { euid: m ? Number(m[1]) : -1, setuid0: m?.[2] === '1', raw: `${r.code} ${r.stdout}${r.stderr}` };
  }

  /** Runs `attack` while probing another connection; checks latency, fds and memory of the server. */
  async function underProbe(
    label: string,
    srv: RunningServer,
    attack: () => Promise<void>,
    bounds: { fds: number; rss?: number } = { fds: MAX_HOST_FDS },
  ): Promise<ProbeResult> {
    const fds0 = fdCount(srv.pid);
    const rss0 = await rss(srv.pid);
    const probe = await startLatencyProbe(srv.port, srv.aname);
    let result: ProbeResult;
    try {
      await attack();
    } finally {
      result = await probe.stop();
    }
    const fds1 = fdCount(srv.pid);
    const rss1 = await rss(srv.pid);
    measures.push(
      `${label}: probe max ${result.maxMs.toFixed(1)} ms over ${result.count}, fds +${fds1 - fds0}, ` +
        `rss +${((rss1 - rss0) / 1048576).toFixed(1)} MiB`,
    );
    assert.ok(result.count > 0, 'the probe got no answer at all');
    assert.ok(result.maxMs < PROBE_BOUND_MS, `${label}: another connection waited ${result.maxMs.toFixed(0)} ms`);
    assert.ok(fds1 - fds0 <= bounds.fds, `${label}: server fds grew by ${fds1 - fds0} (bound ${bounds.fds})`);
    assert.ok(rss1 - rss0 <= (bounds.rss ?? RSS_BOUND), `${label}: server RSS grew by ${rss1 - rss0} bytes`);
    assert.ok(srv.running(), 'the server died');
    return result;
  }

  it('positive control: the harness sees a real setuid-root file and a real file capability escalate', async () => {
    const suid = join(work, 'control-suid');
    copyFileSync(join(work, 'escalate'), suid);
    chmodSync(suid, 0o4755);
    assert.deepEqual((await runAsUser(suid)).euid, 0);
    const cap = join(work, 'control-cap');
    copyFileSync(join(work, 'escalate'), cap);
    chmodSync(cap, 0o755);
    lsetxattr(cap, 'security.capability', capSetuidValue(), 0);
    const r = await runAsUser(cap);
    assert.equal(r.setuid0, true, r.raw);
    assert.notEqual(r.euid, 0);
    rmSync(suid);
    rmSync(cap);
  });

  for (const security of ['mapped', 'passthrough-existing'] as const) {
    describe(`no privileged object reaches the host (${security} share)`, function () {
      let srv: RunningServer;
      let dir: string;
      let a: Attacker;
      before(async function () {
        requirePrerequisite(this, missing);
        ({ srv, dir } = await server(`priv-${security}`, { security }));
        a = await attacker(srv);
      });

      async function createFile(name: string, mode: number, data: Buffer): Promise<number> {
        const { fid } = await a.c.walk(a.root, []);
        await a.c.lcreate(fid, name, O_RDWR, mode);
        await a.c.write(fid, 0, data);
        return fid;
      }

      it('Tlcreate mode 04755 + an ELF: no setuid bit on the host, the second user stays itself', async () => {
        const fid = await createFile('suid', 0o4755, elf);
        assert.equal((await a.c.getattr(fid)).mode & 0o7777, 0o4755, 'the guest sees its setuid file');
        await a.c.clunk(fid);
        const st = lstatSync(join(dir, 'suid'));
        assert.equal(st.mode & 0o6000, 0, `host mode ${st.mode.toString(8)}`);
        const r = await runAsUser(join(dir, 'suid'));
        assert.ok(r.euid === user!.uid && !r.setuid0, r.raw);
        assert.deepEqual(hostPrivileges(dir), []);
      });

      it('Txattrcreate security.capability (cap_setuid,cap_setgid=ep): no capability on the host', async () => {
        const fid = await createFile('capbin', 0o755, elf);
        await a.c.clunk(fid);
        const { fid: f } = await a.c.walk(a.root, ['capbin']);
        await a.c.xattrSet(f, 'security.capability', capSetuidValue());
        assert.deepEqual(await a.c.xattrGet(f, 'security.capability'), capSetuidValue(), 'the guest reads it back');
        assert.equal(hostXattr(join(dir, 'capbin'), 'security.capability'), undefined);
        const r = await runAsUser(join(dir, 'capbin'));
        assert.ok(r.euid === user!.uid && !r.setuid0, r.raw);
        assert.deepEqual(hostPrivileges(dir), []);
      });

      it('trusted.* and security.* xattrs (trusted.overlay.opaque, security.ima) never reach the host', async () => {
        const d = await a.c.mkdir(a.root, 'opaque');
        void d;
        const { fid: od } = await a.c.walk(a.root, ['opaque']);
        await a.c.xattrSet(od, 'trusted.overlay.opaque', Buffer.from('y'));
        const fid = await createFile('measured', 0o644, Buffer.from('data'));
        await a.c.xattrSet(fid, 'security.ima', Buffer.from([3, 2, 1]));
        await a.c.xattrSet(fid, 'trusted.x', Buffer.from('t'));
        assert.equal((await a.c.xattrGet(od, 'trusted.overlay.opaque')).toString(), 'y');
        const names = (await a.c.xattrGet(fid, '')).toString().split('\0').filter(Boolean).sort();
        assert.deepEqual(names, ['security.ima', 'trusted.x']);
        assert.equal(hostXattr(join(dir, 'opaque'), 'trusted.overlay.opaque'), undefined);
        assert.equal(hostXattr(join(dir, 'measured'), 'security.ima'), undefined);
        // The guest cannot reach the records either: its own user.lcow.* names are kept apart.
        await a.c.xattrSet(fid, 'user.lcow.meta', Buffer.from('forged'));
        assert.equal((await a.c.getattr(fid)).mode & 0o7777, 0o644);
        assert.deepEqual(hostPrivileges(dir), []);
      });

      it('Tmknod block 7:0 then chmod 0666: a plain file on the host, no device the second user can open', async () => {
        await a.c.mknod(a.root, 'loop0', S_IFBLK | 0o600, 7, 0);
        const { fid } = await a.c.walk(a.root, ['loop0']);
        await a.c.setattr(fid, { mode: 0o666 });
        const ga = await a.c.getattr(fid);
        assert.equal(ga.mode, S_IFBLK | 0o666, 'the guest sees a block device');
        assert.equal(ga.rdev, 7n << 8n);
        const st = lstatSync(join(dir, 'loop0'));
        assert.ok(st.isFile(), 'a regular file on the host');
        assert.equal(st.rdev, 0);
        assert.equal(st.mode & 0o077, 0, `host mode ${st.mode.toString(8)}: no access for other users`);
        const r = await user!.run(['dd', `if=${join(dir, 'loop0')}`, 'of=/dev/null', 'count=1']);
        assert.notEqual(r.code, 0, 'the second user cannot open it');
        assert.equal(await errnoOf(a.c.lopen(fid, O_RDWR)), Errno.ENXIO, 'the server never opens it either');
        assert.deepEqual(hostPrivileges(dir), []);
      });

      it("Tsetattr chown 0:0 + mode 06755 on a host user's file: never a setuid-setgid root file", async () => {
        const victim = join(dir, 'users-tool');
        writeFileSync(victim, elf);
        chownSync(victim, user!.uid, user!.gid);
        chmodSync(victim, 0o755);
        const { fid } = await a.c.walk(a.root, ['users-tool']);
        const chown = await errnoOf(a.c.setattr(fid, { uid: 0, gid: 0 }));
        const chmod = await errnoOf(a.c.setattr(fid, { mode: 0o6755 }));
        const st = lstatSync(victim);
        assert.equal(st.mode & 0o6000, 0, `host mode ${st.mode.toString(8)}`);
        if (security === 'mapped') {
          // A host user's file cannot be given away or made privileged by the guest.
          assert.equal(chown, Errno.EPERM);
          assert.equal(chmod, Errno.EPERM);
          assert.equal(st.uid, user!.uid);
        } else {
          // A rootfs snapshot's owners are the image's: chown passes through, setuid stays in the guest's view.
          assert.equal(chown, 0);
          assert.equal(chmod, 0);
          assert.equal((await a.c.getattr(fid)).mode & 0o7777, 0o6755);
        }
        const r = await runAsUser(victim);
        assert.ok(r.euid === user!.uid && !r.setuid0, r.raw);
        assert.deepEqual(hostPrivileges(dir), []);
      });
    });
  }

  describe('existing objects by model', function () {
    it('passthrough-existing shows image setuid files and capabilities; mapped hides host privileged xattrs', async function () {
      requirePrerequisite(this, missing);
      for (const security of ['mapped', 'passthrough-existing'] as const) {
        const { srv, dir } = await server(`existing-${security}`, { security });
        const bin = join(dir, 'ping');
        writeFileSync(bin, elf);
        chmodSync(bin, 0o4755);
        lsetxattr(bin, 'security.capability', capSetuidValue(), 0);
        const a = await attacker(srv);
        const { fid } = await a.c.walk(a.root, ['ping']);
        assert.equal((await a.c.getattr(fid)).mode & 0o7777, 0o4755, `${security}: existing mode passes through`);
        const cap = await errnoOf(a.c.xattrGet(fid, 'security.capability'));
        assert.equal(cap, security === 'mapped' ? Errno.ENODATA : 0, `${security}: host capability visibility`);
        // A new privileged object is never created, whatever the model: the guest's own copy is not setuid.
        const { fid: d } = await a.c.walk(a.root, []);
        await a.c.lcreate(d, 'copy', O_RDWR, 0o4755);
        assert.equal(lstatSync(join(dir, 'copy')).mode & 0o6000, 0);
      }
    });
  });

  describe('the server never opens, chmods or gives away a special file (Tsetattr size on a FIFO/device)', function () {
    it('host FIFO and device: EINVAL/ENXIO/EPERM, no open seen by inotify; guest-made ones are plain files', async function () {
      requirePrerequisite(this, missing);
      const { srv, dir } = await server('special');
      const fifo = join(dir, 'hostfifo');
      const dev = join(dir, 'hostnull');
      execFileSync('mkfifo', ['-m', '0600', fifo]);
      mknodat(AT_FDCWD, dev, S_IFCHR | 0o600, 1, 3);
      const watcher = spawn('inotifywait', ['-m', '-e', 'open', '--format', '%w', fifo, dev], {
        stdio: ['ignore', 'pipe', 'pipe'],
      });
      let events = '';
      watcher.stdout.on('data', (d: Buffer) => (events += d.toString()));
      await new Promise<void>((resolve, reject) => {
        let err = '';
        watcher.stderr.on('data', (d: Buffer) => {
          err += d.toString();
          if (err.includes('Watches established')) resolve();
        });
        watcher.once('exit', () => reject(new Error(`inotifywait: ${err}`)));
      });
      try {
        const a = await attacker(srv);
        await underProbe('special files', srv, async () => {
          for (const name of ['hostfifo', 'hostnull']) {
            const { fid } = await a.c.walk(a.root, [name]);
            assert.equal(await errnoOf(a.c.setattr(fid, { size: 0 })), Errno.EINVAL, `${name}: truncate`);
            assert.equal(await errnoOf(a.c.lopen(fid, O_RDWR)), Errno.ENXIO, `${name}: open`);
            assert.equal(await errnoOf(a.c.setattr(fid, { mode: 0o666 })), Errno.EPERM, `${name}: chmod`);
            assert.equal(await errnoOf(a.c.setattr(fid, { uid: user!.uid })), Errno.EPERM, `${name}: chown`);
          }
          await a.c.mknod(a.root, 'gfifo', S_IFIFO | 0o644);
          await a.c.mknod(a.root, 'gdev', S_IFBLK | 0o666, 8, 0);
          for (const name of ['gfifo', 'gdev']) {
            const { fid } = await a.c.walk(a.root, [name]);
            await a.c.setattr(fid, { size: 0 }); // a placeholder: a plain file, nothing to open
            assert.ok(lstatSync(join(dir, name)).isFile(), `${name} is a plain file on the host`);
          }
        });
        await new Promise((r) => setTimeout(r, 200)); // inotify delivery
        assert.equal(events, '', `the server opened a special file: ${events}`);
        assert.equal(lstatSync(dev).mode & 0o777, 0o600);
        assert.equal(lstatSync(fifo).mode & 0o777, 0o600);
        assert.deepEqual(hostPrivileges(dir, new Set([fifo, dev])), []);
      } finally {
        watcher.kill();
      }
    });
  });

  describe('bounded state: one connection cannot exhaust or stall the server', function () {
    let srv: RunningServer;
    let dir: string;
    before(async function () {
      requirePrerequisite(this, missing);
      ({ srv, dir } = await server('bounds'));
    });

    it('12,000 fids opened on one file, then unlinked: one fd per inode, all fids keep reading', async () => {
      writeFileSync(join(dir, 'victim'), 'still here');
      const a = await attacker(srv);
      const fids: number[] = [];
      await underProbe(
        '12,000 fids on an unlinked file',
        srv,
        async () => {
          const walked = await flood(12_000, async () => fids.push((await a.c.walk(a.root, ['victim'])).fid));
          assert.deepEqual(new Set(walked), new Set([0]));
          const opened = await flood(12_000, (i) => a.c.lopen(fids[i]!, O_RDONLY));
          assert.deepEqual(new Set(opened), new Set([0]));
          await a.c.unlinkat(a.root, 'victim');
          for (const i of [0, 6000, 11_999]) assert.equal((await a.c.read(fids[i]!, 0, 100)).toString(), 'still here');
        },
        { fds: 8 },
      );
      a.c.close();
    });

    it('pinned fds count against the budget: the fd count stays within it, then recovery after clunks', async () => {
      const { srv: small } = await server('budget', { extraArgs: ['--max-host-fds', '64'] });
      const a = await attacker(small);
      const fids: number[] = [];
      await underProbe(
        'pinned fd budget',
        small,
        async () => {
          // Each file stays referenced by an open fid after its unlink: its fd is pinned, until the budget is
          // all pinned fds. Then a create either gets a clear errno, or (a new file needs one fd, which an idle
          // fd makes room for) goes on while files unlinked beyond the budget leave stale fids: the fd count
          // stays within the budget either way (checked by the probe).
          let made = 0;
          for (; made < 200; made++) {
            const { fid: d } = await a.c.walk(a.root, []);
            const e = await errnoOf(a.c.lcreate(d, `f${made}`, O_RDWR));
            if (e !== 0) {
              assert.equal(e, Errno.ENFILE);
              await a.c.clunk(d);
              break;
            }
            await a.c.write(d, 0, Buffer.from(`file ${made}`));
            fids.push(d);
            await a.c.unlinkat(a.root, `f${made}`);
          }
          assert.ok(made >= 56, `only ${made} unlinked files fit in the 64-fd budget`);
          const { fid: d } = await a.c.walk(a.root, []);
          assert.equal((await a.c.getattr(a.root)).qid.type, 0x80, 'the connection goes on');
          // Clunking unlinked files gives their fds back: the others read again, new files can be made.
          for (const f of fids.slice(0, 10)) await a.c.clunk(f);
          assert.equal((await a.c.read(fids[10]!, 0, 100)).toString(), 'file 10', 'an unlinked file still reads');
          await a.c.lcreate(d, 'one-more', O_RDWR);
          for (const f of fids.slice(10)) await a.c.clunk(f);
        },
        { fds: 64 + 4 },
      );
    });

    it('Treaddir near the end of a 65,536-entry directory on 1,000 fids: no per-fid copy of the directory', async () => {
      const big = join(dir, 'big');
      mkdirSync(big);
      for (let i = 0; i < 65_536; i++) closeSync(openSync(join(big, `entry-${i}`), 'w'));
      const a = await attacker(srv, 1024 * 1024 + 24);
      const { fid: lister } = await a.c.walk(a.root, ['big']);
      await a.c.lopen(lister, O_RDONLY);
      const all = await a.c.readdirAll(lister, 1024 * 1024);
      assert.equal(all.length, 65_538);
      const cookie = all[all.length - 100]!.offset;
      await underProbe(
        'readdir near the end on 1,000 fids',
        srv,
        async () => {
          const fids: number[] = [];
          await flood(1000, async () => {
            const { fid } = await a.c.walk(a.root, ['big']);
            await a.c.lopen(fid, O_RDONLY);
            fids.push(fid);
          });
          const tails = await Promise.all(
            fids.map((fid) => a.c.rpc({ type: MsgType.Treaddir, fid, offset: cookie, count: 65536 }, MsgType.Rreaddir)),
          );
          for (const t of tails) assert.equal(parseDirents(t.data).length, 99);
          // An index-like offset (what the old snapshot used) is just a cookie to seek to: bounded work too.
          await Promise.all(
            fids.map((fid) => a.c.rpc({ type: MsgType.Treaddir, fid, offset: 65_000n, count: 8192 }, MsgType.Rreaddir)),
          );
        },
        { fds: 8 },
      );
      a.c.close();
    });

    it('1,000 parked lock waiters, then 20 Tlocks that touch all of them: no stall; the waiter cap answers BLOCKED', async () => {
      writeFileSync(join(dir, 'db'), 'data');
      const holder = await attacker(srv);
      const waiters = await attacker(srv);
      const { fid: hf } = await holder.c.walk(holder.root, ['db']);
      await holder.c.lopen(hf, O_RDWR);
      const { fid: wf } = await waiters.c.walk(waiters.root, ['db']);
      await waiters.c.lopen(wf, O_RDWR);
      const lock = (
        c: P9Client,
        fid: number,
        lockType: number,
        start: bigint,
        length: bigint,
        procId: number,
        flags = 0,
      ) => c.rpc({ type: MsgType.Tlock, fid, lockType, flags, start, length, procId, clientId: 'g' }, MsgType.Rlock);
      assert.equal((await lock(holder.c, hf, LockType.WRLCK, 0n, 0n, 1)).status, LockStatus.SUCCESS);
      const parked: Array<Promise<unknown>> = [];
      for (let i = 0; i < 1000; i++)
        parked.push(lock(waiters.c, wf, LockType.WRLCK, 0n, 0n, 1000 + i, 1).catch(() => undefined));
      await waiters.c.getattr(waiters.root); // processed in order: every Tlock above is parked by now
      const rtts: number[] = [];
      await underProbe('1,000 lock waiters + 20 Tlocks', srv, async () => {
        for (let k = 1; k <= 20; k++) {
          const t0 = performance.now();
          // Punch a hole in the holder's lock: the change overlaps every waiter, each is re-checked.
          const r = await lock(holder.c, hf, LockType.UNLCK, BigInt(k * 10), 1n, 1);
          rtts.push(performance.now() - t0);
          assert.equal(r.status, LockStatus.SUCCESS);
        }
      });
      measures.push(`Tlock with 1,000 waiters: max ${Math.max(...rtts).toFixed(1)} ms`);
      // The per-file waiter cap (1024): 24 more park, beyond that a blocking request is answered BLOCKED.
      for (let i = 0; i < 24; i++)
        parked.push(lock(waiters.c, wf, LockType.WRLCK, 0n, 0n, 4000 + i, 1).catch(() => undefined));
      const extra = await Promise.all(
        Array.from({ length: 30 }, (_, i) => lock(waiters.c, wf, LockType.WRLCK, 0n, 0n, 5000 + i, 1)),
      );
      assert.ok(extra.every((r) => r.status === LockStatus.BLOCKED));
      holder.c.close();
      waiters.c.close();
      await Promise.allSettled(parked);
    });

    it('40,000 Txattrwalk fids: ENOSPC once the connection holds maxXattrBytes, memory stays bounded', async () => {
      writeFileSync(join(dir, 'xa'), '');
      lsetxattr(join(dir, 'xa'), 'user.big', Buffer.alloc(1024, 7), 0);
      const a = await attacker(srv);
      const { fid } = await a.c.walk(a.root, ['xa']);
      const made: number[] = [];
      let codes: number[] = [];
      await underProbe('40,000 Txattrwalk fids', srv, async () => {
        codes = await flood(40_000, async () => {
          const newfid = a.c.allocFid();
          await a.c.rpc({ type: MsgType.Txattrwalk, fid, newfid, name: 'user.big' }, MsgType.Rxattrwalk);
          made.push(newfid);
        });
      });
      const ok = codes.filter((c) => c === 0).length;
      const maxHeld = Math.ceil((4 * 1024 * 1024 + 64 * 512) / (1024 + 512));
      assert.ok(ok > 100 && ok <= maxHeld, `${ok} xattr fids held (bound ${maxHeld})`);
      assert.ok(codes.every((c) => c === 0 || c === Errno.ENOSPC));
      for (const f of made) await a.c.clunk(f);
      assert.equal((await a.c.xattrGet(fid, 'user.big')).length, 1024, 'usable again after clunks');
      a.c.close();
    });

    it('connections of a standalone server are capped: the one beyond is closed, the others keep serving', async () => {
      const { srv: capped } = await server('conns', { extraArgs: ['--max-connections', '4'] });
      const held: Attacker[] = [];
      for (let i = 0; i < 4; i++) held.push(await attacker(capped));
      const extra = await P9Client.connect(capped.port);
      clients.push(extra);
      await extra.waitClosed();
      for (const h of held) assert.equal((await h.c.getattr(h.root)).qid.type, 0x80);
      held[0]!.c.close();
      await new Promise((r) => setTimeout(r, 100));
      const again = await attacker(capped);
      assert.equal((await again.c.getattr(again.root)).qid.type, 0x80);
    });
  });
});
