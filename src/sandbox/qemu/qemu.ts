// The `qemu` sandbox backend: one QEMU utility VM per pod (KVM when it works, else TCG). Transport tcp+token
// over QEMU user networking (restrict=on, no guestfwd: the guest reaches nothing on the host) with two hostfwd
// rules 127.0.0.1:<free port> -> the agent's control and 9P listeners in the guest. The shim DIALS IN and
// presents the per-UVM secret first (any local user can reach those host ports; the agent refuses a wrong
// secret), retrying until the agent ACKs (slirp accepts before the guest listens). On the control connection the
// shim is the ttrpc client. Host directories reach the guest through our 9P server: one P9Server per share; for
// AddShare the shim dials the 9P port with secret + the share's token (retrying until the agent registered the
// share), and feeds the connection to the share's server; the agent mounts the accepted socket with trans=fd.
// Shares are refcounted per (path, read-only).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { mkdir, rm, writeFile } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Agent as AgentDesc } from '../../gen/agent/v1/agent_pb.js';
import { P9Server } from '../../p9/server.js';
import { freePort } from './ports.js';
import { dialTcpTokenAck, newSecret } from '../../transport/index.js';
import { TtrpcClient, createClient, type ServiceClient } from '../../ttrpc/index.js';
import type { Logger } from '../../util/log.js';
import type {
  BootedSandbox,
  Sandbox,
  SandboxExitReason,
  SandboxOptions,
  SandboxRecord,
  SandboxStats,
  Share,
} from '../sandbox.js';
import { probeAccel, qemuArgs, qemuConfig, type Accel, type QemuConfig } from './config.js';
import { QmpClient } from './qmp.js';
import {
  adoptClone,
  cloneArgs,
  discardTemplate,
  ensureTemplate,
  restoreClone,
  templateState,
  type Template,
} from './template.js';
import { processRssBytes, processStartTime } from '../../util/proc.js';

const SHARE_TOKEN_LENGTH = 16;

export interface QemuSandboxOptions extends SandboxOptions {
  runtimeConfig?: Record<string, unknown>;
}

interface ShareEntry {
  id: string;
  key: string;
  hostPath: string;
  readOnly: boolean;
  token: Buffer;
  server: P9Server;
  refs: number;
  ready: Promise<Share>;
}

export class QemuSandbox implements Sandbox {
  readonly backend = 'qemu';
  readonly isolated = true;
  /** The container rootfs is mounted on the host (bundle/rootfs) and shared whole; see task/uvm-fs.ts. */
  readonly mountsRootfsOnHost = true;
  readonly cfg: QemuConfig;
  accel: Accel | undefined;
  /** Boot phases in ms since boot() began: qemu spawned, agent connected, agent answered. */
  readonly timings: Record<string, number> = {};
  /** How this UVM started: restored from a template (and whether this boot built it) or booted cold. */
  startedFrom: { kind: 'cold' } | { kind: 'template'; key: string; built: boolean; bootId: string } = {
    kind: 'cold',
  };
  private child: ChildProcess | undefined;
  private startTime = '';
  private client: TtrpcClient | undefined;
  private agent: ServiceClient<(typeof AgentDesc)['method']> | undefined;
  private qmp: QmpClient | undefined;
  private secret: Buffer | undefined;
  /** Host ports QEMU forwards to the agent's control and 9P listeners. */
  private ports: { control: number; p9: number } | undefined;
  private readonly shares = new Map<string, ShareEntry>();
  private readonly sharesByKey = new Map<string, ShareEntry>();
  private shareSeq = 0;
  private readonly hostMounts = new Set<string>();
  private exitCbs: Array<(r: SandboxExitReason) => void> = [];
  private exitReason: SandboxExitReason | undefined;
  private exited: Promise<void> | undefined;
  private stopping = false;
  private consoleTail: string[] = [];
  private readonly log: Logger;

  constructor(private readonly opts: QemuSandboxOptions) {
    this.log = opts.logger.with({ sandbox: opts.id, backend: 'qemu' });
    this.cfg = qemuConfig(opts.runtimeConfig ?? {}, opts.annotations);
  }

