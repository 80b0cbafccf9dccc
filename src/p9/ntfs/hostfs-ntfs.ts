// The NTFS HostFs: the 9P operations' host calls (hostfs.ts) over a Windows volume (volume.ts) through Node's fs,
// with what NTFS cannot hold kept in a mapped form (meta.ts: permission bits, guest symlinks, records, xattrs in
// alternate data streams).
//
// Handles. Windows has no O_PATH and no *at calls, so a handle is a table entry: an O_PATH handle is the object's
// path and identity (volume serial, file id), numbered from PATH_HANDLE_BASE up (never a Node fd); an open
// directory is an entry with its listing; an open regular file is a real Node fd (Node's async fs reads and
// writes it, as on Linux). Every use of a path handle checks the path still names the same file id (ESTALE
// otherwise), and renames made through the layer move the paths of the handles below them.
//
// What the guest sees of a host object: its type (a directory, a regular file, a guest symlink from the meta
// stream, or a host reparse point, shown as a symlink whose target is readable and never followed), the emulated
// permission bits (meta stream, else 0755 for directories and 0644 for files), the server's own uid/gid as owner
// (NTFS has no POSIX owner), NTFS's file id as inode and its times. security.ts then lays the guest's records
// over that exactly as on Linux (S_ISVTX in the emulated bits marks a record).
//
// Names. Every name passes ntfs/names.ts (no ':' stream names, no '\', no reserved device names, no trailing dot
// or space). Case: in a directory without the case-sensitive flag NTFS finds "FOO" for "foo"; the layer answers
// only for the name as it is stored (ENOENT for another case) and refuses to create a name that differs only in
// case from an existing one (EEXIST), so the guest never sees one file under two names. Directories the layer
// creates get the case-sensitive flag (when the host allows it).
//
// Confinement. Paths are built from the export root and validated names only; every lookup is an lstat that
// never follows a reparse point, and a walk through one fails (ENOTDIR). Unlike Linux's openat2(RESOLVE_BENEATH)
// this is not atomic: a host user who can write inside the export and swaps a directory for a junction between
// the check and the use could redirect one call (see docs/security.md, "9P on NTFS").

import fs from 'node:fs';
import { Errno, P9Error } from '../errno.js';
import type { HostFs, HostStatFs, TimeSpec } from '../hostfs.js';
import type { MetadataStore } from '../metadata.js';
import {
  AT_EMPTY_PATH,
  AT_REMOVEDIR,
  AT_SYMLINK_NOFOLLOW,
  O,
  RENAME_NOREPLACE,
  STATX_OFF,
  S_IFDIR,
  S_IFLNK,
  S_IFREG,
  UTIME_NOW,
  UTIME_OMIT,
  statxFromRaw,
  type StatX,
} from '../../util/syscalls.js';
import {
  META_SIZE,
  META_STREAM,
  XATTR_STREAM,
  XATTR_STREAM_MAX,
  decodeMeta,
  decodeXattrs,
  encodeMeta,
  encodeXattrs,
  isEmptyMeta,
  type NtfsMeta,
} from './meta.js';
import { checkCreateName, checkLookupName } from './names.js';
import { NtfsMetadataStore } from './metadata-ntfs.js';
import type { NtfsStat, NtfsVolume } from './volume.js';

/** Handle numbers of path and directory handles (Node fds are small integers). */
export const PATH_HANDLE_BASE = 0x40000000;
const DEFAULT_DIR_PERM = 0o755;
const DEFAULT_FILE_PERM = 0o644;
/** Longest guest symlink target (Linux's PATH_MAX minus the NUL). */
const SYMLINK_MAX = 4095;
const DT_DIR = 4;
const DT_REG = 8;
const DT_LNK = 10;
/** Directories whose exact names are cached for case checks (validated by the directory's mtime). */
const NAME_CACHE_MAX = 256;

interface Handle {
  /** The handle's number (a Node fd for an open file). */
  fd: number;
  path: string;
  kind: 'path' | 'dir' | 'file';
  dev: bigint;
  ino: bigint;
  /** An open directory's entries (read at the first getdents64 after a seek to 0) and position. */
  entries?: Array<{ name: string; ino: bigint; type: number }>;
  pos: number;
}

