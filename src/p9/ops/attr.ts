// Tgetattr, Tsetattr, Tstatfs, Treadlink. Attributes come from statx on the fid's own fd (fd-based, so an
// unlinked-but-open file keeps working), laid over with the guest's record (security.ts). Setattr changes the
// exact inode through /proc/self/fd/N of its O_PATH handle, never by re-resolving a path that a racing rename
// could point at a symlink; mode and ownership changes go through the export's policy.

import fs from 'node:fs';
import { promisify } from 'node:util';
import { Errno, P9Error } from '../errno.js';
import type { Fid } from '../fids.js';
import {
  GetattrMask,
  MsgType,
  SetattrValid as V,
  type RMessage,
  type Tgetattr,
  type Treadlink,
  type Tsetattr,
  type Tstatfs,
} from '../messages.js';
import { baseName, parentPath } from '../pathsafe.js';
import { qidFromStat } from '../qid.js';
import {
  AT_EMPTY_PATH,
  AT_SYMLINK_NOFOLLOW,
  O,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  UTIME_NOW,
  UTIME_OMIT,
  STATX_OFF,
  makedev,
} from '../../util/syscalls.js';
import { assertWritable, linkParentOf, pathFid, sameIdentityRaw, viewFid, withPathFd } from './common.js';
import { copy8, r16, r32, w32 } from '../codec.js';
import { writeQidRaw } from '../qid.js';
import type { OpResult } from './result.js';
import type { Session } from '../session.js';

const fsFtruncate = promisify(fs.ftruncate);

/** Rgetattr body size: valid[8] qid[13] mode uid gid[4 each] 13 u64 fields. */
const RGETATTR_BODY = 153;
const STATX_BTIME = 0x800;

/**
 * Tgetattr. Hot path: one statx into the raw buffer and the reply written from it into the reply arena, when the
 * guest's view is the host's (no record to consult: security.ts mayHaveRecord). Otherwise the full view.
 */
export function getattr(s: Session, msg: Tgetattr): OpResult {
  const fid = pathFid(s, msg.fid);
  const inode = fid.inode!;
  if (fid.open === null && inode.pathSlot.fd < 0) {
    // A fid fresh from Twalk has no fd yet: a statx of its name in its directory (an fd another fid holds, one
    // name, never followed) answers if it still names the walked file, as a path-based server's lstat would,
    // without opening an fd only to close it at the Tclunk that follows a lookup.
    const dfd = s.parentDirFd(inode.rootFd, fid.path);
    if (dfd >= 0) {
      let b: Buffer | undefined;
      try {
        b = s.fs.statxRaw(dfd, baseName(fid.path), AT_SYMLINK_NOFOLLOW);
      } catch {
        // gone or unreachable: the general path below says why
      }
      if (b !== undefined && sameIdentityRaw(fid.ident, b) && !fid.exp.policy.mayHaveRecord(r16(b, STATX_OFF.mode))) {
        return rgetattrFromRaw(s, fid, b);
      }
    }
  }
  const slot = fid.open !== null ? fid.open.slot : inode.pathSlot;
  const fd = s.fds.acquire(slot, fid.path);
  try {
    // An fd opened just now (a fid fresh from Twalk) was checked with a statx of its own: that one answers.
    const b = s.fds.freshStat ? s.fs.statxBuf : s.fs.fstatxRaw(fd);
    const mode = r16(b, STATX_OFF.mode);
    if (!fid.exp.policy.mayHaveRecord(mode)) return rgetattrFromRaw(s, fid, b);
  } finally {
    s.fds.release(slot);
  }
  return getattrWithView(s, fid);
}

