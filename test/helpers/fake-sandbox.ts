// A FAKE sandbox for unit tests of the Task service: no VM, no runc, no root. It is not a backend and never
// ships. Its "guest agent" is an in-process ttrpc server (the real ttrpc stack over a unix socket in a temp
// dir) that keeps containers and processes in memory with the agent's rules (created -> running -> exited,
// signals end processes, an init's exit ends its execs), plus knobs: per-call delays and failures, gates that
// hold a call until the test releases it, calls that never answer, processes that exit on their own, and a
// crash of the whole sandbox. Its lifecycle is the shared one (src/sandbox/lifecycle.ts).
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { timestampFromDate } from '@bufbuild/protobuf/wkt';
import { Agent as AgentDesc } from '../../src/gen/agent/v1/agent_pb.js';
import { SandboxLifecycle } from '../../src/sandbox/lifecycle.js';
import type {
  BootedSandbox,
  Sandbox,
  SandboxExitReason,
  SandboxOptions,
  SandboxRecord,
  SandboxStats,
  Share,
} from '../../src/sandbox/sandbox.js';
import { Code, TtrpcClient, TtrpcError, TtrpcServer, type CallContext } from '../../src/ttrpc/index.js';
import { silentLogger } from '../../src/util/log.js';

export type AgentMethod =
  | 'getInfo'
  | 'addShare'
  | 'removeShare'
  | 'createContainer'
  | 'startProcess'
  | 'execProcess'
  | 'signalProcess'
  | 'waitProcess'
  | 'resizePty'
  | 'closeStdin'
  | 'pauseContainer'
  | 'resumeContainer'
  | 'updateContainer'
  | 'containerStats'
  | 'listProcesses'
  | 'deleteProcess'
  | 'deleteContainer'
  | 'shutdown';

/** What the fake agent does with one call before (or instead of) serving it. */
export interface Fault {
  /** Answer only after this many ms. */
  delayMs?: number;
  /** Answer with this error instead (after the delay). */
  error?: TtrpcError;
  /** Never answer (the call ends only when the connection does). */
  hang?: boolean;
}

type ExitInfo = { status: number; at: Date };

export class FakeProcess {
  status: 'created' | 'running' | 'exited' = 'created';
  exit: ExitInfo | undefined;
  readonly exited: Promise<ExitInfo>;
  private resolve!: (e: ExitInfo) => void;
  constructor(
    readonly containerId: string,
    readonly execId: string,
    readonly pid: number,
  ) {
    this.exited = new Promise((r) => (this.resolve = r));
  }
  end(status: number): boolean {
    if (this.status === 'exited') return false;
    this.status = 'exited';
    this.exit = { status, at: new Date() };
    this.resolve(this.exit);
    return true;
  }
}

export class FakeContainer {
  readonly execs = new Map<string, FakeProcess>();
  paused = false;
  constructor(
    readonly id: string,
    readonly init: FakeProcess,
  ) {}
  process(execId: string): FakeProcess {
    const p = execId === '' ? this.init : this.execs.get(execId);
    if (!p) throw new TtrpcError(Code.NOT_FOUND, `exec ${execId} not found in container ${this.id}`);
    return p;
  }
}

export interface Gate {
  /** Resolves when a call reached the gate. */
  readonly reached: Promise<void>;
  /** Lets the held call proceed (optionally failing it). */
  release(fault?: Fault): void;
}

/** The fake guest: containers and processes, and the rules the real agent follows. */
export class FakeAgent {
  readonly containers = new Map<string, FakeContainer>();
  /** Every call received, in order (method and container/exec ids). */
  readonly calls: Array<{ method: AgentMethod; containerId?: string; execId?: string; signal?: number }> = [];
  /** Per-call fault; the default answers at once. */
  script: (method: AgentMethod, req: { containerId?: string; execId?: string }) => Fault | undefined = () => undefined;
  /** Delay between a fatal signal and the process's exit. */
  exitDelayMs = 0;
  /** Runs when a process started, before Start is answered (e.g. to make it exit first). */
  onStarted: ((p: FakeProcess) => Promise<void> | void) | undefined;
  private nextPid = 1000;
  private readonly gates = new Map<AgentMethod, Array<{ arrive: () => void; wait: Promise<Fault | undefined> }>>();

