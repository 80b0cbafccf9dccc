// The guest agent's logic, independent of ttrpc: containers and processes through runc, stdio, shares.
// The ttrpc binding (server.ts) only decodes requests and maps AgentError codes.
import { MAX_BATCH, ShareReplayer, validSharePath, type ReplayChange } from './share-replay.js';
import { spawn } from 'node:child_process';
import { constants } from 'node:os';
import { mkdir, readFile, rm, writeFile } from 'node:fs/promises';
import { dirname, join } from 'node:path';
import type { Readable } from 'node:stream';
import { silentLogger, type Logger } from '../util/log.js';
import { ProcessIO, type StdioWanted } from './procio.js';
import { memoryCgroupDir, OomWatcher } from './oom.js';
import { Reaper, trackSpawnedChildren, type ExitInfo } from './reaper.js';
import { Runc, RuncError, type RuncStats } from './runc.js';
import { setChildSubreaper, sysKill } from './sys.js';
import type { P9MountRequest } from './uvm.js';
import { withSpan } from '../telemetry/index.js';
import type { ScsiMountRequest } from './scsi.js';

/** ExecInUvm: output kept per stream, default and longest run time. */
export const UVM_EXEC_OUTPUT_MAX = 1 << 20;
const UVM_EXEC_TIMEOUT_MS = 30_000;
const UVM_EXEC_TIMEOUT_MAX_MS = 600_000;

export type AgentErrorCode = 'NotFound' | 'AlreadyExists' | 'FailedPrecondition' | 'InvalidArgument' | 'Internal';

export class AgentError extends Error {
  constructor(
    readonly code: AgentErrorCode,
    message: string,
  ) {
    super(message);
    this.name = 'AgentError';
  }
}

const ID_RE = /^[A-Za-z0-9][A-Za-z0-9_.-]{0,127}$/;

export function checkId(kind: string, id: string, allowEmpty = false): void {
  if (allowEmpty && id === '') return;
  if (!ID_RE.test(id)) throw new AgentError('InvalidArgument', `invalid ${kind} ${JSON.stringify(id)}`);
}

export interface MountSpec {
  type: string;
  source: string;
  target?: string;
  options: string[];
}

type ProcStatus = 'created' | 'running' | 'exited';

export class AgentProcess {
  status: ProcStatus = 'created';
  pid = 0;
  exit: ExitInfo | undefined;
  readonly exited: Promise<ExitInfo>;
  private resolveExit!: (e: ExitInfo) => void;
  /** Resolved once stdout/stderr reached EOF at their consumers (or were cut off after exit). */
  readonly outputDone: Array<Promise<void>> = [];
  private outputResolvers: Array<() => void> = [];

  constructor(
    readonly containerId: string,
    readonly execId: string,
    readonly io: ProcessIO,
    readonly processJson?: string,
  ) {
    this.exited = new Promise((r) => (this.resolveExit = r));
    for (const s of [io.stdout, io.stderr]) {
      if (!s) continue;
      this.outputDone.push(new Promise((r) => this.outputResolvers.push(r)));
    }
  }

  markExited(e: ExitInfo): void {
    if (this.status === 'exited') return;
    this.status = 'exited';
    this.exit = e;
    this.resolveExit(e);
  }

  /** Called by the output stream consumers when they delivered the last byte. */
  outputFinished(stream: Readable): void {
    const i = [this.io.stdout, this.io.stderr].filter(Boolean).indexOf(stream as never);
    if (i >= 0) this.outputResolvers[i]?.();
  }

  allOutputDone(): void {
    for (const r of this.outputResolvers) r();
  }
}

export class AgentContainer {
  readonly execs = new Map<string, AgentProcess>();
  mountedRootfs = false;

  constructor(
    readonly id: string,
    readonly bundle: string,
    readonly init: AgentProcess,
  ) {}

  process(execId: string): AgentProcess {
    if (execId === '') return this.init;
    const p = this.execs.get(execId);
    if (!p) throw new AgentError('NotFound', `exec ${execId} not found in container ${this.id}`);
    return p;
  }
}