function errno(code: number, message?: string): P9Error {
  return new P9Error(code, message);
}

function codeOf(err: unknown): string | undefined {
  return (err as { code?: string }).code;
}

/** Linux open flags to Node's fs.constants of the running platform (O_PATH and Linux-only bits dropped). */
function nodeOpenFlags(flags: number): number {
  const c = fs.constants;
  let f = 0;
  const acc = flags & O.ACCMODE;
  f |= acc === O.WRONLY ? c.O_WRONLY : acc === O.RDWR ? c.O_RDWR : c.O_RDONLY;
  if (flags & O.CREAT) f |= c.O_CREAT;
  if (flags & O.EXCL) f |= c.O_EXCL;
  if (flags & O.TRUNC) f |= c.O_TRUNC;
  if (flags & O.APPEND) f |= c.O_APPEND;
  return f;
}

export class NtfsHostFs implements HostFs {
  readonly kind = 'ntfs';
  readonly statxBuf = Buffer.alloc(256);
  /** Writes go through the threadpool (no watch of blocking writes on Windows). */
  readonly syncWrites = false;
  private readonly handles = new Map<number, Handle>();
  private nextHandle = PATH_HANDLE_BASE;
  private readonly names = new Map<string, { mtimeNs: bigint; names: Set<string> }>();
  private readonly caseSensitive = new Map<string, boolean>();
  /** Directories made here whose case-sensitive flag the host refused (diagnostics, tests). */
  caseFlagRefused = 0;

  constructor(
    readonly vol: NtfsVolume,
    /** The owner every object shows (NTFS has no POSIX owner): the server's own ids, as security.ts expects. */
    readonly owner = { uid: process.geteuid?.() ?? 0, gid: process.getegid?.() ?? 0 },
  ) {}

  /** Handles open now (tests: nothing leaks). */
  get openHandles(): number {
    return this.handles.size;
  }

  // --- handles ---------------------------------------------------------------------------------------------------

  private handle(fd: number): Handle {
    const h = this.handles.get(fd);
    if (h === undefined) throw errno(Errno.EBADF, `no NTFS handle ${fd}`);
    return h;
  }

  private newHandle(path: string, kind: 'path' | 'dir', st: NtfsStat): number {
    const fd = this.nextHandle++;
    if (this.nextHandle >= 0x7fffffff) this.nextHandle = PATH_HANDLE_BASE;
    this.handles.set(fd, { fd, path, kind, dev: st.dev, ino: st.ino, pos: 0 });
    return fd;
  }

  /** The handle's object now, checked to be the same file (ESTALE when its path names another one). */
  private current(h: Handle): NtfsStat {
    const st = this.vol.lstat(h.path);
    if (st.ino !== h.ino || st.dev !== h.dev) throw errno(Errno.ESTALE, 'file replaced on the host');
    return st;
  }

  private dirPath(dirfd: number): string {
    const h = this.handle(dirfd);
    if (h.kind === 'file') throw errno(Errno.ENOTDIR);
    const st = this.current(h);
    if (st.kind !== 'dir') throw errno(Errno.ENOTDIR);
    return h.path;
  }

  // --- names and case --------------------------------------------------------------------------------------------

  private isCaseSensitive(dir: string): boolean {
    let v = this.caseSensitive.get(dir);
    if (v === undefined) {
      v = this.vol.isCaseSensitiveDir(dir);
      if (this.caseSensitive.size >= NAME_CACHE_MAX) this.caseSensitive.clear();
      this.caseSensitive.set(dir, v);
    }
    return v;
  }

  /** The names of a directory as stored (cached while its mtime stays). */
  private storedNames(dir: string): Set<string> {
    const mtimeNs = this.vol.lstat(dir).mtimeNs;
    const hit = this.names.get(dir);
    if (hit !== undefined && hit.mtimeNs === mtimeNs) return hit.names;
    const names = new Set(this.vol.readdir(dir));
    if (this.names.size >= NAME_CACHE_MAX) this.names.clear();
    this.names.set(dir, { mtimeNs, names });
    return names;
  }

