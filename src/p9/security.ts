// The share security model: what the guest may change on the host, and how the rest of its view is kept.
//
// Rule for every model: nothing the guest does creates, on the host, an object the host treats with privilege.
// The host never gets from the guest a setuid or setgid bit, a device node, FIFO or socket, a security.*,
// trusted.* or system.* extended attribute, or (in `mapped`) an owner other than the server's own user. The
// guest still sees all of that: it is kept in records (metadata.ts) and laid over the host's attributes.
//
//  mapped (bind mounts, the default): objects the guest creates belong to the server's user; their host mode
//    is the guest's permission bits without group/other write (so no other host user can alter them or their
//    records). Records are honoured only on objects the server's user owns and no other host user can write:
//    a host user who can write a shared file cannot forge a guest-side setuid, owner, device or capability.
//    On other objects (a host user's files in the shared directory) the guest may change permission bits
//    but gets EPERM for privileged changes (setuid/setgid, owner, privileged xattrs): it cannot hand host
//    users' files to root, and deleting and recreating the file is what it could do anyway.
//    The guest sees only its own privileged xattrs, never the host's (LSM labels, capabilities of host files).
//
//  passthrough-existing (container rootfs snapshots, under directories only root can reach): existing objects
//    pass through as they are (setuid binaries and file capabilities from image layers keep working). Owners
//    pass through to the host (the image's uids are host uids on disk), permission bits too, except setuid and
//    setgid; privileged xattrs the guest writes are mapped, the host's own are visible. Records are honoured
//    everywhere, because no host user can reach the snapshot.
//
// The server never opens, chmods or chowns a host device node, FIFO or socket (EPERM), and never creates one:
// the guest's are regular files of mode 0600 on the host whose type and device number live in their record.
// Symlinks are real symlinks (they carry no privilege and the server never follows them); in `mapped` their
// guest owner is recorded by their directory.

import { Errno, P9Error } from './errno.js';
import type { GuestAttrs, HostObject, HostXattrView, MetadataStore } from './metadata.js';
import {
  S_IFBLK,
  S_IFCHR,
  S_IFDIR,
  S_IFLNK,
  S_IFMT,
  S_IFREG,
  S_ISGID,
  S_ISUID,
  S_ISVTX,
  type StatX,
} from '../util/syscalls.js';

export const SHARE_SECURITY_MODELS = ['mapped', 'passthrough-existing'] as const;
export type ShareSecurity = (typeof SHARE_SECURITY_MODELS)[number];

export function parseShareSecurity(v: unknown): ShareSecurity {
  if (typeof v === 'string' && (SHARE_SECURITY_MODELS as readonly string[]).includes(v)) return v as ShareSecurity;
  throw new Error(`share security must be one of ${SHARE_SECURITY_MODELS.join(', ')}, got ${JSON.stringify(v)}`);
}

/** The attributes the guest sees (Rgetattr). */
export interface GuestStat {
  mode: number;
  uid: number;
  gid: number;
  rdevMajor: number;
  rdevMinor: number;
}

/** A change the guest asks for (Tsetattr); undefined fields stay. */
export interface AttrChange {
  mode?: number;
  uid?: number;
  gid?: number;
}

/** The parent directory of a symlink, opened on demand (symlink records live there). */
export type LinkParent = () => { dir: HostObject; name: string; done: () => void };

const PRIVILEGED_MODE_BITS = S_ISUID | S_ISGID;

function isRegOrDir(mode: number): boolean {
  const fmt = mode & S_IFMT;
  return fmt === S_IFREG || fmt === S_IFDIR;
}

export class SharePolicy {
  readonly xattrView: HostXattrView;

  constructor(
    readonly model: ShareSecurity,
    readonly store: MetadataStore,
    /** The server's own credentials: owner of everything it creates on a mapped share. */
    readonly serverUid: number = process.geteuid?.() ?? 0,
    readonly serverGid: number = process.getegid?.() ?? 0,
  ) {
    this.xattrView = model === 'mapped' ? 'mapped' : 'read-through';
  }

