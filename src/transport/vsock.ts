// vsock: AF_VSOCK streams through koffi (Node has no AF_VSOCK). Host side: QEMU vhost-vsock-pci when
// /dev/vhost-vsock exists; guest side: the virtio (or Hyper-V hv_sock) transport. net.Socket({fd}) rejects
// vsock fds (libuv knows only TCP, unix and pipes), so the fds are non-blocking and one poller (poll(2) on the
// libuv thread pool, at most ONE pool thread for every vsock fd of the process, woken by a pipe when the set
// changes, 1 s timeout as a bound) reports readiness; reads, writes and accepts then run on the main thread
// and never block. (Blocking reads/accepts on the pool used to pin one pool thread per connection, and a
// pending accept(2) on a listening vsock is not woken by shutdown(2): process.exit hung joining the pool.)
// The same handshake as tcp+token (handshake.ts) authenticates every connection, in the guest-dials-host
// direction by default.
import { createRequire } from 'node:module';
import { closeSync, readSync, writeSync } from 'node:fs';
import { Duplex } from 'node:stream';
import { Authenticator, type ListenOptions } from './authenticator.js';
import { Direction, dialerHandshake, type DialerAuth, type Purpose } from './handshake.js';
import { AUTH_TIMEOUT_MS, streamIo, type Conn, type Listener } from './transport.js';
const require = createRequire(import.meta.url);

export const AF_VSOCK = 40;
export const VMADDR_CID_ANY = 0xffffffff;
export const VMADDR_CID_LOCAL = 1;
export const VMADDR_CID_HOST = 2;
/** bind(2) to this port: the kernel picks a free one (getsockname tells which). */
export const VMADDR_PORT_ANY = 0xffffffff;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = ((...args: any[]) => any) & { async: (...args: any[]) => void };
interface VsockLib {
  socket: Fn;
  bind: Fn;
  listen: Fn;
  accept4: Fn;
  getsockname: Fn;
  connect: Fn;
  shutdown: Fn;
  ioctl: Fn;
  poll: Fn;
  pipe2: Fn;
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
    getsockname: c.func('int getsockname(int fd, void *addr, void *len)'),
    connect: c.func('int connect(int fd, void *addr, uint32 len)'),
    shutdown: c.func('int shutdown(int fd, int how)'),
    ioctl: c.func('int ioctl(int fd, unsigned long req, void *arg)'),
    poll: c.func('int poll(void *fds, unsigned long nfds, int timeout)'),
    pipe2: c.func('int pipe2(void *fds, int flags)'),
    errno: () => koffi.errno() as number,
  };
  return lib;
}

const FIONBIO = 0x5421;
const POLLIN = 0x1;
const POLLOUT = 0x4;
const POLLERR = 0x8;
const POLLHUP = 0x10;
const POLLNVAL = 0x20;
const EAGAIN = 11;
const O_NONBLOCK = 0o4000;
/** The poller's bound on one poll(2) call (ms): how long a stale fd set can linger. */
const POLL_TIMEOUT_MS = 1000;

function setNonBlocking(fd: number): void {
  const one = Buffer.alloc(4);
  one.writeInt32LE(1, 0);
  if (vlib().ioctl(fd, FIONBIO, one) !== 0) fail('ioctl(FIONBIO)');
}

interface Watch {
  in?: () => void;
  out?: () => void;
}

/**
 * Readiness for all vsock fds of the process: one poll(2) in flight at a time on the thread pool. Watches are
 * one-shot (re-arm after handling). A self-pipe wakes the poll when the set changes.
 */
class Poller {
  private readonly watches = new Map<number, Watch>();
  private polling = false;
  private wake: { r: number; w: number } | undefined;
  private readonly scratch = Buffer.alloc(64);

  watch(fd: number, dir: 'in' | 'out', cb: () => void): void {
    const w = this.watches.get(fd) ?? {};
    w[dir] = cb;
    this.watches.set(fd, w);
    this.kick();
  }