export interface AgentOptions {
  /** Directory for runc state, bundles and sockets. */
  stateDir: string;
  runcBinary?: string;
  logger?: Logger;
  /** After exit, how long output may keep flowing before it is cut off (a grandchild holding the pipe). */
  drainTimeoutMs?: number;
  reaper?: Reaper;
  /** UVM: mounts a 9P share (kind "9p") at req.target; see uvm.ts. */
  mount9p?: (req: P9MountRequest) => Promise<void>;
  /** Undoes a share's mount (default: for 9P, `sync -f` first; then umount -l). */
  unmount?: (target: string) => Promise<void>;
  /** UVM under Hyper-V: mounts a SCSI disk the host hot-added (kind "scsi"); see scsi.ts. */
  mountScsi?: (req: ScsiMountRequest) => Promise<void>;
}

export interface OomListener {
  (containerId: string): void;
}

/** The OCI process's user (only the uid matters here). */
interface ProcessUser {
  uid?: number;
}

export class Agent {
  readonly runc: Runc;
  private readonly containers = new Map<string, AgentContainer>();
  private readonly shares = new Map<
    string,
    { path: string; mounted: boolean; kind?: '9p'; replayer?: ShareReplayer }
  >();
  /**
   * The fsuids host changes are replayed with (share notify): the 9P server answers that uid's requests from its
   * replay tree without touching the host, so a container process running as it would lose its writes.
   */
  private readonly replayUids = new Set<number>();
  private readonly log: Logger;
  private readonly reaper: Reaper;
  private readonly drainTimeoutMs: number;
  private readonly oomListeners = new Set<OomListener>();
  private readonly oom = new OomWatcher((id) => this.emitOom(id));
  private consoleSeq = 0;

  constructor(readonly opts: AgentOptions) {
    this.runc = new Runc({ binary: opts.runcBinary, root: join(opts.stateDir, 'runc'), logDir: opts.stateDir });
    this.log = opts.logger ?? silentLogger;
    this.reaper = opts.reaper ?? new Reaper();
    this.drainTimeoutMs = opts.drainTimeoutMs ?? 2000;
  }

  async init(): Promise<void> {
    // Container inits and detached execs are orphaned when runc exits; they must be reparented to us.
    if (!setChildSubreaper()) throw new Error('prctl(PR_SET_CHILD_SUBREAPER) failed');
    // Every zombie we adopt is reaped, except libuv's own children (tracked so the reaper leaves them).
    trackSpawnedChildren();
    this.reaper.start();
    await mkdir(join(this.opts.stateDir, 'runc'), { recursive: true, mode: 0o700 });
    await mkdir(join(this.opts.stateDir, 'bundles'), { recursive: true, mode: 0o700 });
  }

  container(id: string): AgentContainer {
    const c = this.containers.get(id);
    if (!c) throw new AgentError('NotFound', `container ${id} not found`);
    return c;
  }

  get containerCount(): number {
    return this.containers.size;
  }

  onOom(l: OomListener): () => void {
    this.oomListeners.add(l);
    return () => this.oomListeners.delete(l);
  }

  // ---- shares ----

