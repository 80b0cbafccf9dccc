// Races between RPCs, guest exits and sandbox failures, made deterministic with the fake agent's gates (a call
// is held until the test releases it). Ordering is asserted on the published events' sequence numbers and on
// the calls the fake agent received, never on time.
import assert from 'node:assert/strict';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { create } from '@bufbuild/protobuf';
import * as v2 from '../../../src/gen/containerd/task/v2/shim_pb.js';
import { Status } from '../../../src/gen/containerd/types/task/task_pb.js';
import { Code, TtrpcError } from '../../../src/ttrpc/index.js';
import { Harness, outcome, pending, settle, shortDeadlines } from './harness.js';

const T = 't1';
const E = 'e1';

async function running(h: Harness, withExec = false): Promise<void> {
  await h.create(T);
  await h.start(T);
  if (withExec) await h.exec(T, E);
}

describe('Task service: interleavings (fake sandbox)', function () {
  this.timeout(20_000);
  let h: Harness;
  afterEach(async () => {
    await h?.close();
  });

  it('Kill during an exec Start waits for the Start, then signals the started process (the old bug)', async () => {
    h = Harness.create();
    await running(h, true);
    const gate = h.agent.gate('startProcess');
    const start = h.start(T, E);
    await gate.reached;
    const kill = h.kill(T, E, 9);
    assert.equal(await pending(kill), true, 'Kill waits while Start is in flight');
    assert.equal(h.agent.calls.filter((c) => c.method === 'signalProcess').length, 0, 'no signal before Start');
    assert.equal(h.state(T, E).status, Status.CREATED);
    gate.release();
    const pid = await start;
    await kill;
    const sig = h.agent.calls.find((c) => c.method === 'signalProcess');
    assert.deepEqual(sig, { method: 'signalProcess', containerId: T, execId: E, signal: 9 });
    assert.equal(await h.wait(T, E), 137, 'the exec really ended, with the signal status');
    const started = h.of('/tasks/exec-started', T, E);
    const exits = h.of('/tasks/exit', T, E);
    assert.equal(started.length, 1);
    assert.equal(started[0]!.pid, pid);
    assert.equal(exits.length, 1);
    assert.ok(started[0]!.seq < exits[0]!.seq, 'TaskExecStarted before TaskExit');
    assert.equal(h.agent.liveProcesses().filter((p) => p.execId === E).length, 0, 'nothing runs on in the guest');
  });

  it('Kill during a Start that fails: NotFound, the exec ended with status 1, no signal, no TaskExit', async () => {
    h = Harness.create();
    await running(h, true);
    const gate = h.agent.gate('startProcess');
    const start = h.start(T, E);
    await gate.reached;
    const kill = h.kill(T, E, 9);
    gate.release({ error: new TtrpcError(Code.INTERNAL, 'runc exec failed') });
    assert.equal(await outcome(start), 'INTERNAL');
    assert.equal(await outcome(kill), 'NOT_FOUND');
    assert.equal(await h.wait(T, E), 1);
    assert.equal(h.agent.calls.filter((c) => c.method === 'signalProcess').length, 0);
    assert.deepEqual(h.of('/tasks/exit', T, E), []);
    assert.deepEqual(h.of('/tasks/exec-started', T, E), []);
  });

  it('Delete, ResizePty and CloseIO during Start wait for it and act on the started process', async () => {
    h = Harness.create();
    await running(h, true);
    const gate = h.agent.gate('startProcess');
    const start = h.start(T, E);
    await gate.reached;
    const del = outcome(h.delete(T, E));
    const resize = outcome(h.resize(T, E));
    const close = outcome(h.closeIO(T, E));
    assert.equal(await pending(del), true);
    gate.release();
    await start;
    assert.equal(await del, 'FAILED_PRECONDITION', 'the exec is running once Start returned');
    assert.equal(await resize, 'OK');
    assert.equal(await close, 'OK');
    const order = h.agent.calls.map((c) => c.method).filter((m) => m === 'startProcess' || m === 'resizePty');
    assert.deepEqual(order, ['startProcess', 'startProcess', 'resizePty']);
  });

  it('two concurrent Starts: one starts the process, the other is FailedPrecondition', async () => {
    h = Harness.create();
    await running(h, true);
    const r = await Promise.all([outcome(h.start(T, E)), outcome(h.start(T, E))]);
    assert.deepEqual(r.sort(), ['FAILED_PRECONDITION', 'OK']);
    assert.equal(h.of('/tasks/exec-started', T, E).length, 1);
  });

  it('init exits while its Start is in flight: TaskStart is published first, then one TaskExit', async () => {
    h = Harness.create();
    await h.create(T);
    // The guest process exits right after it started, and its WaitProcess answer goes out before Start's.
    h.agent.onStarted = async (p) => {
      h.agent.exitProcess(p.containerId, p.execId, 3);
      await new Promise((r) => setTimeout(r, 20));
    };
    await h.start(T);
    assert.equal(await h.wait(T), 3);
    const st = h.of('/tasks/start', T);
    const ex = h.of('/tasks/exit', T, T);
    assert.equal(st.length, 1);
    assert.equal(ex.length, 1);
    assert.ok(st[0]!.seq < ex[0]!.seq);
  });

  it('an exec that exits before its Start is answered: TaskExecStarted, then its TaskExit', async () => {
    h = Harness.create();
    await running(h, true);
    h.agent.onStarted = (p) => h.agent.exitProcess(p.containerId, p.execId, 4);
    await h.start(T, E);
    assert.equal(await h.wait(T, E), 4);
    const st = h.of('/tasks/exec-started', T, E);
    const ex = h.of('/tasks/exit', T, E);
    assert.equal(ex.length, 1);
    assert.ok(st[0]!.seq < ex[0]!.seq);
  });

  it('Wait issued before Start returns the exit status once the process ends; State agrees', async () => {
    h = Harness.create();
    await running(h, true);
    const w = h.wait(T, E);
    await h.start(T, E);
    assert.equal(await pending(w), true);
    h.agent.exitProcess(T, E, 42);
    assert.equal(await w, 42);
    const s = h.state(T, E);
    assert.equal(s.status, Status.STOPPED);
    assert.equal(s.exitStatus, 42);
    assert.equal(h.of('/tasks/exit', T, E)[0]?.exitStatus, 42);
  });

  it("init exits with a running exec: the exec's TaskExit comes first, each once; Delete then TaskDelete", async () => {
    h = Harness.create();
    await running(h, true);
    await h.start(T, E);
    await h.kill(T);
    assert.equal(await h.wait(T), 137);
    assert.equal(await h.wait(T, E), 137);
    const execExit = h.of('/tasks/exit', T, E);
    const initExit = h.of('/tasks/exit', T, T);
    assert.equal(execExit.length, 1);
    assert.equal(initExit.length, 1);
    assert.ok(execExit[0]!.seq < initExit[0]!.seq);
    await h.delete(T, E);
    await h.delete(T);
    const del = h.of('/tasks/delete', T);
    assert.equal(del.length, 1);
    assert.ok(initExit[0]!.seq < del[0]!.seq);
  });

  it('sandbox crash: every started process gets one TaskExit 255 (execs first), a created exec ends silently', async () => {
    h = Harness.create();
    await running(h, true);
    await h.start(T, E);
    await h.exec(T, 'e2');
    await h.create('t2');
    const waits = [h.wait(T), h.wait(T, E), h.wait(T, 'e2'), h.wait('t2')];
    await h.fake.crash('VM killed');
    assert.deepEqual(await Promise.all(waits), [255, 255, 255, 255]);
    assert.equal(h.of('/tasks/exit', T, T).length, 1);
    assert.equal(h.of('/tasks/exit', T, E).length, 1);
    assert.equal(h.of('/tasks/exit', 't2', 't2').length, 1, 'a created init still had its TaskCreate: it gets one');
    assert.deepEqual(h.of('/tasks/exit', T, 'e2'), [], 'never started: no TaskExit');
    assert.ok(h.of('/tasks/exit', T, E)[0]!.seq < h.of('/tasks/exit', T, T)[0]!.seq);
    assert.equal(await outcome(h.kill(T)), 'NOT_FOUND');
    assert.equal(await outcome(h.create('t3')), 'FAILED_PRECONDITION', 'no new task in a dead pod');
    for (const [id, ex] of [
      [T, E],
      [T, 'e2'],
      [T, ''],
      ['t2', ''],
    ] as const)
      await h.delete(id, ex);
    assert.equal(h.fake.ended, true);
    h.shutdown();
    await settle();
    assert.equal(h.shutdowns, 1, 'the shim may exit once no task is left');
  });

  it('sandbox crash during an exec Start: Start fails, the exec ends with 1 and no TaskExit; init gets 255', async () => {
    h = Harness.create();
    await running(h, true);
    const gate = h.agent.gate('startProcess');
    const start = outcome(h.start(T, E));
    await gate.reached;
    await h.fake.crash();
    assert.equal(await start, 'UNAVAILABLE');
    assert.equal(await h.wait(T, E), 1);
    assert.equal(await h.wait(T), 255);
    assert.deepEqual(h.of('/tasks/exit', T, E), []);
    assert.equal(h.of('/tasks/exit', T, T).length, 1);
  });

  it('an agent that never answers SignalProcess: Kill stops the sandbox and returns; the exits are published', async () => {
    h = Harness.create({ deadlines: shortDeadlines(200) });
    await running(h, true);
    await h.start(T, E);
    h.agent.script = (m) => (m === 'signalProcess' ? { hang: true } : undefined);
    await h.kill(T, E, 15);
    assert.equal(h.fake.ended, true, 'the sandbox was stopped');
    assert.deepEqual(h.fake.stopCalls, ['force']);
    assert.equal(await h.wait(T, E), 255);
    assert.equal(await h.wait(T), 255);
    assert.equal(h.of('/tasks/exit', T, E).length, 1);
    assert.equal(h.of('/tasks/exit', T, T).length, 1);
    await h.delete(T, E);
    await h.delete(T);
    assert.equal(h.of('/tasks/delete', T).length, 1);
  });

  it('an agent that never answers DeleteContainer: Delete still completes (the sandbox is stopped)', async () => {
    h = Harness.create({ deadlines: shortDeadlines(200) });
    await running(h);
    await h.create('t2');
    await h.kill(T);
    await h.wait(T);
    h.agent.script = (m) => (m === 'deleteContainer' ? { hang: true } : undefined);
    const d = await h.delete(T);
    assert.equal(d.exitStatus, 137);
    assert.equal(h.fake.ended, true);
    assert.equal(await h.wait('t2'), 255, 'the other task ended with the sandbox');
    await h.delete('t2');
  });

  it('an agent that never answers StartProcess: Start is DeadlineExceeded, a Kill queued behind it is NotFound', async () => {
    h = Harness.create({ deadlines: shortDeadlines(200) });
    await running(h, true);
    h.agent.script = (m) => (m === 'startProcess' ? { hang: true } : undefined);
    const start = outcome(h.start(T, E));
    const kill = outcome(h.kill(T, E));
    assert.equal(await start, 'DEADLINE_EXCEEDED');
    assert.equal(await kill, 'NOT_FOUND');
    assert.equal(await h.wait(T, E), 1);
    assert.equal(h.fake.ended, false, 'a slow Start alone does not stop the pod');
  });

  it('a sandbox that fails to boot: Create fails, nothing is kept, the next Create boots a fresh one', async () => {
    let first = true;
    h = Harness.create({
      prepare: (s) => {
        if (first) s.bootError = new Error('no UVM for you');
        first = false;
      },
    });
    assert.equal(await outcome(h.create(T)), 'UNKNOWN');
    assert.equal(h.fakes.length, 1);
    assert.equal(await outcome(() => h.state(T)), 'NOT_FOUND');
    await h.create(T);
    await h.start(T);
    assert.equal(h.fakes.length, 2);
    assert.equal(h.state(T).status, Status.RUNNING);
  });

  it("a pod's first Create failing after the boot (its stdio fifos are gone) stops the sandbox it booted", async () => {
    h = Harness.create();
    const bundle = h.bundle(T);
    const req = create(v2.CreateTaskRequestSchema, { id: T, bundle, stdout: join(h.dir, 'no-such-fifo') });
    assert.equal(await outcome(h.svc.create(req)), 'UNKNOWN');
    assert.equal(h.fakes.length, 1);
    assert.equal(h.fake.ended, true, 'no task: no sandbox');
    assert.deepEqual(h.events, []);
    await h.create(T);
    assert.equal(h.fakes.length, 2);
  });

  it('the last Delete stops the sandbox; Shutdown exits only with no task; a new Create boots anew', async () => {
    h = Harness.create();
    await running(h);
    h.shutdown();
    await settle();
    assert.equal(h.shutdowns, 0, 'a task remains');
    await h.kill(T);
    await h.wait(T);
    await h.delete(T);
    assert.equal(h.fakes[0]!.ended, true);
    assert.deepEqual(h.fakes[0]!.stopCalls, ['graceful']);
    await h.create('t2');
    assert.equal(h.fakes.length, 2);
    await h.delete('t2');
    h.shutdown();
    await settle();
    assert.equal(h.shutdowns, 1);
  });

  it('a task created while the last one is being deleted keeps the pod: no stop under it', async () => {
    h = Harness.create();
    await running(h);
    await h.kill(T);
    await h.wait(T);
    const dg = h.agent.gate('deleteContainer');
    const del = h.delete(T);
    await dg.reached;
    const c = h.create('t2');
    await settle();
    dg.release();
    await del;
    await c;
    await h.start('t2');
    assert.equal(h.state('t2').status, Status.RUNNING);
    assert.equal(h.fakes.length, 1);
    assert.equal(h.fakes[0]!.ended, false);
  });

  it('a task created while the pod is stopping waits for the stop and boots a fresh sandbox', async () => {
    h = Harness.create();
    await running(h);
    await h.kill(T);
    await h.wait(T);
    let release!: () => void;
    h.fake.stopHold = new Promise<void>((r) => (release = r));
    const del = h.delete(T);
    await settle();
    assert.equal(h.fakes[0]!.life.phase, 'stopping');
    const c = h.create('t2');
    assert.equal(await pending(c), true, 'Create waits for the stop');
    release();
    await del;
    await c;
    assert.equal(h.fakes.length, 2);
    assert.equal(h.fakes[0]!.ended, true);
    await h.start('t2');
    assert.equal(h.state('t2').status, Status.RUNNING);
  });

  it('Exec while the init is exiting: refused, nothing is left in the exec table', async () => {
    h = Harness.create();
    await running(h);
    const gate = h.agent.gate('execProcess');
    const ex = outcome(h.exec(T, E));
    await gate.reached;
    h.agent.exitProcess(T, '', 0);
    await h.wait(T);
    gate.release({ error: new TtrpcError(Code.FAILED_PRECONDITION, 'container is not running') });
    assert.equal(await ex, 'FAILED_PRECONDITION');
    assert.equal(await outcome(() => h.state(T, E)), 'NOT_FOUND');
  });

  it('Pause and Resume publish their events; an init exit while paused is recorded once', async () => {
    h = Harness.create();
    await running(h);
    await h.pause(T);
    assert.equal(h.state(T).status, Status.PAUSED);
    assert.equal(h.of('/tasks/paused', T).length, 1);
    await h.resume(T);
    assert.equal(h.of('/tasks/resumed', T).length, 1);
    await h.pause(T);
    h.agent.exitProcess(T, '', 9);
    assert.equal(await h.wait(T), 9);
    assert.equal(h.state(T).status, Status.STOPPED);
    assert.equal(h.of('/tasks/exit', T, T).length, 1);
  });

  it('a spec without a network namespace (ctr run --net-host, hostNetwork) is refused before the VM boots', async () => {
    h = Harness.create();
    const bundle = h.bundle(T);
    const spec = JSON.parse(readFileSync(join(bundle, 'config.json'), 'utf8')) as { linux: { namespaces: unknown[] } };
    spec.linux.namespaces = [{ type: 'pid' }];
    writeFileSync(join(bundle, 'config.json'), JSON.stringify(spec));
    const r = outcome(() => h.svc.create(create(v2.CreateTaskRequestSchema, { id: T, bundle })));
    assert.equal(await r, 'FAILED_PRECONDITION');
    assert.equal(h.fake.life.phase, 'new', 'the sandbox must never boot');
    assert.equal(h.svc.taskCount, 0);
  });
});
