// The `hcs` sandbox backend: one Hyper-V utility VM per pod through the Host Compute Service (Windows). The
// default on win32.
//
// Boot: build the LCOW document (schema.ts), HcsCreateComputeSystem, read the VM id (RuntimeId), listen on
// hvsock for the three guest services (the secret hand-out, the control channel, 9P) bound to that VM id, then
// HcsStartComputeSystem. The guest agent fetches the per-UVM secret once (the hand-out listener serves exactly
// one connection, then closes: HvsockListener.listenUnauthenticated says why that is safe), dials the control
// port (the shim is the ttrpc client of the agent), and for every AddShare dials the 9P port naming the share
// (shares.ts). Both run the transports' mutual handshake (transport/handshake.ts) in the guest-dials-host
// direction: the control listener admits only the control purpose, the 9P listener only a registered share's id
// with that share's token bound into the MACs.
// Stop: the agent's Shutdown (the guest powers off), else HcsShutDownComputeSystem, else
// HcsTerminateComputeSystem; the SystemExited event ends it. `delete` after a shim crash opens the system by
// its recorded id and terminates it (cleanupHcsSandbox); the document also sets ShouldTerminateOnLastHandleClosed
// so a dead shim's VM is ended by HCS itself.
//
// Never run on a Windows host by this project's CI: tested on Linux against FAKE computecore.dll and ws2_32.dll.
import { createHash } from 'node:crypto';
import { mkdir, rm } from 'node:fs/promises';
import net from 'node:net';
import { createInterface } from 'node:readline';
import { Agent as AgentDesc } from '../../gen/agent/v1/agent_pb.js';
import {
  HvsockListener,
  controlOnly,
  fixedSecret,
  newSecret,
  vsockServiceId,
  type Conn,
  type OneShotHvsockListener,
} from '../../transport/index.js';
import type { Winsock } from '../../transport/winsock.js';
import { TtrpcClient, createClient, type ServiceClient } from '../../ttrpc/index.js';
import type { Logger } from '../../util/log.js';
import type {
  BootedSandbox,
  PreparedRootfs,
  RootfsMount,
  Sandbox,
  SandboxExitReason,
  SandboxOptions,
  SandboxRecord,
  SandboxStats,
  Share,
} from '../sandbox.js';
import { loadComputeCore, type ComputeCore } from './computecore.js';
import {
  HCS_CONTROL_PORT,
  HCS_P9_PORT,
  HCS_SECRET_PORT,
  guestKernelArgs,
  hcsConfig,
  type HcsConfig,
} from './config.js';
import { HcsError, failed } from './hresult.js';
import { parseLcowLayerMount, scsiShareSource, ScsiSlots, type ScsiSlot } from './layers.js';
import {
  STATISTICS_QUERY,
  SCSI_CONTROLLER_GUIDS,
  addScsiDiskRequest,
  lcowDocument,
  removeScsiDiskRequest,
  type ComputeSystem,
} from './schema.js';
import { ShareRouter, type ShareServerFactory } from '../shares.js';
import { DEFAULT_TIMEOUTS, HcsComputeSystem, type HcsTimeouts, type SystemExit } from './system.js';

export interface HcsPlatform {
  computecore: ComputeCore;
  /** undefined: ws2_32.dll. */
  winsock?: Winsock;
}

export interface HcsSandboxOptions extends SandboxOptions {
  /** The Win32 boundary; default: computecore.dll and ws2_32.dll (tests inject fakes). */
  platform?: HcsPlatform;
  timeouts?: HcsTimeouts;
  /** Makes each share's 9P server; default: our P9Server over the host path. */
  shareServer?: ShareServerFactory;
}

interface DiskEntry {
  path: string;
  readOnly: boolean;
  slot: ScsiSlot;
  /** The agent share that mounts it. */
  shareId: string;
  refs: number;
  /** The hot-add went through (a detach is owed). */
  attached: boolean;
  /** The guest path once mounted. */
  ready: Promise<string>;
}

/** The HCS compute system id of a pod: readable, and unique per state directory (namespace + pod). */
export function hcsSystemId(podId: string, stateDir: string): string {
  return `${podId}@lcow-${createHash('sha256').update(stateDir).digest('hex').slice(0, 8)}`;
}

/**
 * Each share's 9P server: our P9Server over the host path, its module loaded when the first share is made (a
 * UVM without host shares needs none). On Windows the server picks its NTFS layer by itself (p9/hostfs-select.ts:
 * mapped metadata in NTFS streams, docs/security.md "9P on NTFS").
 */
