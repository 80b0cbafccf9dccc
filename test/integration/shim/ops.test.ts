// Operating a pod (process backend, real containerd 1.6 and runc): one `ctr run` carrying a traceparent is one
// connected trace from Task.Create down to `runc create` in the agent (its spans reach an in-memory OTLP
// collector through the shim); the shim's log lines carry pod and trace ids; `lcowctl` lists, inspects,
// measures and execs into live pods; the agent's log stays readable after the pod is gone, until pruned.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { containerdUnavailable, startContainerd, type PrivateContainerd } from '../../helpers/containerd.js';
import { importTestImage } from '../../helpers/image.js';
import { lcowctl } from '../../helpers/lcowctl.js';
import { OtlpReceiver, traceTree } from '../../helpers/otlp-receiver.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';
import { assertNoLeaks, BIN_DIR, removeEmptyStateRoot, RUNTIME, TEST_NAMESPACE, until } from './helpers.js';

const skip = process.getuid?.() !== 0 ? 'needs root' : containerdUnavailable();
const TRACE = `${process.pid.toString(16).padStart(8, '0')}${'a1b2c3d4'.repeat(3)}`;
const CALLER_SPAN = '00f067aa0ba902b7';

describe('operations: traces, logs and lcowctl (process backend)', function () {
  this.timeout(120_000);
  let cd: PrivateContainerd;
  let image: string;
  let otlp: OtlpReceiver;
  let cfgDir: string;
  const POD = `ops-pod-${process.pid}`;
  const LOCKED = `ops-locked-${process.pid}`;
  const logRoot = `/var/log/lcow/${TEST_NAMESPACE}`;

  before(async function () {
    requirePrerequisite(this, skip);
    otlp = await OtlpReceiver.start();
    cd = await startContainerd({
      extraPath: [BIN_DIR],
      env: { LCOW_SANDBOX: 'process', ...otlp.env() },
      namespace: TEST_NAMESPACE,
    });
    image = await importTestImage(cd.address, cd.namespace);
    cfgDir = mkdtempSync(join(tmpdir(), 'lcow-ops-cfg-'));
    writeFileSync(join(cfgDir, 'lcow.toml'), 'allow_uvm_exec = true\nlog_level = "debug"\n');
  });

  after(async () => {
    // On failure the pods may still run: their shims do not die with containerd.
    if (cd) for (const id of [POD, LOCKED]) await stopAndDelete(id).catch(() => undefined);
    await cd?.stop();
    await otlp?.close();
    if (cfgDir) rmSync(cfgDir, { recursive: true, force: true });
    rmSync(logRoot, { recursive: true, force: true });
    removeEmptyStateRoot();
  });

  const stopAndDelete = async (id: string): Promise<void> => {
    await cd.ctr(['task', 'kill', '-s', 'KILL', id]);
    await until(
      async () =>
        /STOPPED/.test((await cd.ctr(['task', 'ls'])).stdout.split('\n').find((l) => l.startsWith(id)) ?? 'STOPPED'),
      20_000,
    );
    await cd.ctr(['task', 'delete', id]);
    await cd.ctr(['container', 'delete', id]);
  };

  it('a traced ctr run, lcowctl on the live pods, logs after they are gone', async () => {
    const run = await cd.ctr(
      [
        'run',
        '-d',
        '--runtime',
        RUNTIME,
        '--runtime-config-path',
        join(cfgDir, 'lcow.toml'),
        '--annotation',
        `lcow.traceparent=00-${TRACE}-${CALLER_SPAN}-01`,
        image,
        POD,
        'sleep',
        '1000',
      ],
      { timeoutMs: 60_000 },
    );
    assert.equal(run.code, 0, run.stderr);
    // A second pod without the runtime config: exec into it is refused.
    const locked = await cd.ctr(['run', '-d', '--runtime', RUNTIME, image, LOCKED, 'sleep', '1000'], {
      timeoutMs: 60_000,
    });
    assert.equal(locked.code, 0, locked.stderr);

    // pods
    const pods = await lcowctl(['pods', '--json', '-n', TEST_NAMESPACE]);
    assert.equal(pods.code, 0, pods.stderr);
    const list = JSON.parse(pods.stdout) as Array<{ id: string; status: string; info: Record<string, unknown> }>;
    const mine = list.find((p) => p.id === POD);
    assert.ok(mine, pods.stdout);
    assert.equal(mine.status, 'live');
    assert.equal(mine.info.backend, 'process');
    assert.equal(mine.info.transport, 'unix');
    assert.equal(mine.info.state, 'running');
    assert.ok(Number(mine.info.memoryBytes) > 1 << 20, 'the agent process has memory');
    const table = await lcowctl(['pods', '-n', TEST_NAMESPACE]);
    assert.match(
      table.stdout,
      new RegExp(`^${POD}\\s+${TEST_NAMESPACE}\\s+process\\s+unix\\s+running\\s+\\S+\\s+\\S+\\s+1/1$`, 'm'),
    );

    // ps: the container's init runs
    const ps = await lcowctl(['ps', POD]);
    assert.equal(ps.code, 0, ps.stderr);
    assert.match(ps.stdout, new RegExp(`^${POD}\\s+\\(init\\)\\s+\\d+\\s+running`, 'm'));

    // stats: the agent RPCs this pod made so far
    const stats = await lcowctl(['stats', POD, '--json']);
    assert.equal(stats.code, 0, stats.stderr);
    const snap = JSON.parse(stats.stdout) as {
      metrics: Array<{
        name: string;
        points: Array<{ attributes: Record<string, string>; value: { count: number } | number }>;
      }>;
    };
    const rpc = snap.metrics.find((m) => m.name === 'lcow.agent.rpc.duration')!;
    const calls = (method: string): number =>
      rpc.points
        .filter((p) => p.attributes.method === method)
        .reduce((n, p) => n + (p.value as { count: number }).count, 0);
    assert.equal(calls('CreateContainer'), 1);
    assert.equal(calls('StartProcess'), 1);
    assert.equal(snap.metrics.find((m) => m.name === 'lcow.containers.running')?.points[0]?.value, 1);
    assert.match((await lcowctl(['stats', POD])).stdout, /^CreateContainer\s+1\s+0\s/m);

    // exec into the sandbox (allowed by this pod's runtime config), exit status passed through
    const hi = await lcowctl(['exec', POD, '--', 'sh', '-c', 'echo hi; echo oops >&2; exit 7']);
    assert.deepEqual([hi.code, hi.stdout, hi.stderr], [7, 'hi\n', 'oops\n']);
    const refused = await lcowctl(['exec', LOCKED, '--', 'true']);
    assert.equal(refused.code, 126, refused.stderr);
    assert.match(refused.stderr, /allow_uvm_exec/);

    // errors: unknown pod, missing argument
    assert.equal((await lcowctl(['ps', 'no-such-pod'])).code, 3);
    assert.equal((await lcowctl(['stats'])).code, 2);
    // the process backend has no guest console, but the agent's log is kept
    const noConsole = await lcowctl(['console', POD]);
    assert.equal(noConsole.code, 3);
    assert.match(noConsole.stderr, /--agent/);
    assert.match((await lcowctl(['console', POD, '--agent'])).stdout, /"msg":"container created"/);

    await stopAndDelete(POD);
    await stopAndDelete(LOCKED);
    await assertNoLeaks(cd);

    // The shims flushed their spans at exit: one trace, connected, from Task.Create to runc create.
    assert.ok(
      await until(() => otlp.trace(TRACE).some((s) => s.name === 'runc create'), 15_000),
      'guest spans arrived',
    );
    await until(() => otlp.trace(TRACE).some((s) => s.name === 'containerd.task.v2.Task/Delete'), 5000);
    const spans = otlp.trace(TRACE);
    const tree = traceTree(spans);
    const byId = new Map(spans.map((s) => [s.spanId, s]));
    for (const s of spans)
      assert.ok(
        byId.has(s.parentSpanId) || s.parentSpanId === CALLER_SPAN,
        `${s.name} is not connected:\n${tree.text}`,
      );
    const create = spans.find((s) => s.name === 'containerd.task.v2.Task/Create');
    assert.ok(create, tree.text);
    assert.equal(create.parentSpanId, CALLER_SPAN);
    const child = (parent: { spanId: string }, name: string, service?: string) =>
      spans.find((s) => s.parentSpanId === parent.spanId && s.name === name && (!service || s.service === service));
    assert.ok(child(create, 'sandbox boot'), tree.text);
    const client = child(create, 'lcow.agent.v1.Agent/CreateContainer', 'containerd-shim-lcow');
    assert.ok(client, tree.text);
    assert.equal(client.kind, 3, 'CLIENT');
    const server = child(client, 'lcow.agent.v1.Agent/CreateContainer', 'lcow-agent');
    assert.ok(server, `the agent's span continues the shim's:\n${tree.text}`);
    assert.equal(server.kind, 2, 'SERVER');
    const runc = child(server, 'runc create', 'lcow-agent');
    assert.ok(runc, tree.text);
    assert.ok(
      runc.startMs >= create.startMs - 50 && runc.endMs <= create.endMs + 50,
      `guest times on the host clock:\n${tree.text}`,
    );
    // Later RPCs of the container continue the same trace; runc start runs under Task.Start.
    const start = spans.find((s) => s.name === 'containerd.task.v2.Task/Start');
    assert.ok(start && spans.some((s) => s.name === 'runc start' && s.service === 'lcow-agent'), tree.text);
    assert.ok(otlp.metricNames.has('lcow.agent.rpc.duration'), `metrics exported: ${[...otlp.metricNames].join(', ')}`);

    // The shim's log lines (containerd's log) are JSON with pod, container and trace ids.
    const created = cd
      .log()
      .split('\n')
      .filter((l) => l.startsWith('{') && l.includes('"task created"'))
      .map((l) => JSON.parse(l) as Record<string, string>)
      .find((e) => e.container === POD);
    assert.ok(created, 'task created line');
    assert.equal(created.pod, POD);
    assert.equal(created.trace_id, TRACE);

    // After the pods are gone: listed as stopped, the agent's log readable until pruned.
    const all = await lcowctl(['pods', '--all', '--json', '-n', TEST_NAMESPACE]);
    const stopped = (JSON.parse(all.stdout) as Array<{ id: string; status: string }>).filter((p) =>
      [POD, LOCKED].includes(p.id),
    );
    assert.deepEqual(
      stopped.map((p) => p.status),
      ['stopped', 'stopped'],
      all.stdout,
    );
    assert.match((await lcowctl(['console', POD, '--agent', '--lines', '50'])).stdout, /agent/);
    const pruned = await lcowctl(['prune', '-n', TEST_NAMESPACE, POD]);
    assert.equal(pruned.code, 0, pruned.stderr);
    assert.equal(existsSync(join(logRoot, POD)), false);
    assert.equal((await lcowctl(['console', POD, '--agent'])).code, 3);
    process.stderr.write(`      trace of ctr run (process backend):\n${tree.text.replace(/^/gm, '        ')}\n`);
  });
});
