// Host changes replayed in the guest (docs/share-notify.md): the shim watches a share's host directory and sends
// the changes host processes made; here each one is performed again through the share's 9P mount, so the guest
// kernel fires the inotify events that watchers in containers wait for. The shim's 9P server recognises the
// replays (they come from the replay uid's attach, src/p9/ops/replay.ts) and acknowledges them without touching
// the host, where the change already happened.
//
// Two mechanisms:
//  - Replays run on a worker thread whose fsuid is the replay uid (setfsuid is per thread; the agent's main
//    thread and libuv's threadpool keep uid 0) with SECBIT_NO_SETUID_FIXUP, so it keeps the file capabilities
//    and the guest's permission checks pass. It makes only synchronous *at calls below the share root
//    (openat2 RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS), so a name the guest turned into a symlink never leads out.
//  - Directory pins. With cache=none, v9fs drops a dentry as soon as nobody uses it and makes a NEW inode at
//    the next lookup, while an inotify watch holds the inode it was given: a watch on a subdirectory would
//    never see any event again (not even for changes made in the guest). The agent keeps an O_PATH fd on each
//    directory of the share (breadth first, up to `pinDirs`), so lookups keep finding the watched inode.
//
// Bounded: one batch per share at a time (a second is refused), at most MAX_BATCH changes per batch, at most
// `pinDirs` pinned directories per share.

import { openSync, closeSync } from 'node:fs';
import { readdir } from 'node:fs/promises';
import { createRequire } from 'node:module';
import { Worker } from 'node:worker_threads';
import type { Logger } from '../util/log.js';

export const MAX_BATCH = 1024;
const O_PATH = 0o10000000;
const O_DIRECTORY = 0o200000;
const O_NOFOLLOW = 0o400000;
const O_CLOEXEC = 0o2000000;

export type ReplayKind = 'create' | 'delete' | 'modify' | 'attrib' | 'rename';

export interface ReplayChange {
  kind: ReplayKind;
  path: string;
  to?: string;
  dir: boolean;
  content?: boolean;
  type?: string;
}

export interface ReplayResult {
  replayed: number;
  failed: number;
  errors: string[];
  /** Directories the worker pinned right after creating them: [path, O_PATH fd] (fds are per process). */
  pins?: Array<[string, number]>;
}

/** A relative share path: '/'-separated plain names ('' is the root). */
export function validSharePath(p: string): boolean {
  if (p === '') return true;
  if (p.length > 4096 || p.startsWith('/') || p.includes('\0')) return false;
  return p.split('/').every((c) => c !== '' && c !== '.' && c !== '..' && Buffer.byteLength(c) <= 255);
}

/**
 * The replay worker's code: self-contained (it runs as `eval` source, so the bundled agent needs no extra file).
 * It gets `require` as a parameter (a bundler rewrites the name require, not a parameter's).
 * workerData: { koffi: resolved path of koffi, uid }.
 */
