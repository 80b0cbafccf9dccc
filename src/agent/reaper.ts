// Exit watching and zombie reaping for the agent, a child subreaper (and, in the UVM, PID 1's child):
// container inits and detached execs are orphaned when `runc` exits and reparented to us, and so is every
// process orphaned inside a container whose pid namespace ends, or any grandchild of a helper we ran.
// libuv only reaps the children it spawned, so on every SIGCHLD (signals coalesce) and on a slow timer we:
//   - waitpid each watched pid and hand its status to its watcher;
//   - reap every other zombie child that libuv does not own (libuv's own children must be left to it:
//     reaping one would lose its exit for Node's ChildProcess; trackSpawnedChildren() records them).
// The zombie list comes from /proc/self/task/*/children (each thread's children; reparented orphans land
// on any of them).
import { ChildProcess } from 'node:child_process';
import { readdirSync, readFileSync } from 'node:fs';
import { waitNoHang, type WaitResult } from './sys.js';

export interface ExitInfo {
  status: number;
  exitedAt: Date;
}

/** Pids watched by any Reaper of this process, and holds of any: adopted reaping is process-wide. */
const allWatched = new Set<number>();
let allHolds = 0;

/** Pids of live children spawned through node:child_process (libuv reaps those). */
const spawned = new Set<number>();
let tracking = false;

/**
 * Records every child spawned through node:child_process in this process until libuv reaped it, so that
 * the reaper never steals one. Idempotent; call before the first spawn.
 */
export function trackSpawnedChildren(): void {
  if (tracking) return;
  tracking = true;
  const proto = ChildProcess.prototype as unknown as { spawn: (this: ChildProcess, ...a: unknown[]) => unknown };
  const orig = proto.spawn;
  proto.spawn = function (this: ChildProcess, ...args: unknown[]) {
    const r = orig.apply(this, args);
    const pid = this.pid;
    if (pid !== undefined) {
      spawned.add(pid);
      this.once('exit', () => spawned.delete(pid));
    }
    return r;
  };
}

export function isSpawnedChild(pid: number): boolean {
  return spawned.has(pid);
}

/** This process's children (every thread's), from procfs. */
export function childPids(): number[] {
  const out: number[] = [];
  let tids: string[];
  try {
    tids = readdirSync('/proc/self/task');
  } catch {
    return out;
  }
  for (const tid of tids) {
    try {
      for (const p of readFileSync(`/proc/self/task/${tid}/children`, 'utf8').split(' '))
        if (p.trim()) out.push(Number(p));
    } catch {
      // thread gone, or no CONFIG_PROC_CHILDREN
    }
  }
  return out;
}

export function isZombie(pid: number): boolean {
  try {
    const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
    return stat.slice(stat.lastIndexOf(')') + 2, stat.lastIndexOf(')') + 3) === 'Z';
  } catch {
    return false;
  }
}

export interface ReaperDeps {
  /** waitpid(pid, WNOHANG): undefined while running, null when not our child. */
  wait(pid: number): WaitResult | undefined | null;
  children(): number[];
  isZombie(pid: number): boolean;
  /** Children libuv owns (never reaped here). */
  owned(pid: number): boolean;
}

const defaultDeps: ReaperDeps = { wait: waitNoHang, children: childPids, isZombie, owned: isSpawnedChild };

export class Reaper {
  private readonly watched = new Map<number, (e: ExitInfo) => void>();
  private readonly onSignal = (): void => this.poll();
  private timer: NodeJS.Timeout | undefined;
  private readonly deps: ReaperDeps;
  /** Zombies reaped that no watcher asked for. */
  adoptedReaped = 0;

  constructor(
    deps: Partial<ReaperDeps> | ((pid: number) => WaitResult | undefined | null) = {},
    private readonly intervalMs = 1000,
  ) {
    this.deps = { ...defaultDeps, ...(typeof deps === 'function' ? { wait: deps, children: () => [] } : deps) };
  }

  /** Listens for SIGCHLD (and polls slowly) for the life of the process: zombies can appear at any time. */
  start(): void {
    if (this.timer) return;
    process.on('SIGCHLD', this.onSignal);
    this.timer = setInterval(() => this.poll(), this.intervalMs);
    this.timer.unref();
  }

  stop(): void {
    process.off('SIGCHLD', this.onSignal);
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  /** Resolves when `pid` (a child of this process) exits. A pid that already exited is reaped at once. */
  watch(pid: number): Promise<ExitInfo> {
    return new Promise((resolve) => {
      this.watched.set(pid, resolve);
      allWatched.add(pid);
      this.start();
      this.poll();
    });
  }

  /**
   * While held, unwatched zombies are left alone: a process that is being started (runc exec --detach) may
   * exit before its pid is known and watched; its status must go to its watcher. Returns the release.
   */
  hold(): () => void {
    allHolds++;
    let released = false;
    return () => {
      if (released) return;
      released = true;
      allHolds--;
      if (allHolds === 0) this.poll();
    };
  }

  poll(): void {
    for (const [pid, resolve] of [...this.watched]) {
      const r = this.deps.wait(pid);
      if (r === undefined) continue;
      this.watched.delete(pid);
      allWatched.delete(pid);
      // null: not our child any more (someone else reaped it); report it as killed.
      resolve({ status: r === null ? 255 : r.status, exitedAt: new Date() });
    }
    if (allHolds > 0) return;
    for (const pid of this.deps.children()) {
      if (allWatched.has(pid) || this.deps.owned(pid) || !this.deps.isZombie(pid)) continue;
      if (this.deps.wait(pid)) this.adoptedReaped++;
    }
  }

  get size(): number {
    return this.watched.size;
  }
}
