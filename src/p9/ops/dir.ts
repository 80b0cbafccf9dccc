// Directory operations: Treaddir, Tmkdir, Tmknod, Tsymlink, Tlink, Trename, Trenameat, Tunlinkat, Tremove.
// Every name is validated and used with the parent directory's own fd (the *at calls), so a name never
// resolves through a symlink, and fids naming a moved path follow the rename.

import { Errno, P9Error } from '../errno.js';
import type { Fid } from '../fids.js';
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
import { baseName, checkNewName, joinPath, openBeneath, parentPath } from '../pathsafe.js';
import { qidFromStat } from '../qid.js';
import { RDATA_HEADER, allocDataReply, finishDataReply } from '../codec.js';
import { DirSnapshot, encodeEntries, getdentsBuffer } from '../readdir.js';
import {
  AT_EMPTY_PATH,
  AT_REMOVEDIR,
  AT_SYMLINK_NOFOLLOW,
  O,
  S_IFBLK,
  S_IFCHR,
  S_IFIFO,
  S_IFMT,
  S_IFREG,
  S_IFSOCK,
  close,
  fchownat,
  linkat,
  mkdirat,
  mknodat,
  renameat2,
  statx,
  symlinkat,
  unlinkat as unlinkAt,
} from '../../util/syscalls.js';
import { assertWritable, dirFid, pathFid } from './common.js';
import { releaseFid } from './clunk.js';
import type { Session } from '../session.js';

const scratch = getdentsBuffer();

export function readdir(s: Session, msg: Treaddir): RMessage | Buffer {
  const fid = pathFid(s, msg.fid);
  const open = fid.open;
  if (open === null || !fid.isDir) throw new P9Error(Errno.EBADF, 'directory not open');
  const count = Math.min(msg.count, s.maxPayload);
  if (msg.offset > BigInt(Number.MAX_SAFE_INTEGER)) return finishDataReply(allocDataReply(0), MsgType.Rreaddir, 0, 0);
  const offset = Number(msg.offset);
  if (fid.dir === null) fid.dir = new DirSnapshot(s.limits.maxDirEntries);
  const snap = fid.dir;
  const reply = allocDataReply(count);
  const fd = s.fds.acquire(open.io);
  try {
    // offset 0 is a rewind: a fresh listing, as rewinddir would give.
    if (offset === 0) snap.generation = -1;
    const n = encodeEntries(
      snap,
      fd,
      open.io.generation,
      offset,
      count,
      fid.exp.qids,
      { major: fid.ident.devMajor, minor: fid.ident.devMinor },
      fid.path === '' ? fid.exp.rootStat.ino : undefined,
      reply,
      RDATA_HEADER,
      scratch,
    );
    return finishDataReply(reply, MsgType.Rreaddir, 0, n);
  } finally {
    s.fds.release(open.io);
  }
}

/** Creates an entry with `create(dirFd)`, chowns it best effort, returns its qid. */
function createEntry(s: Session, dir: Fid, name: string, gid: number, create: (dfd: number) => void): { qid: Qid } {
  checkNewName(name);
  assertWritable(dir.exp);
  return s.fds.with(dir.handle, (dfd) => {
    create(dfd);
    let st = statx(dfd, name, AT_SYMLINK_NOFOLLOW);
    // Skip the chown (a journalled inode update) when the entry already has the wanted owner.
    if (st.uid !== (dir.uid ?? st.uid) || st.gid !== gid) {
      try {
        fchownat(dfd, name, dir.uid ?? -1, gid, AT_SYMLINK_NOFOLLOW);
        st = statx(dfd, name, AT_SYMLINK_NOFOLLOW);
      } catch {
        // Ownership is best effort when the server is not root.
      }
    }
    return { qid: qidFromStat(dir.exp.qids, st) };
  });
}

export function mkdir(s: Session, msg: Tmkdir): RMessage {
  const dir = dirFid(s, msg.dfid);
  const { qid } = createEntry(s, dir, msg.name, msg.gid, (dfd) => mkdirat(dfd, msg.name, msg.mode & 0o7777));
  return { type: MsgType.Rmkdir, qid };
}

export function symlink(s: Session, msg: Tsymlink): RMessage {
  const dir = dirFid(s, msg.fid);
  if (msg.symtgt.length === 0 || msg.symtgt.includes('\0')) throw new P9Error(Errno.ENOENT);
  // The target is stored verbatim; it is never followed on the host (walks use O_NOFOLLOW).
  const { qid } = createEntry(s, dir, msg.name, msg.gid, (dfd) => symlinkat(msg.symtgt, dfd, msg.name));
  return { type: MsgType.Rsymlink, qid };
}