// eslint-disable-next-line @typescript-eslint/no-explicit-any
function replayWorkerMain(load: (id: string) => any): void {
  /* eslint-disable @typescript-eslint/no-explicit-any */
  const { parentPort, workerData } = load('node:worker_threads');
  const koffi = load(workerData.koffi);
  const c = koffi.load('libc.so.6');
  const f = {
    syscall: c.func('long syscall(long, ...)'),
    openat: c.func('int openat(int, const char *, int, uint32_t)'),
    close: c.func('int close(int)'),
    mkdirat: c.func('int mkdirat(int, const char *, uint32_t)'),
    mknodat: c.func('int mknodat(int, const char *, uint32_t, uint64_t)'),
    symlinkat: c.func('int symlinkat(const char *, int, const char *)'),
    unlinkat: c.func('int unlinkat(int, const char *, int)'),
    renameat: c.func('int renameat(int, const char *, int, const char *)'),
    ftruncate: c.func('int ftruncate(int, int64_t)'),
    lseek: c.func('int64_t lseek(int, int64_t, int)'),
    utimensat: c.func('int utimensat(int, const char *, void *, int)'),
    prctl: c.func('int prctl(int, unsigned long, unsigned long, unsigned long, unsigned long)'),
    setfsuid: c.func('int setfsuid(uint32_t)'),
  };
  const err = (what: string): Error => {
    const e = koffi.errno();
    return Object.assign(new Error(`${what}: errno ${e}`), { errno: e });
  };
  const ok = (r: any, what: string): number => {
    const n = Number(r);
    if (n < 0) throw err(what);
    return n;
  };
  // This thread only: keep the file capabilities with a non-root fsuid, then take the replay uid.
  ok(f.prctl(28 /* PR_SET_SECUREBITS */, 0x4 /* SECBIT_NO_SETUID_FIXUP */, 0, 0, 0), 'PR_SET_SECUREBITS');
  f.setfsuid(workerData.uid);
  if (Number(f.setfsuid(0xffffffff)) >>> 0 !== workerData.uid) throw new Error('setfsuid did not take');

  const O = { WRONLY: 1, CREAT: 0o100, EXCL: 0o200, NONBLOCK: 0o4000, DIRECTORY: 0o200000, NOFOLLOW: 0o400000 };
  const O_PATH_ = 0o10000000;
  const O_CLOEXEC_ = 0o2000000;
  const AT_FDCWD = -100;
  const AT_REMOVEDIR = 0x200;
  const AT_SYMLINK_NOFOLLOW = 0x100;
  const how = Buffer.alloc(24);

  /** openat2(root, path, O_PATH|O_DIRECTORY, RESOLVE_BENEATH|RESOLVE_NO_SYMLINKS|RESOLVE_NO_MAGICLINKS). */
  const openDir = (rootFd: number, path: string): number => {
    if (path === '') return ok(f.openat(rootFd, '.', O_PATH_ | O.DIRECTORY | O_CLOEXEC_, 0), 'open root');
    how.writeBigUInt64LE(BigInt(O_PATH_ | O.DIRECTORY | O.NOFOLLOW | O_CLOEXEC_), 0);
    how.writeBigUInt64LE(0n, 8);
    how.writeBigUInt64LE(0x08n | 0x04n | 0x02n, 16);
    return ok(f.syscall(437, 'int', rootFd, 'str', path, 'void *', how, 'size_t', 24), `openat2 ${path}`);
  };
  const split = (p: string): [string, string] => {
    const i = p.lastIndexOf('/');
    return i < 0 ? ['', p] : [p.slice(0, i), p.slice(i + 1)];
  };
  const touchOpen = (dirFd: number, name: string, flags: number, truncate: boolean): void => {
    const fd = ok(f.openat(dirFd, name, flags | O.NONBLOCK | O.NOFOLLOW | O_CLOEXEC_, 0o644), `open ${name}`);
    try {
      // ftruncate to the size the file has: an IN_MODIFY with no data change (the server ignores it anyway).
      if (truncate) ok(f.ftruncate(fd, ok(f.lseek(fd, 0, 2), 'lseek')), 'ftruncate');
    } finally {
      f.close(fd);
    }
  };

  const replay = (rootFd: number, ch: any, pins: Array<[string, number]>): void => {
    const [parent, name] = split(ch.path);
    if (name === '') {
      // The share root itself: only an attribute change makes sense.
      ok(f.utimensat(rootFd, '.', null, 0), 'utimensat root');
      return;
    }
    const dirFd = openDir(rootFd, parent);
    try {
      switch (ch.kind) {
        case 'create':
          if (ch.type === 'dir') {
            ok(f.mkdirat(dirFd, name, 0o755), 'mkdir');
            // Pin it at once: a watcher woken by this mkdir adds its watch right away, and the dentry v9fs just
            // made is dropped as soon as nothing holds it (share-replay.ts, directory pins).
            const pin = Number(f.openat(dirFd, name, O_PATH_ | O.DIRECTORY | O.NOFOLLOW | O_CLOEXEC_, 0));
            if (pin >= 0) pins.push([ch.path, pin]);
          } else if (ch.type === 'symlink') ok(f.symlinkat('.', dirFd, name), 'symlink');
          else if (ch.type === 'other') ok(f.mknodat(dirFd, name, 0o010644, 0), 'mknod');
          else {
            try {
              touchOpen(dirFd, name, O.WRONLY | O.CREAT | O.EXCL, ch.content === true);
            } catch (e: any) {
              // Already there for the guest (it looked it up meanwhile): a write-like event instead.
              if (e.errno !== 17 /* EEXIST */) throw e;
              touchOpen(dirFd, name, O.WRONLY, true);
            }
          }
          break;
        case 'delete':
          ok(f.unlinkat(dirFd, name, ch.dir ? AT_REMOVEDIR : 0), 'unlink');
          break;
        case 'rename': {
          const [toParent, toName] = split(ch.to);
          const toFd = toParent === parent ? dirFd : openDir(rootFd, toParent);
          try {
            ok(f.renameat(dirFd, name, toFd, toName), 'rename');
          } finally {
            if (toFd !== dirFd) f.close(toFd);
          }
          break;
        }
        case 'modify':
          if (!ch.dir) touchOpen(dirFd, name, O.WRONLY, true);
          break;
        case 'attrib':
          ok(f.utimensat(dirFd, name, null, AT_SYMLINK_NOFOLLOW), 'utimensat');
          break;
      }
    } finally {
      f.close(dirFd);
    }
  };

  parentPort.on('message', (m: any) => {
    const res = { id: m.id, replayed: 0, failed: 0, errors: [] as string[], pins: [] as Array<[string, number]> };
    let rootFd = -1;
    try {
      rootFd = ok(f.openat(AT_FDCWD, m.root, O_PATH_ | O.DIRECTORY | O_CLOEXEC_, 0), 'open share');
      for (const ch of m.changes) {
        try {
          replay(rootFd, ch, res.pins);
          res.replayed++;
        } catch (e: any) {
          res.failed++;
          if (res.errors.length < 8) res.errors.push(`${ch.kind} ${ch.path}: ${e.message}`);
        }
      }
    } catch (e: any) {
      res.failed = m.changes.length - res.replayed;
      res.errors.push(e.message);
    } finally {
      if (rootFd >= 0) f.close(rootFd);
    }
    parentPort.postMessage(res);
  });
  /* eslint-enable @typescript-eslint/no-explicit-any */
}

