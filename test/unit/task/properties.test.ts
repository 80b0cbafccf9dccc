// Property-based tests of the Task service: fast-check generates sequences of RPCs (some awaited, some left in
// flight so they interleave), guest-side exits and sandbox crashes, and a stream of agent delays and failures
// that the fake agent applies call by call. Whatever the sequence:
//   1. a process never reports an exit twice, and a never-started exec reports none;
//   2. no exit is lost: every process that was started gets exactly one TaskExit, after its start event
//      (checked once the run is over and the sandbox has been crashed, which ends everything);
//   3. Wait always returns, with the status of the published TaskExit;
//   4. a process is in one state at a time: State agrees with the events published before it was asked
//      (STOPPED once its TaskExit is out, with that status), and at rest the shim and the guest agree on which
//      processes run;
//   5. exits of a task's execs are published before its init's, and init's before its TaskDelete.
import assert from 'node:assert/strict';
import fc from 'fast-check';
import { Status } from '../../../src/gen/containerd/types/task/task_pb.js';
import { Code, TtrpcError } from '../../../src/ttrpc/index.js';
import type { AgentMethod } from '../../helpers/fake-sandbox.js';
import { Harness, outcome, shortDeadlines, type Event } from './harness.js';

const TASKS = ['t1', 't2'] as const;
const EXECS = ['', 'e1', 'e2'] as const;

type Op =
  | { op: 'create'; task: string }
  | { op: 'start' | 'kill' | 'delete' | 'wait' | 'state' | 'closeIO' | 'resize'; task: string; exec: string }
  | { op: 'exec'; task: string; exec: string }
  | { op: 'pause' | 'resume'; task: string }
  | { op: 'guestExit'; task: string; exec: string; status: number }
  | { op: 'crash' };

interface Step {
  op: Op;
  /** Left in flight (not awaited before the next step). */
  concurrent: boolean;
}

const task = fc.constantFrom(...TASKS);
const anyExec = fc.constantFrom(...EXECS);
const execId = fc.constantFrom('e1', 'e2');

const opArb: fc.Arbitrary<Op> = fc.oneof(
  { weight: 3, arbitrary: fc.record({ op: fc.constant('create' as const), task }) },
  { weight: 4, arbitrary: fc.record({ op: fc.constant('start' as const), task, exec: anyExec }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('exec' as const), task, exec: execId }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('kill' as const), task, exec: anyExec }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('delete' as const), task, exec: anyExec }) },
  { weight: 3, arbitrary: fc.record({ op: fc.constant('wait' as const), task, exec: anyExec }) },
  { weight: 2, arbitrary: fc.record({ op: fc.constant('state' as const), task, exec: anyExec }) },
  {
    weight: 1,
    arbitrary: fc.record({ op: fc.constantFrom('closeIO' as const, 'resize' as const), task, exec: anyExec }),
  },
  { weight: 1, arbitrary: fc.record({ op: fc.constantFrom('pause' as const, 'resume' as const), task }) },
  {
    weight: 2,
    arbitrary: fc.record({
      op: fc.constant('guestExit' as const),
      task,
      exec: anyExec,
      status: fc.integer({ min: 0, max: 3 }),
    }),
  },
);

/** Rare: a sandbox crash ends the pod, and most of a run after it is refused. */
const withCrash: fc.Arbitrary<Op> = fc.oneof(
  { weight: 40, arbitrary: opArb },
  { weight: 1, arbitrary: fc.constant({ op: 'crash' as const }) },
);

/**
 * One process's life as ops in order (Exec, Start, a Wait, its end by Kill or by itself, Delete), each part
 * present or not. Lives of several processes are then interleaved at random, with noise ops in between.
 */
