// Host file descriptors behind fids: one table per connection, bounded in total.
//
// Fids do not own fds. Every fid names a HostInode (one per host inode per connection, refcounted by fids), and
// an inode has at most one O_PATH fd plus one open-file fd per distinct set of open flags (fids opened with the
// same flags share it: I/O is positional, and Treaddir seeks before every getdents). So 12,000 fids on one file
// cost one fd, not 12,000.
//
// Every fd the table holds counts against `capacity` (maxHostFds), pinned ones included. Idle fds are closed in
// least-recently-used order and reopened on demand (by the fid's path, verified against the inode's identity;
// an open-file fd through /proc/self/fd of the O_PATH fd). When nothing can be closed, the request that needs an
// fd fails with ENFILE and the connection goes on; clunking fids frees room.
//
// Never closed while: an operation is using the fd (inUse: an async read or write holds it across an await),
// or the fd is pinned. A fd is pinned only when its inode lost the name its fids use: after an unlink or
// rename-over through this connection succeeded (pinAfterUnlink), or when eviction finds the inode has no link
// left (nlink 0: unlinked behind the server's back) and no other fd of the inode is open. Pins are released when
// the last fid of the inode goes.

import { Errno, P9Error } from './errno.js';
import type { FileIdentity } from './fids.js';
import type { HostFs } from './hostfs.js';

/**
 * Opens a fresh O_PATH handle on the inode through `path` beneath the export root `rootFd` (verified against the
 * identity: ESTALE otherwise), leaving the new fd's statx in syscalls.statxBuf (see freshStat).
 */
export type PathOpener = (rootFd: number, path: string, ident: FileIdentity) => number;
/** Opens the file an O_PATH fd names with `flags` (through its /proc magic link). */
export type FileOpener = (pathFd: number, flags: number) => number;

const O_PATH_SLOT = -1;

export class HostFd {
  fd = -1;
  /** Operations currently using the fd; it is never closed under them. */
  inUse = 0;
  pinned = false;
  /** Fids holding this slot (for the O_PATH slot: every fid of the inode). */
  refs = 0;
  /** No fid holds it any more: close as soon as the last user releases it. */
  retired = false;

  constructor(
    readonly inode: HostInode,
    /** Open flags of an open-file slot; O_PATH_SLOT for the inode's O_PATH handle. */
    readonly flags: number,
  ) {}
}

export class HostInode {
  readonly pathSlot: HostFd;
  readonly files = new Map<number, HostFd>();
  /** Fids naming this inode. */
  refs = 0;

  constructor(
    readonly key: string,
    readonly ident: FileIdentity,
    /** Root fd of the export the fids reach it through (paths are relative to it). */
    readonly rootFd: number,
  ) {
    this.pathSlot = new HostFd(this, O_PATH_SLOT);
  }

  /** True when some fd of the inode other than `except` is open. */
  hasOpenFd(except: HostFd): boolean {
    if (this.pathSlot !== except && this.pathSlot.fd >= 0) return true;
    for (const f of this.files.values()) if (f !== except && f.fd >= 0) return true;
    return false;
  }
}

export class HostFdTable {
  private readonly inodes = new Map<string, HostInode>();
  /** Open slots that may be closed, least recently used first (Map iteration order). */
  private readonly lru = new Map<HostFd, true>();
  /** Every fd the table holds (LRU, pinned, and retired-but-busy ones). */
  private open = 0;
  private pinnedCount = 0;
  /**
   * The last acquire() opened the fd (it was closed) through the PathOpener, whose identity check left the fd's
   * statx in syscalls.statxBuf: the caller may use that statx instead of making another.
   */
  freshStat = false;

  constructor(
    readonly capacity: number,
    private readonly host: Pick<HostFs, 'close' | 'fstatx'>,
    private readonly openPath: PathOpener,
    private readonly openFile: FileOpener,
  ) {}

  get openFds(): number {
    return this.open;
  }

  get pinnedFds(): number {
    return this.pinnedCount;
  }

  get inodeCount(): number {
    return this.inodes.size;
  }

  /**
   * A new fid names the inode `ident` through the export whose root is `rootFd` (key: unique per export and
   * inode). `fd`, an O_PATH handle the caller just opened on it, is kept when the inode has none open and there
   * is room, else closed (reopened on demand).
   */
  ref(key: string, ident: FileIdentity, rootFd: number, fd: number): HostInode {
    let ino = this.inodes.get(key);
    if (ino === undefined) this.inodes.set(key, (ino = new HostInode(key, ident, rootFd)));
    ino.refs++;
    ino.pathSlot.refs++;
    if (fd >= 0) this.adopt(ino.pathSlot, fd);
    return ino;
  }

  /** The fid that named the inode is gone; the last one closes every fd of the inode (pins included). */
  unref(ino: HostInode): void {
    ino.refs--;
    ino.pathSlot.refs--;
    if (ino.refs > 0) return;
    this.inodes.delete(ino.key);
    this.retire(ino.pathSlot);
    for (const f of ino.files.values()) this.retire(f);
    ino.files.clear();
  }

  /**
   * An open-file slot of `ino` with `flags`, shared with other fids opened the same way; `fd` as in ref(), or -1
   * when the slot's fd is open (openFileFd) and simply shared.
   */
  openSlot(ino: HostInode, flags: number, fd: number): HostFd {
    let slot = ino.files.get(flags);
    if (slot === undefined || slot.retired) ino.files.set(flags, (slot = new HostFd(ino, flags)));
    slot.refs++;
    this.adopt(slot, fd);
    return slot;
  }