interface WorkerHandle {
  worker: Worker;
  waiters: Map<number, (r: ReplayResult) => void>;
  nextId: number;
}

const workers = new Map<number, WorkerHandle>();

function workerFor(uid: number, log: Logger): WorkerHandle {
  let h = workers.get(uid);
  if (h) return h;
  const require = createRequire(import.meta.url);
  const worker = new Worker(`(${replayWorkerMain.toString()})(require)`, {
    eval: true,
    workerData: { koffi: require.resolve('koffi'), uid },
  });
  const handle: WorkerHandle = { worker, waiters: new Map(), nextId: 1 };
  worker.on('message', (m: ReplayResult & { id: number }) => {
    const w = handle.waiters.get(m.id);
    handle.waiters.delete(m.id);
    w?.({ replayed: m.replayed, failed: m.failed, errors: m.errors, pins: m.pins });
  });
  const failAll = (why: string): void => {
    workers.delete(uid);
    for (const w of handle.waiters.values()) w({ replayed: 0, failed: -1, errors: [why] });
    handle.waiters.clear();
  };
  worker.on('error', (err) => {
    log.error('share replay worker failed', { error: err });
    failAll(err.message);
  });
  worker.on('exit', () => failAll('replay worker exited'));
  // After the listeners: adding a 'message' listener refs the worker's port again.
  worker.unref();
  workers.set(uid, handle);
  h = handle;
  return h;
}

