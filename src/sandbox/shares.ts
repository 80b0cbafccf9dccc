// Host side of 9P shares, shared by the backends: the hcs backend (hvsock) and the qemu backend (vsock, and the
// tcp+token direction too, where the shim dials and hands the connection to handle()). When the guest dials
// (hvsock, vsock): one listener (the 9P port) for every share. The guest
// agent opens one connection per share and names the share in the handshake (the purpose's share id, which is the
// aname AddShare sent it), with the share's 16-byte token (also from AddShare) bound into both MACs as the
// handshake's binding bytes: `admit` serves a share id only while that share is registered and has no connection
// yet, and a dialer that knows the secret but not that share's token fails the proof. `handle` then routes the
// authenticated connection by that share id to the share's 9P server (the first one per share; any later one is
// closed); the next byte on it is the kernel's 9P. Admission takes no claim: handshakes for one share may run
// side by side (bounded by the listener), so a guest process without the secret that opens a HELLO for a share
// and stalls cannot keep the agent's own connection out; only a completed handshake takes the share's one slot.
// Shares are refcounted per key (default: host path and read-only; a backend may add its own options, e.g. the
// share's security model) and each has its own server, so a share's export root bounds what its connection can
// reach.
import { randomBytes } from 'node:crypto';
import type { Duplex } from 'node:stream';
import type { Admission, Conn, Purpose } from '../transport/index.js';
import type { Logger } from '../util/log.js';

export const SHARE_TOKEN_LENGTH = 16;

/** What a share needs from the 9P layer: serve one connection, close everything. */
export interface ShareServer {
  handleConnection(stream: Duplex): void;
  close(): void;
}

/** What makes a share: a host directory and its mode; a backend may add options of its own. */
export interface ShareSpec {
  readonly hostPath: string;
  readonly readOnly: boolean;
}

export type ShareServerFactory<Spec extends ShareSpec = ShareSpec, S extends ShareServer = ShareServer> = (
  share: Spec & { id: string },
) => Promise<S>;

export interface ShareEntry<Spec extends ShareSpec = ShareSpec, S extends ShareServer = ShareServer> {
  readonly id: string;
  readonly key: string;
  readonly spec: Spec;
  readonly hostPath: string;
  readonly readOnly: boolean;
  readonly token: Buffer;
  readonly server: Promise<S>;
  refs: number;
  /** Its one connection was handed to its server: later handshakes for it are refused. */
  connected: boolean;
  /** The guest path once the agent mounted it. */
  readonly ready: Promise<string>;
}

export class ShareRouter<Spec extends ShareSpec = ShareSpec, S extends ShareServer = ShareServer> {
  private readonly byId = new Map<string, ShareEntry<Spec, S>>();
  private readonly byKey = new Map<string, ShareEntry<Spec, S>>();
  private seq = 0;
  /** Authenticated connections dropped (their share went away or got its connection meanwhile): tests and logs. */
  refused = 0;

  constructor(
    private readonly newServer: ShareServerFactory<Spec, S>,
    private readonly log: Logger,
    /** Which shares are the same share (refcounted together): by default (host path, read-only). */
    private readonly keyOf: (spec: Spec) => string = defaultKey,
  ) {}

  /** An existing share of the same key with one more reference, or undefined. */
  acquire(spec: Spec): ShareEntry<Spec, S> | undefined {
    const e = this.byKey.get(this.keyOf(spec));
    if (e) e.refs++;
    return e;
  }

  /**
   * Registers a new share (refs 1) at once, so a concurrent add of the same share finds it: its server is
   * made, then `mount(entry)` (the backend's AddShare to the agent) runs; `ready` settles with the guest path.
   */
  create(spec: Spec, mount: (e: ShareEntry<Spec, S>) => Promise<string>): ShareEntry<Spec, S> {
    const id = `s${++this.seq}`;
    const server = this.newServer({ ...spec, id });
    // Marked handled only: `ready` carries a failed server to every adder, and connect/release check it again.
    server.catch(() => undefined);
    const token = randomBytes(SHARE_TOKEN_LENGTH);
    const { hostPath, readOnly } = spec;
    const base = { id, key: this.keyOf(spec), spec, hostPath, readOnly, token, server };
    const e: ShareEntry<Spec, S> = { ...base, refs: 1, connected: false, ready: server.then(() => mount(e)) };
    // Marked handled only: every adder awaits `ready`.
    e.ready.catch(() => undefined);
    this.byId.set(id, e);
    this.byKey.set(e.key, e);
    return e;
  }

  get(id: string): ShareEntry<Spec, S> | undefined {
    return this.byId.get(id);
  }

  get size(): number {
    return this.byId.size;
  }

  /** The shares registered now. */
  entries(): Array<ShareEntry<Spec, S>> {
    return [...this.byId.values()];
  }

  /** Drops one reference; returns the entry when that was the last one (its server is closed). */
  release(id: string): ShareEntry<Spec, S> | undefined {
    const e = this.unregister(id);
    if (e) closeServer(e);
    return e;
  }

  /**
   * Drops one reference; when that was the last one, the share is unregistered at once (a new add of the same
   * share makes a new one, its connection is no longer admitted) and returned, its server still open: the caller
   * closes it (closeServer) once the guest let go of it.
   */
  unregister(id: string): ShareEntry<Spec, S> | undefined {
    const e = this.byId.get(id);
    if (!e || --e.refs > 0) return undefined;
    this.byId.delete(e.id);
    this.byKey.delete(e.key);
    return e;
  }

  /** Removes a share whatever its count (its AddShare failed). */
  drop(id: string): void {
    const e = this.byId.get(id);
    if (e) this.forget(e);
  }

  private forget(e: ShareEntry<Spec, S>): void {
    this.byId.delete(e.id);
    this.byKey.delete(e.key);
    closeServer(e);
  }

  /**
   * The 9P listener's admission rule (handshake.ts ListenerAuth.admit): a share id that is registered and has no
   * connection yet, with its token as the binding bytes.
   */
  admit(p: Purpose): Admission | undefined {
    if (p.kind !== 'p9') return undefined;
    const e = this.byId.get(p.shareId);
    return e && !e.connected ? { binding: e.token } : undefined;
  }

  /** An authenticated connection on the 9P port: to the server of the share its handshake named, or closed. */
  handle(conn: Conn, purpose: Purpose): void {
    const id = purpose.kind === 'p9' ? purpose.shareId : '';
    const entry = this.byId.get(id);
    if (!entry || entry.connected) {
      this.refused++;
      this.log.debug('9P connection for a share no longer registered or already connected', { share: id });
      return conn.close();
    }
    entry.connected = true;
    entry.server.then(
      (server) => {
        if (this.byId.get(entry.id) !== entry) return conn.close();
        server.handleConnection(conn.stream);
      },
      () => conn.close(),
    );
  }

  closeAll(): void {
    for (const e of [...this.byId.values()]) this.forget(e);
  }
}

/** Closes a share's server (once made). */
export function closeServer(e: { readonly server: Promise<ShareServer> }): void {
  e.server.then(
    (s) => s.close(),
    () => undefined,
  );
}

function defaultKey(spec: ShareSpec): string {
  return `${spec.readOnly ? 'ro' : 'rw'}:${spec.hostPath}`;
}