  /** Holds the next call of `method` until release(). */
  gate(method: AgentMethod): Gate {
    let arrive!: () => void;
    const reached = new Promise<void>((r) => (arrive = r));
    let release!: (f?: Fault) => void;
    const wait = new Promise<Fault | undefined>((r) => (release = r));
    const list = this.gates.get(method) ?? [];
    list.push({ arrive, wait });
    this.gates.set(method, list);
    return { reached, release };
  }

  /** The guest process ends on its own (as if it returned `status`). */
  exitProcess(containerId: string, execId: string, status: number): void {
    const c = this.containers.get(containerId);
    if (!c) return;
    const p = execId === '' ? c.init : c.execs.get(execId);
    if (p && p.status === 'running') this.end(c, p, status);
  }

  private end(c: FakeContainer, p: FakeProcess, status: number): void {
    if (!p.end(status)) return;
    // The container's pid namespace dies with its init: so do its execs.
    if (p.execId === '') for (const e of c.execs.values()) e.end(137);
  }

  container(id: string): FakeContainer {
    const c = this.containers.get(id);
    if (!c) throw new TtrpcError(Code.NOT_FOUND, `container ${id} not found`);
    return c;
  }

  /** Applies the script and the gates to one call; resolves when the call may be served. */
  async enter(method: AgentMethod, req: Record<string, unknown>, ctx: CallContext): Promise<void> {
    this.calls.push({
      method,
      containerId: req.containerId as string | undefined,
      execId: req.execId as string | undefined,
      signal: req.signal as number | undefined,
    });
    const faults: Array<Fault | undefined> = [this.script(method, req)];
    const gate = this.gates.get(method)?.shift();
    if (gate) {
      gate.arrive();
      faults.push(await gate.wait);
    }
    for (const f of faults) {
      if (!f) continue;
      if (f.hang) {
        await new Promise<void>((resolve) => ctx.signal.addEventListener('abort', () => resolve(), { once: true }));
        throw new TtrpcError(Code.UNAVAILABLE, 'connection lost');
      }
      if (f.delayMs) await new Promise((r) => setTimeout(r, f.delayMs));
      if (f.error) throw f.error;
    }
  }

  createContainer(containerId: string): { pid: number; bundle: string } {
    if (this.containers.has(containerId))
      throw new TtrpcError(Code.ALREADY_EXISTS, `container ${containerId} already exists`);
    const c = new FakeContainer(containerId, new FakeProcess(containerId, '', this.nextPid++));
    this.containers.set(containerId, c);
    return { pid: c.init.pid, bundle: `/run/fake/${containerId}` };
  }

  startProcess(containerId: string, execId: string): number {
    const c = this.container(containerId);
    const p = c.process(execId);
    if (p.status !== 'created') throw new TtrpcError(Code.FAILED_PRECONDITION, `process is ${p.status}`);
    if (execId !== '' && c.init.status !== 'running') {
      p.end(1);
      throw new TtrpcError(Code.INTERNAL, 'container is not running');
    }
    p.status = 'running';
    return p.pid;
  }

  execProcess(containerId: string, execId: string): void {
    const c = this.container(containerId);
    if (c.execs.has(execId)) throw new TtrpcError(Code.ALREADY_EXISTS, `exec ${execId} already exists`);
    if (c.init.status === 'exited') throw new TtrpcError(Code.FAILED_PRECONDITION, 'container is not running');
    c.execs.set(execId, new FakeProcess(containerId, execId, this.nextPid++));
  }

  signalProcess(containerId: string, execId: string, signal: number): void {
    const c = this.container(containerId);
    const p = c.process(execId);
    if (p.status === 'exited') throw new TtrpcError(Code.NOT_FOUND, 'process already finished');
    if (p.status === 'created' && execId !== '') throw new TtrpcError(Code.NOT_FOUND, 'process not started');
    if (signal === 9 || signal === 15 || signal === 2) {
      const end = (): void => this.end(c, p, 128 + signal);
      if (this.exitDelayMs > 0) setTimeout(end, this.exitDelayMs);
      else end();
    }
  }

