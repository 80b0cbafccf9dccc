// One 9P2000.L connection: framing, version negotiation, concurrent dispatch, flush ordering, bounds.
//
// Requests are dispatched as they arrive and replies go out as they complete (the Linux client pipelines).
// Invariants kept here, not in the handlers:
//  - a tag is answered at most once, and never after the Rflush that cancelled it (Tflush: the flushed
//    request's reply, or its suppression, is sent first, then every Rflush waiting on it, in arrival order);
//  - replies are never >= msize (the Linux client tears down the connection on such a reply);
//  - at most maxOutstanding requests run at once (the socket is not read beyond that; parked lock requests
//    do not count, so an unlock can always get through), and reading stops while too many reply bytes are
//    queued on the socket or too many request bytes wait to be handled;
//  - a connection handles requests for at most SLICE_MS at a time, then yields the event loop (setImmediate)
//    before the next one: a client that pipelines thousands of requests cannot keep other connections (or
//    the shim's own ttrpc traffic) waiting longer than one slice plus the worst single request;
//  - a frame with size < 7 or > msize closes the connection; a malformed body gets Rlerror and the
//    connection goes on.
// Hot path: frames are decoded in place (framer.ts, codec.ts decodeAt); a handler that completes synchronously
// (most do) needs no Inflight record, and may encode its reply straight into the reply arena (beginReply /
// endReply, reply.ts); replies of one batch leave in one write.

import type { Duplex } from 'node:stream';
import { DecodeError, decode, decodeAt, encodeAt, encodedSize, r32, w16, w32 } from './codec.js';
import { writePieces } from './ops/io.js';
import { Errno, P9Error, toLinuxErrno } from './errno.js';
import { FidTable, type Fid } from './fids.js';
import { FrameReader } from './framer.js';
import { HostFdTable, type HostFd } from './hostfd.js';
import { HEADER_SIZE, MsgType, NOTAG, type RMessage, type TMessage, type Tflush, type Tversion } from './messages.js';
import { MAX_MSIZE, MIN_MSIZE, type SessionLimits } from './options.js';
import { handlers, REPLIED, SUPPRESS, type OpResult } from './ops/index.js';
import { ReplyOut } from './reply.js';
import { SyncWriteGuard } from './syncwrite.js';
import { RequestTimer, type P9Observer } from './observer.js';
import { releaseFid } from './ops/clunk.js';
import { reopenVerified } from './ops/common.js';
import type { HostFs } from './hostfs.js';
import { O } from '../util/syscalls.js';
import { parentPath } from './pathsafe.js';
import type { ExportRoot } from './export.js';
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
}

let nextSessionId = 1;

/** Twrite header: size[4] type[1] tag[2] fid[4] offset[8] count[4]. */
const TWRITE_HEAD = 23;

/** Longest run of request handling per connection before it yields the event loop. */
export const SLICE_MS = 2;
/** Fids whose host resources are released per event-loop turn after a reset. */
const RETIRE_BATCH = 2048;

export class Session {
  readonly id = nextSessionId++;
  /** Negotiated msize; before Tversion frames are bounded by the server maximum. */
  msize = 0;
  readonly fids: FidTable;
  readonly fds: HostFdTable;
  pendingXattrs = 0;
  /** Bytes held by xattr fids (values + per-fid overhead), bounded by limits.maxXattrBytes. */
  xattrBytes = 0;
  parkedLocks = 0;
  /** Whether small writes may be synchronous (off for a while once they block). */
  readonly syncWrites = new SyncWriteGuard();
  private readonly inflight = new Map<number, Inflight>();
  private running = 0;
  /** Bumped by Tversion and close: answers for requests of an older generation are dropped. */
  private generation = 0;
  private readonly reader: FrameReader;
  private closed = false;
  private readingPaused = false;
  /** Instrumentation (metrics): sees each frame in and each reply out; see observer.ts. */
  private readonly timer: RequestTimer | undefined;
  /** Reply output (arena + queue, one write per batch). */
  readonly out: ReplyOut;
  /** Tag of the request whose synchronous handler is running (-1 otherwise): beginReply is allowed then. */
  private replyTag = -1;
  /** Start of the reply a synchronous handler is building in `out` (beginReply), or -1. */
  private replyAt = -1;
  private replyEnd = 0;
  private flushScheduled = false;

