// Twalk: clone (no names), or walk up to 16 names from a directory fid. Each step opens the next component
// with openat(O_PATH|O_NOFOLLOW) on the previous component's fd, so a host symlink is never followed (walking
// *through* a symlink fails with ENOTDIR; the guest resolves links itself via Treadlink). `..` is lexical and
// clamped at the export root. A walk that fails after the first name answers the qids walked so far and does
// NOT create newfid.

import { Errno, P9Error } from '../errno.js';
import { MAXWELEM, MsgType, type Qid, type RMessage, type Twalk } from '../messages.js';
import { checkWalkName, joinPath, openBeneath, parentPath } from '../pathsafe.js';
import { qidFromStat } from '../qid.js';
import { O, close, dupfd, fstatx, openat, type StatX } from '../../util/syscalls.js';
import { makeFid, pathFid } from './common.js';
import type { Session } from '../session.js';

export function walk(s: Session, msg: Twalk): RMessage {
  if (msg.names.length > MAXWELEM) throw new P9Error(Errno.EINVAL, 'too many walk names');
  const src = pathFid(s, msg.fid);
  if (msg.newfid === msg.fid) {
    if (src.open !== null) throw new P9Error(Errno.EINVAL, 'walk of an open fid onto itself');
  } else {
    s.fids.checkFree(msg.newfid);
  }
  const exp = src.exp;

  let path = src.path;
  let st: StatX | undefined;
  const qids: Qid[] = [];
  const srcSlot = src.inode!.pathSlot;
  const srcFd = s.fds.acquire(srcSlot, src.path);
  let fd = srcFd; // borrowed from src until the first step succeeds, then owned here
  try {
    for (let i = 0; i < msg.names.length; i++) {
      const name = msg.names[i]!;
      let next: number;
      let nextPath: string;
      try {
        checkWalkName(name);
        if (name === '..') {
          nextPath = parentPath(path);
          next = openBeneath(exp.rootFd, nextPath, O.PATH | O.DIRECTORY);
        } else {
          nextPath = name === '.' ? path : joinPath(path, name);
          next = openat(fd, name, O.PATH | O.NOFOLLOW);
        }
      } catch (err) {
        if (i === 0) throw err;
        if (fd !== srcFd) close(fd);
        return { type: MsgType.Rwalk, qids };
      }
      if (fd !== srcFd) close(fd);
      fd = next;
      path = nextPath;
      st = fstatx(fd);
      qids.push(qidFromStat(exp.qids, st));
    }
    if (fd === srcFd) {
      fd = dupfd(srcFd);
      st = fstatx(fd);
    }
  } catch (err) {
    if (fd !== srcFd) close(fd);
    throw err;
  } finally {
    s.fds.release(srcSlot);
  }

  if (msg.newfid === msg.fid) {
    // Walking a fid onto itself moves it: the new inode is referenced before the old one is let go.
    const moved = makeFid(s, msg.newfid, exp, path, fd, st!, src.uid);
    const old = s.fids.take(msg.fid);
    s.fids.add(moved);
    s.fds.unref(old.inode!);
  } else {
    s.fids.add(makeFid(s, msg.newfid, exp, path, fd, st!, src.uid));
  }
  return { type: MsgType.Rwalk, qids };
}