  async addShare(req: {
    shareId: string;
    kind: string;
    source: string;
    target: string;
    readOnly: boolean;
    aname?: string;
    token?: Uint8Array;
    options?: Record<string, string>;
    notifyUid?: number;
    notifyPinDirs?: number;
  }): Promise<string> {
    checkId('share id', req.shareId);
    if (this.shares.has(req.shareId)) throw new AgentError('AlreadyExists', `share ${req.shareId} exists`);
    if (req.kind === '9p') {
      if (!this.opts.mount9p) throw new AgentError('FailedPrecondition', 'this agent has no 9P transport');
      const target = req.target || join(this.opts.stateDir, 'shares', req.shareId);
      if (!target.startsWith('/')) throw new AgentError('InvalidArgument', 'share target must be absolute');
      const notifyUid = req.notifyUid ?? 0;
      if (notifyUid === 0xffffffff) throw new AgentError('InvalidArgument', 'invalid replay uid');
      try {
        await this.opts.mount9p({
          target,
          aname: req.aname ?? '',
          token: req.token ?? new Uint8Array(),
          // With host change replay the superblock stays writable so that replays can run (the server keeps the
          // share read-only, and runc's bind mount into the container is read-only as the spec says).
          readOnly: req.readOnly && notifyUid === 0,
          options: req.options ?? {},
        });
      } catch (err) {
        throw new AgentError('Internal', (err as Error).message);
      }
      let replayer: ShareReplayer | undefined;
      if (notifyUid > 0) {
        this.replayUids.add(notifyUid);
        replayer = new ShareReplayer(target, notifyUid, Math.min(req.notifyPinDirs ?? 0, 1 << 20), this.log);
        replayer.pinTree().catch((err: unknown) => this.log.warn('pinning share directories failed', { error: err }));
      }
      this.shares.set(req.shareId, { path: target, mounted: true, kind: '9p', replayer });
      return target;
    }
    if (req.kind === 'scsi') {
      if (!this.opts.mountScsi) throw new AgentError('FailedPrecondition', 'this agent has no SCSI disks');
      const target = join(this.opts.stateDir, 'shares', req.shareId);
      try {
        await this.opts.mountScsi({ source: req.source, target, readOnly: req.readOnly, options: req.options ?? {} });
      } catch (err) {
        throw new AgentError('Internal', (err as Error).message);
      }
      this.shares.set(req.shareId, { path: target, mounted: true });
      return target;
    }
    if (req.kind !== 'bind') throw new AgentError('InvalidArgument', `share kind ${req.kind} is not supported here`);
    if (!req.source.startsWith('/')) throw new AgentError('InvalidArgument', 'share source must be absolute');
    if (!req.target) {
      // Identity: the source is visible as is (process backend).
      this.shares.set(req.shareId, { path: req.source, mounted: false });
      return req.source;
    }
    if (!req.target.startsWith('/')) throw new AgentError('InvalidArgument', 'share target must be absolute');
    await mkdir(req.target, { recursive: true });
    await runCmd('mount', ['--bind', req.source, req.target]);
    if (req.readOnly) await runCmd('mount', ['-o', 'remount,bind,ro', req.target]);
    this.shares.set(req.shareId, { path: req.target, mounted: true });
    return req.target;
  }

  async removeShare(shareId: string): Promise<void> {
    const s = this.shares.get(shareId);
    if (!s) throw new AgentError('NotFound', `share ${shareId} not found`);
    s.replayer?.close();
    if (s.mounted) await (this.opts.unmount ? this.opts.unmount(s.path) : this.unmountShare(s.path, s.kind));
    this.shares.delete(shareId);
  }

  /**
   * A 9P share may hold data the guest has not written back yet (a cache=loose rootfs, pages of a cache=mmap
   * mapping): syncfs it while the host's server still answers; a lazy unmount would write back later, after the
   * shim closed the share. Then detach it (lazily: a process still inside must not fail the removal).
   */
  private async unmountShare(target: string, kind: '9p' | undefined): Promise<void> {
    if (kind === '9p')
      await runCmd('sync', ['-f', target]).catch((err: unknown) =>
        this.log.warn('sync of a share before unmount failed', { target, error: err }),
      );
    await runCmd('umount', ['-l', target]);
  }

  /** Replays host changes under a share through its mount (share-replay.ts). */
  async replayShareChanges(shareId: string, changes: ReplayChange[]): Promise<{ replayed: number; failed: number }> {
    const s = this.shares.get(shareId);
    if (!s) throw new AgentError('NotFound', `share ${shareId} not found`);
    if (!s.replayer) throw new AgentError('FailedPrecondition', `share ${shareId} has no host change replay`);
    if (changes.length > MAX_BATCH) throw new AgentError('InvalidArgument', `at most ${MAX_BATCH} changes per batch`);
    for (const c of changes) {
      if (!validSharePath(c.path) || (c.kind === 'rename' && (c.to === undefined || !validSharePath(c.to))))
        throw new AgentError('InvalidArgument', `invalid share path ${JSON.stringify(c.path)}`);
    }
    try {
      const r = await s.replayer.replay(changes);
      return { replayed: r.replayed, failed: Math.max(0, r.failed) };
    } catch (err) {
      throw new AgentError('FailedPrecondition', (err as Error).message);
    }
  }

  // ---- containers ----

