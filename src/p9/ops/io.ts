// Tlopen, Tlcreate, Tread, Twrite, Tfsync.
//
// Reads first try preadv2(RWF_NOWAIT) synchronously straight into the reply buffer (data in the page cache is
// served in ~1 µs without a threadpool hop, measured ~35 µs here); whatever is not cached is read through
// Node's async fs on the libuv threadpool so a slow disk never stalls the event loop. Writes up to 64 KiB are
// synchronous pwrites unless one of them was slow recently (then, like larger writes and fsync, they go through
// the threadpool: buffered writes may block on dirty-page throttling; RWF_NOWAIT writes are refused by ext4 for
// buffered I/O).

import { promisify } from 'node:util';
import fs from 'node:fs';
import { Errno, P9Error } from '../errno.js';
import type { Fid } from '../fids.js';
import {
  MsgType,
  type RMessage,
  type Tfsync,
  type Tlcreate,
  type Tlopen,
  type Tread,
  type Twrite,
} from '../messages.js';
import { checkNewName, joinPath } from '../pathsafe.js';
import { qidFromStat } from '../qid.js';
import { RDATA_HEADER, allocDataReply, finishDataReply, r32, w32 } from '../codec.js';
import { ARENA_REPLY_MAX } from '../reply.js';
import type { HostFd } from '../hostfd.js';
import type { OpResult } from './result.js';
import {
  AT_SYMLINK_NOFOLLOW,
  O,
  S_IFMT,
  S_IFREG,
  S_ISVTX,
  STATX_OFF,
  S_IFDIR,
  statxFromRaw,
  type StatX,
} from '../../util/syscalls.js';
import {
  assertOpenableType,
  assertWritable,
  dirFid,
  iounit,
  makeFid,
  pathFid,
  reopenVerified,
  withPathFd,
} from './common.js';
import { reopenFlags, toHostOpenFlags } from './openflags.js';
import { writeXattr } from '../xattr.js';
import { skipBytes } from '../syncwrite.js';
import type { Session } from '../session.js';

const fsRead = promisify(fs.read);
const fsWritev = promisify(fs.writev);
const fsFsync = promisify(fs.fsync);
const fsFdatasync = promisify(fs.fdatasync);

function attachOpenFile(s: Session, fid: Fid, fd: number, flags: number, writable: boolean): void {
  fid.open = { slot: s.fds.openSlot(fid.inode!, reopenFlags(flags), fd), writable };
}

export function lopen(s: Session, msg: Tlopen): RMessage {
  const fid = pathFid(s, msg.fid);
  if (fid.open !== null) throw new P9Error(Errno.EINVAL, 'fid already open');
  const host = toHostOpenFlags(msg.flags);
  if (fid.exp.readOnly && (host.writable || host.flags & O.TRUNC)) throw new P9Error(Errno.EROFS);
  const ino = fid.inode!;
  // Nothing happens at open time (no O_TRUNC): the fd can be shared, or opened without an O_PATH handle first.
  const plain = reopenFlags(host.flags) === host.flags;
  if (plain && s.fds.openFileFd(ino, host.flags) >= 0) {
    // Another fid of the inode is open the same way (the Linux client opens a directory once per listing, a
    // pipelining client many at once): it shares that fd, whose type was checked when it was opened.
    attachOpenFile(s, fid, -1, host.flags, host.writable);
    return { type: MsgType.Rlopen, qid: fid.qid, iounit: iounit(s) };
  }
  let fd: number;
  if (plain && fid.isDir && !host.writable && ino.pathSlot.fd < 0) {
    // A directory whose O_PATH handle is closed (a walk followed by a listing): opened for reading by name, as a
    // walk step would (O_DIRECTORY: the kernel refuses anything else before opening it, so no device or FIFO is
    // ever opened) and checked against the walked identity, instead of an O_PATH open and a reopen through it.
    s.fds.reserveRoom(1);
    fd = openDirByName(s, fid, host.flags, host.noatime);
    try {
      checkOpenable(fid, s.fs.statxBuf, fd, host.writable);
    } catch (err) {
      s.fs.close(fd);
      throw err;
    }
  } else {
    // Room for the O_PATH fd (if closed) and the open file's fd, or ENFILE before anything is opened.
    s.fds.reserveRoom(ino.pathSlot.fd < 0 ? 2 : 1);
    fd = withPathFd(s, fid, (pfd) => {
      // The identity check of an fd opened just now made a statx of it: that one answers.
      const b = s.fds.freshStat ? s.fs.statxBuf : s.fs.fstatxRaw(pfd);
      const isDir = checkOpenable(fid, b, pfd, host.writable);
      return s.fs.openThrough(pfd, host.flags, host.noatime, isDir);
    });
  }
  if (host.flags & O.TRUNC) {
    try {
      fid.qid = qidFromStat(fid.exp.qids, s.fs.fstatx(fd));
    } catch (err) {
      s.fs.close(fd);
      throw err;
    }
  }
  attachOpenFile(s, fid, fd, host.flags, host.writable);
  return { type: MsgType.Rlopen, qid: fid.qid, iounit: iounit(s) };
}

