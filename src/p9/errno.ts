// Linux errno numbers, the only error vocabulary 9P2000.L has (Rlerror carries them verbatim to guest syscalls).
// Host errors are translated by *name* (Node's err.code), never by number, so a non-Linux host still sends
// Linux numbers: Node reports libuv's error names on every OS, but their numbers (err.errno) are the host's own
// (on Windows libuv's arbitrary negative values, UV_ENOENT = -4058...), so a number is never looked at. Every
// name libuv can report is in the one table below (hostErrorNames), either as itself or mapped to the closest
// Linux errno.

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
  EUNATCH: 49,
  ENONET: 64,
  EDESTADDRREQ: 89,
  ESOCKTNOSUPPORT: 94,
  ESHUTDOWN: 108,
  EHOSTDOWN: 112,
} as const;

/**
 * Host error names that are not Linux errno names, or are another name for one: aliases some hosts report, and
 * libuv's own names (Node's err.code on Windows, where there is no errno underneath).
 */
const hostOnlyNames: Record<string, number> = {
  EWOULDBLOCK: Errno.EAGAIN,
  ENOATTR: Errno.ENODATA,
  ENOTSUP: Errno.EOPNOTSUPP,
  EDEADLOCK: Errno.EDEADLK,
  // libuv: a name Windows cannot represent (invalid UTF-16 / unpaired surrogate).
  ECHARSET: Errno.EILSEQ,
  // libuv: inappropriate file type or format.
  EFTYPE: Errno.EINVAL,
  // libuv: end of file reported as an error, and an OS error it has no name for.
  EOF: Errno.EIO,
  UNKNOWN: Errno.EIO,
  // libuv's getaddrinfo errors (never from a file operation; an I/O error if ever).
  EAI_ADDRFAMILY: Errno.EIO,
  EAI_AGAIN: Errno.EIO,
  EAI_BADFLAGS: Errno.EIO,
  EAI_BADHINTS: Errno.EIO,
  EAI_CANCELED: Errno.ECANCELED,
  EAI_FAIL: Errno.EIO,
  EAI_FAMILY: Errno.EIO,
  EAI_MEMORY: Errno.ENOMEM,
  EAI_NODATA: Errno.EIO,
  EAI_NONAME: Errno.EIO,
  EAI_OVERFLOW: Errno.EIO,
  EAI_PROTOCOL: Errno.EIO,
  EAI_SERVICE: Errno.EIO,
  EAI_SOCKTYPE: Errno.EIO,
};

/** The one table: every host error name we know (Linux names, aliases, libuv names) to its Linux errno. */
export const hostErrorNames: Readonly<Record<string, number>> = Object.freeze({ ...Errno, ...hostOnlyNames });

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
  return Object.prototype.hasOwnProperty.call(hostErrorNames, code) ? hostErrorNames[code] : undefined;
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
