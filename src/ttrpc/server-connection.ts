// One accepted connection on the server side: turns Request/Data frames into handler calls, enforces Go
// ttrpc's stream-id rules, deadlines and the per-connection in-flight bound, and writes Responses.
import type { Duplex } from 'node:stream';
import type { Logger } from '../util/log.js';
import { Channel } from './channel.js';
import { Code } from './codes.js';
import { ServerCallContext } from './context.js';
import { decodeRequest, encodeResponseFrame, EnvelopeError, type RequestEnvelope } from './envelope.js';
import { closedError, encodeStatus, TtrpcError } from './errors.js';
import { Flags, FrameType, MAX_DATA_LENGTH, type FrameHeader } from './frame.js';
import type { MethodEntry, ServiceRegistry } from './registry.js';
import { ReceiveQueue, TtrpcStream, type StreamPort } from './stream.js';

export interface ServerConnectionOptions {
  registry: ServiceRegistry;
  logger: Logger;
  maxInFlight: number;
  mapError: (err: unknown) => TtrpcError;
  onClosed: (conn: ServerConnection) => void;
}

/** Largest timeout setTimeout accepts; longer deadlines are simply not armed (they would never fire anyway). */
const MAX_TIMER_MS = 2 ** 31 - 1;
const EMPTY = new Uint8Array(0);

interface ServerCall {
  readonly ctx: ServerCallContext;
  answered: boolean;
  timer: NodeJS.Timeout | undefined;
  /** Streaming calls only. */
  queue: ReceiveQueue | undefined;
  stream: TtrpcStream | undefined;
}

export class ServerConnection {
  private readonly channel: Channel;
  private readonly calls = new Map<number, ServerCall>();
  private lastStreamId = 0;
  private inFlight = 0;
  private holdingForInFlight = false;
  private draining = false;
  private readonly logger: Logger;
  private readonly port: StreamPort;

  constructor(
    socket: Duplex,
    private readonly opts: ServerConnectionOptions,
  ) {
    this.logger = opts.logger;
    this.channel = new Channel(
      socket,
      {
        onFrame: (header, data) => this.onFrame(header, data),
        onOversized: (header) => this.onOversized(header),
        onClose: (err) => this.onClose(err),
      },
      this.logger,
    );
    this.port = {
      sendData: (id, flags, data) => this.sendStreamData(id, flags, data),
      drained: () => this.channel.drained(),
      holdReading: () => this.channel.holdReading(),
      releaseReading: () => this.channel.releaseReading(),
    };
  }

  get idle(): boolean {
    return this.inFlight === 0;
  }

  get closed(): boolean {
    return this.channel.closed;
  }

  /** Answer the calls in flight, refuse new ones, then close. */
  drain(): void {
    this.draining = true;
    if (this.inFlight === 0) this.channel.close();
  }

  close(): void {
    this.channel.close();
  }

  private onFrame(header: FrameHeader, data: Buffer): void {
    const id = header.streamId;
    if (header.type === FrameType.RESPONSE) {
      // Go ttrpc ignores unexpected frame types for forward compatibility; so do we.
      this.logger.debug('ttrpc: ignoring response frame sent to a server', { stream: id });
      return;
    }
    if (id % 2 !== 1) {
      this.sendStatus(id, Code.INVALID_ARGUMENT, 'StreamID must be odd for client initiated streams');
      return;
    }
    if (header.type === FrameType.DATA) this.onData(header, data);
    else this.onRequest(header, data);
  }

