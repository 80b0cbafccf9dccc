// Tlock and Tgetlock over the export's LockTable. A blocking request that conflicts is parked until granted
// (never answered BLOCKED: the Linux client would then sleep 30 s before retrying); Tflush cancels it with no
// reply. Only when the connection already parks maxParkedLocks requests, or the file maxLockWaitersPerFile, is
// BLOCKED the answer. Costs per request: see locks.ts.

import { Errno, P9Error } from '../errno.js';
import { identityKey } from '../fids.js';
import { LockFlag, LockStatus, LockType, MsgType, type RMessage, type Tgetlock, type Tlock } from '../messages.js';
import { LOCK_EOF, LockLimitError, rangeEnd, type LockRequest } from '../locks.js';
import { SUPPRESS, type OpResult } from './result.js';
import type { Inflight, Session } from '../session.js';

function ownerKey(s: Session, clientId: string, procId: number): string {
  return `${s.id}\0${clientId}\0${procId}`;
}

export function lock(s: Session, msg: Tlock, req: Inflight): OpResult | Promise<OpResult> {
  const fid = s.fid(msg.fid);
  if (fid.open === null) throw new P9Error(Errno.EBADF, 'fid not open');
  if (msg.lockType !== LockType.RDLCK && msg.lockType !== LockType.WRLCK && msg.lockType !== LockType.UNLCK) {
    throw new P9Error(Errno.EINVAL);
  }
  const owner = ownerKey(s, msg.clientId, msg.procId);
  const lreq: LockRequest = {
    owner,
    type: msg.lockType,
    start: msg.start,
    end: rangeEnd(msg.start, msg.length),
    procId: msg.procId,
    clientId: msg.clientId,
    session: s.id,
  };
  const file = identityKey(fid.ident);
  const table = fid.exp.locks;
  const granted = (): RMessage => {
    if (msg.lockType !== LockType.UNLCK) (fid.lockOwners ??= new Set()).add(owner);
    return { type: MsgType.Rlock, status: LockStatus.SUCCESS };
  };
  try {
    if (table.trySet(file, lreq)) return granted();
  } catch (err) {
    if (err instanceof LockLimitError) return { type: MsgType.Rlock, status: LockStatus.ERROR };
    throw err;
  }
  if (!(msg.flags & LockFlag.BLOCK) || s.parkedLocks >= s.limits.maxParkedLocks) {
    return { type: MsgType.Rlock, status: LockStatus.BLOCKED };
  }
  let resolveGrant!: (r: OpResult) => void;
  const parked = new Promise<OpResult>((resolve) => (resolveGrant = resolve));
  const cancelWait = table.wait(file, lreq, () => resolveGrant(granted()));
  // The file already has maxLockWaitersPerFile waiters: the guest retries later.
  if (cancelWait === undefined) return { type: MsgType.Rlock, status: LockStatus.BLOCKED };
  req.cancel = () => {
    cancelWait();
    resolveGrant(SUPPRESS);
  };
  s.park(req);
  return parked;
}

/**
 * The Linux client always sends Tgetlock with type UNLCK (v9fs_file_getlock passes the struct file_lock after
 * posix_test_lock has overwritten its type), so the requested type is lost: UNLCK is tested as a write lock,
 * reporting any lock another owner holds on the range. A real RDLCK/WRLCK from other clients is honoured.
 */
export function getlock(s: Session, msg: Tgetlock): RMessage {
  const fid = s.fid(msg.fid);
  if (fid.open === null) throw new P9Error(Errno.EBADF, 'fid not open');
  const lreq: LockRequest = {
    owner: ownerKey(s, msg.clientId, msg.procId),
    type: msg.lockType === LockType.UNLCK ? LockType.WRLCK : msg.lockType,
    start: msg.start,
    end: rangeEnd(msg.start, msg.length),
    procId: msg.procId,
    clientId: msg.clientId,
    session: s.id,
  };
  const c = fid.exp.locks.conflict(identityKey(fid.ident), lreq);
  if (c === undefined) {
    return {
      type: MsgType.Rgetlock,
      lockType: LockType.UNLCK,
      start: msg.start,
      length: msg.length,
      procId: msg.procId,
      clientId: msg.clientId,
    };
  }
  return {
    type: MsgType.Rgetlock,
    lockType: c.type,
    start: c.start,
    length: c.end === LOCK_EOF ? 0n : c.end - c.start,
    procId: c.procId,
    clientId: c.clientId,
  };
}
