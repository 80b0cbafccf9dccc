// Tclunk and fid teardown: a fid is gone after Tclunk whatever the outcome; its locks are released, a pending
// xattr is committed (its error becomes the Rclunk error), and its host fds are closed once idle.

import { identityKey, type Fid } from '../fids.js';
import { MsgType, type RMessage, type Tclunk } from '../messages.js';
import { baseName, openBeneath, parentPath } from '../pathsafe.js';
import { commitXattr, xattrPath } from '../xattr.js';
import { O, close } from '../../util/syscalls.js';
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
  if (x !== null && x.kind === 'write') {
    s.pendingXattrs--;
    if (commit) {
      try {
        withXattrPath(fid, (p) => commitXattr(x, p));
      } catch (err) {
        failure = err;
      }
    }
  }
  fid.xattr = null;
  fid.dir = null;
  if (fid.open !== null) s.fds.dispose(fid.open.io);
  fid.open = null;
  s.fds.dispose(fid.handle);
  if (failure !== undefined) throw failure;
}

/** Runs `fn` with an l*xattr path naming the fid's file through its parent directory's fd. */
export function withXattrPath<T>(fid: Fid, fn: (path: string) => T): T {
  const dirFd = openBeneath(fid.exp.rootFd, parentPath(fid.path), O.PATH | O.DIRECTORY);
  try {
    return fn(xattrPath(dirFd, fid.path === '' ? '.' : baseName(fid.path)));
  } finally {
    close(dirFd);
  }
}

export function clunk(s: Session, msg: Tclunk): RMessage {
  const fid = s.fids.take(msg.fid);
  releaseFid(s, fid, true);
  return { type: MsgType.Rclunk };
}
