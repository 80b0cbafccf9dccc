// Watches host directory trees (the shares' host directories) for changes made by host processes.
//
// One fanotify group per shim process (fanotify.ts), read as events arrive while any tree is watched. Each
// directory of a tree gets an inode mark (like inotify: no whole-filesystem marks), found by an asynchronous
// breadth-first walk that never follows symlinks and stops at `maxDirs` directories per tree. Events are
// mapped from the directory's file handle back to (tree, relative path), and directories created, moved or
// deleted later keep the marks current.
//
// Events caused by this process (the 9P server writing for the guest) are not reported: the guest made those
// changes itself and its kernel already fired the events. They still keep the marks current (a directory the
// guest creates is watched for later host changes).
//
// Why not fs.watch({recursive: true})? On Node 20 Linux it is implemented in JavaScript with one inotify
// watch per FILE and per directory, a synchronous walk of the whole tree on the event loop, an event per
// existing file at start, and renames reported as two unrelated 'rename' events (measured: 520 directories and
// 10,000 files took 10,521 watches, 190 ms of blocked event loop and +32 MiB RSS; docs/share-notify.md).

import { readdir } from 'node:fs/promises';
import { openBeneath } from '../p9/pathsafe.js';
import { O, close, openat, AT_FDCWD } from '../util/syscalls.js';
import type { Logger } from '../util/log.js';
import { DIR_MASK, FAN, Fanotify, handleKeyOf, type FanEvent } from './fanotify.js';
import type { HostChange } from './coalescer.js';

export interface TreeOptions {
  /** Most directories marked in this tree (default 65,536); deeper ones are not watched. */
  maxDirs?: number;
  log: Logger;
  /** Receives the changes host processes made; returns false to stop reading events until resume(). */
  onChanges(changes: HostChange[]): boolean;
}

export interface HostWatcherOptions {
  pollMs?: number;
  /** The pid whose events are the server's own (default: this process). */
  ownPid?: number;
}

interface DirRef {
  tree: TreeWatch;
  path: string;
}

export class TreeWatch {
  readonly rootFd: number;
  /** Handle key of each marked directory, by relative path. */
  readonly keys = new Map<string, string>();
  closed = false;
  blocked = false;
  /** Directories not marked because maxDirs was reached. */
  skippedDirs = 0;
  /** Times the kernel's event queue overflowed (events lost). */
  overflows = 0;
  /** Initial walk finished. */
  ready: Promise<void>;

  constructor(
    readonly hub: HostWatcher,
    readonly root: string,
    readonly opts: TreeOptions,
  ) {
    this.rootFd = openat(AT_FDCWD, root, O.PATH | O.DIRECTORY | O.CLOEXEC);
    this.ready = Promise.resolve();
  }

  get maxDirs(): number {
    return this.opts.maxDirs ?? 65_536;
  }

  /** The owner made room: events are read again. */
  resume(): void {
    if (!this.blocked) return;
    this.blocked = false;
    this.hub.kick();
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.hub.forget(this);
    close(this.rootFd);
  }
}

let shared: HostWatcher | undefined;

export class HostWatcher {
  private fan: Fanotify | undefined;
  private readonly dirs = new Map<string, DirRef[]>();
  private readonly trees = new Set<TreeWatch>();
  private readonly pollMs: number;
  private readonly ownPid: number;

  constructor(opts: HostWatcherOptions = {}) {
    this.pollMs = opts.pollMs ?? 25;
    this.ownPid = opts.ownPid ?? process.pid;
  }

  /** The process-wide watcher (one fanotify group per shim). */
  static shared(): HostWatcher {
    return (shared ??= new HostWatcher());
  }

  get watchedDirs(): number {
    return this.dirs.size;
  }

  /** Starts watching `root`; resolves once every directory (up to maxDirs) is marked. */
  async watch(root: string, opts: TreeOptions): Promise<TreeWatch> {
    if (!this.fan) {
      this.fan = new Fanotify();
      this.fan.start((events) => this.dispatch(events), this.pollMs);
    }
    const tree = new TreeWatch(this, root, opts);
    this.trees.add(tree);
    try {
      tree.ready = this.addTree(tree, '', false);
      await tree.ready;
    } catch (err) {
      tree.close();
      throw err;
    }
    return tree;
  }

