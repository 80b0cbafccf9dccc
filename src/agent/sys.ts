// Linux system calls Node does not expose, through koffi: waitpid on adopted (non-libuv) children,
// the child subreaper flag, SCM_RIGHTS reception (runc --console-socket) and TIOCSWINSZ.
import { createRequire } from 'node:module';

const require = createRequire(import.meta.url);

// koffi is loaded lazily so that modules importing this one (and their unit tests) do not pay for it.
// eslint-disable-next-line @typescript-eslint/no-explicit-any
type Fn = (...args: any[]) => any;
interface Libc {
  waitpid: Fn;
  prctl: Fn;
  recvmsg: Fn;
  ioctl: Fn;
  kill: Fn;
  clockSettime: Fn;
}

let libc: Libc | undefined;

function lib(): Libc {
  if (libc) return libc;
  const koffi = require('koffi');
  const c = koffi.load('libc.so.6');
  koffi.struct('lcow_agent_iovec', { iov_base: 'void *', iov_len: 'size_t' });
  koffi.struct('lcow_agent_msghdr', {
    msg_name: 'void *',
    msg_namelen: 'uint32',
    msg_iov: 'lcow_agent_iovec *',
    msg_iovlen: 'size_t',
    msg_control: 'void *',
    msg_controllen: 'size_t',
    msg_flags: 'int',
  });
  libc = {
    waitpid: c.func('int waitpid(int pid, _Out_ int *status, int options)'),
    prctl: c.func('int prctl(int option, unsigned long a2, unsigned long a3, unsigned long a4, unsigned long a5)'),
    recvmsg: c.func('long recvmsg(int fd, _Inout_ lcow_agent_msghdr *msg, int flags)'),
    ioctl: c.func('int ioctl(int fd, unsigned long req, void *arg)'),
    kill: c.func('int kill(int pid, int sig)'),
    clockSettime: c.func('int clock_settime(int clk, void *tp)'),
  };
  return libc;
}

const WNOHANG = 1;
const PR_SET_CHILD_SUBREAPER = 36;
const MSG_DONTWAIT = 0x40;
const TIOCSWINSZ = 0x5414;

/**
 * Marks this process a child subreaper, so that orphaned container processes are reparented to it (`on`), or
 * stops being one: a process that does not reap orphans must not adopt them (they would stay zombies).
 */
export function setChildSubreaper(on = true): boolean {
  return lib().prctl(PR_SET_CHILD_SUBREAPER, on ? 1 : 0, 0, 0, 0) === 0;
}

export interface WaitResult {
  /** Exit status as a shell reports it: the code, or 128 + signal. */
  status: number;
  signaled: boolean;
}

/**
 * waitpid(pid, WNOHANG) for a process libuv does not own (an adopted orphan). Returns undefined while it
 * runs, null when it is not our child (already reaped or never ours).
 */
export function waitNoHang(pid: number): WaitResult | undefined | null {
  const st = [0];
  const r = lib().waitpid(pid, st, WNOHANG);
  if (r === 0) return undefined;
  if (r < 0) return null;
  const raw = st[0]!;
  const termsig = raw & 0x7f;
  if (termsig === 0) return { status: (raw >> 8) & 0xff, signaled: false };
  return { status: 128 + termsig, signaled: true };
}

/** kill(2) without Node's pid checks; returns false when the process does not exist. */
export function sysKill(pid: number, sig: number): boolean {
  return lib().kill(pid, sig) === 0;
}

/**
 * One non-blocking recvmsg on a unix stream socket fd: returns the first fd passed with SCM_RIGHTS, null
 * when nothing is there yet (EAGAIN), or throws when the peer closed without sending one.
 */
export function recvFdNonBlocking(sockFd: number): number | null {
  const data = Buffer.alloc(4096);
  const control = Buffer.alloc(64);
  const msg = {
    msg_name: null,
    msg_namelen: 0,
    msg_iov: [{ iov_base: data, iov_len: data.length }],
    msg_iovlen: 1,
    msg_control: control,
    msg_controllen: control.length,
    msg_flags: 0,
  };
  const n = Number(lib().recvmsg(sockFd, msg, MSG_DONTWAIT));
  if (n < 0) return null;
  const clen = Number(msg.msg_controllen);
  // struct cmsghdr { size_t len; int level; int type; } then the fds.
  if (clen >= 20 && control.readInt32LE(8) === 1 && control.readInt32LE(12) === 1) return control.readInt32LE(16);
  if (n === 0) throw new Error('console socket closed without a file descriptor');
  throw new Error('console socket message carried no file descriptor');
}

/** TIOCSWINSZ on a pty master. */
export function setWinsize(fd: number, cols: number, rows: number): void {
  const ws = Buffer.alloc(8);
  ws.writeUInt16LE(rows & 0xffff, 0);
  ws.writeUInt16LE(cols & 0xffff, 2);
  if (lib().ioctl(fd, TIOCSWINSZ, ws) !== 0) throw new Error('TIOCSWINSZ failed');
}

const CLOCK_REALTIME = 0;
/** _IO('R', 0x07): reseed the kernel's CRNG from its input pool now (CAP_SYS_ADMIN). */
const RNDRESEEDCRNG = 0x5207;

/** clock_settime(CLOCK_REALTIME) to `ms` since the epoch. */
export function setRealtimeClock(ms: number): void {
  const ts = Buffer.alloc(16);
  const sec = Math.floor(ms / 1000);
  ts.writeBigInt64LE(BigInt(sec), 0);
  ts.writeBigInt64LE(BigInt(Math.round((ms - sec * 1000) * 1e6)), 8);
  if (lib().clockSettime(CLOCK_REALTIME, ts) !== 0) throw new Error('clock_settime failed');
}

/** ioctl(RNDRESEEDCRNG) on an open /dev/urandom (or /dev/random) fd. */
export function reseedKernelRng(fd: number): void {
  if (lib().ioctl(fd, RNDRESEEDCRNG, null) !== 0) throw new Error('RNDRESEEDCRNG failed');
}
