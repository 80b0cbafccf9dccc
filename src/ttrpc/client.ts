// The ttrpc client: many calls multiplexed on one connection with odd, increasing stream ids. Unary calls use
// only Request/Response frames (compatible with ttrpc 1.1 peers such as containerd 1.6); stream() uses the
// 1.2 streaming frames.
import * as net from 'node:net';
import type { Duplex } from 'node:stream';
import { silentLogger, type Logger } from '../util/log.js';
import { Channel } from './channel.js';
import { Code } from './codes.js';
import { decodeResponse, encodeRequestFrame, type KeyValuePair, type ResponseEnvelope } from './envelope.js';
import { closedError, decodeStatus, TtrpcError } from './errors.js';
import { Flags, FrameType, MAX_DATA_LENGTH, type FrameHeader } from './frame.js';
import { Metadata, type MetadataInit } from './metadata.js';
import { ReceiveQueue, TtrpcStream, type StreamPort } from './stream.js';

export interface CallOptions {
  metadata?: MetadataInit;
  /** Deadline relative to now; sent to the server as timeout_nano and enforced locally. */
  timeoutMs?: number;
  /** Abandons the call with CANCELLED (ttrpc has no cancel frame: the server finishes on its own). */
  signal?: AbortSignal;
}

export interface StreamOptions extends CallOptions {
  /** Whether this side sends a stream of messages (default true). False: `request` is the only message. */
  streamingClient?: boolean;
  /** The request message when streamingClient is false. */
  request?: Uint8Array;
}

export interface TtrpcClientOptions {
  logger?: Logger;
  /** Called once when the connection is gone, with the cause when it failed. */
  onClose?: (err: Error | undefined) => void;
}

/** What the receive loop needs from an outstanding call. */
interface PendingCall {
  onResponse(resp: ResponseEnvelope): void;
  onData(flags: number, data: Buffer): void;
  fail(err: TtrpcError): void;
}

/** Client side of a stream: the stream itself plus the call's final response. */
export class ClientStream extends TtrpcStream {
  /**
   * Resolves with the Response payload (client-streaming methods), or an empty array when the server ended the
   * stream with Data remote-closed (server-streaming). Rejects with the call's error. Awaiting it is optional.
   */
  readonly response: Promise<Uint8Array>;

  constructor(
    id: number,
    port: StreamPort,
    queue: ReceiveQueue,
    canSend: boolean,
    signal: AbortSignal,
    response: Promise<Uint8Array>,
  ) {
    super(id, port, queue, canSend, signal);
    this.response = response;
  }
}

const EMPTY = new Uint8Array(0);
const NEVER_ABORTED = new AbortController().signal;

export class TtrpcClient {
  private readonly channel: Channel;
  private readonly pending = new Map<number, PendingCall>();
  private nextStreamId = 1;
  private readonly logger: Logger;
  private readonly closeListeners: Array<(err: Error | undefined) => void> = [];
  private closeError: TtrpcError | undefined;
  private readonly port: StreamPort;

  constructor(socket: Duplex, opts: TtrpcClientOptions = {}) {
    this.logger = opts.logger ?? silentLogger;
    if (opts.onClose) this.closeListeners.push(opts.onClose);
    this.channel = new Channel(
      socket,
      {
        onFrame: (header, data) => this.onFrame(header, data),
        onOversized: (header) => this.onOversized(header),
        onClose: (err) => this.handleClose(err),
      },
      this.logger,
    );
    this.port = {
      sendData: (id, flags, data) => this.channel.writeData(id, flags, data),
      drained: () => this.channel.drained(),
      holdReading: () => this.channel.holdReading(),
      releaseReading: () => this.channel.releaseReading(),
    };
  }

  /** Connects to a unix socket path. */
  static connect(path: string, opts: TtrpcClientOptions = {}): Promise<TtrpcClient> {
    return new Promise((resolve, reject) => {
      const socket = net.connect(path);
      socket.once('error', reject);
      socket.once('connect', () => {
        socket.off('error', reject);
        resolve(new TtrpcClient(socket, opts));
      });
    });
  }