function rgetattrFromRaw(s: Session, fid: Fid, b: Buffer): OpResult {
  const p = s.beginReply(MsgType.Rgetattr, RGETATTR_BODY);
  const o = s.out.buf;
  const hasBtime = (b[STATX_OFF.mask + 1]! & (STATX_BTIME >> 8)) !== 0;
  w32(o, p, hasBtime ? 0x7ff | STATX_BTIME : 0x7ff);
  w32(o, p + 4, 0);
  const qtype = writeQidRaw(fid.exp.qids, o, p + 8, b);
  const version = r32(o, p + 9);
  if (fid.qid.version !== version || fid.qid.type !== qtype) fid.qid = { type: qtype, version, path: fid.qid.path };
  w32(o, p + 21, r16(b, STATX_OFF.mode));
  w32(o, p + 25, r32(b, STATX_OFF.uid));
  w32(o, p + 29, r32(b, STATX_OFF.gid));
  w32(o, p + 33, r32(b, STATX_OFF.nlink));
  w32(o, p + 37, 0);
  writeDev(o, p + 41, r32(b, STATX_OFF.rdevMajor), r32(b, STATX_OFF.rdevMinor));
  copy8(o, p + 49, b, STATX_OFF.size);
  w32(o, p + 57, r32(b, STATX_OFF.blksize));
  w32(o, p + 61, 0);
  copy8(o, p + 65, b, STATX_OFF.blocks);
  copy8(o, p + 73, b, STATX_OFF.atime);
  w32(o, p + 81, r32(b, STATX_OFF.atime + 8));
  w32(o, p + 85, 0);
  copy8(o, p + 89, b, STATX_OFF.mtime);
  w32(o, p + 97, r32(b, STATX_OFF.mtime + 8));
  w32(o, p + 101, 0);
  copy8(o, p + 105, b, STATX_OFF.ctime);
  w32(o, p + 113, r32(b, STATX_OFF.ctime + 8));
  w32(o, p + 117, 0);
  if (hasBtime) {
    copy8(o, p + 121, b, STATX_OFF.btime);
    w32(o, p + 129, r32(b, STATX_OFF.btime + 8));
  } else {
    o.fill(0, p + 121, p + 133);
  }
  o.fill(0, p + 133, p + RGETATTR_BODY);
  return s.endReply(p + RGETATTR_BODY);
}

/** makedev() of (major, minor) as a u64 at o[off] (glibc's encoding, as syscalls.makedev). */
function writeDev(o: Buffer, off: number, major: number, minor: number): void {
  if (major === 0 && minor === 0) {
    w32(o, off, 0);
    w32(o, off + 4, 0);
    return;
  }
  w32(o, off, (((major & 0xfff) << 8) | (minor & 0xff) | ((minor & 0xfff00) << 12)) >>> 0);
  w32(o, off + 4, ((major & 0xfffff000) | (minor >>> 20)) >>> 0);
}

function getattrWithView(s: Session, fid: Fid): RMessage {
  const { st, view } = viewFid(s, fid);
  fid.qid = qidFromStat(fid.exp.qids, st);
  // BASIC is always filled (the kernel relies on it whatever it asked); BTIME when the filesystem has it.
  const hasBtime = (st.mask & 0x800) !== 0;
  const valid = GetattrMask.BASIC | (hasBtime ? GetattrMask.BTIME : 0n);
  return {
    type: MsgType.Rgetattr,
    valid,
    qid: fid.qid,
    mode: view.mode,
    uid: view.uid,
    gid: view.gid,
    nlink: BigInt(st.nlink),
    rdev: makedev(view.rdevMajor, view.rdevMinor),
    size: st.size,
    blksize: BigInt(st.blksize),
    blocks: st.blocks,
    atimeSec: st.atimeSec,
    atimeNsec: BigInt(st.atimeNsec),
    mtimeSec: st.mtimeSec,
    mtimeNsec: BigInt(st.mtimeNsec),
    ctimeSec: st.ctimeSec,
    ctimeNsec: BigInt(st.ctimeNsec),
    btimeSec: hasBtime ? st.btimeSec : 0n,
    btimeNsec: hasBtime ? BigInt(st.btimeNsec) : 0n,
    gen: 0n,
    dataVersion: 0n,
  };
}

function timeArg(valid: number, bit: number, setBit: number, sec: bigint, nsec: bigint): { sec: bigint; nsec: number } {
  if (!(valid & bit)) return { sec: 0n, nsec: UTIME_OMIT };
  if (!(valid & setBit)) return { sec: 0n, nsec: UTIME_NOW };
  return { sec: BigInt.asIntN(64, sec), nsec: Number(nsec) };
}

