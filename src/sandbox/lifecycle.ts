// The pod / utility VM lifecycle every sandbox backend shares: one phase, one transition function, one exit
// notification.
//
//   new --boot--> booting --ready--> ready --stop--> stopping --ended--> gone
//   new|booting|ready --ended--> gone (crashed: the VM or agent died without being asked)
//   new|booting --stop--> stopping (a failed or abandoned boot)
//
// The exit notification is the same in every backend:
//   - each callback registered with onExit runs exactly once, in registration order, also when registered
//     after the end (then on a microtask, never synchronously inside onExit);
//   - it runs after the backend's host side is torn down (the backend calls ended() only then), so a
//     callback may rely on the agent connection being closed;
//   - the reason is 'stopped' when stop() was asked for before the end, otherwise 'crashed' with what is
//     known (exit code, signal, a detail such as "agent connection lost");
//   - stop() of a backend resolves only after the callbacks ran.
// A callback that throws is logged; the others still run.
import type { Logger } from '../util/log.js';
import { SandboxUnavailableError, type SandboxExitReason } from './sandbox.js';

export type SandboxPhase = 'new' | 'booting' | 'ready' | 'stopping' | 'gone';
export type SandboxEvent = 'boot' | 'ready' | 'stop' | 'ended';

const MOVES: Record<SandboxEvent, Partial<Record<SandboxPhase, SandboxPhase>>> = {
  boot: { new: 'booting' },
  ready: { booting: 'ready' },
  stop: { new: 'stopping', booting: 'stopping', ready: 'stopping' },
  ended: { new: 'gone', booting: 'gone', ready: 'gone', stopping: 'gone' },
};

export class IllegalSandboxTransition extends SandboxUnavailableError {}

/** The next phase, or throws IllegalSandboxTransition (mapped to FailedPrecondition at the ttrpc boundary). */
export function sandboxTransition(from: SandboxPhase, event: SandboxEvent): SandboxPhase {
  const next = MOVES[event][from];
  if (next === undefined) throw new IllegalSandboxTransition(`sandbox is ${from}: cannot ${event}`);
  return next;
}

export class SandboxLifecycle {
  private current: SandboxPhase = 'new';
  private reason: SandboxExitReason | undefined;
  private readonly callbacks: Array<(r: SandboxExitReason) => void> = [];
  private resolveGone!: (r: SandboxExitReason) => void;
  /** Resolves with the reason once the sandbox is gone and every exit callback ran. */
  readonly gone: Promise<SandboxExitReason>;

  constructor(private readonly log: Logger) {
    this.gone = new Promise((r) => (this.resolveGone = r));
  }

  get phase(): SandboxPhase {
    return this.current;
  }

  /** new -> booting; throws if the sandbox was booted (or stopped) before. */
  boot(): void {
    this.current = sandboxTransition(this.current, 'boot');
  }

  /** booting -> ready. Throws when the sandbox ended or was stopped meanwhile (the boot must then fail). */
  ready(): void {
    this.current = sandboxTransition(this.current, 'ready');
  }

  /** -> stopping. False when it is already stopping or gone (stop() is idempotent). */
  stop(): boolean {
    if (this.current === 'stopping' || this.current === 'gone') return false;
    this.current = sandboxTransition(this.current, 'stop');
    return true;
  }

  get stopRequested(): boolean {
    return this.current === 'stopping' || this.reason?.kind === 'stopped';
  }

  /**
   * The backend's processes are gone and its host side is torn down: -> gone, and the exit callbacks run.
   * Only the first call counts.
   */
  ended(crash: { code: number | null; signal: string | null; detail?: string }): void {
    if (this.current === 'gone') return;
    const stopped = this.current === 'stopping';
    this.current = sandboxTransition(this.current, 'ended');
    const reason: SandboxExitReason = stopped ? { kind: 'stopped' } : { kind: 'crashed', ...crash };
    this.reason = reason;
    for (const cb of this.callbacks.splice(0)) this.invoke(cb, reason);
    this.resolveGone(reason);
  }

  onExit(cb: (r: SandboxExitReason) => void): void {
    const reason = this.reason;
    if (reason) queueMicrotask(() => this.invoke(cb, reason));
    else this.callbacks.push(cb);
  }

  private invoke(cb: (r: SandboxExitReason) => void, reason: SandboxExitReason): void {
    try {
      cb(reason);
    } catch (err) {
      this.log.error('sandbox exit callback failed', { error: err });
    }
  }
}