  /**
   * Whether a record on this object can be trusted. mapped: only if the server's user owns it and no other host
   * user can write it (so nobody but the server could have set its user.* xattrs).
   */
  trusts(st: StatX): boolean {
    return this.model === 'passthrough-existing' || (st.uid === this.serverUid && (st.mode & 0o022) === 0);
  }

  /**
   * Host permission bits for guest permission bits on an object the server controls. Never setuid, setgid or
   * sticky (a sticky guest directory gets a record, whose marker makes the host directory sticky anyway);
   * mapped: never writable by group or other either.
   */
  hostPerm(guestMode: number): number {
    const fmt = guestMode & S_IFMT;
    if (fmt !== S_IFREG && fmt !== S_IFDIR) return 0o600; // placeholder of a special file
    return guestMode & (this.model === 'mapped' ? 0o755 : 0o777);
  }

  /**
   * Whether view() of an object with host mode `mode` may consult a record; when false the guest sees the host's
   * attributes as they are (hot paths then skip building the view).
   */
  mayHaveRecord(mode: number): boolean {
    if ((mode & S_IFMT) === S_IFLNK) return this.model === 'mapped';
    return (mode & S_ISVTX) !== 0 && isRegOrDir(mode);
  }

  /** The guest's view of an object: its host statx, overlaid with its record when there is a trusted one. */
  view(obj: HostObject, linkParent?: LinkParent): GuestStat {
    const st = obj.st;
    const fmt = st.mode & S_IFMT;
    let rec: GuestAttrs | undefined;
    if (fmt === S_IFLNK) {
      if (this.model === 'mapped' && linkParent !== undefined) rec = this.readLink(st, linkParent);
    } else if (isRegOrDir(st.mode) && st.mode & S_ISVTX && this.trusts(st)) {
      rec = this.store.read(obj);
    }
    return overlay(st, rec);
  }

  private readLink(st: StatX, linkParent: LinkParent): GuestAttrs | undefined {
    const p = linkParent();
    try {
      return this.trusts(p.dir.st) ? this.store.readLink(p.dir, p.name, st) : undefined;
    } finally {
      p.done();
    }
  }

  /**
   * Tsetattr's mode/uid/gid part. `current` is the guest's view before the change. Symlinks: mode cannot
   * change (EOPNOTSUPP), owners go to the host (passthrough-existing) or to the directory's record.
   */
  change(obj: HostObject, current: GuestStat, c: AttrChange, linkParent?: LinkParent): void {
    const st = obj.st;
    const fmt = st.mode & S_IFMT;
    const target: GuestStat = {
      ...current,
      mode: c.mode !== undefined ? (current.mode & S_IFMT) | (c.mode & 0o7777) : current.mode,
      uid: c.uid ?? current.uid,
      gid: c.gid ?? current.gid,
    };
    if (fmt === S_IFLNK) {
      if (c.mode !== undefined) throw new P9Error(Errno.EOPNOTSUPP);
      this.changeLinkOwner(obj, target, linkParent);
      return;
    }
    // A device node, FIFO or socket of the host: never made more accessible, never given away.
    if (!isRegOrDir(st.mode)) throw new P9Error(Errno.EPERM, 'host special file');
    if (this.model === 'passthrough-existing') {
      if (target.uid !== st.uid || target.gid !== st.gid) {
        this.store.chown(obj, target.uid, target.gid);
      }
      this.record(obj, target, { uid: target.uid, gid: target.gid });
      return;
    }
    if (!this.trusts(st)) {
      // A host user's object: permission bits yes, privilege no.
      const privileged =
        (target.mode & PRIVILEGED_MODE_BITS) !== (st.mode & PRIVILEGED_MODE_BITS) ||
        target.uid !== st.uid ||
        target.gid !== st.gid ||
        (target.mode & S_IFMT) !== fmt;
      if (privileged) throw new P9Error(Errno.EPERM, 'privileged change of an object the server does not own');
      if ((target.mode & 0o7777) !== (st.mode & 0o7777)) this.store.chmod(obj, target.mode & 0o7777);
      return;
    }
    this.record(obj, target, st);
  }

