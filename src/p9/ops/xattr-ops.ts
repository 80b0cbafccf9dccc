// Txattrwalk and Txattrcreate (value semantics in ../xattr.ts).

import { Errno, P9Error } from '../errno.js';
import { Fid } from '../fids.js';
import { HostHandle } from '../hostfd.js';
import { MsgType, type RMessage, type Txattrcreate, type Txattrwalk } from '../messages.js';
import { O } from '../../util/syscalls.js';
import { readXattr, startXattrWrite } from '../xattr.js';
import { assertWritable, pathFid, reopenVerified } from './common.js';
import { withXattrPath } from './clunk.js';
import type { Session } from '../session.js';

export function xattrwalk(s: Session, msg: Txattrwalk): RMessage {
  const fid = pathFid(s, msg.fid);
  s.fids.checkFree(msg.newfid);
  if (msg.name.includes('\0')) throw new P9Error(Errno.EINVAL);
  const value = withXattrPath(fid, (p) => readXattr(p, msg.name));
  // The value is captured now; the xattr fid only reads it, so its host handle stays closed unless needed.
  const exp = fid.exp;
  const path = fid.path;
  const ident = fid.ident;
  const handle = new HostHandle(() => reopenVerified(exp, path, ident, O.PATH | O.NOFOLLOW));
  const xfid = new Fid(msg.newfid, exp, path, fid.qid, ident, handle, fid.uid);
  xfid.xattr = { kind: 'read', value };
  s.fids.add(xfid);
  return { type: MsgType.Rxattrwalk, size: BigInt(value.length) };
}

export function xattrcreate(s: Session, msg: Txattrcreate): RMessage {
  const fid = pathFid(s, msg.fid);
  if (fid.open !== null) throw new P9Error(Errno.EINVAL, 'fid is open');
  assertWritable(fid.exp);
  if (s.pendingXattrs >= s.limits.maxPendingXattrs) throw new P9Error(Errno.ENOSPC, 'too many pending xattrs');
  fid.xattr = startXattrWrite(msg.name, msg.attrSize, msg.flags);
  s.pendingXattrs++;
  return { type: MsgType.Rxattrcreate };
}
