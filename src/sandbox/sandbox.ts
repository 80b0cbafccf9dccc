// The Sandbox interface: what the Task service needs from "the thing that runs the guest agent". Backends:
// process/ (development: the agent as a host process, NOT isolated), qemu/ (Linux UVM), hcs/ (Hyper-V).
// The shim talks to the guest only through this interface and the agent's ttrpc API.
import type { TtrpcClient } from '../ttrpc/index.js';
import type { Logger } from '../util/log.js';

/** Where a backend writes what the guest prints (kept per pod; see src/ops/pod-logs.ts). */
export interface GuestLogSink {
  /** A line of the guest's serial console (kernel, init, and the agent's own output). */
  console(line: string): void;
  /** A line of the agent's log when it does not come through a console (process backend). */
  agent(line: string): void;
}

export interface SandboxOptions {
  /** The pod (sandbox) id. */
  id: string;
  /** Host directory the backend owns for its state (sockets, runc root...); removed on stop. */
  stateDir: string;
  logger: Logger;
  /** Pod annotations (sizing: hcsshim's io.microsoft.virtualmachine.* names). */
  annotations: Record<string, string>;
  /** The runtime config TOML (backend settings, UVM sizing). */
  runtimeConfig?: Record<string, unknown>;
  /** Receives the guest's console and agent log lines. */
  guestLog?: GuestLogSink;
  /**
   * The host network namespace CNI prepared for the pod (the first container's spec names it): a VM backend checks
   * it can carry it before booting (fail fast, nothing to undo); attachNetwork carries it in after boot.
   */
  podNetns?: string;
}

export interface BootedSandbox {
  /** A connected ttrpc client of the guest agent (lcow.agent.v1.Agent). */
  agent: TtrpcClient;
  /** Host processes that make up the sandbox (VM process, agent...): reported by Pids, never empty. */
  pids: number[];
}

/**
 * What a share holds, so the backend can pick its security model (docs/security.md): a container rootfs
 * snapshot containerd mounted for us (root-only directories, setuid files from image layers), or any other host
 * directory (bind mounts, volumes, a rootfs directory given by path).
 */
export type ShareRole = 'rootfs-snapshot' | 'host-directory';

export interface ShareOptions {
  readOnly: boolean;
  /** Default 'host-directory' (the strict model). */
  role?: ShareRole;
  /** Guest cache mode; undefined: the backend's default (runtime config `share_cache`). */
  cache?: ShareCache;
  /**
   * Host changes under the directory should reach inotify watchers in the guest (bind mounts; backends that
   * support it and whose config leaves it on: docs/share-notify.md).
   */
  notify?: boolean;
}

export interface Share {
  shareId: string;
  /** Where the guest sees it. */
  guestPath: string;
}

/** A mount of a container's root filesystem (containerd's rootfs mounts; guest mounts for CreateContainer). */
export interface RootfsMount {
  type: string;
  source: string;
  target: string;
  options: string[];
}

/** A root filesystem a backend attached itself: the guest mounts that assemble it, and how to undo it. */
export interface PreparedRootfs {
  rootfs: RootfsMount[];
  release(): Promise<void>;
}

/**
 * How the guest caches a 9P share (the v9fs `cache=` mount option). `none`: every read and write goes to the
 * server, no shared writable mmap. `mmap`: reads and writes still go to the server, but the guest keeps pages
 * for mmap so MAP_SHARED|PROT_WRITE works (SQLite WAL's -shm, LMDB); see docs/applications.md for what that
 * means when host processes write the same files. `loose`: the guest caches dentries, attributes and pages and
 * writes back later (fsync and unmount flush): only for a share nobody changes on the host while the guest uses
 * it, i.e. a container's own rootfs snapshot (docs/applications.md, "The container rootfs").
 */
export type ShareCache = 'none' | 'mmap' | 'loose';
/** Modes a bind mount (and the `share_cache` default) may ask for: both coherent with host-side writers. */
export const SHARE_CACHE_MODES: readonly ShareCache[] = ['none', 'mmap'];
/** Modes for container rootfs snapshots (`rootfs_share_cache`): `loose` too (opt-in: the default is `mmap`). */
export const ROOTFS_SHARE_CACHE_MODES: readonly ShareCache[] = ['none', 'mmap', 'loose'];

export interface SandboxStats {
  pid: number;
  rssBytes: number;
}

export type SandboxExitReason =
  { kind: 'stopped' } | { kind: 'crashed'; code: number | null; signal: string | null; detail?: string };

/** What `delete` needs to clean a sandbox up when the shim that owned it is dead. JSON-serialisable. */
export interface SandboxRecord {
  backend: string;
  id: string;
  stateDir: string;
  pids: Array<{ pid: number; startTime: string }>;
  [key: string]: unknown;
}

export interface Sandbox {
  readonly backend: string;
  /** False for the process backend: log it loudly. */
  readonly isolated: boolean;
  /** How the shim reaches the agent (tcp+token, vsock, unix): shown to operators. */
  readonly transport?: string;
  /** Backend details for operators (accelerator, vCPUs, memory...). */
  describe?(): Record<string, string>;
  boot(): Promise<BootedSandbox>;
  /** Makes a host path visible in the guest. */
  addShare(hostPath: string, opts: ShareOptions): Promise<Share>;
  removeShare(shareId: string): Promise<void>;
  /**
   * Optional: takes containerd's rootfs mounts itself when they are of a kind only this backend can attach
   * (hcs: the windows-lcow snapshotter's VHD layers, over SCSI). Undefined: not handled here, the Task service
   * uses its usual path (host mounts / shares).
   */
  prepareRootfs?(containerId: string, mounts: RootfsMount[]): Promise<PreparedRootfs | undefined>;
  stats(): Promise<SandboxStats[]>;
  /**
   * graceful: ask the guest to stop, then force after a grace period; force: kill now. Idempotent. Resolves
   * once the sandbox is gone, its exit callbacks ran and its host state is removed.
   */
  stop(mode: 'graceful' | 'force'): Promise<void>;
  /**
   * VM backends: carries the pod network CNI built in the host network namespace at `netnsPath` into the guest;
   * resolves the guest path of the pod's network namespace (what the containers' OCI specs must name). Once per
   * pod; calling again with the same path returns the same answer. Absent where host paths are valid as they
   * are (the process backend). Rejects with a message naming what was found when the CNI result cannot be mapped.
   */
  attachNetwork?(netnsPath: string): Promise<string>;
  /**
   * Called once when the sandbox ends for any reason (including stop()), after its host side is torn down;
   * also when registered after the end. Same behaviour in every backend: see lifecycle.ts.
   */
  onExit(cb: (reason: SandboxExitReason) => void): void;
  record(): SandboxRecord;
}

export class SandboxUnavailableError extends Error {
  override readonly name = 'SandboxUnavailableError';
}
