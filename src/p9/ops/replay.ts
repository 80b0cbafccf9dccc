// The replay tree: how host changes become inotify events in the guest without touching the host again.
//
// The guest kernel fires inotify events only for operations done through its mount, so the guest agent replays
// each host change (docs/share-notify.md) as the matching operation: open(O_CREAT|O_EXCL) or mkdir for a create,
// unlink or rmdir for a delete, rename, ftruncate to the current size for a modify, utimensat for an attribute
// change. It does so with a reserved fsuid; v9fs attaches once per fsuid (access=client), so every request of
// the replayer arrives on fids that descend from an attach with that uid: the replay tree (Fid.replay).
//
// Here the replay tree's requests are answered without any host side effect:
//  - walks follow the host, except that the plan (replay-plan.ts) hides paths about to be re-created and a path
//    the host no longer has answers a phantom (a stand-in that exists only in this tree), so that a replayed
//    unlink or rename finds what the host removed;
//  - creates, unlink, rename, setattr, fsync are acknowledged and do nothing; a create answers the qid of the
//    object the host already has (or a phantom);
//  - lopen never opens a host file; read, write, readdir, xattr and lock requests are refused (EPERM): the
//    replayer does not need them, and a hostile guest gains nothing from this tree that its own attach does
//    not already give it (it can never write to the host through it).
// The only change outside this file: the dispatch table wraps each handler (withReplay) so that a request naming
// a replay fid comes here, and Fid.replay marks the tree.
// A Twrite that spans socket chunks does not go through the dispatch table (session.ts onScatteredWrite), but it
// needs an open fid, and no replay fid is ever opened on the host: it gets EBADF.

import { Errno, P9Error } from '../errno.js';
import { Fid } from '../fids.js';
import {
  GetattrMask,
  MsgType,
  QidType,
  type Qid,
  type RMessage,
  type Tattach,
  type Tgetattr,
  type TMessage,
  type Twalk,
} from '../messages.js';
import { checkWalkName, joinPath, openBeneath, parentPath } from '../pathsafe.js';
import { O, close, fstatx, S_IFDIR, S_IFREG, type StatX } from '../../util/syscalls.js';
import { attach, attachUid, findExport } from './attach.js';
import { getattr } from './attr.js';
import { clunk, releaseFid } from './clunk.js';
import { iounit, makeFid } from './common.js';
import type { OpResult } from './result.js';
import type { ExportRoot } from '../export.js';
import type { Inflight, Session } from '../session.js';

type Handler = (s: Session, msg: TMessage, req: Inflight | undefined) => OpResult | Promise<OpResult>;

/** Phantom qid.paths: above the qid map's overflow range (qid.ts), so they never name a host file. */
const PHANTOM_PREFIX = 0xff80_0000_0000_0000n;
let phantomSeq = 0n;

function phantomQid(dir: boolean): Qid {
  phantomSeq = (phantomSeq + 1n) & 0x7f_ffff_ffff_ffffn;
  return { type: dir ? QidType.DIR : QidType.FILE, version: 1, path: PHANTOM_PREFIX | phantomSeq };
}

const NO_IDENTITY = { devMajor: -1, devMinor: -1, ino: -1n };

/** A replay fid naming `path`: the host's object when it has one, else a phantom. ENOENT for a hidden path. */
function replayFid(s: Session, id: number, exp: ExportRoot, path: string, uid: number | undefined): Fid {
  const plan = exp.replay!.plan;
  if (plan.isHidden(path)) throw new P9Error(Errno.ENOENT);
  return resolveFid(s, id, exp, path, uid);
}

function resolveFid(s: Session, id: number, exp: ExportRoot, path: string, uid: number | undefined): Fid {
  const plan = exp.replay!.plan;
  let fd: number;
  try {
    fd = openBeneath(exp.rootFd, path, O.PATH | O.NOFOLLOW);
  } catch (err) {
    const code = (err as { code?: string }).code;
    if (code !== 'ENOENT' && code !== 'ENOTDIR' && !(err instanceof P9Error && err.errno === Errno.ENOENT)) throw err;
    const fid = new Fid(id, exp, path, phantomQid(plan.isDir(path)), NO_IDENTITY, null, uid);
    fid.replay = true;
    return fid;
  }
  let st: StatX;
  try {
    st = fstatx(fd);
  } catch (err) {
    close(fd);
    throw err;
  }
  const fid = makeFid(s, id, exp, path, fd, st, uid);
  fid.replay = true;
  return fid;
}

function isPhantom(fid: Fid): boolean {
  return fid.inode === null && fid.xattr === null;
}

