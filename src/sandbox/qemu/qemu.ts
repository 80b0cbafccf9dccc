// The `qemu` sandbox backend: one QEMU utility VM per pod (KVM when it works, else TCG). Transport tcp+token
// over QEMU user networking (restrict=on, no guestfwd: the guest reaches nothing on the host) with two hostfwd
// rules 127.0.0.1:<free port> -> the agent's control and 9P listeners in the guest. The shim DIALS IN and both
// sides prove they know the per-UVM secret without sending it (transport/handshake.ts; any local user can reach
// those host ports), retrying while the connection closes or stays silent (slirp accepts before the guest
// listens). A peer that answers but fails its proof holds the port instead of QEMU (a squatter): the attempt is
// abandoned and QEMU restarted with new ports and a new secret. On the control connection the shim is the ttrpc
// client. Host directories reach the guest through our 9P server: one P9Server per share; for AddShare the shim
// dials the 9P port naming the share (its token bound into the handshake; retrying until the agent registered
// the share), and feeds the connection to the share's server; the agent mounts the accepted socket with
// trans=fd. Shares are refcounted per (path, read-only).
import { spawn, type ChildProcess } from 'node:child_process';
import { randomBytes } from 'node:crypto';
import { chmod, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Agent as AgentDesc, ShareChange_Kind } from '../../gen/agent/v1/agent_pb.js';
import { ShareNotifier } from '../../notify/share-notifier.js';
import type { ChangeKind } from '../../notify/coalescer.js';
import { P9Server } from '../../p9/server.js';
import { createServer } from 'node:net';
import {
  PeerProofError,
  dialTcpToken,
  fixedSecret,
  newSecret,
  type Conn,
  type SecretSource,
} from '../../transport/index.js';
import { mkdirPrivate, writePrivateFile } from '../../util/private-fs.js';
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
  ShareOptions,
} from '../sandbox.js';
import { probeAccel, qemuArgs, qemuConfig, type Accel, type QemuConfig } from './config.js';
import { QmpClient } from './qmp.js';
import { SandboxLifecycle } from '../lifecycle.js';
import { processRssBytes, processStartTime } from '../../util/proc.js';
import { P9Metrics } from '../../telemetry/p9-metrics.js';
import { instrumentClient } from '../../telemetry/client.js';
import { BootPhases, timedShareSetup } from './boot-phases.js';
import { attachPodNetwork, detachPodNetwork, inspectPodNetns, PodNetworkError } from './podnet.js';

const SHARE_TOKEN_LENGTH = 16;
/** QEMU starts per boot at most: each retry follows a port lost to another process (clash or squatter). */
const MAX_BOOT_ATTEMPTS = 5;

export interface QemuSandboxOptions extends SandboxOptions {
  runtimeConfig?: Record<string, unknown>;
  /** Where free host ports come from (default: the kernel's pick on 127.0.0.1). Tests inject a squatted one. */
  freePort?: () => Promise<number>;
}

interface PodNet {
  netnsPath: string;
  /** The CNI interface, once known (delete must remove its tc redirect). */
  iface?: string;
  guest: Promise<string>;
}

const SHARE_CHANGE_KINDS: Record<ChangeKind, ShareChange_Kind> = {
  create: ShareChange_Kind.CREATE,
  delete: ShareChange_Kind.DELETE,
  modify: ShareChange_Kind.MODIFY,
  attrib: ShareChange_Kind.ATTRIB,
  rename: ShareChange_Kind.RENAME,
};

interface ShareEntry {
  id: string;
  key: string;
  hostPath: string;
  readOnly: boolean;
  token: Buffer;
  server: P9Server;
  refs: number;
  ready: Promise<Share>;
  /** Host change replay (docs/share-notify.md), when the share asked for it. */
  notifier?: ShareNotifier;
}

