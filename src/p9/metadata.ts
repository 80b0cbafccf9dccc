// Where the guest's view of a file lives when it differs from the host's: the mapped half of the share security
// model (security.ts decides *what* is recorded; a MetadataStore decides *how* it is kept on the host).
//
// The Linux store (metadata-xattr.ts) keeps records in `user.lcow.*` extended attributes. A Windows host has no
// user xattrs and no POSIX modes: its store would keep the same records in NTFS alternate data streams or side
// files. Nothing outside metadata-xattr.ts knows the host encoding.

import type { StatX } from '../util/syscalls.js';

/**
 * The guest's attributes of an object where they differ from the host's; an absent field means "the host's
 * value". A record that exists always carries `mode` (the full st_mode: file type and permission bits), so a
 * host bit the store uses as a marker never leaks into the guest's view.
 */
export interface GuestAttrs {
  mode?: number;
  uid?: number;
  gid?: number;
  rdevMajor?: number;
  rdevMinor?: number;
}

/** A host object: an O_PATH handle on it (never followed) and its statx. */
export interface HostObject {
  fd: number;
  st: StatX;
}

/**
 * Which host extended attributes the guest sees besides its own: `mapped` shows only unprivileged host names
 * (`user.*`), `read-through` also the host's own privileged ones (`security.capability` of a file from an image
 * layer), under their real names. The guest's writes of privileged names are always kept mapped.
 */
export type HostXattrView = 'mapped' | 'read-through';

/**
 * Everything the share security model needs from the host's metadata: the guest's records, extended attributes
 * by guest name, and the two host attribute changes the model makes itself (permission bits, owner).
 */
export interface MetadataStore {
  /** Short name for logs and docs ("user-xattr"). */
  readonly kind: string;

  /** Sets the host permission bits (0..0o7777) of a regular file or directory, record untouched. */
  chmod(obj: HostObject, perm: number): void;
  /** Sets the host owner of any object (symlinks included, never following them). */
  chown(obj: HostObject, uid: number, gid: number): void;

  /** The record of a regular file or directory, or undefined. Must be cheap when there is none. */
  read(obj: HostObject): GuestAttrs | undefined;
  /**
   * Replaces the record of a regular file or directory (undefined removes it) and sets the host permission bits
   * to `hostPerm` (0..0o1777) in the same step, since a store may keep a marker in them.
   */
  write(obj: HostObject, attrs: GuestAttrs | undefined, hostPerm: number): void;
  /** Host permission bits an object ends up with for `hostPerm` when it has a record (the store's marker). */
  markedPerm(hostPerm: number, hasRecord: boolean): number;

  /** The record of symlink `name` (statx `link`) in directory `dir`; symlinks cannot carry records themselves. */
  readLink(dir: HostObject, name: string, link: StatX): GuestAttrs | undefined;
  writeLink(dir: HostObject, name: string, link: StatX, attrs: GuestAttrs | undefined): void;

  /** Extended attributes by guest name. ENODATA when absent; E2BIG above 64 KiB. */
  getXattr(obj: HostObject, name: string, view: HostXattrView): Buffer;
  /** Guest names, each NUL-terminated, as listxattr returns them. */
  listXattrs(obj: HostObject, view: HostXattrView): Buffer;
  /** flags: XATTR_CREATE / XATTR_REPLACE, judged against what the guest sees. */
  setXattr(obj: HostObject, name: string, value: Buffer, flags: number, view: HostXattrView): void;
  removeXattr(obj: HostObject, name: string, view: HostXattrView): void;
  /** True for names the guest may not have written to the host as they are (everything but user.*). */
  isPrivilegedName(name: string): boolean;
}