function lifeArb(t: string, exec: string, alreadyStarted: boolean): fc.Arbitrary<Op[]> {
  return fc
    .record({
      start: fc.integer({ min: 0, max: 5 }).map((n) => n > 0),
      waitFirst: fc.boolean(),
      end: fc.constantFrom('kill', 'guestExit', 'none'),
      status: fc.integer({ min: 0, max: 3 }),
      del: fc.integer({ min: 0, max: 3 }).map((n) => n > 0),
    })
    .map((r) => {
      const ops: Op[] = [];
      if (exec !== '') ops.push({ op: 'exec', task: t, exec });
      if (r.start && !alreadyStarted) ops.push({ op: 'start', task: t, exec });
      if (r.waitFirst) ops.push({ op: 'wait', task: t, exec });
      if (r.end === 'kill') ops.push({ op: 'kill', task: t, exec });
      if (r.end === 'guestExit') ops.push({ op: 'guestExit', task: t, exec, status: r.status });
      if (!r.waitFirst) ops.push({ op: 'wait', task: t, exec });
      ops.push({ op: 'state', task: t, exec });
      if (r.del) ops.push({ op: 'delete', task: t, exec });
      return ops;
    });
}

function interleave(lists: Op[][], picks: number[], flags: boolean[]): Step[] {
  const queues = lists.map((l) => [...l]);
  const out: Step[] = [];
  let i = 0;
  for (;;) {
    const open = queues.filter((q) => q.length > 0);
    if (open.length === 0) return out;
    const q = open[(picks[i % picks.length] ?? 0) % open.length]!;
    out.push({ op: q.shift()!, concurrent: flags[i % flags.length] ?? false });
    i++;
  }
}

const stepsArb: fc.Arbitrary<Step[]> = fc
  .tuple(
    lifeArb('t1', '', true),
    lifeArb('t2', '', false),
    lifeArb('t1', 'e1', false),
    lifeArb('t1', 'e2', false),
    lifeArb('t2', 'e1', false),
    fc.array(withCrash, { maxLength: 12 }),
    fc.array(fc.nat(), { minLength: 1, maxLength: 64 }),
    fc.array(fc.boolean(), { minLength: 1, maxLength: 64 }),
  )
  .map(([a, b, c, d, e, noise, picks, flags]) => interleave([a, b, c, d, e, noise], picks, flags));

/** Two tasks in one pod, the first running: the random steps start from a pod with something in it. */
const POD_UP: Step[] = [
  { op: { op: 'create', task: 't1' }, concurrent: false },
  { op: { op: 'start', task: 't1', exec: '' }, concurrent: false },
  { op: { op: 'create', task: 't2' }, concurrent: false },
];

/** Per agent call: a delay, and for calls that may fail, whether this one does. */
const faultsArb = fc.array(
  fc.record({ delayMs: fc.integer({ min: 0, max: 4 }), fail: fc.integer({ min: 0, max: 9 }).map((n) => n === 0) }),
  { minLength: 1, maxLength: 64 },
);

const FALLIBLE: ReadonlySet<AgentMethod> = new Set([
  'createContainer',
  'startProcess',
  'execProcess',
  'signalProcess',
  'pauseContainer',
  'resumeContainer',
  'resizePty',
]);

/** A process incarnation: its events from TaskCreate / TaskExecAdded up to the next one. */
interface Life {
  key: string;
  events: Event[];
}

function keyOf(e: Event): string {
  const id = e.id || e.containerId; // TaskCreate/Start/Delete carry no id: they are the init's
  return `${e.containerId}/${id}`;
}

function lives(events: Event[]): Life[] {
  const open = new Map<string, Life>();
  const out: Life[] = [];
  for (const e of events) {
    const key = keyOf(e);
    if (e.topic === '/tasks/create' || e.topic === '/tasks/exec-added') {
      const l = { key, events: [e] };
      open.set(key, l);
      out.push(l);
    } else open.get(key)?.events.push(e);
  }
  return out;
}