  private forgetNames(dir: string): void {
    this.names.delete(dir);
  }

  /**
   * The object `name` names in directory `dir`, exactly as spelled: in a case-insensitive directory NTFS also
   * finds another case of it, which is ENOENT here (the guest's name does not exist).
   */
  private lookup(dir: string, name: string): { path: string; st: NtfsStat } {
    if (name === '.' || name === '') return { path: dir, st: this.vol.lstat(dir) };
    checkLookupName(name);
    if (name === '..') throw errno(Errno.EINVAL, '.. is resolved by the caller');
    const path = this.vol.join(dir, name);
    const st = this.vol.lstat(path);
    if (!this.isCaseSensitive(dir) && !this.storedNames(dir).has(name)) {
      throw errno(Errno.ENOENT, 'only another case of the name exists');
    }
    return { path, st };
  }

  /**
   * A name about to be created in `dir`: valid on NTFS, and (case-insensitive directory) not another case of an
   * existing name (EEXIST: the guest would otherwise get the existing file under a second name). Returns the
   * path and the object already there under exactly this name, if any.
   */
  private forCreate(dir: string, name: string): { path: string; existing: NtfsStat | undefined } {
    checkCreateName(name);
    const path = this.vol.join(dir, name);
    let existing: NtfsStat | undefined;
    try {
      existing = this.vol.lstat(path);
    } catch (err) {
      if (codeOf(err) !== 'ENOENT') throw err;
    }
    if (existing !== undefined && !this.isCaseSensitive(dir) && !this.storedNames(dir).has(name)) {
      throw errno(Errno.EEXIST, 'a name differing only in case exists (case-insensitive directory)');
    }
    return { path, existing };
  }

  // --- metadata streams ------------------------------------------------------------------------------------------

  private readMetaAt(path: string, st: NtfsStat): NtfsMeta | undefined {
    if (st.kind === 'reparse') return undefined; // a stream open would follow the link
    return decodeMeta(this.vol.readStream(path, META_STREAM, META_SIZE));
  }

  private writeMetaAt(path: string, st: NtfsStat, meta: NtfsMeta): void {
    if (st.kind === 'reparse') throw errno(Errno.EPERM, 'no metadata on a host reparse point');
    // The default bits are not stored: an object back to them needs no stream.
    const m =
      meta.perm === (st.kind === 'dir' ? DEFAULT_DIR_PERM : DEFAULT_FILE_PERM) ? { ...meta, perm: undefined } : meta;
    if (isEmptyMeta(m)) this.vol.removeStream(path, META_STREAM);
    else this.vol.writeStream(path, META_STREAM, encodeMeta(m));
  }

  /** The mapped metadata of the object a handle names (for the metadata store). */
  readMeta(fd: number): NtfsMeta {
    const h = this.handle(fd);
    return this.readMetaAt(h.path, this.statOf(h)) ?? {};
  }

  /** Replaces the mapped metadata of the object a handle names. */
  writeMeta(fd: number, m: NtfsMeta): void {
    const h = this.handle(fd);
    this.writeMetaAt(h.path, this.statOf(h), m);
  }

  /** The record of symlink `name` in directory handle `dirfd` (a guest symlink file carries its own). */
  readMetaOf(dirfd: number, name: string): NtfsMeta | undefined {
    const { path, st } = this.lookup(this.dirPath(dirfd), name);
    return this.readMetaAt(path, st);
  }

  writeMetaOf(dirfd: number, name: string, m: NtfsMeta): void {
    const { path, st } = this.lookup(this.dirPath(dirfd), name);
    this.writeMetaAt(path, st, m);
  }

  readXattrs(fd: number): Map<string, Buffer> {
    const h = this.handle(fd);
    if (this.statOf(h).kind === 'reparse') return new Map();
    return decodeXattrs(this.vol.readStream(h.path, XATTR_STREAM, XATTR_STREAM_MAX));
  }

