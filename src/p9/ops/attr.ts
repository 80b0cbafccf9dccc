// Tgetattr, Tsetattr, Tstatfs, Treadlink. Attributes come from statx on the fid's own fd (fd-based, so an
// unlinked-but-open file keeps working). Setattr changes the exact inode through /proc/self/fd/N of its O_PATH
// handle, never by re-resolving a path that a racing rename could point at a symlink.

import fs from 'node:fs';
import { promisify } from 'node:util';
import { Errno, P9Error } from '../errno.js';
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
import { baseName, openBeneath, parentPath } from '../pathsafe.js';
import { qidFromStat } from '../qid.js';
import {
  AT_EMPTY_PATH,
  AT_FDCWD,
  AT_SYMLINK_NOFOLLOW,
  O,
  S_IFLNK,
  S_IFMT,
  UTIME_NOW,
  UTIME_OMIT,
  close,
  fchownat,
  makedev,
  procFdPath,
  readlinkat,
  utimensat,
} from '../../util/syscalls.js';
import { assertWritable, pathFid, statFid } from './common.js';
import type { Session } from '../session.js';

const fsTruncate = promisify(fs.truncate);
const fsFtruncate = promisify(fs.ftruncate);

export function getattr(s: Session, msg: Tgetattr): RMessage {
  const fid = pathFid(s, msg.fid);
  const st = statFid(s, fid);
  fid.qid = qidFromStat(fid.exp.qids, st);
  // BASIC is always filled (the kernel relies on it whatever it asked); BTIME when the filesystem has it.
  const hasBtime = (st.mask & 0x800) !== 0;
  const valid = GetattrMask.BASIC | (hasBtime ? GetattrMask.BTIME : 0n);
  return {
    type: MsgType.Rgetattr,
    valid,
    qid: fid.qid,
    mode: st.mode,
    uid: st.uid,
    gid: st.gid,
    nlink: BigInt(st.nlink),
    rdev: makedev(st.rdevMajor, st.rdevMinor),
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

/** Order as QEMU: mode, times, ownership (or a ctime-only bump), size. */
export async function setattr(s: Session, msg: Tsetattr): Promise<RMessage> {
  const fid = pathFid(s, msg.fid);
  assertWritable(fid.exp);
  const v = msg.valid;
  const isLink = (statFid(s, fid).mode & S_IFMT) === S_IFLNK;
  const pfd = s.fds.acquire(fid.handle);
  try {
    if (v & V.MODE) {
      if (isLink) throw new P9Error(Errno.EOPNOTSUPP);
      fs.chmodSync(procFdPath(pfd), msg.mode & 0o7777);
    }
    if (v & (V.ATIME | V.MTIME)) {
      const at = timeArg(v, V.ATIME, V.ATIME_SET, msg.atimeSec, msg.atimeNsec);
      const mt = timeArg(v, V.MTIME, V.MTIME_SET, msg.mtimeSec, msg.mtimeNsec);
      if (!isLink) utimensat(AT_FDCWD, procFdPath(pfd), at, mt, 0);
      else {
        // A symlink's own times: through its parent directory fd, with NOFOLLOW on the final name.
        const dfd = openBeneath(fid.exp.rootFd, parentPath(fid.path), O.PATH | O.DIRECTORY);
        try {
          utimensat(dfd, baseName(fid.path), at, mt, AT_SYMLINK_NOFOLLOW);
        } finally {
          close(dfd);
        }
      }
    }
    if (v & (V.UID | V.GID)) {
      fchownat(pfd, '', v & V.UID ? msg.uid : -1, v & V.GID ? msg.gid : -1, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
    } else if (v === V.CTIME) {
      // Only a ctime bump was asked for. QEMU uses chown(-1, -1), but chown clears setuid/setgid on regular
      // files; re-applying the current mode bumps ctime and changes nothing else.
      if (isLink) fchownat(pfd, '', -1, -1, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
      else fs.chmodSync(procFdPath(pfd), statFid(s, fid).mode & 0o7777);
    }
    if (v & V.SIZE) {
      if (isLink) throw new P9Error(Errno.EINVAL);
      const open = fid.open;
      if (open !== null && open.writable) {
        const fd = s.fds.acquire(open.io);
        try {
          await fsFtruncate(fd, Number(msg.size));
        } finally {
          s.fds.release(open.io);
        }
      } else {
        await fsTruncate(procFdPath(pfd), Number(msg.size));
      }
    }
  } finally {
    s.fds.release(fid.handle);
  }
  return { type: MsgType.Rsetattr };
}

export function statfs(s: Session, msg: Tstatfs): RMessage {
  const fid = pathFid(s, msg.fid);
  const isLink = (fid.qid.type & 0x02) !== 0;
  // Through the fid's own inode; a symlink's magic link could lead outside, so those report the export root.
  const st = isLink
    ? fs.statfsSync(procFdPath(fid.exp.rootFd), { bigint: true })
    : s.fds.with(fid.handle, (pfd) => fs.statfsSync(procFdPath(pfd), { bigint: true }));
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
  const target = s.fds.with(fid.handle, (pfd) => readlinkat(pfd, ''));
  return { type: MsgType.Rreadlink, target: target.toString('utf8') };
}
