// tcp+token: TCP, every connection mutually authenticated by the per-UVM secret (handshake.ts). Used when the host
// has no /dev/vhost-vsock: QEMU user networking (restrict=on, no guestfwd: the guest reaches nothing on the host)
// with hostfwd rules 127.0.0.1:HOSTPORT -> guest port. The GUEST listens and the HOST dials in. Any local user can
// connect to a forwarded host port, and a local user may even hold a port the shim dials (bound between the shim
// picking it and QEMU binding it): so the listener proves first, the secret never crosses the wire, and a peer
// that fails its proof is reported as PeerProofError (the shim then restarts the VM on new ports).
// Slirp accepts the host's connection even while nothing listens in the guest yet (then drops it), so the dialer
// retries connections that close or stay silent until the deadline (dialTcpToken).
import { createServer, connect, type Server, type Socket } from 'node:net';
import { Authenticator, type ListenOptions } from './authenticator.js';
import {
  Direction,
  PeerProofError,
  dialerHandshake,
  validatePurpose,
  type Purpose,
  type SecretSource,
} from './handshake.js';
import { streamIo, type Conn, type Listener } from './transport.js';

function socketConn(socket: Socket): Conn {
  return {
    stream: socket,
    childHandle: socket,
    close: () => socket.destroy(),
  };
}

export class TcpTokenListener implements Listener {
  private readonly auth: Authenticator;

  private constructor(
    private readonly server: Server,
    readonly port: number,
    opts: ListenOptions,
  ) {
    this.auth = new Authenticator(opts, Direction.hostToGuest);
    server.on('connection', (s: Socket) => {
      s.on('error', () => undefined);
      this.auth.accept(socketConn(s), streamIo(s));
    });
  }

  /**
   * Listens on `host` (default 127.0.0.1; the guest agent passes its eth0 address) on `port` (0: any free
   * port). Serves the host-dials-guest direction unless told otherwise.
   */
  static async listen(opts: ListenOptions & { port?: number; host?: string }): Promise<TcpTokenListener> {
    const server = createServer({ pauseOnConnect: true, noDelay: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: opts.host ?? '127.0.0.1', port: opts.port ?? 0, exclusive: true }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const addr = server.address();
    if (!addr || typeof addr === 'string') throw new Error('tcp+token: no listening address');
    return new TcpTokenListener(server, addr.port, opts);
  }

  /** Connections refused so far (for tests and logs). */
  get rejected(): number {
    return this.auth.rejected;
  }

  get pendingCount(): number {
    return this.auth.pendingCount;
  }

  get url(): string {
    const addr = this.server.address();
    const host = addr && typeof addr !== 'string' ? addr.address : '127.0.0.1';
    return `tcp+token://${host}:${this.port}`;
  }

  onConnection(cb: (conn: Conn, purpose: Purpose) => void): void {
    this.auth.onConnection(cb);
  }

  async close(): Promise<void> {
    this.auth.closePending();
    // Stop listening; connections already handed out belong to their consumers (close() would wait for them).
    this.server.close();
    await Promise.resolve();
  }
}

export interface DialOptions {
  /** Called at every attempt (see SecretSource). */
  secret: SecretSource;
  purpose: Purpose;
  /** Bound into both MACs, never sent (a 9P share's token). */
  binding?: Buffer;
  /** Default: host dials guest (the hostfwd direction). */
  direction?: typeof Direction.hostToGuest | typeof Direction.guestToHost;
  /** Overall deadline (ms from now). */
  timeoutMs: number;
  /** How long one attempt waits for the CHALLENGE before it gives up and retries (slirp may hold a dead attempt). */
  attemptTimeoutMs?: number;
  /** Polled between attempts: a reason to give up (e.g. QEMU exited), or undefined to go on. */
  abort?: () => string | undefined;
  /** The longest wait between two attempts (default 500 ms; the wait doubles from 20 ms up to it). */
  maxRetryDelayMs?: number;
}

/**
 * Dials HOST:PORT and runs the dialer side of the handshake. A connection refused, closed or silent before the
 * CHALLENGE (the guest is not listening yet, the share is not registered yet) is retried with backoff until the
 * deadline or `abort`. A peer that answers but fails its proof is NOT retried: PeerProofError at once (whoever
 * holds the port is not our agent). Returns the connection, ready for the protocol.
 */
export async function dialTcpToken(host: string, port: number, opts: DialOptions): Promise<Conn> {
  validatePurpose(opts.purpose);
  const deadline = Date.now() + opts.timeoutMs;
  let delay = 20;
  let lastErr = 'no attempt';
  for (let attempt = 1; ; attempt++) {
    const why = opts.abort?.();
    if (why) throw new Error(`tcp+token dial ${host}:${port}: ${why}`);
    const left = deadline - Date.now();
    if (left <= 0)
      throw new Error(`tcp+token dial ${host}:${port}: no handshake within ${opts.timeoutMs} ms (${lastErr})`);
    const socket = connect({ host, port, noDelay: true });
    socket.on('error', () => undefined);
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
        socket.once('close', () => reject(new Error('closed before connect')));
      });
      await dialerHandshake(
        streamIo(socket),
        {
          secret: opts.secret,
          direction: opts.direction ?? Direction.hostToGuest,
          purpose: opts.purpose,
          binding: opts.binding,
        },
        Math.min(left, opts.attemptTimeoutMs ?? 5000),
      );
      return socketConn(socket);
    } catch (err) {
      socket.destroy();
      if (err instanceof PeerProofError) throw new PeerProofError(`tcp+token ${host}:${port}: ${err.message}`);
      lastErr = `attempt ${attempt}: ${(err as Error).message}`;
      await new Promise((r) => setTimeout(r, Math.min(delay, Math.max(0, deadline - Date.now()))));
      delay = Math.min(delay * 2, opts.maxRetryDelayMs ?? 500);
    }
  }
}
