// Directory listing for Treaddir, with no per-fid state: every request seeks the directory's fd to the offset
// the guest sends (0, or the d_off cookie of the last entry it got, exactly as getdents64 reported it), reads
// dirents with getdents64 into a scratch buffer until about `count` bytes of entries are there, and encodes the
// ones that fit once, into a reply of exactly their size. Entries read but not sent cost nothing later: the next
// request seeks to the last sent entry's cookie.
// This is what QEMU (telldir/seekdir) and diod do, and why a directory fd can be shared by every fid that opened
// the directory the same way: seek and read happen in one synchronous step.
//
// Cost per request: one lseek, getdents64 of at most about `count` bytes (count <= msize), one pass over them;
// names are copied as bytes straight into the reply arena, no per-entry stat (qid type from d_type). On filesystems whose cookies are entry
// indexes (tmpfs, overlayfs merged directories) the kernel walks to the offset: O(entries before it), in the
// kernel, bounded by the directory's size.

import { Errno, P9Error } from './errno.js';
import type { QidMapper } from './qid.js';
import { MsgType, QidType } from './messages.js';
import { MAX_MSIZE } from './options.js';
import { copy8, w32 } from './codec.js';
import type { REPLIED } from './ops/result.js';
import type { HostFs } from './hostfs.js';

const DT_DIR = 4;
const DT_LNK = 10;
/** getdents64 refuses a buffer that cannot hold the next entry (up to 280 bytes): never ask for less. */
const MIN_BATCH = 4096;

let scratch = Buffer.allocUnsafe(64 * 1024);

/** The dirent scratch buffer, at least `size` bytes (at most msize plus a batch). */
function scratchOf(size: number): Buffer {
  const want = Math.min(MAX_MSIZE + MIN_BATCH, size + MIN_BATCH);
  if (scratch.length < want)
    scratch = Buffer.allocUnsafe(Math.max(want, Math.min(MAX_MSIZE + MIN_BATCH, scratch.length * 2)));
  return scratch;
}

function dtypeToQidType(dtype: number): number {
  if (dtype === DT_DIR) return QidType.DIR;
  if (dtype === DT_LNK) return QidType.SYMLINK;
  return QidType.FILE;
}

/** Where the reply is built: the session's reply arena (Session.beginReply / endReply). */
export interface ReplyTarget {
  beginReply(type: number, body: number): number;
  endReply(end: number): typeof REPLIED;
  readonly out: { readonly buf: Buffer };
}

/**
 * The Rreaddir reply for directory cookie `offset`: whole entries (qid[13] offset[8] type[1] name[s] each) in at
 * most `count` bytes. getdents64 fills the scratch buffer (one or more batches while room is left); the entries
 * that fit are then encoded once, straight into the reply arena (no BigInt, no per-entry allocation). `rootIno`:
 * set for the export root, whose `..` must not name the host directory above it.
 */
export function readDirectoryReply(
  target: ReplyTarget,
  host: Pick<HostFs, 'getdents64' | 'seekTo'>,
  fd: number,
  offset: bigint,
  count: number,
  qids: QidMapper,
  dev: { major: number; minor: number },
  rootIno: bigint | undefined,
): typeof REPLIED {
  host.seekTo(fd, offset);
  // Pass 1: read dirents and find how many whole entries fit in `count`.
  const buf = scratchOf(Math.max(MIN_BATCH, count));
  let filled = 0; // bytes of dirents in buf
  let take = 0; // dirent bytes whose entries fit
  let size = 0; // their encoded size
  for (let full = false; !full;) {
    const room = Math.min(buf.length - filled, Math.max(MIN_BATCH, count - size));
    if (room < MIN_BATCH / 2 || count - size < 25) break;
    const n = host.getdents64(fd, buf.subarray(filled, filled + room));
    if (n === 0) break;
    filled += n;
    while (take < filled) {
      const reclen = buf[take + 16]! | (buf[take + 17]! << 8);
      const entry = 24 + nameLength(buf, take, reclen);
      if (size + entry > count) {
        full = true;
        break;
      }
      size += entry;
      take += reclen;
    }
  }
  if (size === 0 && take < filled) throw new P9Error(Errno.EINVAL, 'readdir count too small for the next entry');
  // Pass 2: encode them into the reply.
  const p = target.beginReply(MsgType.Rreaddir, 4 + size);
  const out = target.out.buf;
  w32(out, p, size);
  let pos = p + 4;
  for (let off = 0; off < take;) {
    const reclen = buf[off + 16]! | (buf[off + 17]! << 8);
    const nameLen = nameLength(buf, off, reclen);
    const dtype = buf[off + 18]!;
    out[pos] = dtypeToQidType(dtype);
    out[pos + 1] = 0;
    out[pos + 2] = 0;
    out[pos + 3] = 0;
    out[pos + 4] = 0;
    if (rootIno !== undefined && nameLen === 2 && buf[off + 19] === 0x2e && buf[off + 20] === 0x2e) {
      out.writeBigUInt64LE(qids.path(dev.major, dev.minor, rootIno), pos + 5);
    } else {
      qids.writePath(out, pos + 5, dev.major, dev.minor, buf, off);
    }
    copy8(out, pos + 13, buf, off + 8); // d_off: the cookie to resume after this entry
    out[pos + 21] = dtype;
    out[pos + 22] = nameLen;
    out[pos + 23] = nameLen >>> 8;
    const from = off + 19;
    const to = pos + 24;
    if (nameLen <= 32) for (let i = 0; i < nameLen; i++) out[to + i] = buf[from + i]!;
    else buf.copy(out, to, from, from + nameLen);
    pos = to + nameLen;
    off += reclen;
  }
  return target.endReply(pos);
}

/**
 * Length of the NUL-terminated name of the dirent at `off`. The record is 19 header bytes, the name, a NUL and
 * padding to 8 bytes, so the NUL lies in the last 8 bytes of the record (bounded by its length either way).
 */
function nameLength(buf: Buffer, off: number, reclen: number): number {
  const end = off + reclen;
  let i = Math.max(off + 19, end - 8);
  while (i < end && buf[i] !== 0) i++;
  return i - (off + 19);
}
