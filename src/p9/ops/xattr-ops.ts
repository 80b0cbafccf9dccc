// Txattrwalk and Txattrcreate (value semantics in ../xattr.ts, name mapping in ../metadata-xattr.ts, who may
// see and set what in ../security.ts). Bytes held by xattr fids are bounded per connection (maxXattrBytes).

import { Errno, P9Error } from '../errno.js';
import { Fid } from '../fids.js';
import { MsgType, type RMessage, type Txattrcreate, type Txattrwalk } from '../messages.js';
import { XATTR_FID_OVERHEAD } from '../options.js';
import { readState, startXattrWrite } from '../xattr.js';
import { assertWritable, pathFid, withPathFd } from './common.js';
import type { Session } from '../session.js';

function reserveXattrBytes(s: Session, cost: number): void {
  if (s.xattrBytes + cost > s.limits.maxXattrBytes)
    throw new P9Error(Errno.ENOSPC, 'xattr bytes of the connection exhausted');
}

export function xattrwalk(s: Session, msg: Txattrwalk): RMessage {
  const fid = pathFid(s, msg.fid);
  s.fids.checkFree(msg.newfid);
  if (msg.name.includes('\0')) throw new P9Error(Errno.EINVAL);
  // Even an empty value costs the fid's overhead: refuse before reading anything.
  reserveXattrBytes(s, XATTR_FID_OVERHEAD);
  const policy = fid.exp.policy;
  const value = withPathFd(s, fid, (fd) => {
    const obj = { fd, st: s.fs.fstatx(fd) };
    if (msg.name === '') return policy.filterXattrList(obj.st, policy.store.listXattrs(obj, policy.xattrView));
    policy.checkXattrRead(obj.st, msg.name);
    return policy.store.getXattr(obj, msg.name, policy.xattrView);
  });
  // The value is captured now; the xattr fid only reads it and holds no host fd.
  const state = readState(value);
  reserveXattrBytes(s, state.cost);
  const xfid = new Fid(msg.newfid, fid.exp, fid.path, fid.qid, fid.ident, null, fid.uid);
  xfid.xattr = state;
  s.fids.add(xfid);
  s.xattrBytes += state.cost;
  return { type: MsgType.Rxattrwalk, size: BigInt(value.length) };
}

export function xattrcreate(s: Session, msg: Txattrcreate): RMessage {
  const fid = pathFid(s, msg.fid);
  if (fid.open !== null) throw new P9Error(Errno.EINVAL, 'fid is open');
  assertWritable(fid.exp);
  if (s.pendingXattrs >= s.limits.maxPendingXattrs) throw new P9Error(Errno.ENOSPC, 'too many pending xattrs');
  const state = startXattrWrite(msg.name, msg.attrSize, msg.flags);
  reserveXattrBytes(s, state.cost);
  fid.xattr = state;
  s.pendingXattrs++;
  s.xattrBytes += state.cost;
  return { type: MsgType.Rxattrcreate };
}
