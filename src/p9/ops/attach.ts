// Tauth and Tattach. No authentication is needed (the transport authenticates the peer), which Tauth reports
// as ENOENT, the answer diod's clients take as "auth not required".
//
// Identity: the server runs with its own credentials (root in production) and does not switch per request;
// the guest kernel checks permissions (access=client). n_uname is remembered per fid tree and becomes the
// owner of files the guest creates (best effort chown), with the gid the create message carries.

import { Errno, P9Error } from '../errno.js';
import { MsgType, NOFID, NONUNAME, type RMessage, type Tattach } from '../messages.js';
import { O } from '../../util/syscalls.js';
import { makeFid } from './common.js';
import type { ExportRoot } from '../export.js';
import type { Session } from '../session.js';

export function auth(): RMessage {
  return { type: MsgType.Rlerror, ecode: Errno.ENOENT };
}

/** The export an aname selects: by name, or by directory path; "" selects the only export if there is one. */
export function findExport(exports: readonly ExportRoot[], aname: string): ExportRoot {
  if (aname === '' && exports.length === 1) return exports[0]!;
  const trimmed = aname.length > 1 ? aname.replace(/\/+$/, '') : aname;
  const hit = exports.find((e) => e.name === aname) ?? exports.find((e) => e.path === trimmed);
  if (hit === undefined) throw new P9Error(Errno.ENOENT, `no export named "${aname}"`);
  return hit;
}

export function attachUid(msg: Tattach): number | undefined {
  if (msg.nUname !== NONUNAME) return msg.nUname;
  return /^\d+$/.test(msg.uname) ? Number(msg.uname) : undefined;
}

export function attach(s: Session, msg: Tattach): RMessage {
  if (msg.afid !== NOFID) throw new P9Error(Errno.EINVAL, 'authentication is not used');
  const exp = findExport(s.exports, msg.aname);
  s.fids.checkFree(msg.fid);
  const fd = s.fs.openat(exp.rootFd, '.', O.PATH | O.DIRECTORY);
  let st;
  try {
    st = s.fs.fstatx(fd);
  } catch (err) {
    s.fs.close(fd);
    throw err;
  }
  const fid = makeFid(s, msg.fid, exp, '', fd, st, attachUid(msg));
  s.fids.add(fid);
  return { type: MsgType.Rattach, qid: fid.qid };
}