/** Order: mode and ownership (one policy step), times, size. */
export async function setattr(s: Session, msg: Tsetattr): Promise<RMessage> {
  const fid = pathFid(s, msg.fid);
  assertWritable(fid.exp);
  const v = msg.valid;
  const slot = fid.inode!.pathSlot;
  const pfd = s.fds.acquire(slot, fid.path);
  try {
    const st = s.fs.fstatx(pfd);
    const fmt = st.mode & S_IFMT;
    const isLink = fmt === S_IFLNK;
    if (v & (V.MODE | V.UID | V.GID)) {
      const policy = fid.exp.policy;
      const obj = { fd: pfd, st };
      const parent = linkParentOf(fid);
      const current = policy.view(obj, parent);
      policy.change(
        obj,
        current,
        {
          ...(v & V.MODE ? { mode: msg.mode } : {}),
          ...(v & V.UID ? { uid: msg.uid } : {}),
          ...(v & V.GID ? { gid: msg.gid } : {}),
        },
        parent,
      );
    }
    if (v & (V.ATIME | V.MTIME)) {
      const at = timeArg(v, V.ATIME, V.ATIME_SET, msg.atimeSec, msg.atimeNsec);
      const mt = timeArg(v, V.MTIME, V.MTIME_SET, msg.mtimeSec, msg.mtimeNsec);
      if (!isLink) s.fs.utimensFd(pfd, at, mt);
      else {
        // A symlink's own times: through its parent directory fd, with NOFOLLOW on the final name.
        const dfd = s.fs.openBeneath(fid.exp.rootFd, parentPath(fid.path), O.PATH | O.DIRECTORY);
        try {
          s.fs.utimensat(dfd, baseName(fid.path), at, mt, AT_SYMLINK_NOFOLLOW);
        } finally {
          s.fs.close(dfd);
        }
      }
    } else if (v === V.CTIME) {
      // Only a ctime bump was asked for. chown(-1, -1) would clear setuid/setgid of a regular file; re-applying
      // the current mode bumps ctime and changes nothing else (host special files and symlinks: chown(-1, -1)).
      if (fmt === S_IFREG || fmt === S_IFDIR) s.fs.chmodFd(pfd, st.mode & 0o7777);
      else s.fs.fchownat(pfd, '', -1, -1, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
    }
    if (v & V.SIZE) await truncate(s, fid, pfd, fmt, msg.size);
  } finally {
    s.fds.release(slot);
  }
  return { type: MsgType.Rsetattr };
}

/**
 * Truncates a regular file. The type is checked on the very inode the fd names (an O_PATH fd cannot change
 * type), so the server never opens a FIFO or device node, whoever made it (EINVAL, as truncate(2) answers).
 */
async function truncate(s: Session, fid: Fid, pfd: number, fmt: number, size: bigint): Promise<void> {
  if (fmt === S_IFDIR) throw new P9Error(Errno.EISDIR);
  if (fmt !== S_IFREG) throw new P9Error(Errno.EINVAL, 'truncate of a special file');
  if (size > BigInt(Number.MAX_SAFE_INTEGER)) throw new P9Error(Errno.EFBIG);
  const open = fid.open;
  if (open !== null && open.writable) {
    const fd = s.fds.acquire(open.slot, fid.path);
    try {
      await fsFtruncate(fd, Number(size));
    } finally {
      s.fds.release(open.slot);
    }
    return;
  }
  const fd = s.fs.openThrough(pfd, O.WRONLY | O.NONBLOCK, false, false);
  try {
    await fsFtruncate(fd, Number(size));
  } finally {
    s.fs.close(fd);
  }
}

export function statfs(s: Session, msg: Tstatfs): RMessage {
  const fid = pathFid(s, msg.fid);
  const isLink = (fid.qid.type & 0x02) !== 0;
  // Through the fid's own inode; a symlink's magic link could lead outside, so those report the export root.
  const st = isLink ? s.fs.statfs(fid.exp.rootFd) : withPathFd(s, fid, (pfd) => s.fs.statfs(pfd));
  const dev = BigInt(fid.ident.devMajor) * 0x100000000n + BigInt(fid.ident.devMinor);
  return {
    type: MsgType.Rstatfs,
    fsType: Number(BigInt.asUintN(32, st.type)),
    bsize: Number(st.bsize),
    blocks: st.blocks,
    bfree: st.bfree,
    bavail: st.bavail,
    files: st.files,
    ffree: st.ffree,
    fsid: dev,
    namelen: 255,
  };
}

export function readlink(s: Session, msg: Treadlink): RMessage {
  const fid = pathFid(s, msg.fid);
  if ((fid.qid.type & 0x02) === 0) throw new P9Error(Errno.EINVAL, 'not a symlink');
  const target = withPathFd(s, fid, (pfd) => s.fs.readlinkat(pfd, ''));
  return { type: MsgType.Rreadlink, target: target.toString('utf8') };
}
