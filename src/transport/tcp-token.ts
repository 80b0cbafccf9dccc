// tcp+token: TCP on the host's loopback, every connection authenticated by the per-UVM secret. Used when the
// host has no /dev/vhost-vsock: QEMU user networking (restrict=on) forwards only the shim's ports into the guest
// (guestfwd), so the guest reaches nothing else on the host, and no other local user can talk to the shim's
// listeners without the secret.
import { createServer, connect, type Server, type Socket } from 'node:net';
import { timingSafeEqual } from 'node:crypto';
import { AUTH_TIMEOUT_MS, SECRET_LENGTH, readExactly, type Conn, type Listener } from './transport.js';

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

export class TcpTokenListener implements Listener {
  private readonly callbacks: Array<(c: Conn) => void> = [];
  private readonly pending = new Set<Socket>();
  /** Connections refused (wrong secret, timeout...): for tests and logs. */
  rejected = 0;

  private constructor(
    private readonly server: Server,
    private readonly secret: Buffer,
    readonly port: number,
    private readonly authTimeoutMs: number,
  ) {
    server.on('connection', (s) => this.authenticate(s));
  }

  /** Listens on 127.0.0.1 (never another address) on `port` (0: any free port). */
  static async listen(secret: Buffer, opts: { port?: number; authTimeoutMs?: number } = {}): Promise<TcpTokenListener> {
    checkSecret(secret);
    const server = createServer({ pauseOnConnect: true, noDelay: true });
    await new Promise<void>((resolve, reject) => {
      server.once('error', reject);
      server.listen({ host: '127.0.0.1', port: opts.port ?? 0, exclusive: true }, () => {
        server.off('error', reject);
        resolve();
      });
    });
    const addr = server.address();
    if (!addr || typeof addr === 'string') throw new Error('tcp+token: no listening address');
    return new TcpTokenListener(server, Buffer.from(secret), addr.port, opts.authTimeoutMs ?? AUTH_TIMEOUT_MS);
  }

  get url(): string {
    return `tcp+token://127.0.0.1:${this.port}`;
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
        if (!timingSafeEqual(got, this.secret)) {
          this.rejected++;
          socket.destroy();
          return;
        }
        const conn = socketConn(socket);
        if (this.callbacks.length === 0) socket.destroy();
        for (const cb of this.callbacks) cb(conn);
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
