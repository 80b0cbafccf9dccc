// vsock: AF_VSOCK streams through koffi (Node has no AF_VSOCK). Host side: QEMU vhost-vsock-pci when
// /dev/vhost-vsock exists; guest side: the virtio (or Hyper-V hv_sock) transport. net.Socket({fd}) rejects
// vsock fds (libuv knows only TCP, unix and pipes), so the stream does its own blocking read(2)/write(2) on the
// libuv thread pool; shutdown(2) wakes a pending read when the stream is destroyed. The same secret preamble as
// tcp+token authenticates every connection.
import { createRequire } from 'node:module';
import { read as fsRead, write as fsWrite, closeSync } from 'node:fs';
import { Duplex } from 'node:stream';
import { timingSafeEqual } from 'node:crypto';
import { AUTH_TIMEOUT_MS, SECRET_LENGTH, readExactly, type Conn, type Listener } from './transport.js';
import { checkSecret } from './tcp-token.js';

const require = createRequire(import.meta.url);

export const AF_VSOCK = 40;
export const VMADDR_CID_ANY = 0xffffffff;
export const VMADDR_CID_LOCAL = 1;
export const VMADDR_CID_HOST = 2;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SHUT_RDWR = 2;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = ((...args: any[]) => any) & { async: (...args: any[]) => void };
interface VsockLib {
  socket: Fn;
  bind: Fn;
  listen: Fn;
  accept4: Fn;
  connect: Fn;
  shutdown: Fn;
  errno: () => number;
}
let lib: VsockLib | undefined;

function vlib(): VsockLib {
  if (lib) return lib;
  const koffi = require('koffi');
  const c = koffi.load('libc.so.6');
  lib = {
    socket: c.func('int socket(int domain, int type, int protocol)'),
    bind: c.func('int bind(int fd, void *addr, uint32 len)'),
    listen: c.func('int listen(int fd, int backlog)'),
    accept4: c.func('int accept4(int fd, void *addr, void *len, int flags)'),
    connect: c.func('int connect(int fd, void *addr, uint32 len)'),
    shutdown: c.func('int shutdown(int fd, int how)'),
    errno: () => koffi.errno() as number,
  };
  return lib;
}

/** struct sockaddr_vm (16 bytes). */
export function sockaddrVm(cid: number, port: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt16LE(AF_VSOCK, 0);
  b.writeUInt32LE(port >>> 0, 4);
  b.writeUInt32LE(cid >>> 0, 8);
  return b;
}

function fail(what: string, fd?: number): never {
  const errno = vlib().errno();
  if (fd !== undefined && fd >= 0) closeSync(fd);
  throw new Error(`vsock ${what} failed (errno ${errno})`);
}

/** A Duplex over a connected socket fd (blocking I/O on the libuv thread pool). Owns and closes the fd. */
export class FdStream extends Duplex {
  private reading = false;
  private fdClosed = false;

  constructor(readonly fd: number) {
    super({ allowHalfOpen: false });
  }

  override _read(size: number): void {
    if (this.reading || this.fdClosed) return;
    this.reading = true;
    const buf = Buffer.allocUnsafe(Math.max(size, 65536));
    fsRead(this.fd, buf, 0, buf.length, null, (err, n) => {
      this.reading = false;
      if (this.fdClosed) return this.finishClose();
      if (err) return this.destroy(err);
      if (n === 0) return void this.push(null);
      if (this.push(buf.subarray(0, n))) this._read(size);
    });
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    const writeAll = (off: number): void => {
      fsWrite(this.fd, chunk, off, chunk.length - off, null, (err, n) => {
        if (err) return cb(err);
        if (off + n < chunk.length) writeAll(off + n);
        else cb();
      });
    };
    writeAll(0);
  }

  override _final(cb: (err?: Error | null) => void): void {
    vlib().shutdown(this.fd, 1);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.fdClosed) {
      this.fdClosed = true;
      vlib().shutdown(this.fd, SHUT_RDWR);
      if (!this.reading) this.finishClose();
    }
    cb(err);
  }

  private finishClose(): void {
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
  }
}

function fdConn(fd: number): Conn {
  const stream = new FdStream(fd);
  stream.on('error', () => undefined);
  return { stream, childHandle: fd, close: () => stream.destroy() };
}

export class VsockListener implements Listener {
  private readonly callbacks: Array<(c: Conn) => void> = [];
  private closed = false;
  private acceptPending = false;

  private constructor(
    private readonly fd: number,
    readonly port: number,
    private readonly secret: Buffer,
  ) {
    this.acceptLoop();
  }

  /** Listens on (VMADDR_CID_ANY, port). */
  static listen(port: number, secret: Buffer): VsockListener {
    checkSecret(secret);
    const l = vlib();
    const fd = l.socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0) as number;
    if (fd < 0) fail('socket');
    const addr = sockaddrVm(VMADDR_CID_ANY, port);
    if (l.bind(fd, addr, addr.length) !== 0) fail('bind', fd);
    if (l.listen(fd, 64) !== 0) fail('listen', fd);
    return new VsockListener(fd, port, Buffer.from(secret));
  }

  get url(): string {
    return `vsock://${VMADDR_CID_HOST}:${this.port}`;
  }

  onConnection(cb: (conn: Conn) => void): void {
    this.callbacks.push(cb);
  }

  private acceptLoop(): void {
    if (this.closed) return;
    this.acceptPending = true;
    vlib().accept4.async(this.fd, null, null, SOCK_CLOEXEC, (err: Error | null, cfd: number) => {
      this.acceptPending = false;
      if (this.closed) {
        if (cfd >= 0) closeSync(cfd);
        return this.finishClose();
      }
      if (err || cfd < 0) {
        setTimeout(() => this.acceptLoop(), 50);
        return;
      }
      const conn = fdConn(cfd);
      readExactly(conn.stream, SECRET_LENGTH, AUTH_TIMEOUT_MS).then(
        (got) => {
          if (!timingSafeEqual(got, this.secret)) return conn.close();
          if (this.callbacks.length === 0) conn.close();
          for (const cb of this.callbacks) cb(conn);
        },
        () => conn.close(),
      );
      this.acceptLoop();
    });
  }

  private finishClose(): void {
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    // shutdown(2) on a listening socket makes the pending accept return (EINVAL).
    vlib().shutdown(this.fd, SHUT_RDWR);
    if (!this.acceptPending) this.finishClose();
  }
}

/** Connects to (cid, port) and presents the secret. */
export async function dialVsock(cid: number, port: number, secret: Buffer): Promise<Conn> {
  checkSecret(secret);
  const l = vlib();
  const fd = l.socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) fail('socket');
  const addr = sockaddrVm(cid, port);
  const rc = await new Promise<number>((resolve, reject) =>
    l.connect.async(fd, addr, addr.length, (err: Error | null, r: number) => (err ? reject(err) : resolve(r))),
  );
  if (rc !== 0) fail(`connect to ${cid}:${port}`, fd);
  const conn = fdConn(fd);
  conn.stream.write(secret);
  return conn;
}

/** The vsock transport is usable on this host (QEMU side): /dev/vhost-vsock exists. */
export const VHOST_VSOCK_DEVICE = '/dev/vhost-vsock';
