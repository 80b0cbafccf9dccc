// End to end with a private containerd 1.6 + runc: ctr -> containerd -> containerd-shim-lcow-v1 -> agent
// (process sandbox backend) -> runc -> process, and back.
import assert from 'node:assert/strict';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { fromBinary } from '@bufbuild/protobuf';
import { MetricsSchema as MetricsV1Schema } from '../../../src/gen/cgroups/v1/metrics_pb.js';
import { MetricsSchema as MetricsV2Schema } from '../../../src/gen/cgroups/v2/metrics_pb.js';
import { socketPath } from '../../../src/shim/address.js';
import { containerdUnavailable, type PrivateContainerd } from '../../helpers/containerd.js';
import {
  assertNoLeaks,
  bundleDir,
  nsMeta,
  sleep,
  taskClient,
  until,
  eventually,
  lcowState,
  ourMounts,
  ourProcesses,
  RUNTIME,
  startLcowContainerd,
  removeEmptyStateRoot,
} from './helpers.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';

const skip = process.getuid?.() !== 0 ? 'needs root' : containerdUnavailable();

describe('shim end to end with ctr (process backend)', function () {
  this.timeout(120_000);
  before(function () {
    requirePrerequisite(this, skip);
  });
  let cd: PrivateContainerd;
  let image: string;

  before(async () => {
    ({ cd, image } = await startLcowContainerd());
  });
  after(async () => {
    await cd?.stop();
    removeEmptyStateRoot();
  });
  afterEach(async () => {
    await assertNoLeaks(cd);
  });

  const run = (id: string, args: string[], extra: string[] = []) =>
    cd.ctr(['run', '--rm', '--runtime', RUNTIME, ...extra, image, id, ...args], { timeoutMs: 60_000 });

  it('ctr run --rm: output and exit codes 0 and 3', async () => {
    const a = await run('e2e-ok', ['sh', '-c', 'echo hi; echo err >&2']);
    assert.equal(a.code, 0, a.stderr);
    assert.equal(a.stdout, 'hi\n');
    assert.match(a.stderr, /err/);
    const b = await run('e2e-three', ['sh', '-c', 'echo hi; exit 3']);
    assert.equal(b.code, 3);
    assert.equal(b.stdout, 'hi\n');
  });

  it('large output is fully drained before the exit is reported', async () => {
    const r = await run('e2e-big', ['sh', '-c', 'seq 1 200000']);
    assert.equal(r.code, 0, r.stderr);
    const lines = r.stdout.trim().split('\n');
    assert.equal(lines.length, 200000);
    assert.equal(lines.at(-1), '200000');
  });

  it('kill -s SIGKILL gives 137; exec with exit codes; duplicate exec id; ps; metrics; pause/resume', async () => {
    const c = await cd.ctr(['container', 'create', '--runtime', RUNTIME, image, 'e2e-long', 'sleep', '1000']);
    assert.equal(c.code, 0, c.stderr);
    const start = cd.spawnCtr(['task', 'start', 'e2e-long']);
    const startExit = new Promise<number | null>((r) => start.on('exit', (code) => r(code)));
    let status = '';
    for (let i = 0; i < 100 && !/RUNNING/.test(status); i++) {
      status = (await cd.ctr(['task', 'ls'])).stdout;
      await new Promise((r) => setTimeout(r, 100));
    }
    assert.match(status, /e2e-long\s+\d+\s+RUNNING/);

    const ex = await cd.ctr(['task', 'exec', '--exec-id', 'x1', 'e2e-long', 'sh', '-c', 'echo in-exec; exit 7']);
    assert.equal(ex.code, 7);
    assert.equal(ex.stdout, 'in-exec\n');
    const ok = await cd.ctr(['task', 'exec', '--exec-id', 'x2', 'e2e-long', 'true']);
    assert.equal(ok.code, 0, ok.stderr);

    const bg = cd.spawnCtr(['task', 'exec', '--exec-id', 'dup', 'e2e-long', 'sleep', '30']);
    await new Promise((r) => setTimeout(r, 1500));
    const dup = await cd.ctr(['task', 'exec', '--exec-id', 'dup', 'e2e-long', 'true']);
    assert.notEqual(dup.code, 0);
    assert.match(dup.stderr, /already exists/);
    const ps = await cd.ctr(['task', 'ps', 'e2e-long']);
    assert.equal(ps.code, 0, ps.stderr);
    assert.ok(ps.stdout.trim().split('\n').length >= 3, ps.stdout);
    assert.match(ps.stdout, /dup/);
    const m = await cd.ctr(['task', 'metrics', 'e2e-long']);
    assert.equal(m.code, 0, m.stderr);
    assert.match(m.stdout, /memory/i);

    assert.equal((await cd.ctr(['task', 'pause', 'e2e-long'])).code, 0);
    assert.match((await cd.ctr(['task', 'ls'])).stdout, /e2e-long\s+\d+\s+PAUSED/);
    assert.equal((await cd.ctr(['task', 'resume', 'e2e-long'])).code, 0);
    assert.match((await cd.ctr(['task', 'ls'])).stdout, /e2e-long\s+\d+\s+RUNNING/);

    const k = await cd.ctr(['task', 'kill', '-s', 'SIGKILL', 'e2e-long']);
    assert.equal(k.code, 0, k.stderr);
    assert.equal(await startExit, 137);
    bg.kill();
    const again = await cd.ctr(['task', 'kill', '-s', 'SIGKILL', 'e2e-long']);
    assert.notEqual(again.code, 0, 'kill of an exited task is NotFound');
    // `ctr task start` (attached) deletes the task itself once it exited.
    const del = await cd.ctr(['container', 'delete', 'e2e-long']);
    assert.equal(del.code, 0, del.stderr);
  });

  it('events: create, start, exit, delete are published', async () => {
    const events = cd.spawnCtr(['events']);
    let text = '';
    events.stdout!.on('data', (d: Buffer) => (text += d.toString()));
    await new Promise((r) => setTimeout(r, 300));
    const r = await run('e2e-ev', ['true']);
    assert.equal(r.code, 0, r.stderr);
    for (let i = 0; i < 50 && !/\/tasks\/delete/.test(text); i++) await new Promise((res) => setTimeout(res, 100));
    events.kill();
    for (const topic of ['/tasks/create', '/tasks/start', '/tasks/exit', '/tasks/delete'])
      assert.match(text, new RegExp(`${topic}.*e2e-ev`), `missing ${topic} in:\n${text}`);
  });

  it('OOM kill under --memory-limit: /tasks/oom is published before the exit, status 137', async () => {
    const events = cd.spawnCtr(['events']);
    let text = '';
    events.stdout!.on('data', (d: Buffer) => (text += d.toString()));
    await sleep(300);
    const r = await run(
      'e2e-oom',
      ['sh', '-c', 'x=$(head -c 67108864 /dev/zero | tr "\\0" a); echo survived'],
      ['--memory-limit', '16777216'],
    );
    assert.equal(r.code, 137, r.stdout + r.stderr);
    assert.ok(await until(() => /\/tasks\/delete.*e2e-oom/.test(text), 10_000), text);
    events.kill();
    const oom = text.search(/\/tasks\/oom.*e2e-oom/);
    const exit = text.search(/\/tasks\/exit.*e2e-oom/);
    assert.ok(oom >= 0, `no /tasks/oom in:\n${text}`);
    assert.ok(oom < exit, `/tasks/oom after /tasks/exit:\n${text}`);
  });

  it('two containers with the same sandbox-id share one shim; Stats per container; Update (runc update)', async () => {
    const ann = ['--annotation', 'io.kubernetes.cri.sandbox-id=e2e-pod'];
    for (const id of ['e2e-pod', 'e2e-app']) {
      const c = await cd.ctr(['container', 'create', '--runtime', RUNTIME, ...ann, image, id, 'sleep', '1000']);
      assert.equal(c.code, 0, c.stderr);
      cd.spawnCtr(['task', 'start', id]);
    }
    let ls = '';
    for (let i = 0; i < 100 && (ls.match(/RUNNING/g) ?? []).length < 2; i++) {
      ls = (await cd.ctr(['task', 'ls'])).stdout;
      await new Promise((r) => setTimeout(r, 100));
    }
    const shims = ourProcesses().filter((p) => /containerd-shim-lcow-v1.*serve/.test(p));
    assert.equal(shims.length, 1, shims.join('\n'));
    const agents = ourProcesses().filter((p) => /lcow-agent/.test(p) && !/unshare/.test(p));
    assert.equal(agents.length, 1, agents.join('\n'));
    // Stats answer for every container of the pod, each from its own cgroup; Update reaches runc update.
    for (const id of ['e2e-pod', 'e2e-app']) {
      const m = await cd.ctr(['task', 'metrics', id]);
      assert.equal(m.code, 0, m.stderr);
      assert.match(m.stdout, /memory/i);
    }
    const { task, client } = await taskClient(cd, 'e2e-app');
    try {
      const limit = 48 * 1024 * 1024;
      const resources = { memory: { limit }, cpu: { shares: 512 } };
      await task.update(
        {
          id: 'e2e-app',
          resources: {
            typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/LinuxResources',
            value: Buffer.from(JSON.stringify(resources)),
          },
        },
        nsMeta(cd),
      );
      const memLimit = async (id: string): Promise<bigint | undefined> => {
        const st = await task.stats({ id }, nsMeta(cd));
        assert.ok(st.stats, 'stats present');
        if (st.stats.typeUrl.endsWith('cgroups.v1.Metrics'))
          return fromBinary(MetricsV1Schema, st.stats.value).memory?.usage?.limit;
        return fromBinary(MetricsV2Schema, st.stats.value).memory?.usageLimit;
      };
      assert.equal(await memLimit('e2e-app'), BigInt(limit));
      assert.notEqual(await memLimit('e2e-pod'), BigInt(limit), 'the other container keeps its limit');
      await assert.rejects(
        task.update({ id: 'e2e-app', resources: { typeUrl: 'x', value: Buffer.from('not json') } }, nsMeta(cd)),
      );
    } finally {
      client.close();
    }
    for (const id of ['e2e-app', 'e2e-pod']) {
      assert.equal((await cd.ctr(['task', 'kill', '-s', 'SIGKILL', id])).code, 0);
      for (
        let i = 0;
        i < 50 &&
        !/STOPPED/.test((await cd.ctr(['task', 'ls'])).stdout.split('\n').find((l) => l.startsWith(id)) ?? '');
        i++
      )
        await new Promise((r) => setTimeout(r, 100));
      await new Promise((r) => setTimeout(r, 500));
      const del = await cd.ctr(['container', 'delete', id]);
      assert.equal(del.code, 0, del.stderr);
    }
  });
});

