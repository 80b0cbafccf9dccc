// One ttrpc connection's byte layer, shared by client and server: decodes incoming frames, writes outgoing
// frames with socket backpressure, and lets streams pause reading while their receive queues are full.
// Works on any Duplex (unix socket, vsock wrapper, TCP). Never throws out of a socket callback.
import type { Duplex } from 'node:stream';
import type { Logger } from '../util/log.js';
import { Code } from './codes.js';
import type { EncodedFrame } from './envelope.js';
import { closedError, TtrpcError } from './errors.js';
import {
  FrameDecoder,
  FrameType,
  HEADER_LENGTH,
  MAX_DATA_LENGTH,
  writeFrameHeader,
  type FrameHeader,
} from './frame.js';

/** Data frames at least this large go to the socket uncopied, after a separate header buffer. */
const SEPARATE_DATA_THRESHOLD = 16 * 1024;

export interface ChannelHandler {
  onFrame(header: FrameHeader, data: Buffer): void;
  onOversized(header: FrameHeader): void;
  /** The connection is gone (peer closed, error, garbage, or close() was called). Called once. */
  onClose(err: Error | undefined): void;
}

export class Channel {
  private readonly decoder: FrameDecoder;
  private isClosed = false;
  private readHolds = 0;
  private drainWaiter: Promise<void> | undefined;
  private corked = false;

  constructor(
    readonly socket: Duplex,
    private readonly handler: ChannelHandler,
    private readonly logger: Logger,
  ) {
    this.decoder = new FrameDecoder({
      onFrame: (header, data) => this.dispatch(() => handler.onFrame(header, data)),
      onOversized: (header) => this.dispatch(() => handler.onOversized(header)),
      onGarbage: (reason) => {
        this.logger.warn('ttrpc: closing connection: peer sent bytes that are not ttrpc frames', { reason });
        this.close(new TtrpcError(Code.INVALID_ARGUMENT, `ttrpc: protocol error: ${reason}`));
      },
    });
    socket.on('data', (chunk: Buffer | string) => {
      if (this.isClosed) return;
      this.decoder.push(typeof chunk === 'string' ? Buffer.from(chunk) : chunk);
    });
    socket.on('error', (err: Error) => this.close(err));
    // The peer closing its write side ends the conversation: ttrpc has no half-closed connection state.
    socket.on('end', () => this.close());
    socket.on('close', () => this.close());
  }

  get closed(): boolean {
    return this.isClosed;
  }

  /**
   * Queues a frame. Returns false when the socket's write buffer is full: a caller producing many frames (a
   * stream sender) should then await drained(). Throws RESOURCE_EXHAUSTED for a frame over the size limit and
   * UNAVAILABLE when the connection is closed.
   */
  write(frame: EncodedFrame): boolean {
    if (this.isClosed) throw closedError();
    const length = frame.head.readUInt32BE(0);
    if (length > MAX_DATA_LENGTH) {
      throw new TtrpcError(
        Code.RESOURCE_EXHAUSTED,
        `message length ${length} exceed maximum message size of ${MAX_DATA_LENGTH}`,
      );
    }
    this.autoCork();
    let ok = this.socket.write(frame.head);
    if (frame.tail !== undefined) ok = this.socket.write(frame.tail);
    return ok;
  }

  writeData(streamId: number, flags: number, data: Uint8Array): boolean {
    if (data.length < SEPARATE_DATA_THRESHOLD) {
      const head = Buffer.allocUnsafe(HEADER_LENGTH + data.length);
      writeFrameHeader(head, 0, data.length, streamId, FrameType.DATA, flags);
      head.set(data, HEADER_LENGTH);
      return this.write({ head, tail: undefined });
    }
    const head = Buffer.allocUnsafe(HEADER_LENGTH);
    writeFrameHeader(head, 0, data.length, streamId, FrameType.DATA, flags);
    return this.write({ head, tail: data });
  }

  /** Resolves once the socket wants more data (or rejects when the connection closes first). */
  drained(): Promise<void> {
    if (this.isClosed) return Promise.reject(closedError());
    if (!this.socket.writableNeedDrain) return Promise.resolve();
    this.drainWaiter ??= new Promise<void>((resolve, reject) => {
      const done = (): void => {
        this.socket.off('drain', done);
        this.socket.off('close', done);
        this.drainWaiter = undefined;
        if (this.isClosed) reject(closedError());
        else resolve();
      };
      this.socket.on('drain', done);
      this.socket.on('close', done);
    });
    return this.drainWaiter;
  }

  /** Stop reading (socket and already-received bytes) until every hold is released, e.g. a receive queue is full. */
  holdReading(): void {
    if (this.readHolds++ === 0 && !this.isClosed) {
      this.decoder.pause();
      this.socket.pause();
    }
  }

  releaseReading(): void {
    if (this.readHolds === 0) return;
    if (--this.readHolds > 0) return;
    // Resume outside the caller's stack: the caller is often a consumer in the middle of taking a message,
    // and resuming delivers frames synchronously.
    queueMicrotask(() => {
      if (this.readHolds > 0 || this.isClosed) return;
      this.decoder.resume();
      if (this.readHolds === 0 && !this.isClosed) this.socket.resume();
    });
  }

  /** Sends what is queued, then closes (graceful: the last responses reach the peer). */
  closeAfterFlush(): void {
    if (this.isClosed) return;
    this.socket.once('finish', () => this.close());
    this.socket.end();
  }

  /** Closes the connection now; pending writes are dropped. Idempotent. */
  close(err?: Error): void {
    if (this.isClosed) return;
    this.isClosed = true;
    // Frames still queued in the chunk being decoded must not reach a handler that already cleaned up.
    this.decoder.stop();
    this.socket.destroy();
    this.dispatch(() => this.handler.onClose(err));
  }

  /**
   * Writes are corked until the current microtask queue has run, so the responses of many calls completed
   * together leave in one writev instead of one syscall each.
   */
  private autoCork(): void {
    if (this.corked) return;
    this.corked = true;
    this.socket.cork();
    queueMicrotask(() => {
      this.corked = false;
      this.socket.uncork();
    });
  }

  /** Handler bugs must not escape into the socket's event emitter (that would crash the process). */
  private dispatch(fn: () => void): void {
    try {
      fn();
    } catch (err) {
      this.logger.error('ttrpc: internal error handling a frame', { err });
    }
  }
}
