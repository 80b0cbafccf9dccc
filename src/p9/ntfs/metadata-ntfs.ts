// The NTFS MetadataStore: the guest's records and extended attributes in alternate data streams of the objects
// themselves (ntfs/meta.ts), through the NTFS layer's handles. Same contract as the Linux store
// (metadata-xattr.ts): a record's presence is marked by S_ISVTX in the (emulated) host permission bits, records
// live on regular files and directories, and the guest's xattrs only on those (Linux refuses user.* on symlinks
// and special files; so does this store).
//
// Differences from Linux: a guest symlink is a file, so its record is its own (not its directory's); NTFS has no
// host xattrs, so `read-through` shows nothing more than `mapped`; there is no POSIX owner to change (EPERM: the
// policy records ownership instead).

import { Errno, P9Error } from '../errno.js';
import type { GuestAttrs, HostObject, HostXattrView, MetadataStore } from '../metadata.js';
import {
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_ISVTX,
  XATTR_CREATE,
  XATTR_REPLACE,
  type StatX,
} from '../../util/syscalls.js';
import type { NtfsHostFs } from './hostfs-ntfs.js';

const NAMESPACES = ['user.', 'trusted.', 'security.', 'system.'];
const XATTR_NAME_MAX = 255;
const XATTR_LIST_MAX = 65536;

function isRegOrDir(st: StatX): boolean {
  const fmt = st.mode & S_IFMT;
  return fmt === S_IFREG || fmt === S_IFDIR;
}

function checkName(name: string): void {
  if (name === '' || name.includes('\0')) throw new P9Error(Errno.EINVAL);
  if (!NAMESPACES.some((ns) => name.startsWith(ns) && name.length > ns.length)) throw new P9Error(Errno.EOPNOTSUPP);
  if (Buffer.byteLength(name) > XATTR_NAME_MAX) throw new P9Error(Errno.ERANGE, 'xattr name too long');
}

export class NtfsMetadataStore implements MetadataStore {
  readonly kind = 'ntfs-stream';

  constructor(private readonly fs: NtfsHostFs) {}

  chmod(obj: HostObject, perm: number): void {
    if (!isRegOrDir(obj.st)) throw new P9Error(Errno.EPERM, 'chmod of a special file');
    this.fs.chmodFd(obj.fd, perm);
  }

  chown(): void {
    throw new P9Error(Errno.EPERM, 'NTFS objects have no POSIX owner');
  }

  read(obj: HostObject): GuestAttrs | undefined {
    if ((obj.st.mode & S_ISVTX) === 0 || !isRegOrDir(obj.st)) return undefined;
    return this.fs.readMeta(obj.fd).record;
  }

  markedPerm(hostPerm: number, hasRecord: boolean): number {
    return hasRecord ? hostPerm | S_ISVTX : hostPerm & ~S_ISVTX;
  }

  write(obj: HostObject, attrs: GuestAttrs | undefined, hostPerm: number): void {
    if (!isRegOrDir(obj.st)) throw new P9Error(Errno.EPERM, 'records only on regular files and directories');
    const meta = this.fs.readMeta(obj.fd);
    const next = { ...meta, perm: this.markedPerm(hostPerm, attrs !== undefined) & 0o7777 };
    if (attrs !== undefined) next.record = attrs;
    else delete next.record;
    // One stream write: the record and its marker change together.
    this.fs.writeMeta(obj.fd, next);
  }

  readLink(dir: HostObject, name: string, link: StatX): GuestAttrs | undefined {
    if ((dir.st.mode & S_IFMT) !== S_IFDIR || (link.mode & S_IFMT) !== S_IFLNK) return undefined;
    const meta = this.fs.readMetaOf(dir.fd, name);
    // A host reparse point has no meta stream; a guest symlink file carries its own record.
    return meta?.symlink ? meta.record : undefined;
  }

  writeLink(dir: HostObject, name: string, link: StatX, attrs: GuestAttrs | undefined): void {
    if ((dir.st.mode & S_IFMT) !== S_IFDIR || (link.mode & S_IFMT) !== S_IFLNK) throw new P9Error(Errno.EINVAL);
    let meta;
    try {
      meta = this.fs.readMetaOf(dir.fd, name);
    } catch (err) {
      // The link is gone (its record went with it): nothing to drop.
      if (attrs === undefined && (err as { errno?: number; code?: string }).code === 'ENOENT') return;
      throw err;
    }
    if (!meta?.symlink) {
      if (attrs === undefined) return;
      throw new P9Error(Errno.EPERM, 'no record on a host reparse point');
    }
    const next = { ...meta };
    if (attrs !== undefined) next.record = attrs;
    else delete next.record;
    this.fs.writeMetaOf(dir.fd, name, next);
  }

  isPrivilegedName(name: string): boolean {
    return !name.startsWith('user.');
  }

  getXattr(obj: HostObject, name: string, _view: HostXattrView): Buffer {
    checkName(name);
    if (!isRegOrDir(obj.st)) throw new P9Error(Errno.ENODATA);
    const v = this.fs.readXattrs(obj.fd).get(name);
    if (v === undefined) throw new P9Error(Errno.ENODATA);
    return v;
  }

  listXattrs(obj: HostObject, _view: HostXattrView): Buffer {
    if (!isRegOrDir(obj.st)) return Buffer.alloc(0);
    const out = Buffer.from([...this.fs.readXattrs(obj.fd).keys()].map((n) => n + '\0').join(''), 'utf8');
    if (out.length > XATTR_LIST_MAX) throw new P9Error(Errno.E2BIG);
    return out;
  }

  setXattr(obj: HostObject, name: string, value: Buffer, flags: number, _view: HostXattrView): void {
    checkName(name);
    if (!isRegOrDir(obj.st)) throw new P9Error(Errno.EPERM);
    const attrs = this.fs.readXattrs(obj.fd);
    const exists = attrs.has(name);
    if (flags & XATTR_CREATE && exists) throw new P9Error(Errno.EEXIST);
    if (flags & XATTR_REPLACE && !exists) throw new P9Error(Errno.ENODATA);
    attrs.set(name, Buffer.from(value));
    this.fs.writeXattrs(obj.fd, attrs);
  }

  removeXattr(obj: HostObject, name: string, _view: HostXattrView): void {
    checkName(name);
    if (!isRegOrDir(obj.st)) throw new P9Error(Errno.ENODATA);
    const attrs = this.fs.readXattrs(obj.fd);
    if (!attrs.delete(name)) throw new P9Error(Errno.ENODATA);
    this.fs.writeXattrs(obj.fd, attrs);
  }
}