  private onRequest(header: FrameHeader, data: Buffer): void {
    const id = header.streamId;
    if (id <= this.lastStreamId) {
      this.sendStatus(id, Code.INVALID_ARGUMENT, 'StreamID cannot be re-used and must increment');
      return;
    }
    this.lastStreamId = id;
    let req: RequestEnvelope;
    try {
      req = decodeRequest(data);
    } catch (err) {
      const msg = err instanceof EnvelopeError ? err.message : String(err);
      this.sendStatus(id, Code.INVALID_ARGUMENT, `unmarshal request error: ${msg}`);
      return;
    }
    if (this.draining) {
      this.sendStatus(id, Code.UNAVAILABLE, 'ttrpc: server shutting down');
      return;
    }
    const methods = this.opts.registry.service(req.service);
    if (!methods) {
      this.sendStatus(id, Code.UNIMPLEMENTED, `service ${req.service}`);
      return;
    }
    const entry = methods.get(req.method);
    if (!entry) {
      this.sendStatus(id, Code.UNIMPLEMENTED, `method ${req.method}`);
      return;
    }
    this.startCall(id, header.flags, req, entry);
  }

  private startCall(id: number, flags: number, req: RequestEnvelope, entry: MethodEntry): void {
    const timeoutMs = req.timeoutNano / 1e6;
    const deadline = req.timeoutNano !== 0 ? Date.now() + timeoutMs : undefined;
    const call: ServerCall = {
      ctx: new ServerCallContext(req.service, req.method, id, req.metadata, deadline),
      answered: false,
      timer: undefined,
      queue: undefined,
      stream: undefined,
    };
    this.calls.set(id, call);
    this.inFlight++;
    if (this.inFlight >= this.opts.maxInFlight && !this.holdingForInFlight) {
      // Stop reading new requests until some answers went out: memory per connection stays bounded.
      this.holdingForInFlight = true;
      this.channel.holdReading();
    }
    if (req.timeoutNano < 0) {
      this.expire(call);
      return;
    }
    if (req.timeoutNano > 0 && timeoutMs <= MAX_TIMER_MS) {
      call.timer = setTimeout(() => this.expire(call), Math.max(1, Math.ceil(timeoutMs)));
    }

    let result: Promise<Uint8Array | void>;
    try {
      if (entry.kind === 'unary') {
        result = entry.handler(req.payload, call.ctx);
      } else {
        const queue = new ReceiveQueue(this.port);
        // Without remote-open the request payload is the only message (server-streaming call, or a 1.1 peer).
        if ((flags & Flags.REMOTE_OPEN) === 0) {
          if (req.hasPayload || !entry.streamingClient) queue.push(req.payload);
          queue.end();
        } else if (req.hasPayload) {
          queue.push(req.payload);
        }
        call.queue = queue;
        call.stream = new TtrpcStream(id, this.port, queue, entry.streamingServer, call.ctx.signal);
        result = entry.handler(call.stream, call.ctx);
      }
    } catch (err) {
      result = Promise.reject(err);
    }
    const streamingServer = entry.kind === 'stream' && entry.streamingServer;
    result.then(
      (payload) => this.finish(call, undefined, payload ?? EMPTY, streamingServer),
      (err: unknown) => this.finish(call, err, EMPTY, streamingServer),
    );
  }

  private onData(header: FrameHeader, data: Buffer): void {
    const call = this.calls.get(header.streamId);
    if (!call) {
      this.sendStatus(header.streamId, Code.INVALID_ARGUMENT, 'StreamID is no longer active');
      return;
    }
    if (!call.queue) {
      this.logger.debug('ttrpc: ignoring data frame on a unary call', { stream: header.streamId });
      return;
    }
    if ((header.flags & Flags.NO_DATA) === 0) call.queue.push(data);
    if ((header.flags & Flags.REMOTE_CLOSED) !== 0) call.queue.end();
  }

  private onOversized(header: FrameHeader): void {
    const err = new TtrpcError(
      Code.RESOURCE_EXHAUSTED,
      `message length ${header.length} exceed maximum message size of ${MAX_DATA_LENGTH}`,
    );
    const call = this.calls.get(header.streamId);
    if (call) {
      // The stream lost a message: it cannot continue. Fail it and answer with the error.
      call.queue?.fail(err);
      this.finish(call, err, EMPTY, false);
      call.ctx.abort(err);
      return;
    }
    if (header.type === FrameType.REQUEST && header.streamId > this.lastStreamId) this.lastStreamId = header.streamId;
    this.sendStatus(header.streamId, err.code, err.message);
  }

