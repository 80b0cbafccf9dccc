// Linux syscalls Node.js lacks (openat2, *at calls on directory fds, statx, getdents64, xattrs, mknod...),
// bound through koffi to glibc. Calls are synchronous: measured on this host a koffi statx costs ~1 µs while a
// round trip through the libuv threadpool costs ~35 µs, so metadata calls stay on the event loop; callers that
// may block for long (data I/O, fsync) use Node's async fs on the returned fds instead.
//
// Every failing call throws SyscallError whose `code` is the errno *name* (ENOENT...), so callers translate
// by name. Linux-only: the constants and struct layouts below are the Linux generic ones (statx is
// arch-independent, which is why it is used instead of struct stat).

import koffi from 'koffi';

export const AT_FDCWD = -100;
export const AT_SYMLINK_NOFOLLOW = 0x100;
export const AT_REMOVEDIR = 0x200;
export const AT_EMPTY_PATH = 0x1000;

export const O = {
  RDONLY: 0,
  WRONLY: 1,
  RDWR: 2,
  ACCMODE: 3,
  CREAT: 0o100,
  EXCL: 0o200,
  NOCTTY: 0o400,
  TRUNC: 0o1000,
  APPEND: 0o2000,
  NONBLOCK: 0o4000,
  DSYNC: 0o10000,
  DIRECT: 0o40000,
  LARGEFILE: 0o100000,
  DIRECTORY: 0o200000,
  NOFOLLOW: 0o400000,
  NOATIME: 0o1000000,
  CLOEXEC: 0o2000000,
  SYNC: 0o4010000,
  PATH: 0o10000000,
} as const;

export const RESOLVE_NO_XDEV = 0x01;
export const RESOLVE_NO_MAGICLINKS = 0x02;
export const RESOLVE_NO_SYMLINKS = 0x04;
export const RESOLVE_BENEATH = 0x08;

export const S_IFMT = 0o170000;
export const S_IFSOCK = 0o140000;
export const S_IFLNK = 0o120000;
export const S_IFREG = 0o100000;
export const S_IFBLK = 0o060000;
export const S_IFDIR = 0o040000;
export const S_IFCHR = 0o020000;
export const S_IFIFO = 0o010000;
export const S_ISUID = 0o4000;
export const S_ISGID = 0o2000;
export const S_ISVTX = 0o1000;

export const UTIME_NOW = (1 << 30) - 1;
export const UTIME_OMIT = (1 << 30) - 2;

export const RENAME_NOREPLACE = 1;
export const XATTR_CREATE = 1;
export const XATTR_REPLACE = 2;
export const RWF_NOWAIT = 0x08;

const SYS_openat2 = 437; // same number on x86_64 and aarch64 (asm-generic)

const hostErrnoNames = new Map<number, string>();
for (const [name, num] of Object.entries(koffi.os.errno as Record<string, number>)) {
  if (!hostErrnoNames.has(num)) hostErrnoNames.set(num, name);
}

/**
 * A failed call. Failing calls are part of normal serving (a lookup of a missing name, a create that finds the
 * name taken), so the error carries no stack trace: capturing one cost more than the syscall (measured 8% of
 * the 9P server's CPU on create). The message names the call.
 */
export class SyscallError extends Error {
  readonly code: string;
  readonly syscall: string;
  readonly errno: number;
  constructor(syscall: string, errno: number) {
    const code = hostErrnoNames.get(errno) ?? `E${errno}`;
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(`${syscall}: ${code}`);
    Error.stackTraceLimit = limit;
    this.code = code;
    this.syscall = syscall;
    this.errno = errno;
  }
}

/**
 * The libc bindings. Loaded on Linux only: on another OS (the 9P server on Windows serves through its NTFS layer,
 * src/p9/ntfs) this module still imports (its constants and struct layouts are used everywhere), and any call
 * of a Linux syscall fails with ENOSYS instead.
 */