export function p9ShareServers(log: Logger): ShareServerFactory {
  let mod: Promise<typeof import('../../p9/server.js')> | undefined;
  return async ({ id, hostPath, readOnly }) => {
    mod ??= import('../../p9/server.js');
    let P9Server: typeof import('../../p9/server.js').P9Server;
    try {
      ({ P9Server } = await mod);
    } catch (err) {
      mod = undefined;
      throw new Error(`the 9P file server could not be loaded on ${process.platform}: ${(err as Error).message}`, {
        cause: err,
      });
    }
    return new P9Server({ exports: [{ name: id, path: hostPath, readOnly }], logger: log.with({ share: id }) });
  };
}

export class HcsSandbox implements Sandbox {
  readonly backend = 'hcs';
  readonly isolated = true;
  readonly cfg: HcsConfig;
  readonly systemId: string;
  /** Boot phases in ms since boot() began. */
  readonly timings: Record<string, number> = {};
  private readonly log: Logger;
  private readonly timeouts: HcsTimeouts;
  private api: ComputeCore | undefined;
  private system: HcsComputeSystem | undefined;
  private vmId: string | undefined;
  private readonly listeners: Array<HvsockListener | OneShotHvsockListener> = [];
  private client: TtrpcClient | undefined;
  private agent: ServiceClient<(typeof AgentDesc)['method']> | undefined;
  private shares: ShareRouter | undefined;
  private console: net.Socket | undefined;
  private exitReason: SandboxExitReason | undefined;
  private readonly exitCbs: Array<(r: SandboxExitReason) => void> = [];
  private stopping: Promise<void> | undefined;
  private stopRequested = false;
  /** SCSI disks attached for container root filesystems, by host path (layers are shared between containers). */
  private readonly disks = new Map<string, DiskEntry>();
  private readonly slots: ScsiSlots;
  private diskSeq = 0;

  constructor(private readonly opts: HcsSandboxOptions) {
    this.log = opts.logger.with({ sandbox: opts.id, backend: 'hcs' });
    this.cfg = hcsConfig(opts.runtimeConfig ?? {}, opts.annotations);
    this.systemId = hcsSystemId(opts.id, opts.stateDir);
    this.timeouts = opts.timeouts ?? DEFAULT_TIMEOUTS;
    this.slots = new ScsiSlots(SCSI_CONTROLLER_GUIDS.length, this.cfg.rootfsVhd ? [{ controller: 0, lun: 0 }] : []);
  }

  /** The hvsock VM id (RuntimeId) once created. */
  get runtimeId(): string | undefined {
    return this.vmId;
  }

  /** The UVM document this sandbox creates. */
  document(): ComputeSystem {
    return lcowDocument({
      owner: this.cfg.owner,
      kernelPath: this.cfg.kernel,
      initrdPath: this.cfg.initrd,
      rootfsVhdPath: this.cfg.rootfsVhd,
      kernelArgs: guestKernelArgs(this.cfg),
      memoryMiB: this.cfg.memoryMiB,
      cpus: this.cfg.cpus,
      hvSocketServices: [HCS_SECRET_PORT, HCS_CONTROL_PORT, HCS_P9_PORT].map(vsockServiceId),
      // Every controller from the start: hot-adding disks needs the controller present at boot.
      scsiControllers: SCSI_CONTROLLER_GUIDS.length,
      consolePipe: this.cfg.debug
        ? `\\\\.\\pipe\\lcow-console-${this.systemId.replace(/[^A-Za-z0-9_.@-]/g, '_')}`
        : undefined,
    });
  }

