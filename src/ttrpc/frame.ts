// ttrpc framing: a 10-byte header (u32 BE data length | u32 BE stream id | u8 type | u8 flags) then the data.
// The decoder is incremental and bounded: a frame body is handed out as a view of the socket chunk when it
// arrived in one piece, copied once into an exactly-sized buffer when it spans chunks, and skipped without
// buffering when it is larger than the limit.

export const HEADER_LENGTH = 10;
/** Largest data length a peer may send (Go ttrpc messageLengthMax). */
export const MAX_DATA_LENGTH = 4 << 20;
/**
 * The protocol reserves the first header byte (lengths stay below 16 MiB), so a header with it set is not a
 * ttrpc frame at all: such a stream is garbage and the connection is closed instead of skipping gigabytes.
 */
const RESERVED_LENGTH_LIMIT = 1 << 24;

export enum FrameType {
  REQUEST = 1,
  RESPONSE = 2,
  /** Stream data (ttrpc >= 1.2). */
  DATA = 3,
}

export const Flags = {
  /** Request and Data: the sender will send nothing more on this stream. */
  REMOTE_CLOSED: 0x1,
  /** Request: non-unary, the sender keeps sending Data frames. */
  REMOTE_OPEN: 0x2,
  /** Data: the frame carries no message (as opposed to an empty message). */
  NO_DATA: 0x4,
} as const;

export interface FrameHeader {
  length: number;
  streamId: number;
  type: number;
  flags: number;
}

export function writeFrameHeader(
  target: Uint8Array,
  offset: number,
  length: number,
  streamId: number,
  type: FrameType,
  flags: number,
): void {
  target[offset] = length >>> 24;
  target[offset + 1] = (length >>> 16) & 0xff;
  target[offset + 2] = (length >>> 8) & 0xff;
  target[offset + 3] = length & 0xff;
  target[offset + 4] = streamId >>> 24;
  target[offset + 5] = (streamId >>> 16) & 0xff;
  target[offset + 6] = (streamId >>> 8) & 0xff;
  target[offset + 7] = streamId & 0xff;
  target[offset + 8] = type;
  target[offset + 9] = flags;
}

/** One frame as a single buffer (header followed by data). */
export function encodeFrame(streamId: number, type: FrameType, flags: number, data: Uint8Array): Buffer {
  const out = Buffer.allocUnsafe(HEADER_LENGTH + data.length);
  writeFrameHeader(out, 0, data.length, streamId, type, flags);
  out.set(data, HEADER_LENGTH);
  return out;
}

export interface FrameHandler {
  /** A complete frame. `data` may be a view into a socket chunk: consume or copy it before returning. */
  onFrame(header: FrameHeader, data: Buffer): void;
  /** A frame longer than the limit; its body is being skipped. Called once, when its header arrives. */
  onOversized(header: FrameHeader): void;
  /** The byte stream is not ttrpc. Called once; the decoder ignores all later input. */
  onGarbage(reason: string): void;
}

const enum State {
  HEADER,
  BODY,
  SKIP,
  DEAD,
}

const EMPTY = Buffer.alloc(0);

export class FrameDecoder {
  private state = State.HEADER;
  private readonly headerBuf = Buffer.allocUnsafe(HEADER_LENGTH);
  private headerFilled = 0;
  private header: FrameHeader = { length: 0, streamId: 0, type: 0, flags: 0 };
  /** Body being assembled across chunks (exactly header.length bytes). */
  private body: Buffer = EMPTY;
  private bodyFilled = 0;
  private skipRemaining = 0;
  private paused = false;
  /** Unprocessed rest of a chunk that arrived while paused (a view, not a copy). */
  private pending: Buffer | undefined;

  constructor(
    private readonly handler: FrameHandler,
    private readonly maxDataLength = MAX_DATA_LENGTH,
  ) {}

  /** Bytes held for an incomplete frame; bounded by HEADER_LENGTH + maxDataLength. */
  get bufferedBytes(): number {
    return this.headerFilled + this.bodyFilled;
  }

  get dead(): boolean {
    return this.state === State.DEAD;
  }

  /**
   * Stops delivering frames, even in the middle of a chunk: the rest is kept (as a view) until resume().
   * This is what makes "pause the socket" an exact bound rather than "after this 64 KiB chunk".
   */
  pause(): void {
    this.paused = true;
  }

