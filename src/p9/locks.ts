// POSIX byte-range locks for Tlock/Tgetlock, kept by the server (shared by every connection to an export, so
// two guests locking the same file see each other). Keyed by file identity; an owner is (connection,
// client_id, proc_id). Semantics follow fcntl(F_SETLK): an owner's new lock replaces its own locks in the
// range (splitting them), adjacent same-type ranges of an owner merge, and locks of other owners conflict when
// the ranges overlap and either is a write lock. Ranges are [start, end) in bigint; length 0 means "to EOF".
// Host processes do not see these locks (they are not fcntl locks on the host file).
//
// Layout per file, so that no request scans everything (a hostile guest controls the counts):
//  - write ranges sorted by start: pairwise disjoint (no two owners' write locks overlap, and an owner's own
//    ranges never overlap), so their ends are sorted too and the overlapping ones are found by binary search;
//  - read ranges sorted by start, with the largest end per block of READ_BLOCK ranges, so a scan skips whole
//    blocks that end before the request starts;
//  - each owner's ranges, sorted and disjoint, for replacing, splitting and merging its own locks.
// Waiters queue per file (FIFO) and are retried only when a change overlaps their range.
//
// Worst-case cost per request on the event loop, with n ranges on the file (n <= maxRangesPerFile), k of them
// the requester's own, W waiters on the file (W <= maxWaitersPerFile):
//   conflict test  O(log n + n/READ_BLOCK + READ_BLOCK + k)
//   apply          O(log n + k) to find, O(n) array moves to insert/remove (memmove)
//   wake           O(W) overlap tests + (overlapping waiters) x conflict test + (granted waiters) x apply
// Each granted waiter is a request that completes, so its apply is its own cost, not the waker's.

import { LockType } from './messages.js';

export const LOCK_EOF = 1n << 64n;
const READ_BLOCK = 32;

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

interface OwnerLocks {
  session: number;
  ranges: LockRange[]; // sorted by start, disjoint
}

interface FileLocks {
  writes: LockRange[];
  reads: LockRange[];
  /** Max end of reads[b*READ_BLOCK .. (b+1)*READ_BLOCK); null when stale. */
  readBlockEnd: bigint[] | null;
  owners: Map<string, OwnerLocks>;
  /** Ranges per connection on this file (to keep filesBySession exact). */
  bySession: Map<number, number>;
  waiters: Waiter[];
}

function newFileLocks(): FileLocks {
  return { writes: [], reads: [], readBlockEnd: null, owners: new Map(), bySession: new Map(), waiters: [] };
}

export interface LockLimits {
  /** Ranges one connection may hold over all files. */
  maxLocksPerSession: number;
  maxRangesPerFile: number;
  maxWaitersPerFile: number;
}

export function rangeEnd(start: bigint, length: bigint): bigint {
  if (length === 0n) return LOCK_EOF;
  const end = start + length;
  return end > LOCK_EOF ? LOCK_EOF : end;
}

export class LockLimitError extends Error {}

/** First index in a start-sorted array whose start is >= `start`. */
function lowerBoundStart(a: LockRange[], start: bigint): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]!.start < start) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

/** First index in a disjoint, sorted array whose end is > `pos`. */
function firstEndingAfter(a: LockRange[], pos: bigint): number {
  let lo = 0;
  let hi = a.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if (a[mid]!.end <= pos) lo = mid + 1;
    else hi = mid;
  }
  return lo;
}

function insertSorted(a: LockRange[], r: LockRange): void {
  a.splice(lowerBoundStart(a, r.start), 0, r);
}

function removeExact(a: LockRange[], r: LockRange): void {
  for (let i = lowerBoundStart(a, r.start); i < a.length && a[i]!.start === r.start; i++) {
    if (a[i] === r) {
      a.splice(i, 1);
      return;
    }
  }
}

const overlaps = (a: { start: bigint; end: bigint }, s: bigint, e: bigint): boolean => a.start < e && s < a.end;

