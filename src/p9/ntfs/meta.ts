// The mapped metadata of one object on NTFS, in its alternate data stream `lcow.meta` (the way QEMU's mapped
// security models keep what the host filesystem cannot): the emulated host permission bits (with S_ISVTX as the
// record marker, as on Linux), whether the object is a guest symlink (a regular file holding the target, as
// QEMU's mapped models store links), and the guest's record (mode, uid, gid, rdev: metadata-xattr.ts's 24-byte
// record). The guest's extended attributes live in a second stream, `lcow.xattr`.
//
// Both are bounded: a meta stream is exactly META_SIZE bytes (anything else is ignored: the defaults apply), an
// xattr stream at most XATTR_STREAM_MAX bytes (a set that would pass it is ENOSPC, as a full ext4 inode answers).

import { Errno, P9Error } from '../errno.js';
import type { GuestAttrs } from '../metadata.js';
import { decodeRecord, encodeRecord } from '../metadata-xattr.js';

export const META_STREAM = 'lcow.meta';
export const XATTR_STREAM = 'lcow.xattr';

export interface NtfsMeta {
  /** Emulated host permission bits (0..0o7777); undefined: the defaults (0755 directories, 0644 files). */
  perm?: number;
  /** A regular file that is a guest symlink (its content is the target). */
  symlink?: boolean;
  /** The guest's record (security.ts decides when it applies). */
  record?: GuestAttrs;
}

const VERSION = 1;
const F_SYMLINK = 1;
const F_PERM = 2;
const F_RECORD = 4;
const RECORD_SIZE = 24;
export const META_SIZE = 4 + RECORD_SIZE;

// Layout (little endian): version u8 = 1, flags u8, perm u16, record (24 bytes, zero when absent).
export function encodeMeta(m: NtfsMeta): Buffer {
  const b = Buffer.alloc(META_SIZE);
  b[0] = VERSION;
  let flags = 0;
  if (m.symlink) flags |= F_SYMLINK;
  if (m.perm !== undefined) {
    flags |= F_PERM;
    b.writeUInt16LE(m.perm & 0o7777, 2);
  }
  if (m.record !== undefined) {
    flags |= F_RECORD;
    encodeRecord(m.record, b, 4);
  }
  b[1] = flags;
  return b;
}

/** Malformed streams (wrong size or version, unknown flags) are no metadata: the host defaults apply. */
export function decodeMeta(b: Buffer | undefined): NtfsMeta | undefined {
  if (b === undefined || b.length !== META_SIZE || b[0] !== VERSION) return undefined;
  const flags = b[1]!;
  if (flags & ~(F_SYMLINK | F_PERM | F_RECORD)) return undefined;
  const m: NtfsMeta = {};
  if (flags & F_SYMLINK) m.symlink = true;
  if (flags & F_PERM) m.perm = b.readUInt16LE(2) & 0o7777;
  if (flags & F_RECORD) {
    const rec = decodeRecord(b, 4, RECORD_SIZE);
    if (rec !== undefined) m.record = rec;
  }
  return m;
}

export function isEmptyMeta(m: NtfsMeta): boolean {
  return m.perm === undefined && !m.symlink && m.record === undefined;
}

/** Largest xattr stream: every name and value of one object. */
export const XATTR_STREAM_MAX = 64 * 1024;
const XATTR_NAME_MAX = 255;

// Layout: count u16, then per attribute: name length u8, name (UTF-8), value length u32, value.
export function encodeXattrs(attrs: Map<string, Buffer>): Buffer {
  const parts: Buffer[] = [Buffer.alloc(2)];
  parts[0]!.writeUInt16LE(attrs.size, 0);
  let total = 2;
  for (const [name, value] of attrs) {
    const n = Buffer.from(name, 'utf8');
    if (n.length > XATTR_NAME_MAX) throw new P9Error(Errno.ERANGE, 'xattr name too long');
    const head = Buffer.alloc(5 + n.length);
    head[0] = n.length;
    n.copy(head, 1);
    head.writeUInt32LE(value.length, 1 + n.length);
    parts.push(head, value);
    total += head.length + value.length;
    if (total > XATTR_STREAM_MAX) throw new P9Error(Errno.ENOSPC, 'xattr space of the object full');
  }
  return Buffer.concat(parts, total);
}

/** A malformed stream decodes as far as it is well formed (what follows is dropped). */
export function decodeXattrs(b: Buffer | undefined): Map<string, Buffer> {
  const out = new Map<string, Buffer>();
  if (b === undefined || b.length < 2) return out;
  const count = b.readUInt16LE(0);
  let off = 2;
  for (let i = 0; i < count; i++) {
    if (off + 1 > b.length) break;
    const nl = b[off]!;
    if (off + 1 + nl + 4 > b.length) break;
    const name = b.toString('utf8', off + 1, off + 1 + nl);
    const vl = b.readUInt32LE(off + 1 + nl);
    const start = off + 5 + nl;
    if (start + vl > b.length) break;
    out.set(name, Buffer.from(b.subarray(start, start + vl)));
    off = start + vl;
  }
  return out;
}
