// Winsock (ws2_32.dll) through koffi, for sockets Node cannot open itself (AF_HYPERV). Loaded only when first
// used, so this module imports cleanly on any OS; on Linux the tests load a fake implementing the documented
// exports (test/fakes/winsock-fake.c) through this same binding.
//
// Design as for vsock on Linux (vsock.ts): sockets are non-blocking; one poller (WSAPoll on the libuv thread
// pool, at most one pool thread for every socket of the process, bounded by a 1 s timeout) reports readiness;
// recv/send/accept run on the main thread and never block. The poller is woken when the watch set changes by
// a byte sent to its own UDP socket on 127.0.0.1 (Winsock has no pipes to poll). WSAGetLastError is per thread:
// it is read right after the failing call, on the same (main) thread.
import { createRequire } from 'node:module';
import { Duplex } from 'node:stream';

const require = createRequire(import.meta.url);

export const AF_INET = 2;
export const AF_HYPERV = 34;
export const SOCK_STREAM = 1;
export const SOCK_DGRAM = 2;
export const IPPROTO_UDP = 17;
/** HV_PROTOCOL_RAW: the only hvsock protocol. */
export const HV_PROTOCOL_RAW = 1;
export const SOL_SOCKET = 0xffff;
export const SO_ERROR = 0x1007;
/** _IOW('f', 126, u_long) as a (32-bit) long. */
export const FIONBIO = 0x8004667e | 0;
export const SD_SEND = 1;
export const SD_BOTH = 2;
export const SOCKET_ERROR = -1;
export const INVALID_SOCKET = 0xffffffffffffffffn;
/** WSAPOLLFD event bits (winsock2.h): POLLRDNORM, POLLRDBAND, POLLWRNORM; revents add POLLERR/HUP/NVAL. */
export const POLLRDNORM = 0x0100;
export const POLLRDBAND = 0x0200;
export const POLLIN = POLLRDNORM | POLLRDBAND;
export const POLLWRNORM = 0x0010;
export const POLLOUT = POLLWRNORM;
export const POLLERR = 0x0001;
export const POLLHUP = 0x0002;
export const POLLNVAL = 0x0004;
/** sizeof(WSAPOLLFD) on 64-bit Windows: SOCKET (8), SHORT events, SHORT revents, padding. */
export const WSAPOLLFD_SIZE = 16;

export const WSA = {
  WSAEINTR: 10004,
  WSAEBADF: 10009,
  WSAEACCES: 10013,
  WSAEFAULT: 10014,
  WSAEINVAL: 10022,
  WSAEMFILE: 10024,
  WSAEWOULDBLOCK: 10035,
  WSAEINPROGRESS: 10036,
  WSAEALREADY: 10037,
  WSAENOTSOCK: 10038,
  WSAEMSGSIZE: 10040,
  WSAEPROTOTYPE: 10041,
  WSAEPROTONOSUPPORT: 10043,
  WSAEOPNOTSUPP: 10045,
  WSAEAFNOSUPPORT: 10047,
  WSAEADDRINUSE: 10048,
  WSAEADDRNOTAVAIL: 10049,
  WSAENETDOWN: 10050,
  WSAENETUNREACH: 10051,
  WSAECONNABORTED: 10053,
  WSAECONNRESET: 10054,
  WSAENOBUFS: 10055,
  WSAEISCONN: 10056,
  WSAENOTCONN: 10057,
  WSAESHUTDOWN: 10058,
  WSAETIMEDOUT: 10060,
  WSAECONNREFUSED: 10061,
  WSAEHOSTUNREACH: 10065,
  WSASYSNOTREADY: 10091,
  WSAVERNOTSUPPORTED: 10092,
  WSANOTINITIALISED: 10093,
} as const;

const WSA_NAMES = new Map<number, string>(Object.entries(WSA).map(([k, v]) => [v, k]));

export class WinsockError extends Error {
  override readonly name = 'WinsockError';
  readonly code: string;
  constructor(
    readonly call: string,
    readonly wsaError: number,
  ) {
    const code = WSA_NAMES.get(wsaError) ?? `WSA${wsaError}`;
    super(`${call}: ${code} (${wsaError})`);
    this.code = code;
  }
}