  async boot(): Promise<BootedSandbox> {
    const t0 = Date.now();
    await mkdir(this.opts.stateDir, { recursive: true, mode: 0o700 });
    this.api = this.opts.platform?.computecore ?? loadComputeCore();
    const winsock = this.opts.platform?.winsock;
    const secret = newSecret();
    const doc = this.document();
    this.log.info('creating UVM', {
      hcsId: this.systemId,
      memoryMiB: this.cfg.memoryMiB,
      cpus: this.cfg.cpus,
      kernel: this.cfg.kernel,
      initrd: this.cfg.initrd ?? this.cfg.rootfsVhd,
    });
    try {
      this.system = await HcsComputeSystem.create(this.api, this.systemId, doc, this.timeouts);
      this.timings.created = Date.now() - t0;
      void this.system.exited.then((e) => this.onSystemExit(e));
      const props = await this.system.properties({});
      if (!props.RuntimeId) throw new Error(`HCS reported no RuntimeId for ${this.systemId}`);
      this.vmId = props.RuntimeId;
      const at = (port: number): { vmId: string; serviceId: string } => ({
        vmId: this.vmId!,
        serviceId: vsockServiceId(port),
      });
      // Listen before the VM starts: the guest dials as soon as its agent runs.
      const secretListener = HvsockListener.listenUnauthenticated(at(HCS_SECRET_PORT), { winsock });
      this.listeners.push(secretListener);
      // One hand-out per boot: the listener stopped listening before handing this connection over.
      secretListener.onConnection((c) => c.stream.end(secret, () => c.close()));
      const auth = { secret: fixedSecret(secret), logger: this.log, winsock };
      const control = HvsockListener.listen(at(HCS_CONTROL_PORT), { ...auth, admit: controlOnly });
      this.listeners.push(control);
      const shares = new ShareRouter(this.opts.shareServer ?? p9ShareServers(this.log), this.log);
      this.shares = shares;
      const p9 = HvsockListener.listen(at(HCS_P9_PORT), { ...auth, admit: (p) => shares.admit(p) });
      this.listeners.push(p9);
      p9.onConnection((c, purpose) => shares.handle(c, purpose));
      const controlConn = new Promise<Conn>((resolve) =>
        control.onConnection((c) => {
          // One control channel per UVM: later connections are refused.
          void control.close();
          resolve(c);
        }),
      );
      await this.system.start();
      this.timings.started = Date.now() - t0;
      if (this.cfg.debug) this.attachConsole(doc.VirtualMachine.Devices.ComPorts?.['0']?.NamedPipe);
      const conn = await this.waitBoot(controlConn, t0 + this.cfg.bootTimeoutMs);
      this.timings.connected = Date.now() - t0;
      this.client = new TtrpcClient(conn.stream, { logger: this.log });
      this.agent = createClient(AgentDesc, this.client);
      await this.agent.getInfo({}, { timeoutMs: 30_000 });
      this.timings.ready = Date.now() - t0;
      this.log.info('UVM ready', { hcsId: this.systemId, vmId: this.vmId, ms: this.timings.ready });
    } catch (err) {
      await this.stop('force').catch((stopErr: unknown) =>
        this.log.warn('stopping the UVM after a failed boot failed', { error: stopErr }),
      );
      throw err;
    }
    // HCS does not say which host process runs the VM (vmwp.exe / vmmem): the shim stands for the sandbox.
    return { agent: this.client, pids: [process.pid] };
  }

  /** The control connection, unless the VM exits or the deadline passes first. */
  private async waitBoot(conn: Promise<Conn>, deadline: number): Promise<Conn> {
    let timer: NodeJS.Timeout | undefined;
    try {
      return await Promise.race([
        conn,
        this.system!.exited.then((e) => {
          throw new Error(`the UVM exited during boot (${describeExit(e)})`);
        }),
        new Promise<never>((_, reject) => {
          timer = setTimeout(
            () => reject(new Error(`the guest agent did not connect within ${this.cfg.bootTimeoutMs} ms`)),
            Math.max(1, deadline - Date.now()),
          );
        }),
      ]);
    } finally {
      clearTimeout(timer);
    }
  }

  /** Debugging: the guest's COM1 (Hyper-V serves the pipe) into the shim's log, line by line. */
  private attachConsole(pipe: string | undefined): void {
    if (!pipe) return;
    const s = net.connect(pipe);
    this.console = s;
    s.on('error', (err) => this.log.debug('console pipe', { error: err }));
    createInterface({ input: s }).on('line', (line) => this.log.info('uvm', { console: line }));
  }

  private onSystemExit(e: SystemExit): void {
    if (this.exitReason) return;
    this.log.info('UVM exited', { hcsId: this.systemId, how: describeExit(e) });
    this.exitReason = this.stopRequested
      ? { kind: 'stopped' }
      : { kind: 'crashed', code: e.kind === 'exited' ? (e.status?.Status ?? null) : null, signal: null };
    this.teardownHostSide();
    for (const cb of this.exitCbs.splice(0)) cb(this.exitReason);
  }

