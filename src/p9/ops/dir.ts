// Directory operations: Treaddir, Tmkdir, Tmknod, Tsymlink, Tlink, Trename, Trenameat, Tunlinkat, Tremove.
// Every name is validated and used with the parent directory's own fd (the *at calls), so a name never
// resolves through a symlink, and fids naming a moved path follow the rename. New objects get their guest
// attributes from the export's policy (security.ts): device nodes, FIFOs and sockets are never created on the
// host, only regular-file placeholders whose record says what the guest made.

import { Errno, P9Error } from '../errno.js';
import type { Fid } from '../fids.js';
import type { HostObject } from '../metadata.js';
import {
  MsgType,
  type Qid,
  type RMessage,
  type Tlink,
  type Tmkdir,
  type Tmknod,
  type Treaddir,
  type Tremove,
  type Trename,
  type Trenameat,
  type Tsymlink,
  type Tunlinkat,
} from '../messages.js';
import { baseName, checkNewName, joinPath, parentPath } from '../pathsafe.js';
import { qidFromStat } from '../qid.js';
import { readDirectoryReply } from '../readdir.js';
import {
  AT_EMPTY_PATH,
  AT_REMOVEDIR,
  AT_SYMLINK_NOFOLLOW,
  O,
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFIFO,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  type StatX,
} from '../../util/syscalls.js';
import type { HostFs } from '../hostfs.js';
import { assertWritable, dirFid, pathFid, withPathFd } from './common.js';
import { releaseFid } from './clunk.js';
import { ARENA_REPLY_MAX } from '../reply.js';
import type { OpResult } from './result.js';
import type { Session } from '../session.js';

export function readdir(s: Session, msg: Treaddir): OpResult {
  const fid = pathFid(s, msg.fid);
  const open = fid.open;
  if (open === null || !fid.isDir) throw new P9Error(Errno.EBADF, 'directory not open');
  const count = Math.min(msg.count, s.maxPayload, ARENA_REPLY_MAX - 11);
  return s.fds.with(open.slot, fid.path, (fd) =>
    readDirectoryReply(
      s,
      s.fs,
      fd,
      msg.offset,
      count,
      fid.exp.qids,
      { major: fid.ident.devMajor, minor: fid.ident.devMinor },
      fid.path === '' ? fid.exp.rootStat.ino : undefined,
    ),
  );
}

/** The owner a new entry gets in the guest: the attaching user (else the server's own). */
function creatorUid(dir: Fid): number {
  return dir.uid ?? dir.exp.policy.serverUid;
}

/**
 * Makes the entry `name` in `dir` with `create(dfd)`, then gives it its guest attributes. Any failure after the
 * creation removes the entry again. Returns the qid.
 */
function createEntry(
  s: Session,
  dir: Fid,
  name: string,
  guestMode: number,
  gid: number,
  create: (dfd: number) => void,
  rdev = { major: 0, minor: 0 },
): { qid: Qid } {
  checkNewName(name);
  assertWritable(dir.exp);
  const policy = dir.exp.policy;
  const uid = creatorUid(dir);
  return withPathFd(s, dir, (dfd) => {
    create(dfd);
    const isDir = (guestMode & S_IFMT) === S_IFDIR;
    try {
      let st = s.fs.statx(dfd, name, AT_SYMLINK_NOFOLLOW);
      if (policy.createNeedsFinish(st, guestMode, uid, gid, rdev)) {
        const fd = s.fs.openat(dfd, name, O.PATH | O.NOFOLLOW);
        try {
          const obj: HostObject = { fd, st: s.fs.fstatx(fd) };
          policy.finishCreate(obj, guestMode, uid, gid, rdev);
          st = s.fs.fstatx(fd);
        } finally {
          s.fs.close(fd);
        }
      }
      return { qid: qidFromStat(dir.exp.qids, st) };
    } catch (err) {
      try {
        s.fs.unlinkat(dfd, name, isDir ? AT_REMOVEDIR : 0);
      } catch {
        // already gone
      }
      throw err;
    }
  });
}

export function mkdir(s: Session, msg: Tmkdir): RMessage {
  const dir = dirFid(s, msg.dfid);
  const mode = S_IFDIR | (msg.mode & 0o7777);
  const perm = dir.exp.policy.createPerm(mode);
  const { qid } = createEntry(s, dir, msg.name, mode, msg.gid, (dfd) => s.fs.mkdirat(dfd, msg.name, perm));
  return { type: MsgType.Rmkdir, qid };
}

