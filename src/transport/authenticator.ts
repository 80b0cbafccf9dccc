// The listener half shared by every transport: runs the handshake (handshake.ts) on each accepted connection,
// bounded in number and time, and hands out only the connections whose dialer proved it knows the secret.
import {
  listenerHandshake,
  describePurpose,
  type Direction,
  type HandshakeIo,
  type ListenerAuth,
  type Purpose,
  type SecretSource,
} from './handshake.js';
import { AUTH_TIMEOUT_MS, MAX_PENDING_HANDSHAKES, type Conn } from './transport.js';
import type { Logger } from '../util/log.js';

export interface ListenOptions {
  /** Called at every handshake (see SecretSource): never captured once. */
  secret: SecretSource;
  /** The direction this listener serves (default: the transport's usual one). */
  direction?: Direction;
  /** Which purposes are served here (default: the control channel only). */
  admit?: ListenerAuth['admit'];
  /** Deadline for a whole handshake (default AUTH_TIMEOUT_MS). */
  authTimeoutMs?: number;
  /** Handshakes in progress at once (default MAX_PENDING_HANDSHAKES); more are closed at once. */
  maxPending?: number;
  /** Refusals are logged at debug level. */
  logger?: Logger;
}

export const controlOnly: ListenerAuth['admit'] = (p) => (p.kind === 'control' ? {} : undefined);

export class Authenticator {
  private readonly callbacks: Array<(c: Conn, p: Purpose) => void> = [];
  private readonly pending = new Set<Conn>();
  private readonly auth: ListenerAuth;
  /** Connections refused (bad or missing proof, wrong purpose, timeout, over the cap): for tests and logs. */
  rejected = 0;

  constructor(
    private readonly opts: ListenOptions,
    defaultDirection: Direction,
  ) {
    this.auth = {
      secret: opts.secret,
      direction: opts.direction ?? defaultDirection,
      admit: opts.admit ?? controlOnly,
    };
  }

  get pendingCount(): number {
    return this.pending.size;
  }

  onConnection(cb: (conn: Conn, purpose: Purpose) => void): void {
    this.callbacks.push(cb);
  }

  /** Authenticates a freshly accepted connection; `io` reads and writes its stream. */
  accept(conn: Conn, io: HandshakeIo): void {
    if (this.pending.size >= (this.opts.maxPending ?? MAX_PENDING_HANDSHAKES)) {
      this.refused(conn, 'too many handshakes in progress');
      return;
    }
    this.pending.add(conn);
    listenerHandshake(io, this.auth, this.opts.authTimeoutMs ?? AUTH_TIMEOUT_MS).then(
      ({ purpose, admission }) => {
        if (!this.pending.delete(conn)) {
          // closed while the handshake ran
          admission.release?.();
          return;
        }
        if (this.callbacks.length === 0) {
          admission.release?.();
          conn.close();
          return;
        }
        this.opts.logger?.debug('transport: connection authenticated', { purpose: describePurpose(purpose) });
        for (const cb of this.callbacks) cb(conn, purpose);
      },
      (err: unknown) => {
        this.pending.delete(conn);
        this.refused(conn, (err as Error).message);
      },
    );
  }

  private refused(conn: Conn, why: string): void {
    this.rejected++;
    // Anyone who can reach the port causes refusals (debug); a secret we cannot read is ours to fix (warn).
    if (why.startsWith('no secret')) this.opts.logger?.warn('transport: cannot read the secret', { reason: why });
    else this.opts.logger?.debug('transport: connection refused', { reason: why });
    conn.close();
  }

  /** Drops every connection still authenticating. */
  closePending(): void {
    for (const c of this.pending) c.close();
    this.pending.clear();
  }
}
