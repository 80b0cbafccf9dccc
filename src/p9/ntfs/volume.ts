// What the NTFS layer (hostfs-ntfs.ts) needs from a Windows volume, by path: Node's fs calls plus the two things
// Node has no call for (alternate data streams are opened as "path:stream" through fs; the per-directory case
// sensitivity flag goes through ntdll). node-volume.ts is the real one; the unit tests use a FAKE over a Linux
// temp directory (test/fakes/ntfs-volume-fake.ts) with NTFS's case-insensitive lookups and streams emulated.
//
// Paths are absolute host paths as the volume spells them (join/dirname are the volume's). Nothing here follows
// a reparse point on its own except where said: lstat reports symlinks and junctions as 'reparse'.

import type { HostStatFs } from '../hostfs.js';

export interface NtfsStat {
  kind: 'file' | 'dir' | 'reparse';
  /** Volume serial number and NTFS file id (Node's dev and ino): the object's identity. */
  dev: bigint;
  ino: bigint;
  size: bigint;
  nlink: number;
  atimeNs: bigint;
  mtimeNs: bigint;
  ctimeNs: bigint;
  birthtimeNs: bigint;
}

export interface NtfsVolume {
  /** 'ntfs' for the real one, 'fake-ntfs' for the test double. */
  readonly name: string;
  /** The absolute form of an export path (on Windows \\?\-prefixed: no Win32 name rewriting). */
  rootPath(path: string): string;
  join(dir: string, name: string): string;
  dirname(path: string): string;

  /** The object itself, a reparse point not followed. */
  lstat(path: string): NtfsStat;
  fstat(fd: number): NtfsStat;
  /** Names in a directory as stored (their exact case), without '.' and '..'. */
  readdir(path: string): string[];
  /** A Node fd; `flags` are fs.constants values of the running platform. */
  open(path: string, flags: number, mode: number): number;
  close(fd: number): void;
  mkdir(path: string): void;
  rmdir(path: string): void;
  /** Removes a file, or a reparse point itself (a junction too). */
  unlink(path: string): void;
  /** Renames, replacing an existing file at `to`. */
  rename(from: string, to: string): void;
  link(existing: string, newPath: string): void;
  /** The target of a host reparse point (symlink or junction). */
  readlink(path: string): string;
  /** Times in seconds (fractions kept); `nofollow` sets a reparse point's own. */
  utimes(path: string, atime: number, mtime: number, nofollow: boolean): void;
  statfs(path: string): HostStatFs;

  /** Whether named streams exist on the volume of `path` (NTFS yes; FAT, exFAT, some network shares no). */
  supportsStreams(path: string): boolean;
  /** Stream `stream` of the object at `path` (never of a reparse point's target), at most `max` bytes. */
  readStream(path: string, stream: string, max: number): Buffer | undefined;
  writeStream(path: string, stream: string, data: Buffer): void;
  removeStream(path: string, stream: string): void;

  /** Whether lookups in the directory are case-sensitive (FILE_CS_FLAG_CASE_SENSITIVE_DIR). */
  isCaseSensitiveDir(path: string): boolean;
  /** Sets that flag on an (empty) directory; false when the host refuses (older Windows, policy). */
  setCaseSensitiveDir(path: string): boolean;
}
