// Twalk: clone (no names), or walk up to 16 names from a directory fid. Each step opens the next component
// with openat(O_PATH|O_NOFOLLOW) on the previous component's fd, so a host symlink is never followed (walking
// *through* a symlink fails with ENOTDIR; the guest resolves links itself via Treadlink). `..` is lexical and
// clamped at the export root. A walk that fails after the first name answers the qids walked so far and does
// NOT create newfid.
//
// Hot path: a clone costs no syscall (the new fid shares the source's inode and fds); each intermediate step is
// one openat and one statx, the last one statx (its fd is opened when first needed); qids are written straight
// into the Rwalk in the reply arena.

import { Errno, P9Error } from '../errno.js';
import { Fid } from '../fids.js';
import { MAXWELEM, MsgType, type Qid, type Twalk } from '../messages.js';
import { checkWalkName, joinPath, parentPath } from '../pathsafe.js';
import { writeQidRaw } from '../qid.js';
import { r32, w16 } from '../codec.js';
import { AT_SYMLINK_NOFOLLOW, O, STATX_OFF } from '../../util/syscalls.js';
import { makeFidWith, pathFid } from './common.js';
import type { OpResult } from './result.js';
import type { Session } from '../session.js';

export function walk(s: Session, msg: Twalk): OpResult {
  const names = msg.names;
  if (names.length > MAXWELEM) throw new P9Error(Errno.EINVAL, 'too many walk names');
  const src = pathFid(s, msg.fid);
  if (msg.newfid === msg.fid) {
    if (src.open !== null) throw new P9Error(Errno.EINVAL, 'walk of an open fid onto itself');
  } else {
    s.fids.checkFree(msg.newfid);
  }
  const exp = src.exp;
  const inode = src.inode!;
  const fs = s.fs;

  if (names.length === 0) {
    // A clone names the same inode: it shares the source's fds (a walk of a fid onto itself changes nothing).
    if (msg.newfid !== msg.fid) {
      const ref = s.fds.ref(inode.key, inode.ident, inode.rootFd, -1);
      s.fids.add(new Fid(msg.newfid, exp, src.path, src.qid, src.ident, ref, src.uid));
    }
    const p = s.beginReply(MsgType.Rwalk, 2);
    w16(s.out.buf, p, 0);
    return s.endReply(p + 2);
  }

  const p = s.beginReply(MsgType.Rwalk, 2 + 13 * names.length);
  const out = s.out.buf;
  let q = p + 2;
  let path = src.path;
  const srcSlot = inode.pathSlot;
  const srcFd = s.fds.acquire(srcSlot, src.path);
  let fd = srcFd; // borrowed from src until the first step succeeds, then owned here
  const last = names.length - 1;
  try {
    for (let i = 0; i <= last; i++) {
      const name = names[i]!;
      let next: number;
      let nextPath: string;
      try {
        checkWalkName(name);
        if (name === '..') {
          nextPath = parentPath(path);
          next = fs.openBeneath(exp.rootFd, nextPath, O.PATH | O.DIRECTORY);
        } else if (i === last && name !== '.') {
          // The last name is looked at, not opened (lstat-like, never followed): the new fid's O_PATH fd is
          // opened on its first use, by path and checked against this identity (ESTALE if replaced), or shared
          // with another fid of the inode. A walk that ends in a clunk costs one statx.
          nextPath = joinPath(path, name);
          fs.statxRaw(fd, name, AT_SYMLINK_NOFOLLOW);
          next = -1;
        } else {
          nextPath = name === '.' ? path : joinPath(path, name);
          next = fs.openat(fd, name, O.PATH | O.NOFOLLOW);
        }
      } catch (err) {
        if (i === 0) throw err;
        if (fd !== srcFd) fs.close(fd);
        w16(out, p, i);
        return s.endReply(q);
      }
      if (fd !== srcFd) fs.close(fd);
      fd = next;
      path = nextPath;
      writeQidRaw(exp.qids, out, q, fd < 0 ? fs.statxBuf : fs.fstatxRaw(fd));
      q += 13;
    }
  } catch (err) {
    if (fd !== srcFd && fd >= 0) fs.close(fd);
    throw err;
  } finally {
    s.fds.release(srcSlot);
  }
  // The last step's statx is still in the raw buffer, and its qid in the reply.
  const b = fs.statxBuf;
  const ident = {
    devMajor: r32(b, STATX_OFF.devMajor),
    devMinor: r32(b, STATX_OFF.devMinor),
    ino: b.readBigUInt64LE(STATX_OFF.ino),
  };
  const qid: Qid = { type: out[q - 13]!, version: r32(out, q - 12), path: out.readBigUInt64LE(q - 8) };
  w16(out, p, names.length);
  if (msg.newfid === msg.fid) {
    // Walking a fid onto itself moves it: the new inode is referenced before the old one is let go.
    const moved = makeFidWith(s, msg.newfid, exp, path, fd, ident, qid, src.uid);
    const old = s.fids.take(msg.fid);
    s.fids.add(moved);
    s.fds.unref(old.inode!);
  } else {
    s.fids.add(makeFidWith(s, msg.newfid, exp, path, fd, ident, qid, src.uid));
  }
  return s.endReply(q);
}