  deleteContainer(containerId: string): void {
    const c = this.container(containerId);
    for (const p of [...c.execs.values(), c.init]) p.end(255);
    this.containers.delete(containerId);
  }

  /** Every process still alive in the guest (for consistency checks). */
  liveProcesses(): FakeProcess[] {
    return [...this.containers.values()].flatMap((c) =>
      [c.init, ...c.execs.values()].filter((p) => p.status !== 'exited'),
    );
  }

  serve(server: TtrpcServer): void {
    serveFakeAgent(this, server);
  }
}

/** The fake agent's ttrpc service: each method passes the fault script and gates, then applies the model. */
function serveFakeAgent(a: FakeAgent, server: TtrpcServer): void {
  const ok = {};
  server.registerService(AgentDesc, {
    async getInfo(req, ctx) {
      await a.enter('getInfo', req as never, ctx);
      return { version: 'fake', pid: process.pid, cgroupVersion: 2, kernel: 'fake', runcVersion: 'none' };
    },
    async addShare(req, ctx) {
      await a.enter('addShare', req as never, ctx);
      return { guestPath: `/fake/shares/${req.shareId}` };
    },
    async removeShare(req, ctx) {
      await a.enter('removeShare', req as never, ctx);
      return ok;
    },
    async createContainer(req, ctx) {
      await a.enter('createContainer', req as never, ctx);
      return a.createContainer(req.containerId);
    },
    async startProcess(req, ctx) {
      await a.enter('startProcess', req as never, ctx);
      const pid = a.startProcess(req.containerId, req.execId);
      await a.onStarted?.(a.container(req.containerId).process(req.execId));
      return { pid };
    },
    async execProcess(req, ctx) {
      await a.enter('execProcess', req as never, ctx);
      a.execProcess(req.containerId, req.execId);
      return ok;
    },
    async signalProcess(req, ctx) {
      await a.enter('signalProcess', req as never, ctx);
      a.signalProcess(req.containerId, req.execId, req.signal);
      return ok;
    },
    async waitProcess(req, ctx) {
      await a.enter('waitProcess', req as never, ctx);
      const p = a.container(req.containerId).process(req.execId);
      const lost = new Promise<never>((_, reject) =>
        ctx.signal.addEventListener('abort', () => reject(new TtrpcError(Code.UNAVAILABLE, 'lost')), {
          once: true,
        }),
      );
      lost.catch(() => undefined);
      const e = await Promise.race([p.exited, lost]);
      return { exitStatus: e.status, exitedAt: timestampFromDate(e.at) };
    },
    async resizePty(req, ctx) {
      await a.enter('resizePty', req as never, ctx);
      const p = a.container(req.containerId).process(req.execId);
      if (p.status === 'exited') throw new TtrpcError(Code.NOT_FOUND, 'process already finished');
      return ok;
    },
    async closeStdin(req, ctx) {
      await a.enter('closeStdin', req as never, ctx);
      return ok;
    },
    async pauseContainer(req, ctx) {
      await a.enter('pauseContainer', req as never, ctx);
      a.container(req.containerId).paused = true;
      return ok;
    },
    async resumeContainer(req, ctx) {
      await a.enter('resumeContainer', req as never, ctx);
      a.container(req.containerId).paused = false;
      return ok;
    },
    async updateContainer(req, ctx) {
      await a.enter('updateContainer', req as never, ctx);
      a.container(req.containerId);
      return ok;
    },
    async containerStats(req, ctx) {
      await a.enter('containerStats', req as never, ctx);
      a.container(req.containerId);
      return { cgroupVersion: 2 };
    },
    async listProcesses(req, ctx) {
      await a.enter('listProcesses', req as never, ctx);
      const c = a.container(req.containerId);
      return {
        processes: [c.init, ...c.execs.values()]
          .filter((p) => p.status === 'running')
          .map((p) => ({ pid: p.pid, execId: p.execId })),
      };
    },
    async deleteProcess(req, ctx) {
      await a.enter('deleteProcess', req as never, ctx);
      a.container(req.containerId).execs.delete(req.execId);
      return ok;
    },
    async deleteContainer(req, ctx) {
      await a.enter('deleteContainer', req as never, ctx);
      a.deleteContainer(req.containerId);
      return ok;
    },
    async readOutput() {
      // The unit tests give processes no stdio: nothing to relay.
    },
    async subscribeEvents(_req, out) {
      await new Promise<void>((resolve) => out.signal.addEventListener('abort', () => resolve(), { once: true }));
    },
    async shutdown(req, ctx) {
      await a.enter('shutdown', req as never, ctx);
      for (const id of [...a.containers.keys()]) a.deleteContainer(id);
      return ok;
    },
  });
}

