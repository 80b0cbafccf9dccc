// A private containerd 1.6 for tests: its own root, state, sockets and log in a temp dir, never the system
// instance. Start it in a `before` hook, `stop()` it in `after`, and check `leftovers()` there too.
//
//   const cd = await startContainerd();
//   const { stdout } = await cd.ctr(['version']);
//   await cd.stop();
//
// Later users can add runtimes (e.g. io.containerd.lcow.v1) with `extraPath` (where containerd finds
// containerd-shim-*-v1 binaries) and `extraConfig` (raw TOML appended to the generated config).
import { spawn, type ChildProcess } from 'node:child_process';
import { existsSync, mkdtempSync, openSync, closeSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { delimiter, join } from 'node:path';

export interface ContainerdOptions {
  /** Directories put in front of PATH for containerd (shim binaries are looked up there). */
  extraPath?: string[];
  /** Raw TOML appended to the generated config (runtime sections, plugin options). */
  extraConfig?: string;
  /** Plugins to disable; defaults to the ones these tests never need (CRI first: slow and conflicting). */
  disabledPlugins?: string[];
  /**
   * Keep containerd's CRI plugin (io.containerd.grpc.v1.cri) enabled: the default list minus CRI. Its settings go
   * in `extraConfig` (test/helpers/cri.ts writes them). Ignored when `disabledPlugins` is given.
   */
  cri?: boolean;
  /** containerd log level (default "debug", written to <dir>/containerd.log). */
  logLevel?: string;
  /** Extra environment for containerd. */
  env?: Record<string, string>;
  /** How long to wait for the socket to answer (default 20 s). */
  startTimeoutMs?: number;
  /** Default namespace for ctr() (default "testing"). */
  namespace?: string;
  /** The umask containerd (and so every shim it starts) inherits, e.g. 0o000 to check modes are explicit. */
  umask?: number;
}

export interface CtrResult {
  stdout: string;
  stderr: string;
  code: number | null;
}

export interface PrivateContainerd {
  dir: string;
  /** gRPC socket path. */
  address: string;
  /** ttrpc socket path (what shims get as TTRPC_ADDRESS). */
  ttrpcAddress: string;
  configPath: string;
  logPath: string;
  namespace: string;
  pid: number;
  /** Runs `ctr --address <sock> --namespace <ns> ...args` to completion. */
  ctr(
    args: string[],
    opts?: { namespace?: string; input?: string | Uint8Array; timeoutMs?: number },
  ): Promise<CtrResult>;
  /** Starts a long-running ctr (e.g. `events`); the caller kills it (stop() kills any still running). */
  spawnCtr(args: string[], opts?: { namespace?: string }): ChildProcess;
  /** The containerd log so far (for failure messages). */
  log(): string;
  /**
   * Kills containerd (SIGKILL by default: a crash, shims keep running) and starts it again with the same
   * config, root and state; resolves once it answers. `pid` changes.
   */
  restart(opts?: { signal?: NodeJS.Signals }): Promise<void>;
  /** Kills containerd and every ctr started through this object, then removes the temp dir. Idempotent. */
  stop(): Promise<void>;
}

export const CRI_PLUGIN = 'io.containerd.grpc.v1.cri';
export const DEFAULT_DISABLED_PLUGINS = [
  CRI_PLUGIN,
  'io.containerd.snapshotter.v1.aufs',
  'io.containerd.snapshotter.v1.btrfs',
  'io.containerd.snapshotter.v1.devmapper',
  'io.containerd.snapshotter.v1.zfs',
  'io.containerd.tracing.processor.v1.otlp',
  'io.containerd.internal.v1.tracing',
];

const CONTAINERD = 'containerd';
const CTR = 'ctr';

/** Every instance started by this process and not yet stopped (for leak checks and crash cleanup). */
const running = new Set<PrivateContainerd>();
const startedDirs = new Set<string>();

/** Why a private containerd cannot run here, or undefined when it can (pass to requirePrerequisite). */
export function containerdUnavailable(): string | undefined {
  if (process.getuid?.() !== 0) return 'containerd needs root';
  const path = (process.env.PATH ?? '').split(delimiter);
  for (const bin of [CONTAINERD, CTR]) {
    if (!path.some((dir) => existsSync(join(dir, bin)))) return `${bin} is not installed (make setup)`;
  }
  return undefined;
}

function toml(value: string): string {
  return JSON.stringify(value); // TOML basic strings accept JSON string escapes for paths like these.
}

function buildConfig(dir: string, address: string, ttrpcAddress: string, opts: ContainerdOptions): string {
  const disabled =
    opts.disabledPlugins ??
    (opts.cri ? DEFAULT_DISABLED_PLUGINS.filter((p) => p !== CRI_PLUGIN) : DEFAULT_DISABLED_PLUGINS);
  return [
    'version = 2',
    `root = ${toml(join(dir, 'root'))}`,
    `state = ${toml(join(dir, 'state'))}`,
    `disabled_plugins = [${disabled.map(toml).join(', ')}]`,
    '',
    '[grpc]',
    `  address = ${toml(address)}`,
    '',
    '[ttrpc]',
    `  address = ${toml(ttrpcAddress)}`,
    '',
    '[debug]',
    `  level = ${toml(opts.logLevel ?? 'debug')}`,
    '',
    '[plugins]',
    '  [plugins."io.containerd.internal.v1.opt"]',
    `    path = ${toml(join(dir, 'opt'))}`,
    '',
    opts.extraConfig ?? '',
  ].join('\n');
}

function runCollect(
  cmd: string,
  args: string[],
  env: NodeJS.ProcessEnv,
  input: string | Uint8Array | undefined,
  timeoutMs: number,
): Promise<CtrResult> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { env, stdio: ['pipe', 'pipe', 'pipe'] });
    const out: Buffer[] = [];
    const err: Buffer[] = [];
    child.stdout.on('data', (b: Buffer) => out.push(b));
    child.stderr.on('data', (b: Buffer) => err.push(b));
    const timer = setTimeout(() => child.kill('SIGKILL'), timeoutMs);
    child.on('error', (e) => err.push(Buffer.from(String(e))));
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ stdout: Buffer.concat(out).toString(), stderr: Buffer.concat(err).toString(), code });
    });
    child.stdin.on('error', () => undefined);
    child.stdin.end(input ?? '');
  });
}