/**
 * FIFOs, sockets and regular files always; device nodes when the host allows it (needs CAP_MKNOD and a
 * filesystem not mounted nodev; otherwise the host's EPERM/EACCES reaches the guest). They are never opened
 * by the server (see lopen), so a guest-made device node cannot reach a host device through 9P.
 */
export function mknod(s: Session, msg: Tmknod): RMessage {
  const dir = dirFid(s, msg.dfid);
  const fmt = msg.mode & S_IFMT || S_IFREG;
  if (![S_IFIFO, S_IFSOCK, S_IFCHR, S_IFBLK, S_IFREG].includes(fmt)) throw new P9Error(Errno.EINVAL);
  const mode = fmt | (msg.mode & 0o7777);
  const { qid } = createEntry(s, dir, msg.name, msg.gid, (dfd) => mknodat(dfd, msg.name, mode, msg.major, msg.minor));
  return { type: MsgType.Rmknod, qid };
}

export function link(s: Session, msg: Tlink): RMessage {
  const dir = dirFid(s, msg.dfid);
  const target = pathFid(s, msg.fid);
  checkNewName(msg.name);
  assertWritable(dir.exp);
  if (target.exp !== dir.exp) throw new P9Error(Errno.EXDEV);
  if (target.isDir) throw new P9Error(Errno.EPERM);
  s.fds.with(target.handle, (tfd) => s.fds.with(dir.handle, (dfd) => linkat(tfd, '', dfd, msg.name, AT_EMPTY_PATH)));
  return { type: MsgType.Rlink };
}

function checkOldName(name: string): void {
  if (name === '.' || name === '..') throw new P9Error(Errno.EINVAL);
  checkNewName(name);
}

function renameEntry(s: Session, from: Fid, oldPath: string, to: Fid, newName: string): void {
  checkNewName(newName);
  assertWritable(from.exp);
  if (from.exp !== to.exp) throw new P9Error(Errno.EXDEV);
  if (oldPath === '') throw new P9Error(Errno.EBUSY);
  const newPath = joinPath(to.path, newName);
  if (newPath === oldPath) return;
  if (newPath.startsWith(oldPath + '/')) throw new P9Error(Errno.EINVAL, 'rename into itself');
  const oldDirFd = openBeneath(from.exp.rootFd, parentPath(oldPath), O.PATH | O.DIRECTORY);
  try {
    s.fds.with(to.handle, (ndfd) => renameat2(oldDirFd, baseName(oldPath), ndfd, newName));
  } finally {
    close(oldDirFd);
  }
  // Fids naming the replaced target keep their (now unlinked) file alive; then the moved tree follows.
  pinFidsAt(s, newPath);
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

/** Keeps the host fds of fids naming `path` open: after unlink they can no longer be reopened by path. */
function pinFidsAt(s: Session, path: string): void {
  for (const fid of s.fids.withPath(path) ?? []) {
    s.fds.pin(fid.handle);
    if (fid.open !== null) s.fds.pin(fid.open.io);
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
  pinFidsAt(s, path);
  s.fds.with(dir.handle, (dfd) => unlinkAt(dfd, msg.name, msg.flags & AT_REMOVEDIR));
  return { type: MsgType.Runlinkat };
}

/** Tremove: unlink the fid's file, and clunk the fid whatever happens. */
export function remove(s: Session, msg: Tremove): RMessage {
  const fid = s.fids.take(msg.fid);
  let failure: unknown;
  try {
    if (fid.xattr !== null) throw new P9Error(Errno.EINVAL);
    assertWritable(fid.exp);
    if (fid.path === '') throw new P9Error(Errno.EBUSY);
    pinFidsAt(s, fid.path);
    const dfd = openBeneath(fid.exp.rootFd, parentPath(fid.path), O.PATH | O.DIRECTORY);
    try {
      unlinkAt(dfd, baseName(fid.path), fid.isDir ? AT_REMOVEDIR : 0);
    } finally {
      close(dfd);
    }
  } catch (err) {
    failure = err;
  }
  releaseFid(s, fid, false); // a pending xattr on a removed fid is dropped, not committed
  if (failure !== undefined) throw failure;
  return { type: MsgType.Rremove };
}
