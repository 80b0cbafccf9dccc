// Small writes on the event loop, and when to stop doing them.
//
// A buffered pwrite of up to 64 KiB normally costs a page-cache copy (an 8 KiB one measured 2.7 µs here against
// 23 µs through the threadpool), but it can block: dirty-page throttling (balance_dirty_pages sleeps), a slow or
// remote filesystem. A write that took longer than SLOW_MS may also just have been preempted (a loaded host), which
// says nothing about the next one. So a slow write opens a watch window: for WATCH_MS the writes are bracketed
// with the thread's voluntary context switch count (getrusage RUSAGE_THREAD), and a slow write that slept sends
// the session's small writes to the threadpool for BACKOFF_MS. Writes outside a window cost no extra syscall.

import fs from 'node:fs';
import { threadVoluntarySwitches } from '../util/syscalls.js';

const SLOW_MS = 2;
const WATCH_MS = 1000;
const BACKOFF_MS = 5000;

export class SyncWriteGuard {
  /** performance.now() until which small writes go through the threadpool. */
  private offUntil = 0;
  /** performance.now() until which synchronous writes are watched for sleeping. */
  private watchUntil = 0;

  /** True when a small write may be done synchronously now. */
  allowed(): boolean {
    return this.offUntil === 0 || performance.now() >= this.offUntil;
  }

  /** Writes all of `data` at `pos` synchronously (short only at a 0-byte write); returns the bytes written. */
  write(fd: number, data: Buffer, pos: number): number {
    const t0 = performance.now();
    const watching = this.watchUntil > t0;
    const switches = watching ? threadVoluntarySwitches() : 0;
    let done = 0;
    try {
      while (done < data.length) {
        const n = fs.writeSync(fd, data, done, data.length - done, pos + done);
        if (n === 0) break;
        done += n;
      }
    } finally {
      const t1 = performance.now();
      if (t1 - t0 > SLOW_MS) {
        if (watching && threadVoluntarySwitches() > switches) this.offUntil = t1 + BACKOFF_MS;
        else this.watchUntil = t1 + WATCH_MS;
      }
    }
    return done;
  }
}
