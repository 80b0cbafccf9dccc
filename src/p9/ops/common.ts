// Helpers shared by the op handlers: fid creation over host handles, stat -> qid, export mutability.

import { Errno, P9Error } from '../errno.js';
import { Fid, type FileIdentity } from '../fids.js';
import { HostHandle } from '../hostfd.js';
import { openBeneath } from '../pathsafe.js';
import { qidFromStat } from '../qid.js';
import { O, close, fstatx, S_IFMT, S_IFDIR, S_IFREG, type StatX } from '../../util/syscalls.js';
import type { ExportRoot } from '../export.js';
import type { Session } from '../session.js';

export function identityOf(st: StatX): FileIdentity {
  return { devMajor: st.devMajor, devMinor: st.devMinor, ino: st.ino };
}

export function sameIdentity(a: FileIdentity, st: StatX): boolean {
  return a.ino === st.ino && a.devMajor === st.devMajor && a.devMinor === st.devMinor;
}

/** Opens `path` beneath the export root and checks it is still the same file (ESTALE otherwise). */
export function reopenVerified(exp: ExportRoot, path: string, ident: FileIdentity, flags: number): number {
  const fd = openBeneath(exp.rootFd, path, flags);
  let st: StatX;
  try {
    st = fstatx(fd);
  } catch (err) {
    close(fd);
    throw err;
  }
  if (!sameIdentity(ident, st)) {
    close(fd);
    throw new P9Error(Errno.ESTALE, 'file replaced on the host');
  }
  return fd;
}

/**
 * Creates a fid for `path` whose O_PATH handle is `fd` (already open, owned by the new fid). Reopening after LRU
 * eviction goes by the fid's current path and is verified against the identity.
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
    close(fd);
    throw err;
  }
  const ident = identityOf(st);
  const holder: { fid?: Fid } = {};
  const handle = new HostHandle(
    () => reopenVerified(exp, holder.fid!.path, holder.fid!.ident, O.PATH | O.NOFOLLOW),
    fd,
  );
  const fid = new Fid(id, exp, path, qid, ident, handle, uid);
  holder.fid = fid;
  s.fds.adopt(handle);
  return fid;
}

export function statFid(s: Session, fid: Fid): StatX {
  if (fid.open !== null) return s.fds.with(fid.open.io, fstatx);
  return s.fds.with(fid.handle, fstatx);
}

export function assertWritable(exp: ExportRoot): void {
  if (exp.readOnly) throw new P9Error(Errno.EROFS);
}

/** A fid usable for path operations (not an xattr fid). */
export function pathFid(s: Session, id: number): Fid {
  const fid = s.fid(id);
  if (fid.xattr !== null) throw new P9Error(Errno.EINVAL, 'xattr fid');
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
