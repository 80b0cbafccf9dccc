// OOM kill detection for the containers the agent runs. The kernel counts OOM kills per memory cgroup:
// cgroup v2 `memory.events` and cgroup v1 `memory.oom_control` both carry an `oom_kill N` line (v1 since
// Linux 4.13). We find each container's memory cgroup in runc's state.json, remember the counter at
// create, and look again on a slow timer (cheap: one small read per container) and whenever a container
// process exits, before its exit is reported, so that TaskOOM precedes TaskExit.
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';

/**
 * The memory cgroup directory of a container: from runc's `<root>/<id>/state.json` (v1 or v2 layout); for a
 * runtime without that file (crun), from the cgroup v2 line of its init's /proc/<pid>/cgroup.
 */
export async function memoryCgroupDir(runcRoot: string, id: string, initPid?: number): Promise<string | undefined> {
  try {
    const st = JSON.parse(await readFile(join(runcRoot, id, 'state.json'), 'utf8')) as {
      cgroup_paths?: Record<string, string>;
    };
    const paths = st.cgroup_paths ?? {};
    return paths.memory ?? paths[''];
  } catch {
    return initPid ? unifiedCgroupDir(initPid) : undefined;
  }
}

/** The cgroup v2 directory of process `pid` (`0::/path` in /proc/<pid>/cgroup), or undefined. */
export async function unifiedCgroupDir(pid: number, mount = '/sys/fs/cgroup'): Promise<string | undefined> {
  try {
    const m = /^0::(\/.*)$/m.exec(await readFile(`/proc/${pid}/cgroup`, 'utf8'));
    return m ? join(mount, m[1]!) : undefined;
  } catch {
    return undefined;
  }
}

/** The `oom_kill` counter of a memory cgroup directory, or undefined when unreadable (gone, no memcg). */
export async function oomKillCount(dir: string): Promise<number | undefined> {
  for (const file of ['memory.events', 'memory.oom_control']) {
    let text: string;
    try {
      text = await readFile(join(dir, file), 'utf8');
    } catch {
      continue;
    }
    const m = /^oom_kill (\d+)$/m.exec(text);
    return m ? Number(m[1]) : undefined;
  }
  return undefined;
}

interface Watched {
  dir: string;
  count: number;
}

export class OomWatcher {
  private readonly watched = new Map<string, Watched>();
  private timer: NodeJS.Timeout | undefined;
  private polling = false;

  constructor(
    private readonly onOom: (containerId: string) => void,
    private readonly intervalMs = 1000,
  ) {}

  /** Starts watching a container's memory cgroup (call after runc create). */
  async add(containerId: string, dir: string | undefined): Promise<void> {
    if (!dir) return;
    const count = (await oomKillCount(dir)) ?? 0;
    this.watched.set(containerId, { dir, count });
    if (!this.timer) {
      this.timer = setInterval(() => void this.poll(), this.intervalMs);
      this.timer.unref();
    }
  }

  remove(containerId: string): void {
    this.watched.delete(containerId);
    if (this.watched.size === 0 && this.timer) {
      clearInterval(this.timer);
      this.timer = undefined;
    }
  }

  /** Checks one container now (e.g. one of its processes just exited); reports new OOM kills. */
  async check(containerId: string): Promise<boolean> {
    const w = this.watched.get(containerId);
    if (!w) return false;
    const n = await oomKillCount(w.dir);
    if (n === undefined || n <= w.count) return false;
    w.count = n;
    this.onOom(containerId);
    return true;
  }

  async poll(): Promise<void> {
    if (this.polling) return;
    this.polling = true;
    try {
      for (const id of [...this.watched.keys()]) await this.check(id);
    } finally {
      this.polling = false;
    }
  }

  get size(): number {
    return this.watched.size;
  }
}