/** Puts `fresh` in place of the fid with the same id (walk onto itself, lcreate). */
function replaceFid(s: Session, fresh: Fid): void {
  const old = s.fids.take(fresh.id);
  s.fids.add(fresh);
  releaseFid(s, old, false);
}

function replayAttach(s: Session, msg: Tattach): RMessage {
  const reply = attach(s, msg);
  s.fids.get(msg.fid).replay = true;
  replaySessions.add(s);
  return reply;
}

function replayWalk(s: Session, msg: Twalk): RMessage {
  const src = s.fid(msg.fid);
  if (msg.names.length > 16) throw new P9Error(Errno.EINVAL, 'too many walk names');
  if (msg.newfid !== msg.fid) s.fids.checkFree(msg.newfid);
  const exp = src.exp;
  if (msg.names.length === 0) {
    // A clone: the same object (a phantom keeps its qid), whatever the plan says about its name now.
    const copy = isPhantom(src)
      ? Object.assign(new Fid(msg.newfid, exp, src.path, src.qid, NO_IDENTITY, null, src.uid), { replay: true })
      : resolveFid(s, msg.newfid, exp, src.path, src.uid);
    if (msg.newfid === msg.fid) replaceFid(s, copy);
    else s.fids.add(copy);
    return { type: MsgType.Rwalk, qids: [] };
  }
  if (!src.isDir) throw new P9Error(Errno.ENOTDIR);
  let path = src.path;
  const qids: Qid[] = [];
  let last: Fid | undefined;
  for (let i = 0; i < msg.names.length; i++) {
    const name = msg.names[i]!;
    let next: Fid;
    try {
      checkWalkName(name);
      if (last !== undefined && !last.isDir) throw new P9Error(Errno.ENOTDIR);
      const nextPath = name === '..' ? parentPath(path) : name === '.' ? path : joinPath(path, name);
      next = replayFid(s, msg.newfid, exp, nextPath, src.uid);
    } catch (err) {
      if (last !== undefined) releaseFid(s, last, false);
      if (i === 0) throw err;
      return { type: MsgType.Rwalk, qids };
    }
    if (last !== undefined) releaseFid(s, last, false);
    last = next;
    path = next.path;
    qids.push(next.qid);
  }
  const fresh = last!;
  if (msg.newfid === msg.fid) replaceFid(s, fresh);
  else s.fids.add(fresh);
  return { type: MsgType.Rwalk, qids };
}

function phantomGetattr(fid: Fid): RMessage {
  const dir = fid.isDir;
  return {
    type: MsgType.Rgetattr,
    valid: GetattrMask.BASIC,
    qid: fid.qid,
    mode: (dir ? S_IFDIR | 0o755 : S_IFREG | 0o644) >>> 0,
    uid: 0,
    gid: 0,
    nlink: dir ? 2n : 1n,
    rdev: 0n,
    size: 0n,
    blksize: 4096n,
    blocks: 0n,
    atimeSec: 0n,
    atimeNsec: 0n,
    mtimeSec: 0n,
    mtimeNsec: 0n,
    ctimeSec: 0n,
    ctimeNsec: 0n,
    btimeSec: 0n,
    btimeNsec: 0n,
    gen: 0n,
    dataVersion: 0n,
  };
}

/** The object a replayed create names: what the host has (or a phantom); the path is visible from now on. */
function created(s: Session, dir: Fid, name: string, asDir: boolean): Fid {
  checkWalkName(name);
  const path = joinPath(dir.path, name);
  const plan = dir.exp.replay!.plan;
  plan.reveal(path);
  if (asDir) plan.phantomDir(path);
  return replayFid(s, dir.id, dir.exp, path, dir.uid);
}

function qidOfCreated(s: Session, dir: Fid, name: string, asDir: boolean): Qid {
  const fid = created(s, dir, name, asDir);
  const qid = fid.qid;
  releaseFid(s, fid, false);
  return qid;
}

const ack = (type: number): RMessage => ({ type }) as RMessage;

