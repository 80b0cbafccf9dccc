// What the Task service keeps per pod, task and process. State changes go through state.ts's transition
// function only (Proc.move); the exit latch (Proc.exited) resolves exactly once, when the process leaves the
// live states, whatever the path (exit seen, killed before start, start failed, deleted, sandbox gone).
import type { Sandbox } from '../sandbox/index.js';
import type { Logger } from '../util/log.js';
import type { AgentClient } from './agent-client.js';
import { ProcessLock, transition, type ProcEvent, type ProcKind, type ProcRef, type ProcState } from './state.js';
import type { StdioPaths, StdioRelay } from './stdio.js';
import type { PreparedFs } from './uvm-fs.js';
import type { PreparedRootfs } from '../sandbox/index.js';

export class Proc implements ProcRef {
  private current: ProcState = 'created';
  pid = 0;
  /** 255 with no exit time until the process exited (containerd's and hcsshim's convention). */
  exitStatus = 255;
  exitedAt: Date | undefined;
  /** TaskStart / TaskExecStarted was published: its exit must be published too (and only then, for execs). */
  started = false;
  /** Serialises Start, Kill, Delete, CloseIO, ResizePty (and the task-level RPCs on init). */
  readonly lock = new ProcessLock();
  /** Set while Start awaits the agent: an exit seen meanwhile is recorded only after Start's outcome. */
  starting: Promise<void> | undefined;
  /** Resolves once the process is no longer live (exited, or deleted before it ran). */
  readonly exited: Promise<void>;
  private resolveExited!: () => void;

  constructor(
    readonly task: Task,
    readonly execId: string,
    readonly paths: StdioPaths,
    readonly stdio: StdioRelay,
  ) {
    this.exited = new Promise((r) => (this.resolveExited = r));
  }

  get kind(): ProcKind {
    return this.execId === '' ? 'init' : 'exec';
  }

  /** The exec id, or the container id for init (TaskExit's `id`). */
  get id(): string {
    return this.execId || this.task.id;
  }

  get state(): ProcState {
    return this.current;
  }

  /** Applies `event` through the one transition function (throws the refusal) and returns the new state. */
  move(event: ProcEvent): ProcState {
    const next = transition(this, event);
    if (next !== this.current) {
      this.current = next;
      if (next === 'exited' || next === 'deleted') this.resolveExited();
    }
    return next;
  }

  /** Throws the refusal if `event` is not legal now, without moving. */
  check(event: ProcEvent): void {
    transition(this, event);
  }
}

export class Task {
  readonly execs = new Map<string, Proc>();
  /** Exec ids whose Exec RPC is still in flight: taken (AlreadyExists), not yet visible. */
  readonly addingExecs = new Set<string>();
  init!: Proc;
  /** VM sandboxes: the task's host rootfs mount and shares (uvm-fs.ts). */
  fs: PreparedFs | undefined;
  /** A root filesystem the backend attached itself (Sandbox.prepareRootfs), released at Delete. */
  attachedRootfs: PreparedRootfs | undefined;

  constructor(
    readonly id: string,
    readonly bundle: string,
    readonly pod: Pod,
    readonly log: Logger,
  ) {}

  /** Every process, execs first (their exits are reported before init's). */
  get procs(): Proc[] {
    return [...this.execs.values(), this.init];
  }
}

export class Pod {
  readonly tasks = new Map<string, Task>();
  /** Set once the sandbox ended (crash, forced stop): no new work goes to it. */
  gone = false;
  /** Set once the last task's Delete began stopping the sandbox. */
  stopping: Promise<void> | undefined;

  constructor(
    readonly id: string,
    readonly sandbox: Sandbox,
    readonly agent: AgentClient,
    readonly pids: number[],
  ) {}
}
