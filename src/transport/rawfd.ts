// A connected socket as a bare fd, outside libuv: for handing a connection to the kernel (9P trans=fd).
// A net.Socket would keep reading in the background (libuv) and could swallow the server's first 9P reply
// before the kernel reads it; a raw fd is read by nobody but its final owner.
import { createRequire } from 'node:module';
import { closeSync, read as fsRead, writeSync } from 'node:fs';
import { isIPv4 } from 'node:net';
import { parseTransportUrl } from './transport.js';
import { AF_VSOCK, sockaddrVm } from './vsock.js';
import { dialerHandshake, type DialerAuth, type HandshakeIo } from './handshake.js';

const require = createRequire(import.meta.url);
const AF_INET = 2;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;

// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = ((...args: any[]) => any) & { async: (...args: any[]) => void };
let lib: { socket: Fn; connect: Fn; shutdown: Fn; errno: () => number } | undefined;
function rlib(): NonNullable<typeof lib> {
  if (lib) return lib;
  const koffi = require('koffi');
  const c = koffi.load('libc.so.6');
  lib = {
    socket: c.func('int socket(int domain, int type, int protocol)'),
    connect: c.func('int connect(int fd, void *addr, uint32 len)'),
    shutdown: c.func('int shutdown(int fd, int how)'),
    errno: () => koffi.errno() as number,
  };
  return lib;
}

function sockaddrIn(host: string, port: number): Buffer {
  if (!isIPv4(host)) throw new Error(`raw dial needs an IPv4 address, not ${host}`);
  const b = Buffer.alloc(16);
  b.writeUInt16LE(AF_INET, 0);
  b.writeUInt16BE(port, 2);
  host.split('.').forEach((o, i) => b.writeUInt8(Number(o), 4 + i));
  return b;
}

/** A blocking socket fd as the byte pipe of a handshake: reads exactly what is asked, never more. */
function fdIo(fd: number): HandshakeIo {
  return {
    write: (b) => {
      let off = 0;
      while (off < b.length) off += writeSync(fd, b, off);
    },
    read: async (n, timeoutMs) => {
      const buf = Buffer.alloc(n);
      let got = 0;
      // A blocking read on the thread pool: shutdown(2) at the deadline wakes it with EOF.
      const timer = setTimeout(() => rlib().shutdown(fd, 2), timeoutMs);
      try {
        while (got < n) {
          const r = await new Promise<number>((resolve, reject) =>
            fsRead(fd, buf, got, n - got, null, (err, k) => (err ? reject(err) : resolve(k))),
          );
          if (r === 0) throw new Error(`connection closed after ${got} of ${n} bytes`);
          got += r;
        }
      } finally {
        clearTimeout(timer);
      }
      return buf;
    },
  };
}

/**
 * Connects to a transport URL and runs the dialer side of the handshake (handshake.ts) on the bare fd. Returns the
 * fd, authenticated and with no byte of the protocol read; the caller owns it (closeSync).
 */
export async function dialRawFd(url: string, auth: DialerAuth, timeoutMs = 10_000): Promise<number> {
  const u = parseTransportUrl(url);
  const l = rlib();
  const family = u.scheme === 'vsock' ? AF_VSOCK : AF_INET;
  const addr = u.scheme === 'vsock' ? sockaddrVm(Number(u.host), u.port) : sockaddrIn(u.host, u.port);
  const fd = l.socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) throw new Error(`socket failed (errno ${l.errno()})`);
  try {
    const rc = await new Promise<number>((resolve, reject) =>
      l.connect.async(fd, addr, addr.length, (err: Error | null, r: number) => (err ? reject(err) : resolve(r))),
    );
    if (rc !== 0) throw new Error(`connect to ${url} failed`);
    await dialerHandshake(fdIo(fd), auth, timeoutMs);
    return fd;
  } catch (err) {
    closeSync(fd);
    throw err;
  }
}

/**
 * Connects a raw socket to a transport URL and nothing more (no preamble, no handshake): for the one exchange
 * that precedes authentication, the guest fetching its secret under Hyper-V. The caller owns the fd.
 */
export async function connectRawFd(url: string): Promise<number> {
  const u = parseTransportUrl(url);
  const l = rlib();
  const family = u.scheme === 'vsock' ? AF_VSOCK : AF_INET;
  const addr = u.scheme === 'vsock' ? sockaddrVm(Number(u.host), u.port) : sockaddrIn(u.host, u.port);
  const fd = l.socket(family, SOCK_STREAM | SOCK_CLOEXEC, 0) as number;
  if (fd < 0) throw new Error(`socket failed (errno ${l.errno()})`);
  const rc = await new Promise<number>((resolve, reject) =>
    l.connect.async(fd, addr, addr.length, (err: Error | null, r: number) => (err ? reject(err) : resolve(r))),
  ).catch((err: unknown) => {
    closeSync(fd);
    throw err;
  });
  if (rc !== 0) {
    closeSync(fd);
    throw new Error(`connect to ${url} failed`);
  }
  return fd;
}

/**
 * Reads exactly `n` bytes from a connected socket fd (on the thread pool); past `timeoutMs` the socket is shut
 * down so the pending read returns. Rejects with `eofMessage` when the peer closes first.
 */
export async function readRawFd(
  fd: number,
  n: number,
  timeoutMs: number,
  eofMessage = 'connection closed',
): Promise<Buffer> {
  const buf = Buffer.alloc(n);
  let got = 0;
  const timer = setTimeout(() => rlib().shutdown(fd, 2), timeoutMs);
  try {
    while (got < n) {
      const r = await new Promise<number>((resolve, reject) =>
        fsRead(fd, buf, got, n - got, null, (err, k) => (err ? reject(err) : resolve(k))),
      );
      if (r === 0) throw new Error(eofMessage);
      got += r;
    }
  } finally {
    clearTimeout(timer);
  }
  return buf;
}
