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

export interface SandboxStats {
  pid: number;
  rssBytes: number;
}

export type SandboxExitReason = { kind: 'stopped' } | { kind: 'crashed'; code: number | null; signal: string | null };

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
  stats(): Promise<SandboxStats[]>;
  /** graceful: ask the guest to stop, then force after a grace period; force: kill now. Idempotent. */
  stop(mode: 'graceful' | 'force'): Promise<void>;
  /** Called once when the sandbox ends for any reason (including stop()). */
  onExit(cb: (reason: SandboxExitReason) => void): void;
  record(): SandboxRecord;
}

export class SandboxUnavailableError extends Error {
  override readonly name = 'SandboxUnavailableError';
}
