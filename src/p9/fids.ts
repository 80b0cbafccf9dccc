// Per-connection fid table. A fid is small: export, relative path, qid, file identity and lazily opened host
// handles. The table is bounded (maxFids); exhaustion answers ENFILE and the connection keeps working.

import { P9Error, Errno } from './errno.js';
import type { HostFd, HostInode } from './hostfd.js';
import type { Qid } from './messages.js';
import type { ExportRoot } from './export.js';
import type { XattrState } from './xattr.js';

/** (device, inode) of the file a fid names; used to verify reopen-by-path and to key the lock table. */
export interface FileIdentity {
  devMajor: number;
  devMinor: number;
  ino: bigint;
}

export function identityKey(id: FileIdentity): string {
  return `${id.devMajor}:${id.devMinor}:${id.ino}`;
}

export interface OpenFile {
  /** The inode's open-file fd for these flags (shared with other fids opened the same way). */
  slot: HostFd;
  writable: boolean;
}

export class Fid {
  open: OpenFile | null = null;
  xattr: XattrState | null = null;
  /** Lock owners (lock-table keys) that took locks through this fid; released on clunk. */
  lockOwners: Set<string> | null = null;
  /** In the replay tree (ops/replay.ts): nothing done through it reaches the host. */
  replay = false;

  constructor(
    readonly id: number,
    readonly exp: ExportRoot,
    public path: string,
    public qid: Qid,
    public ident: FileIdentity,
    /** The host inode and its fds (O_PATH handle, never followed if a symlink); null for an xattr fid. */
    readonly inode: HostInode | null,
    /** uid from Tattach (n_uname), used as owner of created files; undefined when unknown. */
    readonly uid: number | undefined,
  ) {}

  get isDir(): boolean {
    return (this.qid.type & 0x80) !== 0;
  }
}

export class FidTable {
  private readonly fids = new Map<number, Fid>();
  /** Fids by path, so unlink and rename can find the fids naming a path without scanning. */
  private readonly byPath = new Map<string, Set<Fid>>();
  /** For each directory path: how many byPath keys lie strictly below it (so a rename knows if it must look). */
  private readonly below = new Map<string, number>();

  constructor(readonly max: number) {}

  get size(): number {
    return this.fids.size;
  }

  has(id: number): boolean {
    return this.fids.has(id);
  }

  /** The fid, or EBADF (also for a newfid a short walk never created). */
  get(id: number): Fid {
    const fid = this.fids.get(id);
    if (fid === undefined) throw new P9Error(Errno.EBADF, `unknown fid ${id}`);
    return fid;
  }

  /** Throws ENFILE when a new fid would exceed the bound. Call before doing work for a new fid. */
  checkRoom(id: number): void {
    if (!this.fids.has(id) && this.fids.size >= this.max) throw new P9Error(Errno.ENFILE, 'fid table full');
  }

  /** Throws EINVAL when `id` is already in use (newfid of walk/xattrwalk, attach fid). */
  checkFree(id: number): void {
    if (this.fids.has(id)) throw new P9Error(Errno.EINVAL, `fid ${id} in use`);
    this.checkRoom(id);
  }

  add(fid: Fid): void {
    this.checkRoom(fid.id);
    this.fids.set(fid.id, fid);
    this.index(fid);
  }

  /** Removes and returns the fid; the caller releases its resources. */
  take(id: number): Fid {
    const fid = this.get(id);
    this.fids.delete(id);
    this.unindex(fid);
    return fid;
  }

  all(): IterableIterator<Fid> {
    return this.fids.values();
  }

  /** Removes every fid at once (connection reset); returns them for release. */
  clear(): Fid[] {
    const all = [...this.fids.values()];
    this.fids.clear();
    this.byPath.clear();
    this.below.clear();
    return all;
  }

  withPath(path: string): ReadonlySet<Fid> | undefined {
    return this.byPath.get(path);
  }

  setPath(fid: Fid, path: string): void {
    this.unindex(fid);
    fid.path = path;
    this.index(fid);
  }

  /**
   * After a rename of `from` to `to`, fids naming `from` or anything below it follow the move. Cost: O(fids at
   * `from`) when no fid lies below it (files, empty or unvisited directories), else a scan of the path index
   * (O(distinct fid paths) string prefix tests, ~25 ms at 65,536) plus the moves.
   */
  renamed(from: string, to: string): void {
    const exact = this.byPath.get(from);
    const want = this.below.get(from) ?? 0;
    if (exact !== undefined) for (const fid of [...exact]) this.setPath(fid, to);
    if (want === 0) return;
    const prefix = from + '/';
    const keys: string[] = [];
    for (const path of this.byPath.keys()) {
      if (!path.startsWith(prefix)) continue;
      keys.push(path);
      if (keys.length === want) break;
    }
    for (const path of keys) {
      const newPath = to + path.slice(from.length);
      for (const fid of [...this.byPath.get(path)!]) this.setPath(fid, newPath);
    }
  }

  private index(fid: Fid): void {
    let set = this.byPath.get(fid.path);
    if (set === undefined) {
      this.byPath.set(fid.path, (set = new Set()));
      this.countBelow(fid.path, 1);
    }
    set.add(fid);
  }

  private unindex(fid: Fid): void {
    const set = this.byPath.get(fid.path);
    if (set === undefined) return;
    set.delete(fid);
    if (set.size === 0) {
      this.byPath.delete(fid.path);
      this.countBelow(fid.path, -1);
    }
  }

  /** Adds `delta` to the count of every ancestor directory of `path` (the root '' included). */
  private countBelow(path: string, delta: number): void {
    if (path === '') return;
    for (let p = path; ;) {
      const i = p.lastIndexOf('/');
      p = i < 0 ? '' : p.slice(0, i);
      const n = (this.below.get(p) ?? 0) + delta;
      if (n === 0) this.below.delete(p);
      else this.below.set(p, n);
      if (p === '') return;
    }
  }
}