  resume(): void {
    if (!this.paused) return;
    this.paused = false;
    const rest = this.pending;
    this.pending = undefined;
    if (rest) this.push(rest);
  }

  /** Delivers nothing more, for good (the connection is closed). */
  stop(): void {
    this.state = State.DEAD;
    this.pending = undefined;
    this.body = EMPTY;
    this.bodyFilled = 0;
  }

  push(chunk: Buffer): void {
    if (this.state === State.DEAD) return;
    if (this.pending) {
      // Only reachable if the owner keeps feeding while paused; keep order, never drop bytes.
      this.pending = Buffer.concat([this.pending, chunk]);
      return;
    }
    let pos = 0;
    const end = chunk.length;
    while (pos < end) {
      // `as State`: handlers called below can stop or pause the decoder, which TypeScript cannot see.
      if (this.paused && (this.state as State) !== State.DEAD) {
        this.pending = chunk.subarray(pos);
        return;
      }
      switch (this.state as State) {
        case State.HEADER: {
          // Fast path: a whole header in this chunk needs no staging copy.
          if (this.headerFilled === 0 && end - pos >= HEADER_LENGTH) {
            this.startFrame(chunk, pos);
            pos += HEADER_LENGTH;
          } else {
            const n = Math.min(HEADER_LENGTH - this.headerFilled, end - pos);
            chunk.copy(this.headerBuf, this.headerFilled, pos, pos + n);
            this.headerFilled += n;
            pos += n;
            if (this.headerFilled < HEADER_LENGTH) return;
            this.headerFilled = 0;
            this.startFrame(this.headerBuf, 0);
          }
          // startFrame moved the state on (TypeScript cannot see that through the call).
          const next = this.state as State;
          if (next === State.DEAD) return;
          if (next === State.BODY && this.header.length === 0) this.finishFrame(EMPTY);
          break;
        }
        case State.BODY: {
          const need = this.header.length - this.bodyFilled;
          if (this.bodyFilled === 0 && end - pos >= need) {
            // Whole body in this chunk: hand out a view, no copy.
            const data = chunk.subarray(pos, pos + need);
            pos += need;
            this.finishFrame(data);
          } else {
            if (this.bodyFilled === 0) this.body = Buffer.allocUnsafe(this.header.length);
            const n = Math.min(need, end - pos);
            chunk.copy(this.body, this.bodyFilled, pos, pos + n);
            this.bodyFilled += n;
            pos += n;
            if (this.bodyFilled < this.header.length) return;
            const data = this.body;
            this.body = EMPTY;
            this.bodyFilled = 0;
            this.finishFrame(data);
          }
          break;
        }
        case State.SKIP: {
          const n = Math.min(this.skipRemaining, end - pos);
          this.skipRemaining -= n;
          pos += n;
          if (this.skipRemaining === 0) this.state = State.HEADER;
          break;
        }
        case State.DEAD:
          return;
      }
    }
  }

  private startFrame(buf: Buffer, at: number): void {
    const header: FrameHeader = {
      length: buf.readUInt32BE(at),
      streamId: buf.readUInt32BE(at + 4),
      type: buf[at + 8]!,
      flags: buf[at + 9]!,
    };
    this.header = header;
    if (header.length >= RESERVED_LENGTH_LIMIT) {
      this.die(`frame length ${header.length} uses the reserved length byte`);
      return;
    }
    if (header.type !== FrameType.REQUEST && header.type !== FrameType.RESPONSE && header.type !== FrameType.DATA) {
      this.die(`unknown frame type ${header.type}`);
      return;
    }
    if (header.length > this.maxDataLength) {
      this.skipRemaining = header.length;
      this.state = State.SKIP;
      this.handler.onOversized(header);
      return;
    }
    this.state = State.BODY;
  }

  private finishFrame(data: Buffer): void {
    this.state = State.HEADER;
    this.handler.onFrame(this.header, data);
  }

  private die(reason: string): void {
    this.state = State.DEAD;
    this.pending = undefined;
    this.body = EMPTY;
    this.bodyFilled = 0;
    this.handler.onGarbage(reason);
  }
}