  writeXattrs(fd: number, attrs: Map<string, Buffer>): void {
    const h = this.handle(fd);
    if (this.statOf(h).kind === 'reparse') throw errno(Errno.EPERM);
    if (attrs.size === 0) this.vol.removeStream(h.path, XATTR_STREAM);
    else this.vol.writeStream(h.path, XATTR_STREAM, encodeXattrs(attrs));
  }

  private statOf(h: Handle): NtfsStat {
    return h.kind === 'file' ? this.vol.fstat(h.fd) : this.current(h);
  }

  // --- stat ------------------------------------------------------------------------------------------------------

  /** Fills statxBuf (Linux struct statx layout) for an object. */
  private fill(st: NtfsStat, meta: NtfsMeta | undefined): Buffer {
    const b = this.statxBuf;
    b.fill(0);
    let mode: number;
    if (st.kind === 'dir') mode = S_IFDIR | (meta?.perm ?? DEFAULT_DIR_PERM);
    else if (st.kind === 'reparse' || meta?.symlink) mode = S_IFLNK | 0o777;
    else mode = S_IFREG | (meta?.perm ?? DEFAULT_FILE_PERM);
    b.writeUInt32LE(0x07ff | 0x0800, STATX_OFF.mask);
    b.writeUInt32LE(4096, STATX_OFF.blksize);
    b.writeUInt32LE(st.nlink, STATX_OFF.nlink);
    b.writeUInt32LE(this.owner.uid >>> 0, STATX_OFF.uid);
    b.writeUInt32LE(this.owner.gid >>> 0, STATX_OFF.gid);
    b.writeUInt16LE(mode, STATX_OFF.mode);
    b.writeBigUInt64LE(BigInt.asUintN(64, st.ino), STATX_OFF.ino);
    b.writeBigUInt64LE(st.size, STATX_OFF.size);
    b.writeBigUInt64LE((st.size + 511n) / 512n, STATX_OFF.blocks);
    writeTime(b, STATX_OFF.atime, st.atimeNs);
    writeTime(b, STATX_OFF.btime, st.birthtimeNs);
    writeTime(b, STATX_OFF.ctime, st.ctimeNs);
    writeTime(b, STATX_OFF.mtime, st.mtimeNs);
    b.writeUInt32LE(Number(BigInt.asUintN(32, st.dev >> 32n)), STATX_OFF.devMajor);
    b.writeUInt32LE(Number(BigInt.asUintN(32, st.dev)), STATX_OFF.devMinor);
    return b;
  }

  statxRaw(dirfd: number, name: string, _flags: number): Buffer {
    const { path, st } = this.lookup(this.dirPath(dirfd), name);
    return this.fill(st, this.readMetaAt(path, st));
  }

  fstatxRaw(fd: number): Buffer {
    const h = this.handle(fd);
    const st = this.statOf(h);
    let meta: NtfsMeta | undefined;
    try {
      meta = this.readMetaAt(h.path, st);
    } catch {
      // an open file whose name went away: its data and times, default metadata
    }
    return this.fill(st, meta);
  }

  statx(dirfd: number, name: string, flags: number): StatX {
    return statxFromRaw(this.statxRaw(dirfd, name, flags));
  }

  fstatx(fd: number): StatX {
    return statxFromRaw(this.fstatxRaw(fd));
  }

  // --- open and close --------------------------------------------------------------------------------------------

  openRoot(path: string): number {
    const root = this.vol.rootPath(path);
    const st = this.vol.lstat(root);
    if (st.kind !== 'dir') throw new Error(`export ${path} is not a directory (or is a reparse point)`);
    if (!this.vol.supportsStreams(root)) {
      throw new Error(`export ${path}: its volume has no alternate data streams (the 9P metadata needs NTFS)`);
    }
    return this.newHandle(root, 'path', st);
  }

  openat(dirfd: number, name: string, flags: number, mode = 0): number {
    const dir = this.dirPath(dirfd);
    if (flags & O.CREAT) return this.create(dir, name, flags, mode);
    const { path, st } = this.lookup(dir, name);
    return this.openObject(path, st, flags);
  }