/** One share's replay state: its mount, the replay uid, the pinned directories, the batch in progress. */
export class ShareReplayer {
  private readonly pins = new Map<string, number>();
  private busy = false;
  private closed = false;
  /** Directories not pinned because the limit was reached. */
  skippedPins = 0;

  constructor(
    readonly mountPath: string,
    readonly uid: number,
    readonly pinDirs: number,
    private readonly log: Logger,
  ) {
    // Started now, not at the first change: the thread and koffi take ~0.6 s to load under TCG.
    workerFor(uid, log);
  }

  get pinned(): number {
    return this.pins.size;
  }

  /** Pins the share's directories breadth first (in the background; returns when done). */
  async pinTree(from = ''): Promise<void> {
    const queue = [from];
    while (queue.length > 0 && !this.closed) {
      const dir = queue.shift()!;
      if (!this.pin(dir)) {
        this.skippedPins += 1 + queue.length;
        return;
      }
      let entries;
      try {
        entries = await readdir(this.abs(dir), { withFileTypes: true });
      } catch {
        continue;
      }
      for (const e of entries) if (e.isDirectory()) queue.push(dir === '' ? e.name : `${dir}/${e.name}`);
    }
  }

  private abs(p: string): string {
    return p === '' ? this.mountPath : `${this.mountPath}/${p}`;
  }

  /** False when the limit is reached. */
  private pin(path: string): boolean {
    if (this.pins.has(path)) return true;
    if (this.pins.size >= this.pinDirs) return false;
    try {
      this.pins.set(path, openSync(this.abs(path), O_PATH | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC));
    } catch {
      // gone meanwhile, or not a directory: nothing to pin
    }
    return true;
  }

  private unpinBelow(path: string): void {
    const prefix = path + '/';
    for (const [p, fd] of [...this.pins]) {
      if (p !== path && !p.startsWith(prefix)) continue;
      closeSync(fd);
      this.pins.delete(p);
    }
  }

  private movePins(from: string, to: string): void {
    const prefix = from + '/';
    for (const [p, fd] of [...this.pins]) {
      if (p !== from && !p.startsWith(prefix)) continue;
      this.pins.delete(p);
      this.pins.set(to + p.slice(from.length), fd);
    }
  }

  async replay(changes: ReplayChange[]): Promise<ReplayResult> {
    if (this.closed) throw new Error('share removed');
    if (this.busy) throw new Error('a batch is already being replayed for this share');
    this.busy = true;
    try {
      const h = workerFor(this.uid, this.log);
      const id = h.nextId++;
      // Referenced only while a batch is in flight: an idle worker never keeps the process alive.
      h.worker.ref();
      const res = await new Promise<ReplayResult>((resolve) => {
        h.waiters.set(id, resolve);
        h.worker.postMessage({ id, root: this.mountPath, changes });
      }).finally(() => {
        if (h.waiters.size === 0) h.worker.unref();
      });
      if (res.failed < 0) throw new Error(`replay worker failed: ${res.errors.join('; ')}`);
      // Keep the pins in step with the directories the guest now knows.
      for (const [path, fd] of res.pins ?? []) {
        if (this.pins.has(path) || this.pins.size >= this.pinDirs || this.closed) closeSync(fd);
        else this.pins.set(path, fd);
      }
      for (const ch of changes) {
        if (!ch.dir) continue;
        if (ch.kind === 'delete') this.unpinBelow(ch.path);
        else if (ch.kind === 'rename' && ch.to !== undefined) this.movePins(ch.path, ch.to);
        else if (ch.kind === 'create') void this.pinTree(ch.path);
      }
      if (res.errors.length > 0) this.log.debug('share replay: some changes failed', { errors: res.errors });
      return res;
    } finally {
      this.busy = false;
    }
  }

  close(): void {
    this.closed = true;
    for (const fd of this.pins.values()) closeSync(fd);
    this.pins.clear();
  }
}