export class LockTable {
  private readonly files = new Map<string, FileLocks>();
  private readonly countBySession = new Map<number, number>();
  private readonly filesBySession = new Map<number, Set<string>>();
  readonly limits: LockLimits;
  /** Waiters re-tested by wakeups so far (diagnostics; tests check that unrelated changes test none). */
  rechecks = 0;

  constructor(limits: Partial<LockLimits> | number = {}) {
    const l = typeof limits === 'number' ? { maxLocksPerSession: limits } : limits;
    this.limits = {
      maxLocksPerSession: l.maxLocksPerSession ?? 65536,
      maxRangesPerFile: l.maxRangesPerFile ?? 4096,
      maxWaitersPerFile: l.maxWaitersPerFile ?? 1024,
    };
  }

  /** The first lock of another owner that conflicts with `req`, or undefined. */
  conflict(file: string, req: LockRequest): LockRange | undefined {
    if (req.type === LockType.UNLCK) return undefined;
    const f = this.files.get(file);
    return f === undefined ? undefined : this.conflictIn(f, req);
  }

  private conflictIn(f: FileLocks, req: LockRequest): LockRange | undefined {
    if (req.type === LockType.UNLCK) return undefined;
    // Write locks of others overlapping the request conflict with anything.
    const w = f.writes;
    for (let i = firstEndingAfter(w, req.start); i < w.length && w[i]!.start < req.end; i++) {
      if (w[i]!.owner !== req.owner) return w[i];
    }
    if (req.type !== LockType.WRLCK) return undefined;
    const r = f.reads;
    if (r.length === 0) return undefined;
    const blockEnd = this.readBlockEnds(f);
    for (let b = 0; b < blockEnd.length; b++) {
      const first = b * READ_BLOCK;
      if (r[first]!.start >= req.end) break;
      if (blockEnd[b]! <= req.start) continue;
      const last = Math.min(r.length, first + READ_BLOCK);
      for (let i = first; i < last; i++) {
        const x = r[i]!;
        if (x.start >= req.end) break;
        if (x.end > req.start && x.owner !== req.owner) return x;
      }
    }
    return undefined;
  }

  private readBlockEnds(f: FileLocks): bigint[] {
    if (f.readBlockEnd !== null) return f.readBlockEnd;
    const out: bigint[] = [];
    for (let i = 0; i < f.reads.length; i++) {
      const b = (i / READ_BLOCK) | 0;
      const e = f.reads[i]!.end;
      if (out[b] === undefined || e > out[b]!) out[b] = e;
    }
    return (f.readBlockEnd = out);
  }

  /**
   * Applies `req` if nothing conflicts; returns false on conflict. Throws LockLimitError when the session or the
   * file would hold more ranges than allowed.
   */
  trySet(file: string, req: LockRequest): boolean {
    let f = this.files.get(file);
    if (f === undefined) {
      if (req.type === LockType.UNLCK) return true;
      f = newFileLocks();
      this.files.set(file, f);
    }
    let changed: { start: bigint; end: bigint } | undefined;
    try {
      if (this.conflictIn(f, req) !== undefined) return false;
      changed = this.apply(file, f, req);
    } finally {
      this.dropIfEmpty(file, f);
    }
    if (changed !== undefined) this.wake(file, changed.start, changed.end);
    return true;
  }