function bindLibc() {
  const libc = koffi.load('libc.so.6');
  return {
    syscall: libc.func('long syscall(long, ...)'),
    openat: libc.func('int openat(int, const char *, int, uint32_t)'),
    close: libc.func('int close(int)'),
    fcntl: libc.func('int fcntl(int, int, int)'),
    statx: libc.func('int statx(int, const char *, int, uint32_t, void *)'),
    mkdirat: libc.func('int mkdirat(int, const char *, uint32_t)'),
    mknodat: libc.func('int mknodat(int, const char *, uint32_t, uint64_t)'),
    symlinkat: libc.func('int symlinkat(const char *, int, const char *)'),
    readlinkat: libc.func('long readlinkat(int, const char *, void *, size_t)'),
    linkat: libc.func('int linkat(int, const char *, int, const char *, int)'),
    renameat2: libc.func('int renameat2(int, const char *, int, const char *, uint32_t)'),
    unlinkat: libc.func('int unlinkat(int, const char *, int)'),
    fchownat: libc.func('int fchownat(int, const char *, uint32_t, uint32_t, int)'),
    utimensat: libc.func('int utimensat(int, const char *, void *, int)'),
    getdents64: libc.func('long getdents64(int, void *, size_t)'),
    lseek: libc.func('int64_t lseek(int, int64_t, int)'),
    lgetxattr: libc.func('long lgetxattr(const char *, const char *, void *, size_t)'),
    lsetxattr: libc.func('int lsetxattr(const char *, const char *, void *, size_t, int)'),
    llistxattr: libc.func('long llistxattr(const char *, void *, size_t)'),
    lremovexattr: libc.func('int lremovexattr(const char *, const char *)'),
    getxattr: libc.func('long getxattr(const char *, const char *, void *, size_t)'),
    setxattr: libc.func('int setxattr(const char *, const char *, void *, size_t, int)'),
    listxattr: libc.func('long listxattr(const char *, void *, size_t)'),
    removexattr: libc.func('int removexattr(const char *, const char *)'),
    fchmodat: libc.func('int fchmodat(int, const char *, uint32_t, int)'),
    preadv2: libc.func('long preadv2(int, void *, int, int64_t, int)'),
    getrusage: libc.func('int getrusage(int, void *)'),
    flock: libc.func('int flock(int, int)'),
  };
}

type Libc = ReturnType<typeof bindLibc>;

function noLibc(): Libc {
  const fail = (): never => {
    const err = new Error(`Linux syscalls are not available on ${process.platform}`) as Error & { code: string };
    err.code = 'ENOSYS';
    throw err;
  };
  return new Proxy({} as Libc, { get: () => fail });
}

const raw: Libc = process.platform === 'linux' ? bindLibc() : noLibc();

function check(name: string, ret: number | bigint): number {
  const n = Number(ret);
  if (n < 0) throw new SyscallError(name, koffi.errno());
  return n;
}

const openHow = Buffer.alloc(24);
let openat2Supported = true;

/**
 * openat2(2): resolves `path` beneath `dirfd` with `resolve` flags. Returns undefined when the kernel lacks
 * openat2 (ENOSYS, Linux < 5.6) so the caller can fall back to a component-by-component walk.
 */
export function openat2(dirfd: number, path: string, flags: number, mode: number, resolve: number): number | undefined {
  if (!openat2Supported) return undefined;
  openHow.writeBigUInt64LE(BigInt(flags), 0);
  openHow.writeBigUInt64LE(BigInt(mode), 8);
  openHow.writeBigUInt64LE(BigInt(resolve), 16);
  const ret = Number(raw.syscall(SYS_openat2, 'int', dirfd, 'str', path, 'void *', openHow, 'size_t', 24));
  if (ret < 0) {
    const errno = koffi.errno();
    if (hostErrnoNames.get(errno) === 'ENOSYS') {
      openat2Supported = false;
      return undefined;
    }
    throw new SyscallError('openat2', errno);
  }
  return ret;
}

export function openat(dirfd: number, path: string, flags: number, mode = 0): number {
  return check('openat', raw.openat(dirfd, path, flags | O.CLOEXEC, mode));
}

const F_DUPFD_CLOEXEC = 1030;

/** dup(2) with close-on-exec; works on O_PATH fds. */
export function dupfd(fd: number): number {
  return check('fcntl', raw.fcntl(fd, F_DUPFD_CLOEXEC, 0));
}

export function close(fd: number): void {
  raw.close(fd);
}

