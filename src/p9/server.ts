// P9Server: the library entry point. Owns the exports (root fds, qid maps, lock tables) and the sessions;
// feed it any connected byte stream with handleConnection (TCP, unix socket, vsock handle, socketpair).

import type { Duplex } from 'node:stream';
import { ExportRoot, type ExportConfig } from './export.js';
import { LockTable } from './locks.js';
import { clampMsize, defaultLimits, type SessionLimits } from './options.js';
import { Session } from './session.js';
import { OpStats } from './stats.js';
import { silentLogger, type Logger } from '../util/log.js';

export interface P9ServerOptions extends Partial<SessionLimits> {
  exports: ExportConfig[];
  logger?: Logger;
}

export class P9Server {
  readonly exports: readonly ExportRoot[];
  readonly limits: SessionLimits;
  private readonly sessions = new Set<Session>();
  /** Requests served by type, with server time, over every connection since the server started. */
  readonly stats = new OpStats();
  private readonly log: Logger;
  private closed = false;

  constructor(opts: P9ServerOptions) {
    if (opts.exports.length === 0) throw new Error('9p: at least one export is required');
    const names = new Set<string>();
    for (const e of opts.exports) {
      if (names.has(e.name)) throw new Error(`9p: duplicate export name "${e.name}"`);
      names.add(e.name);
    }
    this.log = opts.logger ?? silentLogger;
    const limits: SessionLimits = { ...defaultLimits };
    for (const key of Object.keys(defaultLimits) as Array<keyof SessionLimits>) {
      const v = opts[key];
      if (v === undefined) continue;
      if (!Number.isInteger(v) || v <= 0) throw new Error(`9p: ${key} must be a positive integer`);
      limits[key] = v;
    }
    limits.msize = clampMsize(limits.msize);
    this.limits = limits;
    const opened: ExportRoot[] = [];
    try {
      const locks = new LockTable(limits.maxLocks);
      for (const e of opts.exports) opened.push(new ExportRoot(e.name, e.path, e.readOnly ?? false, locks));
    } catch (err) {
      for (const r of opened) r.close();
      throw err;
    }
    this.exports = opened;
  }

  /** Serves 9P2000.L on a connected stream until it ends or the server closes. */
  handleConnection(stream: Duplex): Session {
    if (this.closed) {
      stream.destroy();
      throw new Error('9p: server closed');
    }
    const session = new Session(
      stream,
      this.exports,
      this.limits,
      this.log,
      (s) => this.sessions.delete(s),
      this.stats,
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

  /** Closes every connection and the export root fds. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    for (const s of [...this.sessions]) s.close();
    for (const e of this.exports) e.close();
  }
}

export type { ExportConfig } from './export.js';
export type { SessionLimits } from './options.js';
