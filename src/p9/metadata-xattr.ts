// The Linux MetadataStore: guest records in `user.lcow.*` extended attributes of the host objects.
//
//   user.lcow.meta        record of a regular file or directory (24 bytes, layout below)
//   user.lcow.l.NAME      record of symlink NAME, kept by its directory (Linux refuses user.* xattrs on
//                         symlinks); `user.lcow.l#HASH` when the name is too long for an xattr name
//   user.lcow.x.NAME      the guest's extended attribute NAME when it is not a plain user.* one
//                         (security.*, trusted.*, system.*, and guest names that start with user.lcow.)
//
// Every other user.* attribute passes through under its own name. The guest never sees or sets user.lcow.*
// names directly (its own `user.lcow.foo` is stored as user.lcow.x.user.lcow.foo).
//
// Marker: an object with a record has S_ISVTX in its host mode, so that the common case (no record) costs no
// extra syscall on Tgetattr. S_ISVTX means nothing for a regular file on Linux; on a directory it restricts
// deletion by non-owners, which does not matter because the server only sets it on objects that no other host
// user can write (see security.ts). A record always carries the guest's full mode, so the marker bit never
// shows through to the guest.
//
// Objects are named through /proc/self/fd/N of their O_PATH handle with the *following* xattr calls: for a
// regular file or directory, following that magic link lands on exactly that inode (no path is re-resolved).

import { Errno, P9Error } from './errno.js';
import type { GuestAttrs, HostObject, HostXattrView, MetadataStore } from './metadata.js';
import {
  AT_EMPTY_PATH,
  AT_SYMLINK_NOFOLLOW,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_ISVTX,
  XATTR_CREATE,
  XATTR_REPLACE,
  chmodFd,
  fchownat,
  getxattr,
  listxattr,
  procFdPath,
  removexattr,
  setxattr,
  type StatX,
} from '../util/syscalls.js';

export const XATTR_SIZE_MAX = 65536;
const XATTR_NAME_MAX = 255;

const PREFIX = 'user.lcow.';
const META = 'user.lcow.meta';
const MAPPED = 'user.lcow.x.';
const LINK = 'user.lcow.l.';
const LINK_HASHED = 'user.lcow.l#';
/** The only privileged host attribute the guest may remove from an existing object: dropping it de-privileges. */
const REMOVABLE_HOST_NAMES = new Set(['security.capability']);
const NAMESPACES = ['user.', 'trusted.', 'security.', 'system.'];

// Record layout (little endian): version u8 = 1, fields u8 (1 mode, 2 uid, 4 gid, 8 rdev), 2 reserved bytes,
// then mode, uid, gid, rdev major, rdev minor as u32. A link record is the symlink's inode number (u64)
// followed by a record.
const VERSION = 1;
const F_MODE = 1;
const F_UID = 2;
const F_GID = 4;
const F_RDEV = 8;
const RECORD_SIZE = 24;

export function encodeRecord(a: GuestAttrs, out = Buffer.alloc(RECORD_SIZE), at = 0): Buffer {
  let fields = 0;
  if (a.mode !== undefined) fields |= F_MODE;
  if (a.uid !== undefined) fields |= F_UID;
  if (a.gid !== undefined) fields |= F_GID;
  if (a.rdevMajor !== undefined || a.rdevMinor !== undefined) fields |= F_RDEV;
  out[at] = VERSION;
  out[at + 1] = fields;
  out.writeUInt16LE(0, at + 2);
  out.writeUInt32LE((a.mode ?? 0) >>> 0, at + 4);
  out.writeUInt32LE((a.uid ?? 0) >>> 0, at + 8);
  out.writeUInt32LE((a.gid ?? 0) >>> 0, at + 12);
  out.writeUInt32LE((a.rdevMajor ?? 0) >>> 0, at + 16);
  out.writeUInt32LE((a.rdevMinor ?? 0) >>> 0, at + 20);
  return out;
}

/** Parses a record from host storage; anything malformed is no record (the host's values apply). */
export function decodeRecord(buf: Buffer, at = 0, len = buf.length - at): GuestAttrs | undefined {
  if (len !== RECORD_SIZE || buf[at] !== VERSION) return undefined;
  const fields = buf[at + 1]!;
  const a: GuestAttrs = {};
  if (fields & F_MODE) a.mode = buf.readUInt32LE(at + 4);
  if (fields & F_UID) a.uid = buf.readUInt32LE(at + 8);
  if (fields & F_GID) a.gid = buf.readUInt32LE(at + 12);
  if (fields & F_RDEV) {
    a.rdevMajor = buf.readUInt32LE(at + 16);
    a.rdevMinor = buf.readUInt32LE(at + 20);
  }
  // A record without a mode would let the marker bit show through: treat it as absent.
  return a.mode === undefined ? undefined : a;
}