/** Result of statx(2); bigints where values may exceed 2^53. */
export interface StatX {
  mode: number;
  nlink: number;
  uid: number;
  gid: number;
  ino: bigint;
  size: bigint;
  blocks: bigint;
  blksize: number;
  atimeSec: bigint;
  atimeNsec: number;
  mtimeSec: bigint;
  mtimeNsec: number;
  ctimeSec: bigint;
  ctimeNsec: number;
  btimeSec: bigint;
  btimeNsec: number;
  rdevMajor: number;
  rdevMinor: number;
  devMajor: number;
  devMinor: number;
  /** STATX_* bits the filesystem actually filled. */
  mask: number;
}

const STATX_BASIC_AND_BTIME = 0x07ff | 0x0800;
/**
 * The struct statx of the last statxRaw/fstatxRaw call (offsets in STATX_OFF). Hot paths read the fields they
 * need straight from it (no object, no BigInt); it is overwritten by the next statx call of any kind.
 */
export const statxBuf = Buffer.alloc(256);

/** Byte offsets of struct statx fields (linux/stat.h; the same on every architecture). */
export const STATX_OFF = {
  mask: 0,
  blksize: 4,
  nlink: 16,
  uid: 20,
  gid: 24,
  mode: 28,
  ino: 32,
  size: 40,
  blocks: 48,
  atime: 64,
  btime: 80,
  ctime: 96,
  mtime: 112,
  rdevMajor: 128,
  rdevMinor: 132,
  devMajor: 136,
  devMinor: 140,
} as const;

/** statx(dirfd, path, flags) into statxBuf (returned). */
export function statxRaw(dirfd: number, path: string, flags: number): Buffer {
  check('statx', raw.statx(dirfd, path, flags, STATX_BASIC_AND_BTIME, statxBuf));
  return statxBuf;
}

/** fstatx into statxBuf (returned); O_PATH fds work, a symlink's own attributes. */
export function fstatxRaw(fd: number): Buffer {
  check('statx', raw.statx(fd, '', AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW, STATX_BASIC_AND_BTIME, statxBuf));
  return statxBuf;
}

/** The StatX object of a struct statx buffer. */
export function statxFromRaw(b: Buffer): StatX {
  return {
    mask: b.readUInt32LE(0),
    blksize: b.readUInt32LE(4),
    nlink: b.readUInt32LE(16),
    uid: b.readUInt32LE(20),
    gid: b.readUInt32LE(24),
    mode: b.readUInt16LE(28),
    ino: b.readBigUInt64LE(32),
    size: b.readBigUInt64LE(40),
    blocks: b.readBigUInt64LE(48),
    atimeSec: b.readBigInt64LE(64),
    atimeNsec: b.readUInt32LE(72),
    btimeSec: b.readBigInt64LE(80),
    btimeNsec: b.readUInt32LE(88),
    ctimeSec: b.readBigInt64LE(96),
    ctimeNsec: b.readUInt32LE(104),
    mtimeSec: b.readBigInt64LE(112),
    mtimeNsec: b.readUInt32LE(120),
    rdevMajor: b.readUInt32LE(128),
    rdevMinor: b.readUInt32LE(132),
    devMajor: b.readUInt32LE(136),
    devMinor: b.readUInt32LE(140),
  };
}

/** statx(dirfd, path, flags). Use path '' with AT_EMPTY_PATH to stat the fd itself (O_PATH fds work). */
export function statx(dirfd: number, path: string, flags: number): StatX {
  return statxFromRaw(statxRaw(dirfd, path, flags));
}

export function fstatx(fd: number): StatX {
  return statxFromRaw(fstatxRaw(fd));
}

export function mkdirat(dirfd: number, name: string, mode: number): void {
  check('mkdirat', raw.mkdirat(dirfd, name, mode));
}

/** glibc makedev(3) encoding of a device number. */
export function makedev(major: number, minor: number): bigint {
  const ma = BigInt(major >>> 0);
  const mi = BigInt(minor >>> 0);
  return ((ma & 0xfffn) << 8n) | ((ma & ~0xfffn) << 32n) | (mi & 0xffn) | ((mi & ~0xffn) << 12n);
}

