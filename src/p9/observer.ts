// The 9P server's one instrumentation point: a session reports each frame it received and each reply it sent
// (every reply leaves through Session.sendRaw), and RequestTimer pairs them by tag into one event per answered
// request. The server knows nothing of what the observer does with it (the shim turns it into metrics).

/** One answered request. */
export interface P9RequestEvent {
  /** Session (connection) id, unique in this process. */
  session: number;
  /** The T-message type (MsgType, e.g. 110 = Twalk). */
  type: number;
  /** Request frame size, reply frame size (bytes on the wire). */
  bytesIn: number;
  bytesOut: number;
  /** From the frame's arrival to its reply being queued on the socket. */
  seconds: number;
  /** The reply was Rlerror. */
  error: boolean;
  /** Fids the connection holds after this request. */
  fids: number;
}

/** What P9ServerOptions.observer implements. Called synchronously on the server's event loop: keep it cheap. */
export interface P9Observer {
  request(e: P9RequestEvent): void;
  /** The connection closed (its fids are gone). */
  sessionClosed?(session: number): void;
  /** The server closed: nothing more will be reported. */
  serverClosed?(): void;
}

const RLERROR = 7;

/** Per session: arrival time and size by tag until the reply goes out. */
export class RequestTimer {
  private readonly arrivals = new Map<number, { type: number; bytes: number; t0: number }>();

  constructor(
    private readonly observer: P9Observer,
    private readonly session: number,
    private readonly fidCount: () => number,
  ) {}

  /** A complete frame arrived (size[4] type[1] tag[2] ...) at [off, off + size) of `buf`. */
  arrived(buf: Buffer, off = 0, size = buf.length): void {
    // A reused outstanding tag closes the connection; a request answered by nothing (flushed) is overwritten
    // when its tag comes back, and everything goes at close: the map is bounded by the 65536 tags.
    const tag = buf[off + 5]! | (buf[off + 6]! << 8);
    this.arrivals.set(tag, { type: buf[off + 4]!, bytes: size, t0: performance.now() });
  }

  /** A reply frame (tag already in place) at [off, off + size) of `buf` is being written. */
  replied(buf: Buffer, off = 0, size = buf.length): void {
    const tag = buf[off + 5]! | (buf[off + 6]! << 8);
    const a = this.arrivals.get(tag);
    if (a === undefined) return;
    this.arrivals.delete(tag);
    this.observer.request({
      session: this.session,
      type: a.type,
      bytesIn: a.bytes,
      bytesOut: size,
      seconds: (performance.now() - a.t0) / 1000,
      error: buf[off + 4] === RLERROR,
      fids: this.fidCount(),
    });
  }

  closed(): void {
    this.arrivals.clear();
    this.observer.sessionClosed?.(this.session);
  }
}
