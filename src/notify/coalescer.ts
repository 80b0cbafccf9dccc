// Coalesces a share's host changes into the operations the guest replays (share-notifier.ts), in order and
// bounded.
//
// One entry per path while nothing structural intervenes: a file written 10,000 times is one `modify`; created
// then written is one `create`; deleted and re-created is `delete` + `create`; created and deleted before the
// guest heard of it is still `create` + `delete` (every changed path fires at least one event). A rename is its
// own entry, in order; it seals the pending entries of both its ends (and of everything under them for a
// directory), so that later changes to those paths queue after it. `full` says the queue reached `maxEntries`:
// the caller then stops reading host events (the kernel queues them) until take() made room; what it already
// read is still pushed, so the queue exceeds the bound by at most one read of host events.

export type ChangeKind = 'create' | 'delete' | 'modify' | 'attrib' | 'rename';

/** A host change relative to the share root ('' is the root itself). */
export interface HostChange {
  kind: ChangeKind;
  path: string;
  /** rename: the new path. */
  to?: string;
  dir: boolean;
}

/** What the guest replays: the same shape; `content` on a create says the new file also has data. */
export interface ReplayOp extends HostChange {
  content?: boolean;
}

interface PathEntry {
  rename: false;
  path: string;
  dir: boolean;
  /** The guest knew the path before this entry (false: the first change created it). */
  was: boolean;
  now: boolean;
  /** Deleted then created again: the guest must see both. */
  replaced: boolean;
  content: boolean;
  attr: boolean;
}

interface RenameEntry {
  rename: true;
  path: string;
  to: string;
  dir: boolean;
}

type Entry = PathEntry | RenameEntry;

export class Coalescer {
  private queue: Entry[] = [];
  private head = 0;
  /** The pending entry a change to each path merges into (absent once sealed by a rename or taken). */
  private readonly latest = new Map<string, PathEntry>();
  /** Changes merged into an existing entry (instead of a new one): the burst figure. */
  merged = 0;

  constructor(readonly maxEntries = 65_536) {}

  get size(): number {
    return this.queue.length - this.head;
  }

  get full(): boolean {
    return this.size >= this.maxEntries;
  }

  /** Adds a change. */
  push(c: HostChange): void {
    if (c.kind === 'rename') {
      if (c.to === undefined) throw new Error('rename without a target');
      this.seal(c.path, c.dir);
      this.seal(c.to, c.dir);
      this.queue.push({ rename: true, path: c.path, to: c.to, dir: c.dir });
      return;
    }
    let e = this.latest.get(c.path);
    if (e === undefined) {
      e = {
        rename: false,
        path: c.path,
        dir: c.dir,
        was: c.kind !== 'create',
        now: c.kind !== 'delete',
        replaced: false,
        content: c.kind === 'modify',
        attr: c.kind === 'attrib',
      };
      this.latest.set(c.path, e);
      this.queue.push(e);
      return;
    }
    this.merged++;
    e.dir = c.dir;
    switch (c.kind) {
      case 'create':
        if (!e.now && e.was) e.replaced = true;
        e.now = true;
        break;
      case 'delete':
        e.now = false;
        e.content = e.attr = false;
        break;
      case 'modify':
        e.content = true;
        break;
      case 'attrib':
        e.attr = true;
        break;
    }
  }

  /** Takes up to `max` entries, oldest first, as the operations to replay. */
  take(max: number): ReplayOp[] {
    const ops: ReplayOp[] = [];
    const end = Math.min(this.queue.length, this.head + max);
    for (; this.head < end; this.head++) {
      const e = this.queue[this.head]!;
      if (e.rename) {
        ops.push({ kind: 'rename', path: e.path, to: e.to, dir: e.dir });
        continue;
      }
      if (this.latest.get(e.path) === e) this.latest.delete(e.path);
      const { path, dir } = e;
      if (!e.was) {
        ops.push({ kind: 'create', path, dir, content: e.content });
        if (!e.now) ops.push({ kind: 'delete', path, dir });
      } else if (!e.now) {
        ops.push({ kind: 'delete', path, dir });
      } else if (e.replaced) {
        ops.push({ kind: 'delete', path, dir }, { kind: 'create', path, dir, content: e.content });
      } else {
        if (e.content) ops.push({ kind: 'modify', path, dir });
        if (e.attr) ops.push({ kind: 'attrib', path, dir });
      }
    }
    if (this.head > 1024 && this.head * 2 > this.queue.length) {
      this.queue = this.queue.slice(this.head);
      this.head = 0;
    }
    return ops;
  }

  /** Later changes to `path` (and below it, for a directory) start new entries. */
  private seal(path: string, dir: boolean): void {
    this.latest.delete(path);
    if (!dir || this.latest.size === 0) return;
    const prefix = path === '' ? '' : path + '/';
    for (const p of [...this.latest.keys()]) if (p.startsWith(prefix)) this.latest.delete(p);
  }
}