  /**
   * Brings a controlled object's host mode and record in line with the guest view `target`. `hostIds` is the
   * host's owner after the operation (mapped: the object's own; passthrough-existing: the guest's ids, already
   * applied). Costs nothing when the host mode already matches and no record is needed.
   */
  record(obj: HostObject, target: GuestStat, hostIds: { uid: number; gid: number }): void {
    const p = this.plan(obj.st, target, hostIds);
    if (p !== undefined) this.store.write(obj, p.rec, p.hostPerm);
  }

  /** What record() would write, or undefined when the host already matches. */
  private plan(
    st: StatX,
    target: GuestStat,
    hostIds: { uid: number; gid: number },
  ): { rec: GuestAttrs | undefined; hostPerm: number } | undefined {
    const hostPerm = this.hostPerm(target.mode);
    const rec: GuestAttrs = { mode: target.mode };
    let needed = (target.mode & S_IFMT) !== (st.mode & S_IFMT) || (target.mode & 0o7777) !== hostPerm;
    if (target.uid !== hostIds.uid) {
      rec.uid = target.uid;
      needed = true;
    }
    if (target.gid !== hostIds.gid) {
      rec.gid = target.gid;
      needed = true;
    }
    if (target.rdevMajor !== 0 || target.rdevMinor !== 0) {
      rec.rdevMajor = target.rdevMajor;
      rec.rdevMinor = target.rdevMinor;
      needed = true;
    }
    const hadRecord = (st.mode & S_ISVTX) !== 0;
    if (!needed && !hadRecord && (st.mode & 0o7777) === hostPerm) return undefined;
    return { rec: needed ? rec : undefined, hostPerm };
  }

  /**
   * Whether finishCreate has anything to do for a new object with host statx `st` (so that the common case,
   * a root guest creating 0644 files, costs no extra syscall and no fd).
   */
  createNeedsFinish(st: StatX, guestMode: number, uid: number, gid: number, rdev = { major: 0, minor: 0 }): boolean {
    if (this.model === 'passthrough-existing' && (uid !== st.uid || gid !== st.gid)) return true;
    const target: GuestStat = { mode: guestMode, uid, gid, rdevMajor: rdev.major, rdevMinor: rdev.minor };
    return this.plan(st, target, { uid: st.uid, gid: st.gid }) !== undefined;
  }

  private changeLinkOwner(obj: HostObject, target: GuestStat, linkParent?: LinkParent): void {
    const st = obj.st;
    if (this.model === 'passthrough-existing') {
      this.store.chown(obj, target.uid, target.gid);
      return;
    }
    if (linkParent === undefined) throw new P9Error(Errno.EPERM);
    const p = linkParent();
    try {
      if (!this.trusts(p.dir.st)) {
        if (target.uid !== st.uid || target.gid !== st.gid) throw new P9Error(Errno.EPERM, 'directory not controlled');
        return;
      }
      const same = target.uid === st.uid && target.gid === st.gid;
      this.store.writeLink(p.dir, p.name, st, same ? undefined : { mode: st.mode, uid: target.uid, gid: target.gid });
    } finally {
      p.done();
    }
  }

  /**
   * Host permission bits to create a new regular file or directory with (the guest's mode decides the rest once
   * the object exists: finishCreate).
   */
  createPerm(guestMode: number): number {
    return this.hostPerm(guestMode);
  }