  get closed(): boolean {
    return this.channel.closed;
  }

  /** Calls `listener` once the connection is gone (at once if it already is). Returns an unsubscribe. */
  onClose(listener: (err: Error | undefined) => void): () => void {
    if (this.channel.closed) {
      queueMicrotask(() => listener(this.closeError?.cause as Error | undefined));
      return () => undefined;
    }
    this.closeListeners.push(listener);
    return () => {
      const i = this.closeListeners.indexOf(listener);
      if (i >= 0) this.closeListeners.splice(i, 1);
    };
  }

  /** Closes the connection; pending calls reject with UNAVAILABLE `ttrpc: closed`. */
  close(): void {
    this.channel.close();
  }

  /** A unary call. Rejects with a TtrpcError carrying the server's code and message. */
  call(service: string, method: string, payload: Uint8Array, opts: CallOptions = {}): Promise<Uint8Array> {
    if (this.channel.closed) return Promise.reject(this.closeError ?? closedError());
    const { signal, timeoutMs } = opts;
    if (signal?.aborted) return Promise.reject(cancelledError(signal));
    return new Promise<Uint8Array>((resolve, reject) => {
      const id = this.allocateStreamId();
      let timer: NodeJS.Timeout | undefined;
      let onAbort: (() => void) | undefined;
      const cleanup = (): void => {
        this.pending.delete(id);
        if (timer) clearTimeout(timer);
        if (onAbort) signal!.removeEventListener('abort', onAbort);
      };
      const fail = (err: TtrpcError): void => {
        cleanup();
        reject(err);
      };
      this.pending.set(id, {
        onResponse: (resp) => {
          cleanup();
          const err = statusError(resp);
          if (err) reject(err);
          else resolve(resp.payload);
        },
        onData: () => fail(new TtrpcError(Code.INTERNAL, 'ttrpc: received data frame on a unary call')),
        fail,
      });
      if (timeoutMs !== undefined) timer = setTimeout(() => fail(deadlineError()), Math.max(0, timeoutMs));
      if (signal) {
        onAbort = () => fail(cancelledError(signal));
        signal.addEventListener('abort', onAbort, { once: true });
      }
      try {
        this.channel.write(
          encodeRequestFrame(id, 0, {
            service,
            method,
            payload,
            timeoutNano: timeoutMs !== undefined ? Math.max(1, timeoutMs * 1e6) : 0,
            metadata: toKeyValues(opts.metadata),
          }),
        );
      } catch (err) {
        fail(TtrpcError.from(err));
      }
    });
  }

  /**
   * Opens a stream. Bidirectional or client-streaming by default; pass `streamingClient: false` with a
   * `request` for a server-streaming method.
   */
  stream(service: string, method: string, opts: StreamOptions = {}): ClientStream {
    const streamingClient = opts.streamingClient ?? true;
    const id = this.allocateStreamId();
    const queue = new ReceiveQueue(this.port);
    const controller = new AbortController();
    let settle!: { resolve: (p: Uint8Array) => void; reject: (e: Error) => void };
    const response = new Promise<Uint8Array>((resolve, reject) => (settle = { resolve, reject }));
    // The response is optional to await: keep an unobserved rejection from becoming an unhandled one.
    response.catch(() => undefined);
    const stream = new ClientStream(id, this.port, queue, streamingClient, controller.signal, response);

    let timer: NodeJS.Timeout | undefined;
    const userSignal = opts.signal;
    const onAbort = (): void => fail(cancelledError(userSignal ?? NEVER_ABORTED));
    const cleanup = (): void => {
      this.pending.delete(id);
      if (timer) clearTimeout(timer);
      userSignal?.removeEventListener('abort', onAbort);
    };
    const fail = (err: TtrpcError): void => {
      cleanup();
      queue.fail(err);
      stream.markFinished(err);
      controller.abort(err);
      settle.reject(err);
    };
    const complete = (payload: Uint8Array): void => {
      cleanup();
      queue.end();
      stream.markFinished();
      settle.resolve(payload);
    };
    this.pending.set(id, {
      onResponse: (resp) => {
        const err = statusError(resp);
        if (err) fail(err);
        else complete(resp.payload);
      },
      onData: (flags, data) => {
        if ((flags & Flags.NO_DATA) === 0) queue.push(data);
        if ((flags & Flags.REMOTE_CLOSED) !== 0) complete(EMPTY);
      },
      fail,
    });

    if (this.channel.closed) {
      fail(this.closeError ?? closedError());
      return stream;
    }
    if (userSignal?.aborted) {
      fail(cancelledError(userSignal));
      return stream;
    }
    userSignal?.addEventListener('abort', onAbort, { once: true });
    if (opts.timeoutMs !== undefined) timer = setTimeout(() => fail(deadlineError()), Math.max(0, opts.timeoutMs));
    try {
      this.channel.write(
        encodeRequestFrame(id, streamingClient ? Flags.REMOTE_OPEN : Flags.REMOTE_CLOSED, {
          service,
          method,
          payload: opts.request ?? EMPTY,
          timeoutNano: opts.timeoutMs !== undefined ? Math.max(1, opts.timeoutMs * 1e6) : 0,
          metadata: toKeyValues(opts.metadata),
        }),
      );
    } catch (err) {
      fail(TtrpcError.from(err));
    }
    return stream;
  }

