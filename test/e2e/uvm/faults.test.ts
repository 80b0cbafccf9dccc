// Faults with a real containerd and the QEMU utility VM. Each test breaks something (QEMU, the guest agent,
// the guest kernel, the shim, containerd, the agent's answers, the host disk, the shim's socket) and then
// asserts that containerd sees a clear outcome and that nothing is left: processes (shim, QEMU), fds in the
// shim and in containerd, mounts, shim sockets, state dirs; and that data the container had fsync'ed on a bind
// mount is on the host.
//
// Boots cost 12-25 s under TCG: the non-destructive faults (containerd restarts, disk full, hostile client)
// share one pod, which the last of them (shim SIGKILLed while idle) ends. Every other pod is ended by its fault.
import assert from 'node:assert/strict';
import { execFileSync, type ChildProcess } from 'node:child_process';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import net from 'node:net';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Status } from '../../../src/gen/containerd/types/task/task_pb.js';
import { socketPath } from '../../../src/shim/address.js';
import { decodeResponse } from '../../../src/ttrpc/envelope.js';
import { decodeStatus } from '../../../src/ttrpc/errors.js';
import { Code } from '../../../src/ttrpc/index.js';
import { HEADER_LENGTH } from '../../../src/ttrpc/frame.js';
import { leftovers, startContainerd, type PrivateContainerd } from '../../helpers/containerd.js';
import {
  dirEntries,
  fdCount,
  fdTargets,
  mountsMatching,
  processesMentioning,
  qemuPids,
  shimPids,
  waitFor,
} from '../../helpers/host-state.js';
import { importTestImage } from '../../helpers/image.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';
import { bundleDir, nsMeta, taskClient } from '../../integration/shim/helpers.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../..');
const RUNTIME = 'io.containerd.lcow.v1';
const SANDBOX_ID = 'io.kubernetes.cri.sandbox-id';
const NS = `lcow-fault-${process.pid}`;
const PREFIX = `f${process.pid}-`;
const pod = (tag: string): string => `${PREFIX}${tag}`;
const ours = (id: string): boolean => id.startsWith(PREFIX);
/** How long the shim may take to notice a dead guest and report every task exited. */
const NOTICE_MS = 30_000;

const unavailable = ((): string | undefined => {
  if (!existsSync(join(ROOT, 'build/guest/initrd.img'))) return 'no guest image (make guest)';
  if (!existsSync('/usr/bin/qemu-system-x86_64')) return 'no qemu-system-x86_64';
  if (process.getuid?.() !== 0) return 'needs root';
  return undefined;
})();

interface ExitEvent {
  container: string;
  id: string;
  status: number;
}