/** A SOCKET (UINT_PTR) as a BigInt. */
export type Socket = bigint;

/** The raw Winsock calls we use, as their documented signatures; errors are SOCKET_ERROR + lastError(). */
export interface Winsock {
  socket(af: number, type: number, protocol: number): Socket;
  bind(s: Socket, addr: Buffer): number;
  listen(s: Socket, backlog: number): number;
  accept(s: Socket): Socket;
  connect(s: Socket, addr: Buffer): number;
  recv(s: Socket, buf: Buffer, len: number): number;
  send(s: Socket, buf: Buffer, len: number): number;
  sendto(s: Socket, buf: Buffer, len: number, to: Buffer): number;
  getsockname(s: Socket, addr: Buffer): number;
  /** SO_ERROR as a WSA error number (0: none). */
  socketError(s: Socket): number;
  setNonBlocking(s: Socket): number;
  shutdown(s: Socket, how: number): number;
  closesocket(s: Socket): number;
  /** WSAPoll on the thread pool; resolves with its return value. */
  pollAsync(fds: Buffer, count: number, timeoutMs: number): Promise<number>;
  lastError(): number;
}

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type KoffiFn = ((...args: any[]) => any) & { async: (...args: any[]) => void };

const loaded = new Map<string, Winsock>();

/** Loads ws2_32 (or a fake with its exports) and calls WSAStartup(2.2) once. */
export function loadWinsock(library = 'ws2_32.dll'): Winsock {
  const cached = loaded.get(library);
  if (cached) return cached;
  // eslint-disable-next-line @typescript-eslint/no-explicit-any
  const koffi = require('koffi') as any;
  const lib = koffi.load(library);
  const fn = (proto: string): KoffiFn => lib.func(proto) as KoffiFn;
  const f = {
    WSAStartup: fn('int __stdcall WSAStartup(uint16 wVersionRequested, _Out_ uint8 *lpWSAData)'),
    WSAGetLastError: fn('int __stdcall WSAGetLastError()'),
    socket: fn('uintptr_t __stdcall socket(int af, int type, int protocol)'),
    bind: fn('int __stdcall bind(uintptr_t s, const void *name, int namelen)'),
    listen: fn('int __stdcall listen(uintptr_t s, int backlog)'),
    accept: fn('uintptr_t __stdcall accept(uintptr_t s, void *addr, void *addrlen)'),
    connect: fn('int __stdcall connect(uintptr_t s, const void *name, int namelen)'),
    recv: fn('int __stdcall recv(uintptr_t s, void *buf, int len, int flags)'),
    send: fn('int __stdcall send(uintptr_t s, const void *buf, int len, int flags)'),
    sendto: fn('int __stdcall sendto(uintptr_t s, const void *buf, int len, int flags, const void *to, int tolen)'),
    getsockname: fn('int __stdcall getsockname(uintptr_t s, void *name, _Inout_ int *namelen)'),
    getsockopt: fn('int __stdcall getsockopt(uintptr_t s, int level, int optname, void *optval, _Inout_ int *optlen)'),
    // `long` is 32-bit on Windows (LLP64): spelled int32 so the binding means the same everywhere.
    ioctlsocket: fn('int __stdcall ioctlsocket(uintptr_t s, int32 cmd, _Inout_ uint32 *argp)'),
    shutdown: fn('int __stdcall shutdown(uintptr_t s, int how)'),
    closesocket: fn('int __stdcall closesocket(uintptr_t s)'),
    WSAPoll: fn('int __stdcall WSAPoll(void *fdArray, uint32 fds, int timeout)'),
  };
  const data = Buffer.alloc(512); // WSADATA is 408 bytes on 64-bit Windows
  const rc = f.WSAStartup(0x0202, data) as number;
  if (rc !== 0) throw new WinsockError('WSAStartup', rc);
  const sock = (v: unknown): Socket => BigInt(v as number | bigint);
  const ws: Winsock = {
    socket: (af, type, protocol) => sock(f.socket(af, type, protocol)),
    bind: (s, addr) => f.bind(s, addr, addr.length) as number,
    listen: (s, backlog) => f.listen(s, backlog) as number,
    accept: (s) => sock(f.accept(s, null, null)),
    connect: (s, addr) => f.connect(s, addr, addr.length) as number,
    recv: (s, buf, len) => f.recv(s, buf, len, 0) as number,
    send: (s, buf, len) => f.send(s, buf, len, 0) as number,
    sendto: (s, buf, len, to) => f.sendto(s, buf, len, 0, to, to.length) as number,
    getsockname: (s, addr) => {
      const len = [addr.length];
      return f.getsockname(s, addr, len) as number;
    },
    socketError: (s) => {
      const v = Buffer.alloc(4);
      const len = [4];
      if ((f.getsockopt(s, SOL_SOCKET, SO_ERROR, v, len) as number) !== 0) return f.WSAGetLastError() as number;
      return v.readInt32LE(0);
    },
    setNonBlocking: (s) => f.ioctlsocket(s, FIONBIO, [1]) as number,
    shutdown: (s, how) => f.shutdown(s, how) as number,
    closesocket: (s) => f.closesocket(s) as number,
    pollAsync: (fds, count, timeoutMs) =>
      new Promise((resolve, reject) =>
        f.WSAPoll.async(fds, count, timeoutMs, (err: Error | null, n: number) => (err ? reject(err) : resolve(n))),
      ),
    lastError: () => f.WSAGetLastError() as number,
  };
  loaded.set(library, ws);
  return ws;
}

