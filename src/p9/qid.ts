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
  /** The device looked up last (most lookups are of the export root's device). */
  private lastDevKey = -1;
  private lastIndex = -1;

  constructor(private readonly maxOverflow = 1 << 20) {}

  /** The device's prefix index (assigned on first sight), or -1 once all direct prefixes are taken. */
  private indexOf(devMajor: number, devMinor: number): number {
    const devKey = devMajor * 0x100000000 + devMinor;
    if (devKey === this.lastDevKey) return this.lastIndex;
    let index = this.deviceIndex.get(devKey);
    if (index === undefined) {
      if (this.deviceIndex.size >= DIRECT_DEVICES) return -1;
      index = this.deviceIndex.size;
      this.deviceIndex.set(devKey, index);
    }
    this.lastDevKey = devKey;
    this.lastIndex = index;
    return index;
  }

  /**
   * Writes path(devMajor, devMinor, ino) at dst[off] (u64 LE), the inode being the u64 at src[inoOff]: no BigInt
   * unless the inode or device needs the overflow table.
   */
  writePath(dst: Buffer, off: number, devMajor: number, devMinor: number, src: Buffer, inoOff: number): void {
    const index = this.indexOf(devMajor, devMinor);
    const inoHi =
      (src[inoOff + 4]! | (src[inoOff + 5]! << 8) | (src[inoOff + 6]! << 16)) + src[inoOff + 7]! * 0x1000000;
    if (index >= 0 && inoHi < 0x1000000) {
      dst[off] = src[inoOff]!;
      dst[off + 1] = src[inoOff + 1]!;
      dst[off + 2] = src[inoOff + 2]!;
      dst[off + 3] = src[inoOff + 3]!;
      const hi = index * 0x1000000 + inoHi;
      dst[off + 4] = hi;
      dst[off + 5] = hi >>> 8;
      dst[off + 6] = hi >>> 16;
      dst[off + 7] = hi >>> 24;
      return;
    }
    dst.writeBigUInt64LE(this.path(devMajor, devMinor, src.readBigUInt64LE(inoOff)), off);
  }

  path(devMajor: number, devMinor: number, ino: bigint): bigint {
    const devKey = devMajor * 0x100000000 + devMinor;
    const index = this.indexOf(devMajor, devMinor);
    if (index >= 0 && ino < INO_LIMIT) return (BigInt(index) << INO_BITS) | ino;
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

/** qidVersion() of a raw struct statx (syscalls.statxBuf layout). */
export function qidVersionRaw(b: Buffer): number {
  const mtimeLo = b[112]! | (b[113]! << 8) | (b[114]! << 16) | (b[115]! << 24) | 0;
  const nsec = b[120]! | (b[121]! << 8) | (b[122]! << 16) | (b[123]! << 24) | 0;
  const size8 = (b[40]! << 8) | (b[41]! << 16) | (b[42]! << 24);
  const v = (mtimeLo ^ nsec ^ size8) >>> 0;
  return v === 0 ? 1 : v;
}

/** Writes the qid (type[1] version[4] path[8]) of a raw struct statx at dst[off]; returns its type. */
export function writeQidRaw(mapper: QidMapper, dst: Buffer, off: number, b: Buffer): number {
  const type = qidTypeForMode(b[28]! | (b[29]! << 8));
  dst[off] = type;
  const v = qidVersionRaw(b);
  dst[off + 1] = v;
  dst[off + 2] = v >>> 8;
  dst[off + 3] = v >>> 16;
  dst[off + 4] = v >>> 24;
  const devMajor = (b[136]! | (b[137]! << 8) | (b[138]! << 16)) + b[139]! * 0x1000000;
  const devMinor = (b[140]! | (b[141]! << 8) | (b[142]! << 16)) + b[143]! * 0x1000000;
  mapper.writePath(dst, off + 5, devMajor, devMinor, b, 32);
  return type;
}

export function qidFromStat(mapper: QidMapper, st: StatX): Qid {
  return {
    type: qidTypeForMode(st.mode),
    version: qidVersion(st),
    path: mapper.path(st.devMajor, st.devMinor, st.ino),
  };
}
