// The process state machine of the Task service: one table, one transition function. Every RPC and every
// internal event (exit observed, start failed, sandbox gone) asks `transition` before it acts, so an illegal
// move is refused in one place with the gRPC code containerd expects:
//   NotFound            the process is gone (deleted), or Kill/Stats of a process that already exited (CRI
//                       ignores both);
//   FailedPrecondition  the process exists but is in the wrong state (Start twice, Delete while running...);
//   AlreadyExists       is not a state question (duplicate ids): the service checks it when it registers ids.
//
//   init:  created --start--> running --pause--> paused --resume--> running
//          created|running|paused --exit--> exited --delete--> deleted;   created --delete--> deleted (killed first)
//   exec:  created --start--> running --exit--> exited --delete--> deleted
//          created --kill|startFailed--> exited (status 1, no TaskExit: nothing was started; hcsshim's rule)
//          created --delete--> deleted (status 0, as hcsshim's DeleteExec of a created exec)
//
// Operations that do not move the state (kill of a running process, resize, closeIO, stats...) are in the
// table as self-moves, so "is this allowed now" has one answer too. Serialisation of the RPCs that await the
// agent is ProcessLock's job (below): the state cannot change under an operation except by an exit.
import { failedPrecondition, notFound, type TaskError } from './errors.js';

export type ProcState = 'created' | 'running' | 'paused' | 'exited' | 'deleted';
export type ProcKind = 'init' | 'exec';

export type ProcEvent =
  /** Start succeeded in the agent. */
  | 'start'
  /** Start failed in the agent (execs only: the exec is finished with status 1). */
  | 'startFailed'
  | 'kill'
  | 'pause'
  | 'resume'
  /** The process was seen to exit (agent wait, sandbox gone, killed before start). */
  | 'exit'
  | 'delete'
  | 'resizePty'
  | 'closeIO'
  | 'wait'
  | 'state'
  /** Task-level operations on the init process. */
  | 'exec'
  | 'update'
  | 'stats';

/** Allowed moves: event -> (state -> next state), per kind. A missing entry is illegal. */
type Moves = Partial<Record<ProcEvent, Partial<Record<ProcState, ProcState>>>>;

const LIVE = { created: 'created', running: 'running', paused: 'paused' } as const;
const SEEN = { ...LIVE, exited: 'exited' } as const;

const INIT: Moves = {
  start: { created: 'running' },
  kill: LIVE,
  pause: { running: 'paused' },
  resume: { paused: 'running' },
  exit: { created: 'exited', running: 'exited', paused: 'exited' },
  delete: { created: 'deleted', exited: 'deleted' },
  resizePty: { created: 'created', running: 'running', paused: 'paused' },
  closeIO: SEEN,
  wait: SEEN,
  state: SEEN,
  exec: { running: 'running' },
  update: LIVE,
  stats: LIVE,
};

const EXEC: Moves = {
  start: { created: 'running' },
  startFailed: { created: 'exited' },
  kill: { created: 'exited', running: 'running' },
  exit: { created: 'exited', running: 'exited' },
  delete: { created: 'deleted', exited: 'deleted' },
  resizePty: { created: 'created', running: 'running' },
  closeIO: SEEN,
  wait: SEEN,
  state: SEEN,
};

export interface ProcRef {
  kind: ProcKind;
  state: ProcState;
  /** For messages: the exec id, or the container id for init. */
  id: string;
}

/** Why `event` is refused in `state`, with the code containerd expects. */
function refusal(p: ProcRef, event: ProcEvent): TaskError {
  const what = p.kind === 'init' ? `task ${p.id}` : `exec ${p.id}`;
  if (p.state === 'deleted') return notFound(`${what} does not exist (deleted)`);
  // Kill of a finished process is NotFound (CRI ignores it); so are Stats (CRI skips NotFound silently).
  if ((event === 'kill' || event === 'stats') && p.state === 'exited')
    return notFound(`${what}: process already finished`);
  if (p.kind === 'exec' && (event === 'pause' || event === 'resume' || event === 'update' || event === 'stats'))
    return failedPrecondition(`${event} applies to tasks, not to exec ${p.id}`);
  return failedPrecondition(`${what} is ${p.state}: cannot ${event}`);
}

/** The next state after `event`, or throws the TaskError (with its gRPC code) that refuses the move. */
export function transition(p: ProcRef, event: ProcEvent): ProcState {
  const next = (p.kind === 'init' ? INIT : EXEC)[event]?.[p.state];
  if (next === undefined) throw refusal(p, event);
  return next;
}

/** Whether `event` is legal now (for internal events that are ignored rather than refused). */
export function allows(p: ProcRef, event: ProcEvent): boolean {
  return (p.kind === 'init' ? INIT : EXEC)[event]?.[p.state] !== undefined;
}

/** States a process can be in while its guest process may still run. */
export function isLive(s: ProcState): boolean {
  return s === 'created' || s === 'running' || s === 'paused';
}

/**
 * Per-process serialisation of the RPCs that await the agent (Start, Kill, Delete, CloseIO, ResizePty,
 * Pause/Resume, Update): each runs alone, in arrival order, so Kill during Start waits for Start's outcome
 * and then acts on the state Start left (runc holds its process mutex across Start and Kill; hcsshim too).
 * Wait and State never take it: Wait blocks on the exit, State must answer within 2 s.
 */
export class ProcessLock {
  private tail: Promise<unknown> = Promise.resolve();

  run<T>(fn: () => Promise<T>): Promise<T> {
    const result = this.tail.then(fn);
    // The caller gets `result` and its error; the tail only orders the next call after this one settled.
    this.tail = result.catch(() => undefined);
    return result;
  }
}
