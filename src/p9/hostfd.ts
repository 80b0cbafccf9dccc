// Host file descriptors behind fids, opened lazily and bounded per connection by an LRU.
//
// A fid never owns an fd for its whole life: it owns a HostHandle that can (re)open one on demand. When the
// connection holds more than `capacity` fds, the least recently used idle handle is closed and will reopen
// transparently (by path, verified against the file identity). Two kinds are never evicted:
//  - handles in use by an in-flight async operation (closing would let the fd number be reused under it);
//  - handles whose inode has been unlinked (nlink 0): reopening by path would find nothing or another file,
//    so they are pinned until the fid is clunked.

import { fstatx, close as closeFd } from '../util/syscalls.js';

export class HostHandle {
  /** Current fd, or -1 when closed/evicted. */
  fd = -1;
  /** Bumped on every (re)open, so state tied to an fd position (readdir) knows it must restart. */
  generation = 0;
  inUse = 0;
  pinned = false;
  disposed = false;

  constructor(
    readonly reopen: () => number,
    initialFd = -1,
  ) {
    this.fd = initialFd;
  }
}

export class HostFdCache {
  /** Idle-or-busy open handles in LRU order (Map iteration order = least recently used first). */
  private readonly lru = new Map<HostHandle, true>();

  constructor(readonly capacity: number) {}

  /** Registers a handle that was created with an fd already open. */
  adopt(h: HostHandle): void {
    if (h.fd >= 0 && !h.pinned) {
      this.lru.set(h, true);
      this.evictOverflow();
    }
  }

  /** Returns an open fd for `h`, reopening it if it was evicted. Pair with release() for async use. */
  acquire(h: HostHandle): number {
    if (h.disposed) throw new Error('host handle used after dispose');
    if (h.fd < 0) {
      h.fd = h.reopen();
      h.generation++;
      h.inUse++; // before evicting, so the handle being acquired is never the one closed
      if (!h.pinned) this.lru.set(h, true);
      this.evictOverflow();
      return h.fd;
    }
    if (!h.pinned) {
      this.lru.delete(h);
      this.lru.set(h, true);
    }
    h.inUse++;
    return h.fd;
  }

  release(h: HostHandle): void {
    h.inUse--;
    if (h.disposed && h.inUse === 0) this.closeNow(h);
  }

  /** Runs a synchronous function with the handle's fd. */
  with<T>(h: HostHandle, fn: (fd: number) => T): T {
    const fd = this.acquire(h);
    try {
      return fn(fd);
    } finally {
      this.release(h);
    }
  }

  /** Keeps the handle's fd open until dispose (used when its file is unlinked while still referenced). */
  pin(h: HostHandle): void {
    if (h.pinned || h.disposed) return;
    if (h.fd < 0) {
      try {
        h.fd = h.reopen();
        h.generation++;
      } catch {
        return; // already gone: nothing left to keep alive
      }
    }
    this.lru.delete(h);
    h.pinned = true;
  }

  /** The fid is gone: close now, or as soon as the last in-flight operation releases it. */
  dispose(h: HostHandle): void {
    if (h.disposed) return;
    h.disposed = true;
    if (h.inUse === 0) this.closeNow(h);
  }

  private closeNow(h: HostHandle): void {
    h.pinned = false;
    this.lru.delete(h);
    if (h.fd >= 0) closeFd(h.fd);
    h.fd = -1;
  }

  private evictOverflow(): void {
    if (this.lru.size <= this.capacity) return;
    for (const h of this.lru.keys()) {
      if (this.lru.size <= this.capacity) break;
      if (h.inUse > 0) continue;
      this.lru.delete(h);
      let unlinked: boolean;
      try {
        unlinked = fstatx(h.fd).nlink === 0;
      } catch {
        unlinked = false;
      }
      if (unlinked) {
        h.pinned = true;
        continue;
      }
      closeFd(h.fd);
      h.fd = -1;
    }
  }
}