describe('e2e faults: QEMU UVM with a real containerd', function () {
  this.timeout(300_000);
  let cd: PrivateContainerd;
  let image: string;
  let work: string;
  /** Shim socket paths seen while pods ran: each must be gone once its pod is. */
  const sockets = new Set<string>();

  const inPod = (id: string): string[] => ['--annotation', `${SANDBOX_ID}=${id}`];
  const runDetached = (podId: string, id: string, cmd: string[], extra: string[] = []) =>
    cd.ctr(['run', '-d', '--runtime', RUNTIME, ...inPod(podId), ...extra, image, id, ...cmd], {
      timeoutMs: 240_000,
    });
  const exec = (id: string, execId: string, script: string, timeoutMs = 60_000) =>
    cd.ctr(['task', 'exec', '--exec-id', execId, id, 'sh', '-c', script], { timeoutMs });
  const taskStatus = async (id: string): Promise<string | undefined> => {
    const ls = (await cd.ctr(['task', 'ls'])).stdout;
    return new RegExp(`^${id}\\s+\\d+\\s+(\\w+)`, 'm').exec(ls)?.[1];
  };
  const rememberSocket = (id: string): void => {
    const f = join(bundleDir(cd, id), 'address');
    if (existsSync(f)) sockets.add(socketPath(readFileSync(f, 'utf8').trim()));
  };
  const shimPidOf = (id: string): number => {
    const rec = JSON.parse(readFileSync(join(bundleDir(cd, id), 'lcow-sandbox.json'), 'utf8')) as { shimPid: number };
    return rec.shimPid;
  };

  /** `ctr events` for the length of one test: the /tasks/exit events containerd saw. */
  const watchExits = (): { exits: ExitEvent[]; stop: () => void } => {
    const exits: ExitEvent[] = [];
    const child: ChildProcess = cd.spawnCtr(['events']);
    let buf = '';
    child.stdout!.on('data', (d: Buffer) => {
      buf += d.toString();
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, nl);
        buf = buf.slice(nl + 1);
        const m = /\/tasks\/exit\s+(\{.*\})\s*$/.exec(line);
        if (!m) continue;
        const e = JSON.parse(m[1]!) as { container_id?: string; id?: string; exit_status?: number };
        exits.push({ container: e.container_id ?? '', id: e.id ?? '', status: e.exit_status ?? 0 });
      }
    });
    return { exits, stop: () => child.kill('SIGKILL') };
  };

  /** Everything a pod's end must leave behind: nothing. `cdFds` is containerd's fd count before the pod. */
  const assertPodGone = async (podId: string, containers: string[], cdFds: number): Promise<void> => {
    assert.ok(await waitFor(() => qemuPids((p) => p === podId).length === 0, 20_000), `QEMU of ${podId} left`);
    assert.ok(await waitFor(() => shimPids(NS).length === 0, 20_000), `shim left: ${shimPids(NS).join(' ')}`);
    assert.deepEqual(processesMentioning(`/run/lcow/${NS}/${podId}`), [], 'a process of the pod left');
    assert.ok(!existsSync(`/run/lcow/${NS}/${podId}`), `state dir of ${podId} left`);
    for (const c of containers)
      assert.deepEqual(mountsMatching(`v2.task/${NS}/${c}/`, `v2.task/${NS}/${c}`), [], `mounts of ${c} left`);
    assert.deepEqual(mountsMatching(`/run/lcow/${NS}/`), [], 'mounts under the state root left');
    for (const s of sockets) assert.ok(!existsSync(s), `shim socket ${s} left`);
    const ls = (await cd.ctr(['task', 'ls', '-q'])).stdout;
    for (const c of containers) assert.doesNotMatch(ls, new RegExp(`^${c}$`, 'm'), `task ${c} still listed`);
    const ok = await waitFor(() => fdCount(cd.pid) <= cdFds + 2, 15_000);
    assert.ok(ok, `containerd fds: ${fdCount(cd.pid)} now, ${cdFds} before:\n${fdTargets(cd.pid).join('\n')}`);
  };

  /** Kill (if still running), delete the task and the container; ignores what is already gone. */
  const remove = async (id: string): Promise<void> => {
    if ((await taskStatus(id)) === 'RUNNING') await cd.ctr(['task', 'kill', '-s', 'KILL', id]);
    await waitFor(async () => (await taskStatus(id)) !== 'RUNNING', 30_000);
    await cd.ctr(['task', 'delete', id]);
    await cd.ctr(['container', 'rm', id]);
  };

  before(async function () {
    requirePrerequisite(this, unavailable);
    cd = await startContainerd({ extraPath: [join(ROOT, 'bin')], logLevel: 'info', namespace: NS });
    image = await importTestImage(cd.address, cd.namespace);
    work = mkdtempSync(join(tmpdir(), 'lcow-e2e-faults-'));
  });

  after(async function () {
    if (unavailable) return;
    for (const p of qemuPids(ours)) process.kill(p, 'SIGKILL');
    for (const p of shimPids(NS)) process.kill(p, 'SIGKILL');
    await cd?.stop();
    for (const m of mountsMatching(work ?? '/nonexistent').reverse()) execFileSync('umount', ['-l', m]);
    if (work) rmSync(work, { recursive: true, force: true });
    assert.deepEqual(leftovers(), []);
    assert.deepEqual(qemuPids(ours), [], 'a QEMU UVM was left running');
    assert.deepEqual(shimPids(NS), [], 'a shim was left running');
    const stateRoot = `/run/lcow/${NS}`;
    if (existsSync(stateRoot)) {
      assert.deepEqual(dirEntries(stateRoot), [], 'pod state left behind');
      rmSync(stateRoot, { recursive: true });
    }
  });

  // ---- one pod through the non-destructive faults, ended by a shim SIGKILL ----
  const A = pod('a');
  const B = pod('a-disk');
  let cdFdsA = 0;

  it('containerd SIGKILLed and restarted while a pod boots: the pod survives, is listed and starts', async () => {
    // No stdio, as CRI creates a pod's sandbox container: nothing of the dead client is needed to finish Create.
    const run = cd.spawnCtr(['run', '-d', '--null-io', '--runtime', RUNTIME, ...inPod(A), image, A, 'sleep', '3600']);
    const runExit = new Promise<number | null>((r) => run.on('exit', (code) => r(code)));
    assert.ok(await waitFor(() => qemuPids((p) => p === A).length === 1, 60_000), 'the UVM never started');
    await cd.restart();
    await runExit; // ctr lost containerd mid-Create
    // The shim finishes the Create on its own; the restarted containerd reloads it and lists the task.
    assert.ok(
      await waitFor(async () => (await taskStatus(A)) === 'CREATED', 120_000),
      `${await taskStatus(A)}\n${(await cd.ctr(['task', 'ls'])).stdout}\n${cd.log().slice(-6000)}`,
    );
    rememberSocket(A);
    // ctr cannot start an existing task (`task start` creates one): start it as containerd would, over ttrpc.
    const { task, client } = await taskClient(cd, A);
    try {
      await task.start({ id: A }, nsMeta(cd));
      assert.equal((await task.state({ id: A }, nsMeta(cd))).status, Status.RUNNING);
    } finally {
      client.close();
    }
    assert.equal(await taskStatus(A), 'RUNNING');
    const e = await exec(A, 'x0', 'echo alive');
    assert.equal(e.code, 0, e.stderr);
    assert.equal(e.stdout.trim(), 'alive');
  });

  it('containerd SIGKILLed and restarted while the pod runs: listed, exec works, a new task joins', async () => {
    await cd.restart();
    assert.equal(await taskStatus(A), 'RUNNING');
    const e = await exec(A, 'x1', 'echo still-here');
    assert.equal(e.code, 0, e.stderr);
    assert.equal(e.stdout.trim(), 'still-here');
    assert.equal(qemuPids((p) => p === A).length, 1, 'the same UVM');
    cdFdsA = fdCount(cd.pid);
  });

  it('host disk full under a bind mount: ENOSPC in the container, the shim keeps serving, recovery when space returns', async () => {
    const small = join(work, 'small');
    mkdirSync(small);
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=4m,mode=0777', 'lcow-fault-tmpfs', small]);
    try {
      writeFileSync(join(small, 'keep'), 'kept before the disk filled\n');
      const r = await runDetached(
        A,
        B,
        ['sleep', '3600'],
        ['--mount', `type=bind,src=${small},dst=/data,options=rbind:rw`],
      );
      assert.equal(r.code, 0, r.stderr);
      const fill = await exec(B, 'fill', 'dd if=/dev/zero of=/data/fill bs=64k conv=fsync 2>&1; echo rc=$?');
      assert.match(fill.stdout, /No space left on device/, fill.stdout + fill.stderr);
      assert.match(fill.stdout, /rc=[1-9]/);
      // Still serving: containerd's calls, this pod's other task, and 9P reads on the full share.
      assert.equal(await taskStatus(A), 'RUNNING');
      const read = await exec(B, 'read', 'cat /data/keep; echo more >> /data/keep 2>&1 || echo write-refused');
      assert.equal(read.code, 0, read.stderr);
      assert.match(read.stdout, /kept before the disk filled/);
      const other = await exec(A, 'x2', 'echo pod-ok');
      assert.equal(other.stdout.trim(), 'pod-ok');
      // Space returns on the host: writes succeed again, fsync'ed data reaches the host.
      rmSync(join(small, 'fill'));
      const again = await exec(B, 'again', 'echo recovered > /data/after && busybox sync /data/after && echo synced');
      assert.equal(again.code, 0, again.stdout + again.stderr);
      assert.match(again.stdout, /synced/);
      assert.equal(readFileSync(join(small, 'after'), 'utf8'), 'recovered\n');
      // A task of the pod is killed and deleted after containerd's restarts.
      const k = await cd.ctr(['task', 'kill', '-s', 'KILL', B]);
      assert.equal(k.code, 0, k.stderr);
      assert.ok(await waitFor(async () => (await taskStatus(B)) === 'STOPPED', 30_000));
      assert.equal((await cd.ctr(['task', 'delete', B])).code, 0);
      assert.equal((await cd.ctr(['container', 'rm', B])).code, 0);
      assert.deepEqual(mountsMatching(`v2.task/${NS}/${B}`), []);
    } finally {
      await remove(B).catch(() => undefined);
      execFileSync('umount', ['-l', small]);
    }
    assert.ok(await waitFor(() => fdCount(cd.pid) <= cdFdsA + 2, 15_000), 'containerd fds grew');
  });

  it('a hostile client on the shim socket: garbage, oversized frames, thousands of connections, half-open ones', async () => {
    const path = socketPath(readFileSync(join(bundleDir(cd, A), 'address'), 'utf8').trim());
    const shim = shimPidOf(A);
    const fds0 = fdCount(shim);
    // A full accept queue answers connect() with EAGAIN (the kernel's backpressure, not the shim's): retry.
    const open = async (): Promise<net.Socket> => {
      for (let attempt = 0; ; attempt++) {
        try {
          return await new Promise<net.Socket>((res, rej) => {
            const s = net.connect(path);
            s.once('connect', () => res(s));
            s.once('error', rej);
          });
        } catch (err) {
          if ((err as NodeJS.ErrnoException).code !== 'EAGAIN' || attempt > 100) throw err;
          await new Promise((r) => setTimeout(r, 20));
        }
      }
    };
    const closed = (s: net.Socket, ms: number): Promise<boolean> =>
      new Promise((res) => {
        if (s.destroyed) return res(true);
        const t = setTimeout(() => res(false), ms);
        s.once('close', () => {
          clearTimeout(t);
          res(true);
        });
      });
    const serving = async (tag: string): Promise<void> => {
      const e = await exec(A, `h-${tag}`, `echo ${tag}`);
      assert.equal(e.code, 0, `${tag}: ${e.stderr}`);
      assert.equal(e.stdout.trim(), tag);
    };

    // Garbage: bytes that are not a ttrpc frame (the reserved first header byte set): the shim hangs up.
    const g = await open();
    g.on('error', () => undefined);
    g.write(Buffer.alloc(64, 0xff));
    assert.equal(await closed(g, 10_000), true, 'the shim closes a connection that sends garbage');
    await serving('after-garbage');

    // An oversized frame: ResourceExhausted for that stream, the connection and the shim keep working.
    const o = await open();
    o.on('error', () => undefined);
    const reply = new Promise<Buffer>((res) => {
      let buf = Buffer.alloc(0);
      o.on('data', (d: Buffer) => {
        buf = Buffer.concat([buf, d]);
        if (buf.length >= HEADER_LENGTH && buf.length >= HEADER_LENGTH + buf.readUInt32BE(0))
          res(buf.subarray(HEADER_LENGTH, HEADER_LENGTH + buf.readUInt32BE(0)));
      });
    });
    const head = Buffer.alloc(HEADER_LENGTH);
    head.writeUInt32BE(5 << 20, 0);
    head.writeUInt32BE(1, 4);
    head.writeUInt8(1, 8);
    o.write(head);
    o.write(Buffer.alloc(5 << 20));
    const raw = decodeResponse(await reply).status;
    assert.ok(raw, 'an error status for the oversized request');
    const status = decodeStatus(raw);
    assert.equal(status.code, Code.RESOURCE_EXHAUSTED, status.message);
    o.destroy();
    await serving('after-oversized');

    // Thousands of connections at once, then all gone: containerd is served meanwhile, the fds come back.
    const many: net.Socket[] = [];
    try {
      for (let i = 0; i < 2000; i += 100) many.push(...(await Promise.all(Array.from({ length: 100 }, open))));
      for (const s of many) s.on('error', () => undefined);
      await serving('during-flood');
      // Half-open: a partial header, then nothing; a header promising 1 MiB, then a few bytes; then our FIN.
      many.slice(0, 500).forEach((s) => s.write(Buffer.from([0, 0, 0])));
      many.slice(500, 700).forEach((s) => {
        const h = Buffer.alloc(HEADER_LENGTH + 10);
        h.writeUInt32BE(1 << 20, 0);
        h.writeUInt32BE(3, 4);
        h.writeUInt8(1, 8);
        s.write(h);
      });
      many.slice(0, 700).forEach((s) => s.end());
      await serving('half-open');
    } finally {
      for (const s of many) s.destroy();
    }
    assert.ok(
      await waitFor(() => fdCount(shim) <= fds0 + 2, 20_000),
      `shim fds ${fdCount(shim)} after, ${fds0} before:\n${fdTargets(shim).join('\n')}`,
    );
    await serving('after-flood');
    assert.equal(await taskStatus(A), 'RUNNING');
  });

  it('the shim SIGKILLed while idle: containerd cleans the UVM and the pod up through `delete`', async () => {
    const shim = shimPidOf(A);
    process.kill(shim, 'SIGKILL');
    // containerd sees the shim go, runs `delete` for the bundle and drops the task.
    assert.ok(await waitFor(async () => (await taskStatus(A)) === undefined, 60_000), await taskStatus(A));
    assert.equal((await cd.ctr(['container', 'rm', A])).code, 0);
    await assertPodGone(A, [A, B], cdFdsA);
  });

  // ---- faults that end their pod ----

  it('QEMU SIGKILLed under load: the tasks exit 255, containerd sees it, fsync-acknowledged data is on the host', async () => {
    const C = pod('qemu-kill');
    const data = join(work, 'qemu-kill-data');
    mkdirSync(data);
    const out = join(work, 'qemu-kill.log');
    const cdFds = fdCount(cd.pid);
    const ev = watchExits();
    try {
      // Each record is written and fsync'ed; only then is it acknowledged on stdout (relayed to a host file).
      const writer =
        'i=0; while :; do i=$((i+1)); echo "rec $i" | dd of=/data/log oflag=append conv=notrunc,fsync 2>/dev/null || exit 9; echo "ack $i"; done';
      const r = await runDetached(
        C,
        C,
        ['sh', '-c', writer],
        ['--mount', `type=bind,src=${data},dst=/data,options=rbind:rw`, '--log-uri', `file://${out}`],
      );
      assert.equal(r.code, 0, r.stderr);
      rememberSocket(C);
      const acks = (): number[] =>
        existsSync(out) ? [...readFileSync(out, 'utf8').matchAll(/^ack (\d+)$/gm)].map((m) => Number(m[1])) : [];
      assert.ok(await waitFor(() => acks().length >= 20, 120_000), `too few acks: ${acks().length}`);
      const [qemu] = qemuPids((p) => p === C);
      process.kill(qemu!, 'SIGKILL');
      assert.ok(await waitFor(async () => (await taskStatus(C)) === 'STOPPED', NOTICE_MS), 'the task never stopped');
      assert.ok(await waitFor(() => ev.exits.some((e) => e.container === C), 10_000), 'containerd saw no exit');
      assert.deepEqual(
        ev.exits.filter((e) => e.container === C),
        [{ container: C, id: C, status: 255 }],
      );
      const acked = Math.max(...acks());
      const lines = readFileSync(join(data, 'log'), 'utf8').split('\n');
      for (let i = 1; i <= acked; i++) assert.equal(lines[i - 1], `rec ${i}`, `acknowledged record ${i} lost`);
      assert.equal((await cd.ctr(['task', 'delete', C])).code, 0);
      assert.equal((await cd.ctr(['container', 'rm', C])).code, 0);
    } finally {
      ev.stop();
      await remove(C).catch(() => undefined);
    }
    await assertPodGone(C, [C], cdFds);
  });

  /** A pod with a sleeping sandbox container and `killer` run privileged in it; every task must end. */
  const guestFault = async (tag: string, killer: string, extra: string[] = []): Promise<number> => {
    const P = pod(tag);
    const K = pod(`${tag}-x`);
    const cdFds = fdCount(cd.pid);
    const ev = watchExits();
    let noticedMs: number | undefined;
    try {
      const r = await runDetached(P, P, ['sleep', '3600']);
      assert.equal(r.code, 0, r.stderr);
      rememberSocket(P);
      const t0 = Date.now();
      const kLog = join(work, `${tag}-killer.log`);
      const k = await runDetached(
        P,
        K,
        ['sh', '-c', killer],
        ['--privileged', '--log-uri', `file://${kLog}`, ...extra],
      );
      assert.equal(k.code, 0, k.stderr);
      const stopped = await waitFor(
        async () => (await taskStatus(P)) === 'STOPPED' && (await taskStatus(K)) === 'STOPPED',
        NOTICE_MS,
      );
      noticedMs = Date.now() - t0;
      assert.ok(
        stopped,
        `tasks still ${await taskStatus(P)} / ${await taskStatus(K)} after ${NOTICE_MS} ms; killer said: ` +
          (existsSync(kLog) ? readFileSync(kLog, 'utf8') : '(nothing)'),
      );
      assert.ok(await waitFor(() => ev.exits.filter((e) => e.container === P).length > 0, 10_000));
      assert.deepEqual(
        ev.exits.filter((e) => e.container === P),
        [{ container: P, id: P, status: 255 }],
      );
      assert.ok(await waitFor(() => qemuPids((p) => p === P).length === 0, 20_000), 'the UVM is still running');
      for (const id of [K, P]) {
        assert.equal((await cd.ctr(['task', 'delete', id])).code, 0);
        assert.equal((await cd.ctr(['container', 'rm', id])).code, 0);
      }
    } finally {
      ev.stop();
      await remove(K).catch(() => undefined);
      await remove(P).catch(() => undefined);
    }
    await assertPodGone(P, [P, K], cdFds);
    return noticedMs ?? -1;
  };

  it('the agent killed inside the guest: the shim notices within a bound and reports every task exited', async () => {
    const ms = await guestFault(
      'agent-kill',
      // In the guest's own pid namespace the agent is visible: find it by its script (the bracket keeps this
      // shell's own command line from matching).
      'sleep 1; for p in /proc/[0-9]*; do grep -q lcow-agent[.]js $p/cmdline 2>/dev/null && kill -9 ${p#/proc/} && echo killed ${p#/proc/}; done; sleep 60',
      ['--with-ns', 'pid:/proc/1/ns/pid'],
    );
    process.stderr.write(`      agent killed: every task reported exited after ${ms} ms\n`);
  });

  it('a guest kernel panic: the shim notices within a bound and reports every task exited', async () => {
    const ms = await guestFault('panic', 'sleep 1; echo c > /proc/sysrq-trigger; sleep 60');
    process.stderr.write(`      kernel panic: every task reported exited after ${ms} ms\n`);
  });

  it('an agent that never answers (VM frozen): State still answers, Kill works by stopping the VM, Delete cleans up', async () => {
    const F = pod('frozen');
    const cdFds = fdCount(cd.pid);
    const ev = watchExits();
    try {
      const r = await runDetached(F, F, ['sleep', '3600']);
      assert.equal(r.code, 0, r.stderr);
      rememberSocket(F);
      const [qemu] = qemuPids((p) => p === F);
      process.kill(qemu!, 'SIGSTOP');
      assert.equal(await taskStatus(F), 'RUNNING', 'State is answered by the shim alone');
      const k = await cd.ctr(['task', 'kill', '-s', 'TERM', F], { timeoutMs: 120_000 });
      assert.equal(k.code, 0, `kill: ${k.stderr}`);
      assert.ok(await waitFor(async () => (await taskStatus(F)) === 'STOPPED', NOTICE_MS));
      assert.ok(await waitFor(() => ev.exits.some((e) => e.container === F), 10_000), 'containerd saw no exit');
      assert.deepEqual(
        ev.exits.filter((e) => e.container === F),
        [{ container: F, id: F, status: 255 }],
      );
      assert.ok(await waitFor(() => qemuPids((p) => p === F).length === 0, 20_000), 'the frozen VM still exists');
      assert.equal((await cd.ctr(['task', 'delete', F])).code, 0);
      assert.equal((await cd.ctr(['container', 'rm', F])).code, 0);
    } finally {
      ev.stop();
      for (const p of qemuPids((p) => p === F)) process.kill(p, 'SIGKILL');
      await remove(F).catch(() => undefined);
    }
    await assertPodGone(F, [F], cdFds);
  });

  it('the shim SIGKILLed during Create (UVM booting): containerd cleans up through `delete`', async () => {
    const G = pod('kill-create');
    const cdFds = fdCount(cd.pid);
    const run = cd.spawnCtr(['run', '-d', '--runtime', RUNTIME, ...inPod(G), image, G, 'sleep', '3600']);
    const runExit = new Promise<number | null>((r) => run.on('exit', (code) => r(code)));
    try {
      assert.ok(await waitFor(() => qemuPids((p) => p === G).length === 1, 60_000), 'the UVM never started');
      rememberSocket(G);
      const shim = shimPidOf(G); // recorded before the boot
      process.kill(shim, 'SIGKILL');
      assert.notEqual(await runExit, 0, 'Create cannot succeed without its shim');
      assert.ok(await waitFor(async () => (await taskStatus(G)) === undefined, 60_000));
      await cd.ctr(['container', 'rm', G]);
    } finally {
      await remove(G).catch(() => undefined);
    }
    await assertPodGone(G, [G], cdFds);
  });

  it('the shim SIGKILLed during Start: containerd cleans the UVM and the pod up through `delete`', async () => {
    const H = pod('kill-start');
    const H2 = pod('kill-start-2');
    const cdFds = fdCount(cd.pid);
    const tmp = mkdtempSync(join(work, 'kill-start-'));
    try {
      const r = await runDetached(H, H, ['sleep', '3600']);
      assert.equal(r.code, 0, r.stderr);
      rememberSocket(H);
      // A second task of the pod, created over the shim's socket with the pod's own rootfs (read-only).
      const hb = bundleDir(cd, H);
      const spec = JSON.parse(readFileSync(join(hb, 'config.json'), 'utf8')) as {
        process: { args: string[]; terminal?: boolean };
        root: { path: string; readonly?: boolean };
        linux?: { cgroupsPath?: string };
      };
      spec.process.args = ['sleep', '600'];
      spec.process.terminal = false;
      spec.root = { path: join(hb, 'rootfs'), readonly: true };
      if (spec.linux?.cgroupsPath) spec.linux.cgroupsPath = spec.linux.cgroupsPath.replace(H, H2);
      const b2 = join(tmp, 'bundle');
      mkdirSync(b2);
      writeFileSync(join(b2, 'config.json'), JSON.stringify(spec));
      const { task, client } = await taskClient(cd, H);
      try {
        await task.create({ id: H2, bundle: b2, terminal: false }, nsMeta(cd));
        // Freeze the VM so the Start is certainly in flight (waiting on the agent) when the shim dies.
        const [qemu] = qemuPids((p) => p === H);
        process.kill(qemu!, 'SIGSTOP');
        const start = task.start({ id: H2 }, nsMeta(cd)).then(
          () => 'started',
          (e: Error) => e.message,
        );
        await new Promise((res) => setTimeout(res, 1500));
        process.kill(shimPidOf(H), 'SIGKILL');
        assert.notEqual(await start, 'started');
      } finally {
        client.close();
      }
      assert.ok(await waitFor(async () => (await taskStatus(H)) === undefined, 60_000), await taskStatus(H));
      assert.equal((await cd.ctr(['container', 'rm', H])).code, 0);
    } finally {
      for (const p of qemuPids((p) => p === H)) process.kill(p, 'SIGKILL');
      await remove(H).catch(() => undefined);
    }
    assert.deepEqual(mountsMatching(tmp), []);
    await assertPodGone(H, [H], cdFds);
  });
});