/**
 * Tlopen's type rules on the raw statx `b` of `fd` (a handle on the fid's object): regular files and directories
 * only, no placeholder of a guest-made FIFO or device (the guest serves those itself), no directory for writing.
 * Returns whether it is a directory.
 */
function checkOpenable(fid: Fid, b: Buffer, fd: number, writable: boolean): boolean {
  const mode = r32(b, STATX_OFF.mode) & 0xffff;
  const fmt = mode & S_IFMT;
  if (fmt !== S_IFREG && fmt !== S_IFDIR) throw new P9Error(Errno.ENXIO, 'special file');
  if (mode & S_ISVTX) {
    const st = statxFromRaw(b);
    assertOpenableType({ ...st, mode: fid.exp.policy.view({ fd, st }).mode });
  }
  if (fmt !== S_IFREG && writable) throw new P9Error(Errno.EISDIR);
  return fmt === S_IFDIR;
}

/**
 * Opens a directory fid for reading by its path (one name from an open fd of its parent when this connection has
 * one, else beneath the root), O_DIRECTORY and never following a symlink, verified against the fid's identity
 * (ESTALE if the name now names another directory). Leaves the fd's statx in the raw statx buffer.
 */
function openDirByName(s: Session, fid: Fid, flags: number, noatime: boolean): number {
  const ino = fid.inode!;
  const parent = s.parentDirFd(ino.rootFd, fid.path);
  const open = (f: number): number =>
    reopenVerified(s.fs, ino.rootFd, fid.path, ino.ident, f | O.DIRECTORY | O.NOFOLLOW, parent);
  if (noatime) {
    try {
      return open(flags | O.NOATIME);
    } catch (err) {
      if ((err as { code?: string }).code !== 'EPERM') throw err;
    }
  }
  return open(flags);
}

/**
 * Tlcreate. The file is made with O_EXCL first, so that only a file this request made gets the creator's
 * attributes and an existing entry is never opened through O_CREAT; only when the name is taken (and the guest
 * did not ask for O_EXCL) is the entry looked at, and opened if it is a regular file. The new fid holds the
 * open file only: its O_PATH fd is opened on demand (HostFdTable), which a created-written-closed file never needs.
 */
export function lcreate(s: Session, msg: Tlcreate): RMessage {
  const dir = dirFid(s, msg.fid);
  if (dir.open !== null) throw new P9Error(Errno.EINVAL, 'fid already open');
  checkNewName(msg.name);
  assertWritable(dir.exp);
  const host = toHostOpenFlags(msg.flags);
  const path = joinPath(dir.path, msg.name);
  const policy = dir.exp.policy;
  const guestMode = S_IFREG | (msg.mode & 0o7777);
  const uid = dir.uid ?? policy.serverUid;
  // The new file's fd, plus the directory's if it was closed: ENFILE before creating anything.
  s.fds.reserveRoom(dir.inode!.pathSlot.fd < 0 ? 2 : 1);
  const { ioFd, st } = withPathFd(s, dir, (dfd) => {
    const base = host.flags | O.CREAT | O.NOFOLLOW | O.NONBLOCK;
    const perm = policy.createPerm(guestMode);
    let ioFd: number;
    let created = true;
    try {
      ioFd = s.fs.openat(dfd, msg.name, base | O.EXCL, perm);
    } catch (err) {
      if (host.flags & O.EXCL || (err as { code?: string }).code !== 'EEXIST') throw err;
      created = false;
      let existing: StatX | undefined;
      try {
        existing = s.fs.statx(dfd, msg.name, AT_SYMLINK_NOFOLLOW);
      } catch (e) {
        if ((e as { code?: string }).code !== 'ENOENT') throw e;
      }
      // A non-regular entry would be *opened* by O_CREAT without O_EXCL: refused before it is touched.
      if (existing !== undefined && (existing.mode & S_IFMT) !== S_IFREG) throw new P9Error(Errno.ENXIO);
      ioFd = s.fs.openat(dfd, msg.name, base, perm);
    }
    try {
      let st = s.fs.fstatx(ioFd);
      if ((st.mode & S_IFMT) !== S_IFREG) throw new P9Error(Errno.ENXIO);
      if (created && policy.createNeedsFinish(st, guestMode, uid, msg.gid)) {
        try {
          policy.finishCreate({ fd: ioFd, st }, guestMode, uid, msg.gid);
        } catch (err) {
          s.fs.unlinkat(dfd, msg.name, 0);
          throw err;
        }
        st = s.fs.fstatx(ioFd);
      }
      return { ioFd, st };
    } catch (err) {
      s.fs.close(ioFd);
      throw err;
    }
  });
  let fresh;
  try {
    fresh = makeFid(s, dir.id, dir.exp, path, -1, st, dir.uid);
  } catch (err) {
    s.fs.close(ioFd);
    throw err;
  }
  // The fid now names the new, open file: replace the directory fid in place.
  const old = s.fids.take(dir.id);
  s.fids.add(fresh);
  s.fds.unref(old.inode!);
  attachOpenFile(s, fresh, ioFd, host.flags & ~O.NONBLOCK, host.writable);
  return { type: MsgType.Rlcreate, qid: fresh.qid, iounit: iounit(s) };
}

