// A TaskService on the fake sandbox (test/helpers/fake-sandbox.ts): bundles in a temp dir, every published
// event decoded and kept in order, one-line helpers per RPC, and the gRPC code an RPC ended with (errors pass
// through toTtrpcError, the service's one mapping at the ttrpc boundary).
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { create, fromBinary, type DescMessage, type MessageShape } from '@bufbuild/protobuf';
import { AnySchema } from '@bufbuild/protobuf/wkt';
import * as ev from '../../../src/gen/containerd/events/task_pb.js';
import * as v2 from '../../../src/gen/containerd/task/v2/shim_pb.js';
import type { AgentDeadlines } from '../../../src/task/agent-client.js';
import { DEFAULT_AGENT_DEADLINES } from '../../../src/task/agent-client.js';
import { toTtrpcError } from '../../../src/task/errors.js';
import { TaskService } from '../../../src/task/service.js';
import { Code } from '../../../src/ttrpc/index.js';
import { silentLogger } from '../../../src/util/log.js';
import { fakeSandboxFactory, type FakeAgent, type FakeSandbox } from '../../helpers/fake-sandbox.js';

export interface Event {
  topic: string;
  containerId: string;
  /** TaskExit: exec id or container id; TaskExecAdded/Started: exec id; else ''. */
  id: string;
  pid: number;
  exitStatus: number;
  seq: number;
}

const SCHEMAS: Record<string, DescMessage> = {
  '/tasks/create': ev.TaskCreateSchema,
  '/tasks/start': ev.TaskStartSchema,
  '/tasks/exit': ev.TaskExitSchema,
  '/tasks/delete': ev.TaskDeleteSchema,
  '/tasks/exec-added': ev.TaskExecAddedSchema,
  '/tasks/exec-started': ev.TaskExecStartedSchema,
  '/tasks/paused': ev.TaskPausedSchema,
  '/tasks/resumed': ev.TaskResumedSchema,
  '/tasks/oom': ev.TaskOOMSchema,
};

export type Outcome = 'OK' | keyof typeof Code;

/** Every deadline short: the tests that need a missed deadline do not wait long. */
export function shortDeadlines(ms: number): AgentDeadlines {
  return Object.fromEntries(Object.keys(DEFAULT_AGENT_DEADLINES).map((k) => [k, ms])) as AgentDeadlines;
}

export class Harness {
  readonly events: Event[] = [];
  readonly svc: TaskService;
  readonly fakes: FakeSandbox[];
  shutdowns = 0;
  private seq = 0;

  private constructor(
    readonly dir: string,
    opts: { deadlines?: AgentDeadlines; prepare?: (s: FakeSandbox) => void },
  ) {
    const { factory, made } = fakeSandboxFactory(opts.prepare);
    this.fakes = made;
    this.svc = new TaskService({
      namespace: 'unit',
      logger: silentLogger,
      publisher: { publish: (topic, _type, payload) => this.record(topic, payload) },
      createSandbox: factory,
      stateRoot: join(dir, 'state'),
      hostCgroupVersion: 2,
      onShutdown: () => this.shutdowns++,
      agentDeadlines: opts.deadlines ?? shortDeadlines(2000),
      exitWaitMs: 1000,
      drainWaitMs: 500,
    });
  }

  static create(opts: { deadlines?: AgentDeadlines; prepare?: (s: FakeSandbox) => void } = {}): Harness {
    return new Harness(mkdtempSync(join(tmpdir(), 'lcow-task-unit-')), opts);
  }

  private record(topic: string, payload: Uint8Array): void {
    const schema = SCHEMAS[topic];
    if (!schema) throw new Error(`unexpected topic ${topic}`);
    const m = fromBinary(schema, payload) as unknown as Record<string, unknown>;
    this.events.push({
      topic,
      containerId: String(m.containerId ?? ''),
      id: String(m.id ?? m.execId ?? ''),
      pid: Number(m.pid ?? 0),
      exitStatus: Number(m.exitStatus ?? 0),
      seq: this.seq++,
    });
  }

  /** The fake behind the current (last booted) pod. */
  get fake(): FakeSandbox {
    const f = this.fakes.at(-1);
    if (!f) throw new Error('no sandbox was made');
    return f;
  }

  get agent(): FakeAgent {
    return this.fake.agent;
  }

  /** Events of one topic (optionally for one container / process id). */
  of(topic: string, containerId?: string, id?: string): Event[] {
    return this.events.filter(
      (e) =>
        e.topic === topic &&
        (containerId === undefined || e.containerId === containerId) &&
        (id === undefined || e.id === id),
    );
  }

