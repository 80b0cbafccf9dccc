// Linux errno numbers, the only error vocabulary 9P2000.L has (Rlerror carries them verbatim to guest syscalls).
// Host errors are translated by *name* (Node's err.code), never by number, so a non-Linux host still sends
// Linux numbers.

export const Errno = {
  EPERM: 1,
  ENOENT: 2,
  ESRCH: 3,
  EINTR: 4,
  EIO: 5,
  ENXIO: 6,
  E2BIG: 7,
  ENOEXEC: 8,
  EBADF: 9,
  ECHILD: 10,
  EAGAIN: 11,
  ENOMEM: 12,
  EACCES: 13,
  EFAULT: 14,
  ENOTBLK: 15,
  EBUSY: 16,
  EEXIST: 17,
  EXDEV: 18,
  ENODEV: 19,
  ENOTDIR: 20,
  EISDIR: 21,
  EINVAL: 22,
  ENFILE: 23,
  EMFILE: 24,
  ENOTTY: 25,
  ETXTBSY: 26,
  EFBIG: 27,
  ENOSPC: 28,
  ESPIPE: 29,
  EROFS: 30,
  EMLINK: 31,
  EPIPE: 32,
  EDOM: 33,
  ERANGE: 34,
  EDEADLK: 35,
  ENAMETOOLONG: 36,
  ENOLCK: 37,
  ENOSYS: 38,
  ENOTEMPTY: 39,
  ELOOP: 40,
  ENOMSG: 42,
  ENODATA: 61,
  ETIME: 62,
  ENOLINK: 67,
  EPROTO: 71,
  EBADMSG: 74,
  EOVERFLOW: 75,
  EILSEQ: 84,
  EUSERS: 87,
  ENOTSOCK: 88,
  EMSGSIZE: 90,
  EPROTOTYPE: 91,
  ENOPROTOOPT: 92,
  EPROTONOSUPPORT: 93,
  EOPNOTSUPP: 95,
  EAFNOSUPPORT: 97,
  EADDRINUSE: 98,
  EADDRNOTAVAIL: 99,
  ENETDOWN: 100,
  ENETUNREACH: 101,
  ECONNABORTED: 103,
  ECONNRESET: 104,
  ENOBUFS: 105,
  EISCONN: 106,
  ENOTCONN: 107,
  ETIMEDOUT: 110,
  ECONNREFUSED: 111,
  EHOSTUNREACH: 113,
  EALREADY: 114,
  EINPROGRESS: 115,
  ESTALE: 116,
  EDQUOT: 122,
  ECANCELED: 125,
  EREMOTEIO: 121,
  EOWNERDEAD: 130,
} as const;

/** Aliases some hosts report under another name. */
const aliases: Record<string, number> = {
  EWOULDBLOCK: Errno.EAGAIN,
  ENOATTR: Errno.ENODATA,
  ENOTSUP: Errno.EOPNOTSUPP,
  EDEADLOCK: Errno.EDEADLK,
};

/**
 * An error that is answered as Rlerror with a Linux errno. Part of normal serving (EBADF, ENOENT...), so it
 * carries no stack trace (capturing one costs more than most requests).
 */
export class P9Error extends Error {
  readonly errno: number;
  constructor(errno: number, message?: string) {
    const limit = Error.stackTraceLimit;
    Error.stackTraceLimit = 0;
    super(message ?? errnoName(errno));
    Error.stackTraceLimit = limit;
    this.errno = errno;
    this.name = 'P9Error';
  }
}

const nameByNumber = new Map<number, string>(Object.entries(Errno).map(([k, v]) => [v, k]));

export function errnoName(errno: number): string {
  return nameByNumber.get(errno) ?? `errno ${errno}`;
}

/** Linux errno for a Node error code name ('ENOENT'), or undefined when the name is unknown. */
export function errnoFromCode(code: string): number | undefined {
  return (Errno as Record<string, number>)[code] ?? aliases[code];
}

/**
 * Linux errno for anything a handler throws. Unknown errors become EIO: the guest sees a plain I/O error
 * rather than the connection dying.
 */
export function toLinuxErrno(err: unknown): number {
  if (err instanceof P9Error) return err.errno;
  if (typeof err === 'object' && err !== null) {
    const code = (err as { code?: unknown }).code;
    if (typeof code === 'string') return errnoFromCode(code) ?? Errno.EIO;
  }
  return Errno.EIO;
}
