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

/**
 * How the guest caches a 9P share (the v9fs `cache=` mount option). `none`: every read and write goes to the
 * server, no shared writable mmap. `mmap`: reads and writes still go to the server, but the guest keeps pages
 * for mmap so MAP_SHARED|PROT_WRITE works (SQLite WAL's -shm, LMDB); see docs/applications.md for what that
 * means when host processes write the same files.
 */
export type ShareCache = 'none' | 'mmap';
export const SHARE_CACHE_MODES: readonly ShareCache[] = ['none', 'mmap'];

export interface ShareOptions {
  readOnly: boolean;
  /** Guest cache mode; undefined: the backend's default (runtime config `share_cache`). */
  cache?: ShareCache;
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