  async addShare(hostPath: string, opts: { readOnly: boolean }): Promise<Share> {
    if (!this.agent || !this.shares) throw new Error('sandbox not booted');
    const existing = this.shares.acquire({ hostPath, readOnly: opts.readOnly });
    if (existing) {
      try {
        return { shareId: existing.id, guestPath: await existing.ready };
      } catch (err) {
        this.shares.release(existing.id);
        throw err;
      }
    }
    const agent = this.agent;
    const e = this.shares.create({ hostPath, readOnly: opts.readOnly }, async (entry) => {
      const r = await agent.addShare({
        shareId: entry.id,
        kind: '9p',
        source: hostPath,
        target: '',
        readOnly: opts.readOnly,
        aname: entry.id,
        token: entry.token,
        options: { msize: '262144' },
      });
      return r.guestPath;
    });
    try {
      const guestPath = await e.ready;
      this.log.debug('share added', { share: e.id, hostPath, guestPath, readOnly: opts.readOnly });
      return { shareId: e.id, guestPath };
    } catch (err) {
      this.shares.drop(e.id);
      throw err;
    }
  }

  async removeShare(shareId: string): Promise<void> {
    const last = this.shares?.get(shareId);
    if (!last || last.refs > 1) {
      this.shares?.release(shareId);
      return;
    }
    try {
      if (this.agent && !this.client?.closed) await this.agent.removeShare({ shareId }, { timeoutMs: 10_000 });
    } finally {
      this.shares?.release(shareId);
    }
  }

  /**
   * containerd's windows-lcow rootfs (layers.ts): every layer VHD attached read-only (once per UVM, shared by
   * the pod's containers), the scratch VHDX read-write, each mounted by the agent; the guest rootfs is an
   * overlay of them. Undefined for any other kind of rootfs mount.
   */
  async prepareRootfs(containerId: string, mounts: RootfsMount[]): Promise<PreparedRootfs | undefined> {
    const parsed = parseLcowLayerMount(mounts);
    if (!parsed) return undefined;
    const held: DiskEntry[] = [];
    const release = async (): Promise<void> => {
      for (const d of held.splice(0).reverse()) await this.releaseDisk(d);
    };
    try {
      const lowers: string[] = [];
      for (const layer of parsed.layers) {
        const d = this.acquireDisk(layer, true);
        held.push(d);
        lowers.push(await d.ready);
      }
      const scratch = this.acquireDisk(parsed.scratch, false);
      held.push(scratch);
      const top = await scratch.ready;
      this.log.debug('rootfs attached', { container: containerId, layers: lowers.length });
      return {
        rootfs: [
          {
            type: 'overlay',
            source: 'overlay',
            target: '',
            options: [`lowerdir=${lowers.join(':')}`, `upperdir=${top}/upper`, `workdir=${top}/work`],
          },
        ],
        release,
      };
    } catch (err) {
      await release();
      throw err;
    }
  }

  /**
   * A disk attached to the UVM and mounted in the guest: granted to the VM, hot-added at a free SCSI slot,
   * then the agent mounts it. Read-only disks (layers) are refcounted by path; registered at once, so
   * concurrent Creates of one image attach each layer once.
   */
  private acquireDisk(path: string, readOnly: boolean): DiskEntry {
    const existing = this.disks.get(path);
    if (existing && readOnly && existing.readOnly) {
      existing.refs++;
      return existing;
    }
    if (existing) throw new Error(`${path} is already attached to this UVM`);
    if (!this.system || !this.agent || !this.api) throw new Error('sandbox not booted');
    const system = this.system;
    const agent = this.agent;
    const api = this.api;
    const slot = this.slots.take();
    const shareId = `d${++this.diskSeq}`;
    const entry: DiskEntry = { path, readOnly, slot, shareId, refs: 1, attached: false, ready: Promise.resolve('') };
    entry.ready = (async () => {
      // The VM worker process opens the file itself: it needs an ACE for this VM (hcsshim does the same).
      const hr = await api.grantVmAccess(this.systemId, path);
      if (failed(hr)) throw new HcsError('HcsGrantVmAccess', hr, undefined, this.systemId);
      await system.modify(addScsiDiskRequest(slot.controller, slot.lun, path, readOnly));
      entry.attached = true;
      const r = await agent.addShare({
        shareId,
        kind: 'scsi',
        source: scsiShareSource(slot),
        target: '',
        readOnly,
        aname: '',
        token: new Uint8Array(),
        options: { fstype: 'ext4' },
      });
      return r.guestPath;
    })();
    // Marked handled only: every user of the disk awaits `ready` (releaseDisk too).
    entry.ready.catch(() => undefined);
    this.disks.set(path, entry);
    return entry;
  }