async function runSteps(steps: Step[], faults: Array<{ delayMs: number; fail: boolean }>): Promise<void> {
  const h = Harness.create({ deadlines: shortDeadlines(1000) });
  try {
    let n = 0;
    const fault = (m: AgentMethod) => {
      if (m === 'waitProcess') return undefined;
      const f = faults[n++ % faults.length]!;
      return {
        delayMs: f.delayMs,
        error: f.fail && FALLIBLE.has(m) ? new TtrpcError(Code.INTERNAL, `injected ${m} failure`) : undefined,
      };
    };
    const prepare = (): void => {
      for (const f of h.fakes) f.agent.script = fault;
    };
    const waits: Array<{ key: string; result: Promise<number | undefined>; at: number }> = [];
    const stateChecks: Array<() => void> = [];
    const inflight: Array<Promise<unknown>> = [];

    const perform = async (op: Op): Promise<unknown> => {
      prepare();
      switch (op.op) {
        case 'create':
          return outcome(h.create(op.task));
        case 'start':
          return outcome(h.start(op.task, op.exec));
        case 'exec':
          return outcome(h.exec(op.task, op.exec));
        case 'kill':
          return outcome(h.kill(op.task, op.exec, 9));
        case 'delete':
          return outcome(h.delete(op.task, op.exec));
        case 'closeIO':
          return outcome(h.closeIO(op.task, op.exec));
        case 'resize':
          return outcome(h.resize(op.task, op.exec));
        case 'pause':
          return outcome(h.pause(op.task));
        case 'resume':
          return outcome(h.resume(op.task));
        case 'wait': {
          const key = `${op.task}/${op.exec || op.task}`;
          const at = h.events.length;
          const result = h.wait(op.task, op.exec).then(
            (s) => s,
            () => undefined, // NotFound: no such process
          );
          waits.push({ key, result, at });
          return undefined; // Wait blocks until the exit: never awaited in line, checked at the end
        }
        case 'state': {
          const before = h.events.length;
          let s: ReturnType<Harness['state']>;
          try {
            s = h.state(op.task, op.exec);
          } catch {
            return 'NOT_FOUND';
          }
          const key = `${op.task}/${op.exec || op.task}`;
          stateChecks.push(() => {
            const life = lives(h.events.slice(0, before))
              .filter((l) => l.key === key)
              .at(-1);
            const exit = life?.events.find((e) => e.topic === '/tasks/exit');
            if (exit) {
              assert.equal(s.status, Status.STOPPED, `${key}: State says ${Status[s.status]} after its TaskExit`);
              assert.equal(s.exitStatus, exit.exitStatus, `${key}: State's exit status is the published one`);
            }
          });
          return s.status;
        }
        case 'guestExit':
          for (const f of h.fakes) f.agent.exitProcess(op.task, op.exec, op.status);
          return undefined;
        case 'crash':
          if (h.fakes.length > 0 && !h.fake.ended) await h.fake.crash();
          return undefined;
      }
    };

    for (const s of steps) {
      const p = perform(s.op);
      if (s.concurrent) inflight.push(p);
      else await p;
    }
    await Promise.allSettled(inflight);
    for (const check of stateChecks) check();

    // At rest: the shim and the guest agree on what runs (exits travel asynchronously: give them time).
    const disagreement = (): string[] => {
      const out: string[] = [];
      const guest = h.fakes.length > 0 && !h.fake.ended ? h.agent : undefined;
      for (const t of TASKS)
        for (const e of EXECS) {
          let st: Status;
          try {
            st = h.state(t, e).status;
          } catch {
            continue;
          }
          const c = guest?.containers.get(t);
          const gp = e === '' ? c?.init : c?.execs.get(e);
          const guestRuns = gp?.status === 'running';
          if ((st === Status.RUNNING || st === Status.PAUSED) !== guestRuns)
            out.push(`${t}/${e || t}: shim ${Status[st]}, guest ${gp?.status ?? 'none'}`);
        }
      return out;
    };
    for (let i = 0; i < 200 && disagreement().length > 0; i++) await new Promise((r) => setTimeout(r, 10));
    assert.deepEqual(disagreement(), []);

    // The end: the sandbox dies with everything in it; every started process must now have its one exit.
    if (h.fakes.length > 0 && !h.fake.ended) await h.fake.crash('end of run');
    const results = await Promise.all(waits.map((w) => w.result));

    for (const l of lives(h.events)) {
      const exits = l.events.filter((e) => e.topic === '/tasks/exit');
      const starts = l.events.filter((e) => e.topic === '/tasks/start' || e.topic === '/tasks/exec-started');
      const isInit = l.events[0]!.topic === '/tasks/create';
      assert.ok(exits.length <= 1, `${l.key}: ${exits.length} TaskExits`);
      assert.ok(starts.length <= 1, `${l.key}: ${starts.length} start events`);
      if (starts.length === 1) {
        assert.equal(exits.length, 1, `${l.key}: started but its exit was lost`);
        assert.ok(starts[0]!.seq < exits[0]!.seq, `${l.key}: TaskExit before its start event`);
      }
      if (!isInit) assert.equal(exits.length, starts.length, `${l.key}: a never-started exec reported an exit`);
      const del = l.events.find((e) => e.topic === '/tasks/delete');
      if (isInit) {
        assert.equal(exits.length, 1, `${l.key}: a task (TaskCreate published) ended without its TaskExit`);
        if (del) assert.ok(exits[0]!.seq < del.seq, `${l.key}: TaskDelete before TaskExit`);
        // Its execs' exits first.
        const [cid] = l.key.split('/');
        const from = l.events[0]!.seq;
        for (const x of h.events)
          if (x.topic === '/tasks/exit' && x.containerId === cid && x.id !== cid && x.seq > from)
            if (!del || x.seq < del.seq)
              assert.ok(x.seq < exits[0]!.seq, `${cid}: exec ${x.id}'s TaskExit after init's`);
      }
    }
    waits.forEach((w, i) => {
      const r = results[i];
      if (r === undefined) return;
      // The incarnation the Wait was issued against: the last one begun before it.
      const life = lives(h.events)
        .filter((l) => l.key === w.key && l.events[0]!.seq < w.at)
        .at(-1);
      const exit = life?.events.find((e) => e.topic === '/tasks/exit');
      if (exit) assert.equal(r, exit.exitStatus, `${w.key}: Wait returned ${r}, TaskExit said ${exit.exitStatus}`);
    });
  } finally {
    await h.close();
  }
}