const MAX_OFFSET = BigInt(Number.MAX_SAFE_INTEGER);

/** Above this count a Tread first looks at the file size, so a small file does not cost a msize-sized buffer. */
const SIZE_PROBE_MIN = 64 * 1024;
/** Largest Rread payload built in the reply arena (larger ones get their own buffer). */
const ARENA_READ_MAX = ARENA_REPLY_MAX - RDATA_HEADER;

/** File size from a raw statx (exact below 2^53, which is all a Tread offset can reach here). */
function rawSize(b: Buffer): number {
  return r32(b, STATX_OFF.size) + r32(b, STATX_OFF.size + 4) * 0x100000000;
}

/**
 * Tread. Page-cached data is read synchronously (preadv2 RWF_NOWAIT) straight into the reply: into the reply
 * arena when it fits (no allocation, no copy), else into a buffer of its own. Whatever is not cached is read on
 * the threadpool (the only asynchronous path).
 */
export function read(s: Session, msg: Tread): OpResult | Promise<OpResult> {
  const fid = s.fid(msg.fid);
  let count = Math.min(msg.count, s.maxPayload);
  if (fid.xattr !== null) {
    if (fid.xattr.kind !== 'read') throw new P9Error(Errno.EINVAL);
    const v = fid.xattr.value;
    const start = msg.offset > BigInt(v.length) ? v.length : Number(msg.offset);
    return { type: MsgType.Rread, data: v.subarray(start, Math.min(v.length, start + count)) };
  }
  const open = fid.open;
  if (open === null) throw new P9Error(Errno.EBADF, 'fid not open');
  if (msg.offset > MAX_OFFSET) return { type: MsgType.Rread, data: EMPTY };
  const pos = Number(msg.offset);
  const slot = open.slot;
  const fd = s.fds.acquire(slot, fid.path);
  let handedOff = false;
  try {
    // The Linux client asks for rsize (~msize) whatever the file size, and reads again until it gets 0: size the
    // reply by the file when it is smaller. A size of 0 is not trusted (procfs-like files), and a file that grew
    // since the statx gets a short read, which the client follows with another Tread.
    let sized = false;
    if (count > SIZE_PROBE_MIN) {
      const size = rawSize(s.fs.fstatxRaw(fd));
      if (size > 0) {
        const left = size > pos ? size - pos : 0;
        if (left < count) {
          count = left;
          sized = true;
        }
      }
    }
    if (count <= ARENA_READ_MAX) {
      const p = s.beginReply(MsgType.Rread, 4 + count);
      // -1: nothing cached; 0: end of file; short: partly cached or end of file.
      const n = count === 0 ? 0 : s.fs.preadNoWaitAt(fd, s.out.address + p + 4, count, pos);
      if (n === count || n === 0 || (n > 0 && (sized || rawSize(s.fs.fstatxRaw(fd)) <= pos + n))) {
        w32(s.out.buf, p, n);
        return s.endReply(p + 4 + n);
      }
      // Not (all) cached: the rest comes from the threadpool, into a reply of its own.
      const reply = allocDataReply(count);
      if (n > 0) s.out.buf.copy(reply, RDATA_HEADER, p + 4, p + 4 + n);
      handedOff = true;
      return readRest(s, slot, fd, reply, Math.max(0, n), count, pos);
    }
    const reply = allocDataReply(count);
    const n = s.fs.preadNoWait(fd, reply.subarray(RDATA_HEADER, RDATA_HEADER + count), pos);
    if (n === count || n === 0 || (n > 0 && (sized || rawSize(s.fs.fstatxRaw(fd)) <= pos + n))) {
      return finishDataReply(reply, MsgType.Rread, 0, n);
    }
    handedOff = true;
    return readRest(s, slot, fd, reply, Math.max(0, n), count, pos);
  } finally {
    if (!handedOff) s.fds.release(slot);
  }
}