export function symlink(s: Session, msg: Tsymlink): RMessage {
  const dir = dirFid(s, msg.fid);
  if (msg.symtgt.length === 0 || msg.symtgt.includes('\0')) throw new P9Error(Errno.ENOENT);
  checkNewName(msg.name);
  assertWritable(dir.exp);
  const policy = dir.exp.policy;
  const uid = creatorUid(dir);
  // The target is stored verbatim; it is never followed on the host (walks use O_NOFOLLOW).
  const qid = withPathFd(s, dir, (dfd) => {
    s.fs.symlinkat(msg.symtgt, dfd, msg.name);
    let st = s.fs.statx(dfd, msg.name, AT_SYMLINK_NOFOLLOW);
    if (st.uid !== uid || st.gid !== msg.gid) {
      const fd = s.fs.openat(dfd, msg.name, O.PATH | O.NOFOLLOW);
      try {
        policy.finishSymlink({ fd, st }, { fd: dfd, st: s.fs.fstatx(dfd) }, msg.name, uid, msg.gid);
        st = s.fs.fstatx(fd);
      } finally {
        s.fs.close(fd);
      }
    }
    return qidFromStat(dir.exp.qids, st);
  });
  return { type: MsgType.Rsymlink, qid };
}

/**
 * Regular files as they are; FIFOs, sockets and device nodes as regular-file placeholders (mode 0600 on the
 * host) whose record carries the type and device number: the guest kernel serves special files itself (it
 * never opens them over 9P), and no host process can reach a device through something the guest made.
 */
export function mknod(s: Session, msg: Tmknod): RMessage {
  const dir = dirFid(s, msg.dfid);
  const fmt = msg.mode & S_IFMT || S_IFREG;
  if (![S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK, S_IFREG].includes(fmt)) throw new P9Error(Errno.EINVAL);
  const mode = fmt | (msg.mode & 0o7777);
  const special = fmt === S_IFCHR || fmt === S_IFBLK;
  const rdev = special ? { major: msg.major >>> 0, minor: msg.minor >>> 0 } : { major: 0, minor: 0 };
  const policy = dir.exp.policy;
  // The placeholder starts with the record marker when it will get a record, saving a chmod.
  const perm = policy.store.markedPerm(policy.createPerm(mode), fmt !== S_IFREG);
  const { qid } = createEntry(
    s,
    dir,
    msg.name,
    mode,
    msg.gid,
    (dfd) => s.fs.close(s.fs.openat(dfd, msg.name, O.WRONLY | O.CREAT | O.EXCL | O.NOFOLLOW | O.NONBLOCK, perm)),
    rdev,
  );
  return { type: MsgType.Rmknod, qid };
}

export function link(s: Session, msg: Tlink): RMessage {
  const dir = dirFid(s, msg.dfid);
  const target = pathFid(s, msg.fid);
  checkNewName(msg.name);
  assertWritable(dir.exp);
  if (target.exp !== dir.exp) throw new P9Error(Errno.EXDEV);
  if (target.isDir) throw new P9Error(Errno.EPERM);
  withPathFd(s, target, (tfd) => {
    dir.exp.policy.checkLinkTarget(s.fs.fstatx(tfd));
    withPathFd(s, dir, (dfd) => s.fs.linkat(tfd, '', dfd, msg.name, AT_EMPTY_PATH));
  });
  return { type: MsgType.Rlink };
}

function checkOldName(name: string): void {
  if (name === '.' || name === '..') throw new P9Error(Errno.EINVAL);
  checkNewName(name);
}

/** Fids that reach a file through `path` (their inode needs an fd kept open once the name is gone). */
function fidsAt(s: Session, path: string): Array<{ inode: NonNullable<Fid['inode']>; path: string }> {
  const out: Array<{ inode: NonNullable<Fid['inode']>; path: string }> = [];
  for (const fid of s.fids.withPath(path) ?? []) if (fid.inode !== null) out.push({ inode: fid.inode, path });
  return out;
}

/**
 * Runs `op`, which removes the name `path`, keeping an fd of each inode that fids reach through it; the fds are
 * pinned only if the name really went away.
 */
function removingName<T>(s: Session, path: string, op: () => T): T {
  const held = s.fds.holdForUnlink(fidsAt(s, path));
  let done = false;
  try {
    const r = op();
    done = true;
    return r;
  } finally {
    s.fds.pinAfterUnlink(held, done);
  }
}

/** statx of `name` in `dfd` if it is a symlink on a mapped export (its record lives in the directory). */
function mappedLink(dir: Fid, dfd: number, name: string): StatX | undefined {
  if (dir.exp.policy.model !== 'mapped') return undefined;
  try {
    const st = dir.exp.fs.statx(dfd, name, AT_SYMLINK_NOFOLLOW);
    return (st.mode & S_IFMT) === S_IFLNK ? st : undefined;
  } catch {
    return undefined;
  }
}

function dirObject(fs: HostFs, dfd: number): HostObject {
  return { fd: dfd, st: fs.fstatx(dfd) };
}

