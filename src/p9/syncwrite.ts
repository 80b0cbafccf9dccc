// Small writes on the event loop, and when to stop doing them.
//
// A buffered pwrite of up to 64 KiB normally costs a page-cache copy (an 8 KiB one measured 2.7 µs here against
// 23 µs through the threadpool, whose hand-off also costs a futex wake on each side), but it can block:
// dirty-page throttling (balance_dirty_pages sleeps), a journal commit, a slow or remote filesystem. A write
// slower than SLOW_MS may also just have been preempted (a loaded host), which says nothing about the next one.
// So a slow write opens a watch window: for WATCH_MS the writes are bracketed with the thread's voluntary context
// switch count (getrusage RUSAGE_THREAD), and the time of slow writes that slept is added up per second. Once
// writes spent BLOCKED_MAX_MS of a second asleep (sustained blocking, not the odd journal wait), or a single write
// took that long, the session's small writes go to the threadpool for BACKOFF_MS. Writes outside a window cost
// no extra syscall.

import fs from 'node:fs';
import { threadVoluntarySwitches } from '../util/syscalls.js';

const SLOW_MS = 2;
const WATCH_MS = 1000;
const BLOCKED_MAX_MS = 50;
const BACKOFF_MS = 5000;

/** The pieces that remain after the first `n` bytes of `pieces`. */
export function skipBytes(pieces: Buffer[], n: number): Buffer[] {
  let i = 0;
  while (i < pieces.length && n >= pieces[i]!.length) n -= pieces[i++]!.length;
  if (i === pieces.length) return [];
  const rest = pieces.slice(i);
  if (n > 0) rest[0] = rest[0]!.subarray(n);
  return rest;
}

export class SyncWriteGuard {
  /** performance.now() until which small writes go through the threadpool. */
  private offUntil = 0;
  /** performance.now() until which synchronous writes are watched for sleeping. */
  private watchUntil = 0;
  /** Start of the current one-second accounting window, and the time writes slept in it. */
  private windowStart = 0;
  private blockedMs = 0;

  /** Small writes always go through the threadpool (a host whose layer does not want them on the event loop). */
  disable(): void {
    this.offUntil = Infinity;
  }

  /** True when a small write may be done synchronously now. */
  allowed(): boolean {
    return this.offUntil === 0 || performance.now() >= this.offUntil;
  }

  /**
   * Writes all of `data` (one buffer, or pieces written with one pwritev) at `pos` (null: the fd's position)
   * synchronously, short only at a 0-byte write; returns the bytes written.
   */
  write(fd: number, data: Buffer | Buffer[], pos: number | null): number {
    const t0 = performance.now();
    const watching = this.watchUntil > t0;
    const switches = watching ? threadVoluntarySwitches() : 0;
    let done = 0;
    try {
      if (Buffer.isBuffer(data)) {
        while (done < data.length) {
          const n = fs.writeSync(fd, data, done, data.length - done, pos === null ? null : pos + done);
          if (n === 0) break;
          done += n;
        }
      } else {
        for (let rest = data; rest.length > 0;) {
          const n = fs.writevSync(fd, rest, pos === null ? undefined : pos + done);
          if (n === 0) break;
          done += n;
          rest = skipBytes(rest, n);
        }
      }
    } finally {
      const t1 = performance.now();
      if (t1 - t0 > SLOW_MS) this.slow(t0, t1, watching && threadVoluntarySwitches() > switches);
    }
    return done;
  }

  private slow(t0: number, t1: number, slept: boolean): void {
    const took = t1 - t0;
    if (took >= BLOCKED_MAX_MS) {
      this.offUntil = t1 + BACKOFF_MS;
      return;
    }
    this.watchUntil = t1 + WATCH_MS;
    if (!slept) return;
    if (t0 - this.windowStart > 1000) {
      this.windowStart = t0;
      this.blockedMs = 0;
    }
    this.blockedMs += took;
    if (this.blockedMs >= BLOCKED_MAX_MS) this.offUntil = t1 + BACKOFF_MS;
  }
}