  /** Opens an object found by lookup: an O_PATH handle, a directory listing, or a regular file's Node fd. */
  private openObject(path: string, st: NtfsStat, flags: number): number {
    if (flags & O.DIRECTORY && st.kind !== 'dir') throw errno(Errno.ENOTDIR);
    if (flags & O.PATH) return this.newHandle(path, 'path', st);
    if (st.kind === 'dir') {
      if ((flags & O.ACCMODE) !== O.RDONLY) throw errno(Errno.EISDIR);
      return this.newHandle(path, 'dir', st);
    }
    if (st.kind === 'reparse') throw errno(Errno.ELOOP);
    if (this.readMetaAt(path, st)?.symlink) throw errno(Errno.ELOOP);
    return this.openFile(path, st, flags, 0);
  }

  private openFile(path: string, st: NtfsStat | undefined, flags: number, mode: number): number {
    const fd = this.vol.open(path, nodeOpenFlags(flags), mode);
    try {
      const now = this.vol.fstat(fd);
      // The name may have been replaced between the lookup and the open: the file opened must be the one found.
      if (now.kind !== 'file' || (st !== undefined && (now.ino !== st.ino || now.dev !== st.dev))) {
        throw errno(Errno.ESTALE, 'file replaced on the host');
      }
      this.handles.set(fd, { fd, path, kind: 'file', dev: now.dev, ino: now.ino, pos: 0 });
      return fd;
    } catch (err) {
      this.vol.close(fd);
      throw err;
    }
  }

  private create(dir: string, name: string, flags: number, mode: number): number {
    const { path, existing } = this.forCreate(dir, name);
    if (existing !== undefined) {
      if (flags & O.EXCL) throw errno(Errno.EEXIST);
      return this.openObject(path, existing, flags & ~O.CREAT);
    }
    this.forgetNames(dir);
    const fd = this.openFile(path, undefined, flags | O.EXCL, 0o666);
    const perm = mode & 0o7777;
    if (perm !== DEFAULT_FILE_PERM) {
      try {
        this.writeMetaAt(path, this.vol.fstat(fd), { perm });
      } catch (err) {
        this.close(fd);
        this.vol.unlink(path);
        throw err;
      }
    }
    return fd;
  }

  openBeneath(rootFd: number, path: string, flags: number): number {
    const root = this.handle(rootFd);
    this.current(root);
    if (path === '') return this.openObject(root.path, this.vol.lstat(root.path), flags);
    const parts = path.split('/');
    let dir = root.path;
    for (let i = 0; i < parts.length - 1; i++) {
      const part = parts[i]!;
      if (part === '' || part === '.' || part === '..') throw errno(Errno.EINVAL, 'unnormalised path');
      const next = this.lookup(dir, part);
      if (next.st.kind !== 'dir') throw errno(next.st.kind === 'reparse' ? Errno.ELOOP : Errno.ENOTDIR);
      dir = next.path;
    }
    const last = this.lookup(dir, parts[parts.length - 1]!);
    return this.openObject(last.path, last.st, flags);
  }

  openThrough(pathFd: number, flags: number, _noatime: boolean, isDir: boolean): number {
    const h = this.handle(pathFd);
    const st = this.current(h);
    if (isDir || st.kind === 'dir') return this.openObject(h.path, st, flags & ~O.CREAT);
    if (st.kind !== 'file') throw errno(Errno.ENXIO);
    return this.openFile(h.path, st, flags & ~(O.CREAT | O.EXCL), 0);
  }

  close(fd: number): void {
    const h = this.handles.get(fd);
    if (h === undefined) return;
    this.handles.delete(fd);
    if (h.kind === 'file') this.vol.close(fd);
  }

  // --- namespace changes -----------------------------------------------------------------------------------------