/** The fake sandbox: boots by starting the fake agent's ttrpc server; crash() and stop() end it. */
export class FakeSandbox implements Sandbox {
  readonly backend = 'fake';
  readonly isolated = true;
  readonly agent = new FakeAgent();
  readonly life = new SandboxLifecycle(silentLogger);
  readonly shares = new Map<string, string>();
  /** Set to make boot() fail. */
  bootError: Error | undefined;
  /** While set, stop() waits for it before tearing down (a stop in progress). */
  stopHold: Promise<void> | undefined;
  stopCalls: Array<'graceful' | 'force'> = [];
  private server: TtrpcServer | undefined;
  private client: TtrpcClient | undefined;
  private dir: string | undefined;
  private shareSeq = 0;

  constructor(readonly opts: SandboxOptions) {}

  async boot(): Promise<BootedSandbox> {
    this.life.boot();
    if (this.bootError) {
      await this.stop('force');
      throw this.bootError;
    }
    this.dir = mkdtempSync(join(tmpdir(), 'lcow-fake-sandbox-'));
    const path = join(this.dir, 'agent.sock');
    this.server = new TtrpcServer({ logger: silentLogger });
    this.agent.serve(this.server);
    await this.server.serve(path);
    this.client = await TtrpcClient.connect(path);
    this.life.ready();
    return { agent: this.client, pids: [process.pid] };
  }

  async addShare(hostPath: string, _opts: { readOnly: boolean }): Promise<Share> {
    const shareId = `s${++this.shareSeq}`;
    this.shares.set(shareId, hostPath);
    return { shareId, guestPath: `/fake/shares/${shareId}` };
  }

  async removeShare(shareId: string): Promise<void> {
    this.shares.delete(shareId);
  }

  async stats(): Promise<SandboxStats[]> {
    return [];
  }

  onExit(cb: (reason: SandboxExitReason) => void): void {
    this.life.onExit(cb);
  }

  record(): SandboxRecord {
    return { backend: 'fake', id: this.opts.id, stateDir: this.opts.stateDir, pids: [] };
  }

  /** The VM died: the agent connection drops, then the lifecycle ends with a crash. */
  async crash(detail = 'fake crash'): Promise<void> {
    await this.teardown();
    this.life.ended({ code: null, signal: 'SIGKILL', detail });
  }

  async stop(mode: 'graceful' | 'force'): Promise<void> {
    this.stopCalls.push(mode);
    if (this.life.stop()) {
      await this.stopHold;
      await this.teardown();
      this.life.ended({ code: 0, signal: null });
    }
    await this.life.gone;
  }

  private async teardown(): Promise<void> {
    this.client?.close();
    await this.server?.close();
    if (this.dir) rmSync(this.dir, { recursive: true, force: true });
    this.dir = undefined;
  }

  get ended(): boolean {
    return this.life.phase === 'gone';
  }
}

/** A sandbox factory for TaskService that records every fake it made; `prepare` adjusts each before boot. */
export function fakeSandboxFactory(prepare: (s: FakeSandbox) => void = () => undefined): {
  factory: (opts: SandboxOptions) => Promise<Sandbox>;
  made: FakeSandbox[];
} {
  const made: FakeSandbox[] = [];
  return {
    made,
    factory: async (opts) => {
      const s = new FakeSandbox(opts);
      prepare(s);
      made.push(s);
      return s;
    },
  };
}
