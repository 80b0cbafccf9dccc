// tcp+token: TCP, every connection authenticated by the per-UVM secret. Used when the host has no
// /dev/vhost-vsock: QEMU user networking (restrict=on, no guestfwd: the guest reaches nothing on the host) with
// hostfwd rules 127.0.0.1:HOSTPORT -> guest port. The GUEST listens and the HOST dials in: any local user can
// connect to the forwarded host port, so the dialer presents the secret first, the listener compares it in
// constant time and only then answers (ACK). The dialer confirms with COMMIT: only a committed connection is
// handed out, so a dialer that gave up waiting for the ACK (and closed) never becomes a half-adopted channel.
// Slirp accepts the host's connection even while nothing listens in the guest yet (then drops it), so the
// dialer retries until it gets the ACK (dialTcpTokenAck).
import { createServer, connect, type Server, type Socket } from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import { AUTH_TIMEOUT_MS, SECRET_LENGTH, readExactly, type Conn, type Listener } from './transport.js';

/** Listener -> dialer after the secret (and any header) matched. */
export const ACK = 0x01;
/** Dialer -> listener after the ACK: the connection is adopted from here on. */
export const COMMIT = 0x02;

function socketConn(socket: Socket): Conn {
  return {
    stream: socket,
    childHandle: socket,
    close: () => socket.destroy(),
  };
}

export function checkSecret(secret: Buffer): void {
  if (secret.length !== SECRET_LENGTH) throw new Error(`the transport secret must be ${SECRET_LENGTH} bytes`);
}

/**
 * The listener's secret: fixed, or read afresh at every handshake. A UVM restored from a template is a new
 * machine with a new secret (QEMU fw_cfg is not part of the snapshot): the agent must not keep the one it
 * read before the snapshot.
 */
export type SecretSource = Buffer | (() => Buffer);

export class TcpTokenListener implements Listener {
  private readonly callbacks: Array<(c: Conn) => void> = [];
  private readonly pending = new Set<Socket>();
  /** Connections refused (wrong secret, timeout...): for tests and logs. */
  rejected = 0;

  private constructor(
    private readonly server: Server,
    private readonly secret: SecretSource,
    readonly port: number,
    private readonly authTimeoutMs: number,
    private readonly ack: boolean,
  ) {
    server.on('connection', (s) => this.authenticate(s));
  }

  /**
   * Listens on `host` (default 127.0.0.1: the host side never listens elsewhere; the guest agent passes its
   * eth0 address) on `port` (0: any free port). With `ack`, an authenticated connection gets ACK and is handed
   * out only after the dialer's COMMIT (see acceptHandshake); without, it is handed out right after the secret.
   */
  static async listen(
    secret: SecretSource,
    opts: { port?: number; host?: string; authTimeoutMs?: number; ack?: boolean } = {},
  ): Promise<TcpTokenListener> {
    if (typeof secret !== 'function') checkSecret(secret);
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
    return new TcpTokenListener(
      server,
      typeof secret === 'function' ? secret : Buffer.from(secret),
      addr.port,
      opts.authTimeoutMs ?? AUTH_TIMEOUT_MS,
      opts.ack ?? false,
    );
  }

  get url(): string {
    const addr = this.server.address();
    const host = addr && typeof addr !== 'string' ? addr.address : '127.0.0.1';
    return `tcp+token://${host}:${this.port}`;
  }

  onConnection(cb: (conn: Conn) => void): void {
    this.callbacks.push(cb);
  }

  private authenticate(socket: Socket): void {
    this.pending.add(socket);
    socket.on('error', () => undefined);
    readExactly(socket, SECRET_LENGTH, this.authTimeoutMs).then(
      (got) => {
        this.pending.delete(socket);
        let secret: Buffer;
        try {
          secret = typeof this.secret === 'function' ? this.secret() : this.secret;
          checkSecret(secret);
        } catch {
          secret = Buffer.alloc(0);
        }
        if (secret.length !== got.length || !timingSafeEqual(got, secret)) {
          this.rejected++;
          socket.destroy();
          return;
        }
        const handOut = (): void => {
          const conn = socketConn(socket);
          if (this.callbacks.length === 0) socket.destroy();
          for (const cb of this.callbacks) cb(conn);
        };
        if (!this.ack) return handOut();
        this.pending.add(socket);
        acceptHandshake(socket, this.authTimeoutMs).then(
          () => {
            this.pending.delete(socket);
            handOut();
          },
          () => {
            this.pending.delete(socket);
            socket.destroy();
          },
        );
      },
      () => {
        this.pending.delete(socket);
        this.rejected++;
        socket.destroy();
      },
    );
  }