const EMPTY = Buffer.alloc(0);

/** The uncached part of a Tread, on the threadpool; releases the fd slot when done. */
async function readRest(
  s: Session,
  slot: HostFd,
  fd: number,
  reply: Buffer,
  have: number,
  count: number,
  pos: number,
): Promise<OpResult> {
  try {
    const { bytesRead } = await fsRead(fd, reply, RDATA_HEADER + have, count - have, pos + have);
    return finishDataReply(reply, MsgType.Rread, 0, have + bytesRead);
  } finally {
    s.fds.release(slot);
  }
}

/**
 * Writes up to this size are written synchronously on the event loop (an 8 KiB pwrite measured 2.7 µs here
 * against 23 µs through the threadpool). Buffered writes can block (dirty-page throttling, slow filesystems):
 * see SyncWriteGuard.
 */
const SYNC_WRITE_MAX = 64 * 1024;

/** Rwrite in the reply arena. */
function rwrite(s: Session, count: number): OpResult {
  const p = s.beginReply(MsgType.Rwrite, 4);
  w32(s.out.buf, p, count);
  return s.endReply(p + 4);
}

/**
 * Twrite. Up to SYNC_WRITE_MAX bytes are written synchronously unless the session's writes were found to block
 * (SyncWriteGuard); larger writes and blocked sessions use the threadpool.
 */
export function write(s: Session, msg: Twrite): OpResult | Promise<OpResult> {
  return writeData(s, msg.fid, msg.offset, msg.data, msg.data.length);
}

/** Twrite whose data arrived in pieces (a frame spanning socket chunks): written with pwritev, never joined. */
export function writePieces(
  s: Session,
  fidId: number,
  offset: bigint,
  pieces: Buffer[],
  length: number,
): OpResult | Promise<OpResult> {
  return writeData(s, fidId, offset, pieces, length);
}

function writeData(
  s: Session,
  fidId: number,
  offset: bigint,
  data: Buffer | Buffer[],
  length: number,
): OpResult | Promise<OpResult> {
  const fid = s.fid(fidId);
  if (fid.xattr !== null) {
    if (fid.xattr.kind !== 'write') throw new P9Error(Errno.EINVAL);
    const bytes = Buffer.isBuffer(data) ? data : Buffer.concat(data, length);
    return { type: MsgType.Rwrite, count: writeXattr(fid.xattr, offset, bytes) };
  }
  const open = fid.open;
  if (open === null) throw new P9Error(Errno.EBADF, 'fid not open');
  if (!open.writable) throw new P9Error(Errno.EBADF, 'fid not open for writing');
  if (offset > MAX_OFFSET) throw new P9Error(Errno.EFBIG);
  const slot = open.slot;
  const fd = s.fds.acquire(slot, fid.path);
  let handedOff = false;
  try {
    const pos = Number(offset);
    if (length <= SYNC_WRITE_MAX && s.syncWrites.allowed()) {
      return rwrite(s, s.syncWrites.write(fd, data, pos));
    }
    handedOff = true;
    return writeAsync(s, slot, fd, Buffer.isBuffer(data) ? [data] : data, pos);
  } finally {
    if (!handedOff) s.fds.release(slot);
  }
}

async function writeAsync(s: Session, slot: HostFd, fd: number, data: Buffer[], pos: number): Promise<OpResult> {
  try {
    let done = 0;
    let rest = data;
    while (rest.length > 0) {
      const { bytesWritten } = await fsWritev(fd, rest, pos + done);
      if (bytesWritten === 0) break;
      done += bytesWritten;
      rest = skipBytes(rest, bytesWritten);
    }
    return { type: MsgType.Rwrite, count: done };
  } finally {
    s.fds.release(slot);
  }
}

export async function fsync(s: Session, msg: Tfsync): Promise<RMessage> {
  const fid = s.fid(msg.fid);
  const open = fid.open;
  if (open === null) throw new P9Error(Errno.EBADF, 'fid not open');
  const fd = s.fds.acquire(open.slot, fid.path);
  try {
    await (msg.datasync !== 0 ? fsFdatasync(fd) : fsFsync(fd));
    return { type: MsgType.Rfsync };
  } finally {
    s.fds.release(open.slot);
  }
}
