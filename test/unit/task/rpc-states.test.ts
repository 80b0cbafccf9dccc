// Every Task RPC in every process state, init and exec, against the fake sandbox: the answer (or the gRPC code
// containerd gets) is written out below cell by cell, from containerd's and hcsshim's rules
// (reference/containerd-shim-v2.md, hcs-and-lcow.md), not derived from src/task/state.ts.
import assert from 'node:assert/strict';
import { Status } from '../../../src/gen/containerd/types/task/task_pb.js';
import { Harness, outcome, pending, type Outcome } from './harness.js';

type S = 'created' | 'running' | 'paused' | 'exited' | 'deleted';
/** 'OK', a gRPC code name, or for Wait 'BLOCKS' (still waiting) / 'OK' (returned). */
type Cell = Outcome | 'BLOCKS' | '-';

const T = 't1';
const E = 'e1';

/** Brings task T's init (with a second task keeping the pod up) into state `s`. */
async function initIn(h: Harness, s: S): Promise<void> {
  await h.create('keeper');
  await h.create(T);
  if (s === 'created') return;
  await h.start(T);
  if (s === 'paused') await h.pause(T);
  if (s === 'exited' || s === 'deleted') {
    await h.kill(T);
    await h.wait(T);
  }
  if (s === 'deleted') await h.delete(T);
}

/** Brings exec E of a running task T into state `s`. */
async function execIn(h: Harness, s: S): Promise<void> {
  await initIn(h, 'running');
  await h.exec(T, E);
  if (s === 'created') return;
  await h.start(T, E);
  if (s === 'exited' || s === 'deleted') {
    await h.kill(T, E);
    await h.wait(T, E);
  }
  if (s === 'deleted') await h.delete(T, E);
}

//                     created                running                paused                 exited                 deleted
const INIT: Record<string, [Cell, Cell, Cell, Cell, Cell]> = {
  start: /*         */ ['OK', 'FAILED_PRECONDITION', 'FAILED_PRECONDITION', 'FAILED_PRECONDITION', 'NOT_FOUND'],
  kill: /*          */ ['OK', 'OK', 'OK', 'NOT_FOUND', 'NOT_FOUND'],
  delete: /*        */ ['OK', 'FAILED_PRECONDITION', 'FAILED_PRECONDITION', 'OK', 'NOT_FOUND'],
  state: /*         */ ['OK', 'OK', 'OK', 'OK', 'NOT_FOUND'],
  wait: /*          */ ['BLOCKS', 'BLOCKS', 'BLOCKS', 'OK', 'NOT_FOUND'],
  closeIO: /*       */ ['OK', 'OK', 'OK', 'OK', 'NOT_FOUND'],
  resizePty: /*     */ ['OK', 'OK', 'OK', 'FAILED_PRECONDITION', 'NOT_FOUND'],
  pause: /*         */ ['FAILED_PRECONDITION', 'OK', 'FAILED_PRECONDITION', 'FAILED_PRECONDITION', 'NOT_FOUND'],
  resume: /*        */ ['FAILED_PRECONDITION', 'FAILED_PRECONDITION', 'OK', 'FAILED_PRECONDITION', 'NOT_FOUND'],
  update: /*        */ ['OK', 'OK', 'OK', 'FAILED_PRECONDITION', 'NOT_FOUND'],
  stats: /*         */ ['OK', 'OK', 'OK', 'NOT_FOUND', 'NOT_FOUND'],
  exec: /*          */ ['FAILED_PRECONDITION', 'OK', 'FAILED_PRECONDITION', 'FAILED_PRECONDITION', 'NOT_FOUND'],
  pids: /*          */ ['OK', 'OK', 'OK', 'OK', 'NOT_FOUND'],
};

//                     created                running                paused  exited                 deleted
const EXEC: Record<string, [Cell, Cell, Cell, Cell, Cell]> = {
  start: /*         */ ['OK', 'FAILED_PRECONDITION', '-', 'FAILED_PRECONDITION', 'NOT_FOUND'],
  kill: /*          */ ['OK', 'OK', '-', 'NOT_FOUND', 'NOT_FOUND'],
  delete: /*        */ ['OK', 'FAILED_PRECONDITION', '-', 'OK', 'NOT_FOUND'],
  state: /*         */ ['OK', 'OK', '-', 'OK', 'NOT_FOUND'],
  wait: /*          */ ['BLOCKS', 'BLOCKS', '-', 'OK', 'NOT_FOUND'],
  closeIO: /*       */ ['OK', 'OK', '-', 'OK', 'NOT_FOUND'],
  resizePty: /*     */ ['OK', 'OK', '-', 'FAILED_PRECONDITION', 'NOT_FOUND'],
};

const STATES: S[] = ['created', 'running', 'paused', 'exited', 'deleted'];
const STATUS: Record<S, Status | undefined> = {
  created: Status.CREATED,
  running: Status.RUNNING,
  paused: Status.PAUSED,
  exited: Status.STOPPED,
  deleted: undefined,
};