  async close(): Promise<void> {
    for (const s of this.pending) s.destroy();
    // Stop listening; connections already handed out belong to their consumers (close() would wait for them).
    this.server.close();
    await Promise.resolve();
  }
}

/** Guest side: connects and presents the secret. The returned connection is ready for the protocol. */
export async function dialTcpToken(host: string, port: number, secret: Buffer): Promise<Conn> {
  checkSecret(secret);
  const socket = connect({ host, port, noDelay: true });
  await new Promise<void>((resolve, reject) => {
    socket.once('connect', resolve);
    socket.once('error', reject);
  });
  socket.write(secret);
  return socketConn(socket);
}

/**
 * Listener side, after the secret (and header) matched: sends ACK and waits for the dialer's COMMIT. Rejects
 * (the caller closes) on anything else, EOF or timeout.
 */
export async function acceptHandshake(socket: Socket, timeoutMs = AUTH_TIMEOUT_MS): Promise<void> {
  socket.write(Buffer.from([ACK]));
  const c = await readExactly(socket, 1, timeoutMs);
  if (c[0] !== COMMIT) throw new Error('tcp+token: bad commit byte');
}

export interface DialAckOptions {
  /** Bytes sent right after the secret (e.g. a 9P share token). */
  header?: Buffer;
  /** Overall deadline (ms from now). */
  timeoutMs: number;
  /** How long one attempt waits for the ACK before it gives up and retries (slirp may hold a dead attempt). */
  attemptTimeoutMs?: number;
  /** Polled between attempts: a reason to give up (e.g. QEMU exited), or undefined to go on. */
  abort?: () => string | undefined;
}

/**
 * Host side of the hostfwd direction: dials HOST:PORT, sends secret (+ header), waits for ACK, sends COMMIT.
 * A connection closed or silent before the ACK (the guest is not listening yet, a wrong secret, an unknown
 * header) is retried with backoff until the deadline or `abort`. Returns the connection, ready for the protocol.
 */
export async function dialTcpTokenAck(host: string, port: number, secret: Buffer, opts: DialAckOptions): Promise<Conn> {
  checkSecret(secret);
  const deadline = Date.now() + opts.timeoutMs;
  const preamble = Buffer.concat([secret, opts.header ?? Buffer.alloc(0)]);
  let delay = 20;
  let lastErr = 'no attempt';
  for (let attempt = 1; ; attempt++) {
    const why = opts.abort?.();
    if (why) throw new Error(`tcp+token dial ${host}:${port}: ${why}`);
    const left = deadline - Date.now();
    if (left <= 0) throw new Error(`tcp+token dial ${host}:${port}: no ACK within ${opts.timeoutMs} ms (${lastErr})`);
    const socket = connect({ host, port, noDelay: true });
    socket.on('error', () => undefined);
    try {
      await new Promise<void>((resolve, reject) => {
        socket.once('connect', resolve);
        socket.once('error', reject);
        socket.once('close', () => reject(new Error('closed before connect')));
      });
      socket.write(preamble);
      const ack = await readExactly(socket, 1, Math.min(left, opts.attemptTimeoutMs ?? 5000));
      if (ack[0] !== ACK) throw new Error('bad ACK byte');
      socket.write(Buffer.from([COMMIT]));
      return socketConn(socket);
    } catch (err) {
      socket.destroy();
      lastErr = `attempt ${attempt}: ${(err as Error).message}`;
      await new Promise((r) => setTimeout(r, Math.min(delay, Math.max(0, deadline - Date.now()))));
      delay = Math.min(delay * 2, 500);
    }
  }
}