  constructor(
    private readonly stream: Duplex,
    readonly exports: readonly ExportRoot[],
    readonly limits: SessionLimits,
    readonly log: Logger,
    private readonly onClosed: (s: Session) => void,
    observer: P9Observer | undefined,
    /** The host filesystem layer of every export of the server. */
    readonly fs: HostFs,
  ) {
    if (!fs.syncWrites) this.syncWrites.disable();
    this.timer = observer ? new RequestTimer(observer, this.id, () => this.fids.size) : undefined;
    this.out = new ReplyOut(stream);
    this.fids = new FidTable(limits.maxFids);
    this.fds = new HostFdTable(
      limits.maxHostFds,
      fs,
      (rootFd, path, ident) =>
        reopenVerified(fs, rootFd, path, ident, O.PATH | O.NOFOLLOW, this.parentDirFd(rootFd, path)),
      (pathFd, flags) => fs.openThrough(pathFd, flags, false, false),
    );
    this.reader = new FrameReader(
      () => (this.msize > 0 ? this.msize : Math.min(MAX_MSIZE, limits.msize)),
      (buf, off, size) => {
        this.dispatching = true;
        try {
          this.onFrame(buf, off, size);
        } finally {
          this.dispatching = false;
        }
      },
      (size) => {
        this.log.warn('9p: bad frame size, closing connection', { size, msize: this.msize });
        this.close();
      },
      () =>
        this.closed ||
        this.running >= this.limits.maxOutstanding ||
        this.stream.writableLength > this.limits.maxQueuedReplyBytes ||
        this.sliceUsed(),
      {
        type: MsgType.Twrite,
        head: TWRITE_HEAD,
        minSize: 4096,
        onFrame: (pieces, size) => {
          this.dispatching = true;
          try {
            this.onScatteredWrite(pieces, size);
          } finally {
            this.dispatching = false;
          }
        },
      },
    );
    stream.on('data', (chunk: Buffer) => {
      this.newTurn();
      this.reader.push(chunk);
      this.updateFlow();
    });
    stream.on('drain', () => {
      this.newTurn();
      this.updateFlow();
    });
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
    this.timer?.closed();
    this.onClosed(this);
  }

  /**
   * Drops every fid, lock and pending request (Tversion and disconnect). Locks and the fid table go at once;
   * the fids' host fds are released RETIRE_BATCH at a time across event-loop turns, so dropping 65,536 fids does
   * not stall other connections (measured ~90 ms in one go).
   */
  private reset(): void {
    this.generation++;
    for (const req of this.inflight.values()) req.cancel?.();
    this.inflight.clear();
    this.running = 0;
    this.parkedLocks = 0;
    const retired = this.fids.clear();
    for (const locks of new Set(this.exports.map((e) => e.locks))) locks.releaseSession(this.id);
    this.pendingXattrs = 0;
    this.xattrBytes = 0;
    this.retire(retired);
  }

  private retire(fids: Fid[]): void {
    const batch = fids.splice(0, RETIRE_BATCH);
    for (const fid of batch) {
      fid.lockOwners = null; // released with the session above
      fid.xattr = null; // a pending xattr of a dropped connection is discarded; its bytes were reset
      try {
        releaseFid(this, fid, false);
      } catch (err) {
        this.log.debug('9p: release on reset failed', { err });
      }
    }
    if (fids.length > 0) setImmediate(() => this.retire(fids));
  }

  private sliceStart = 0;
  private yielding = false;
  /** True while a handler runs synchronously inside the frame loop (its completion is not a new turn). */
  private dispatching = false;