  unwatch(fd: number): void {
    if (this.watches.delete(fd)) this.kick();
  }

  private kick(): void {
    if (this.polling) {
      if (this.wake) writeSync(this.wake.w, Buffer.from([1]));
    } else this.run();
  }

  private run(): void {
    if (this.polling || this.watches.size === 0) return;
    if (!this.wake) {
      const fds = Buffer.alloc(8);
      if (vlib().pipe2(fds, O_NONBLOCK | SOCK_CLOEXEC) !== 0) fail('pipe2');
      this.wake = { r: fds.readInt32LE(0), w: fds.readInt32LE(4) };
    }
    const entries = [...this.watches.entries()];
    const buf = Buffer.alloc(8 * (entries.length + 1));
    const put = (i: number, fd: number, events: number): void => {
      buf.writeInt32LE(fd, i * 8);
      buf.writeInt16LE(events, i * 8 + 4);
    };
    put(0, this.wake.r, POLLIN);
    entries.forEach(([fd, w], i) => put(i + 1, fd, (w.in ? POLLIN : 0) | (w.out ? POLLOUT : 0)));
    this.polling = true;
    vlib().poll.async(buf, entries.length + 1, POLL_TIMEOUT_MS, () => {
      this.polling = false;
      try {
        while (readSync(this.wake!.r, this.scratch) > 0);
      } catch {
        // EAGAIN: drained
      }
      entries.forEach(([fd], i) => {
        const revents = buf.readInt16LE((i + 1) * 8 + 6);
        const w = this.watches.get(fd);
        if (!revents || !w) return;
        const bad = (revents & (POLLERR | POLLHUP | POLLNVAL)) !== 0;
        const cbs: Array<() => void> = [];
        if (w.in && (revents & POLLIN || bad)) {
          cbs.push(w.in);
          delete w.in;
        }
        if (w.out && (revents & POLLOUT || bad)) {
          cbs.push(w.out);
          delete w.out;
        }
        if (!w.in && !w.out) this.watches.delete(fd);
        for (const cb of cbs) cb();
      });
      this.run();
    });
  }
}
const poller = new Poller();

function isEagain(err: unknown): boolean {
  return (err as NodeJS.ErrnoException).code === 'EAGAIN';
}

/** struct sockaddr_vm (16 bytes). */
export function sockaddrVm(cid: number, port: number): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt16LE(AF_VSOCK, 0);
  b.writeUInt32LE(port >>> 0, 4);
  b.writeUInt32LE(cid >>> 0, 8);
  return b;
}

export interface VsockAddress {
  cid: number;
  port: number;
}

/** The (cid, port) of a struct sockaddr_vm; throws on another family or a short buffer. */
export function parseSockaddrVm(b: Buffer, len = b.length): VsockAddress {
  if (len < 12 || b.length < 12) throw new Error(`sockaddr_vm of ${len} bytes`);
  const family = b.readUInt16LE(0);
  if (family !== AF_VSOCK) throw new Error(`address family ${family}, not AF_VSOCK`);
  return { port: b.readUInt32LE(4), cid: b.readUInt32LE(8) };
}

function fail(what: string, fd?: number): never {
  const errno = vlib().errno();
  if (fd !== undefined && fd >= 0) closeSync(fd);
  throw new Error(`vsock ${what} failed (errno ${errno})`);
}

/** A Duplex over a connected socket fd (non-blocking; readiness from the poller). Owns and closes the fd. */
export class FdStream extends Duplex {
  private fdClosed = false;
  private readBuf = Buffer.allocUnsafe(65536);

  constructor(readonly fd: number) {
    super({ allowHalfOpen: false });
    setNonBlocking(fd);
  }