function waitExit(child: ChildProcess, ms: number): Promise<boolean> {
  if (child.exitCode !== null || child.signalCode !== null) return Promise.resolve(true);
  return new Promise((resolve) => {
    const timer = setTimeout(() => resolve(false), ms);
    child.once('exit', () => {
      clearTimeout(timer);
      resolve(true);
    });
  });
}

export async function startContainerd(opts: ContainerdOptions = {}): Promise<PrivateContainerd> {
  const dir = mkdtempSync(join(tmpdir(), 'lcow-containerd-'));
  startedDirs.add(dir);
  const address = join(dir, 'containerd.sock');
  const ttrpcAddress = `${address}.ttrpc`;
  const configPath = join(dir, 'config.toml');
  const logPath = join(dir, 'containerd.log');
  const namespace = opts.namespace ?? 'testing';
  writeFileSync(configPath, buildConfig(dir, address, ttrpcAddress, opts));

  const env: NodeJS.ProcessEnv = {
    ...process.env,
    ...opts.env,
    PATH: [...(opts.extraPath ?? []), process.env.PATH ?? ''].join(delimiter),
  };
  const launch = (): ChildProcess => {
    const logFd = openSync(logPath, 'a');
    // spawn forks synchronously: a umask set around the call is the child's, and ours again right after.
    const old = opts.umask === undefined ? undefined : process.umask(opts.umask);
    let c: ChildProcess;
    try {
      c = spawn(CONTAINERD, ['--config', configPath], { env, stdio: ['ignore', logFd, logFd] });
    } finally {
      if (old !== undefined) process.umask(old);
    }
    closeSync(logFd);
    return c;
  };
  let child = launch();
  const ctrChildren = new Set<ChildProcess>();
  let stopped = false;

  const ctrEnv: NodeJS.ProcessEnv = { ...process.env, CONTAINERD_ADDRESS: '', CONTAINERD_NAMESPACE: '' };
  const ctrArgs = (args: string[], ns?: string): string[] => [
    '--address',
    address,
    '--namespace',
    ns ?? namespace,
    ...args,
  ];

  const instance: PrivateContainerd = {
    dir,
    address,
    ttrpcAddress,
    configPath,
    logPath,
    namespace,
    pid: child.pid ?? -1,
    ctr: (args, o = {}) => runCollect(CTR, ctrArgs(args, o.namespace), ctrEnv, o.input, o.timeoutMs ?? 30_000),
    spawnCtr(args, o = {}) {
      const c = spawn(CTR, ctrArgs(args, o.namespace), { env: ctrEnv, stdio: ['ignore', 'pipe', 'pipe'] });
      ctrChildren.add(c);
      c.on('exit', () => ctrChildren.delete(c));
      return c;
    },
    log: () => {
      try {
        return readFileSync(logPath, 'utf8');
      } catch {
        return '';
      }
    },
    async restart(o = {}) {
      if (stopped) throw new Error('containerd was stopped');
      child.kill(o.signal ?? 'SIGKILL');
      await waitExit(child, 10_000);
      child = launch();
      instance.pid = child.pid ?? -1;
      await waitReady(opts.startTimeoutMs ?? 20_000);
    },
    async stop() {
      if (stopped) return;
      stopped = true;
      for (const c of ctrChildren) c.kill('SIGKILL');
      await Promise.all([...ctrChildren].map((c) => waitExit(c, 2000)));
      if (child.exitCode === null && child.signalCode === null) {
        child.kill('SIGTERM');
        if (!(await waitExit(child, 10_000))) {
          child.kill('SIGKILL');
          await waitExit(child, 5000);
        }
      }
      running.delete(instance);
      rmSync(dir, { recursive: true, force: true, maxRetries: 3 });
      startedDirs.delete(dir);
    },
  };
  running.add(instance);

  async function waitReady(timeoutMs: number): Promise<void> {
    const c = child;
    const exited = new Promise<never>((_, reject) =>
      c.once('exit', (code, signal) =>
        reject(new Error(`containerd exited during startup (code ${code}, signal ${signal}):\n${instance.log()}`)),
      ),
    );
    exited.catch(() => undefined);
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const probe = await Promise.race([runCollect(CTR, ['--address', address, 'version'], ctrEnv, '', 5000), exited]);
      if (probe.code === 0 && /Server:/.test(probe.stdout)) break;
      if (Date.now() > deadline) throw new Error(`containerd did not answer in time:\n${instance.log().slice(-4000)}`);
      await new Promise((r) => setTimeout(r, 100));
    }
  }
  try {
    await waitReady(opts.startTimeoutMs ?? 20_000);
  } catch (err) {
    await instance.stop();
    throw err;
  }
  return instance;
}

/** What the current process started and has not cleaned up: for `after` hooks (`assert.deepEqual(..., [])`). */
export function leftovers(): string[] {
  const out: string[] = [];
  for (const c of running) out.push(`containerd pid ${c.pid} still running (${c.dir})`);
  for (const d of startedDirs) if (existsSync(d)) out.push(`temp dir ${d} still exists`);
  return out;
}

// If the test process dies with instances running, do not leave daemons behind.
process.once('exit', () => {
  for (const c of running) {
    try {
      process.kill(c.pid, 'SIGKILL');
    } catch {
      // Already gone.
    }
    rmSync(c.dir, { recursive: true, force: true });
  }
});
