// End to end with the default sandbox backend: a private containerd, our runtime with no sandbox configured,
// so every pod is a QEMU utility VM (KVM if it works here, else TCG). Each `ctr run` of a new container id
// boots a UVM; the same-pod test boots one for two containers.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { release, tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startContainerd, leftovers, type PrivateContainerd } from '../../helpers/containerd.js';
import { importTestImage } from '../../helpers/image.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../..');
const RUNTIME = 'io.containerd.lcow.v1';
const SANDBOX_ID = 'io.kubernetes.cri.sandbox-id';

function qemuPids(name?: string): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      const cmd = readFileSync(`/proc/${p}/cmdline`, 'utf8').split('\0');
      if (!cmd[0]?.startsWith('qemu-system')) continue;
      const n = cmd[cmd.indexOf('-name') + 1] ?? '';
      if (name ? n === `lcow-${name}` : n.startsWith('lcow-')) out.push(Number(p));
    } catch {
      // gone
    }
  }
  return out;
}

function shimPids(): number[] {
  const out: number[] = [];
  for (const p of readdirSync('/proc')) {
    if (!/^\d+$/.test(p)) continue;
    try {
      if (readFileSync(`/proc/${p}/cmdline`, 'utf8').includes('containerd-shim-lcow-v1')) out.push(Number(p));
    } catch {
      // gone
    }
  }
  return out;
}

async function waitFor(cond: () => boolean | Promise<boolean>, ms: number): Promise<boolean> {
  const end = Date.now() + ms;
  while (Date.now() < end) {
    if (await cond()) return true;
    await new Promise((r) => setTimeout(r, 200));
  }
  return cond();
}

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

  before(async function () {
    if (unavailable) this.skip();
    cd = await startContainerd({ extraPath: [join(ROOT, 'bin')], logLevel: 'info' });
    image = await importTestImage(cd.address, cd.namespace);
    hostDir = mkdtempSync(join(tmpdir(), 'lcow-e2e-uvm-'));
  });

  after(async function () {
    if (unavailable) return;
    await cd?.stop();
    if (hostDir) rmSync(hostDir, { recursive: true, force: true });
    assert.deepEqual(leftovers(), []);
    assert.deepEqual(await waitFor(() => qemuPids().length === 0, 20_000), true, 'a QEMU UVM was left running');
    assert.deepEqual(shimPids(), [], 'a shim was left running');
  });

  const run = (args: string[], input?: string) =>
    cd.ctr(['run', '--rm', '--runtime', RUNTIME, ...args], { timeoutMs: 240_000, input });

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

  it('two containers of one pod (same sandbox-id) share one UVM; exec works in it', async function () {
    const ann = `${SANDBOX_ID}=pod-a`;
    const a = await cd.ctr(['run', '-d', '--runtime', RUNTIME, '--annotation', ann, image, 'pod-a', 'sleep', '600'], {
      timeoutMs: 240_000,
    });
    assert.equal(a.code, 0, a.stderr);
    try {
      assert.equal(qemuPids('pod-a').length, 1);
      const b = await run(['--annotation', ann, image, 'pod-a-second', 'sh', '-c', 'uname -r']);
      assert.equal(b.code, 0, b.stderr);
      assert.equal(b.stdout.trim(), guestKernel);
      assert.equal(qemuPids().length, 1, 'the second container must not boot another UVM');
      const e = await cd.ctr(['task', 'exec', '--exec-id', 'e1', 'pod-a', 'sh', '-c', 'echo exec-ok; exit 3']);
      assert.equal(e.code, 3, e.stderr);
      assert.equal(e.stdout.trim(), 'exec-ok');
    } finally {
      await cd.ctr(['task', 'kill', '-s', 'KILL', 'pod-a']);
      await waitFor(async () => (await cd.ctr(['task', 'ls'])).stdout.includes('STOPPED'), 30_000);
      await cd.ctr(['task', 'delete', 'pod-a']);
      await cd.ctr(['container', 'rm', 'pod-a']);
    }
    assert.equal(await waitFor(() => qemuPids('pod-a').length === 0, 30_000), true, 'UVM left after the pod');
  });

  it('SIGKILL of QEMU ends the tasks (ctr sees the exit); delete leaves nothing behind', async function () {
    const a = await cd.ctr(['run', '-d', '--runtime', RUNTIME, image, 'uvm-crash', 'sleep', '600'], {
      timeoutMs: 240_000,
    });
    assert.equal(a.code, 0, a.stderr);
    const [pid] = qemuPids('uvm-crash');
    assert.ok(pid, 'no QEMU process for the pod');
    process.kill(pid, 'SIGKILL');
    const stopped = await waitFor(
      async () => /uvm-crash\s+\d+\s+STOPPED/.test((await cd.ctr(['task', 'ls'])).stdout),
      30_000,
    );
    assert.ok(stopped, (await cd.ctr(['task', 'ls'])).stdout);
    const d = await cd.ctr(['task', 'delete', 'uvm-crash']);
    assert.equal(d.code, 0, d.stderr);
    await cd.ctr(['container', 'rm', 'uvm-crash']);
    assert.equal(await waitFor(() => shimPids().length === 0, 20_000), true, 'the shim did not exit');
    const mounts = readFileSync('/proc/mounts', 'utf8')
      .split('\n')
      .filter((l) => l.includes(cd.dir));
    assert.deepEqual(mounts, []);
    assert.ok(!existsSync(join('/run/lcow', cd.namespace, 'uvm-crash')), 'sandbox state dir left');
  });
});