  private allocateStreamId(): number {
    const id = this.nextStreamId;
    if (id > 0xffffffff)
      throw new TtrpcError(Code.RESOURCE_EXHAUSTED, 'ttrpc: stream ids exhausted on this connection');
    this.nextStreamId += 2;
    return id;
  }

  private onFrame(header: FrameHeader, data: Buffer): void {
    const call = this.pending.get(header.streamId);
    if (!call) {
      // Late answer to a call that timed out or was cancelled.
      this.logger.debug('ttrpc: received message on inactive stream', { stream: header.streamId });
      return;
    }
    if (header.type === FrameType.RESPONSE) {
      let resp: ResponseEnvelope;
      try {
        resp = decodeResponse(data);
      } catch (err) {
        call.fail(new TtrpcError(Code.INTERNAL, `ttrpc: malformed response: ${(err as Error).message}`));
        return;
      }
      call.onResponse(resp);
    } else if (header.type === FrameType.DATA) {
      call.onData(header.flags, data);
    } else {
      call.fail(new TtrpcError(Code.INTERNAL, 'ttrpc: server sent a request frame'));
    }
  }

  private onOversized(header: FrameHeader): void {
    this.pending
      .get(header.streamId)
      ?.fail(
        new TtrpcError(
          Code.RESOURCE_EXHAUSTED,
          `message length ${header.length} exceed maximum message size of ${MAX_DATA_LENGTH}`,
        ),
      );
  }

  private handleClose(err: Error | undefined): void {
    this.closeError = closedError(err);
    const calls = [...this.pending.values()];
    this.pending.clear();
    for (const call of calls) call.fail(this.closeError);
    for (const listener of this.closeListeners.splice(0)) {
      try {
        listener(err);
      } catch (listenerErr) {
        this.logger.error('ttrpc: close listener threw', { err: listenerErr });
      }
    }
  }
}

function statusError(resp: ResponseEnvelope): TtrpcError | undefined {
  if (resp.status === undefined || resp.status.length === 0) return undefined;
  try {
    const status = decodeStatus(resp.status);
    return status.code === Code.OK ? undefined : TtrpcError.fromStatus(status);
  } catch {
    return new TtrpcError(Code.INTERNAL, 'ttrpc: malformed response status');
  }
}

function toKeyValues(md: MetadataInit | undefined): readonly KeyValuePair[] | undefined {
  if (md === undefined) return undefined;
  return (md instanceof Metadata ? md : new Metadata(md)).toKeyValues();
}

function deadlineError(): TtrpcError {
  return new TtrpcError(Code.DEADLINE_EXCEEDED, 'context deadline exceeded');
}

function cancelledError(signal: AbortSignal): TtrpcError {
  const reason: unknown = signal.reason;
  if (reason instanceof TtrpcError) return reason;
  return new TtrpcError(Code.CANCELLED, 'context canceled', [], { cause: reason });
}