  /** Called where an event-loop callback starts working for this connection (data, drain, async completion). */
  private newTurn(): void {
    if (!this.yielding && !this.dispatching) this.sliceStart = performance.now();
  }

  /** True once this turn has used its slice; the rest of the buffered requests run after a setImmediate. */
  private sliceUsed(): boolean {
    if (this.yielding) return true;
    if (performance.now() - this.sliceStart < SLICE_MS) return false;
    this.yielding = true;
    setImmediate(() => {
      this.yielding = false;
      this.sliceStart = performance.now();
      this.reader.pump();
      this.updateFlow();
    });
    return true;
  }

  private updateFlow(): void {
    if (this.closed) return;
    // Request bytes waiting while the connection yields are bounded too: the socket is not read beyond two
    // frames' worth.
    const stall =
      this.running >= this.limits.maxOutstanding ||
      this.stream.writableLength > this.limits.maxQueuedReplyBytes ||
      this.reader.buffered > 2 * Math.max(this.msize, MIN_MSIZE);
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

  /**
   * Whether a request (not Tversion) with `tag` may be handled: answered EPROTO before a Tversion; a reused
   * outstanding tag makes every later reply ambiguous (the client is broken), so it closes the connection.
   */
  private admitTag(tag: number): boolean {
    if (this.msize === 0) {
      this.sendError(tag, Errno.EPROTO);
      return false;
    }
    if (this.inflight.has(tag)) {
      this.log.warn('9p: tag reused while outstanding, closing connection', { tag });
      this.close();
      return false;
    }
    return true;
  }

  private onFrame(buf: Buffer, off: number, size: number): void {
    this.timer?.arrived(buf, off, size);
    const type = buf[off + 4]!;
    const tag = buf[off + 5]! | (buf[off + 6]! << 8);
    if (type === MsgType.Tversion) {
      this.handleVersion(buf.subarray(off, off + size), tag);
      return;
    }
    if (!this.admitTag(tag)) return;
    let msg: TMessage;
    try {
      msg = decodeAt(buf, off, size) as unknown as TMessage;
    } catch (err) {
      this.sendError(tag, err instanceof DecodeError && /unknown/.test(err.message) ? Errno.EOPNOTSUPP : Errno.EINVAL);
      return;
    }
    if (type === MsgType.Tflush) {
      this.handleFlush(msg as Tflush, tag);
      return;
    }
    const handler = handlers[type];
    if (handler === undefined || type % 2 !== 0 || tag === NOTAG) {
      this.sendError(tag, Errno.EOPNOTSUPP);
      return;
    }
    // Only a lock request can be parked or cancelled: it gets its Inflight record up front. Any other request
    // gets one only if its handler goes asynchronous.
    let req: Inflight | undefined;
    if (type === MsgType.Tlock) req = this.track(tag, type);
    let result: OpResult | Promise<OpResult>;
    this.replyTag = tag;
    this.replyAt = -1;
    try {
      result = handler(this, msg, req);
    } catch (err) {
      result = errorReply(err, this);
    }
    this.finish(tag, type, req, result);
  }

  /**
   * A Twrite that arrived spanning socket chunks, as the pieces that cover it (framer.ts): its data goes to the
   * file with pwritev from the pieces, never copied together.
   */
  private onScatteredWrite(pieces: Buffer[], size: number): void {
    const head = pieces[0]!;
    this.timer?.arrived(head, 0, size);
    const tag = head[5]! | (head[6]! << 8);
    if (!this.admitTag(tag)) return;
    const count = r32(head, 19);
    if (count > size - TWRITE_HEAD || tag === NOTAG) {
      this.sendError(tag, tag === NOTAG ? Errno.EOPNOTSUPP : Errno.EINVAL);
      return;
    }
    // The data: the pieces without the header, cut to `count` bytes.
    const data: Buffer[] = [];
    let left = count;
    for (let i = 0; i < pieces.length && left > 0; i++) {
      const p = i === 0 ? head.subarray(TWRITE_HEAD) : pieces[i]!;
      const k = Math.min(p.length, left);
      if (k > 0) data.push(k === p.length ? p : p.subarray(0, k));
      left -= k;
    }
    let result: OpResult | Promise<OpResult>;
    this.replyTag = tag;
    this.replyAt = -1;
    try {
      result = writePieces(this, r32(head, 7), head.readBigUInt64LE(11), data, count);
    } catch (err) {
      result = errorReply(err, this);
    }
    this.finish(tag, MsgType.Twrite, undefined, result);
  }

  /** Answers a request whose handler returned `result` (now, or when its promise settles). */
  private finish(tag: number, type: number, req: Inflight | undefined, result: OpResult | Promise<OpResult>): void {
    this.replyTag = -1;
    if (result instanceof Promise) {
      // A reply begun in the arena and abandoned (a read that went to the threadpool) is simply not committed.
      this.replyAt = -1;
      const pending = req ?? this.track(tag, type);
      result.then(
        (r) => this.complete(pending, r),
        (err: unknown) => this.complete(pending, errorReply(err, this)),
      );
    } else if (req !== undefined) {
      this.complete(req, result);
    } else if (result === REPLIED) {
      this.commitReply(tag);
    } else if (result !== SUPPRESS) {
      this.send(tag, result);
    }
  }

  /** Registers an outstanding request (it counts towards maxOutstanding until answered). */
  private track(tag: number, type: number): Inflight {
    const req: Inflight = { tag, type, flushers: [], parked: false, generation: this.generation };
    this.inflight.set(tag, req);
    this.running++;
    return req;
  }

  /**
   * For a synchronous handler: starts its reply of `type` in the reply arena with room for `body` bytes
   * (body <= ARENA_REPLY_MAX - 7) and returns the offset of the body in `this.out.buf`. The handler writes the
   * body, then returns endReply(end). Nothing is sent if the handler throws instead.
   */
  beginReply(type: number, body: number): number {
    if (this.replyTag < 0) throw new Error('9p: beginReply outside a synchronous handler');
    const at = this.out.reserve(HEADER_SIZE + body);
    const b = this.out.buf;
    b[at + 4] = type;
    w16(b, at + 5, this.replyTag);
    this.replyAt = at;
    return at + HEADER_SIZE;
  }

  /** The reply begun with beginReply ends at `end` (exclusive). */
  endReply(end: number): typeof REPLIED {
    this.replyEnd = end;
    return REPLIED;
  }

  private commitReply(tag: number): void {
    const at = this.replyAt;
    this.replyAt = -1;
    const size = this.replyEnd - at;
    if (size >= this.msize) {
      // Never emit a reply the client would treat as fatal; the op's result cannot be expressed.
      this.sendError(tag, Errno.ERANGE);
      return;
    }
    if (this.closed || this.stream.destroyed) return;
    w32(this.out.buf, at, size);
    this.out.commit(at + size);
    this.timer?.replied(this.out.buf, at, size);
    this.scheduleFlush();
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
    this.newTurn();
    if (req.generation !== this.generation || this.inflight.get(req.tag) !== req) return;
    this.inflight.delete(req.tag);
    if (req.parked) this.parkedLocks--;
    else if (req.type !== MsgType.Tflush) this.running--;
    if (result === REPLIED) {
      // Only a synchronous handler can build in the arena (beginReply refuses otherwise).
      if (this.replyAt < 0) throw new Error('9p: REPLIED without a reply begun');
      this.commitReply(req.tag);
    } else if (result !== SUPPRESS) this.send(req.tag, result);
    for (const f of req.flushers) this.complete(f, RFLUSH);
    this.updateFlow();
  }

  private handleFlush(msg: Tflush, tag: number): void {
    const target = this.inflight.get(msg.oldtag);
    if (target === undefined || msg.oldtag === tag) {
      this.send(tag, RFLUSH);
      return;
    }
    const req: Inflight = { tag, type: MsgType.Tflush, flushers: [], parked: false, generation: this.generation };
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
      this.sendUnchecked(tag, { type: MsgType.Rversion, msize: Math.max(0, offered), version: 'unknown' });
      return;
    }
    this.msize = offered;
    this.sendUnchecked(tag, { type: MsgType.Rversion, msize: offered, version: VERSION_9P2000L });
  }