  async createContainer(req: {
    containerId: string;
    specJson: Uint8Array;
    rootfs: MountSpec[];
    stdio: StdioWanted;
    bundle?: string;
  }): Promise<{ pid: number; bundle: string }> {
    checkId('container id', req.containerId);
    if (this.containers.has(req.containerId))
      throw new AgentError('AlreadyExists', `container ${req.containerId} already exists`);
    let spec: { root?: { path?: string }; process?: { terminal?: boolean; user?: ProcessUser } };
    try {
      spec = JSON.parse(Buffer.from(req.specJson).toString('utf8')) as typeof spec;
    } catch (err) {
      throw new AgentError('InvalidArgument', `spec is not JSON: ${(err as Error).message}`);
    }
    this.refuseReplayUid(spec.process?.user);
    const bundle = req.bundle || join(this.opts.stateDir, 'bundles', req.containerId);
    await mkdir(bundle, { recursive: true, mode: 0o711 });
    const io = new ProcessIO(req.stdio);
    const init = new AgentProcess(req.containerId, '', io);
    const c = new AgentContainer(req.containerId, bundle, init);
    this.containers.set(req.containerId, c);
    const log = this.log.with({ container: req.containerId });
    try {
      if (req.rootfs.length > 0) {
        const rootfs = join(bundle, 'rootfs');
        await mkdir(rootfs, { recursive: true });
        for (const m of req.rootfs) await mountOne(m, m.target ? join(rootfs, m.target) : rootfs);
        c.mountedRootfs = true;
        spec.root = { ...(spec.root ?? {}), path: rootfs };
      }
      spec.process = { ...(spec.process ?? {}), terminal: req.stdio.terminal };
      await writeFile(join(bundle, 'config.json'), JSON.stringify(spec));
      const pidFile = join(bundle, 'init.pid');
      const release = this.reaper.hold();
      try {
        const pid = await this.runCreateLike(io, (stdio, consoleSocket) =>
          this.runc.create(req.containerId, { bundle, pidFile, consoleSocket, stdio }),
        );
        init.pid = pid || Number((await readFile(pidFile, 'utf8')).trim());
        this.watchExit(init);
      } finally {
        release();
      }
      await this.oom.add(req.containerId, await memoryCgroupDir(this.runc.root, req.containerId, init.pid));
      log.info('container created', { pid: init.pid });
      return { pid: init.pid, bundle };
    } catch (err) {
      log.warn('container create failed', { error: err });
      io.close();
      await this.cleanupContainer(c).catch((cleanErr: unknown) =>
        log.warn('cleaning up the failed container failed', { error: cleanErr }),
      );
      this.containers.delete(req.containerId);
      throw err instanceof RuncError ? new AgentError('Internal', err.message) : err;
    }
  }

  /** Runs a runc create/exec with the process's stdio wired (pipes or console socket). */
  private async runCreateLike(
    io: ProcessIO,
    run: (stdio: Array<number | 'ignore' | 'pipe'>, consoleSocket?: string) => Promise<string>,
  ): Promise<number> {
    if (io.hasTerminal) {
      // Not under `dir`: a unix socket path is at most 107 bytes, and CRI's ids alone are 64.
      const sock = join(this.opts.stateDir, 'console', `${++this.consoleSeq}.sock`);
      await mkdir(dirname(sock), { recursive: true, mode: 0o700 });
      let created!: Promise<string>;
      const consoleReady = io.acceptConsole(
        sock,
        new Promise((resolve, reject) => {
          setImmediate(() => {
            created = run(['ignore', 'ignore', 'pipe'], sock);
            created.then(resolve, reject);
          });
        }),
      );
      try {
        await consoleReady;
        await created;
      } finally {
        await rm(sock, { force: true });
      }
      return 0;
    }
    const stdio = io.openPipes();
    try {
      await run(stdio);
    } finally {
      io.childSpawned();
    }
    return 0;
  }

  private watchExit(p: AgentProcess): void {
    void this.reaper.watch(p.pid).then(async (e) => {
      this.log.debug('process exited', { container: p.containerId, exec: p.execId, pid: p.pid, status: e.status });
      // An OOM kill is reported before the exit it caused.
      await this.oom.check(p.containerId).catch(() => false);
      p.markExited(e);
    });
  }