  /**
   * After creating a regular file, directory or special-file placeholder (`obj`, as created): gives it its
   * guest owner (passthrough-existing: on the host), clears bits the host added (a setgid parent), and writes
   * the record when the guest view differs. When this fails the caller removes the new object.
   */
  finishCreate(obj: HostObject, guestMode: number, uid: number, gid: number, rdev = { major: 0, minor: 0 }): void {
    const target: GuestStat = { mode: guestMode, uid, gid, rdevMajor: rdev.major, rdevMinor: rdev.minor };
    let hostIds = { uid: obj.st.uid, gid: obj.st.gid };
    if (this.model === 'passthrough-existing' && (uid !== obj.st.uid || gid !== obj.st.gid)) {
      try {
        this.store.chown(obj, uid, gid);
        hostIds = { uid, gid };
      } catch (err) {
        // Without CAP_CHOWN (a server that is not root) ownership is recorded instead.
        if ((err as { code?: string }).code !== 'EPERM') throw err;
      }
    }
    this.record(obj, target, hostIds);
  }

  /** After creating a symlink: its guest owner (host lchown, or the directory's record; best effort there). */
  finishSymlink(link: HostObject, dir: HostObject, name: string, uid: number, gid: number): void {
    if (uid === link.st.uid && gid === link.st.gid) return;
    if (this.model === 'passthrough-existing') {
      try {
        this.store.chown(link, uid, gid);
      } catch (err) {
        if ((err as { code?: string }).code !== 'EPERM') throw err;
      }
      return;
    }
    if (!this.trusts(dir.st)) return;
    try {
      this.store.writeLink(dir, name, link.st, { mode: link.st.mode, uid, gid });
    } catch {
      // A directory full of link records (ext4 keeps xattrs in one block): the link shows the server's owner.
    }
  }

  /** Xattr reads: privileged names of an untrusted object are invisible in `mapped`. */
  checkXattrRead(st: StatX, name: string): void {
    if (this.store.isPrivilegedName(name) && !this.trusts(st)) throw new P9Error(Errno.ENODATA);
  }

  checkXattrWrite(st: StatX, name: string): void {
    if (this.store.isPrivilegedName(name) && !this.trusts(st)) {
      throw new P9Error(Errno.EPERM, 'privileged xattr on an object the server does not own');
    }
  }

  /** Name list of an object: without privileged names when they cannot be trusted. */
  filterXattrList(st: StatX, list: Buffer): Buffer {
    if (this.trusts(st)) return list;
    const names = list
      .toString('utf8')
      .split('\0')
      .filter((n) => n !== '' && !this.store.isPrivilegedName(n));
    return Buffer.from(names.map((n) => n + '\0').join(''), 'utf8');
  }

  /**
   * Tlink: a new name for a host object that is privileged on the host (setuid, setgid-executable, a device)
   * would keep it reachable where the host does not expect it (the protected_hardlinks rule): refused.
   */
  checkLinkTarget(st: StatX): void {
    const fmt = st.mode & S_IFMT;
    const setgidExec = (st.mode & S_ISGID) !== 0 && (st.mode & 0o010) !== 0;
    if (fmt === S_IFCHR || fmt === S_IFBLK) throw new P9Error(Errno.EPERM, 'link to a host device node');
    if (fmt === S_IFREG && (st.mode & S_ISUID || setgidExec)) {
      throw new P9Error(Errno.EPERM, 'link to a privileged host file');
    }
  }
}

export function overlay(st: StatX, rec: GuestAttrs | undefined): GuestStat {
  if (rec === undefined) {
    return { mode: st.mode, uid: st.uid, gid: st.gid, rdevMajor: st.rdevMajor, rdevMinor: st.rdevMinor };
  }
  return {
    mode: rec.mode ?? st.mode,
    uid: rec.uid ?? st.uid,
    gid: rec.gid ?? st.gid,
    rdevMajor: rec.rdevMajor ?? st.rdevMajor,
    rdevMinor: rec.rdevMinor ?? st.rdevMinor,
  };
}