  mkdirat(dirfd: number, name: string, mode: number): void {
    const dir = this.dirPath(dirfd);
    const { path, existing } = this.forCreate(dir, name);
    if (existing !== undefined) throw errno(Errno.EEXIST);
    this.forgetNames(dir);
    this.vol.mkdir(path);
    // New directories are case-sensitive like Linux ones, when the host lets the flag be set.
    if (this.vol.setCaseSensitiveDir(path)) this.caseSensitive.set(path, true);
    else this.caseFlagRefused++;
    const perm = mode & 0o7777;
    if (perm !== DEFAULT_DIR_PERM) {
      try {
        this.writeMetaAt(path, this.vol.lstat(path), { perm });
      } catch (err) {
        this.vol.rmdir(path);
        throw err;
      }
    }
  }

  symlinkat(target: string, dirfd: number, name: string): void {
    const data = Buffer.from(target, 'utf8');
    if (data.length > SYMLINK_MAX) throw errno(Errno.ENAMETOOLONG);
    const dir = this.dirPath(dirfd);
    const { path, existing } = this.forCreate(dir, name);
    if (existing !== undefined) throw errno(Errno.EEXIST);
    this.forgetNames(dir);
    // A regular file holding the target, marked as a symlink in its meta stream (QEMU's mapped models).
    const fd = this.vol.open(path, nodeOpenFlags(O.WRONLY | O.CREAT | O.EXCL), 0o666);
    try {
      fs.writeSync(fd, data, 0, data.length, 0);
      this.writeMetaAt(path, this.vol.fstat(fd), { symlink: true });
    } catch (err) {
      this.vol.close(fd);
      this.vol.unlink(path);
      throw err;
    }
    this.vol.close(fd);
  }

  readlinkat(dirfd: number, name: string): Buffer {
    let path: string;
    let st: NtfsStat;
    if (name === '') {
      const h = this.handle(dirfd);
      path = h.path;
      st = this.current(h);
    } else {
      ({ path, st } = this.lookup(this.dirPath(dirfd), name));
    }
    if (st.kind === 'reparse') return Buffer.from(this.vol.readlink(path), 'utf8');
    if (st.kind !== 'file' || !this.readMetaAt(path, st)?.symlink) throw errno(Errno.EINVAL, 'not a symlink');
    const fd = this.vol.open(path, fs.constants.O_RDONLY, 0);
    try {
      const buf = Buffer.alloc(SYMLINK_MAX);
      const n = fs.readSync(fd, buf, 0, buf.length, 0);
      return Buffer.from(buf.subarray(0, n));
    } finally {
      this.vol.close(fd);
    }
  }

  linkat(oldfd: number, oldname: string, newdirfd: number, newname: string, flags: number): void {
    if (oldname !== '' || !(flags & AT_EMPTY_PATH)) throw errno(Errno.EINVAL);
    const h = this.handle(oldfd);
    const st = h.kind === 'file' ? this.vol.fstat(oldfd) : this.current(h);
    if (st.kind === 'dir') throw errno(Errno.EPERM);
    // A hard link to a host reparse point would be a second name for a link into wherever it points.
    if (st.kind === 'reparse') throw errno(Errno.EPERM, 'hard link to a host reparse point');
    const dir = this.dirPath(newdirfd);
    const { path, existing } = this.forCreate(dir, newname);
    if (existing !== undefined) throw errno(Errno.EEXIST);
    this.forgetNames(dir);
    this.vol.link(h.path, path);
  }