  async startProcess(containerId: string, execId: string): Promise<number> {
    const c = this.container(containerId);
    const p = c.process(execId);
    if (p.status !== 'created')
      throw new AgentError('FailedPrecondition', `process ${execId || containerId} is ${p.status}, not created`);
    if (execId === '') {
      await this.runc.start(containerId).catch((err: Error) => {
        throw new AgentError('Internal', err.message);
      });
      if (p.status === 'created') p.status = 'running';
      return p.pid;
    }
    const dir = join(c.bundle, 'execs');
    await mkdir(dir, { recursive: true });
    const pidFile = join(dir, `${execId}.pid`);
    // The exec may exit before its pid is read and watched: keep the reaper off unwatched zombies till then.
    const release = this.reaper.hold();
    try {
      try {
        await this.runCreateLike(p.io, (stdio, consoleSocket) =>
          this.runc.exec(containerId, { processJson: p.processJson!, pidFile, consoleSocket, stdio }),
        );
      } catch (err) {
        // A failed start is an exit with status 1 (hcsshim semantics).
        p.io.close();
        p.markExited({ status: 1, exitedAt: new Date() });
        throw new AgentError('Internal', (err as Error).message);
      }
      p.pid = Number((await readFile(pidFile, 'utf8')).trim());
      p.status = 'running';
      this.watchExit(p);
    } finally {
      release();
    }
    return p.pid;
  }

  async execProcess(req: {
    containerId: string;
    execId: string;
    processJson: Uint8Array;
    stdio: StdioWanted;
  }): Promise<void> {
    const c = this.container(req.containerId);
    checkId('exec id', req.execId);
    if (c.execs.has(req.execId)) throw new AgentError('AlreadyExists', `exec ${req.execId} already exists`);
    if (c.init.status === 'exited') throw new AgentError('FailedPrecondition', `container ${c.id} is not running`);
    let proc: { terminal?: boolean; args?: string[]; user?: ProcessUser };
    try {
      proc = JSON.parse(Buffer.from(req.processJson).toString('utf8')) as typeof proc;
    } catch (err) {
      throw new AgentError('InvalidArgument', `process spec is not JSON: ${(err as Error).message}`);
    }
    this.refuseReplayUid(proc.user);
    if (!Array.isArray(proc.args) || proc.args.length === 0)
      throw new AgentError('InvalidArgument', 'process spec has no args');
    proc.terminal = req.stdio.terminal;
    const dir = join(c.bundle, 'execs');
    await mkdir(dir, { recursive: true });
    const file = join(dir, `${req.execId}.json`);
    await writeFile(file, JSON.stringify(proc));
    c.execs.set(req.execId, new AgentProcess(req.containerId, req.execId, new ProcessIO(req.stdio), file));
  }

  private refuseReplayUid(user: ProcessUser | undefined): void {
    if (user?.uid !== undefined && this.replayUids.has(user.uid))
      throw new AgentError(
        'InvalidArgument',
        `uid ${user.uid} is the uid host changes are replayed with (share_notify_uid in the runtime config): ` +
          'a process running as it would have its file writes dropped; run as another uid or change share_notify_uid',
      );
  }

  async signalProcess(containerId: string, execId: string, signal: number, all: boolean): Promise<void> {
    if (!Number.isInteger(signal) || signal <= 0 || signal > 64)
      throw new AgentError('InvalidArgument', `invalid signal ${signal}`);
    const c = this.container(containerId);
    const p = c.process(execId);
    if (p.status === 'exited') throw new AgentError('NotFound', 'process already finished');
    if (p.status === 'created' && execId !== '') throw new AgentError('NotFound', 'process not started');
    if (execId === '') {
      try {
        await this.runc.kill(containerId, signal, all);
      } catch (err) {
        if (err instanceof RuncError && err.notFound) throw new AgentError('NotFound', err.message);
        throw new AgentError('Internal', (err as Error).message);
      }
      return;
    }
    if (!sysKill(p.pid, signal)) throw new AgentError('NotFound', 'process already finished');
  }

  /** Waits for exit and for the output to be delivered (or cut off after the drain timeout). */
  async waitProcess(containerId: string, execId: string): Promise<ExitInfo> {
    const p = this.container(containerId).process(execId);
    const e = await p.exited;
    if (p.outputDone.length > 0) {
      let timer: NodeJS.Timeout | undefined;
      const cut = new Promise<'timeout'>((r) => (timer = setTimeout(() => r('timeout'), this.drainTimeoutMs)));
      const r = await Promise.race([Promise.all(p.outputDone), cut]);
      clearTimeout(timer);
      if (r === 'timeout') {
        p.io.abortOutput();
        // Consumers finish their last send and report; do not wait for them forever.
        await Promise.race([Promise.all(p.outputDone), new Promise((res) => setTimeout(res, 500))]);
      }
    }
    return e;
  }

