// Operating a QEMU pod (real containerd, TCG): one traced `ctr run` with a bind mount is one connected trace
// from Task.Create through the UVM's boot phases, the shares' setup and the agent's RPCs down to `runc create`
// in the guest, its spans carried out of the guest over the control channel; lcowctl shows the pod, its
// metrics (9P per operation), its console, and runs a command in the UVM; the console stays readable after the
// pod is gone. Prints the trace (where a pod's start time goes).
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { startContainerd, leftovers, type PrivateContainerd } from '../../helpers/containerd.js';
import { importTestImage } from '../../helpers/image.js';
import { OtlpReceiver, traceTree } from '../../helpers/otlp-receiver.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';
import { lcowctl } from '../../helpers/lcowctl.js';
import { qemuPidsOfPod, waitFor } from '../../helpers/host-state.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../..');
const RUNTIME = 'io.containerd.lcow.v1';
const NS = `lcow-e2e-ops-${process.pid}`;
const POD = `uvm-ops-${process.pid}`;
const TRACE = `${process.pid.toString(16).padStart(8, '0')}${'e2e0ca11'.repeat(3)}`;
const CALLER_SPAN = '00f067aa0ba902b7';

const unavailable = ((): string | undefined => {
  if (!existsSync(join(ROOT, 'build/guest/initrd.img'))) return 'no guest image (make guest)';
  if (!existsSync('/usr/bin/qemu-system-x86_64')) return 'no qemu-system-x86_64';
  if (process.getuid?.() !== 0) return 'needs root';
  return undefined;
})();

const ourQemus = (): number[] => qemuPidsOfPod(POD);

