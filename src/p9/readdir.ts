// Directory listing for Treaddir, with no per-fid state: every request seeks the directory's fd to the offset
// the guest sends (0, or the d_off cookie of the last entry it got, exactly as getdents64 reported it) and reads
// one batch with getdents64 straight into a scratch buffer, then encodes entries into the reply until `count` is
// full. Entries read but not sent cost nothing later: the next request seeks to the last sent entry's cookie.
// This is what QEMU (telldir/seekdir) and diod do, and why a directory fd can be shared by every fid that opened
// the directory the same way: seek and read happen in one synchronous step.
//
// Cost per request: one lseek, getdents64 of at most about `count` bytes (count <= msize), one pass over them;
// names are copied as bytes, no per-entry stat (qid type from d_type). On filesystems whose cookies are entry
// indexes (tmpfs, overlayfs merged directories) the kernel walks to the offset: O(entries before it), in the
// kernel, bounded by the directory's size.

import { Errno, P9Error } from './errno.js';
import type { QidMapper } from './qid.js';
import { QidType } from './messages.js';
import { MAX_MSIZE } from './options.js';
import { getdents64, seekTo } from '../util/syscalls.js';

const DT_DIR = 4;
const DT_LNK = 10;
/** getdents64 refuses a buffer that cannot hold the next entry (up to 280 bytes): never ask for less. */
const MIN_BATCH = 4096;

let scratch = Buffer.allocUnsafe(64 * 1024);

function scratchOf(size: number): Buffer {
  if (scratch.length < size) scratch = Buffer.allocUnsafe(Math.min(MAX_MSIZE, Math.max(size, scratch.length * 2)));
  return scratch;
}

function dtypeToQidType(dtype: number): number {
  if (dtype === DT_DIR) return QidType.DIR;
  if (dtype === DT_LNK) return QidType.SYMLINK;
  return QidType.FILE;
}

/**
 * Encodes whole entries from directory cookie `offset` into out[outOffset, outOffset + count):
 * qid[13] offset[8] type[1] name[s] each. Returns the bytes written (0 at the end of the directory).
 * `rootIno`: set for the export root, whose `..` must not name the host directory above it.
 */
export function readDirectory(
  fd: number,
  offset: bigint,
  count: number,
  qids: QidMapper,
  dev: { major: number; minor: number },
  rootIno: bigint | undefined,
  out: Buffer,
  outOffset: number,
): number {
  let pos = outOffset;
  const limit = outOffset + count;
  seekTo(fd, offset);
  for (;;) {
    const room = limit - pos;
    if (room < 25) break;
    const buf = scratchOf(Math.max(MIN_BATCH, room));
    const n = getdents64(fd, buf.subarray(0, Math.min(buf.length, Math.max(MIN_BATCH, room))));
    if (n === 0) break;
    let full = false;
    for (let off = 0; off < n;) {
      const reclen = buf.readUInt16LE(off + 16);
      let nameEnd = buf.indexOf(0, off + 19);
      if (nameEnd < 0 || nameEnd > off + reclen) nameEnd = off + reclen;
      const nameLen = nameEnd - (off + 19);
      const size = 24 + nameLen;
      if (pos + size > limit) {
        full = true;
        break;
      }
      let ino = buf.readBigUInt64LE(off);
      // `..` of the export root would name a host directory outside it: present the root instead.
      if (rootIno !== undefined && nameLen === 2 && buf[off + 19] === 0x2e && buf[off + 20] === 0x2e) ino = rootIno;
      const dtype = buf[off + 18]!;
      out[pos] = dtypeToQidType(dtype);
      out.writeUInt32LE(0, pos + 1);
      out.writeBigUInt64LE(qids.path(dev.major, dev.minor, ino), pos + 5);
      buf.copy(out, pos + 13, off + 8, off + 16); // d_off: the cookie to resume after this entry
      out[pos + 21] = dtype;
      out.writeUInt16LE(nameLen, pos + 22);
      buf.copy(out, pos + 24, off + 19, nameEnd);
      pos += size;
      off += reclen;
    }
    if (full) {
      if (pos === outOffset) throw new P9Error(Errno.EINVAL, 'readdir count too small for the next entry');
      break;
    }
  }
  return pos - outOffset;
}