/** The poller's bound on one WSAPoll (ms): how long a stale watch set can linger. */
const POLL_TIMEOUT_MS = 1000;

interface Watch {
  in?: () => void;
  out?: () => void;
}

/** sockaddr_in for 127.0.0.1:port (the layout is the same on Windows and Linux). */
function loopbackAddr(port = 0): Buffer {
  const b = Buffer.alloc(16);
  b.writeUInt16LE(AF_INET, 0);
  b.writeUInt16BE(port, 2);
  b.set([127, 0, 0, 1], 4);
  return b;
}

/**
 * Readiness for every socket of one Winsock: one WSAPoll in flight at a time, watches are one-shot (re-arm
 * after handling), a byte to the poller's own UDP socket wakes it when the set changes.
 */
export class WinsockPoller {
  private readonly watches = new Map<Socket, Watch>();
  private polling = false;
  private wake: { sock: Socket; addr: Buffer } | undefined;
  private readonly scratch = Buffer.alloc(64);
  private readonly one = Buffer.from([1]);

  constructor(private readonly ws: Winsock) {}

  watch(s: Socket, dir: 'in' | 'out', cb: () => void): void {
    const w = this.watches.get(s) ?? {};
    w[dir] = cb;
    this.watches.set(s, w);
    this.kick();
  }

  unwatch(s: Socket): void {
    if (this.watches.delete(s)) this.kick();
  }

  get size(): number {
    return this.watches.size;
  }

  private wakeSocket(): { sock: Socket; addr: Buffer } {
    if (this.wake) return this.wake;
    const ws = this.ws;
    const s = ws.socket(AF_INET, SOCK_DGRAM, IPPROTO_UDP);
    if (s === INVALID_SOCKET) throw new WinsockError('socket(AF_INET, SOCK_DGRAM)', ws.lastError());
    const fail = (call: string): never => {
      const e = new WinsockError(call, ws.lastError());
      ws.closesocket(s);
      throw e;
    };
    if (ws.bind(s, loopbackAddr()) !== 0) fail('bind(127.0.0.1:0)');
    const addr = Buffer.alloc(16);
    if (ws.getsockname(s, addr) !== 0) fail('getsockname');
    if (ws.setNonBlocking(s) !== 0) fail('ioctlsocket(FIONBIO)');
    this.wake = { sock: s, addr };
    return this.wake;
  }

  private kick(): void {
    if (this.polling) {
      const w = this.wakeSocket();
      this.ws.sendto(w.sock, this.one, 1, w.addr);
    } else this.run();
  }