  forget(tree: TreeWatch): void {
    this.trees.delete(tree);
    for (const [path, key] of tree.keys) this.unref(key, tree, path);
    tree.keys.clear();
    if (this.trees.size === 0) {
      this.fan?.close();
      this.fan = undefined;
      if (shared === this) shared = undefined;
    }
  }

  /** A tree made room: read again unless another one is still full. */
  kick(): void {
    for (const t of this.trees) if (t.blocked) return;
    this.fan?.resume();
  }

  private dispatch(events: FanEvent[]): void {
    const out = new Map<TreeWatch, HostChange[]>();
    const emit = (tree: TreeWatch, c: HostChange): void => {
      let list = out.get(tree);
      if (!list) out.set(tree, (list = []));
      list.push(c);
    };
    for (const ev of events) {
      if (ev.mask & FAN.Q_OVERFLOW) {
        for (const t of this.trees) {
          t.overflows++;
          t.opts.log.warn('share watcher: the kernel dropped host events (queue overflow)');
          emit(t, { kind: 'attrib', path: '', dir: true });
        }
        continue;
      }
      this.translate(ev, ev.pid !== this.ownPid, emit);
    }
    for (const [tree, changes] of out) {
      if (tree.closed) continue;
      if (!tree.opts.onChanges(changes)) tree.blocked = true;
    }
    // While a tree's consumer is full, events stay in the kernel's queue (16,384 by default, then an overflow).
    for (const t of this.trees) if (t.blocked) this.fan?.pause();
  }

  private refsOf(key: string | undefined): DirRef[] {
    return key === undefined ? [] : (this.dirs.get(key) ?? []);
  }

  private translate(ev: FanEvent, foreign: boolean, emit: (t: TreeWatch, c: HostChange) => void): void {
    const isDir = (ev.mask & FAN.ONDIR) !== 0;
    const join = (dir: string, name: string): string => (dir === '' ? name : `${dir}/${name}`);
    if (ev.mask & FAN.RENAME) {
      const from = this.refsOf(ev.dir);
      const to = this.refsOf(ev.newDir);
      for (const f of from) {
        const oldPath = join(f.path, ev.name!);
        const t = to.find((r) => r.tree === f.tree);
        if (t) {
          const newPath = join(t.path, ev.newName!);
          if (isDir) this.moved(f.tree, oldPath, newPath);
          if (foreign) emit(f.tree, { kind: 'rename', path: oldPath, to: newPath, dir: isDir });
        } else {
          if (isDir) this.dropBelow(f.tree, oldPath);
          if (foreign) emit(f.tree, { kind: 'delete', path: oldPath, dir: isDir });
        }
      }
      for (const t of to) {
        if (from.some((f) => f.tree === t.tree)) continue;
        const newPath = join(t.path, ev.newName!);
        if (foreign) emit(t.tree, { kind: 'create', path: newPath, dir: isDir });
        if (isDir) void this.addTree(t.tree, newPath, foreign);
      }
      return;
    }
    const refs = this.refsOf(ev.dir);
    if (refs.length === 0) {
      // An event on a marked directory itself whose parent is not watched (the tree's root): named by FID.
      if (ev.mask & (FAN.ATTRIB | FAN.MODIFY) && foreign)
        for (const r of this.refsOf(ev.obj)) emit(r.tree, { kind: 'attrib', path: r.path, dir: true });
      return;
    }
    for (const r of refs) {
      const path = ev.name === '.' || ev.name === '' ? r.path : join(r.path, ev.name!);
      if (ev.mask & FAN.CREATE) {
        if (foreign) emit(r.tree, { kind: 'create', path, dir: isDir });
        if (isDir) void this.addTree(r.tree, path, foreign);
      }
      if (ev.mask & FAN.DELETE) {
        if (isDir) this.dropBelow(r.tree, path);
        if (foreign) emit(r.tree, { kind: 'delete', path, dir: isDir });
      }
      if (foreign && ev.mask & FAN.MODIFY && !isDir) emit(r.tree, { kind: 'modify', path, dir: false });
      if (foreign && ev.mask & FAN.ATTRIB) emit(r.tree, { kind: 'attrib', path, dir: isDir });
    }
  }