  resizePty(containerId: string, execId: string, width: number, height: number): void {
    const p = this.container(containerId).process(execId);
    if (!p.io.hasTerminal) throw new AgentError('FailedPrecondition', 'process has no terminal');
    if (p.status === 'exited') throw new AgentError('NotFound', 'process already finished');
    p.io.resize(width, height);
  }

  closeStdin(containerId: string, execId: string): void {
    this.container(containerId).process(execId).io.closeStdin();
  }

  async pause(containerId: string): Promise<void> {
    this.container(containerId);
    await this.runc.pause(containerId).catch((err: Error) => {
      throw new AgentError('FailedPrecondition', err.message);
    });
  }

  async resume(containerId: string): Promise<void> {
    this.container(containerId);
    await this.runc.resume(containerId).catch((err: Error) => {
      throw new AgentError('FailedPrecondition', err.message);
    });
  }

  async update(containerId: string, resourcesJson: Uint8Array): Promise<void> {
    const c = this.container(containerId);
    try {
      JSON.parse(Buffer.from(resourcesJson).toString('utf8'));
    } catch {
      throw new AgentError('InvalidArgument', 'resources are not JSON');
    }
    const file = join(c.bundle, `resources-${Date.now()}.json`);
    await writeFile(file, resourcesJson);
    try {
      await this.runc.update(containerId, file);
    } catch (err) {
      throw new AgentError('Internal', (err as Error).message);
    } finally {
      await rm(file, { force: true });
    }
  }

  async stats(containerId: string): Promise<RuncStats> {
    const c = this.container(containerId);
    if (c.init.status === 'exited') throw new AgentError('NotFound', `container ${containerId} is not running`);
    try {
      return await this.runc.stats(containerId, c.init.pid);
    } catch (err) {
      throw new AgentError('Internal', (err as Error).message);
    }
  }

  async listProcesses(containerId: string): Promise<Array<{ pid: number; execId: string }>> {
    const c = this.container(containerId);
    let pids: number[] = [];
    if (c.init.status !== 'exited') {
      try {
        pids = await this.runc.ps(containerId);
      } catch (err) {
        this.log.debug('runc ps failed', { container: containerId, error: err });
      }
    }
    const byPid = new Map<number, string>();
    for (const [id, p] of c.execs) if (p.status === 'running') byPid.set(p.pid, id);
    return pids.map((pid) => ({ pid, execId: byPid.get(pid) ?? '' }));
  }

  deleteProcess(containerId: string, execId: string): void {
    const c = this.container(containerId);
    if (execId === '') throw new AgentError('InvalidArgument', 'use DeleteContainer for the init process');
    const p = c.process(execId);
    if (p.status === 'running') throw new AgentError('FailedPrecondition', `exec ${execId} is running`);
    p.io.close();
    c.execs.delete(execId);
  }

  async deleteContainer(containerId: string): Promise<void> {
    const c = this.container(containerId);
    await this.cleanupContainer(c);
    this.containers.delete(containerId);
  }

  private async cleanupContainer(c: AgentContainer): Promise<void> {
    await this.oom.check(c.id).catch(() => false);
    this.oom.remove(c.id);
    try {
      await this.runc.delete(c.id, true);
    } catch (err) {
      if (!(err instanceof RuncError && err.notFound))
        this.log.warn('runc delete failed', { container: c.id, error: err });
    }
    for (const p of [c.init, ...c.execs.values()]) {
      if (p.status !== 'exited') p.markExited({ status: 255, exitedAt: new Date() });
      p.io.close();
    }
    if (c.mountedRootfs)
      await runCmd('umount', ['-l', join(c.bundle, 'rootfs')]).catch((err: unknown) =>
        this.log.warn('unmounting the container rootfs failed', { container: c.id, error: err }),
      );
    await rm(c.bundle, { recursive: true, force: true }).catch((err: unknown) =>
      this.log.warn('removing the container bundle failed', { container: c.id, error: err }),
    );
  }

  /** Kills and deletes every container (agent shutdown). */
  async shutdown(): Promise<void> {
    for (const c of [...this.containers.values()]) {
      await this.cleanupContainer(c).catch((err: unknown) =>
        this.log.warn('shutdown: cleaning up a container failed', { container: c.id, error: err }),
      );
      this.containers.delete(c.id);
    }
    for (const id of [...this.shares.keys()])
      await this.removeShare(id).catch((err: unknown) =>
        this.log.warn('shutdown: removing a share failed', { share: id, error: err }),
      );
    if (!this.opts.reaper) {
      this.reaper.stop();
      // Nobody reaps adopted orphans any more. (An agent run inside another process, as in the unit tests, left
      // that process a subreaper collecting zombies of everything orphaned later.)
      setChildSubreaper(false);
    }
  }