describe('Task service properties (fast-check, fake sandbox)', function () {
  this.timeout(300_000);

  it('random RPC sequences with agent delays and failures keep every process in one state, each exit reported once and never lost, Wait always returning', async () => {
    await fc.assert(
      fc.asyncProperty(stepsArb, faultsArb, async (steps, faults) => runSteps([...POD_UP, ...steps], faults)),
      { numRuns: 60, timeout: 8000 },
    );
  });

  it('the same with Kill, Start and Delete racing on one exec (high contention)', async () => {
    const racing = fc.array(
      fc.record({
        op: fc.oneof(
          fc.record({
            op: fc.constantFrom('start' as const, 'kill' as const, 'delete' as const),
            task: fc.constant('t1'),
            exec: fc.constant('e1'),
          }),
          fc.record({ op: fc.constant('wait' as const), task: fc.constant('t1'), exec: fc.constant('e1') }),
          fc.record({ op: fc.constant('exec' as const), task: fc.constant('t1'), exec: fc.constant('e1') }),
          fc.record({
            op: fc.constant('guestExit' as const),
            task: fc.constant('t1'),
            exec: fc.constant('e1'),
            status: fc.integer({ min: 0, max: 3 }),
          }),
        ),
        concurrent: fc.boolean(),
      }),
      { minLength: 1, maxLength: 20 },
    );
    const prefix: Step[] = [...POD_UP, { op: { op: 'exec', task: 't1', exec: 'e1' }, concurrent: false }];
    await fc.assert(
      fc.asyncProperty(racing, faultsArb, async (steps, faults) => runSteps([...prefix, ...steps], faults)),
      { numRuns: 60, timeout: 8000 },
    );
  });
});
