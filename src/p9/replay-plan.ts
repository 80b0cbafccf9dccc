// The replay tree's view of names, set by the host side for one batch of replayed host changes.
//
// A host change (a file created, deleted, renamed by a host process) is replayed in the guest as the matching
// operation through the mount, so that the guest kernel fires the inotify events its watchers wait for. The
// replays come from a dedicated attach (ops/replay.ts) and never reach the host: the file is already in its
// final state there. For the guest kernel to perform the operation, the name must look as it did BEFORE the
// change: a created file must be absent (else open(O_CREAT|O_EXCL) fails before any request is sent), a deleted
// one present. The plan says which: `hide` makes a path answer ENOENT to replay walks until a replayed create
// of it is acknowledged; a path that the host no longer has answers a phantom (a stand-in object that exists
// only in the replay tree), a directory when `phantomDir` said so, else a regular file.
//
// Bounded: at most `maxEntries` paths; the host side sizes its batches below that and clears the plan after
// each batch.

export class ReplayPlan {
  private readonly hidden = new Set<string>();
  private readonly dirs = new Set<string>();

  constructor(readonly maxEntries = 4096) {}

  get size(): number {
    return this.hidden.size + this.dirs.size;
  }

  /** Replay walks to `path` answer ENOENT until a replayed create of it is acknowledged (reveal). */
  hide(path: string): void {
    this.room();
    this.hidden.add(path);
  }

  /** A replay walk to `path` that the host no longer has answers a phantom directory. */
  phantomDir(path: string): void {
    this.room();
    this.dirs.add(path);
  }

  isHidden(path: string): boolean {
    return this.hidden.size > 0 && this.hidden.has(path);
  }

  isDir(path: string): boolean {
    return this.dirs.size > 0 && this.dirs.has(path);
  }

  /** A replayed create of `path` was acknowledged: it exists from now on. */
  reveal(path: string): void {
    this.hidden.delete(path);
  }

  clear(): void {
    this.hidden.clear();
    this.dirs.clear();
  }

  private room(): void {
    if (this.size >= this.maxEntries) throw new Error(`replay plan full (${this.maxEntries} paths)`);
  }
}