export class QemuSandbox implements Sandbox {
  readonly backend = 'qemu';
  readonly isolated = true;
  readonly transport = 'tcp+token';
  /** The container rootfs is mounted on the host (bundle/rootfs) and shared whole; see task/uvm-fs.ts. */
  readonly mountsRootfsOnHost = true;
  readonly cfg: QemuConfig;
  accel: Accel | undefined;
  /** Boot phases in ms since boot() began: qemu spawned, agent connected, agent answered. */
  readonly timings: Record<string, number> = {};
  private child: ChildProcess | undefined;
  private startTime = '';
  private client: TtrpcClient | undefined;
  private agent: ServiceClient<(typeof AgentDesc)['method']> | undefined;
  private qmp: QmpClient | undefined;
  private qmpReady: Promise<QmpClient> | undefined;
  /** The pod network (podnet.ts): the host netns it came from, the CNI interface, the guest netns path. */
  private podNet: PodNet | undefined;
  /** The current boot attempt's secret (the shim holds it; the guest reads it from fw_cfg at every handshake). */
  private secret: SecretSource | undefined;
  /** Host ports QEMU forwards to the agent's control and 9P listeners. */
  private ports: { control: number; p9: number } | undefined;
  private readonly shares = new Map<string, ShareEntry>();
  private readonly sharesByKey = new Map<string, ShareEntry>();
  private shareSeq = 0;
  private readonly hostMounts = new Set<string>();
  private exitReason: SandboxExitReason | undefined;
  private exited: Promise<void> | undefined;
  // -- lifecycle (src/sandbox/lifecycle.ts): phases and the one exit notification shared with other backends.
  private readonly life: SandboxLifecycle;
  /** Why the shim ended a VM it did not mean to stop (e.g. its agent connection dropped). */
  private crashDetail: string | undefined;
  private consoleTail: string[] = [];
  private readonly log: Logger;
  /** Boot phases for traces and metrics (telemetry only). */
  private readonly phases = new BootPhases();

  constructor(private readonly opts: QemuSandboxOptions) {
    this.log = opts.logger.with({ sandbox: opts.id, backend: 'qemu' });
    this.cfg = qemuConfig(opts.runtimeConfig ?? {}, opts.annotations);
    this.life = new SandboxLifecycle(this.log);
  }

  get qmpSocket(): string {
    return join(this.opts.stateDir, 'qmp.sock');
  }

  get pid(): number | undefined {
    return this.child?.pid;
  }

  async boot(): Promise<BootedSandbox> {
    this.life.boot();
    const t0 = Date.now();
    // A CNI result we cannot carry into the VM fails here, before QEMU starts (podnet.ts names what it found).
    if (this.opts.podNetns) await inspectPodNetns(this.opts.podNetns);
    const dir = this.opts.stateDir;
    mkdirPrivate(dir);
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
    try {
      // The host ports are picked free, then bound by QEMU: another local process may take one in between. Then
      // either QEMU fails at once ("Could not set up host forwarding rule"), or the dial below reaches that process
      // first, which cannot prove it knows the secret (PeerProofError). Both: new ports, new secret, start again.
      const pickPort = this.opts.freePort ?? freePort;
      for (let attempt = 1; ; attempt++) {
        const ports = { control: await pickPort(), p9: await pickPort() };
        if (ports.p9 === ports.control) continue;
        this.ports = ports;
        // A fresh secret per attempt: nothing of it leaves the host, but an abandoned attempt's VM must never
        // share a secret with the next one.
        const secret = newSecret();
        writePrivateFile(tokenFile, secret);
        this.secret = fixedSecret(secret);
        const child = this.spawnQemu(
          qemuArgs({
            cfg: this.cfg,
            accel: this.accel,
            cpus,
            name: `lcow-${this.opts.id}`.slice(0, 64),
            qmpSocket: this.qmpSocket,
            tokenFile,
            controlPort: ports.control,
            p9Port: ports.p9,
          }),
        );
        this.timings.spawned = Date.now() - t0;
        this.phases.spawned();
        let exitedDuringBoot = false;
        const exited = this.exited!.then(() => {
          exitedDuringBoot = true;
        });
        type Outcome = { kind: 'conn'; conn: Conn } | { kind: 'exited' } | { kind: 'squatter'; err: PeerProofError };
        const outcome = await Promise.race<Outcome>([
          dialTcpToken('127.0.0.1', ports.control, {
            secret: this.secret,
            purpose: { kind: 'control' },
            timeoutMs: Math.max(1, deadline - Date.now()),
            attemptTimeoutMs: 3000,
            abort: () => (exitedDuringBoot || this.exitReason ? 'QEMU exited' : undefined),
          }).then(
            (conn): Outcome => ({ kind: 'conn', conn }),
            (err: unknown): Outcome => {
              if (exitedDuringBoot) return { kind: 'exited' };
              if (err instanceof PeerProofError) return { kind: 'squatter', err };
              throw err;
            },
          ),
          exited.then((): Outcome => ({ kind: 'exited' })),
          new Promise<never>((_, reject) => {
            timer = setTimeout(
              () => reject(new Error(`the guest agent did not answer within ${this.cfg.bootTimeoutMs} ms`)),
              Math.max(1, deadline - Date.now()),
            );
          }),
        ]);
        clearTimeout(timer);
        if (outcome.kind === 'conn') {
          this.timings.connected = Date.now() - t0;
          this.phases.connected();
          this.startTime = (await processStartTime(child.pid!)) ?? '';
          this.client = new TtrpcClient(outcome.conn.stream, { logger: this.log });
          // Timed and traced like the Task service's (AddShare's span continues into the guest's mount).
          this.agent = instrumentClient(AgentDesc, createClient(AgentDesc, this.client));
          break;
        }
        if (outcome.kind === 'squatter') {
          this.log.warn(
            'SECURITY: another local process answered on a forwarded host port and failed to prove it knows the ' +
              'secret (port squatting?); it received only a random nonce. Restarting QEMU with new ports and a new secret',
            { port: ports.control, attempt, error: outcome.err.message },
          );
          await this.abandonAttempt();
        } else if (this.portClash) {
          this.log.warn(
            'a forwarded host port was taken by another local process before QEMU bound it; restarting QEMU with new ports and a new secret',
            { ports, attempt },
          );
        } else throw new Error(`the UVM exited during boot:\n${this.consoleTail.join('\n')}`);
        this.portClash = false;
        this.exitReason = undefined;
        if (attempt >= MAX_BOOT_ATTEMPTS)
          throw new Error(
            `the UVM could not get its host ports in ${MAX_BOOT_ATTEMPTS} attempts (see the warnings above)`,
          );
      }
      await this.agent.getInfo({}, { timeoutMs: 30_000 });
      this.watchAgentConnection();
      this.life.ready();
      this.timings.ready = Date.now() - t0;
      this.phases.ready();
      this.phases.report({ accel: this.accel });
      this.log.info('UVM ready', { accel: this.accel, ms: this.timings.ready, pid: this.child!.pid });
    } catch (err) {
      await this.stop('force');
      throw err;
    } finally {
      clearTimeout(timer);
    }
    // QEMU made the QMP socket with the shim's umask: 0600 (the 0700 state dir already keeps others out).
    await chmod(this.qmpSocket, 0o600).catch(() => undefined);
    this.qmpReady = QmpClient.connect(this.qmpSocket, 5000);
    this.qmpReady.then(
      (q) => (this.qmp = q),
      (err: unknown) => this.log.warn('QMP unavailable', { error: err }),
    );
    return { agent: this.client!, pids: [this.child!.pid!] };
  }