  private sendError(tag: number, ecode: number): void {
    this.send(tag, { type: MsgType.Rlerror, ecode });
  }

  private send(tag: number, reply: RMessage | Buffer): void {
    if (Buffer.isBuffer(reply)) {
      // A pre-encoded reply with its own buffer (Rread built by a threadpool read) gets its tag here.
      if (reply.length >= this.msize && this.msize > 0) {
        this.sendError(tag, Errno.ERANGE);
        return;
      }
      if (this.closed || this.stream.destroyed) return;
      w16(reply, 5, tag);
      this.timer?.replied(reply, 0, reply.length);
      this.out.push(reply);
      this.scheduleFlush();
      return;
    }
    const size = encodedSize(reply);
    if (this.msize > 0 && size >= this.msize) {
      // Never emit a reply the client would treat as fatal; the op's result cannot be expressed.
      this.sendError(tag, Errno.ERANGE);
      return;
    }
    this.sendUnchecked(tag, reply, size);
  }

  private sendUnchecked(tag: number, reply: RMessage, size = encodedSize(reply)): void {
    if (this.closed || this.stream.destroyed) return;
    const at = this.out.reserve(size);
    encodeAt(this.out.buf, at, reply, tag, size);
    this.out.commit(at + size);
    this.timer?.replied(this.out.buf, at, size);
    this.scheduleFlush();
  }

