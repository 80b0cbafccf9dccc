// Splits a byte stream into 9P frames. Each frame is copied at most once (a frame lying inside one chunk is a
// zero-copy view), so a 1 MiB Twrite arriving in 64 KiB pieces costs one copy, not a quadratic re-concat.
// The reader stops handing out frames while `blocked()` is true (outstanding-request cap) and resumes on pump().

import { HEADER_SIZE } from './messages.js';

export class FrameReader {
  private chunks: Buffer[] = [];
  private avail = 0;
  private failed = false;

  constructor(
    private readonly maxSize: () => number,
    private readonly onFrame: (frame: Buffer) => void,
    private readonly onBadSize: (size: number) => void,
    private readonly blocked: () => boolean,
  ) {}

  /** Bytes received but not yet handed out as frames. */
  get buffered(): number {
    return this.avail;
  }

  push(chunk: Buffer): void {
    if (this.failed || chunk.length === 0) return;
    this.chunks.push(chunk);
    this.avail += chunk.length;
    this.pump();
  }

  private pumping = false;

  pump(): void {
    // Handlers may complete synchronously and call pump() again from inside onFrame; the outer loop carries
    // on instead, so a chunk holding thousands of frames never nests thousands of stack frames.
    if (this.pumping) return;
    this.pumping = true;
    try {
      this.pumpFrames();
    } finally {
      this.pumping = false;
    }
  }

  private pumpFrames(): void {
    while (!this.failed && this.avail >= 4 && !this.blocked()) {
      const size = this.peekSize();
      if (size < HEADER_SIZE || size > this.maxSize()) {
        this.failed = true;
        this.chunks = [];
        this.avail = 0;
        this.onBadSize(size);
        return;
      }
      if (this.avail < size) return;
      this.onFrame(this.take(size));
    }
  }

  private peekSize(): number {
    const first = this.chunks[0]!;
    if (first.length >= 4) return first.readUInt32LE(0);
    const head = Buffer.alloc(4);
    let got = 0;
    for (const c of this.chunks) {
      got += c.copy(head, got, 0, Math.min(c.length, 4 - got));
      if (got === 4) break;
    }
    return head.readUInt32LE(0);
  }

  private take(n: number): Buffer {
    this.avail -= n;
    const first = this.chunks[0]!;
    if (first.length >= n) {
      if (first.length === n) this.chunks.shift();
      else this.chunks[0] = first.subarray(n);
      return first.subarray(0, n);
    }
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length, n - filled);
      c.copy(out, filled, 0, k);
      filled += k;
      if (k === c.length) this.chunks.shift();
      else this.chunks[0] = c.subarray(k);
    }
    return out;
  }
}
