// Exit watching for processes the agent adopts as child subreaper (container inits and detached execs,
// whose parent `runc` exits right away). libuv only reaps the children it spawned, so we waitpid the
// adopted pids ourselves on every SIGCHLD (signals coalesce: every watched pid is polled each time),
// plus a slow timer as a safety net.
import { waitNoHang, type WaitResult } from './sys.js';

export interface ExitInfo {
  status: number;
  exitedAt: Date;
}

export class Reaper {
  private readonly watched = new Map<number, (e: ExitInfo) => void>();
  private readonly onSignal = (): void => this.poll();
  private timer: NodeJS.Timeout | undefined;

  constructor(
    private readonly wait: (pid: number) => WaitResult | undefined | null = waitNoHang,
    private readonly intervalMs = 1000,
  ) {}

  /** Resolves when `pid` (a child of this process) exits. A pid that already exited is reaped at once. */
  watch(pid: number): Promise<ExitInfo> {
    return new Promise((resolve) => {
      this.watched.set(pid, resolve);
      if (this.watched.size === 1) {
        process.on('SIGCHLD', this.onSignal);
        this.timer = setInterval(() => this.poll(), this.intervalMs);
        this.timer.unref();
      }
      this.poll();
    });
  }

  poll(): void {
    for (const [pid, resolve] of [...this.watched]) {
      const r = this.wait(pid);
      if (r === undefined) continue;
      this.watched.delete(pid);
      // null: not our child any more (someone else reaped it); report it as killed.
      resolve({ status: r === null ? 255 : r.status, exitedAt: new Date() });
    }
    if (this.watched.size === 0) this.stop();
  }

  private stop(): void {
    process.off('SIGCHLD', this.onSignal);
    if (this.timer) clearInterval(this.timer);
    this.timer = undefined;
  }

  get size(): number {
    return this.watched.size;
  }
}
