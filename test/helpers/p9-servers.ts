// Starts 9P servers for the kernel-client tests and benchmarks: ours (`lcowctl 9p serve`) and Debian's diod.
// Each listens on 127.0.0.1 on a free port; stop() kills it and waits for its exit.
import { execFile, spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import net from 'node:net';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { repoRoot } from './qemu-guest.js';

const execFileP = promisify(execFile);

export interface RunningServer {
  kind: 'ours' | 'diod';
  port: number;
  /** Process id (CPU accounting in benchmarks). */
  pid: number;
  /** aname that attaches the export (both servers accept the export's path). */
  aname: string;
  /** stderr so far (logs), for diagnostics. */
  log: () => string;
  /** False once the process exited (crashed or stopped). */
  running: () => boolean;
  /** Resolves when the process exits, for detecting crashes. */
  exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  stop: () => Promise<void>;
}

export interface ServerOptions {
  exportDir: string;
  readOnly?: boolean;
  msize?: number;
  /** ours: another build's lcowctl.js (benchmarks against a baseline); default ourServerPath(). */
  cli?: string;
  /** ours: share security model (default: the server's, mapped). */
  security?: 'mapped' | 'passthrough-existing';
  /** ours: more `lcowctl 9p serve` flags (--max-connections N...). */
  extraArgs?: string[];
}

const children = new Set<ChildProcess>();
process.once('exit', () => {
  for (const c of children) c.kill('SIGKILL');
});

function supervise(child: ChildProcess, kind: RunningServer['kind'], port: number, aname: string): RunningServer {
  children.add(child);
  let log = '';
  child.stderr?.setEncoding('utf8').on('data', (d: string) => {
    log = (log + d).slice(-200_000);
  });
  const exited = new Promise<{ code: number | null; signal: NodeJS.Signals | null }>((res) => {
    child.once('exit', (code, signal) => {
      children.delete(child);
      res({ code, signal });
    });
  });
  return {
    kind,
    port,
    pid: child.pid ?? -1,
    aname,
    log: () => log,
    running: () => child.exitCode === null && child.signalCode === null,
    exited,
    stop: async () => {
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        const t = setTimeout(() => child.kill('SIGKILL'), 5000);
        await exited;
        clearTimeout(t);
      }
    },
  };
}

/** utime + stime of a process (all its threads) in seconds, from /proc/PID/stat. */
export function processCpuSeconds(pid: number): number {
  const stat = readFileSync(`/proc/${pid}/stat`, 'utf8');
  // Fields after "(comm)": state is field 3, utime and stime are fields 14 and 15.
  const fields = stat.slice(stat.lastIndexOf(')') + 2).split(' ');
  return (Number(fields[11]) + Number(fields[12])) / CLOCK_TICKS;
}

/** USER_HZ: the unit of /proc/PID/stat times (100 on every Linux architecture that matters here). */
const CLOCK_TICKS = 100;

export function ourServerPath(): string {
  return join(repoRoot, 'dist/shim/lcowctl.js');
}

/** `node dist/shim/lcowctl.js 9p serve`, on a port it picks; resolves once it printed "listening on". */
export async function startOurServer(opts: ServerOptions): Promise<RunningServer> {
  const args = [opts.cli ?? ourServerPath(), '9p', 'serve', '--listen', 'tcp:127.0.0.1:0', '--export', opts.exportDir];
  if (opts.readOnly) args.push('--read-only');
  if (opts.msize) args.push('--msize', String(opts.msize));
  if (opts.security) args.push('--security', opts.security);
  if (opts.extraArgs) args.push(...opts.extraArgs);
  // As the launchers of `make build` run it (bin/lcowctl sets the libuv threadpool size).
  const env = { ...process.env, UV_THREADPOOL_SIZE: process.env.UV_THREADPOOL_SIZE ?? '16' };
  const child = spawn(process.execPath, args, { stdio: ['ignore', 'pipe', 'pipe'], env });
  const server = supervise(child, 'ours', 0, opts.exportDir);
  let out = '';
  try {
    const port = await new Promise<number>((resolve, reject) => {
      const timer = setTimeout(() => reject(new Error('no "listening on" line within 20 s')), 20_000);
      child.stdout!.setEncoding('utf8').on('data', (d: string) => {
        out += d;
        const m = /listening on tcp:127\.0\.0\.1:(\d+)/.exec(out);
        if (m) {
          clearTimeout(timer);
          resolve(Number(m[1]));
        }
      });
      void server.exited.then(({ code, signal }) => {
        clearTimeout(timer);
        reject(new Error(`exited (${code ?? signal}) before listening`));
      });
    });
    return { ...server, port };
  } catch (err) {
    await server.stop();
    throw new Error(`lcowctl 9p serve ${args.slice(3).join(' ')}: ${(err as Error).message}\n${out}${server.log()}`, {
      cause: err,
    });
  }
}

export async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = net.createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as net.AddressInfo).port;
      srv.close(() => resolve(port));
    });
  });
}

async function waitConnectable(port: number, deadline: number): Promise<boolean> {
  while (Date.now() < deadline) {
    const ok = await new Promise<boolean>((res) => {
      const s = net.connect(port, '127.0.0.1');
      s.once('connect', () => {
        s.destroy();
        res(true);
      });
      s.once('error', () => res(false));
    });
    if (ok) return true;
    await new Promise((r) => setTimeout(r, 50));
  }
  return false;
}

export async function diodUnavailable(): Promise<string | undefined> {
  for (const p of ['/usr/sbin/diod', '/usr/bin/diod']) if (existsSync(p)) return undefined;
  try {
    await execFileP('diod', ['--help']);
    return undefined;
  } catch {
    return 'diod is not installed (apt-get install diod)';
  }
}

/**
 * diod in the foreground, no auth, serving one export (as root: ownership passes through). Read-only needs the
 * export's opts="ro" in a config file: `-o ro` on the command line does not make a `-e` export read-only.
 */
export async function startDiod(opts: ServerOptions): Promise<RunningServer> {
  const port = await freePort();
  const args = ['-f', '-n', '-l', `127.0.0.1:${port}`, '-L', 'stderr'];
  let confDir: string | undefined;
  if (opts.readOnly) {
    if (/["\\\n]/.test(opts.exportDir)) throw new Error(`export path not usable in diod.conf: ${opts.exportDir}`);
    confDir = mkdtempSync(join(tmpdir(), 'diodconf-'));
    writeFileSync(join(confDir, 'diod.conf'), `exports = { { path="${opts.exportDir}", opts="ro" } }\n`);
    args.push('-c', join(confDir, 'diod.conf'));
  } else {
    args.push('-e', opts.exportDir);
  }
  const bin = existsSync('/usr/sbin/diod') ? '/usr/sbin/diod' : 'diod';
  const child = spawn(bin, args, { stdio: ['ignore', 'ignore', 'pipe'] });
  const server = supervise(child, 'diod', port, opts.exportDir);
  const stop = async (): Promise<void> => {
    await server.stop();
    if (confDir) rmSync(confDir, { recursive: true, force: true });
  };
  if (!(await waitConnectable(port, Date.now() + 10_000))) {
    await stop();
    throw new Error(`diod ${args.join(' ')} did not listen: ${server.log()}`);
  }
  return { ...server, stop };
}
