// Directory listing for Treaddir. Node has no seekdir, and getdents cookies are filesystem-specific, so each
// open directory fid keeps a snapshot of entries and hands out cookie = index + 1. The snapshot is a bounded
// sliding window: entries are read from the host lazily as the guest asks, old ones are dropped once the
// window is full, and a request for an offset before the window re-enumerates from the start and skips to it
// (offsets stay valid as long as the directory does not change, which is what POSIX promises anyway).

import { P9Error, Errno } from './errno.js';
import type { QidMapper } from './qid.js';
import { QidType, type Qid } from './messages.js';
import { getdents64, lseek } from '../util/syscalls.js';

export interface DirEntry {
  ino: bigint;
  dtype: number;
  name: string;
}

const DT_DIR = 4;
const DT_LNK = 10;
const GETDENTS_BUF = 64 * 1024;

export class DirSnapshot {
  /** Entries [base, base + entries.length) of the enumeration. */
  entries: DirEntry[] = [];
  base = 0;
  /** True once getdents returned 0 for the current enumeration. */
  eof = false;
  /** Host handle generation the enumeration position belongs to (an LRU reopen resets the position). */
  generation = -1;

  constructor(readonly maxEntries: number) {}

  /** Starts over from the first entry (rewinddir, or a seek backwards out of the window). */
  restart(fd: number, generation: number): void {
    lseek(fd, 0, 0);
    this.entries = [];
    this.base = 0;
    this.eof = false;
    this.generation = generation;
  }

  /** Makes sure entry `index` is in the window, or sets eof. */
  ensure(fd: number, generation: number, index: number, buf: Buffer): void {
    if (generation !== this.generation || index < this.base) {
      const skipTo = index;
      this.restart(fd, generation);
      while (!this.eof && this.base + this.entries.length <= skipTo) {
        this.fill(fd, buf);
        this.trim(skipTo);
      }
      return;
    }
    while (!this.eof && this.base + this.entries.length <= index) {
      this.fill(fd, buf);
      this.trim(index);
    }
  }

  private trim(keepFrom: number): void {
    const excess = this.entries.length - this.maxEntries;
    if (excess <= 0) return;
    const drop = Math.min(excess, Math.max(0, keepFrom - this.base));
    if (drop === 0) throw new P9Error(Errno.EOVERFLOW, 'directory snapshot window exceeded');
    this.entries.splice(0, drop);
    this.base += drop;
  }

  private fill(fd: number, buf: Buffer): void {
    const n = getdents64(fd, buf);
    if (n === 0) {
      this.eof = true;
      return;
    }
    for (let off = 0; off < n;) {
      const ino = buf.readBigUInt64LE(off);
      const reclen = buf.readUInt16LE(off + 16);
      const dtype = buf[off + 18]!;
      const nameEnd = buf.indexOf(0, off + 19);
      const name = buf.toString('utf8', off + 19, nameEnd < 0 || nameEnd > off + reclen ? off + reclen : nameEnd);
      this.entries.push({ ino, dtype, name });
      off += reclen;
    }
  }
}

export const getdentsBuffer = (): Buffer => Buffer.allocUnsafe(GETDENTS_BUF);

function dtypeToQidType(dtype: number): number {
  if (dtype === DT_DIR) return QidType.DIR;
  if (dtype === DT_LNK) return QidType.SYMLINK;
  return QidType.FILE;
}

/**
 * Encodes whole entries starting at `offset` into at most `count` bytes:
 * qid[13] offset[8] type[1] name[s] each.
 */
export function encodeEntries(
  snap: DirSnapshot,
  fd: number,
  generation: number,
  offset: number,
  count: number,
  qids: QidMapper,
  dev: { major: number; minor: number },
  rootIno: bigint | undefined,
  out: Buffer,
  outOffset: number,
  scratch: Buffer,
): number {
  let pos = outOffset;
  const limit = outOffset + count;
  for (let index = offset; ; index++) {
    snap.ensure(fd, generation, index, scratch);
    const e = snap.entries[index - snap.base];
    if (e === undefined) break;
    const nameLen = Buffer.byteLength(e.name);
    const size = 13 + 8 + 1 + 2 + nameLen;
    if (pos + size > limit) break;
    // `..` of the export root would name a host directory outside it: present the root instead.
    const ino = rootIno !== undefined && e.name === '..' ? rootIno : e.ino;
    const qid: Qid = { type: dtypeToQidType(e.dtype), version: 0, path: qids.path(dev.major, dev.minor, ino) };
    out[pos] = qid.type;
    out.writeUInt32LE(0, pos + 1);
    out.writeBigUInt64LE(qid.path, pos + 5);
    out.writeBigUInt64LE(BigInt(index + 1), pos + 13);
    out[pos + 21] = e.dtype;
    out.writeUInt16LE(nameLen, pos + 22);
    out.write(e.name, pos + 24, 'utf8');
    pos += size;
  }
  return pos - outOffset;
}