export function mknodat(dirfd: number, name: string, mode: number, major: number, minor: number): void {
  check('mknodat', raw.mknodat(dirfd, name, mode, makedev(major, minor)));
}

export function symlinkat(target: string, dirfd: number, name: string): void {
  check('symlinkat', raw.symlinkat(target, dirfd, name));
}

const linkBuf = Buffer.alloc(4097);

/** readlinkat(2). Returns raw bytes: link targets need not be UTF-8. */
export function readlinkat(dirfd: number, name: string): Buffer {
  const n = check('readlinkat', raw.readlinkat(dirfd, name, linkBuf, linkBuf.length));
  return Buffer.from(linkBuf.subarray(0, n));
}

export function linkat(olddirfd: number, oldname: string, newdirfd: number, newname: string, flags: number): void {
  check('linkat', raw.linkat(olddirfd, oldname, newdirfd, newname, flags));
}

export function renameat2(olddirfd: number, oldname: string, newdirfd: number, newname: string, flags = 0): void {
  check('renameat2', raw.renameat2(olddirfd, oldname, newdirfd, newname, flags));
}

export function unlinkat(dirfd: number, name: string, flags: number): void {
  check('unlinkat', raw.unlinkat(dirfd, name, flags));
}

/** fchownat(2); pass -1 (0xffffffff) to leave an id unchanged. */
export function fchownat(dirfd: number, name: string, uid: number, gid: number, flags: number): void {
  check('fchownat', raw.fchownat(dirfd, name, uid >>> 0, gid >>> 0, flags));
}

const timesBuf = Buffer.alloc(32);

/** utimensat(2) with explicit nsec values; UTIME_NOW / UTIME_OMIT are honoured. */
export function utimensat(
  dirfd: number,
  name: string,
  atime: { sec: bigint; nsec: number },
  mtime: { sec: bigint; nsec: number },
  flags: number,
): void {
  timesBuf.writeBigInt64LE(atime.sec, 0);
  timesBuf.writeBigInt64LE(BigInt(atime.nsec), 8);
  timesBuf.writeBigInt64LE(mtime.sec, 16);
  timesBuf.writeBigInt64LE(BigInt(mtime.nsec), 24);
  check('utimensat', raw.utimensat(dirfd, name, timesBuf, flags));
}

/** getdents64(2) into buf; returns bytes filled, 0 at end of directory. */
export function getdents64(fd: number, buf: Buffer): number {
  return check('getdents64', raw.getdents64(fd, buf, buf.length));
}

export function lseek(fd: number, offset: number, whence: number): number {
  return check('lseek', raw.lseek(fd, offset, whence));
}

/** lseek(fd, offset, SEEK_SET) with a full 64-bit offset (directory cookies such as ext4's hash positions). */
export function seekTo(fd: number, offset: bigint): void {
  const r = raw.lseek(fd, BigInt.asIntN(64, offset), 0) as number | bigint;
  if (r === -1 || r === -1n) throw new SyscallError('lseek', koffi.errno());
}

/**
 * chmod(2) of the inode an fd names, through its /proc magic link (works for O_PATH fds of regular files and
 * directories; never used on symlinks, whose mode cannot change).
 */
export function chmodFd(fd: number, mode: number): void {
  check('fchmodat', raw.fchmodat(AT_FDCWD, procFdPath(fd), mode, 0));
}

// The following xattr calls follow the final component: they are used on /proc/self/fd/N of an O_PATH fd of
// a regular file or directory, where "following" means jumping to exactly that inode.
export function getxattr(path: string, name: string, buf: Buffer | null): number {
  return check('getxattr', raw.getxattr(path, name, buf, buf ? buf.length : 0));
}

export function setxattr(path: string, name: string, value: Buffer, flags: number): void {
  check('setxattr', raw.setxattr(path, name, value, value.length, flags));
}

export function listxattr(path: string, buf: Buffer | null): number {
  return check('listxattr', raw.listxattr(path, buf, buf ? buf.length : 0));
}

export function removexattr(path: string, name: string): void {
  check('removexattr', raw.removexattr(path, name));
}