  /**
   * The owner's locks in [start, end) are replaced by `req` (after a successful conflict test). Returns the span
   * where locks were released or downgraded (undefined when nothing was), which is where waiters may now fit.
   */
  private apply(file: string, f: FileLocks, req: LockRequest): { start: bigint; end: bigint } | undefined {
    let own = f.owners.get(req.owner);
    const mine = own?.ranges ?? [];
    // The owner's ranges that overlap the request or touch it (candidates for merging).
    let i = firstEndingAfter(mine, req.start - 1n);
    const hit: LockRange[] = [];
    for (; i < mine.length && mine[i]!.start <= req.end; i++) hit.push(mine[i]!);
    const added: LockRange[] = [];
    let released: { start: bigint; end: bigint } | undefined;
    let newStart = req.start;
    let newEnd = req.end;
    for (const r of hit) {
      const touchesOnly = r.end === req.start || r.start === req.end;
      if (touchesOnly) {
        if (req.type !== LockType.UNLCK && r.type === req.type) {
          // Adjacent range of the same type: merged into the new one.
          if (r.start < newStart) newStart = r.start;
          if (r.end > newEnd) newEnd = r.end;
        } else added.push(r); // stays as it is
        continue;
      }
      if (req.type !== LockType.UNLCK && r.type === req.type) {
        if (r.start < newStart) newStart = r.start;
        if (r.end > newEnd) newEnd = r.end;
        continue;
      }
      // Different type or unlock: the parts outside the request stay, the overlap is released/converted.
      if (r.start < req.start) added.push({ ...r, end: req.start });
      if (r.end > req.end) added.push({ ...r, start: req.end });
      if (r.type === LockType.WRLCK || req.type === LockType.UNLCK) {
        const s = r.start > req.start ? r.start : req.start;
        const e = r.end < req.end ? r.end : req.end;
        released = released === undefined ? { start: s, end: e } : union(released, s, e);
      }
    }
    const kept = added.filter((r) => hit.includes(r)); // untouched neighbours
    const pieces = added.filter((r) => !hit.includes(r));
    if (req.type !== LockType.UNLCK) {
      pieces.push({
        owner: req.owner,
        type: req.type,
        start: newStart,
        end: newEnd,
        procId: req.procId,
        clientId: req.clientId,
        session: req.session,
      });
    }
    const removed = hit.filter((r) => !kept.includes(r));
    const delta = pieces.length - removed.length;
    if (delta > 0) {
      const held = this.countBySession.get(req.session) ?? 0;
      if (held + delta > this.limits.maxLocksPerSession) throw new LockLimitError('too many locks held');
      if (f.writes.length + f.reads.length + delta > this.limits.maxRangesPerFile) {
        throw new LockLimitError('too many lock ranges on this file');
      }
    }
    if (removed.length === 0 && pieces.length === 0) return undefined;
    for (const r of removed) {
      removeExact(r.type === LockType.WRLCK ? f.writes : f.reads, r);
      removeExact(mine, r);
    }
    for (const r of pieces) {
      insertSorted(r.type === LockType.WRLCK ? f.writes : f.reads, r);
      if (own === undefined) f.owners.set(req.owner, (own = { session: req.session, ranges: [] }));
      insertSorted(own.ranges, r);
    }
    f.readBlockEnd = null;
    if (own !== undefined && own.ranges.length === 0) f.owners.delete(req.owner);
    this.addCount(req.session, file, f, delta);
    return released;
  }

  /**
   * Parks a blocking request until it can be applied; `granted` runs once it has been. Returns a cancel function
   * (Tflush, clunk, disconnect) that removes the waiter if it has not been granted yet, or undefined when the
   * file already has maxWaitersPerFile waiters (the caller answers BLOCKED).
   */
  wait(file: string, req: LockRequest, granted: () => void): (() => void) | undefined {
    let f = this.files.get(file);
    if (f === undefined) {
      f = newFileLocks();
      this.files.set(file, f);
    }
    if (f.waiters.length >= this.limits.maxWaitersPerFile) {
      this.dropIfEmpty(file, f);
      return undefined;
    }
    const w: Waiter = { req, granted };
    f.waiters.push(w);
    return () => {
      const g = this.files.get(file);
      if (g === undefined) return;
      const i = g.waiters.indexOf(w);
      if (i >= 0) g.waiters.splice(i, 1);
      this.dropIfEmpty(file, g);
    };
  }

  /** Drops every lock `owner` holds on `file` (POSIX: closing a file releases the process's locks on it). */
  releaseOwner(file: string, owner: string): void {
    const f = this.files.get(file);
    const own = f?.owners.get(owner);
    if (f === undefined || own === undefined) return;
    this.dropOwner(file, f, owner, own);
  }

