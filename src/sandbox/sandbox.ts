// The Sandbox interface: what the Task service needs from "the thing that runs the guest agent". Backends:
// process/ (development: the agent as a host process, NOT isolated), qemu/ (Linux UVM), hcs/ (Hyper-V).
// The shim talks to the guest only through this interface and the agent's ttrpc API.
import type { TtrpcClient } from '../ttrpc/index.js';
import type { Logger } from '../util/log.js';

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
}

export interface BootedSandbox {
  /** A connected ttrpc client of the guest agent (lcow.agent.v1.Agent). */
  agent: TtrpcClient;
  /** Host processes that make up the sandbox (VM process, agent...): reported by Pids, never empty. */
  pids: number[];
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
  boot(): Promise<BootedSandbox>;
  /** Makes a host path visible in the guest. */
  addShare(hostPath: string, opts: { readOnly: boolean }): Promise<Share>;
  removeShare(shareId: string): Promise<void>;
  stats(): Promise<SandboxStats[]>;
  /**
   * graceful: ask the guest to stop, then force after a grace period; force: kill now. Idempotent. Resolves
   * once the sandbox is gone, its exit callbacks ran and its host state is removed.
   */
  stop(mode: 'graceful' | 'force'): Promise<void>;
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