  private expire(call: ServerCall): void {
    if (call.answered) return;
    const err = new TtrpcError(Code.DEADLINE_EXCEEDED, 'context deadline exceeded');
    call.queue?.fail(err);
    this.finish(call, err, EMPTY, false);
    call.ctx.abort(err);
  }

  /** Writes a stream's Data frame; remote-closed from the server ends the call (no Response follows). */
  private sendStreamData(id: number, flags: number, data: Uint8Array): boolean {
    const call = this.calls.get(id);
    if (!call || call.answered) throw closedError();
    const ok = this.channel.writeData(id, flags, data);
    if ((flags & Flags.REMOTE_CLOSED) !== 0) this.settle(call);
    return ok;
  }

  private finish(call: ServerCall, err: unknown, payload: Uint8Array, streamingServer: boolean): void {
    if (call.answered) return;
    const id = call.ctx.streamId;
    this.settle(call);
    if (this.channel.closed) return;
    try {
      if (err !== undefined) {
        this.writeError(id, this.toTtrpcError(err));
      } else if (!(payload instanceof Uint8Array)) {
        this.writeError(id, new TtrpcError(Code.INTERNAL, 'ttrpc: handler returned a non-binary payload'));
      } else if (streamingServer) {
        const flags = Flags.REMOTE_CLOSED | (payload.length === 0 ? Flags.NO_DATA : 0);
        this.channel.writeData(id, flags, payload);
      } else {
        this.channel.write(encodeResponseFrame(id, undefined, payload));
      }
    } catch (writeErr) {
      // Oversized response: tell the caller instead of leaving it waiting. Closed: nothing to tell.
      if (writeErr instanceof TtrpcError && writeErr.code === Code.RESOURCE_EXHAUSTED) {
        this.writeError(id, writeErr);
      } else if (!this.channel.closed) {
        this.logger.error('ttrpc: failed to write response', { stream: id, err: writeErr });
      }
    }
  }

  /** Marks a call done and updates the connection's accounting. */
  private settle(call: ServerCall): void {
    if (call.answered) return;
    call.answered = true;
    if (call.timer) clearTimeout(call.timer);
    call.stream?.markFinished();
    this.calls.delete(call.ctx.streamId);
    this.inFlight--;
    if (this.holdingForInFlight && this.inFlight < this.opts.maxInFlight) {
      this.holdingForInFlight = false;
      this.channel.releaseReading();
    }
    if (this.draining && this.inFlight === 0) {
      // After the final response was queued (this call's is written right after settle returns).
      queueMicrotask(() => this.channel.closeAfterFlush());
    }
  }

  private toTtrpcError(err: unknown): TtrpcError {
    if (err instanceof TtrpcError) return err;
    try {
      return this.opts.mapError(err);
    } catch (mapperErr) {
      this.logger.error('ttrpc: errorMapper threw', { err: mapperErr });
      return TtrpcError.from(err);
    }
  }

  private writeError(id: number, err: TtrpcError): void {
    try {
      this.channel.write(encodeResponseFrame(id, encodeStatus(err.toStatus()), EMPTY));
    } catch (writeErr) {
      if (!this.channel.closed)
        this.logger.error('ttrpc: failed to write error response', { stream: id, err: writeErr });
    }
  }

  private sendStatus(id: number, code: Code, message: string): void {
    this.writeError(id, new TtrpcError(code, message));
  }

  private onClose(err: Error | undefined): void {
    if (err) this.logger.debug('ttrpc: connection closed', { err });
    const reason = closedError(err);
    for (const call of this.calls.values()) {
      if (call.timer) clearTimeout(call.timer);
      call.answered = true;
      call.queue?.fail(reason);
      call.stream?.markFinished(reason);
      call.ctx.abort(reason);
    }
    this.calls.clear();
    this.inFlight = 0;
    this.opts.onClosed(this);
  }
}