  /** A bundle of a task of pod `pod` (default: every task in one pod, 'pod1'). */
  bundle(id: string, opts: { pod?: string } = {}): string {
    const b = join(this.dir, 'bundles', id);
    mkdirSync(join(b, 'rootfs'), { recursive: true });
    const annotations = { 'io.kubernetes.cri.sandbox-id': opts.pod ?? 'pod1' };
    // A new network namespace, as `ctr run` and CRI give: a spec without one asks for the host network (refused).
    const linux = { namespaces: [{ type: 'pid' }, { type: 'network' }] };
    writeFileSync(join(b, 'config.json'), JSON.stringify({ annotations, linux, process: { args: ['sleep', '1'] } }));
    return b;
  }

  async create(id: string, opts: { pod?: string; terminal?: boolean } = {}): Promise<number> {
    const r = await this.svc.create(
      create(v2.CreateTaskRequestSchema, { id, bundle: this.bundle(id, opts), terminal: opts.terminal ?? true }),
    );
    return r.pid ?? 0;
  }

  start(id: string, execId = ''): Promise<number> {
    return this.svc.start(create(v2.StartRequestSchema, { id, execId })).then((r) => r.pid ?? 0);
  }

  exec(id: string, execId: string, terminal = true): Promise<void> {
    const spec = create(AnySchema, {
      typeUrl: 'types.containerd.io/opencontainers/runtime-spec/1/Process',
      value: Buffer.from(JSON.stringify({ args: ['sh'], terminal })),
    });
    return this.svc.exec(create(v2.ExecProcessRequestSchema, { id, execId, terminal, spec }));
  }

  kill(id: string, execId = '', signal = 9): Promise<void> {
    return this.svc.kill(create(v2.KillRequestSchema, { id, execId, signal }));
  }

  delete(id: string, execId = ''): Promise<MessageShape<typeof v2.DeleteResponseSchema>> {
    return this.svc
      .delete(create(v2.DeleteRequestSchema, { id, execId }))
      .then((r) => create(v2.DeleteResponseSchema, r));
  }

  wait(id: string, execId = ''): Promise<number> {
    return this.svc.wait(create(v2.WaitRequestSchema, { id, execId })).then((r) => r.exitStatus ?? 0);
  }

  state(id: string, execId = ''): MessageShape<typeof v2.StateResponseSchema> {
    return create(v2.StateResponseSchema, this.svc.state(create(v2.StateRequestSchema, { id, execId })));
  }

  closeIO(id: string, execId = ''): Promise<void> {
    return this.svc.closeIO(create(v2.CloseIORequestSchema, { id, execId, stdin: true }));
  }

  resize(id: string, execId = ''): Promise<void> {
    return this.svc.resizePty(create(v2.ResizePtyRequestSchema, { id, execId, width: 80, height: 24 }));
  }

  pause(id: string): Promise<void> {
    return this.svc.pause(create(v2.PauseRequestSchema, { id }));
  }

  resume(id: string): Promise<void> {
    return this.svc.resume(create(v2.ResumeRequestSchema, { id }));
  }

  update(id: string): Promise<void> {
    const resources = create(AnySchema, { typeUrl: 'x', value: Buffer.from('{}') });
    return this.svc.update(create(v2.UpdateTaskRequestSchema, { id, resources }));
  }

  stats(id: string): Promise<unknown> {
    return this.svc.stats(create(v2.StatsRequestSchema, { id }));
  }

  pids(id: string): Promise<number[]> {
    return this.svc.pids(create(v2.PidsRequestSchema, { id })).then((r) => (r.processes ?? []).map((p) => p.pid ?? 0));
  }

  shutdown(): void {
    this.svc.shutdown(create(v2.ShutdownRequestSchema, { id: 'x' }));
  }

  async close(): Promise<void> {
    await this.svc.close();
    for (const f of this.fakes) await f.stop('force');
    rmSync(this.dir, { recursive: true, force: true });
  }
}

/** How an RPC ended: 'OK' or the name of its gRPC code. */
export async function outcome(p: Promise<unknown> | (() => unknown)): Promise<Outcome> {
  try {
    await (typeof p === 'function' ? p() : p);
    return 'OK';
  } catch (err) {
    return Code[toTtrpcError(err).code] as keyof typeof Code;
  }
}

/** Lets every pending callback and a few socket round trips run (no timing is asserted on it). */
export async function settle(rounds = 5): Promise<void> {
  for (let i = 0; i < rounds; i++) await new Promise((r) => setTimeout(r, 5));
}

/** Whether `p` is still pending after the event loop had a chance to run. */
export async function pending(p: Promise<unknown>, rounds = 5): Promise<boolean> {
  let done = false;
  p.then(
    () => (done = true),
    () => (done = true),
  );
  await settle(rounds);
  return !done;
}