  renameat2(olddirfd: number, oldname: string, newdirfd: number, newname: string, flags = 0): void {
    if (flags & ~RENAME_NOREPLACE) throw errno(Errno.EINVAL);
    const oldDir = this.dirPath(olddirfd);
    const newDir = this.dirPath(newdirfd);
    const from = this.lookup(oldDir, oldname);
    checkCreateName(newname);
    const to = this.vol.join(newDir, newname);
    let target: NtfsStat | undefined;
    try {
      target = this.vol.lstat(to);
    } catch (err) {
      if (codeOf(err) !== 'ENOENT') throw err;
    }
    if (target !== undefined && target.ino === from.st.ino && target.dev === from.st.dev) {
      // The same file: a rename to itself, or (case-insensitive directory) a change of case only.
      if (to === from.path) return;
      target = undefined;
    } else if (target !== undefined && !this.isCaseSensitive(newDir) && !this.storedNames(newDir).has(newname)) {
      throw errno(Errno.EEXIST, 'a name differing only in case exists (case-insensitive directory)');
    }
    if (target !== undefined) {
      if (flags & RENAME_NOREPLACE) throw errno(Errno.EEXIST);
      const fromDir = from.st.kind === 'dir';
      const toDir = target.kind === 'dir';
      if (fromDir && !toDir) throw errno(Errno.ENOTDIR);
      if (!fromDir && toDir) throw errno(Errno.EISDIR);
      // Windows replaces files but not directories: an empty target directory is removed first (ENOTEMPTY else).
      if (toDir) this.vol.rmdir(to);
    }
    this.forgetNames(oldDir);
    this.forgetNames(newDir);
    this.vol.rename(from.path, to);
    this.moved(from.path, to);
  }

  /** Handles at or below a renamed path follow it (as fds follow an inode on Linux). */
  private moved(from: string, to: string): void {
    for (const h of this.handles.values()) {
      if (h.path === from) h.path = to;
      else if (this.isBelow(from, h.path)) h.path = to + h.path.slice(from.length);
    }
    for (const key of [...this.caseSensitive.keys()]) {
      if (key === from || this.isBelow(from, key)) this.caseSensitive.delete(key);
    }
    for (const key of [...this.names.keys()]) if (key === from || this.isBelow(from, key)) this.names.delete(key);
  }

  private isBelow(dir: string, path: string): boolean {
    for (let p = path; ;) {
      const up = this.vol.dirname(p);
      if (up === p) return false;
      if (up === dir) return true;
      p = up;
    }
  }

  unlinkat(dirfd: number, name: string, flags: number): void {
    const dir = this.dirPath(dirfd);
    const { path, st } = this.lookup(dir, name);
    if (flags & AT_REMOVEDIR) {
      if (st.kind !== 'dir') throw errno(Errno.ENOTDIR);
      this.forgetNames(dir);
      this.vol.rmdir(path);
      this.caseSensitive.delete(path);
      this.names.delete(path);
      return;
    }
    if (st.kind === 'dir') throw errno(Errno.EISDIR);
    this.forgetNames(dir);
    this.vol.unlink(path);
  }

  // --- attributes ------------------------------------------------------------------------------------------------

  fchownat(_dirfd: number, name: string, uid: number, gid: number, flags: number): void {
    if (name === '' && !(flags & AT_EMPTY_PATH)) throw errno(Errno.ENOENT);
    // NTFS has no POSIX owner to change; chown(-1, -1) (a ctime bump) changes nothing.
    if (uid === -1 && gid === -1) return;
    throw errno(Errno.EPERM, 'NTFS objects have no POSIX owner (ownership is kept as a record)');
  }

  chmodFd(fd: number, mode: number): void {
    const h = this.handle(fd);
    const st = this.statOf(h);
    const meta = this.readMetaAt(h.path, st) ?? {};
    if (meta.symlink || st.kind === 'reparse') throw errno(Errno.EOPNOTSUPP);
    const perm = mode & 0o7777;
    const dflt = st.kind === 'dir' ? DEFAULT_DIR_PERM : DEFAULT_FILE_PERM;
    const next: NtfsMeta = { ...meta };
    if (perm === dflt) delete next.perm;
    else next.perm = perm;
    if (next.perm !== meta.perm) this.writeMetaAt(h.path, st, next);
  }

  utimensFd(fd: number, atime: TimeSpec, mtime: TimeSpec): void {
    const h = this.handle(fd);
    const st = this.statOf(h);
    this.setTimes(h.path, st, atime, mtime, false);
  }

  utimensat(dirfd: number, name: string, atime: TimeSpec, mtime: TimeSpec, flags: number): void {
    const { path, st } = this.lookup(this.dirPath(dirfd), name);
    if (st.kind === 'reparse' && !(flags & AT_SYMLINK_NOFOLLOW)) throw errno(Errno.ELOOP);
    this.setTimes(path, st, atime, mtime, st.kind === 'reparse');
  }

