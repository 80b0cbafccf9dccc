// The host filesystem as the 9P operations see it: everything they ask of the host, as one interface, so that the
// same operations serve a Linux directory (hostfs-linux.ts: the raw syscalls of util/syscalls.ts) and a directory
// on NTFS on a Windows host (ntfs/hostfs-ntfs.ts: Node's fs plus a mapped metadata stream).
//
// The vocabulary is Linux's whatever the host: handles are numbers (fds; -1 never names one), open flags are
// Linux O_* values, stats fill a struct statx in the Linux layout (util/syscalls.ts STATX_OFF, so the hot paths
// read fields straight from a buffer on every host), and failures throw errors whose `code` is a Linux errno
// name or P9Errors. An "O_PATH handle" names one object without opening it for I/O and is never followed if it
// is a symlink; an open-file handle of a regular file is a real Node fd (Node's async fs reads and writes it).
// `name` arguments are single validated components ('' = the handle itself where the call allows it).

import type { MetadataStore } from './metadata.js';
import type { StatX } from '../util/syscalls.js';

export interface TimeSpec {
  sec: bigint;
  /** Nanoseconds, or UTIME_NOW / UTIME_OMIT. */
  nsec: number;
}

export interface HostStatFs {
  type: bigint;
  bsize: bigint;
  blocks: bigint;
  bfree: bigint;
  bavail: bigint;
  files: bigint;
  ffree: bigint;
}

export interface HostFs {
  /** 'linux' or 'ntfs' (logs, docs). */
  readonly kind: string;
  /**
   * The struct statx (Linux layout) the last statxRaw / fstatxRaw filled; overwritten by the next stat call of any
   * kind. Hot paths read the fields they need from it (no object, no BigInt).
   */
  readonly statxBuf: Buffer;
  /** Whether small writes may be made synchronously on the event loop (syncwrite.ts watches them). */
  readonly syncWrites: boolean;

  /** An O_PATH handle on the export's root directory (an absolute host path). */
  openRoot(path: string): number;
  /** openat(2) of one name in a directory handle ('.' = the directory itself). */
  openat(dirfd: number, name: string, flags: number, mode?: number): number;
  /** Opens a relative path of validated components beneath the root handle, never following a symlink. */
  openBeneath(rootFd: number, path: string, flags: number): number;
  /** Opens the object an O_PATH handle names for I/O with `flags` (the same object, no path re-resolved). */
  openThrough(pathFd: number, flags: number, noatime: boolean, isDir: boolean): number;
  close(fd: number): void;

  statxRaw(dirfd: number, name: string, flags: number): Buffer;
  fstatxRaw(fd: number): Buffer;
  statx(dirfd: number, name: string, flags: number): StatX;
  fstatx(fd: number): StatX;

  mkdirat(dirfd: number, name: string, mode: number): void;
  symlinkat(target: string, dirfd: number, name: string): void;
  /** The target of a symlink; name '' reads the handle's own link. */
  readlinkat(dirfd: number, name: string): Buffer;
  /** A new name for the object `oldfd` names (oldname '' with AT_EMPTY_PATH). */
  linkat(oldfd: number, oldname: string, newdirfd: number, newname: string, flags: number): void;
  renameat2(olddirfd: number, oldname: string, newdirfd: number, newname: string, flags?: number): void;
  unlinkat(dirfd: number, name: string, flags: number): void;
  /** fchownat(2); -1 leaves an id unchanged. */
  fchownat(dirfd: number, name: string, uid: number, gid: number, flags: number): void;
  /** Permission bits of the regular file or directory a handle names. */
  chmodFd(fd: number, mode: number): void;
  /** Times of the regular file or directory a handle names. */
  utimensFd(fd: number, atime: TimeSpec, mtime: TimeSpec): void;
  /** Times of `name` in a directory, AT_SYMLINK_NOFOLLOW honoured. */
  utimensat(dirfd: number, name: string, atime: TimeSpec, mtime: TimeSpec, flags: number): void;

  /** getdents64(2) into buf (linux_dirent64 records); 0 at the end. */
  getdents64(fd: number, buf: Buffer): number;
  /** Positions an open directory at a cookie getdents64 reported (0 = the start). */
  seekTo(fd: number, offset: bigint): void;

  /**
   * Reads what can be read without blocking into `len` bytes at address `addr`; -1 when it would block (the
   * caller reads on the threadpool). A host without such reads always answers -1.
   */
  preadNoWaitAt(fd: number, addr: number, len: number, position: number): number;
  preadNoWait(fd: number, buf: Buffer, position: number): number;

  statfs(fd: number): HostStatFs;

  /** The metadata store exports use unless told otherwise. */
  defaultMetadataStore(): MetadataStore;
}