describe('e2e: operating a QEMU pod (traces, metrics, console, lcowctl)', function () {
  this.timeout(300_000);
  let cd: PrivateContainerd;
  let otlp: OtlpReceiver;
  let dir: string;

  before(async function () {
    requirePrerequisite(this, unavailable);
    otlp = await OtlpReceiver.start();
    cd = await startContainerd({ extraPath: [join(ROOT, 'bin')], logLevel: 'info', namespace: NS, env: otlp.env() });
    dir = mkdtempSync(join(tmpdir(), 'lcow-e2e-ops-'));
    // A cold boot (its kernel and init phases, its console); a clone's phases and console are checked in
    // test/e2e/uvm/template.test.ts.
    // tcp+token pinned: the suite checks the transport lcowctl reports.
    writeFileSync(join(dir, 'lcow.toml'), 'allow_uvm_exec = true\ntemplates = false\ntransport = "tcp"\n');
    for (let i = 0; i < 20; i++) writeFileSync(join(dir, `file-${i}.txt`), `content ${i}\n`);
  });

  after(async function () {
    if (unavailable) return;
    // On failure the pod may still run: its shim and UVM do not die with containerd.
    if (cd) {
      await cd.ctr(['task', 'kill', '-s', 'KILL', POD]).catch(() => undefined);
      await waitFor(async () => !/RUNNING/.test((await cd.ctr(['task', 'ls'])).stdout), 30_000);
      await cd.ctr(['task', 'delete', POD]).catch(() => undefined);
      await cd.ctr(['container', 'delete', POD]).catch(() => undefined);
    }
    await cd?.stop();
    await otlp?.close();
    if (dir) rmSync(dir, { recursive: true, force: true });
    rmSync(`/var/log/lcow/${NS}`, { recursive: true, force: true });
    assert.deepEqual(leftovers(), []);
    assert.equal(await waitFor(() => ourQemus().length === 0, 20_000), true, 'a QEMU UVM was left running');
    const stateRoot = `/run/lcow/${NS}`;
    if (existsSync(stateRoot)) {
      assert.deepEqual(readdirSync(stateRoot), [], 'pod state left behind');
      rmSync(stateRoot, { recursive: true });
    }
  });

  it('one traced ctr run: boot phases, shares, agent RPCs and runc in one trace; lcowctl on the pod', async function () {
    const image = await importTestImage(cd.address, cd.namespace);
    const run = await cd.ctr(
      [
        'run',
        '-d',
        '--runtime',
        RUNTIME,
        '--runtime-config-path',
        join(dir, 'lcow.toml'),
        '--annotation',
        `lcow.traceparent=00-${TRACE}-${CALLER_SPAN}-01`,
        '--mount',
        `type=bind,src=${dir},dst=/data,options=rbind:ro`,
        image,
        POD,
        'sh',
        '-c',
        'cat /data/file-*.txt > /dev/null; ls -l /data > /dev/null; sleep 3600',
      ],
      { timeoutMs: 240_000 },
    );
    assert.equal(run.code, 0, `${run.stderr}\n${cd.log().slice(-3000)}`);

    const pods = await lcowctl(['pods', '--json', '-n', NS]);
    const info = (JSON.parse(pods.stdout) as Array<{ id: string; info: Record<string, unknown> }>).find(
      (p) => p.id === POD,
    )?.info;
    assert.ok(info, pods.stdout + pods.stderr);
    assert.equal(info.backend, 'qemu');
    assert.equal(info.transport, 'tcp+token');
    assert.ok(Number(info.memoryBytes) > 32 << 20, `QEMU's memory: ${info.memoryBytes}`);
    assert.match(String((info.details as Record<string, string>).accel), /^(tcg|kvm)$/);

    // The guest's reads reach the 9P metrics: 20 files read through the bind share.
    assert.ok(
      await waitFor(async () => {
        const s = JSON.parse((await lcowctl(['stats', POD, '--json'])).stdout) as {
          metrics: Array<{
            name: string;
            points: Array<{ attributes: Record<string, string>; value: { count: number } }>;
          }>;
        };
        const reads = s.metrics
          .find((m) => m.name === 'lcow.p9.request.duration')
          ?.points.filter((p) => p.attributes.path === dir && p.attributes.op === 'read');
        return (reads ?? []).reduce((n, p) => n + p.value.count, 0) >= 20;
      }, 30_000),
      'the container read 20 files over 9P',
    );
    const stats = await lcowctl(['stats', POD]);
    assert.equal(stats.code, 0, stats.stderr);
    assert.match(stats.stdout, /UVM boot\n/);
    for (const phase of ['qemu start', 'kernel', 'init', 'agent start', 'agent ready', 'total'])
      assert.match(stats.stdout, new RegExp(`^${phase}\\s+\\d`, 'm'), `boot phase ${phase}:\n${stats.stdout}`);
    assert.match(stats.stdout, new RegExp(`9P share s\\d+ \\(${dir.replace(/[/.]/g, '\\$&')}\\)`));

    const console = await lcowctl(['console', POD]);
    assert.match(console.stdout, /LCOW init uptime=/);
    assert.match((await lcowctl(['console', POD, '--agent'])).stdout, /"component":"agent"/);

    const guestKernel = readFileSync(join(ROOT, 'build/guest/kernel-version'), 'utf8').trim();
    const uname = await lcowctl(['exec', POD, '--', 'uname', '-r']);
    assert.deepEqual([uname.code, uname.stdout.trim()], [0, guestKernel], uname.stderr);
    assert.match((await lcowctl(['exec', POD, '--', 'cat', '/proc/mounts'])).stdout, / 9p /);

    await cd.ctr(['task', 'kill', '-s', 'KILL', POD]);
    await waitFor(async () => /STOPPED/.test((await cd.ctr(['task', 'ls'])).stdout), 30_000);
    await cd.ctr(['task', 'delete', POD]);
    await cd.ctr(['container', 'delete', POD]);
    assert.equal(await waitFor(() => ourQemus().length === 0, 30_000), true, 'UVM gone with the pod');

    // The trace
    assert.ok(
      await waitFor(() => otlp.trace(TRACE).some((s) => s.name === 'containerd.task.v2.Task/Delete'), 20_000),
      'spans exported at shim exit',
    );
    const spans = otlp.trace(TRACE);
    const tree = traceTree(spans);
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    for (const s of spans)
      assert.ok(byId.has(s.parentSpanId) || s.parentSpanId === CALLER_SPAN, `${s.name} not connected:\n${tree.text}`);
    const named = (name: string, service = 'containerd-shim-lcow') =>
      spans.filter((s) => s.name === name && s.service === service);
    const create = named('containerd.task.v2.Task/Create')[0];
    assert.ok(create, tree.text);
    const boot = named('sandbox boot')[0];
    assert.equal(boot?.parentSpanId, create.spanId, tree.text);
    for (const phase of ['qemu start', 'kernel', 'init', 'agent start', 'agent ready'])
      assert.equal(named(`uvm ${phase}`)[0]?.parentSpanId, boot.spanId, `uvm ${phase}:\n${tree.text}`);
    const shares = named('share add').filter((s) => s.parentSpanId === create.spanId);
    assert.ok(shares.length >= 2, `rootfs and bind shares:\n${tree.text}`);
    const guestMounts = named('mount 9p', 'lcow-agent');
    assert.ok(guestMounts.length >= 2, tree.text);
    const guestCreate = named('lcow.agent.v1.Agent/CreateContainer', 'lcow-agent')[0];
    assert.ok(guestCreate, tree.text);
    assert.equal(byId.get(guestCreate.parentSpanId)?.parentSpanId, create.spanId, 'guest span under the CLIENT span');
    const runc = named('runc create', 'lcow-agent')[0];
    assert.equal(runc?.parentSpanId, guestCreate.spanId, tree.text);
    assert.ok(runc.startMs >= create.startMs - 100 && runc.endMs <= create.endMs + 100, `guest clock:\n${tree.text}`);
    process.stderr.write(`      trace of ctr run (QEMU UVM):\n${tree.text.replace(/^/gm, '        ')}\n`);

    // After the pod: its console is still there, and listed.
    assert.match((await lcowctl(['console', POD])).stdout, /LCOW init uptime=/);
    const all = JSON.parse((await lcowctl(['pods', '--all', '--json', '-n', NS])).stdout) as Array<{
      id: string;
      status: string;
    }>;
    assert.deepEqual(
      all.filter((p) => p.id === POD).map((p) => p.status),
      ['stopped'],
    );
  });
});