  override _read(): void {
    if (this.fdClosed) return;
    for (;;) {
      let n: number;
      try {
        n = readSync(this.fd, this.readBuf, 0, this.readBuf.length, null);
      } catch (err) {
        if (isEagain(err)) return poller.watch(this.fd, 'in', () => this._read());
        return void this.destroy(err as Error);
      }
      if (n === 0) return void this.push(null);
      const chunk = Buffer.from(this.readBuf.subarray(0, n));
      if (!this.push(chunk)) return;
    }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    let off = 0;
    const attempt = (): void => {
      if (this.fdClosed) return cb(new Error('vsock stream closed'));
      while (off < chunk.length) {
        try {
          off += writeSync(this.fd, chunk, off, chunk.length - off);
        } catch (err) {
          if (isEagain(err)) return poller.watch(this.fd, 'out', attempt);
          return cb(err as Error);
        }
      }
      cb();
    };
    attempt();
  }

  override _final(cb: (err?: Error | null) => void): void {
    vlib().shutdown(this.fd, 1);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.fdClosed) {
      this.fdClosed = true;
      poller.unwatch(this.fd);
      try {
        closeSync(this.fd);
      } catch {
        // already closed
      }
    }
    cb(err);
  }
}

function fdConn(fd: number): Conn {
  const stream = new FdStream(fd);
  stream.on('error', () => undefined);
  return { stream, childHandle: fd, close: () => stream.destroy() };
}

export interface VsockListenOptions extends ListenOptions {
  /**
   * Only this peer CID may connect: a connection from any other CID (another VM on the host, or the host itself
   * over vsock_loopback) is closed before a byte is read. Vsock ports are host-wide, so a per-VM listener on a
   * host serving several VMs must say which VM it serves. Undefined: any CID (the guest side, tests).
   */
  peerCid?: number;
}

/**
 * What a vsock listener does with each accepted connection: the peer CID check (peerCid), then the handshake
 * (Authenticator). Apart from the listener so that the rule can be exercised on any fd with any peer address.
 */
export class VsockAdmission {
  readonly auth: Authenticator;
  /** Connections closed because they came from another CID. */
  peerRefused = 0;

  constructor(private readonly opts: VsockListenOptions) {
    this.auth = new Authenticator(opts, Direction.guestToHost);
  }

  /** Takes ownership of `fd`, an accepted connection from `peer`. */
  accepted(fd: number, peer: VsockAddress | undefined): void {
    const want = this.opts.peerCid;
    if (want !== undefined && peer?.cid !== want) {
      this.peerRefused++;
      this.opts.logger?.warn('vsock: connection from another CID refused', {
        peerCid: peer?.cid,
        peerPort: peer?.port,
        expectedCid: want,
      });
      try {
        closeSync(fd);
      } catch {
        // already closed
      }
      return;
    }
    const conn = fdConn(fd);
    this.auth.accept(conn, streamIo(conn.stream));
  }

  /** Connections refused so far: another CID, or a failed handshake. */
  get rejected(): number {
    return this.peerRefused + this.auth.rejected;
  }
}

export class VsockListener implements Listener {
  private readonly admission: VsockAdmission;
  private closed = false;
  private readonly peerAddr = Buffer.alloc(16);
  private readonly peerLen = Buffer.alloc(4);

  private constructor(
    private readonly fd: number,
    readonly port: number,
    opts: VsockListenOptions,
  ) {
    this.admission = new VsockAdmission(opts);
    setNonBlocking(fd);
    this.acceptLoop();
  }

