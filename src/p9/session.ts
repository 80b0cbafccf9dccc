// One 9P2000.L connection: framing, version negotiation, concurrent dispatch, flush ordering, bounds.
//
// Requests are dispatched as they arrive and replies go out as they complete (the Linux client pipelines).
// Invariants kept here, not in the handlers:
//  - a tag is answered at most once, and never after the Rflush that cancelled it (Tflush: the flushed
//    request's reply, or its suppression, is sent first, then every Rflush waiting on it, in arrival order);
//  - replies are never >= msize (the Linux client tears down the connection on such a reply);
//  - at most maxOutstanding requests run at once (the socket is not read beyond that; parked lock requests
//    do not count, so an unlock can always get through), and reading stops while too many reply bytes are
//    queued on the socket;
//  - a frame with size < 7 or > msize closes the connection; a malformed body gets Rlerror and the
//    connection goes on.

import type { Duplex } from 'node:stream';
import { DecodeError, decode, encode } from './codec.js';
import { Errno, P9Error, toLinuxErrno } from './errno.js';
import { FidTable, type Fid } from './fids.js';
import { FrameReader } from './framer.js';
import { HostFdCache } from './hostfd.js';
import { MsgType, NOTAG, type RMessage, type TMessage, type Tflush, type Tversion } from './messages.js';
import { MAX_MSIZE, MIN_MSIZE, type SessionLimits } from './options.js';
import { handlers, SUPPRESS, type OpResult } from './ops/index.js';
import { releaseFid } from './ops/clunk.js';
import type { ExportRoot } from './export.js';
import type { OpStats } from './stats.js';
import type { Logger } from '../util/log.js';

export const VERSION_9P2000L = '9P2000.L';

/** A request between arrival and reply. */
export interface Inflight {
  tag: number;
  type: number;
  /** Tflush requests waiting for this one to be answered (answered right after it, in order). */
  flushers: Inflight[];
  /** Set by handlers whose request can wait indefinitely (parked locks): aborts it for Tflush/reset. */
  cancel?: () => void;
  /** Parked requests do not count towards maxOutstanding. */
  parked: boolean;
  generation: number;
  /** performance.now() at arrival (op statistics). */
  t0: number;
}

let nextSessionId = 1;

export class Session {
  readonly id = nextSessionId++;
  /** Negotiated msize; before Tversion frames are bounded by the server maximum. */
  msize = 0;
  readonly fids: FidTable;
  readonly fds: HostFdCache;
  pendingXattrs = 0;
  parkedLocks = 0;
  /** performance.now() until which small writes go through the threadpool (a synchronous one was slow). */
  syncWritesOffUntil = 0;
  private readonly inflight = new Map<number, Inflight>();
  private running = 0;
  /** Bumped by Tversion and close: answers for requests of an older generation are dropped. */
  private generation = 0;
  private readonly reader: FrameReader;
  private closed = false;
  private readingPaused = false;

  constructor(
    private readonly stream: Duplex,
    readonly exports: readonly ExportRoot[],
    readonly limits: SessionLimits,
    readonly log: Logger,
    private readonly onClosed: (s: Session) => void,
    private readonly stats?: OpStats,
  ) {
    this.fids = new FidTable(limits.maxFids);
    this.fds = new HostFdCache(limits.maxHostFds);
    this.reader = new FrameReader(
      () => (this.msize > 0 ? this.msize : Math.min(MAX_MSIZE, limits.msize)),
      (frame) => this.onFrame(frame),
      (size) => {
        this.log.warn('9p: bad frame size, closing connection', { size, msize: this.msize });
        this.close();
      },
      () => this.running >= this.limits.maxOutstanding || this.closed,
    );
    stream.on('data', (chunk: Buffer) => {
      this.reader.push(chunk);
      this.updateFlow();
    });
    stream.on('drain', () => this.updateFlow());
    stream.on('end', () => this.close());
    stream.on('close', () => this.close());
    stream.on('error', (err) => {
      this.log.debug('9p: connection error', { err });
      this.close();
    });
  }

  get outstanding(): number {
    return this.inflight.size;
  }