async function call(h: Harness, rpc: string, execId: string): Promise<Cell> {
  switch (rpc) {
    case 'start':
      return outcome(h.start(T, execId));
    case 'kill':
      return outcome(h.kill(T, execId));
    case 'delete':
      return outcome(h.delete(T, execId));
    case 'state':
      return outcome(() => h.state(T, execId));
    case 'wait': {
      const w = h.wait(T, execId);
      if (await pending(w)) {
        w.catch(() => undefined);
        return 'BLOCKS';
      }
      return outcome(w);
    }
    case 'closeIO':
      return outcome(h.closeIO(T, execId));
    case 'resizePty':
      return outcome(h.resize(T, execId));
    case 'pause':
      return outcome(h.pause(T));
    case 'resume':
      return outcome(h.resume(T));
    case 'update':
      return outcome(h.update(T));
    case 'stats':
      return outcome(h.stats(T));
    case 'exec':
      return outcome(h.exec(T, 'e-new'));
    case 'pids':
      return outcome(h.pids(T));
  }
  throw new Error(rpc);
}

describe('Task service: every RPC in every state (fake sandbox)', function () {
  this.timeout(20_000);
  for (const [kind, table, setup, execId] of [
    ['init', INIT, initIn, ''],
    ['exec', EXEC, execIn, E],
  ] as const) {
    for (const [rpc, cells] of Object.entries(table)) {
      STATES.forEach((s, i) => {
        const want = cells[i];
        if (want === '-') return;
        it(`${kind} ${s}: ${rpc} -> ${want}`, async () => {
          const h = Harness.create();
          try {
            await setup(h, s);
            if (rpc === 'state' && s !== 'deleted')
              assert.equal(h.state(T, execId).status, STATUS[s], 'State reports the state it is in');
            assert.equal(await call(h, rpc, execId), want);
          } finally {
            await h.close();
          }
        });
      });
    }
  }

  it('Kill of a never-started exec ends it with status 1, no TaskExit (hcsshim), and Start is then refused', async () => {
    const h = Harness.create();
    try {
      await execIn(h, 'created');
      const w = h.wait(T, E);
      await h.kill(T, E);
      assert.equal(await w, 1);
      assert.equal(h.state(T, E).status, Status.STOPPED);
      assert.deepEqual(h.of('/tasks/exit', T, E), []);
      assert.equal(await outcome(h.start(T, E)), 'FAILED_PRECONDITION');
      assert.equal(h.agent.calls.filter((c) => c.method === 'signalProcess').length, 0, 'no signal to the guest');
    } finally {
      await h.close();
    }
  });

  it('Delete of a never-started exec answers status 0 and Wait returns', async () => {
    const h = Harness.create();
    try {
      await execIn(h, 'created');
      const w = h.wait(T, E);
      const d = await h.delete(T, E);
      assert.equal(d.exitStatus, 0);
      assert.equal(await w, 0);
      assert.equal(await outcome(() => h.state(T, E)), 'NOT_FOUND');
    } finally {
      await h.close();
    }
  });

  it('Delete of a created init kills it in the guest, publishes its TaskExit, then TaskDelete', async () => {
    const h = Harness.create();
    try {
      await initIn(h, 'created');
      const d = await h.delete(T);
      assert.equal(d.exitStatus, 137);
      const exit = h.of('/tasks/exit', T, T);
      const del = h.of('/tasks/delete', T);
      assert.equal(exit.length, 1);
      assert.equal(del.length, 1);
      assert.ok(exit[0]!.seq < del[0]!.seq);
      assert.equal(h.agent.containers.has(T), false, 'the container is gone from the guest');
    } finally {
      await h.close();
    }
  });

  it('duplicate ids: Create and Exec answer AlreadyExists, also while the first is in flight', async () => {
    const h = Harness.create();
    try {
      await h.create('keeper');
      const gate = h.agent.gate('createContainer');
      const first = h.create(T);
      await gate.reached;
      assert.equal(await outcome(h.create(T)), 'ALREADY_EXISTS');
      assert.equal(await outcome(() => h.state(T)), 'NOT_FOUND', 'a task is visible only once Create returned');
      gate.release();
      await first;
      await h.start(T);
      const eg = h.agent.gate('execProcess');
      const e1 = h.exec(T, E);
      await eg.reached;
      assert.equal(await outcome(h.exec(T, E)), 'ALREADY_EXISTS');
      eg.release();
      await e1;
      assert.equal(await outcome(h.exec(T, E)), 'ALREADY_EXISTS');
    } finally {
      await h.close();
    }
  });

  it('invalid input: bad ids, signal 0, missing exec spec, oversized pty', async () => {
    const h = Harness.create();
    try {
      await initIn(h, 'running');
      assert.equal(await outcome(h.start('../x')), 'INVALID_ARGUMENT');
      assert.equal(await outcome(h.kill(T, '', 0)), 'INVALID_ARGUMENT');
      assert.equal(await outcome(h.exec(T, 'bad/id')), 'INVALID_ARGUMENT');
      assert.equal(await outcome(h.svc.checkpoint.bind(h.svc)), 'UNIMPLEMENTED');
    } finally {
      await h.close();
    }
  });
});