  private setTimes(path: string, st: NtfsStat, atime: TimeSpec, mtime: TimeSpec, nofollow: boolean): void {
    const now = Date.now() / 1000;
    const pick = (t: TimeSpec, currentNs: bigint): number =>
      t.nsec === UTIME_NOW ? now : t.nsec === UTIME_OMIT ? Number(currentNs) / 1e9 : Number(t.sec) + t.nsec / 1e9;
    this.vol.utimes(path, pick(atime, st.atimeNs), pick(mtime, st.mtimeNs), nofollow);
  }

  // --- directories -----------------------------------------------------------------------------------------------

  seekTo(fd: number, offset: bigint): void {
    const h = this.handle(fd);
    if (h.kind !== 'dir') throw errno(Errno.ENOTDIR);
    if (offset === 0n) h.entries = undefined; // a rewind sees the directory as it is now
    h.pos = offset > BigInt(Number.MAX_SAFE_INTEGER) ? Number.MAX_SAFE_INTEGER : Number(offset);
  }

  private listing(h: Handle): Array<{ name: string; ino: bigint; type: number }> {
    if (h.entries !== undefined) return h.entries;
    const self = this.current(h);
    const parentPath = this.vol.dirname(h.path);
    let parentIno = self.ino;
    try {
      parentIno = this.vol.lstat(parentPath).ino;
    } catch {
      // the root of a volume, or a parent gone: '..' shows the directory itself
    }
    const out = [
      { name: '.', ino: self.ino, type: DT_DIR },
      { name: '..', ino: parentIno, type: DT_DIR },
    ];
    for (const name of this.vol.readdir(h.path)) {
      const path = this.vol.join(h.path, name);
      let st: NtfsStat;
      try {
        st = this.vol.lstat(path);
      } catch {
        continue; // gone since the listing
      }
      let type = DT_REG;
      if (st.kind === 'dir') type = DT_DIR;
      else if (st.kind === 'reparse' || this.readMetaAt(path, st)?.symlink) type = DT_LNK;
      out.push({ name, ino: st.ino, type });
    }
    h.entries = out;
    return out;
  }

  getdents64(fd: number, buf: Buffer): number {
    const h = this.handle(fd);
    if (h.kind !== 'dir') throw errno(Errno.ENOTDIR);
    const entries = this.listing(h);
    let off = 0;
    while (h.pos < entries.length) {
      const e = entries[h.pos]!;
      const nameLen = Buffer.byteLength(e.name, 'utf8');
      const reclen = (19 + nameLen + 1 + 7) & ~7;
      if (off + reclen > buf.length) {
        if (off === 0) throw errno(Errno.EINVAL, 'getdents buffer too small');
        break;
      }
      buf.fill(0, off, off + reclen);
      buf.writeBigUInt64LE(BigInt.asUintN(64, e.ino), off);
      buf.writeBigInt64LE(BigInt(h.pos + 1), off + 8);
      buf.writeUInt16LE(reclen, off + 16);
      buf[off + 18] = e.type;
      buf.write(e.name, off + 19, 'utf8');
      off += reclen;
      h.pos++;
    }
    return off;
  }

  // --- data ------------------------------------------------------------------------------------------------------

  preadNoWaitAt(): number {
    return -1; // no non-blocking read of cached data: every Tread goes through the threadpool
  }

  preadNoWait(): number {
    return -1;
  }

  statfs(fd: number): HostStatFs {
    return this.vol.statfs(this.handle(fd).path);
  }

  defaultMetadataStore(): MetadataStore {
    return new NtfsMetadataStore(this);
  }
}

function writeTime(b: Buffer, off: number, ns: bigint): void {
  const sec = ns >= 0n ? ns / 1_000_000_000n : -((-ns + 999_999_999n) / 1_000_000_000n);
  b.writeBigInt64LE(sec, off);
  b.writeUInt32LE(Number(ns - sec * 1_000_000_000n), off + 8);
}
