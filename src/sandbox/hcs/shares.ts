// Host side of 9P shares when the guest dials (hvsock): one listener (the 9P port) for every share. A connection
// has already presented the per-UVM secret (the listener checked it); it then sends the share's 16-byte token.
// A registered token gets ACK (0x01, what the agent's mount9p waits for) and the connection goes to that share's
// 9P server; anything else is closed. Shares are refcounted per (host path, read-only) and each has its own
// P9Server, so a share's export root bounds what its connection can reach.
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { AUTH_TIMEOUT_MS, readExactly, type Conn } from '../../transport/index.js';
import type { Logger } from '../../util/log.js';

export const SHARE_TOKEN_LENGTH = 16;
export const SHARE_ACK = 0x01;

/** What a share needs from the 9P layer: serve one connection, close everything. */
export interface ShareServer {
  handleConnection(stream: Duplex): void;
  close(): void;
}

export type ShareServerFactory = (share: { id: string; hostPath: string; readOnly: boolean }) => Promise<ShareServer>;

export interface ShareEntry {
  readonly id: string;
  readonly key: string;
  readonly hostPath: string;
  readonly readOnly: boolean;
  readonly token: Buffer;
  readonly server: Promise<ShareServer>;
  refs: number;
  /** The guest path once the agent mounted it. */
  readonly ready: Promise<string>;
}

export class ShareRouter {
  private readonly byId = new Map<string, ShareEntry>();
  private readonly byKey = new Map<string, ShareEntry>();
  private seq = 0;
  /** Connections refused (unknown token, silence): for tests and logs. */
  refused = 0;

  constructor(
    private readonly newServer: ShareServerFactory,
    private readonly log: Logger,
  ) {}

  /** An existing share of (path, mode) with one more reference, or undefined. */
  acquire(hostPath: string, readOnly: boolean): ShareEntry | undefined {
    const e = this.byKey.get(key(hostPath, readOnly));
    if (e) e.refs++;
    return e;
  }

  /**
   * Registers a new share (refs 1) at once, so a concurrent add of the same share finds it: its server is
   * made, then `mount(entry)` (the backend's AddShare to the agent) runs; `ready` settles with the guest path.
   */
  create(hostPath: string, readOnly: boolean, mount: (e: ShareEntry) => Promise<string>): ShareEntry {
    const id = `s${++this.seq}`;
    const server = this.newServer({ id, hostPath, readOnly });
    server.catch(() => undefined);
    const token = randomBytes(SHARE_TOKEN_LENGTH);
    const base = { id, key: key(hostPath, readOnly), hostPath, readOnly, token, server };
    const e: ShareEntry = { ...base, refs: 1, ready: server.then(() => mount(e)) };
    e.ready.catch(() => undefined);
    this.byId.set(id, e);
    this.byKey.set(e.key, e);
    return e;
  }

  get(id: string): ShareEntry | undefined {
    return this.byId.get(id);
  }

  get size(): number {
    return this.byId.size;
  }

  /** Drops one reference; returns the entry when that was the last one (its server is closed). */
  release(id: string): ShareEntry | undefined {
    const e = this.byId.get(id);
    if (!e || --e.refs > 0) return undefined;
    this.forget(e);
    return e;
  }

  /** Removes a share whatever its count (its AddShare failed). */
  drop(id: string): void {
    const e = this.byId.get(id);
    if (e) this.forget(e);
  }

  private forget(e: ShareEntry): void {
    this.byId.delete(e.id);
    this.byKey.delete(e.key);
    e.server.then(
      (s) => s.close(),
      () => undefined,
    );
  }

  /** An authenticated connection on the 9P port: route it by token, or close it. */
  handle(conn: Conn, timeoutMs = AUTH_TIMEOUT_MS): void {
    readExactly(conn.stream, SHARE_TOKEN_LENGTH, timeoutMs).then(
      (token) => {
        let match: ShareEntry | undefined;
        for (const e of this.byId.values()) if (timingSafeEqual(e.token, token)) match = e;
        if (!match) {
          this.refused++;
          this.log.debug('9P connection with an unknown share token refused');
          return conn.close();
        }
        const entry = match;
        entry.server.then(
          (server) => {
            if (this.byId.get(entry.id) !== entry) return conn.close();
            conn.stream.write(Buffer.from([SHARE_ACK]));
            server.handleConnection(conn.stream);
          },
          () => conn.close(),
        );
      },
      () => {
        this.refused++;
        conn.close();
      },
    );
  }

  closeAll(): void {
    for (const e of [...this.byId.values()]) this.forget(e);
  }
}

function key(hostPath: string, readOnly: boolean): string {
  return `${readOnly ? 'ro' : 'rw'}:${hostPath}`;
}
