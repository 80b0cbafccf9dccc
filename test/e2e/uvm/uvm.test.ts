// End to end with the default sandbox backend: a private containerd, our runtime with no sandbox configured,
// so every pod is a QEMU utility VM (KVM if it works here, else TCG). Boots are the cost under TCG, so the
// suite boots one UVM: one pod that every container and exec below joins (same sandbox-id). Crashes (QEMU
// killed, under load) are in faults.test.ts.
import assert from 'node:assert/strict';
import { execFileSync, spawn } from 'node:child_process';
import {
  closeSync,
  constants,
  existsSync,
  mkdirSync,
  mkdtempSync,
  openSync,
  readFileSync,
  readdirSync,
  rmSync,
  statSync,
  writeFileSync,
} from 'node:fs';
import net from 'node:net';
import { release, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Status } from '../../../src/gen/containerd/types/task/task_pb.js';
import { startContainerd, leftovers, type PrivateContainerd } from '../../helpers/containerd.js';
import { importTestImage } from '../../helpers/image.js';
import { bundleDir, ctrOnPty, nsMeta, taskClient } from '../../integration/shim/helpers.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';
import { qemuPidsOfPod, shimPids, waitFor } from '../../helpers/host-state.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../..');
const RUNTIME = 'io.containerd.lcow.v1';
const SANDBOX_ID = 'io.kubernetes.cri.sandbox-id';
// Our own namespace and ids: other people may run lcow shims and UVMs on this host at the same time.
const NS = `lcow-e2e-${process.pid}`;
const POD = `uvm-pod-${process.pid}`;

const ourQemus = (): number[] => qemuPidsOfPod(POD);

const ourShims = (): number[] => shimPids(NS);

/** Waits in the container until `stty size` shows ROWS COLS (or 10 s), prints it as TAG:<size>. */
const awaitSize = (tag: string, size: string): string =>
  `i=0; while [ "$(stty size)" != "${size}" ] && [ $i -lt 100 ]; do sleep 0.1; i=$((i+1)); done; echo "${tag}:$(stty size)"`;
const TTY_SCRIPT = `${awaitSize('A', '30 100')}; read x; ${awaitSize('B', '40 120')}; exit 5`;

const unavailable = ((): string | undefined => {
  if (!existsSync(join(ROOT, 'build/guest/initrd.img'))) return 'no guest image (make guest)';
  if (!existsSync('/usr/bin/qemu-system-x86_64')) return 'no qemu-system-x86_64';
  if (process.getuid?.() !== 0) return 'needs root';
  return undefined;
})();