  /**
   * Replies completed in the same tick leave in one write instead of one syscall each (measured: socket writes
   * were the server's largest CPU cost under pipelined load).
   */
  private scheduleFlush(): void {
    if (this.flushScheduled) return;
    this.flushScheduled = true;
    process.nextTick(this.flush);
  }

  private readonly flush = (): void => {
    this.flushScheduled = false;
    if (this.closed) return;
    this.out.flush();
    // The write may have filled the socket past maxQueuedReplyBytes: reading stops until it drains.
    if (this.stream.writableLength > this.limits.maxQueuedReplyBytes) this.updateFlow();
  };

  /**
   * The fd slot of the directory holding `path` in the export whose root is `rootFd`, open and held by some fid of
   * this connection (the Linux client keeps a fid per cached dentry, so the parent of a name it just walked has
   * one), or undefined. A name is then reached with one *at call on it, as a walk step from that fid would, instead
   * of resolving the whole path beneath the root. Use its fd at once, or acquire() it across anything that may
   * evict fds.
   */
  parentDirSlot(rootFd: number, path: string): HostFd | undefined {
    if (path === '') return undefined;
    const fids = this.fids.withPath(parentPath(path));
    if (fids === undefined) return undefined;
    for (const f of fids) {
      const ino = f.inode;
      if (ino !== null && ino.rootFd === rootFd && ino.pathSlot.fd >= 0 && f.isDir) return ino.pathSlot;
    }
    return undefined;
  }

  /** parentDirSlot's fd, or -1: for a call made right away. */
  parentDirFd(rootFd: number, path: string): number {
    return this.parentDirSlot(rootFd, path)?.fd ?? -1;
  }

  /** Fid lookup for handlers (EBADF when unknown). */
  fid(id: number): Fid {
    return this.fids.get(id);
  }
}

const RFLUSH: RMessage = Object.freeze({ type: MsgType.Rflush });

export function errorReply(err: unknown, s: Session): RMessage {
  const ecode = toLinuxErrno(err);
  if (!(err instanceof P9Error) && ecode === Errno.EIO) s.log.warn('9p: unexpected error', { err });
  return { type: MsgType.Rlerror, ecode };
}