  /** Set when QEMU exited during boot because it could not bind a forwarded host port (boot() retries). */
  private portClash = false;
  /** Set while boot() kills an attempt's QEMU itself (a squatter answered): that exit is not a crash. */
  private abandoning = false;

  private async abandonAttempt(): Promise<void> {
    const child = this.child;
    if (!child) return;
    this.abandoning = true;
    try {
      if (child.exitCode === null && child.signalCode === null) child.kill('SIGKILL');
      await this.exited;
    } finally {
      this.abandoning = false;
    }
  }

  /** Without its control connection the pod is unusable: losing it ends the VM (a crash, not a stop). */
  private watchAgentConnection(): void {
    this.client!.onClose(() => {
      const child = this.child;
      if (this.life.phase !== 'ready' || !child || child.exitCode !== null || child.signalCode !== null) return;
      this.crashDetail = 'agent connection lost';
      this.log.error('agent connection lost; killing the UVM');
      child.kill('SIGKILL');
    });
  }

  private spawnQemu(args: string[]): ChildProcess {
    // setpriv --pdeathsig: QEMU dies with the shim, so a SIGKILLed shim never leaves a VM running (containerd's
    // `delete` then only removes state); the pid stays QEMU's own (setpriv execs it).
    const child = spawn('setpriv', ['--pdeathsig', 'KILL', '--', this.cfg.binary, ...args], {
      stdio: ['ignore', 'pipe', 'pipe'],
      detached: true,
    });
    this.child = child;
    this.consoleTail = [];
    const onLine = (stream: string) => (line: string) => {
      this.consoleTail.push(line);
      if (this.consoleTail.length > 40) this.consoleTail.shift();
      // The console is kept per pod (guestLog); the shim's log has it at debug level.
      this.log.debug('uvm', { [stream]: line });
      if (stream === 'console') this.phases.consoleLine(line);
      this.opts.guestLog?.console(stream === 'console' ? line : `qemu: ${line}`);
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
          if (this.abandoning) {
            this.exitReason = { kind: 'crashed', code, signal };
            return resolve();
          }
          if (
            this.timings.connected === undefined &&
            !this.life.stopRequested &&
            this.consoleTail.some((l) => l.includes('Could not set up host forwarding rule'))
          ) {
            this.portClash = true;
            this.exitReason = { kind: 'crashed', code, signal };
            return resolve();
          }
          this.exitReason = this.life.stopRequested ? { kind: 'stopped' } : { kind: 'crashed', code, signal };
          this.teardownHostSide();
          this.life.ended({ code, signal, ...(this.crashDetail ? { detail: this.crashDetail } : {}) });
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
   * Dials the agent's 9P listener for share `e` (the handshake names the share and binds its token), retried until
   * the agent (which registers the share when AddShare arrives) answers, or `over` says AddShare is over. Feeds the
   * connection to the share's 9P server.
   */
  private async connectShare(e: ShareEntry, over: () => string | undefined): Promise<void> {
    const conn = await dialTcpToken('127.0.0.1', this.ports!.p9, {
      secret: this.secret!,
      purpose: { kind: 'p9', shareId: e.id },
      binding: e.token,
      timeoutMs: 60_000,
      attemptTimeoutMs: 10_000,
      abort: () => over() ?? (this.exitReason ? 'the UVM exited' : undefined),
    }).catch((err: unknown) => {
      if (err instanceof PeerProofError)
        this.log.error('SECURITY: the 9P port answered without proving it knows the secret', {
          share: e.id,
          port: this.ports!.p9,
          error: err.message,
        });
      throw err;
    });
    if (over()) return conn.close();
    e.server.handleConnection(conn.stream);
  }

  addShare(hostPath: string, opts: ShareOptions): Promise<Share> {
    return timedShareSetup({ path: hostPath, readOnly: opts.readOnly }, () => this.addShareNow(hostPath, opts));
  }

  private async addShareNow(hostPath: string, opts: ShareOptions): Promise<Share> {
    if (!this.agent) throw new Error('sandbox not booted');
    const security = opts.role === 'rootfs-snapshot' ? this.cfg.rootfsShareSecurity : this.cfg.hostShareSecurity;
    const cache = opts.cache ?? (opts.role === 'rootfs-snapshot' ? this.cfg.rootfsShareCache : this.cfg.shareCache);
    const notify = opts.notify === true && this.cfg.shareNotify.enabled;
    const key = `${opts.readOnly ? 'ro' : 'rw'}:${security}:${cache}:${notify ? 'notify:' : ''}${hostPath}`;
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
      exports: [
        {
          name: id,
          path: hostPath,
          readOnly: opts.readOnly,
          security,
          replay: notify ? { uid: this.cfg.shareNotify.uid } : undefined,
        },
      ],
      logger: this.log.with({ share: id }),
      observer: new P9Metrics({ share: id, path: hostPath }),
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
      .addShare(
        {
          shareId: id,
          kind: '9p',
          source: hostPath,
          target: '',
          readOnly: opts.readOnly,
          aname: id,
          token: e.token,
          options: { msize: '262144', cache },
          notifyUid: notify ? this.cfg.shareNotify.uid : 0,
          notifyPinDirs: notify ? this.cfg.shareNotify.pinDirs : 0,
        },
        { timeoutMs: 60_000 },
      ) // every agent call has a deadline (a wedged guest must not hang Create)
      .then(
        async (r) => {
          rpcOver = 'AddShare done';
          await dialed; // the agent mounted it, so our side has it too
          if (notify) await this.startNotifier(e);
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
      this.log.debug('share added', {
        share: id,
        hostPath,
        guestPath: share.guestPath,
        readOnly: opts.readOnly,
        security,
        cache,
      });
      return share;
    } catch (err) {
      this.shares.delete(id);
      this.sharesByKey.delete(key);
      e.notifier?.close();
      server.close();
      throw err;
    }
  }

  /**
   * Watches the share's host directory and replays host processes' changes in the guest. A host without
   * fanotify (not root, old kernel) keeps the share without it (logged).
   */
  private async startNotifier(e: ShareEntry): Promise<void> {
    const agent = this.agent!;
    const log = this.log.with({ share: e.id });
    try {
      e.notifier = await ShareNotifier.start({
        shareId: e.id,
        hostPath: e.hostPath,
        plan: e.server.exports[0]!.replay!.plan,
        log,
        maxDirs: this.cfg.shareNotify.maxDirs,
        send: (changes) =>
          agent.replayShareChanges(
            {
              shareId: e.id,
              changes: changes.map((c) => ({
                kind: SHARE_CHANGE_KINDS[c.kind],
                path: c.path,
                to: c.to ?? '',
                dir: c.dir,
                content: c.content ?? false,
                type: c.type ?? '',
              })),
            },
            { timeoutMs: 60_000 },
          ),
      });
      const st = e.notifier.stats();
      log.debug('share notify on', { watchedDirs: st.watchedDirs, skippedDirs: st.skippedDirs });
    } catch (err) {
      log.warn('share notify unavailable: host changes will not wake watchers in the guest', { error: err });
    }
  }

  async removeShare(shareId: string): Promise<void> {
    const e = this.shares.get(shareId);
    if (!e) return;
    if (--e.refs > 0) return;
    this.shares.delete(shareId);
    this.sharesByKey.delete(e.key);
    e.notifier?.close();
    try {
      // 60 s: the guest first writes back what it cached of the share (a cache=loose rootfs).
      if (this.agent && !this.client?.closed) await this.agent.removeShare({ shareId }, { timeoutMs: 60_000 });
    } finally {
      e.server.close();
    }
  }

  describe(): Record<string, string> {
    return {
      accel: this.accel ?? '',
      cpus: String(this.cfg.cpus || (this.accel === 'kvm' ? 2 : 1)),
      memory_mb: String(this.cfg.memoryMiB),
      shares: String(this.shares.size),
      ...(this.child?.pid ? { qemu_pid: String(this.child.pid) } : {}),
    };
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

  // ---- pod network (podnet.ts) ----
  attachNetwork(netnsPath: string): Promise<string> {
    if (this.podNet) {
      if (this.podNet.netnsPath !== netnsPath)
        return Promise.reject(
          new PodNetworkError(`this pod's network is ${this.podNet.netnsPath}; a container names ${netnsPath}`),
        );
      return this.podNet.guest;
    }
    if (!this.agent || !this.qmpReady) return Promise.reject(new Error('sandbox not booted'));
    const agent = this.agent;
    const net: PodNet = { netnsPath, guest: Promise.resolve('') };
    net.guest = (async () => {
      const r = await attachPodNetwork({
        netnsPath,
        qmp: await this.qmpReady!,
        log: this.log,
        configureGuest: async (iface) => {
          net.iface = iface.name;
          const res = await agent.configureNetwork({ ...iface, timeoutMs: 30_000 }, { timeoutMs: 60_000 });
          return res.netnsPath;
        },
      });
      return r.guestNetnsPath;
    })();
    this.podNet = net;
    net.guest.catch(() => {
      if (this.podNet === net) this.podNet = undefined;
    });
    return net.guest;
  }

  onExit(cb: (reason: SandboxExitReason) => void): void {
    this.life.onExit(cb);
  }

  record(): SandboxRecord {
    return {
      backend: this.backend,
      id: this.opts.id,
      stateDir: this.opts.stateDir,
      pids: this.child?.pid ? [{ pid: this.child.pid, startTime: this.startTime }] : [],
      hostMounts: [...this.hostMounts],
      ...(this.podNet?.iface ? { podNetwork: { netnsPath: this.podNet.netnsPath, iface: this.podNet.iface } } : {}),
    };
  }

  /** Closes the host side: listeners, 9P servers, QMP, the agent client. */
  private teardownHostSide(): void {
    this.client?.close();
    this.qmp?.close();
    for (const e of this.shares.values()) {
      e.notifier?.close();
      e.server.close();
    }
    this.shares.clear();
    this.sharesByKey.clear();
  }

  async stop(mode: 'graceful' | 'force'): Promise<void> {
    this.life.stop();
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
    }
    await this.exited;
    // Never spawned, or ended by a port clash during boot (no exit notification then): end it here.
    if (this.life.phase !== 'gone') {
      this.teardownHostSide();
      this.life.ended({ code: null, signal: null });
    }
    await this.life.gone;
    await cleanupQemuSandbox(this.record());
  }
}

/** A free TCP port on 127.0.0.1 right now (QEMU binds it next; boot() handles losing the race). */
function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen({ host: '127.0.0.1', port: 0, exclusive: true }, () => {
      const addr = srv.address();
      srv.close(() => (addr && typeof addr !== 'string' ? resolve(addr.port) : reject(new Error('no port'))));
    });
  });
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
  const net = rec.podNetwork as { netnsPath?: unknown; iface?: unknown } | undefined;
  if (net && typeof net.netnsPath === 'string' && typeof net.iface === 'string')
    await detachPodNetwork(net.netnsPath, net.iface);
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
