// POSIX byte-range locks for Tlock/Tgetlock, kept by the server (shared by every connection to an export, so
// two guests locking the same file see each other). Keyed by file identity; an owner is (connection,
// client_id, proc_id). Semantics follow fcntl(F_SETLK): an owner's new lock replaces its own locks in the
// range (splitting them), adjacent same-type ranges merge, and locks of other owners conflict when the
// ranges overlap and either is a write lock. Ranges are [start, end) in bigint; length 0 means "to EOF".
// Blocking requests wait in a FIFO per file and are retried whenever that file's locks change.
// Host processes do not see these locks (they are not fcntl locks on the host file).

import { LockType } from './messages.js';

export const LOCK_EOF = 1n << 64n;

export interface LockRange {
  owner: string;
  type: number; // RDLCK or WRLCK
  start: bigint;
  end: bigint; // exclusive; LOCK_EOF = to end of file
  procId: number;
  clientId: string;
  session: number;
}

export interface LockRequest {
  owner: string;
  type: number; // RDLCK, WRLCK or UNLCK
  start: bigint;
  end: bigint;
  procId: number;
  clientId: string;
  session: number;
}

interface Waiter {
  req: LockRequest;
  granted: () => void;
}

export function rangeEnd(start: bigint, length: bigint): bigint {
  if (length === 0n) return LOCK_EOF;
  const end = start + length;
  return end > LOCK_EOF ? LOCK_EOF : end;
}

export class LockLimitError extends Error {}

export class LockTable {
  private readonly files = new Map<string, LockRange[]>();
  private readonly waiters = new Map<string, Waiter[]>();
  private readonly countBySession = new Map<number, number>();

  constructor(readonly maxLocksPerSession = 65536) {}

  /** The first lock of another owner that conflicts with `req`, or undefined. */
  conflict(file: string, req: LockRequest): LockRange | undefined {
    if (req.type === LockType.UNLCK) return undefined;
    for (const r of this.files.get(file) ?? []) {
      if (r.owner === req.owner) continue;
      if (r.start >= req.end || req.start >= r.end) continue;
      if (r.type === LockType.WRLCK || req.type === LockType.WRLCK) return r;
    }
    return undefined;
  }

  /**
   * Applies `req` if nothing conflicts; returns false on conflict. Throws LockLimitError when the session
   * would hold more ranges than allowed.
   */
  trySet(file: string, req: LockRequest): boolean {
    if (!this.apply(file, req)) return false;
    this.wake(file);
    return true;
  }

  private apply(file: string, req: LockRequest): boolean {
    if (this.conflict(file, req) !== undefined) return false;
    const old = this.files.get(file) ?? [];
    const next: LockRange[] = [];
    let mine: LockRange[] = [];
    for (const r of old) {
      if (r.owner !== req.owner) next.push(r);
      else if (r.end <= req.start || r.start >= req.end) mine.push(r);
      else {
        // Keep the parts of the owner's old lock outside the new range.
        if (r.start < req.start) mine.push({ ...r, end: req.start });
        if (r.end > req.end) mine.push({ ...r, start: req.end });
      }
    }
    if (req.type !== LockType.UNLCK) {
      mine.push({ ...req });
      mine = mergeAdjacent(mine);
    }
    const before = old.filter((r) => r.owner === req.owner).length;
    const delta = mine.length - before;
    const held = this.countBySession.get(req.session) ?? 0;
    if (delta > 0 && held + delta > this.maxLocksPerSession) throw new LockLimitError('too many locks');
    this.setCount(req.session, held + delta);
    next.push(...mine);
    if (next.length === 0) this.files.delete(file);
    else this.files.set(file, next);
    return true;
  }

  /**
   * Parks a blocking request until it can be applied; `granted` runs once it has been. Returns a cancel
   * function (Tflush, clunk, disconnect) that removes the waiter if it has not been granted yet.
   */
  wait(file: string, req: LockRequest, granted: () => void): () => void {
    let list = this.waiters.get(file);
    if (list === undefined) this.waiters.set(file, (list = []));
    const w: Waiter = { req, granted };
    list.push(w);
    return () => {
      const l = this.waiters.get(file);
      if (l === undefined) return;
      const i = l.indexOf(w);
      if (i >= 0) l.splice(i, 1);
      if (l.length === 0) this.waiters.delete(file);
    };
  }

  /** Drops every lock `owner` holds on `file` (POSIX: closing a file releases the process's locks on it). */
  releaseOwner(file: string, owner: string): void {
    const old = this.files.get(file);
    if (old === undefined) return;
    const keep = old.filter((r) => r.owner !== owner);
    if (keep.length === old.length) return;
    const session = old.find((r) => r.owner === owner)!.session;
    this.setCount(session, (this.countBySession.get(session) ?? 0) - (old.length - keep.length));
    if (keep.length === 0) this.files.delete(file);
    else this.files.set(file, keep);
    this.wake(file);
  }

  /** Drops every lock of a connection (disconnect). Waiters are cancelled by their requests. */
  releaseSession(session: number): void {
    for (const [file, ranges] of [...this.files]) {
      const keep = ranges.filter((r) => r.session !== session);
      if (keep.length === ranges.length) continue;
      if (keep.length === 0) this.files.delete(file);
      else this.files.set(file, keep);
      this.wake(file);
    }
    this.countBySession.delete(session);
  }

  locksHeld(session: number): number {
    return this.countBySession.get(session) ?? 0;
  }

  /** Ranges currently held on a file (tests, diagnostics). */
  ranges(file: string): readonly LockRange[] {
    return this.files.get(file) ?? [];
  }

  private setCount(session: number, n: number): void {
    if (n <= 0) this.countBySession.delete(session);
    else this.countBySession.set(session, n);
  }

  /** Grants, in FIFO order, every waiter that no longer conflicts. */
  private wake(file: string): void {
    const list = this.waiters.get(file);
    if (list === undefined) return;
    for (let i = 0; i < list.length;) {
      const w = list[i]!;
      let ok: boolean;
      try {
        ok = this.apply(file, w.req);
      } catch {
        ok = false; // over the session's lock bound: keep waiting until it releases some
      }
      if (!ok) {
        i++;
        continue;
      }
      list.splice(i, 1);
      w.granted();
    }
    if (list.length === 0) this.waiters.delete(file);
  }
}

function mergeAdjacent(ranges: LockRange[]): LockRange[] {
  ranges.sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  const out: LockRange[] = [];
  for (const r of ranges) {
    const last = out[out.length - 1];
    if (last !== undefined && last.type === r.type && last.end >= r.start) {
      if (r.end > last.end) last.end = r.end;
    } else out.push({ ...r });
  }
  return out;
}