  /** Drops every lock of a connection (disconnect). Waiters are cancelled by their requests. */
  releaseSession(session: number): void {
    const files = this.filesBySession.get(session);
    if (files === undefined) return;
    for (const file of [...files]) {
      const f = this.files.get(file);
      if (f === undefined) continue;
      for (const [owner, own] of [...f.owners]) if (own.session === session) this.dropOwner(file, f, owner, own);
    }
    this.filesBySession.delete(session);
    this.countBySession.delete(session);
  }

  private dropOwner(file: string, f: FileLocks, owner: string, own: OwnerLocks): void {
    let span: { start: bigint; end: bigint } | undefined;
    for (const r of own.ranges) {
      removeExact(r.type === LockType.WRLCK ? f.writes : f.reads, r);
      span = span === undefined ? { start: r.start, end: r.end } : union(span, r.start, r.end);
    }
    f.readBlockEnd = null;
    f.owners.delete(owner);
    this.addCount(own.session, file, f, -own.ranges.length);
    if (span !== undefined) this.wake(file, span.start, span.end);
    else this.dropIfEmpty(file, f);
  }

  locksHeld(session: number): number {
    return this.countBySession.get(session) ?? 0;
  }

  /** Ranges currently held on a file, sorted by start (tests, diagnostics). */
  ranges(file: string): readonly LockRange[] {
    const f = this.files.get(file);
    if (f === undefined) return [];
    return [...f.writes, ...f.reads].sort((a, b) => (a.start < b.start ? -1 : a.start > b.start ? 1 : 0));
  }

  waiterCount(file: string): number {
    return this.files.get(file)?.waiters.length ?? 0;
  }

  private addCount(session: number, file: string, f: FileLocks, delta: number): void {
    const n = (this.countBySession.get(session) ?? 0) + delta;
    if (n <= 0) this.countBySession.delete(session);
    else this.countBySession.set(session, n);
    const inFile = (f.bySession.get(session) ?? 0) + delta;
    let set = this.filesBySession.get(session);
    if (inFile > 0) {
      f.bySession.set(session, inFile);
      if (set === undefined) this.filesBySession.set(session, (set = new Set()));
      set.add(file);
    } else {
      f.bySession.delete(session);
      set?.delete(file);
      if (set?.size === 0) this.filesBySession.delete(session);
    }
  }

  private dropIfEmpty(file: string, f: FileLocks): void {
    if (f.writes.length === 0 && f.reads.length === 0 && f.waiters.length === 0) this.files.delete(file);
  }

  /**
   * Grants, in FIFO order, the waiters whose range overlaps [start, end) (where locks were just released) and
   * that no longer conflict. A grant that itself releases some of its owner's ranges (a downgrade) widens the
   * span, and the waiters before it get another pass; each extra pass follows a grant, so there are at most
   * W + 1 passes of O(W) overlap tests (W <= maxWaitersPerFile).
   */
  private wake(file: string, start: bigint, end: bigint): void {
    const f = this.files.get(file);
    if (f === undefined) return;
    let s = start;
    let e = end;
    for (let again = true; again;) {
      again = false;
      for (let i = 0; i < f.waiters.length;) {
        const w = f.waiters[i]!;
        if (!overlaps(w.req, s, e) || (this.rechecks++, this.conflictIn(f, w.req) !== undefined)) {
          i++;
          continue;
        }
        let released: { start: bigint; end: bigint } | undefined;
        try {
          released = this.apply(file, f, w.req);
        } catch {
          i++; // over a range bound: keeps waiting until something is released
          continue;
        }
        f.waiters.splice(i, 1);
        if (released !== undefined) {
          if (released.start < s) s = released.start;
          if (released.end > e) e = released.end;
          again = i > 0; // waiters already passed may fit now
        }
        w.granted();
      }
    }
    this.dropIfEmpty(file, f);
  }
}

function union(a: { start: bigint; end: bigint }, s: bigint, e: bigint): { start: bigint; end: bigint } {
  return { start: a.start < s ? a.start : s, end: a.end > e ? a.end : e };
}