/** The replay tree's handlers; a request type missing here is refused with EPERM. */
/* eslint-disable @typescript-eslint/no-explicit-any */
const replayHandlers: Partial<Record<number, (s: Session, msg: any) => OpResult>> = {
  [MsgType.Twalk]: replayWalk,
  [MsgType.Tclunk]: (s, msg) => clunk(s, msg),
  [MsgType.Tgetattr]: (s, msg: Tgetattr) => {
    const fid = s.fid(msg.fid);
    return isPhantom(fid) ? phantomGetattr(fid) : getattr(s, msg);
  },
  // Never opens the host file: the replayer only needs the open to exist (close then fires IN_CLOSE_WRITE).
  [MsgType.Tlopen]: (s, msg) => ({ type: MsgType.Rlopen, qid: s.fid(msg.fid).qid, iounit: iounit(s) }),
  [MsgType.Tlcreate]: (s, msg) => {
    const dir = s.fid(msg.fid);
    if (!dir.isDir) throw new P9Error(Errno.ENOTDIR);
    const fresh = created(s, dir, msg.name, false);
    replaceFid(s, fresh);
    return { type: MsgType.Rlcreate, qid: fresh.qid, iounit: iounit(s) };
  },
  [MsgType.Tmkdir]: (s, msg) => ({ type: MsgType.Rmkdir, qid: qidOfCreated(s, s.fid(msg.dfid), msg.name, true) }),
  [MsgType.Tsymlink]: (s, msg) => ({ type: MsgType.Rsymlink, qid: qidOfCreated(s, s.fid(msg.fid), msg.name, false) }),
  [MsgType.Tmknod]: (s, msg) => ({ type: MsgType.Rmknod, qid: qidOfCreated(s, s.fid(msg.dfid), msg.name, false) }),
  [MsgType.Tlink]: (s, msg) => {
    qidOfCreated(s, s.fid(msg.dfid), msg.name, false);
    return ack(MsgType.Rlink);
  },
  [MsgType.Trenameat]: (s, msg) => {
    s.fid(msg.newdirfid).exp.replay!.plan.reveal(joinPath(s.fid(msg.newdirfid).path, msg.newname));
    return ack(MsgType.Rrenameat);
  },
  [MsgType.Trename]: (s, msg) => {
    s.fid(msg.dfid).exp.replay!.plan.reveal(joinPath(s.fid(msg.dfid).path, msg.name));
    return ack(MsgType.Rrename);
  },
  [MsgType.Tunlinkat]: () => ack(MsgType.Runlinkat),
  [MsgType.Tremove]: (s, msg) => {
    clunk(s, { type: MsgType.Tclunk, fid: msg.fid });
    return ack(MsgType.Rremove);
  },
  [MsgType.Tsetattr]: () => ack(MsgType.Rsetattr),
  [MsgType.Tfsync]: () => ack(MsgType.Rfsync),
  // No ACLs or other xattrs in this tree (the kernel asks for ACLs when it makes an inode: ENODATA is "none").
  [MsgType.Txattrwalk]: () => {
    throw new P9Error(Errno.ENODATA);
  },
};
/* eslint-enable @typescript-eslint/no-explicit-any */

function hasReplayTree(s: Session): boolean {
  const e = s.exports;
  return e.length === 1 ? e[0]!.replay !== null : e.some((x) => x.replay !== null);
}

/** Sessions that attached a replay tree: only their requests need the per-fid test. */
const replaySessions = new WeakSet<Session>();

const FID_FIELDS = ['fid', 'dfid', 'olddirfid', 'newdirfid', 'dirfid'] as const;

/** Whether the request names replay fids (a request mixing both trees is refused). No allocation. */
function inReplayTree(s: Session, msg: TMessage): boolean {
  const m = msg as unknown as Record<string, unknown>;
  let replay: boolean | undefined;
  for (const k of FID_FIELDS) {
    const id = m[k];
    if (typeof id !== 'number' || !s.fids.has(id)) continue; // unknown fids: the handler answers EBADF
    const r = s.fids.get(id).replay;
    if (replay !== undefined && replay !== r) throw new P9Error(Errno.EXDEV, 'request mixes the replay tree');
    replay = r;
  }
  return replay === true;
}

/**
 * Wraps a dispatch table: Tattach with an export's replay uid starts a replay tree, and any request naming a
 * replay fid goes to the replay handlers above (EPERM for the others). A connection that never attached a
 * replay tree costs one WeakSet lookup per request.
 */
export function withReplay(handlers: Readonly<Record<number, Handler>>): Readonly<Record<number, Handler>> {
  const wrapped: Record<number, Handler> = {};
  for (const [key, base] of Object.entries(handlers)) {
    const type = Number(key);
    if (type === MsgType.Tattach) {
      wrapped[type] = (s, msg, req) => {
        const m = msg as Tattach;
        const replay = hasReplayTree(s) ? findExport(s.exports, m.aname).replay : null;
        if (replay !== null && attachUid(m) === replay.uid) return replayAttach(s, m);
        return base(s, msg, req);
      };
      continue;
    }
    const replay = replayHandlers[type];
    wrapped[type] = (s, msg, req) => {
      if (!replaySessions.has(s) || !inReplayTree(s, msg)) return base(s, msg, req);
      if (replay === undefined) throw new P9Error(Errno.EPERM, 'not available in the replay tree');
      return replay(s, msg);
    };
  }
  return wrapped;
}