  /** The open fd of `ino`'s open-file slot for `flags`, or -1 (none, or closed for now). */
  openFileFd(ino: HostInode, flags: number): number {
    const slot = ino.files.get(flags);
    return slot === undefined || slot.retired ? -1 : slot.fd;
  }

  /** A fid that was open with this slot is clunked (or reset). */
  closeSlot(slot: HostFd): void {
    if (--slot.refs > 0) return;
    if (slot.inode.files.get(slot.flags) === slot) slot.inode.files.delete(slot.flags);
    this.retire(slot);
  }

  /**
   * An open fd for the slot, reopened if it was closed (by `path`, the acquiring fid's current path). Pair with
   * release(); between the two the fd is never closed. Throws ENFILE when the budget is full of pinned or busy
   * fds, ESTALE when the path now names another file.
   */
  acquire(slot: HostFd, path: string): number {
    if (slot.retired && slot.fd < 0) throw new Error('host fd slot used after release');
    this.freshStat = false;
    if (slot.fd < 0) {
      let fresh: boolean;
      if (slot.flags === O_PATH_SLOT) {
        this.reserve(1);
        slot.fd = this.openPath(slot.inode.rootFd, path, slot.inode.ident);
        fresh = true;
      } else {
        const pathFd = this.acquire(slot.inode.pathSlot, path);
        fresh = this.freshStat;
        try {
          const stats = this.evictionStats;
          this.reserve(1);
          if (this.evictionStats !== stats) fresh = false; // the eviction's statx replaced it
          slot.fd = this.openFile(pathFd, slot.flags);
        } finally {
          this.release(slot.inode.pathSlot);
        }
      }
      this.freshStat = fresh;
      this.open++;
      if (!slot.pinned) this.lru.set(slot, true);
    } else if (!slot.pinned) {
      this.lru.delete(slot);
      this.lru.set(slot, true);
    }
    slot.inUse++;
    return slot.fd;
  }

  release(slot: HostFd): void {
    slot.inUse--;
    if (slot.retired && slot.inUse === 0) this.closeNow(slot);
  }

  with<T>(slot: HostFd, path: string, fn: (fd: number) => T): T {
    const fd = this.acquire(slot, path);
    try {
      return fn(fd);
    } finally {
      this.release(slot);
    }
  }

  /**
   * Makes sure `n` more fds can be opened now (closing idle ones), else ENFILE. Called before an operation that
   * opens fds it must keep (Tlopen, Tlcreate), so that it fails cleanly instead of leaving a fid that cannot be
   * used.
   */
  reserveRoom(n: number): void {
    this.reserve(n);
  }

  /**
   * Before a name goes away (unlink, rename over it): holds an fd of each inode that fids reach through that name,
   * so that pinAfterUnlink has one to keep. Inodes whose fd cannot be opened (budget full) are skipped: their fids
   * get ESTALE once the name is gone.
   */
  holdForUnlink(targets: Iterable<{ inode: HostInode; path: string }>): HostInode[] {
    const held: HostInode[] = [];
    for (const { inode, path } of targets) {
      if (held.includes(inode)) continue;
      try {
        this.acquire(inode.pathSlot, path);
        held.push(inode);
      } catch {
        // no fd to keep: the fids of this inode go stale
      }
    }
    return held;
  }

  /** After holdForUnlink: pins the held fds when the name really went away, then lets them go. */
  pinAfterUnlink(held: HostInode[], unlinked: boolean): void {
    for (const ino of held) {
      if (unlinked) this.pin(ino.pathSlot);
      this.release(ino.pathSlot);
    }
  }

  private pin(slot: HostFd): void {
    if (slot.pinned || slot.fd < 0) return;
    this.lru.delete(slot);
    slot.pinned = true;
    this.pinnedCount++;
  }

  private adopt(slot: HostFd, fd: number): void {
    if (fd < 0) return;
    if (slot.fd >= 0 || !this.tryReserve(1)) {
      this.host.close(fd);
      return;
    }
    slot.fd = fd;
    this.open++;
    this.lru.set(slot, true);
  }

  private retire(slot: HostFd): void {
    slot.retired = true;
    if (slot.inUse === 0) this.closeNow(slot);
  }

  private closeNow(slot: HostFd): void {
    if (slot.fd < 0) return;
    this.lru.delete(slot);
    if (slot.pinned) {
      slot.pinned = false;
      this.pinnedCount--;
    }
    this.host.close(slot.fd);
    slot.fd = -1;
    this.open--;
  }

  private reserve(n: number): void {
    if (!this.tryReserve(n)) throw new P9Error(Errno.ENFILE, 'host fd budget of the connection exhausted');
  }

  /**
   * Makes room for n more fds by closing idle ones, least recently used first. An idle fd whose inode has no link
   * left and no other open fd is pinned instead (it cannot be reopened by path). Cost: O(fds closed + busy fds
   * skipped), busy fds being bounded by maxOutstanding.
   */
  private tryReserve(n: number): boolean {
    if (this.open + n <= this.capacity) return true;
    for (const slot of this.lru.keys()) {
      if (this.open + n <= this.capacity) break;
      if (slot.inUse > 0) continue;
      if (!slot.inode.hasOpenFd(slot) && this.isUnlinked(slot.fd)) {
        this.pin(slot);
        continue;
      }
      this.closeNow(slot);
    }
    return this.open + n <= this.capacity;
  }

  /** statx calls made while evicting (they overwrite statxBuf: see freshStat). */
  private evictionStats = 0;

  private isUnlinked(fd: number): boolean {
    this.evictionStats++;
    try {
      return this.host.fstatx(fd).nlink === 0;
    } catch {
      return false;
    }
  }
}