  /**
   * Listens on (VMADDR_CID_ANY, port); VMADDR_PORT_ANY: a free port the kernel picks (this.port says which).
   * Serves the guest-dials-host direction unless told otherwise.
   */
  static listen(port: number, opts: VsockListenOptions): VsockListener {
    const l = vlib();
    const fd = l.socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0) as number;
    if (fd < 0) fail('socket');
    const addr = sockaddrVm(VMADDR_CID_ANY, port);
    if (l.bind(fd, addr, addr.length) !== 0) fail(`bind to port ${port >>> 0}`, fd);
    let bound = port;
    if (port === VMADDR_PORT_ANY) {
      const got = Buffer.alloc(16);
      const len = Buffer.alloc(4);
      len.writeUInt32LE(got.length, 0);
      if (l.getsockname(fd, got, len) !== 0) fail('getsockname', fd);
      bound = parseSockaddrVm(got, len.readUInt32LE(0)).port;
    }
    if (l.listen(fd, 64) !== 0) fail('listen', fd);
    return new VsockListener(fd, bound, opts);
  }

  get url(): string {
    return `vsock://${VMADDR_CID_HOST}:${this.port}`;
  }

  /** Connections refused so far (another CID, failed handshake): for tests and logs. */
  get rejected(): number {
    return this.admission.rejected;
  }

  onConnection(cb: (conn: Conn, purpose: Purpose) => void): void {
    this.admission.auth.onConnection(cb);
  }

  private acceptLoop(): void {
    while (!this.closed) {
      this.peerLen.writeUInt32LE(this.peerAddr.length, 0);
      const cfd = vlib().accept4(this.fd, this.peerAddr, this.peerLen, SOCK_CLOEXEC) as number;
      if (cfd < 0) {
        if (vlib().errno() === EAGAIN) return poller.watch(this.fd, 'in', () => this.acceptLoop());
        // ECONNABORTED, EMFILE...: retry a little later.
        setTimeout(() => this.acceptLoop(), 50);
        return;
      }
      let peer: VsockAddress | undefined;
      try {
        peer = parseSockaddrVm(this.peerAddr, this.peerLen.readUInt32LE(0));
      } catch {
        peer = undefined; // no address: refused when a peer CID is required
      }
      this.admission.accepted(cfd, peer);
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    this.admission.auth.closePending();
    poller.unwatch(this.fd);
    try {
      closeSync(this.fd);
    } catch {
      // already closed
    }
  }
}

/**
 * Connects to (cid, port) and runs the dialer side of the handshake (guest dials host unless told otherwise).
 * Rejects with PeerProofError if the listener fails its proof.
 */
export async function dialVsock(
  cid: number,
  port: number,
  auth: Omit<DialerAuth, 'direction'> & { direction?: DialerAuth['direction'] },
  timeoutMs = AUTH_TIMEOUT_MS,
): Promise<Conn> {
  const l = vlib();
  const fd = l.socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) fail('socket');
  const addr = sockaddrVm(cid, port);
  const rc = await new Promise<number>((resolve, reject) =>
    l.connect.async(fd, addr, addr.length, (err: Error | null, r: number) => (err ? reject(err) : resolve(r))),
  );
  if (rc !== 0) fail(`connect to ${cid}:${port}`, fd);
  const conn = fdConn(fd);
  try {
    await dialerHandshake(streamIo(conn.stream), { direction: Direction.guestToHost, ...auth }, timeoutMs);
  } catch (err) {
    conn.close();
    throw err;
  }
  return conn;
}

/** The host's end of virtio-vsock (QEMU's vhost-vsock-pci opens it). */
export const VHOST_VSOCK_DEVICE = '/dev/vhost-vsock';

/**
 * Throws unless this process can create an AF_VSOCK stream socket and bind it to (VMADDR_CID_ANY,
 * VMADDR_PORT_ANY): what a host listener for a guest needs. The socket is closed again.
 */
export function vsockBindProbe(): void {
  const l = vlib();
  const fd = l.socket(AF_VSOCK, SOCK_STREAM | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) fail('socket(AF_VSOCK)');
  const addr = sockaddrVm(VMADDR_CID_ANY, VMADDR_PORT_ANY);
  if (l.bind(fd, addr, addr.length) !== 0) fail('bind(VMADDR_CID_ANY, VMADDR_PORT_ANY)', fd);
  closeSync(fd);
}
