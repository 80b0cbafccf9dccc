// Helpers shared by the op handlers: fid creation over host inodes, stat -> qid, the guest's view of a fid's
// attributes, export mutability.

import { Errno, P9Error } from '../errno.js';
import { Fid, identityKey, type FileIdentity } from '../fids.js';
import type { HostObject } from '../metadata.js';
import type { Qid } from '../messages.js';
import { r32 } from '../codec.js';
import { baseName, parentPath } from '../pathsafe.js';
import { qidFromStat } from '../qid.js';
import type { GuestStat, LinkParent } from '../security.js';
import { O, STATX_OFF, S_IFMT, S_IFDIR, S_IFREG, type StatX } from '../../util/syscalls.js';
import type { HostFs } from '../hostfs.js';
import type { ExportRoot } from '../export.js';
import type { Session } from '../session.js';

export function identityOf(st: StatX): FileIdentity {
  return { devMajor: st.devMajor, devMinor: st.devMinor, ino: st.ino };
}

export function sameIdentity(a: FileIdentity, st: StatX): boolean {
  return a.ino === st.ino && a.devMajor === st.devMajor && a.devMinor === st.devMinor;
}

/** sameIdentity for a raw struct statx (syscalls.statxBuf layout). */
export function sameIdentityRaw(a: FileIdentity, b: Buffer): boolean {
  return (
    r32(b, STATX_OFF.devMajor) === a.devMajor &&
    r32(b, STATX_OFF.devMinor) === a.devMinor &&
    b.readBigUInt64LE(STATX_OFF.ino) === a.ino
  );
}

/**
 * Opens `path` beneath the export root (or `parentFd`, an open O_PATH fd of its directory) and checks it is still
 * the same file (ESTALE otherwise). Leaves the fd's
 * statx in syscalls.statxBuf (HostFdTable.freshStat lets a Tgetattr use it instead of asking again).
 */
export function reopenVerified(
  fs: HostFs,
  rootFd: number,
  path: string,
  ident: FileIdentity,
  flags: number,
  parentFd = -1,
): number {
  // Through an open fd of the parent directory when the caller has one (one name, as a walk step), else beneath
  // the root (openat2 resolves the whole path).
  const fd =
    parentFd >= 0 ? fs.openat(parentFd, baseName(path), flags | O.NOFOLLOW) : fs.openBeneath(rootFd, path, flags);
  let same: boolean;
  try {
    same = sameIdentityRaw(ident, fs.fstatxRaw(fd));
  } catch (err) {
    fs.close(fd);
    throw err;
  }
  if (!same) {
    fs.close(fd);
    throw new P9Error(Errno.ESTALE, 'file replaced on the host');
  }
  return fd;
}

/**
 * Creates a fid for `path` whose O_PATH handle `fd` was just opened (the connection's fd table keeps it or
 * closes it; the inode is shared with other fids naming it), or -1: opened by path when first needed.
 */
export function makeFid(
  s: Session,
  id: number,
  exp: ExportRoot,
  path: string,
  fd: number,
  st: StatX,
  uid: number | undefined,
): Fid {
  let qid;
  try {
    qid = qidFromStat(exp.qids, st);
  } catch (err) {
    if (fd >= 0) s.fs.close(fd);
    throw err;
  }
  return makeFidWith(s, id, exp, path, fd, identityOf(st), qid, uid);
}

/** makeFid with the identity and qid already known. */
export function makeFidWith(
  s: Session,
  id: number,
  exp: ExportRoot,
  path: string,
  fd: number,
  ident: FileIdentity,
  qid: Qid,
  uid: number | undefined,
): Fid {
  const inode = s.fds.ref(`${exp.name}\0${identityKey(ident)}`, ident, exp.rootFd, fd);
  return new Fid(id, exp, path, qid, ident, inode, uid);
}

/** Runs fn with the fid's O_PATH fd (reopened if it was closed). */
export function withPathFd<T>(s: Session, fid: Fid, fn: (fd: number) => T): T {
  if (fid.inode === null) throw new P9Error(Errno.EINVAL, 'xattr fid');
  return s.fds.with(fid.inode.pathSlot, fid.path, fn);
}

export function statFid(s: Session, fid: Fid): StatX {
  if (fid.open !== null) return s.fds.with(fid.open.slot, fid.path, (fd) => s.fs.fstatx(fd));
  return withPathFd(s, fid, (fd) => s.fs.fstatx(fd));
}

/** The directory holding a fid's entry, opened on demand (symlink records live there). */
export function linkParentOf(fid: Fid): LinkParent {
  const fs = fid.exp.fs;
  return () => {
    const fd = fs.openBeneath(fid.exp.rootFd, parentPath(fid.path), O.PATH | O.DIRECTORY);
    let st: StatX;
    try {
      st = fs.fstatx(fd);
    } catch (err) {
      fs.close(fd);
      throw err;
    }
    return { dir: { fd, st }, name: baseName(fid.path), done: () => fs.close(fd) };
  };
}

/**
 * Host statx and the guest's view of a fid's object, in one visit of one of its fds (the open-file fd when the
 * fid is open: it keeps working for a file unlinked behind the server's back).
 */
export function viewFid(s: Session, fid: Fid): { st: StatX; view: GuestStat } {
  const look = (fd: number): { st: StatX; view: GuestStat } => {
    const obj: HostObject = { fd, st: s.fs.fstatx(fd) };
    return { st: obj.st, view: fid.exp.policy.view(obj, linkParentOf(fid)) };
  };
  if (fid.open !== null) return s.fds.with(fid.open.slot, fid.path, look);
  return withPathFd(s, fid, look);
}

export function assertWritable(exp: ExportRoot): void {
  if (exp.readOnly) throw new P9Error(Errno.EROFS);
}

/** A fid usable for path operations (not an xattr fid). */
export function pathFid(s: Session, id: number): Fid {
  const fid = s.fid(id);
  if (fid.xattr !== null || fid.inode === null) throw new P9Error(Errno.EINVAL, 'xattr fid');
  return fid;
}

export function dirFid(s: Session, id: number): Fid {
  const fid = pathFid(s, id);
  if (!fid.isDir) throw new P9Error(Errno.ENOTDIR);
  return fid;
}

/** Regular files and directories only: host devices, fifos and sockets are never opened (CVE-2023-2861). */
export function assertOpenableType(st: StatX): void {
  const fmt = st.mode & S_IFMT;
  if (fmt !== S_IFREG && fmt !== S_IFDIR) throw new P9Error(Errno.ENXIO, 'special file');
}

/** iounit: msize minus the I/O header, rounded down to whole 4 KiB pages (QEMU aligns to st_blksize). */
export function iounit(s: Session): number {
  const max = s.maxPayload;
  return max >= 4096 ? max - (max % 4096) : max;
}