  /** Drops one reference; the last one unmounts in the guest, then hot-removes the disk. Never throws. */
  private async releaseDisk(d: DiskEntry): Promise<void> {
    if (--d.refs > 0) return;
    if (this.disks.get(d.path) === d) this.disks.delete(d.path);
    const mounted = await d.ready.then(
      () => true,
      () => false,
    );
    if (this.exitReason) return; // the UVM is gone, and its disks with it
    try {
      if (mounted && this.agent && !this.client?.closed)
        await this.agent.removeShare({ shareId: d.shareId }, { timeoutMs: 10_000 });
      if (d.attached) await this.system?.modify(removeScsiDiskRequest(d.slot.controller, d.slot.lun));
      this.slots.free(d.slot);
    } catch (err) {
      // The slot stays taken: a disk that may still be attached must not be reused.
      this.log.warn('detaching a disk failed', { path: d.path, error: err });
    }
  }

  async stats(): Promise<SandboxStats[]> {
    if (!this.system || this.exitReason) return [];
    const p = await this.system.properties(STATISTICS_QUERY);
    const bytes = p.Statistics?.Memory?.MemoryUsagePrivateWorkingSetBytes;
    // pid 0: the VM's memory is not a host process's we could name (see boot()).
    return bytes === undefined ? [] : [{ pid: 0, rssBytes: bytes }];
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
      // Nothing to kill by pid: `delete` ends the VM through HCS by this id.
      pids: [],
      hcsId: this.systemId,
    };
  }

  /** Closes the host side: listeners, 9P servers, the agent client, the console. */
  private teardownHostSide(): void {
    for (const l of this.listeners.splice(0)) void l.close();
    this.shares?.closeAll();
    this.client?.close();
    this.console?.destroy();
  }

  stop(mode: 'graceful' | 'force'): Promise<void> {
    this.stopRequested = true;
    this.stopping ??= this.doStop(mode);
    return this.stopping;
  }

  private async doStop(mode: 'graceful' | 'force'): Promise<void> {
    const system = this.system;
    try {
      if (system && !system.hasExited) {
        if (mode === 'graceful') {
          // The agent kills its containers and exits; init then powers the VM off.
          if (this.agent && !this.client?.closed)
            await this.agent
              .shutdown({}, { timeoutMs: 5000 })
              .catch((err: unknown) =>
                this.log.warn('agent Shutdown failed; waiting for power-off anyway', { error: err }),
              );
          if (!(await system.waitExited(10_000))) {
            this.log.warn('UVM did not power off; HCS shutdown');
            await system.shutdown().catch((err: unknown) => this.log.warn('HCS shutdown failed', { error: err }));
            await system.waitExited(5000);
          }
        }
        if (!system.hasExited) {
          await system.terminate();
          if (!(await system.waitExited(30_000)))
            this.log.error('UVM did not stop after terminate', { hcsId: this.systemId });
        }
      }
    } finally {
      this.teardownHostSide();
      await system?.close().catch((err: unknown) => this.log.warn('closing the HCS handle failed', { error: err }));
      await rm(this.opts.stateDir, { recursive: true, force: true });
      if (!this.exitReason) {
        this.exitReason = { kind: 'stopped' };
        for (const cb of this.exitCbs.splice(0)) cb(this.exitReason);
      }
    }
  }
}

function describeExit(e: SystemExit): string {
  if (e.kind === 'service-disconnect') return 'the Host Compute Service disconnected';
  return `${e.status?.ExitType ?? 'exited'}${e.status?.Status ? ` status ${e.status.Status}` : ''}`;
}

/**
 * `delete` after the owning shim died: end the VM through HCS by its recorded id (it may already be gone:
 * ShouldTerminateOnLastHandleClosed ends it when the dead shim's handle closed), then remove the state dir.
 */
export async function cleanupHcsSandbox(rec: SandboxRecord, api?: ComputeCore): Promise<void> {
  const id = typeof rec.hcsId === 'string' ? rec.hcsId : undefined;
  if (id) {
    const cc = api ?? loadComputeCore();
    const system = await HcsComputeSystem.open(cc, id);
    if (system) {
      try {
        await system.terminate();
        await system.waitExited(30_000);
      } finally {
        await system.close();
      }
    }
  }
  await rm(rec.stateDir, { recursive: true, force: true });
}