function code(err: unknown): string | undefined {
  return (err as { code?: string }).code;
}

/** Errors of a record read that mean "no record": absent, not ours (too large), or no xattr support. */
function noRecord(err: unknown): boolean {
  const c = code(err);
  return c === 'ENODATA' || c === 'ERANGE' || c === 'ENOTSUP' || c === 'EOPNOTSUPP';
}

function fnv64(s: string): string {
  let h = 0xcbf29ce484222325n;
  for (const b of Buffer.from(s, 'utf8')) h = BigInt.asUintN(64, (h ^ BigInt(b)) * 0x100000001b3n);
  return h.toString(16).padStart(16, '0');
}

function linkKey(name: string): string {
  const plain = LINK + name;
  return Buffer.byteLength(plain) <= XATTR_NAME_MAX ? plain : LINK_HASHED + fnv64(name);
}

function isRegOrDir(st: StatX): boolean {
  const fmt = st.mode & S_IFMT;
  return fmt === S_IFREG || fmt === S_IFDIR;
}

/** One reused buffer for xattr reads: a value or name list never exceeds XATTR_SIZE_MAX. */
const scratch = Buffer.allocUnsafe(XATTR_SIZE_MAX);
const recordScratch = Buffer.alloc(8 + RECORD_SIZE);

export class UserXattrStore implements MetadataStore {
  readonly kind = 'user-xattr';

  chmod(obj: HostObject, perm: number): void {
    if (!isRegOrDir(obj.st)) throw new P9Error(Errno.EPERM, 'chmod of a special file');
    chmodFd(obj.fd, perm);
  }

  chown(obj: HostObject, uid: number, gid: number): void {
    fchownat(obj.fd, '', uid, gid, AT_EMPTY_PATH | AT_SYMLINK_NOFOLLOW);
  }

  read(obj: HostObject): GuestAttrs | undefined {
    if ((obj.st.mode & S_ISVTX) === 0 || !isRegOrDir(obj.st)) return undefined;
    let n: number;
    try {
      n = getxattr(procFdPath(obj.fd), META, recordScratch);
    } catch (err) {
      if (noRecord(err)) return undefined;
      throw err;
    }
    return decodeRecord(recordScratch, 0, n);
  }

  markedPerm(hostPerm: number, hasRecord: boolean): number {
    return hasRecord ? hostPerm | S_ISVTX : hostPerm & ~S_ISVTX;
  }

  write(obj: HostObject, attrs: GuestAttrs | undefined, hostPerm: number): void {
    if (!isRegOrDir(obj.st)) throw new P9Error(Errno.EPERM, 'records only on regular files and directories');
    const path = procFdPath(obj.fd);
    const current = obj.st.mode & 0o7777;
    if (attrs !== undefined) {
      // Record first, then the marker: a marker without a record shows the host mode, never a wrong one.
      setxattr(path, META, encodeRecord(attrs), 0);
      const want = this.markedPerm(hostPerm, true);
      if (current !== want) chmodFd(obj.fd, want);
      return;
    }
    const want = this.markedPerm(hostPerm, false);
    if (current !== want) chmodFd(obj.fd, want);
    if (obj.st.mode & S_ISVTX) {
      try {
        removexattr(path, META);
      } catch (err) {
        if (code(err) !== 'ENODATA') throw err;
      }
    }
  }

  readLink(dir: HostObject, name: string, link: StatX): GuestAttrs | undefined {
    if ((dir.st.mode & S_IFMT) !== S_IFDIR) return undefined;
    let n: number;
    try {
      n = getxattr(procFdPath(dir.fd), linkKey(name), recordScratch);
    } catch (err) {
      if (noRecord(err)) return undefined;
      throw err;
    }
    // A record for another inode is stale (the link was replaced behind the server's back).
    if (n !== 8 + RECORD_SIZE || recordScratch.readBigUInt64LE(0) !== link.ino) return undefined;
    return decodeRecord(recordScratch, 8, RECORD_SIZE);
  }

  writeLink(dir: HostObject, name: string, link: StatX, attrs: GuestAttrs | undefined): void {
    if ((dir.st.mode & S_IFMT) !== S_IFDIR || (link.mode & S_IFMT) !== S_IFLNK) throw new P9Error(Errno.EINVAL);
    const path = procFdPath(dir.fd);
    const key = linkKey(name);
    if (attrs === undefined) {
      try {
        removexattr(path, key);
      } catch (err) {
        if (code(err) !== 'ENODATA') throw err;
      }
      return;
    }
    const value = Buffer.alloc(8 + RECORD_SIZE);
    value.writeBigUInt64LE(link.ino, 0);
    encodeRecord(attrs, value, 8);
    setxattr(path, key, value, 0);
  }

  isPrivilegedName(name: string): boolean {
    return !name.startsWith('user.');
  }