describe('e2e: QEMU utility VM (default sandbox backend)', function () {
  this.timeout(300_000);
  let cd: PrivateContainerd;
  let image: string;
  let hostDir: string;
  const guestKernel = existsSync(join(ROOT, 'build/guest/kernel-version'))
    ? readFileSync(join(ROOT, 'build/guest/kernel-version'), 'utf8').trim()
    : '';
  const inPod = ['--annotation', `${SANDBOX_ID}=${POD}`];

  const removeTask = async (id: string): Promise<void> => {
    await cd.ctr(['task', 'kill', '-s', 'KILL', id]);
    await waitFor(
      async () => new RegExp(`${id}\\s+\\d+\\s+STOPPED`).test((await cd.ctr(['task', 'ls'])).stdout),
      30_000,
    );
    await cd.ctr(['task', 'delete', id]);
    await cd.ctr(['container', 'rm', id]);
  };

  before(async function () {
    requirePrerequisite(this, unavailable);
    cd = await startContainerd({ extraPath: [join(ROOT, 'bin')], logLevel: 'info', namespace: NS });
    image = await importTestImage(cd.address, cd.namespace);
    hostDir = mkdtempSync(join(tmpdir(), 'lcow-e2e-uvm-'));
    // The shared pod: its sandbox container keeps the UVM up for every test below.
    const p = await cd.ctr(['run', '-d', '--runtime', RUNTIME, ...inPod, image, POD, 'sleep', '3600'], {
      timeoutMs: 240_000,
    });
    assert.equal(p.code, 0, `${p.stderr}\n${cd.log().slice(-3000)}`);
  });

  after(async function () {
    if (unavailable) return;
    if (cd) {
      await removeTask(POD).catch(() => undefined);
      assert.equal(await waitFor(() => qemuPidsOfPod(POD).length === 0, 30_000), true, 'UVM left after the pod');
    }
    await cd?.stop();
    if (hostDir) rmSync(hostDir, { recursive: true, force: true });
    rmSync(`/var/log/lcow/${NS}`, { recursive: true, force: true }); // the pods' kept console and agent logs
    assert.deepEqual(leftovers(), []);
    assert.equal(await waitFor(() => ourQemus().length === 0, 20_000), true, 'a QEMU UVM was left running');
    assert.deepEqual(ourShims(), [], 'a shim was left running');
    // The shim keeps /run/lcow/<ns> across pods (as runc keeps its root); this run's namespace must not outlive it.
    const stateRoot = `/run/lcow/${NS}`;
    if (existsSync(stateRoot)) {
      assert.deepEqual(readdirSync(stateRoot), [], 'pod state left behind');
      rmSync(stateRoot, { recursive: true });
    }
  });

  const run = (args: string[], input?: string) =>
    cd.ctr(['run', '--rm', '--runtime', RUNTIME, ...inPod, ...args], { timeoutMs: 240_000, input });

  it('ctr run --rm uname -r prints the guest kernel, not the host one; exit code passes through', async function () {
    const r = await run([image, 'uvm-uname', 'sh', '-c', 'uname -r; exit 7']);
    assert.equal(r.code, 7, `ctr: ${r.stderr}\n${cd.log().slice(-3000)}`);
    assert.equal(r.stdout.trim(), guestKernel);
    assert.notEqual(r.stdout.trim(), release());
  });

  it('a bind mount carries files both ways over 9P', async function () {
    writeFileSync(join(hostDir, 'from-host.txt'), 'host data\n');
    const r = await run([
      '--mount',
      `type=bind,src=${hostDir},dst=/data,options=rbind:rw`,
      image,
      'uvm-bind',
      'sh',
      '-c',
      'cat /data/from-host.txt; echo written-in-guest > /data/from-guest.txt; ls /data',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /host data/);
    assert.equal(readFileSync(join(hostDir, 'from-guest.txt'), 'utf8'), 'written-in-guest\n');
  });

  it('what a container writes to its rootfs (cache=loose: written back at unmount) is in its snapshot once it stopped', async function () {
    const id = `uvm-rootfs-${process.pid}`;
    // Its own pod, with the rootfs on cache=loose (opt-in: rootfs_share_cache), the mode that holds dirty pages.
    const config = join(hostDir, 'rootfs-loose.toml');
    writeFileSync(config, 'rootfs_share_cache = "loose"\n');
    // 4 MiB of dirty pages, a small file renamed over another and a mode change, then exit at once: the periodic
    // writeback (30 s) has not run: the agent syncs the share before unmounting it at task delete.
    const script =
      'dd if=/dev/zero bs=64k count=64 2>/dev/null | tr "\\0" "r" > /big && echo new > /tmp.new && ' +
      'echo old > /kept && mv /tmp.new /kept && chmod 0600 /kept && echo done && awk \'$2 == "/"\' /proc/mounts';
    try {
      const r = await cd.ctr(
        ['run', '--runtime', RUNTIME, '--runtime-config-path', config, image, id, 'sh', '-c', script],
        { timeoutMs: 240_000 },
      );
      assert.equal(r.code, 0, r.stderr);
      const [done, root] = r.stdout.trim().split('\n');
      assert.equal(done, 'done');
      // The root is the snapshot's 9P share, mounted by the guest kernel with the configured rootfs cache mode.
      assert.match(root ?? '', /^\S+ \/ 9p \S*[,=]loose\b/, `root mount: ${root}`);
      // `ctr run` deleted the task (the share is gone); the container and its snapshot stay: read its upper dir.
      const m = await cd.ctr(['snapshots', 'mounts', '/mnt', id]);
      assert.equal(m.code, 0, m.stderr);
      const upper = /upperdir=([^,\s]+)/.exec(m.stdout)?.[1];
      assert.ok(upper, `no upperdir in ${m.stdout}`);
      const big = readFileSync(join(upper, 'big'));
      assert.equal(big.length, 4 << 20);
      assert.ok(
        big.every((b) => b === 0x72),
        'the big file has bytes that were not written',
      );
      assert.equal(readFileSync(join(upper, 'kept'), 'utf8'), 'new\n');
      assert.equal(statSync(join(upper, 'kept')).mode & 0o777, 0o600);
      assert.equal(existsSync(join(upper, 'tmp.new')), false);
    } finally {
      await cd.ctr(['task', 'delete', '-f', id]).catch(() => undefined);
      await cd.ctr(['container', 'rm', id]);
    }
  });

  it('a single-file bind mount (ro) shows the file and refuses writes (siblings: test/integration/shim/uvm-fs)', async function () {
    const etc = join(hostDir, 'file-mount');
    mkdirSync(etc, { recursive: true });
    writeFileSync(join(etc, 'app.conf'), 'setting=1\n');
    writeFileSync(join(etc, 'sibling.key'), 'not shared');
    const r = await run([
      '--mount',
      `type=bind,src=${join(etc, 'app.conf')},dst=/etc/app.conf,options=rbind:ro`,
      image,
      'uvm-file',
      'sh',
      '-c',
      'cat /etc/app.conf; (echo x > /etc/app.conf) 2>/dev/null && echo WRITABLE || echo read-only',
    ]);
    assert.equal(r.code, 0, r.stderr);
    assert.match(r.stdout, /setting=1/);
    assert.match(r.stdout, /read-only/);
    assert.equal(readFileSync(join(etc, 'app.conf'), 'utf8'), 'setting=1\n');
  });

  it('containers of one pod (same sandbox-id) share one UVM; exec works in it', async function () {
    assert.equal(qemuPidsOfPod(POD).length, 1);
    const b = await run([image, 'uvm-second', 'sh', '-c', 'uname -r']);
    assert.equal(b.code, 0, b.stderr);
    assert.equal(b.stdout.trim(), guestKernel);
    assert.equal(qemuPidsOfPod(POD).length, 1, 'the second container must not boot another UVM');
    const e = await cd.ctr(['task', 'exec', '--exec-id', 'e1', POD, 'sh', '-c', 'echo exec-ok; exit 3']);
    assert.equal(e.code, 3, e.stderr);
    assert.equal(e.stdout.trim(), 'exec-ok');
  });

  it('stdin: ctr task exec with piped stdin reaches cat in the guest; EOF (CloseIO) ends it', async function () {
    const e = await cd.ctr(['task', 'exec', '--exec-id', 'cat1', POD, 'sh', '-c', 'cat; echo eof'], {
      input: 'through the uvm\n'.repeat(1000),
      timeoutMs: 60_000,
    });
    assert.equal(e.code, 0, e.stderr);
    assert.equal(e.stdout, 'through the uvm\n'.repeat(1000) + 'eof\n');
  });

  // ctr 1.6 `run` reads its stdin from the moment the task's fifos exist, but installs its CloseIO-on-EOF hook
  // only once Create returned (containerd/containerd#4489): input that is complete before that never gets
  // CloseIO and `cat` waits forever, with io.containerd.runc.v2 just the same. Input that arrives once the
  // task runs gets the CloseIO.
  it('stdin: ctr run with stdin arriving after start: cat echoes it and exits on EOF', async function () {
    const child = spawn(
      'ctr',
      [
        '--address',
        cd.address,
        '--namespace',
        NS,
        'run',
        '--rm',
        '--runtime',
        RUNTIME,
        ...inPod,
        image,
        'uvm-cat',
        'cat',
      ],
      { stdio: ['pipe', 'pipe', 'pipe'] },
    );
    child.stdin.on('error', () => undefined);
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const closed = new Promise<number | null>((r) => child.on('close', (code) => r(code)));
    try {
      const running = await waitFor(
        async () => /uvm-cat\s+\d+\s+RUNNING/.test((await cd.ctr(['task', 'ls'])).stdout),
        120_000,
      );
      assert.ok(running, `uvm-cat never ran: ${err}`);
      child.stdin.end('late input\n');
      const code = await Promise.race([closed, new Promise((r) => setTimeout(() => r('timeout'), 60_000))]);
      assert.equal(code, 0, `ctr: ${err}`);
      assert.equal(out, 'late input\n');
    } finally {
      if (child.exitCode !== 0) {
        child.kill('SIGKILL');
        await removeTask('uvm-cat').catch(() => undefined);
      }
    }
  });

  it('stdin: our ttrpc client creates a task with our fifos, writes, CloseIO gives cat EOF', async function () {
    const podBundle = bundleDir(cd, POD);
    const spec = JSON.parse(readFileSync(join(podBundle, 'config.json'), 'utf8')) as {
      process: { args: string[]; terminal?: boolean };
      root: { path: string; readonly?: boolean };
      linux?: { cgroupsPath?: string };
    };
    const tmp = mkdtempSync(join(tmpdir(), 'lcow-e2e-stdin-'));
    const id = 'uvm-ttrpc-cat';
    const bundle = join(tmp, 'bundle');
    execFileSync('mkdir', ['-p', bundle]);
    spec.process.args = ['cat'];
    spec.process.terminal = false;
    // The pod's rootfs as mounted on the host by the shim: shared read-only into the same UVM.
    spec.root = { path: join(podBundle, 'rootfs'), readonly: true };
    if (spec.linux?.cgroupsPath) spec.linux.cgroupsPath = spec.linux.cgroupsPath.replace(new RegExp(`${POD}$`), id);
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
    const stdin = join(tmp, 'stdin');
    const stdout = join(tmp, 'stdout');
    execFileSync('mkfifo', [stdin, stdout]);
    const outSock = new net.Socket({
      fd: openSync(stdout, constants.O_RDONLY | constants.O_NONBLOCK),
      writable: false,
    });
    let output = '';
    outSock.on('data', (d: Buffer) => (output += d.toString()));
    const { task, client } = await taskClient(cd, POD);
    const md = nsMeta(cd);
    try {
      await task.create({ id, bundle, stdin, stdout, terminal: false }, md);
      await task.start({ id }, md);
      const exited = task.wait({ id }, md);
      const w = openSync(stdin, constants.O_WRONLY | constants.O_NONBLOCK);
      writeFileSync(w, 'hello uvm\n');
      closeSync(w);
      assert.ok(await waitFor(() => output.includes('hello uvm'), 30_000), `stdout: ${JSON.stringify(output)}`);
      // Our writer is closed; the shim's keepalive writer keeps cat reading until CloseIO (as runc's shim).
      await new Promise((r) => setTimeout(r, 500));
      assert.equal((await task.state({ id }, md)).status, Status.RUNNING);
      await task.closeIO({ id, stdin: true }, md);
      const w8 = await Promise.race([
        exited,
        new Promise<never>((_, j) => setTimeout(() => j(new Error('no exit')), 60_000)),
      ]);
      assert.equal(w8.exitStatus, 0);
      assert.equal(output, 'hello uvm\n');
      assert.equal((await task.delete({ id }, md)).exitStatus, 0);
    } finally {
      await task.kill({ id, signal: 9 }, md).catch(() => undefined);
      await task.delete({ id }, md).catch(() => undefined);
      client.close();
      outSock.destroy();
      rmSync(tmp, { recursive: true, force: true });
    }
  });

  it('tty: ctr run -t in the UVM: output, resize reaches stty size, exit code', async function () {
    const r = await ctrOnPty(
      cd,
      ['run', '--rm', '-t', '--runtime', RUNTIME, ...inPod, image, 'uvm-tty', 'sh', '-c', TTY_SCRIPT],
      [30, 100],
      [40, 120],
    );
    assert.match(r.output, /A:30 100\r*\n/, r.output);
    assert.match(r.output, /B:40 120\r*\n/, r.output);
    assert.equal(r.code, 5, r.output);
  });

  it('tty: ctr task exec -t in the UVM: the same through an exec', async function () {
    const r = await ctrOnPty(
      cd,
      ['task', 'exec', '-t', '--exec-id', 'tty1', POD, 'sh', '-c', TTY_SCRIPT],
      [30, 100],
      [40, 120],
    );
    assert.match(r.output, /A:30 100\r*\n/, r.output);
    assert.match(r.output, /B:40 120\r*\n/, r.output);
    assert.equal(r.code, 5, r.output);
  });
});