  private run(): void {
    if (this.polling || this.watches.size === 0) return;
    const wake = this.wakeSocket();
    const entries = [...this.watches.entries()];
    const buf = Buffer.alloc(WSAPOLLFD_SIZE * (entries.length + 1));
    const put = (i: number, s: Socket, events: number): void => {
      buf.writeBigUInt64LE(s, i * WSAPOLLFD_SIZE);
      buf.writeInt16LE(events, i * WSAPOLLFD_SIZE + 8);
    };
    put(0, wake.sock, POLLRDNORM);
    entries.forEach(([s, w], i) => put(i + 1, s, (w.in ? POLLRDNORM : 0) | (w.out ? POLLWRNORM : 0)));
    this.polling = true;
    const done = (): void => {
      this.polling = false;
      while (this.ws.recv(wake.sock, this.scratch, this.scratch.length) > 0);
      entries.forEach(([s], i) => {
        const revents = buf.readInt16LE((i + 1) * WSAPOLLFD_SIZE + 10);
        const w = this.watches.get(s);
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
        if (!w.in && !w.out) this.watches.delete(s);
        for (const cb of cbs) cb();
      });
      this.run();
    };
    this.ws.pollAsync(buf, entries.length + 1, POLL_TIMEOUT_MS).then(done, () => {
      // WSAPoll itself failed (a socket closed under it): retry the current set shortly.
      this.polling = false;
      setTimeout(() => this.run(), 10);
    });
  }

  /** Closes the wake socket once nothing is watched (tests check for leaks). */
  close(): void {
    if (this.watches.size > 0 || this.polling || !this.wake) return;
    this.ws.closesocket(this.wake.sock);
    this.wake = undefined;
  }
}

const pollers = new Map<Winsock, WinsockPoller>();

export function pollerFor(ws: Winsock): WinsockPoller {
  let p = pollers.get(ws);
  if (!p) pollers.set(ws, (p = new WinsockPoller(ws)));
  return p;
}

/** A Duplex over a connected, non-blocking SOCKET. Owns and closes the socket. */
export class SocketStream extends Duplex {
  private socketClosed = false;
  private readonly readBuf = Buffer.allocUnsafe(65536);
  private readonly poller: WinsockPoller;

  constructor(
    private readonly ws: Winsock,
    readonly socket: Socket,
  ) {
    super({ allowHalfOpen: false });
    this.poller = pollerFor(ws);
    if (ws.setNonBlocking(socket) !== 0) {
      const err = new WinsockError('ioctlsocket(FIONBIO)', ws.lastError());
      this.socketClosed = true;
      ws.closesocket(socket);
      throw err;
    }
  }

  override _read(): void {
    if (this.socketClosed) return;
    for (;;) {
      const n = this.ws.recv(this.socket, this.readBuf, this.readBuf.length);
      if (n === SOCKET_ERROR) {
        const e = this.ws.lastError();
        if (e === WSA.WSAEWOULDBLOCK) return this.poller.watch(this.socket, 'in', () => this._read());
        // A peer that reset the connection ends the stream like an EOF would: the consumer sees 'close'.
        if (e === WSA.WSAECONNRESET || e === WSA.WSAECONNABORTED || e === WSA.WSAESHUTDOWN) return void this.push(null);
        return void this.destroy(new WinsockError('recv', e));
      }
      if (n === 0) return void this.push(null);
      if (!this.push(Buffer.from(this.readBuf.subarray(0, n)))) return;
    }
  }

  override _write(chunk: Buffer, _enc: BufferEncoding, cb: (err?: Error | null) => void): void {
    let off = 0;
    const attempt = (): void => {
      if (this.socketClosed) return cb(new Error('socket closed'));
      while (off < chunk.length) {
        const part = off === 0 ? chunk : chunk.subarray(off);
        const n = this.ws.send(this.socket, part, Math.min(part.length, 0x7fffffff));
        if (n === SOCKET_ERROR) {
          const e = this.ws.lastError();
          if (e === WSA.WSAEWOULDBLOCK) return this.poller.watch(this.socket, 'out', attempt);
          return cb(new WinsockError('send', e));
        }
        off += n;
      }
      cb();
    };
    attempt();
  }

  override _final(cb: (err?: Error | null) => void): void {
    this.ws.shutdown(this.socket, SD_SEND);
    cb();
  }

  override _destroy(err: Error | null, cb: (err?: Error | null) => void): void {
    if (!this.socketClosed) {
      this.socketClosed = true;
      this.poller.unwatch(this.socket);
      this.ws.closesocket(this.socket);
    }
    cb(err);
  }
}