  getXattr(obj: HostObject, name: string, view: HostXattrView): Buffer {
    const hostName = this.hostName(name);
    if (!isRegOrDir(obj.st)) return this.noXattrs();
    const path = procFdPath(obj.fd);
    try {
      return readValue(path, hostName);
    } catch (err) {
      if (!(code(err) === 'ENODATA' && view === 'read-through' && this.isPrivilegedName(name))) throw err;
    }
    return readValue(path, name);
  }

  listXattrs(obj: HostObject, view: HostXattrView): Buffer {
    if (!isRegOrDir(obj.st)) return Buffer.alloc(0);
    const n = sizedCall(() => listxattr(procFdPath(obj.fd), scratch));
    const guestNames = new Set<string>();
    const hostOwn: string[] = [];
    for (let off = 0; off < n;) {
      let end = scratch.indexOf(0, off);
      if (end < 0 || end > n) end = n;
      const host = scratch.toString('utf8', off, end);
      off = end + 1;
      if (host.startsWith(MAPPED)) guestNames.add(host.slice(MAPPED.length));
      else if (host.startsWith(PREFIX)) continue;
      else if (host.startsWith('user.')) guestNames.add(host);
      else if (view === 'read-through') hostOwn.push(host);
    }
    for (const h of hostOwn) guestNames.add(h);
    const out = Buffer.from([...guestNames].map((g) => g + '\0').join(''), 'utf8');
    if (out.length > XATTR_SIZE_MAX) throw new P9Error(Errno.E2BIG);
    return out;
  }

  setXattr(obj: HostObject, name: string, value: Buffer, flags: number, view: HostXattrView): void {
    const hostName = this.hostName(name);
    // Linux allows user.* only on regular files and directories; the mapped names are user.* too.
    if (!isRegOrDir(obj.st)) throw new P9Error(Errno.EPERM);
    const path = procFdPath(obj.fd);
    if (view === 'read-through' && this.isPrivilegedName(name) && flags !== 0) {
      // The guest sees the host's own attribute of that name: XATTR_CREATE/REPLACE are judged on what it sees.
      const visible = this.exists(path, hostName) || this.exists(path, name);
      if (flags & XATTR_CREATE && visible) throw new P9Error(Errno.EEXIST);
      if (flags & XATTR_REPLACE && !visible) throw new P9Error(Errno.ENODATA);
      flags = 0;
    }
    setxattr(path, hostName, value, flags);
  }

  removeXattr(obj: HostObject, name: string, view: HostXattrView): void {
    const hostName = this.hostName(name);
    if (!isRegOrDir(obj.st)) throw new P9Error(Errno.ENODATA);
    const path = procFdPath(obj.fd);
    try {
      removexattr(path, hostName);
      return;
    } catch (err) {
      if (!(code(err) === 'ENODATA' && view === 'read-through' && this.isPrivilegedName(name))) throw err;
    }
    if (!this.exists(path, name)) throw new P9Error(Errno.ENODATA);
    // Dropping a file capability that came with the image only takes privilege away; any other host-owned
    // privileged attribute (an LSM label, IMA data) is not the guest's to remove.
    if (!REMOVABLE_HOST_NAMES.has(name)) throw new P9Error(Errno.EPERM, `host attribute ${name} is not removable`);
    removexattr(path, name);
  }

  /** Host name of a guest attribute name; EOPNOTSUPP for an unknown namespace, ERANGE when too long. */
  hostName(name: string): string {
    if (name === '' || name.includes('\0')) throw new P9Error(Errno.EINVAL);
    if (!NAMESPACES.some((ns) => name.startsWith(ns) && name.length > ns.length)) throw new P9Error(Errno.EOPNOTSUPP);
    const host = name.startsWith('user.') && !name.startsWith(PREFIX) ? name : MAPPED + name;
    if (Buffer.byteLength(host) > XATTR_NAME_MAX) throw new P9Error(Errno.ERANGE, 'xattr name too long');
    return host;
  }

  private exists(path: string, hostName: string): boolean {
    try {
      getxattr(path, hostName, null);
      return true;
    } catch (err) {
      if (code(err) === 'ENODATA') return false;
      throw err;
    }
  }

  private noXattrs(): never {
    throw new P9Error(Errno.ENODATA);
  }
}

/** Runs a call that fills `scratch`; a result larger than XATTR_SIZE_MAX is E2BIG (what Linux answers too). */
function sizedCall(call: () => number): number {
  try {
    return call();
  } catch (err) {
    if (code(err) === 'ERANGE') throw new P9Error(Errno.E2BIG);
    throw err;
  }
}

function readValue(path: string, hostName: string): Buffer {
  const n = sizedCall(() => getxattr(path, hostName, scratch));
  return Buffer.from(scratch.subarray(0, n));
}
