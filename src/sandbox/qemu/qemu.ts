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
// Templates (template.ts): when one exists for this VM's shape, QEMU starts paused (-incoming defer) over the
// template's RAM file mapped private and restores its device state through QMP; the agent is already listening,
// and AdoptClone makes it a new machine. A restore that fails discards the template and the pod boots cold.
// virtio-vsock instead of tcp+token where the host has it (config `transport`, vsock.ts): -device
// vhost-vsock-pci with a random guest CID (CIDs are host-wide: one taken by another VM makes QEMU fail, and the boot
// retries with another), no network device, no TCP port. The shim LISTENS on two vsock ports the kernel picks
// (control, 9P), admitting only connections from this UVM's CID (vsock ports are host-wide too: any guest on the
// host could dial them), and hands the ports to the guest by fw_cfg with the secret; the agent dials and the same
// mutual handshake runs (guest-dials-host direction). 9P: one connection per share, the share named in its HELLO
// with its token bound in (../shares.ts, as under HCS). No UVM templates over vsock (docs/templates.md says why).
import { spawn, type ChildProcess } from 'node:child_process';
import { chmod, rm } from 'node:fs/promises';
import { join } from 'node:path';
import { createInterface } from 'node:readline';
import { Agent as AgentDesc, ShareChange_Kind } from '../../gen/agent/v1/agent_pb.js';
import { ShareNotifier } from '../../notify/share-notifier.js';
import type { ChangeKind } from '../../notify/coalescer.js';
import { P9Server } from '../../p9/server.js';
import { freePort } from './ports.js';
import {
  PeerProofError,
  VMADDR_PORT_ANY,
  VsockListener,
  controlOnly,
  dialTcpToken,
  fixedSecret,
  formatVsockPorts,
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
import { P9Metrics } from '../../telemetry/p9-metrics.js';
import { instrumentClient } from '../../telemetry/client.js';
import { BootPhases, timedShareSetup } from './boot-phases.js';
import { bootFault } from './guest-faults.js';
import { attachPodNetwork, detachPodNetwork, inspectPodNetns, PodNetworkError } from './podnet.js';
import { ShareRouter, closeServer, type ShareEntry } from '../shares.js';
import {
  CID_IN_USE,
  chooseTransport,
  probeVsock,
  randomGuestCid,
  type QemuTransport,
  type VsockProbe,
} from './vsock.js';
import type { ShareSecurity } from '../../p9/security.js';
import type { ShareCache } from '../sandbox.js';

/** QEMU starts per boot at most: each retry follows a port lost to another process (clash or squatter). */
const MAX_BOOT_ATTEMPTS = 5;
/** QEMU's complaint when a hostfwd port was taken before it could bind it. */
const HOSTFWD_CLASH = 'Could not set up host forwarding rule';
/** A clone's agent listens from the first instruction after the restore: much longer means a broken template. */
const CLONE_ANSWER_MS = 30_000;

export interface QemuSandboxOptions extends SandboxOptions {
  runtimeConfig?: Record<string, unknown>;
  /** Where free host ports come from (default: the kernel's pick on 127.0.0.1). Tests inject a squatted one. */
  freePort?: () => Promise<number>;
  /** How long a restored clone's agent may take to answer before its template is discarded (default 30 s). */
  cloneAnswerMs?: number;
  /** Whether virtio-vsock is usable (default: probe the host, vsock.ts). Tests inject both answers. */
  vsockProbe?: () => VsockProbe;
  /** Where guest CIDs come from (default: random, vsock.ts). Tests inject taken ones. */
  guestCid?: () => number;
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

/** A share of this backend: a host directory with its mode, security model, cache mode and change replay. */
interface QemuShareSpec {
  hostPath: string;
  readOnly: boolean;
  security: ShareSecurity;
  cache: ShareCache;
  notify: boolean;
}

type QemuShare = ShareEntry<QemuShareSpec, P9Server>;

function shareKey(s: QemuShareSpec): string {
  return `${s.readOnly ? 'ro' : 'rw'}:${s.security}:${s.cache}:${s.notify ? 'notify:' : ''}${s.hostPath}`;
}

export class QemuSandbox implements Sandbox {
  readonly backend = 'qemu';
  readonly isolated = true;
  /** tcp+token or vsock: decided at boot (config `transport`, the host's vsock probe). */
  transport: 'tcp+token' | 'vsock' = 'tcp+token';
  /** The container rootfs is mounted on the host (bundle/rootfs) and shared whole; see task/uvm-fs.ts. */
  readonly mountsRootfsOnHost = true;
  readonly cfg: QemuConfig;
  accel: Accel | undefined;
  /** Boot phases in ms since boot() began: qemu spawned, (restored,) agent connected, agent answered. */
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
  private qmpReady: Promise<QmpClient> | undefined;
  /** The pod network (podnet.ts): the host netns it came from, the CNI interface, the guest netns path. */
  private podNet: PodNet | undefined;
  /** The current boot attempt's secret (the shim holds it; the guest reads it from fw_cfg at every handshake). */
  private secret: SecretSource | undefined;
  /** Host ports QEMU forwards to the agent's control and 9P listeners. */
  private ports: { control: number; p9: number } | undefined;
  /** vsock: the host's listeners of the current boot attempt (control closes once the agent dialed it). */
  private vsockListeners: { control: VsockListener; p9: VsockListener } | undefined;
  /** vsock: this UVM's guest CID. */
  private guestCid: number | undefined;
  private readonly shares: ShareRouter<QemuShareSpec, P9Server>;
  /** Host change replay (docs/share-notify.md) of the shares that asked for it, by share id. */
  private readonly notifiers = new Map<string, ShareNotifier>();
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
    this.shares = new ShareRouter<QemuShareSpec, P9Server>(
      async ({ id, hostPath, readOnly, security, notify }) =>
        new P9Server({
          exports: [
            {
              name: id,
              path: hostPath,
              readOnly,
              security,
              replay: notify ? { uid: this.cfg.shareNotify.uid } : undefined,
            },
          ],
          logger: this.log.with({ share: id }),
          observer: new P9Metrics({ share: id, path: hostPath }),
        }),
      this.log,
      shareKey,
    );
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
    // A forced vsock the host cannot do fails here, saying what is missing, before anything is made.
    const channel: QemuTransport = chooseTransport(this.cfg.transport, this.opts.vsockProbe ?? (() => probeVsock()));
    this.transport = channel === 'vsock' ? 'vsock' : 'tcp+token';
    // A CNI result we cannot carry into the VM fails here, before QEMU starts (podnet.ts names what it found).
    if (this.opts.podNetns) await inspectPodNetns(this.opts.podNetns);
    const dir = this.opts.stateDir;
    mkdirPrivate(dir);
    const tokenFile = join(dir, 'token');
    this.accel = await probeAccel(this.cfg, this.log);
    const cpus = this.cfg.cpus || (this.accel === 'kvm' ? 2 : 1);
    this.log.info('starting UVM', {
      transport: this.transport,
      accel: this.accel,
      memoryMiB: this.cfg.memoryMiB,
      cpus,
      kernel: this.cfg.kernel,
      initrd: this.cfg.initrd,
      rootfs: this.cfg.rootfs,
    });
    let timer: NodeJS.Timeout | undefined;
    try {
      // Templates: restore a snapshot instead of booting (template.ts); any failure falls back to a cold boot.
      // Looked up before the boot deadline starts (a build under way is waited for, within its own bound).
      if (channel === 'vsock' && this.cfg.templates)
        this.log.info('UVM templates are not used with the vsock transport: booting cold (docs/templates.md)');
      let tpl = channel === 'vsock' ? undefined : await this.template(cpus);
      const deadline = Date.now() + this.cfg.bootTimeoutMs;
      if (channel === 'vsock') await this.connectOverVsock(tokenFile, cpus, t0, deadline);
      else {
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
          this.phases.spawned();
          let exitedDuringBoot = false;
          const exited = this.exited!.then(() => {
            exitedDuringBoot = true;
          });
          if (tpl) {
            const restored = await this.restore(tpl.template, deadline);
            if (restored === 'template failed') {
              // Discarded (the next pod rebuilds it): boot cold, on fresh ports and a fresh secret, not counted.
              tpl = undefined;
              attempt--;
              continue;
            }
            if (restored !== 'port clash') {
              this.qmp = restored;
              this.qmpReady = Promise.resolve(restored);
              this.timings.restored = Date.now() - t0;
              this.phases.restored();
            }
          }
          type Outcome =
            | { kind: 'conn'; conn: Conn }
            | { kind: 'exited' }
            | { kind: 'squatter'; err: PeerProofError }
            | { kind: 'clone silent'; err: Error };
          // A clone's agent was listening when the snapshot was taken: it answers at once, or never.
          const answerBy =
            tpl && !this.portClash
              ? Math.min(deadline, Date.now() + (this.opts.cloneAnswerMs ?? CLONE_ANSWER_MS))
              : deadline;
          const outcome = this.portClash
            ? ({ kind: 'exited' } as Outcome)
            : await Promise.race<Outcome>([
                dialTcpToken('127.0.0.1', ports.control, {
                  secret: this.secret,
                  purpose: { kind: 'control' },
                  timeoutMs: Math.max(1, answerBy - Date.now()),
                  attemptTimeoutMs: 3000,
                  abort: () => (exitedDuringBoot || this.exitReason ? 'QEMU exited' : undefined),
                }).then(
                  (conn): Outcome => ({ kind: 'conn', conn }),
                  (err: unknown): Outcome => {
                    if (exitedDuringBoot) return { kind: 'exited' };
                    if (err instanceof PeerProofError) return { kind: 'squatter', err };
                    if (tpl) return { kind: 'clone silent', err: err as Error };
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
            if (!tpl) break;
            // The clone's first call: a new machine (clock, entropy, end of template mode) before anything else.
            const adopted = await adoptClone(this.agent).catch((err: unknown) => err as Error);
            if (!(adopted instanceof Error)) {
              this.startedFrom = { kind: 'template', key: tpl.template.key, built: tpl.built, bootId: adopted.bootId };
              this.log.info('UVM restored from a template', { template: tpl.template.key, ...adopted });
              // Its kernel and init ran when the template was built: say so where an operator looks for them.
              this.opts.guestLog?.console(
                `shim: restored from UVM template ${tpl.template.key} (built ${tpl.template.meta.builtAt}); ` +
                  `its boot is in that build's log`,
              );
              break;
            }
            await this.abandonClone(tpl.template, adopted);
            tpl = undefined;
            attempt--;
            continue;
          }
          if (outcome.kind === 'clone silent') {
            await this.abandonClone(tpl!.template, outcome.err);
            tpl = undefined;
            attempt--;
            continue;
          }
          if (outcome.kind === 'squatter') {
            this.log.warn(
              'SECURITY: another local process answered on a forwarded host port and failed to prove it knows the ' +
                'secret (port squatting?); it received only a random nonce. Restarting QEMU with new ports and a new secret',
              { port: ports.control, attempt, error: outcome.err.message },
            );
            await this.abandonAttempt();
            this.closeQmp();
          } else if (this.portClash) {
            this.log.warn(
              'a forwarded host port was taken by another local process before QEMU bound it; restarting QEMU with new ports and a new secret',
              { ports, attempt },
            );
          } else throw new Error(this.bootFault ?? `the UVM exited during boot:\n${this.consoleTail.join('\n')}`);
          this.portClash = false;
          this.exitReason = undefined;
          if (attempt >= MAX_BOOT_ATTEMPTS)
            throw new Error(
              `the UVM could not get its host ports in ${MAX_BOOT_ATTEMPTS} attempts (see the warnings above)`,
            );
        }
      }
      await this.agent!.getInfo({}, { timeoutMs: 30_000 });
      this.watchAgentConnection();
      this.life.ready();
      this.timings.ready = Date.now() - t0;
      this.phases.ready();
      this.phases.report({ accel: this.accel, start: this.startedFrom.kind });
      this.log.info('UVM ready', {
        accel: this.accel,
        ms: this.timings.ready,
        pid: this.child!.pid,
        from: this.startedFrom.kind,
      });
    } catch (err) {
      await this.stop('force');
      throw err;
    } finally {
      clearTimeout(timer);
    }
    // QEMU made the QMP socket with the shim's umask: 0600 (the 0700 state dir already keeps others out).
    await chmod(this.qmpSocket, 0o600).catch((err: unknown) =>
      this.log.warn('cannot make the QMP socket 0600 (the 0700 state dir still guards it)', { error: err }),
    );
    // A clone's QMP connection is the one its restore used (QEMU takes one client per QMP socket).
    this.qmpReady ??= QmpClient.connect(this.qmpSocket, 5000);
    this.qmpReady.then(
      (q) => (this.qmp = q),
      (err: unknown) => this.log.warn('QMP unavailable', { error: err }),
    );
    return { agent: this.client!, pids: [this.child!.pid!] };
  }

  /**
   * vsock: per attempt a guest CID, a secret and two host listeners on ports the kernel picks, both admitting only
   * this CID; the ports go to the guest by fw_cfg. Waits for the agent to dial the control listener. A CID another
   * VM holds makes QEMU exit at once ("unable to set guest cid"): another CID, at most MAX_BOOT_ATTEMPTS times.
   */
  private async connectOverVsock(tokenFile: string, cpus: number, t0: number, deadline: number): Promise<void> {
    const portsFile = join(this.opts.stateDir, 'vsock-ports');
    const nextCid = this.opts.guestCid ?? (() => randomGuestCid());
    for (let attempt = 1; ; attempt++) {
      const cid = nextCid();
      this.guestCid = cid;
      const secret = newSecret();
      writePrivateFile(tokenFile, secret);
      this.secret = fixedSecret(secret);
      const auth = { secret: this.secret, logger: this.log, peerCid: cid };
      const control = VsockListener.listen(VMADDR_PORT_ANY, { ...auth, admit: controlOnly });
      let p9: VsockListener;
      try {
        p9 = VsockListener.listen(VMADDR_PORT_ANY, { ...auth, admit: (p) => this.shares.admit(p) });
      } catch (err) {
        await control.close();
        throw err;
      }
      this.vsockListeners = { control, p9 };
      p9.onConnection((c, purpose) => this.shares.handle(c, purpose));
      const controlConn = new Promise<Conn>((resolve) =>
        control.onConnection((c) => {
          // One control channel per UVM: later connections are refused.
          void control.close();
          resolve(c);
        }),
      );
      writePrivateFile(portsFile, formatVsockPorts({ control: control.port, p9: p9.port }));
      this.spawnQemu(
        qemuArgs({
          cfg: this.cfg,
          accel: this.accel!,
          cpus,
          name: `lcow-${this.opts.id}`.slice(0, 64),
          qmpSocket: this.qmpSocket,
          tokenFile,
          vsock: { cid, portsFile },
        }),
      );
      this.timings.spawned = Date.now() - t0;
      this.phases.spawned();
      let timer: NodeJS.Timeout | undefined;
      const outcome = await Promise.race([
        controlConn,
        this.exited!.then(() => 'exited' as const),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`the guest agent did not connect within ${this.cfg.bootTimeoutMs} ms`)),
            Math.max(1, deadline - Date.now()),
          );
        }),
      ]).finally(() => clearTimeout(timer));
      if (outcome !== 'exited') {
        this.timings.connected = Date.now() - t0;
        this.phases.connected();
        this.startTime = (await processStartTime(this.child!.pid!)) ?? '';
        this.client = new TtrpcClient(outcome.stream, { logger: this.log });
        this.agent = instrumentClient(AgentDesc, createClient(AgentDesc, this.client));
        this.log.info('agent connected over vsock', { guestCid: cid, control: control.port, p9: p9.port });
        return;
      }
      await this.closeVsockListeners();
      if (!this.portClash)
        throw new Error(this.bootFault ?? `the UVM exited during boot:\n${this.consoleTail.join('\n')}`);
      this.log.warn('the guest CID is taken by another VM on this host; restarting QEMU with another', {
        guestCid: cid,
        attempt,
      });
      this.portClash = false;
      this.exitReason = undefined;
      if (attempt >= MAX_BOOT_ATTEMPTS)
        throw new Error(`the UVM could not get a free guest CID in ${MAX_BOOT_ATTEMPTS} attempts`);
    }
  }

  private async closeVsockListeners(): Promise<void> {
    const l = this.vsockListeners;
    this.vsockListeners = undefined;
    await l?.control.close();
    await l?.p9.close();
  }

  /**
   * The template to restore from; undefined when templates are off or unusable, or when none exists yet (a
   * background builder is started and this pod boots cold). A build under way is waited for, up to half the
   * boot timeout (then this pod boots cold).
   */
  private async template(cpus: number): Promise<{ template: Template; built: boolean } | undefined> {
    if (!this.cfg.templates) return undefined;
    try {
      const spec = { cfg: this.cfg, accel: this.accel!, cpus };
      const state = templateState(spec, this.log);
      if ('template' in state) return { template: state.template, built: false };
      if ('started' in state) return undefined;
      const t0 = Date.now();
      const r = await ensureTemplate(spec, this.log, { lockWaitMs: this.cfg.bootTimeoutMs / 2 });
      this.timings.templateWait = Date.now() - t0;
      return r;
    } catch (err) {
      this.log.warn('no UVM template; booting cold', { error: err });
      return undefined;
    }
  }

  /**
   * Feeds a clone its device state and runs it; resolves to the QMP connection the restore used. Any exit of
   * QEMU meanwhile is this boot's own business (abandoning), not a crash of the pod. A port lost before QEMU
   * bound it is not the template's fault: 'port clash' (portClash set, boot() retries with the template).
   * Anything else discards the template ('template failed': the next pod rebuilds it, this one boots cold).
   */
  private async restore(t: Template, deadline: number): Promise<QmpClient | 'port clash' | 'template failed'> {
    this.phases.restoring();
    this.abandoning = true;
    try {
      return await Promise.race([
        restoreClone(this.qmpSocket, t, Math.max(1, deadline - Date.now())),
        this.exited!.then(() => {
          throw new Error(`QEMU exited during the restore:\n${this.consoleTail.join('\n')}`);
        }),
      ]);
    } catch (err) {
      await this.abandonAttempt();
      this.exitReason = undefined;
      if (this.consoleTail.some((l) => l.includes(HOSTFWD_CLASH))) {
        this.portClash = true;
        return 'port clash';
      }
      // QEMU that exited by itself (not our SIGKILL) said why on stderr; the QMP error alone would not.
      const selfExit = this.child?.exitCode !== null && this.child?.exitCode !== undefined;
      const why = selfExit
        ? new Error(`${(err as Error).message}; QEMU exited: ${this.consoleTail.slice(-3).join(' | ')}`)
        : (err as Error);
      await this.discardClone(t, why);
      return 'template failed';
    } finally {
      this.abandoning = false;
    }
  }

  /** A restored clone that never answered, or refused AdoptClone: killed, its template discarded. */
  private async abandonClone(t: Template, why: Error): Promise<void> {
    this.client?.close();
    this.client = undefined;
    this.agent = undefined;
    this.closeQmp();
    await this.abandonAttempt();
    this.exitReason = undefined;
    delete this.timings.connected;
    delete this.timings.restored;
    await this.discardClone(t, why);
  }

  private async discardClone(t: Template, why: Error): Promise<void> {
    this.log.warn('the UVM restored from its template did not come up; discarding the template, booting cold', {
      template: t.key,
      error: why.message,
    });
    await discardTemplate(t, this.log, why.message);
  }

  private closeQmp(): void {
    this.qmp?.close();
    this.qmp = undefined;
    this.qmpReady = undefined;
  }

  /** Set when the console said the boot cannot succeed (guest-faults.ts): the VM is killed, boot() says why. */
  private bootFault: string | undefined;
  /**
   * Set when QEMU exited during boot because another process had what it needed: a forwarded host port
   * (tcp+token), or the guest CID (vsock: another VM has it). boot() retries with new ones.
   */
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
      if (stream === 'console') {
        this.phases.consoleLine(line);
        const fault =
          this.life.phase === 'booting' && !this.bootFault ? bootFault(line, this.cfg.memoryMiB) : undefined;
        if (fault) {
          this.bootFault = this.crashDetail = fault;
          this.log.error('the UVM cannot boot', { error: fault });
          child.kill('SIGKILL');
        }
      }
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
            this.consoleTail.some((l) => l.includes(HOSTFWD_CLASH) || l.includes(CID_IN_USE))
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
  private async connectShare(e: QemuShare, over: () => string | undefined): Promise<void> {
    const conn = await dialTcpToken('127.0.0.1', this.ports!.p9, {
      secret: this.secret!,
      purpose: { kind: 'p9', shareId: e.id },
      binding: e.token,
      timeoutMs: 60_000,
      attemptTimeoutMs: 10_000,
      // The agent registers the share when AddShare arrives, a few tens of ms after this dial starts: retry
      // often, so the mount does not wait up to 500 ms for the next attempt (each refused one is cheap).
      maxRetryDelayMs: 40,
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
    this.shares.handle(conn, { kind: 'p9', shareId: e.id });
  }

  addShare(hostPath: string, opts: ShareOptions): Promise<Share> {
    return timedShareSetup({ path: hostPath, readOnly: opts.readOnly }, () => this.addShareNow(hostPath, opts));
  }

  private async addShareNow(hostPath: string, opts: ShareOptions): Promise<Share> {
    if (!this.agent) throw new Error('sandbox not booted');
    const security = opts.role === 'rootfs-snapshot' ? this.cfg.rootfsShareSecurity : this.cfg.hostShareSecurity;
    const cache = opts.cache ?? (opts.role === 'rootfs-snapshot' ? this.cfg.rootfsShareCache : this.cfg.shareCache);
    const notify = opts.notify === true && this.cfg.shareNotify.enabled;
    const spec: QemuShareSpec = { hostPath, readOnly: opts.readOnly, security, cache, notify };
    const existing = this.shares.acquire(spec);
    if (existing) {
      try {
        return { shareId: existing.id, guestPath: await existing.ready };
      } catch (err) {
        this.shares.release(existing.id);
        throw err;
      }
    }
    const agent = this.agent;
    const e = this.shares.create(spec, (entry) => this.mountShare(agent, entry));
    try {
      const guestPath = await e.ready;
      this.log.debug('share added', { share: e.id, hostPath, guestPath, readOnly: opts.readOnly, security, cache });
      return { shareId: e.id, guestPath };
    } catch (err) {
      this.closeNotifier(e.id);
      this.shares.drop(e.id);
      throw err;
    }
  }

  /**
   * The agent's AddShare for a registered share. tcp+token: the shim dials the agent's 9P listener meanwhile
   * (connectShare); vsock: the agent dials the shim's 9P listener (the router admits and routes it). Resolves
   * with the guest path once the agent mounted it (and so our side has its connection too).
   */
  private async mountShare(agent: NonNullable<QemuSandbox['agent']>, e: QemuShare): Promise<string> {
    const { hostPath, readOnly, cache, notify } = e.spec;
    let rpcOver: string | undefined;
    const dialed = this.transport === 'vsock' ? undefined : this.connectShare(e, () => rpcOver);
    // Marked handled only: both outcomes of AddShare below await `dialed`.
    dialed?.catch(() => undefined);
    try {
      const r = await agent.addShare(
        {
          shareId: e.id,
          kind: '9p',
          source: hostPath,
          target: '',
          readOnly,
          aname: e.id,
          token: e.token,
          options: { msize: '262144', cache },
          notifyUid: notify ? this.cfg.shareNotify.uid : 0,
          notifyPinDirs: notify ? this.cfg.shareNotify.pinDirs : 0,
        },
        { timeoutMs: 60_000 },
      ); // every agent call has a deadline (a wedged guest must not hang Create)
      rpcOver = 'AddShare done';
      await dialed; // the agent mounted it, so our side has it too
      if (notify) await this.startNotifier(e);
      return r.guestPath;
    } catch (err) {
      rpcOver ??= 'AddShare failed';
      // AddShare's error is the one reported; the dial fails because the agent gave up on the share.
      await dialed?.catch((dialErr: unknown) => this.log.debug('share dial ended', { share: e.id, error: dialErr }));
      throw err;
    }
  }

  /**
   * Watches the share's host directory and replays host processes' changes in the guest. A host without
   * fanotify (not root, old kernel) keeps the share without it (logged).
   */
  private async startNotifier(e: QemuShare): Promise<void> {
    const agent = this.agent!;
    const log = this.log.with({ share: e.id });
    const server = await e.server;
    try {
      const notifier = await ShareNotifier.start({
        shareId: e.id,
        hostPath: e.hostPath,
        plan: server.exports[0]!.replay!.plan,
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
      this.notifiers.set(e.id, notifier);
      const st = notifier.stats();
      log.debug('share notify on', { watchedDirs: st.watchedDirs, skippedDirs: st.skippedDirs });
    } catch (err) {
      log.warn('share notify unavailable: host changes will not wake watchers in the guest', { error: err });
    }
  }

  async removeShare(shareId: string): Promise<void> {
    // The last reference unregisters it at once (a new add of the same share makes a new one); its server
    // serves until the guest unmounted.
    const e = this.shares.unregister(shareId);
    if (!e) return;
    this.closeNotifier(shareId);
    try {
      // 60 s: the guest first writes back what it cached of the share (a cache=loose rootfs).
      if (this.agent && !this.client?.closed) await this.agent.removeShare({ shareId }, { timeoutMs: 60_000 });
    } finally {
      closeServer(e);
    }
  }

  private closeNotifier(shareId: string): void {
    this.notifiers.get(shareId)?.close();
    this.notifiers.delete(shareId);
  }

  describe(): Record<string, string> {
    return {
      accel: this.accel ?? '',
      cpus: String(this.cfg.cpus || (this.accel === 'kvm' ? 2 : 1)),
      memory_mb: String(this.cfg.memoryMiB),
      shares: String(this.shares.size),
      ...(this.guestCid !== undefined ? { guest_cid: String(this.guestCid) } : {}),
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
    // Not a swallower: the caller gets net.guest's error; this only forgets a failed attach so a retry can run.
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
    void this.closeVsockListeners();
    for (const id of [...this.notifiers.keys()]) this.closeNotifier(id);
    this.shares.closeAll();
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
          await this.agent
            .shutdown({}, { timeoutMs: 5000 })
            .catch((err: unknown) =>
              this.log.warn('agent Shutdown failed; waiting for power-off anyway', { error: err }),
            );
        if (!(await waitExit(10_000)) && this.qmp) {
          this.log.warn('UVM did not power off; QMP quit');
          // QEMU may close QMP before it answers `quit`; the exit (or SIGKILL) below is what counts.
          await this.qmp.execute('quit').catch((err: unknown) => this.log.debug('QMP quit', { error: err }));
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