describe('shim recovery (process backend)', function () {
  this.timeout(120_000);
  before(function () {
    requirePrerequisite(this, skip);
  });
  let cd: PrivateContainerd;
  let image: string;

  before(async () => {
    ({ cd, image } = await startLcowContainerd());
  });
  after(async () => {
    await cd?.stop();
    removeEmptyStateRoot();
  });

  it('shim killed with SIGKILL: ctr task delete / container rm clean up through `delete`', async () => {
    assert.equal((await cd.ctr(['run', '-d', '--runtime', RUNTIME, image, 'rec-kill', 'sleep', '1000'])).code, 0);
    const sock = socketPath(readFileSync(join(bundleDir(cd, 'rec-kill'), 'address'), 'utf8').trim());
    assert.ok(existsSync(sock));
    const shim = ourProcesses().find((p) => /containerd-shim-lcow-v1.*serve/.test(p));
    assert.ok(shim, 'shim running');
    process.kill(Number(shim.split(':')[0]), 'SIGKILL');
    for (let i = 0; i < 50; i++) {
      const ls = (await cd.ctr(['task', 'ls'])).stdout;
      if (!/rec-kill\s+\d+\s+RUNNING/.test(ls)) break;
      await new Promise((r) => setTimeout(r, 100));
    }
    await cd.ctr(['task', 'delete', '-f', 'rec-kill']);
    const rm = await cd.ctr(['container', 'delete', 'rec-kill']);
    assert.equal(rm.code, 0, rm.stderr);
    assert.deepEqual(await eventually(ourProcesses), []);
    assert.deepEqual(lcowState(), []);
    assert.deepEqual(ourMounts(), []);
    assert.ok(!existsSync(sock), 'no shim socket left');
  });

  it('containerd SIGKILLed and restarted: the shim keeps running, the task is listed, killed and deleted', async () => {
    const r = await cd.ctr(['run', '-d', '--runtime', RUNTIME, image, 'rec-cd', 'sleep', '1000']);
    assert.equal(r.code, 0, r.stderr);
    const before = ourProcesses().filter((p) => /containerd-shim-lcow-v1.*serve/.test(p));
    assert.equal(before.length, 1, before.join('\n'));
    const shimPid = Number(before[0]!.split(':')[0]);
    await cd.restart();
    // containerd 1.6 reloads the shim from the bundle's `address` and calls Connect.
    assert.ok(
      await until(async () => /rec-cd\s+\d+\s+RUNNING/.test((await cd.ctr(['task', 'ls'])).stdout), 15_000),
      (await cd.ctr(['task', 'ls'])).stdout,
    );
    process.kill(shimPid, 0); // still the same shim process
    const { task, client } = await taskClient(cd, 'rec-cd');
    try {
      const c = await task.connect({ id: 'rec-cd' }, nsMeta(cd));
      assert.equal(c.shimPid, shimPid);
      assert.ok(c.taskPid > 0);
      const pids = await task.pids({ id: 'rec-cd' }, nsMeta(cd));
      assert.ok(pids.processes.length >= 2, 'the container init and the sandbox process');
    } finally {
      client.close();
    }
    const events = cd.spawnCtr(['events']);
    let text = '';
    events.stdout!.on('data', (d: Buffer) => (text += d.toString()));
    await sleep(300);
    const k = await cd.ctr(['task', 'kill', '-s', 'SIGKILL', 'rec-cd']);
    assert.equal(k.code, 0, k.stderr);
    assert.ok(await until(() => /\/tasks\/exit.*rec-cd/.test(text), 10_000), `no exit event in:\n${text}`);
    events.kill();
    assert.ok(await until(async () => /rec-cd\s+\d+\s+STOPPED/.test((await cd.ctr(['task', 'ls'])).stdout)));
    const del = await cd.ctr(['task', 'delete', 'rec-cd']);
    assert.equal(del.code, 0, del.stderr);
    assert.match(del.stdout + del.stderr, /137|^$/);
    const rm = await cd.ctr(['container', 'delete', 'rec-cd']);
    assert.equal(rm.code, 0, rm.stderr);
    await assertNoLeaks(cd);
  });
});
