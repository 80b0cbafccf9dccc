// The streaming half of ttrpc (>= 1.2): one object per stream with an async-iterable receive side and a
// send side, the same shape on client and server. Receiving is bounded: while a stream's queue holds more
// than a few messages the connection stops reading from its socket (TCP/unix backpressure reaches the
// sender); sending waits for the socket to drain, so a slow peer never makes us buffer without bound.
import { Code } from './codes.js';
import { closedError, TtrpcError } from './errors.js';

/** How the stream talks to its connection (implemented by the client and server connections). */
export interface StreamPort {
  /** Writes one Data frame; false when the socket wants to drain first. */
  sendData(streamId: number, flags: number, data: Uint8Array): boolean;
  drained(): Promise<void>;
  holdReading(): void;
  releaseReading(): void;
}

/** Received messages queued before the connection pauses reading. */
export const RECEIVE_QUEUE_HIGH_WATER = 32;
const RECEIVE_QUEUE_LOW_WATER = 8;

interface Waiter {
  resolve: (value: Uint8Array | undefined) => void;
  reject: (err: Error) => void;
}

/** The receive side of a stream; filled by the connection, drained by the application. */
export class ReceiveQueue {
  private items: Uint8Array[] = [];
  private head = 0;
  private ended = false;
  private error: Error | undefined;
  private waiter: Waiter | undefined;
  private holding = false;

  constructor(private readonly port: Pick<StreamPort, 'holdReading' | 'releaseReading'>) {}

  get length(): number {
    return this.items.length - this.head;
  }

  get done(): boolean {
    return this.ended || this.error !== undefined;
  }

  push(data: Uint8Array): void {
    if (this.done) return;
    if (this.waiter) {
      const w = this.waiter;
      this.waiter = undefined;
      w.resolve(data);
      return;
    }
    this.items.push(data);
    if (!this.holding && this.length >= RECEIVE_QUEUE_HIGH_WATER) {
      this.holding = true;
      this.port.holdReading();
    }
  }

  /** The peer sent its last message. Queued messages are still delivered. */
  end(): void {
    if (this.done) return;
    this.ended = true;
    this.settleWaiter();
  }

  /** The stream failed: queued messages are dropped and the next recv() throws. */
  fail(err: Error): void {
    if (this.done) return;
    this.error = err;
    this.items = [];
    this.head = 0;
    this.release();
    this.settleWaiter();
  }

  /** Next message, or undefined once the peer closed its side. */
  recv(): Promise<Uint8Array | undefined> {
    if (this.length > 0) {
      const item = this.items[this.head]!;
      this.items[this.head++] = EMPTY;
      if (this.head === this.items.length) {
        this.items = [];
        this.head = 0;
      }
      if (this.holding && this.length <= RECEIVE_QUEUE_LOW_WATER) this.release();
      return Promise.resolve(item);
    }
    if (this.error) return Promise.reject(this.error);
    if (this.ended) return Promise.resolve(undefined);
    if (this.waiter)
      return Promise.reject(new TtrpcError(Code.FAILED_PRECONDITION, 'ttrpc: concurrent recv on stream'));
    return new Promise((resolve, reject) => (this.waiter = { resolve, reject }));
  }

  private release(): void {
    if (!this.holding) return;
    this.holding = false;
    this.port.releaseReading();
  }

  private settleWaiter(): void {
    const w = this.waiter;
    if (!w) return;
    this.waiter = undefined;
    if (this.error) w.reject(this.error);
    else w.resolve(undefined);
  }
}

const EMPTY = new Uint8Array(0);

/** Data frame flags (duplicated here to keep this module free of framing details beyond the two it needs). */
const FLAG_REMOTE_CLOSED = 0x1;
const FLAG_NO_DATA = 0x4;

/**
 * A ttrpc stream as the application sees it: `for await (const msg of stream)` to receive, `send()` and
 * `closeSend()` to transmit. Messages are raw bytes; the typed bindings in service.ts wrap them.
 */
export class TtrpcStream implements AsyncIterable<Uint8Array> {
  private sendClosed = false;
  private finished: Error | undefined;

  constructor(
    readonly id: number,
    private readonly port: StreamPort,
    private readonly queue: ReceiveQueue,
    /** Whether this side may send Data frames at all (false for the client of a server-streaming call). */
    private readonly canSend: boolean,
    /** Aborted when the call ends early (deadline, connection loss, cancellation). */
    readonly signal: AbortSignal,
  ) {}

  /** Next message from the peer, or undefined once it closed its side. Throws the stream's error. */
  recv(): Promise<Uint8Array | undefined> {
    return this.queue.recv();
  }

  async *[Symbol.asyncIterator](): AsyncIterator<Uint8Array> {
    for (;;) {
      const msg = await this.queue.recv();
      if (msg === undefined) return;
      yield msg;
    }
  }

  /** Sends one message; resolves once the socket accepted it without exceeding its buffer. */
  async send(data: Uint8Array): Promise<void> {
    this.assertCanSend();
    if (!this.port.sendData(this.id, 0, data)) await this.port.drained();
  }

  /** Tells the peer no more messages follow. Idempotent. */
  async closeSend(): Promise<void> {
    if (this.sendClosed || this.finished || !this.canSend) {
      this.sendClosed = true;
      return;
    }
    this.sendClosed = true;
    if (!this.port.sendData(this.id, FLAG_REMOTE_CLOSED | FLAG_NO_DATA, EMPTY)) await this.port.drained();
  }

  get sendIsClosed(): boolean {
    return this.sendClosed || this.finished !== undefined;
  }

  /** @internal The stream ended (response sent or received, or failed); later sends throw `reason`. */
  markFinished(reason: Error = closedError()): void {
    this.finished ??= reason;
    this.sendClosed = true;
  }

  private assertCanSend(): void {
    if (!this.canSend) throw new TtrpcError(Code.FAILED_PRECONDITION, 'ttrpc: this stream does not send messages');
    if (this.finished) throw this.finished;
    if (this.sendClosed) throw new TtrpcError(Code.FAILED_PRECONDITION, 'ttrpc: send after closeSend');
  }
}