  emitOom(containerId: string): void {
    for (const l of this.oomListeners) l(containerId);
  }

  /**
   * Debugging (lcowctl exec): runs `args` in the agent's own environment (the UVM, not a container) and
   * returns its output, each stream cut at UVM_EXEC_OUTPUT_MAX. The shim decides whether it may be called.
   */
  async execInUvm(
    args: string[],
    timeoutMs: number,
  ): Promise<{ exitStatus: number; stdout: Buffer; stderr: Buffer; truncated: boolean; timedOut: boolean }> {
    if (args.length === 0 || args[0] === '') throw new AgentError('InvalidArgument', 'no command');
    if (args.length > 1024 || args.some((a) => a.length > 65536 || a.includes('\0')))
      throw new AgentError('InvalidArgument', 'command too long or not text');
    const ms = Math.min(timeoutMs || UVM_EXEC_TIMEOUT_MS, UVM_EXEC_TIMEOUT_MAX_MS);
    this.log.warn('exec in the UVM (debugging)', { args });
    return new Promise((resolve, reject) => {
      const child = spawn(args[0]!, args.slice(1), { stdio: ['ignore', 'pipe', 'pipe'], cwd: '/' });
      const out = { stdout: [] as Buffer[], stderr: [] as Buffer[] };
      const size = { stdout: 0, stderr: 0 };
      let truncated = false;
      let timedOut = false;
      for (const name of ['stdout', 'stderr'] as const)
        child[name].on('data', (d: Buffer) => {
          const room = UVM_EXEC_OUTPUT_MAX - size[name];
          if (d.length > room) truncated = true;
          if (room > 0) {
            out[name].push(d.subarray(0, room));
            size[name] += Math.min(room, d.length);
          }
        });
      const timer = setTimeout(() => {
        timedOut = true;
        child.kill('SIGKILL');
      }, ms);
      child.on('error', (err) => {
        clearTimeout(timer);
        reject(new AgentError('InvalidArgument', `cannot run ${args[0]}: ${err.message}`));
      });
      child.on('close', (code, signal) => {
        clearTimeout(timer);
        const exitStatus = code ?? 128 + (signal ? (osSignals[signal] ?? 0) : 0);
        this.log.info('exec in the UVM finished', { args, exitStatus, timedOut });
        resolve({
          exitStatus,
          stdout: Buffer.concat(out.stdout),
          stderr: Buffer.concat(out.stderr),
          truncated,
          timedOut,
        });
      });
    });
  }
}

export function runCmd(cmd: string, args: string[]): Promise<void> {
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { stdio: ['ignore', 'ignore', 'pipe'] });
    const err: Buffer[] = [];
    child.stderr.on('data', (d: Buffer) => err.push(d));
    child.on('error', reject);
    child.on('close', (code) =>
      code === 0
        ? resolve()
        : reject(new AgentError('Internal', `${cmd} ${args.join(' ')}: ${Buffer.concat(err).toString().trim()}`)),
    );
  });
}

function mountOne(m: MountSpec, target: string): Promise<void> {
  return withSpan('mount', { 'mount.type': m.type, 'mount.target': target }, () => mountNow(m, target));
}

async function mountNow(m: MountSpec, target: string): Promise<void> {
  if (!/^[a-z0-9_.-]+$/i.test(m.type)) throw new AgentError('InvalidArgument', `invalid mount type ${m.type}`);
  const opts = m.options.filter((o) => o !== '');
  if (m.type === 'overlay') {
    // A fresh scratch disk has no upper and work directories yet; overlay needs both to exist.
    for (const o of opts) {
      const [k, v] = [o.slice(0, o.indexOf('=')), o.slice(o.indexOf('=') + 1)];
      if ((k === 'upperdir' || k === 'workdir') && v.startsWith('/')) await mkdir(v, { recursive: true });
    }
  }
  const args = ['-t', m.type];
  if (opts.length) args.push('-o', opts.join(','));
  args.push(m.source, target);
  await runCmd('mount', args);
}

const osSignals = constants.signals as Record<string, number>;
