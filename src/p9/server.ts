// P9Server: the library entry point. Owns the exports (root fds, qid maps, lock tables) and the sessions;
// feed it any connected byte stream with handleConnection (TCP, unix socket, vsock handle, socketpair).

import type { Duplex } from 'node:stream';
import { ExportRoot, type ExportConfig } from './export.js';
import type { HostFs } from './hostfs.js';
import { defaultHostFs } from './hostfs-select.js';
import { LockTable } from './locks.js';
import { clampMsize, defaultLimits, type SessionLimits } from './options.js';
import { Session } from './session.js';
import type { P9Observer } from './observer.js';
import { silentLogger, type Logger } from '../util/log.js';

export interface P9ServerOptions extends Partial<SessionLimits> {
  exports: ExportConfig[];
  logger?: Logger;
  /** Sees every answered request (metrics); see observer.ts. */
  observer?: P9Observer;
  /** Connections served at once; a connection beyond is closed at once (default 1024). */
  maxConnections?: number;
  /**
   * The host filesystem layer (hostfs.ts); default by platform: the Linux syscalls, or on Windows the NTFS layer
   * (ntfs/hostfs-ntfs.ts) over Node's fs.
   */
  hostFs?: HostFs;
}

export const DEFAULT_MAX_CONNECTIONS = 1024;

export class P9Server {
  readonly exports: readonly ExportRoot[];
  readonly limits: SessionLimits;
  private readonly sessions = new Set<Session>();
  private readonly log: Logger;
  private readonly observer: P9Observer | undefined;
  private closed = false;
  readonly maxConnections: number;
  readonly fs: HostFs;
  /** Connections refused because maxConnections were open (diagnostics, tests). */
  refusedConnections = 0;

  constructor(opts: P9ServerOptions) {
    if (opts.exports.length === 0) throw new Error('9p: at least one export is required');
    const names = new Set<string>();
    for (const e of opts.exports) {
      if (names.has(e.name)) throw new Error(`9p: duplicate export name "${e.name}"`);
      names.add(e.name);
    }
    this.log = opts.logger ?? silentLogger;
    this.observer = opts.observer;
    const limits: SessionLimits = { ...defaultLimits };
    for (const key of Object.keys(defaultLimits) as Array<keyof SessionLimits>) {
      const v = opts[key];
      if (v === undefined) continue;
      if (!Number.isInteger(v) || v <= 0) throw new Error(`9p: ${key} must be a positive integer`);
      limits[key] = v;
    }
    limits.msize = clampMsize(limits.msize);
    this.limits = limits;
    const maxConnections = opts.maxConnections ?? DEFAULT_MAX_CONNECTIONS;
    if (!Number.isInteger(maxConnections) || maxConnections <= 0)
      throw new Error('9p: maxConnections must be a positive integer');
    this.maxConnections = maxConnections;
    this.fs = opts.hostFs ?? defaultHostFs();
    const opened: ExportRoot[] = [];
    try {
      const locks = new LockTable({
        maxLocksPerSession: limits.maxLocks,
        maxRangesPerFile: limits.maxLockRangesPerFile,
        maxWaitersPerFile: limits.maxLockWaitersPerFile,
      });
      for (const e of opts.exports) {
        opened.push(
          new ExportRoot(e.name, e.path, e.readOnly ?? false, locks, this.fs, e.security, e.metadata, e.replay),
        );
      }
    } catch (err) {
      for (const r of opened) r.close();
      throw err;
    }
    this.exports = opened;
  }

  /**
   * Serves 9P2000.L on a connected stream until it ends or the server closes. Beyond maxConnections the stream
   * is destroyed at once and undefined returned (the peer sees the connection closed; the others go on).
   */
  handleConnection(stream: Duplex): Session | undefined {
    if (this.closed) {
      stream.destroy();
      throw new Error('9p: server closed');
    }
    if (this.sessions.size >= this.maxConnections) {
      this.refusedConnections++;
      this.log.warn('9p: connection refused, too many connections', { max: this.maxConnections });
      stream.destroy();
      return undefined;
    }
    const session = new Session(
      stream,
      this.exports,
      this.limits,
      this.log,
      (s) => this.sessions.delete(s),
      this.observer,
      this.fs,
    );
    this.sessions.add(session);
    return session;
  }

  get connectionCount(): number {
    return this.sessions.size;
  }

  /** Fids open across all connections (tests: everything is released after clunk/disconnect). */
  get fidCount(): number {
    let n = 0;
    for (const s of this.sessions) n += s.fids.size;
    return n;
  }

  /** Host fds held across all connections (pinned ones included). */
  get hostFdCount(): number {
    let n = 0;
    for (const s of this.sessions) n += s.fds.openFds;
    return n;
  }

  /** Closes every connection and the export root fds. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of [...this.sessions]) s.close();
    for (const e of this.exports) e.close();
    this.observer?.serverClosed?.();
  }
}

export type { ExportConfig, ReplayTree } from './export.js';
export { ReplayPlan } from './replay-plan.js';
export type { P9Observer, P9RequestEvent } from './observer.js';
export type { ShareSecurity } from './security.js';
export { SHARE_SECURITY_MODELS } from './security.js';
export type { MetadataStore, GuestAttrs, HostObject } from './metadata.js';
export type { SessionLimits } from './options.js';
export type { HostFs } from './hostfs.js';
