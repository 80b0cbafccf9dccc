// Host changes under one share, carried to the guest (docs/share-notify.md): host watcher -> coalescer ->
// batches -> the 9P server's replay plan -> the agent's ReplayShareChanges, one batch in flight per share.
//
// Bounds: the coalescer holds at most `maxPending` entries (then the watcher stops reading and the kernel
// queues); a batch carries at most `maxBatch` operations; one batch is in flight; the replay plan is cleared
// after each batch. Nothing here ever writes to the host.

import { lstatSync } from 'node:fs';
import type { ReplayPlan } from '../p9/replay-plan.js';
import type { Logger } from '../util/log.js';
import { Coalescer, type HostChange, type ReplayOp } from './coalescer.js';
import { HostWatcher, type TreeWatch } from './host-watcher.js';

export type ReplayType = 'file' | 'dir' | 'symlink' | 'other';

/** What goes to the agent: a replay operation, with the type of a created object. */
export interface OutgoingChange extends ReplayOp {
  type?: ReplayType;
}

export interface ShareNotifierOptions {
  shareId: string;
  hostPath: string;
  plan: ReplayPlan;
  log: Logger;
  /** Sends one batch to the agent; resolves when it was replayed. */
  send(changes: OutgoingChange[]): Promise<{ replayed: number; failed: number }>;
  /** Quiet time after the first change of a burst before its batch goes (default 20 ms). */
  coalesceMs?: number;
  maxBatch?: number;
  maxPending?: number;
  maxDirs?: number;
  watcher?: HostWatcher;
}

export interface ShareNotifierStats {
  hostChanges: number;
  merged: number;
  batches: number;
  replayed: number;
  failed: number;
  pending: number;
  peakPending: number;
  watchedDirs: number;
  skippedDirs: number;
  overflows: number;
}

export class ShareNotifier {
  private readonly queue: Coalescer;
  private carry: ReplayOp[] = [];
  private inflight = false;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private tree: TreeWatch | undefined;
  private readonly s = { hostChanges: 0, batches: 0, replayed: 0, failed: 0, peakPending: 0 };
  /** Resolves when nothing is pending or in flight (tests, shutdown). */
  private idleWaiters: Array<() => void> = [];

  private constructor(private readonly o: ShareNotifierOptions) {
    this.queue = new Coalescer(o.maxPending ?? 65_536);
  }

  static async start(o: ShareNotifierOptions): Promise<ShareNotifier> {
    const n = new ShareNotifier(o);
    n.tree = await (o.watcher ?? HostWatcher.shared()).watch(o.hostPath, {
      log: o.log,
      maxDirs: o.maxDirs,
      onChanges: (c) => n.onChanges(c),
    });
    return n;
  }

  stats(): ShareNotifierStats {
    return {
      ...this.s,
      merged: this.queue.merged,
      pending: this.queue.size + this.carry.length,
      watchedDirs: this.tree?.keys.size ?? 0,
      skippedDirs: this.tree?.skippedDirs ?? 0,
      overflows: this.tree?.overflows ?? 0,
    };
  }

  /** Resolves once every change seen so far was replayed (or failed). */
  idle(): Promise<void> {
    if (!this.inflight && this.queue.size === 0 && this.carry.length === 0) return Promise.resolve();
    return new Promise((r) => this.idleWaiters.push(r));
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    if (this.timer) clearTimeout(this.timer);
    this.tree?.close();
    this.o.plan.clear();
    for (const w of this.idleWaiters.splice(0)) w();
  }

  private onChanges(changes: HostChange[]): boolean {
    if (this.closed) return true;
    for (const c of changes) this.queue.push(c);
    this.s.hostChanges += changes.length;
    this.s.peakPending = Math.max(this.s.peakPending, this.queue.size);
    this.schedule(this.o.coalesceMs ?? 20);
    return !this.queue.full;
  }

  private schedule(ms: number): void {
    if (this.inflight || this.timer || this.closed) return;
    this.timer = setTimeout(() => {
      this.timer = undefined;
      void this.flush();
    }, ms);
  }

  /** Builds one batch whose plan is consistent (see below) and sends it. */
  private async flush(): Promise<void> {
    if (this.inflight || this.closed) return;
    const max = this.o.maxBatch ?? 256;
    const ops = this.carry.length > 0 ? this.carry.splice(0) : [];
    if (ops.length < max) ops.push(...this.queue.take(max - ops.length));
    this.tree?.resume();
    if (ops.length === 0) {
      for (const w of this.idleWaiters.splice(0)) w();
      return;
    }
    const plan = this.o.plan;
    plan.clear();
    // The plan holds for the whole batch, so a path an earlier operation needs visible (it, or something below
    // it) cannot be hidden for a later create in the same batch: the batch ends before that create.
    const visible = new Set<string>();
    const batch: OutgoingChange[] = [];
    let cut = ops.length;
    for (let i = 0; i < ops.length; i++) {
      const op = ops[i]!;
      const hides = op.kind === 'create' ? op.path : op.kind === 'rename' ? op.to! : undefined;
      if (hides !== undefined && (visible.has(hides) || [...visible].some((v) => v.startsWith(hides + '/')))) {
        cut = i;
        break;
      }
      if (hides !== undefined) plan.hide(hides);
      if (op.dir && (op.kind === 'delete' || op.kind === 'rename')) plan.phantomDir(op.path);
      for (let p = op.path; ;) {
        visible.add(p);
        const j = p.lastIndexOf('/');
        if (j < 0) break;
        p = p.slice(0, j);
      }
      batch.push(op.kind === 'create' ? { ...op, type: this.typeOf(op) } : op);
    }
    if (cut < ops.length) this.carry = ops.slice(cut);
    this.inflight = true;
    this.s.batches++;
    try {
      const r = await this.o.send(batch);
      this.s.replayed += r.replayed;
      this.s.failed += r.failed;
    } catch (err) {
      this.s.failed += batch.length;
      if (!this.closed)
        this.o.log.warn('share notify: replaying a batch failed', { share: this.o.shareId, error: err });
    } finally {
      plan.clear();
      this.inflight = false;
    }
    if (this.closed) return;
    if (this.queue.size > 0 || this.carry.length > 0) setImmediate(() => void this.flush());
    else for (const w of this.idleWaiters.splice(0)) w();
  }

  private typeOf(op: ReplayOp): ReplayType {
    try {
      const st = lstatSync(`${this.o.hostPath}/${op.path}`);
      if (st.isDirectory()) return 'dir';
      if (st.isSymbolicLink()) return 'symlink';
      return st.isFile() ? 'file' : 'other';
    } catch {
      return op.dir ? 'dir' : 'file';
    }
  }
}
