// Splits a byte stream into 9P frames. A frame lying inside one chunk is handed out in place (chunk, offset,
// size: no copy, no view allocated); a frame spanning chunks is copied once into its own buffer (never a
// quadratic re-concat), except the types given in ScatterOptions (Twrite), handed out as the pieces that cover it. Chunks must not be modified after push
// (stream 'data' chunks are not): handlers may keep views of a frame beyond the callback (async writes).
// The reader stops handing out frames while `blocked()` is true (outstanding-request cap) and resumes on pump().

import { HEADER_SIZE } from './messages.js';

export type FrameHandler = (buf: Buffer, off: number, size: number) => void;
/** A frame spanning chunks, as the views that cover it in order (the first holds at least the `head` bytes of ScatterOptions). */
export type ScatteredFrameHandler = (pieces: Buffer[], size: number) => void;

/**
 * Frames of these types that span chunks are handed out as pieces instead of being copied together (Twrite:
 * its data is written to the file with pwritev straight from the pieces).
 */
export interface ScatterOptions {
  type: number;
  /** Bytes of the frame that must be contiguous (its header). */
  head: number;
  /** Smallest frame worth scattering. */
  minSize: number;
  onFrame: ScatteredFrameHandler;
}

export class FrameReader {
  private chunks: Buffer[] = [];
  /** Offset of the first unconsumed byte in chunks[0]. */
  private head = 0;
  private avail = 0;
  private failed = false;

  constructor(
    private readonly maxSize: () => number,
    private readonly onFrame: FrameHandler,
    private readonly onBadSize: (size: number) => void,
    private readonly blocked: () => boolean,
    private readonly scatter?: ScatterOptions,
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
        this.head = 0;
        this.avail = 0;
        this.onBadSize(size);
        return;
      }
      if (this.avail < size) return;
      const first = this.chunks[0]!;
      const off = this.head;
      this.avail -= size;
      if (first.length - off >= size) {
        // State first: onFrame may re-enter pump() (which returns at once) or read `buffered`.
        this.head = off + size;
        if (this.head === first.length) {
          this.chunks.shift();
          this.head = 0;
        }
        this.onFrame(first, off, size);
      } else if (this.scatterable(first, off, size)) {
        this.scatter!.onFrame(this.pieces(size), size);
      } else {
        this.onFrame(this.gather(size), 0, size);
      }
    }
  }

  private peekSize(): number {
    const first = this.chunks[0]!;
    const h = this.head;
    if (first.length - h >= 4)
      return (first[h]! | (first[h + 1]! << 8) | (first[h + 2]! << 16)) + first[h + 3]! * 0x1000000;
    let size = 0;
    let got = 0;
    for (let i = 0; got < 4; i++) {
      const c = this.chunks[i]!;
      for (let j = i === 0 ? h : 0; j < c.length && got < 4; j++, got++) size += c[j]! * 2 ** (8 * got);
    }
    return size;
  }

  private scatterable(first: Buffer, off: number, size: number): boolean {
    const sc = this.scatter;
    if (sc === undefined || size < sc.minSize) return false;
    const type = first.length - off > 4 ? first[off + 4] : this.chunks[1]![4 - (first.length - off)];
    return type === sc.type;
  }

  /**
   * The views covering the next `n` bytes (spanning chunks), consumed. The first one holds at least the
   * scatter `head` bytes: when a chunk boundary splits the header, the header alone is copied.
   */
  private pieces(n: number): Buffer[] {
    const out: Buffer[] = [];
    let got = 0;
    const head = this.scatter!.head;
    if (this.chunks[0]!.length - this.head < head) {
      out.push(this.gather(head));
      got = head;
    }
    while (got < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length - this.head, n - got);
      out.push(c.subarray(this.head, this.head + k));
      got += k;
      if (this.head + k === c.length) {
        this.chunks.shift();
        this.head = 0;
      } else this.head += k;
    }
    return out;
  }

  /** Copies the next `n` bytes (spanning chunks) into one buffer and consumes them. */
  private gather(n: number): Buffer {
    const out = Buffer.allocUnsafe(n);
    let filled = 0;
    while (filled < n) {
      const c = this.chunks[0]!;
      const k = Math.min(c.length - this.head, n - filled);
      c.copy(out, filled, this.head, this.head + k);
      filled += k;
      if (this.head + k === c.length) {
        this.chunks.shift();
        this.head = 0;
      } else this.head += k;
    }
    return out;
  }
}
