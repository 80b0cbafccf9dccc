// Tclunk and fid teardown: a fid is gone after Tclunk whatever the outcome; its locks are released, a pending
// xattr is committed (its error becomes the Rclunk error), and its share of host fds is given back (closed once
// no other fid of the inode needs them and no operation is using them).

import { identityKey, type Fid } from '../fids.js';
import { MsgType, type Tclunk } from '../messages.js';
import type { OpResult } from './result.js';
import { commitXattr } from '../xattr.js';
import { withPathFd } from './common.js';
import type { Session } from '../session.js';

/** Releases everything a fid holds. With commit=false (disconnect, reset) a pending xattr is discarded. */
export function releaseFid(s: Session, fid: Fid, commit: boolean): void {
  let failure: unknown;
  if (fid.lockOwners !== null) {
    const key = identityKey(fid.ident);
    for (const owner of fid.lockOwners) fid.exp.locks.releaseOwner(key, owner);
    fid.lockOwners = null;
  }
  const x = fid.xattr;
  if (x !== null) {
    s.xattrBytes -= x.cost;
    if (x.kind === 'write') {
      s.pendingXattrs--;
      if (commit) {
        try {
          withPathFd(s, fid, (fd) => commitXattr(x, fid.exp.policy, { fd, st: s.fs.fstatx(fd) }));
        } catch (err) {
          failure = err;
        }
      }
    }
  }
  fid.xattr = null;
  if (fid.open !== null) s.fds.closeSlot(fid.open.slot);
  fid.open = null;
  if (fid.inode !== null) s.fds.unref(fid.inode);
  if (failure !== undefined) throw failure;
}

export function clunk(s: Session, msg: Tclunk): OpResult {
  const fid = s.fids.take(msg.fid);
  releaseFid(s, fid, true);
  // Half of every lookup (walk + clunk): the empty reply goes straight into the reply arena.
  return s.endReply(s.beginReply(MsgType.Rclunk, 0));
}