  /** Largest payload an Rread/Rreaddir may carry so the reply stays below msize. */
  get maxPayload(): number {
    return this.msize - 24;
  }

  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.reset();
    if (!this.stream.destroyed) this.stream.destroy();
    this.onClosed(this);
  }

  /** Drops every fid, lock and pending request (Tversion and disconnect). */
  private reset(): void {
    this.generation++;
    for (const req of this.inflight.values()) req.cancel?.();
    this.inflight.clear();
    this.running = 0;
    this.parkedLocks = 0;
    for (const fid of [...this.fids.all()]) {
      this.fids.take(fid.id);
      try {
        releaseFid(this, fid, false);
      } catch (err) {
        this.log.debug('9p: release on reset failed', { err });
      }
    }
    for (const locks of new Set(this.exports.map((e) => e.locks))) locks.releaseSession(this.id);
    this.pendingXattrs = 0;
  }

  private updateFlow(): void {
    if (this.closed) return;
    const stall =
      this.running >= this.limits.maxOutstanding || this.stream.writableLength > this.limits.maxQueuedReplyBytes;
    if (stall && !this.readingPaused) {
      this.readingPaused = true;
      this.stream.pause();
    } else if (!stall && this.readingPaused) {
      this.readingPaused = false;
      this.stream.resume();
      this.reader.pump();
    } else if (!stall) {
      this.reader.pump();
    }
  }

  private onFrame(frame: Buffer): void {
    const type = frame[4]!;
    const tag = frame.readUInt16LE(5);
    if (type === MsgType.Tversion) {
      this.handleVersion(frame, tag);
      return;
    }
    if (this.msize === 0) {
      this.sendError(tag, Errno.EPROTO);
      return;
    }
    if (this.inflight.has(tag)) {
      // A reused outstanding tag makes every later reply ambiguous: the client is broken.
      this.log.warn('9p: tag reused while outstanding, closing connection', { tag });
      this.close();
      return;
    }
    let msg: TMessage;
    try {
      msg = decode(frame) as unknown as TMessage;
    } catch (err) {
      this.sendError(tag, err instanceof DecodeError && /unknown/.test(err.message) ? Errno.EOPNOTSUPP : Errno.EINVAL);
      return;
    }
    if (msg.type === MsgType.Tflush) {
      this.handleFlush(msg, tag);
      return;
    }
    const handler = handlers[msg.type];
    if (handler === undefined || msg.type % 2 !== 0 || tag === NOTAG) {
      this.sendError(tag, Errno.EOPNOTSUPP);
      return;
    }
    const req: Inflight = {
      tag,
      type: msg.type,
      flushers: [],
      parked: false,
      generation: this.generation,
      t0: performance.now(),
    };
    this.inflight.set(tag, req);
    this.running++;
    let result: OpResult | Promise<OpResult>;
    try {
      result = handler(this, msg, req);
    } catch (err) {
      result = errorReply(err, this);
    }
    if (result instanceof Promise) {
      result.then(
        (r) => this.complete(req, r),
        (err: unknown) => this.complete(req, errorReply(err, this)),
      );
    } else {
      this.complete(req, result);
    }
  }

  /** A handler parks its request (blocking lock): it stops counting towards maxOutstanding. */
  park(req: Inflight): void {
    if (req.parked) return;
    req.parked = true;
    this.parkedLocks++;
    this.running--;
    this.updateFlow();
  }

  private complete(req: Inflight, result: OpResult): void {
    if (req.generation !== this.generation || this.inflight.get(req.tag) !== req) return;
    this.inflight.delete(req.tag);
    this.stats?.record(req.type, performance.now() - req.t0);
    if (req.parked) this.parkedLocks--;
    else if (req.type !== MsgType.Tflush) this.running--;
    if (result !== SUPPRESS) this.send(req.tag, result);
    for (const f of req.flushers) this.complete(f, { type: MsgType.Rflush });
    this.updateFlow();
  }

  private handleFlush(msg: Tflush, tag: number): void {
    const target = this.inflight.get(msg.oldtag);
    if (target === undefined || msg.oldtag === tag) {
      this.send(tag, { type: MsgType.Rflush });
      return;
    }
    const req: Inflight = {
      tag,
      type: MsgType.Tflush,
      flushers: [],
      parked: false,
      generation: this.generation,
      t0: performance.now(),
    };
    this.inflight.set(tag, req);
    target.flushers.push(req);
    // A request that can wait forever is aborted now; anything else finishes and answers first.
    target.cancel?.();
  }

  /** Called by a cancelled handler instead of resolving: the request ends without a reply. */
  suppress(req: Inflight): void {
    this.complete(req, SUPPRESS);
  }

  private handleVersion(frame: Buffer, tag: number): void {
    let msg: Tversion;
    try {
      msg = decode(frame) as unknown as Tversion;
    } catch {
      this.sendError(tag, Errno.EINVAL);
      return;
    }
    this.reset();
    const offered = Math.min(msg.msize, this.limits.msize, MAX_MSIZE);
    const known = msg.version === VERSION_9P2000L || msg.version.startsWith(VERSION_9P2000L + '.');
    if (!known || offered < MIN_MSIZE) {
      this.msize = 0;
      this.sendRaw(encode({ type: MsgType.Rversion, msize: Math.max(0, offered), version: 'unknown' }, tag));
      return;
    }
    this.msize = offered;
    this.sendRaw(encode({ type: MsgType.Rversion, msize: offered, version: VERSION_9P2000L }, tag));
  }

  private sendError(tag: number, ecode: number): void {
    this.send(tag, { type: MsgType.Rlerror, ecode });
  }

  private send(tag: number, reply: RMessage | Buffer): void {
    let buf: Buffer;
    if (Buffer.isBuffer(reply)) {
      // Pre-encoded replies (Rread built in place) get their tag here.
      buf = reply;
      buf.writeUInt16LE(tag, 5);
    } else buf = encode(reply, tag);
    if (this.msize > 0 && buf.length >= this.msize) {
      // Never emit a reply the client would treat as fatal; the op's result cannot be expressed.
      buf = encode({ type: MsgType.Rlerror, ecode: Errno.ERANGE }, tag);
    }
    this.sendRaw(buf);
  }

  private sendRaw(buf: Buffer): void {
    if (this.closed || this.stream.destroyed) return;
    // Replies completed in the same tick leave in one writev instead of one syscall each (measured: socket
    // writes were the server's largest CPU cost under pipelined load).
    if (!this.corked) {
      this.corked = true;
      this.stream.cork();
      process.nextTick(this.uncork);
    }
    this.stream.write(buf);
  }

  private corked = false;
  private readonly uncork = (): void => {
    this.corked = false;
    this.stream.uncork();
  };

  /** Fid lookup for handlers (EBADF when unknown). */
  fid(id: number): Fid {
    return this.fids.get(id);
  }
}

export function errorReply(err: unknown, s: Session): RMessage {
  const ecode = toLinuxErrno(err);
  if (!(err instanceof P9Error) && ecode === Errno.EIO) s.log.warn('9p: unexpected error', { err });
  return { type: MsgType.Rlerror, ecode };
}