function renameEntry(s: Session, from: Fid, oldPath: string, to: Fid, newName: string): void {
  checkNewName(newName);
  assertWritable(from.exp);
  if (from.exp !== to.exp) throw new P9Error(Errno.EXDEV);
  if (oldPath === '') throw new P9Error(Errno.EBUSY);
  const newPath = joinPath(to.path, newName);
  if (newPath === oldPath) return;
  if (newPath.startsWith(oldPath + '/')) throw new P9Error(Errno.EINVAL, 'rename into itself');
  const store = from.exp.policy.store;
  const oldDirFd = s.fs.openBeneath(from.exp.rootFd, parentPath(oldPath), O.PATH | O.DIRECTORY);
  try {
    withPathFd(s, to, (ndfd) => {
      const oldName = baseName(oldPath);
      const link = mappedLink(from, oldDirFd, oldName);
      const rec = link !== undefined ? store.readLink(dirObject(s.fs, oldDirFd), oldName, link) : undefined;
      // Fids naming the replaced target keep their (now unlinked) file alive.
      removingName(s, newPath, () => s.fs.renameat2(oldDirFd, oldName, ndfd, newName));
      if (link !== undefined) {
        // The symlink's record moves with it (best effort: the link itself has moved).
        try {
          store.writeLink(dirObject(s.fs, oldDirFd), oldName, link, undefined);
          store.writeLink(dirObject(s.fs, ndfd), newName, link, rec);
        } catch {
          // the link shows the server's owner
        }
      }
    });
  } finally {
    s.fs.close(oldDirFd);
  }
  s.fids.renamed(oldPath, newPath);
}

export function rename(s: Session, msg: Trename): RMessage {
  const fid = pathFid(s, msg.fid);
  const dir = dirFid(s, msg.dfid);
  renameEntry(s, fid, fid.path, dir, msg.name);
  return { type: MsgType.Rrename };
}

export function renameat(s: Session, msg: Trenameat): RMessage {
  const oldDir = dirFid(s, msg.olddirfid);
  const newDir = dirFid(s, msg.newdirfid);
  checkOldName(msg.oldname);
  renameEntry(s, oldDir, joinPath(oldDir.path, msg.oldname), newDir, msg.newname);
  return { type: MsgType.Rrenameat };
}

/** Removes `name` from the directory `dfd` (fids pinned, a mapped symlink's record dropped). */
function removeEntry(s: Session, exportFid: Fid, dfd: number, name: string, path: string, flags: number): void {
  const link = mappedLink(exportFid, dfd, name);
  removingName(s, path, () => s.fs.unlinkat(dfd, name, flags));
  if (link !== undefined) {
    try {
      exportFid.exp.policy.store.writeLink(dirObject(s.fs, dfd), name, link, undefined);
    } catch {
      // a stale record names another inode and is ignored
    }
  }
}

export function unlinkat(s: Session, msg: Tunlinkat): RMessage {
  const dir = dirFid(s, msg.dirfid);
  if (msg.name === '.') throw new P9Error(Errno.EINVAL);
  if (msg.name === '..') throw new P9Error(Errno.ENOTEMPTY);
  checkNewName(msg.name);
  assertWritable(dir.exp);
  if ((msg.flags & ~AT_REMOVEDIR) !== 0) throw new P9Error(Errno.EINVAL);
  const path = joinPath(dir.path, msg.name);
  withPathFd(s, dir, (dfd) => removeEntry(s, dir, dfd, msg.name, path, msg.flags & AT_REMOVEDIR));
  return { type: MsgType.Runlinkat };
}

/** Tremove: unlink the fid's file, and clunk the fid whatever happens. */
export function remove(s: Session, msg: Tremove): RMessage {
  const fid = s.fids.take(msg.fid);
  let failure: unknown;
  try {
    if (fid.xattr !== null || fid.inode === null) throw new P9Error(Errno.EINVAL);
    assertWritable(fid.exp);
    if (fid.path === '') throw new P9Error(Errno.EBUSY);
    // The directory through an fd another fid holds (as a walk from that fid would; held in use, as making room
    // for the fds an unlink pins may close idle ones), else opened beneath the root.
    const dir = parentPath(fid.path);
    const held = s.parentDirSlot(fid.exp.rootFd, fid.path);
    const dfd =
      held !== undefined ? s.fds.acquire(held, dir) : s.fs.openBeneath(fid.exp.rootFd, dir, O.PATH | O.DIRECTORY);
    try {
      removeEntry(s, fid, dfd, baseName(fid.path), fid.path, fid.isDir ? AT_REMOVEDIR : 0);
    } finally {
      if (held !== undefined) s.fds.release(held);
      else s.fs.close(dfd);
    }
  } catch (err) {
    failure = err;
  }
  releaseFid(s, fid, false); // a pending xattr on a removed fid is dropped, not committed
  if (failure !== undefined) throw failure;
  return { type: MsgType.Rremove };
}