/** lgetxattr(2). With an empty buffer returns the value size. */
export function lgetxattr(path: string, name: string, buf: Buffer | null): number {
  return check('lgetxattr', raw.lgetxattr(path, name, buf, buf ? buf.length : 0));
}

export function lsetxattr(path: string, name: string, value: Buffer, flags: number): void {
  check('lsetxattr', raw.lsetxattr(path, name, value, value.length, flags));
}

export function llistxattr(path: string, buf: Buffer | null): number {
  return check('llistxattr', raw.llistxattr(path, buf, buf ? buf.length : 0));
}

export function lremovexattr(path: string, name: string): void {
  check('lremovexattr', raw.lremovexattr(path, name));
}

/** One struct iovec, filled per call (the event loop is single-threaded). */
const iovec = Buffer.alloc(16);

/**
 * The address of a Buffer's first byte, for iovecs. Only for Buffers whose memory V8 never moves: those on an
 * ArrayBuffer above 64 bytes, which V8 keeps off its heap (typed arrays up to 64 bytes may live on it and move).
 */
export function bufferAddress(buf: Buffer): number {
  if (buf.buffer.byteLength <= 64) throw new Error('bufferAddress: small buffers may live on the V8 heap');
  return Number(koffi.address(buf));
}

/**
 * preadv2(2) with RWF_NOWAIT into `len` bytes at address `addr` (bufferAddress + offset; the caller keeps the
 * Buffer alive and checks the bounds): reads only what is already in the page cache, never blocks. Returns -1
 * when the data is not cached (EAGAIN) or the file does not support it, so the caller falls back to a threadpool
 * read.
 */
export function preadNoWaitAt(fd: number, addr: number, len: number, position: number): number {
  iovec.writeUInt32LE(addr % 0x100000000, 0);
  iovec.writeUInt32LE(Math.floor(addr / 0x100000000), 4);
  iovec.writeUInt32LE(len, 8);
  iovec.writeUInt32LE(0, 12);
  const n = Number(raw.preadv2(fd, iovec, 1, position, RWF_NOWAIT));
  if (n >= 0) return n;
  const code = hostErrnoNames.get(koffi.errno());
  if (code === 'EAGAIN' || code === 'EOPNOTSUPP' || code === 'ENOTSUP' || code === 'EINVAL') return -1;
  throw new SyscallError('preadv2', koffi.errno());
}

/** preadNoWaitAt into a whole Buffer (any size). */
export function preadNoWait(fd: number, buf: Buffer, position: number): number {
  if (buf.length === 0) return 0;
  if (buf.buffer.byteLength > 64) return preadNoWaitAt(fd, bufferAddress(buf), buf.length, position);
  const big = Buffer.allocUnsafeSlow(128);
  const n = preadNoWaitAt(fd, bufferAddress(big), buf.length, position);
  if (n > 0) big.copy(buf, 0, 0, n);
  return n;
}

const RUSAGE_THREAD = 1;
/** struct rusage: two timevals, then 14 longs; ru_nvcsw is the 13th. */
const RU_NVCSW = 32 + 12 * 8;
const rusage = Buffer.alloc(144);

/** Voluntary context switches of the calling thread so far (it slept: blocked in a syscall). */
export function threadVoluntarySwitches(): number {
  check('getrusage', raw.getrusage(RUSAGE_THREAD, rusage));
  return rusage.readUInt32LE(RU_NVCSW) + rusage.readUInt32LE(RU_NVCSW + 4) * 0x100000000;
}

/** Path through /proc that names exactly the inode held by `fd` (race-free re-open of O_PATH fds). */
export function procFdPath(fd: number): string {
  return `/proc/self/fd/${fd}`;
}

const LOCK_EX = 2;
const LOCK_NB = 4;

/** flock(fd, LOCK_EX | LOCK_NB): true when taken, false when another open file holds it (never blocks). */
export function tryLockExclusive(fd: number): boolean {
  const r = Number(raw.flock(fd, LOCK_EX | LOCK_NB));
  if (r === 0) return true;
  const errno = koffi.errno();
  if (hostErrnoNames.get(errno) === 'EWOULDBLOCK' || hostErrnoNames.get(errno) === 'EAGAIN') return false;
  throw new SyscallError('flock', errno);
}
