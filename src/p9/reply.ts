// Reply output of one connection. Replies are encoded straight into an arena buffer (no buffer per reply); large
// data replies that could not be built there (threadpool reads, 1 MiB Rread) are queued as their own buffers.
// Everything queued leaves in one stream write per batch (one writev when there are several segments), so replies
// completed in the same tick cost one syscall together: measured, flushing whenever an arena filled up (one
// write per 64 KiB Rread) cut pipelined read throughput by a third against one writev per batch.
//
// The arena is reused only when the previous write went out synchronously (the kernel has the bytes: a net.Socket
// whose writableLength is back to 0); otherwise a new one is started and the old one stays with the pending write.
// Other Duplex kinds get a new arena after every write, since their _write may keep the chunk.

import net from 'node:net';
import type { Duplex } from 'node:stream';
import { bufferAddress } from '../util/syscalls.js';

/** First arena size; grown on demand (a reply that does not fit) up to MAX_ARENA. */
const MIN_ARENA = 16 * 1024;
/** Largest arena; replies above ARENA_REPLY_MAX bytes get their own buffer. */
const MAX_ARENA = 256 * 1024;
/** Replies up to this size may be built in the arena (a 64 KiB Rread fits twice). */
export const ARENA_REPLY_MAX = 128 * 1024;

export class ReplyOut {
  buf: Buffer = Buffer.allocUnsafeSlow(MIN_ARENA);
  /** End of the committed bytes; a reply being built starts here. */
  pos = 0;
  /** Start of committed bytes not yet queued for writing. */
  private cut = 0;
  /** Segments waiting for the next flush, in reply order. */
  private readonly queue: Buffer[] = [];
  private readonly reusable: boolean;
  private addrOf: Buffer | undefined;
  private addr = 0;

  constructor(private readonly stream: Duplex) {
    this.reusable = stream instanceof net.Socket;
  }

  /**
   * Room for `n` bytes at `pos`; returns pos. When the arena is full, what it holds stays queued and a new arena is
   * started: replies of one batch still leave in one write (a writev), however large. Hot paths keep n within
   * ARENA_REPLY_MAX; a larger reply gets an arena of its own size, dropped after its write.
   */
  reserve(n: number): number {
    if (this.pos + n <= this.buf.length) return this.pos;
    this.cutArena();
    const size = Math.min(MAX_ARENA, Math.max(this.buf.length * 2, n + MIN_ARENA));
    this.buf = Buffer.allocUnsafeSlow(Math.max(size, n));
    this.pos = this.cut = 0;
    return 0;
  }

  /** Memory address of buf[0] (for preadv2 straight into the arena); valid while `buf` is this arena. */
  get address(): number {
    if (this.addrOf !== this.buf) {
      this.addr = bufferAddress(this.buf);
      this.addrOf = this.buf;
    }
    return this.addr;
  }

  /** The reply at [pos, end) is complete. */
  commit(end: number): void {
    this.pos = end;
  }

  /** Queues a reply that has its own buffer, after everything committed so far. */
  push(reply: Buffer): void {
    this.cutArena();
    this.queue.push(reply);
  }

  get pending(): boolean {
    return this.pos > this.cut || this.queue.length > 0;
  }

  /** Writes everything queued. */
  flush(): void {
    this.cutArena();
    const q = this.queue;
    if (q.length === 0) return;
    const stream = this.stream;
    if (stream.destroyed) {
      q.length = 0;
    } else if (q.length === 1) {
      stream.write(q[0]);
    } else {
      stream.cork();
      for (const b of q) stream.write(b);
      stream.uncork();
    }
    q.length = 0;
    if (this.cut === 0) return;
    if (this.buf.length > MAX_ARENA) {
      // Grown for one large reply (an xattr value read of up to msize): not kept.
      this.buf = Buffer.allocUnsafeSlow(MIN_ARENA);
      this.pos = this.cut = 0;
    } else if (this.reusable && stream.writableLength === 0) this.pos = this.cut = 0;
    else {
      // The pending write holds the arena: continue in a new one of the same size.
      this.buf = Buffer.allocUnsafeSlow(this.buf.length);
      this.pos = this.cut = 0;
    }
  }

  private cutArena(): void {
    if (this.pos > this.cut) {
      this.queue.push(this.buf.subarray(this.cut, this.pos));
      this.cut = this.pos;
    }
  }
}