  /**
   * Marks `path` and every directory below it (breadth first, up to the tree's maxDirs). With `announce`, the
   * entries found below `path` are reported as created: they may have appeared before the mark existed.
   */
  private async addTree(tree: TreeWatch, path: string, announce: boolean): Promise<void> {
    const queue = [path];
    const found: HostChange[] = [];
    while (queue.length > 0 && !tree.closed) {
      const dir = queue.shift()!;
      if (!this.mark(tree, dir)) {
        tree.skippedDirs += 1 + queue.length;
        if (tree.skippedDirs === 1 + queue.length)
          tree.opts.log.warn('share watcher: directory limit reached; deeper directories are not watched', {
            maxDirs: tree.maxDirs,
          });
        break;
      }
      let entries;
      try {
        entries = await readdir(dir === '' ? tree.root : `${tree.root}/${dir}`, { withFileTypes: true });
      } catch {
        continue;
      }
      for (const e of entries) {
        const p = dir === '' ? e.name : `${dir}/${e.name}`;
        if (announce) found.push({ kind: 'create', path: p, dir: e.isDirectory() });
        if (e.isDirectory()) queue.push(p);
      }
      // Yield between directories of a big tree: other connections share this event loop.
      if (found.length > 0 && announce && !tree.closed) {
        tree.opts.onChanges(found.splice(0));
      }
    }
  }

  /** Marks one directory of `tree`; false when the tree's limit is reached. Gone directories are skipped. */
  private mark(tree: TreeWatch, path: string): boolean {
    if (tree.keys.has(path)) return true;
    if (tree.keys.size >= tree.maxDirs) return false;
    let fd: number;
    try {
      fd = openBeneath(tree.rootFd, path, O.RDONLY | O.DIRECTORY | O.CLOEXEC);
    } catch {
      return true;
    }
    try {
      this.fan!.markDir(fd, DIR_MASK);
      const key = handleKeyOf(fd);
      tree.keys.set(path, key);
      let refs = this.dirs.get(key);
      if (!refs) this.dirs.set(key, (refs = []));
      refs.push({ tree, path });
    } catch (err) {
      tree.opts.log.warn('share watcher: cannot watch a directory', { path, error: err });
    } finally {
      close(fd);
    }
    return true;
  }

  private unref(key: string, tree: TreeWatch, path: string): void {
    const refs = this.dirs.get(key);
    if (!refs) return;
    const left = refs.filter((r) => !(r.tree === tree && r.path === path));
    if (left.length > 0) this.dirs.set(key, left);
    else this.dirs.delete(key);
    // The mark itself goes with the inode, or stays harmlessly until the group closes (no fd to name it by).
  }

  /** A directory of `tree` was deleted (or moved out): forget it and everything below. */
  private dropBelow(tree: TreeWatch, path: string): void {
    const prefix = path + '/';
    for (const [p, key] of [...tree.keys]) {
      if (p === path || p.startsWith(prefix)) {
        tree.keys.delete(p);
        this.unref(key, tree, p);
      }
    }
  }

  /** A directory of `tree` moved from `from` to `to`: its marks stay, their paths change. */
  private moved(tree: TreeWatch, from: string, to: string): void {
    const prefix = from + '/';
    for (const [p, key] of [...tree.keys]) {
      if (p !== from && !p.startsWith(prefix)) continue;
      const np = to + p.slice(from.length);
      tree.keys.delete(p);
      tree.keys.set(np, key);
      for (const r of this.dirs.get(key) ?? []) if (r.tree === tree && r.path === p) r.path = np;
    }
  }
}