  get qmpSocket(): string {
    return join(this.opts.stateDir, 'qmp.sock');
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async boot(): Promise<BootedSandbox> {
    const t0 = Date.now();
    const dir = this.opts.stateDir;
    await mkdir(dir, { recursive: true, mode: 0o700 });
    const tokenFile = join(dir, 'token');
    this.accel = await probeAccel(this.cfg, this.log);
    const cpus = this.cfg.cpus || (this.accel === 'kvm' ? 2 : 1);
    this.log.info('starting UVM', {
      accel: this.accel,
      memoryMiB: this.cfg.memoryMiB,
      cpus,
      kernel: this.cfg.kernel,
      initrd: this.cfg.initrd,
    });
    const deadline = Date.now() + this.cfg.bootTimeoutMs;
    let timer: NodeJS.Timeout | undefined;
    // Templates: restore a snapshot instead of booting (template.ts); any failure falls back to a cold boot.
    let tpl = await this.template(cpus);
    try {
      // The host ports are picked free, then bound by QEMU: another process may take one in between. QEMU then
      // fails at once ("Could not set up host forwarding rule"): pick new ports and start again.
      for (let attempt = 1; ; attempt++) {
        const ports = { control: await freePort(), p9: await freePort() };
        if (ports.p9 === ports.control) continue;
        this.ports = ports;
        // A fresh secret per attempt: when QEMU lost a port to another process, the dial below may have handed
        // the secret to that process; it must not open the next attempt's VM.
        const secret = newSecret();
        await writeFile(tokenFile, secret, { mode: 0o600 });
        this.secret = secret;
        const vm = {
          name: `lcow-${this.opts.id}`.slice(0, 64),
          qmpSocket: this.qmpSocket,
          tokenFile,
          controlPort: ports.control,
          p9Port: ports.p9,
        };
        const child = this.spawnQemu(
          tpl
            ? cloneArgs({ cfg: this.cfg, accel: this.accel, cpus }, tpl.template, vm)
            : qemuArgs({ cfg: this.cfg, accel: this.accel, cpus, ...vm }),
        );
        this.timings.spawned = Date.now() - t0;
        if (tpl) {
          const restored = await this.restore(tpl.template, deadline);
          if (!restored) {
            tpl = undefined;
            continue;
          }
          this.timings.restored = Date.now() - t0;
        }
        let exitedDuringBoot = false;
        const exited = this.exited!.then(() => {
          exitedDuringBoot = true;
        });
        const conn = await Promise.race([
          dialTcpTokenAck('127.0.0.1', ports.control, secret, {
            timeoutMs: Math.max(1, deadline - Date.now()),
            attemptTimeoutMs: 3000,
            abort: () => (exitedDuringBoot || this.exitReason ? 'QEMU exited' : undefined),
          }).catch((err: unknown) => {
            if (exitedDuringBoot) return undefined;
            throw err;
          }),
          exited.then(() => undefined),
          new Promise<never>((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`the guest agent did not answer within ${this.cfg.bootTimeoutMs} ms`)),
              Math.max(1, deadline - Date.now()),
            );
          }),
        ]);
        clearTimeout(timer);
        if (conn) {
          this.timings.connected = Date.now() - t0;
          this.startTime = (await processStartTime(child.pid!)) ?? '';
          this.client = new TtrpcClient(conn.stream, { logger: this.log });
          this.agent = createClient(AgentDesc, this.client);
          break;
        }
        if (this.portClash && attempt < 5) {
          this.log.warn('a forwarded host port was taken before QEMU bound it; retrying with new ports', { ports });
          this.portClash = false;
          this.exitReason = undefined;
          continue;
        }
        throw new Error(`the UVM exited during boot:\n${this.consoleTail.join('\n')}`);
      }
      if (tpl) {
        const adopted = await adoptClone(this.agent);
        this.startedFrom = { kind: 'template', key: tpl.template.key, built: tpl.built, bootId: adopted.bootId };
        this.log.info('UVM restored from a template', { template: tpl.template.key, ...adopted });
      }
      await this.agent.getInfo({}, { timeoutMs: 30_000 });
      this.timings.ready = Date.now() - t0;
      this.log.info('UVM ready', { accel: this.accel, ms: this.timings.ready, pid: this.child!.pid });
    } catch (err) {
      await this.stop('force');
      throw err;
    } finally {
      clearTimeout(timer);
    }
    if (!this.qmp)
      QmpClient.connect(this.qmpSocket, 5000).then(
        (q) => (this.qmp = q),
        (err: unknown) => this.log.warn('QMP unavailable', { error: err }),
      );
    return { agent: this.client!, pids: [this.child!.pid!] };
  }

  /**
   * The template to restore from; undefined when templates are off or unusable, or when none exists yet (a
   * background builder is started and this pod boots cold). A build under way is waited for.
   */
  private async template(cpus: number): Promise<{ template: Template; built: boolean } | undefined> {
    if (!this.cfg.templates) return undefined;
    try {
      const spec = { cfg: this.cfg, accel: this.accel!, cpus };
      const state = templateState(spec, this.log);
      if ('template' in state) return { template: state.template, built: false };
      if ('started' in state) return undefined;
      const t0 = Date.now();
      const r = await ensureTemplate(spec, this.log);
      this.timings.templateWait = Date.now() - t0;
      return r;
    } catch (err) {
      this.log.warn('no UVM template; booting cold', { error: err });
      return undefined;
    }
  }

  /**
   * Feeds a clone its device state and runs it. On failure the clone is killed, the template discarded (the
   * next pod rebuilds it) and false returned: the caller boots cold.
   */
  private async restore(t: Template, deadline: number): Promise<boolean> {
    try {
      this.qmp = await restoreClone(this.qmpSocket, t, Math.max(1, deadline - Date.now()));
      return true;
    } catch (err) {
      this.qmp = undefined;
      const child = this.child;
      if (child && child.exitCode === null && child.signalCode === null) {
        this.stopping = true;
        child.kill('SIGKILL');
      }
      await this.exited;
      this.stopping = false;
      this.exitReason = undefined;
      await discardTemplate(t, this.log, (err as Error).message);
      return false;
    }
  }

  /** Set when QEMU exited during boot because it could not bind a forwarded host port (boot() retries). */
  private portClash = false;

  private spawnQemu(args: string[]): ChildProcess {
    const child = spawn(this.cfg.binary, args, { stdio: ['ignore', 'pipe', 'pipe'], detached: true });
    this.child = child;
    this.consoleTail = [];
    const onLine = (stream: string) => (line: string) => {
      this.consoleTail.push(line);
      if (this.consoleTail.length > 40) this.consoleTail.shift();
      this.log.info('uvm', { [stream]: line });
    };
    createInterface({ input: child.stdout! }).on('line', onLine('console'));
    createInterface({ input: child.stderr! }).on('line', onLine('qemu'));
    this.exited = new Promise((resolve) => {
      let done = false;
      const onExit = (code: number | null, signal: NodeJS.Signals | null): void => {
        if (done) return;
        done = true;
        this.log.info('UVM exited', { code, signal });
        // Let the line readers drain stderr first: the port clash shows up there.
        setImmediate(() => {
          if (
            this.timings.connected === undefined &&
            !this.stopping &&
            this.consoleTail.some((l) => l.includes('Could not set up host forwarding rule'))
          ) {
            this.portClash = true;
            this.exitReason = { kind: 'crashed', code, signal };
            return resolve();
          }
          this.exitReason = this.stopping ? { kind: 'stopped' } : { kind: 'crashed', code, signal };
          this.teardownHostSide();
          for (const cb of this.exitCbs.splice(0)) cb(this.exitReason);
          resolve();
        });
      };
      child.once('exit', onExit);
      child.once('error', (err) => {
        this.log.error('cannot start QEMU', { error: err });
        onExit(null, null);
      });
    });
    return child;
  }

  /**
   * Dials the agent's 9P listener for share `e`: secret + the share's token, retried until the agent (which
   * registers the share when AddShare arrives) ACKs, or `signal` says AddShare is over. Feeds the connection
   * to the share's 9P server.
   */
  private async connectShare(e: ShareEntry, over: () => string | undefined): Promise<void> {
    const conn = await dialTcpTokenAck('127.0.0.1', this.ports!.p9, this.secret!, {
      header: e.token,
      timeoutMs: 60_000,
      attemptTimeoutMs: 10_000,
      abort: () => over() ?? (this.exitReason ? 'the UVM exited' : undefined),
    });
    if (over()) return conn.close();
    e.server.handleConnection(conn.stream);
  }

  async addShare(hostPath: string, opts: { readOnly: boolean }): Promise<Share> {
    if (!this.agent) throw new Error('sandbox not booted');
    const key = `${opts.readOnly ? 'ro' : 'rw'}:${hostPath}`;
    const existing = this.sharesByKey.get(key);
    if (existing) {
      existing.refs++;
      try {
        return await existing.ready;
      } catch (err) {
        existing.refs--;
        throw err;
      }
    }
    const id = `s${++this.shareSeq}`;
    const server = new P9Server({
      exports: [{ name: id, path: hostPath, readOnly: opts.readOnly }],
      logger: this.log.with({ share: id }),
    });
    const e: ShareEntry = {
      id,
      key,
      hostPath,
      readOnly: opts.readOnly,
      token: randomBytes(SHARE_TOKEN_LENGTH),
      server,
      refs: 1,
      ready: undefined as unknown as Promise<Share>,
    };
    this.shares.set(id, e);
    this.sharesByKey.set(key, e);
    let rpcOver: string | undefined;
    const dialed = this.connectShare(e, () => rpcOver);
    dialed.catch(() => undefined);
    e.ready = this.agent
      .addShare({
        shareId: id,
        kind: '9p',
        source: hostPath,
        target: '',
        readOnly: opts.readOnly,
        aname: id,
        token: e.token,
        options: { msize: '262144' },
      })
      .then(
        async (r) => {
          rpcOver = 'AddShare done';
          await dialed; // the agent mounted it, so our side has it too
          return { shareId: id, guestPath: r.guestPath };
        },
        async (err: unknown) => {
          rpcOver = 'AddShare failed';
          await dialed.catch(() => undefined);
          throw err;
        },
      );
    try {
      const share = await e.ready;
      this.log.debug('share added', { share: id, hostPath, guestPath: share.guestPath, readOnly: opts.readOnly });
      return share;
    } catch (err) {
      this.shares.delete(id);
      this.sharesByKey.delete(key);
      server.close();
      throw err;
    }
  }

  async removeShare(shareId: string): Promise<void> {
    const e = this.shares.get(shareId);
    if (!e) return;
    if (--e.refs > 0) return;
    this.shares.delete(shareId);
    this.sharesByKey.delete(e.key);
    try {
      if (this.agent && !this.client?.closed) await this.agent.removeShare({ shareId }, { timeoutMs: 10_000 });
    } finally {
      e.server.close();
    }
  }

  get shareCount(): number {
    return this.shares.size;
  }

  /** Host mounts (container rootfs under the bundle) that `delete` must undo if the shim dies. */
  trackHostMount(path: string, present: boolean): void {
    if (present) this.hostMounts.add(path);
    else this.hostMounts.delete(path);
  }

  async stats(): Promise<SandboxStats[]> {
    const pid = this.child?.pid;
    if (!pid || this.exitReason) return [];
    const rssBytes = await processRssBytes(pid);
    return rssBytes === undefined ? [] : [{ pid, rssBytes }];
  }

  onExit(cb: (reason: SandboxExitReason) => void): void {
    if (this.exitReason) cb(this.exitReason);
    else this.exitCbs.push(cb);
  }

  record(): SandboxRecord {
    return {
      backend: this.backend,
      id: this.opts.id,
      stateDir: this.opts.stateDir,
      pids: this.child?.pid ? [{ pid: this.child.pid, startTime: this.startTime }] : [],
      hostMounts: [...this.hostMounts],
    };
  }

  /** Closes the host side: listeners, 9P servers, QMP, the agent client. */
  private teardownHostSide(): void {
    this.client?.close();
    this.qmp?.close();
    for (const e of this.shares.values()) e.server.close();
    this.shares.clear();
    this.sharesByKey.clear();
  }

  async stop(mode: 'graceful' | 'force'): Promise<void> {
    this.stopping = true;
    const child = this.child;
    const running = (): boolean => !!child && child.exitCode === null && child.signalCode === null;
    if (child && running()) {
      const waitExit = (ms: number): Promise<boolean> =>
        Promise.race([this.exited!.then(() => true), new Promise<boolean>((r) => setTimeout(() => r(false), ms))]);
      if (mode === 'graceful') {
        // The agent kills its containers and exits; init then powers the VM off.
        if (this.agent && !this.client?.closed)
          await this.agent.shutdown({}, { timeoutMs: 5000 }).catch(() => undefined);
        if (!(await waitExit(10_000)) && this.qmp) {
          this.log.warn('UVM did not power off; QMP quit');
          await this.qmp.execute('quit').catch(() => undefined);
          await waitExit(3000);
        }
      }
      if (running()) child.kill('SIGKILL');
      await this.exited;
    } else this.teardownHostSide();
    await cleanupQemuSandbox(this.record());
  }
}

/** Kills the VM if it is still the recorded incarnation, undoes host mounts, removes the state dir. */
export async function cleanupQemuSandbox(rec: SandboxRecord): Promise<void> {
  for (const { pid, startTime } of rec.pids) {
    if (pid > 0 && (await processStartTime(pid)) === startTime) {
      try {
        process.kill(pid, 'SIGKILL');
      } catch {
        // gone
      }
      for (let i = 0; i < 100 && (await processStartTime(pid)) === startTime; i++)
        await new Promise((r) => setTimeout(r, 20));
    }
  }
  const mounts = Array.isArray(rec.hostMounts) ? (rec.hostMounts as string[]) : [];
  for (const m of mounts) await umount(m);
  await rm(rec.stateDir, { recursive: true, force: true });
}

export function umount(path: string): Promise<void> {
  return new Promise((resolve) => {
    const c = spawn('umount', [path], { stdio: 'ignore' });
    c.on('error', () => resolve());
    c.on('close', () => resolve());
  });
}
