// A thin driver for the runc CLI (what go-runc does for the Go shims): every call is one runc process with
// `--root` (per sandbox) and a JSON `--log` file, whose last error is turned into the thrown message. crun (the
// C runtime; `guest_runtime = "crun"` in a UVM) takes the same commands and flags except `events`: its stats
// are read from the container's cgroup (cgroup-stats.ts).
import { spawn, type StdioOptions } from 'node:child_process';
import { readFile, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { withSpan } from '../telemetry/index.js';
import { cgroupV2Stats } from './cgroup-stats.js';
import { unifiedCgroupDir } from './oom.js';

export class RuncError extends Error {
  constructor(
    message: string,
    readonly args: string[],
    readonly exitCode: number | null,
  ) {
    super(message);
    this.name = 'RuncError';
  }

  /** runc's wording for a container or process that does not exist. */
  get notFound(): boolean {
    // crun: "error opening file `<root>/<id>/status`: No such file or directory" for an unknown container.
    return /does not exist|not found|no such process|container not running|process already finished|\/status`?: No such file/i.test(
      this.message,
    );
  }
}

export interface RuncOptions {
  binary?: string;
  /** runc state directory (--root). */
  root: string;
  /** Directory for the per-call log files. */
  logDir: string;
  /** systemd cgroup driver (--systemd-cgroup). */
  systemdCgroup?: boolean;
}

export interface RuncCreateOptions {
  bundle: string;
  pidFile: string;
  consoleSocket?: string;
  /** Child stdio: fds or 'ignore' for stdin/stdout/stderr of the container init. */
  stdio: StdioOptions;
  noPivot?: boolean;
}

export interface RuncExecOptions {
  processJson: string;
  pidFile: string;
  consoleSocket?: string;
  stdio: StdioOptions;
}

let logSeq = 0;

export class Runc {
  readonly binary: string;

  constructor(private readonly opts: RuncOptions) {
    this.binary = opts.binary ?? 'runc';
  }

  get root(): string {
    return this.opts.root;
  }

  private globalArgs(logFile: string): string[] {
    const a = ['--root', this.opts.root, '--log', logFile, '--log-format', 'json'];
    if (this.opts.systemdCgroup) a.push('--systemd-cgroup');
    return a;
  }

  /** Runs runc; resolves with stdout; rejects with the last error runc logged. A span `runc <command>`. */
  run(args: string[], stdio: StdioOptions = ['ignore', 'pipe', 'pipe']): Promise<string> {
    return withSpan(`runc ${args[0]}`, { 'runc.command': args[0] ?? '', 'runc.container': args.at(-1) ?? '' }, () =>
      this.runOnce(args, stdio),
    );
  }

  private async runOnce(args: string[], stdio: StdioOptions): Promise<string> {
    const logFile = join(this.opts.logDir, `runc-${process.pid}-${++logSeq}.log`);
    const full = [...this.globalArgs(logFile), ...args];
    try {
      return await new Promise<string>((resolve, reject) => {
        const child = spawn(this.binary, full, { stdio });
        const out: Buffer[] = [];
        const err: Buffer[] = [];
        child.stdout?.on('data', (d: Buffer) => out.push(d));
        child.stderr?.on('data', (d: Buffer) => err.push(d));
        child.on('error', reject);
        child.on('close', (code) => {
          if (code === 0) return resolve(Buffer.concat(out).toString());
          void this.lastError(logFile).then((msg) => {
            const text = msg || Buffer.concat(err).toString().trim() || `runc ${args[0]} exited with ${code}`;
            reject(new RuncError(`runc ${args[0]}: ${text}`, args, code));
          });
        });
      });
    } finally {
      await rm(logFile, { force: true });
    }
  }

  private async lastError(logFile: string): Promise<string> {
    try {
      const lines = (await readFile(logFile, 'utf8')).trim().split('\n').reverse();
      for (const line of lines) {
        try {
          const e = JSON.parse(line) as { level?: string; msg?: string };
          if (e.level === 'error' || e.level === 'fatal') return e.msg ?? '';
        } catch {
          if (line.trim()) return line.trim();
        }
      }
    } catch {
      // no log
    }
    return '';
  }

  create(id: string, o: RuncCreateOptions): Promise<string> {
    const args = ['create', '--bundle', o.bundle, '--pid-file', o.pidFile];
    if (o.consoleSocket) args.push('--console-socket', o.consoleSocket);
    if (o.noPivot) args.push('--no-pivot');
    args.push(id);
    return this.run(args, o.stdio);
  }

  start(id: string): Promise<string> {
    return this.run(['start', id]);
  }

  exec(id: string, o: RuncExecOptions): Promise<string> {
    const args = ['exec', '--detach', '--process', o.processJson, '--pid-file', o.pidFile];
    if (o.consoleSocket) args.push('--console-socket', o.consoleSocket);
    args.push(id);
    return this.run(args, o.stdio);
  }

  kill(id: string, signal: number, all = false): Promise<string> {
    return this.run(all ? ['kill', '--all', id, String(signal)] : ['kill', id, String(signal)]);
  }

  pause(id: string): Promise<string> {
    return this.run(['pause', id]);
  }

  resume(id: string): Promise<string> {
    return this.run(['resume', id]);
  }

  update(id: string, resourcesJsonPath: string): Promise<string> {
    return this.run(['update', '--resources', resourcesJsonPath, id]);
  }

  delete(id: string, force = true): Promise<string> {
    return this.run(force ? ['delete', '--force', id] : ['delete', id]);
  }

  async ps(id: string): Promise<number[]> {
    const out = await this.run(['ps', '--format', 'json', id]);
    const pids = JSON.parse(out || '[]') as number[] | null;
    return pids ?? [];
  }

  async state(id: string): Promise<{ id: string; pid: number; status: string; bundle: string }> {
    return JSON.parse(await this.run(['state', id])) as { id: string; pid: number; status: string; bundle: string };
  }

  /** The runtime's binary name without its directory (`runc`, `crun`). */
  get flavour(): string {
    return this.binary.split('/').at(-1) ?? this.binary;
  }

  /**
   * `runc events --stats`: runc's own stats JSON (types.Stats), cgroup v1 or v2 shaped. crun has no `events`:
   * the same figures from the cgroup v2 directory of the container's init (`initPid`).
   */
  async stats(id: string, initPid?: number): Promise<RuncStats> {
    if (this.flavour === 'crun') {
      const dir = initPid ? await unifiedCgroupDir(initPid) : undefined;
      if (!dir) throw new RuncError(`crun stats: the cgroup of container ${id} is gone`, ['stats', id], null);
      return withSpan('crun stats', { 'runc.container': id }, () => cgroupV2Stats(dir));
    }
    const out = JSON.parse(await this.run(['events', '--stats', id])) as { data?: RuncStats };
    return out.data ?? {};
  }

  /** Container ids known to this root. */
  async list(): Promise<Array<{ id: string; pid: number; status: string }>> {
    const out = await this.run(['list', '--format', 'json']);
    return (JSON.parse(out || 'null') as Array<{ id: string; pid: number; status: string }> | null) ?? [];
  }
}

/** The subset of runc's libcontainer/intelrdt-free types.Stats JSON that we convert. */
export interface RuncStats {
  cpu?: {
    usage?: { total?: number; percpu?: number[]; kernel?: number; user?: number };
    throttling?: { periods?: number; throttledPeriods?: number; throttledTime?: number };
  };
  memory?: {
    cache?: number;
    usage?: RuncMemEntry;
    swap?: RuncMemEntry;
    kernel?: RuncMemEntry;
    kernelTCP?: RuncMemEntry;
    raw?: Record<string, number>;
  };
  pids?: { current?: number; limit?: number };
  blkio?: Record<string, Array<{ major?: number; minor?: number; op?: string; value?: number }> | undefined>;
  hugetlb?: Record<string, { usage?: number; max?: number; failcnt?: number }>;
}

export interface RuncMemEntry {
  limit?: number;
  usage?: number;
  max?: number;
  failcnt?: number;
}
