// Qid construction. qid.path must be unique per file for the life of the export because the guest derives
// inode numbers from it, and raw st_ino values collide across host devices (bind mounts inside an export).

import { P9Error, Errno } from './errno.js';
import { QidType, type Qid } from './messages.js';
import { S_IFDIR, S_IFLNK, S_IFMT, type StatX } from '../util/syscalls.js';

const INO_BITS = 56n;
const INO_LIMIT = 1n << INO_BITS;
const DIRECT_DEVICES = 255; // device prefixes 0..254; 0xff marks the overflow table
const OVERFLOW_PREFIX = 0xffn << INO_BITS;

/**
 * Maps (device, inode) to a 64-bit qid.path: the top 8 bits are a small per-device index assigned on first
 * sight (the export root's device gets 0), the low 56 bits the inode. Inodes >= 2^56 or a 256th device go to
 * an explicit, bounded table; when that is full the file cannot be named (ENFILE), like QEMU's multidevs=remap.
 */
export class QidMapper {
  private readonly deviceIndex = new Map<number, number>();
  private readonly overflow = new Map<string, bigint>();

  constructor(private readonly maxOverflow = 1 << 20) {}

  path(devMajor: number, devMinor: number, ino: bigint): bigint {
    const devKey = devMajor * 0x100000000 + devMinor;
    let index = this.deviceIndex.get(devKey);
    if (index === undefined && this.deviceIndex.size < DIRECT_DEVICES) {
      index = this.deviceIndex.size;
      this.deviceIndex.set(devKey, index);
    }
    if (index !== undefined && ino < INO_LIMIT) return (BigInt(index) << INO_BITS) | ino;
    const key = `${devKey}:${ino}`;
    let mapped = this.overflow.get(key);
    if (mapped === undefined) {
      if (this.overflow.size >= this.maxOverflow) throw new P9Error(Errno.ENFILE, 'qid remap table full');
      mapped = OVERFLOW_PREFIX | BigInt(this.overflow.size);
      this.overflow.set(key, mapped);
    }
    return mapped;
  }
}

export function qidTypeForMode(mode: number): number {
  const fmt = mode & S_IFMT;
  if (fmt === S_IFDIR) return QidType.DIR;
  if (fmt === S_IFLNK) return QidType.SYMLINK;
  return QidType.FILE;
}

/**
 * qid.version follows QEMU (mtime ^ size<<8, here with nanoseconds folded in). It must never be 0: a zero
 * version makes v9fs bypass the page cache.
 */
export function qidVersion(st: StatX): number {
  const v = Number(BigInt.asUintN(32, st.mtimeSec ^ BigInt(st.mtimeNsec) ^ (st.size << 8n)));
  return v === 0 ? 1 : v;
}

export function qidFromStat(mapper: QidMapper, st: StatX): Qid {
  return {
    type: qidTypeForMode(st.mode),
    version: qidVersion(st),
    path: mapper.path(st.devMajor, st.devMinor, st.ino),
  };
}
