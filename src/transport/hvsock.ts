// hvsock: Hyper-V sockets (AF_HYPERV) on the Windows host, the peer of AF_VSOCK over hv_sock in a Linux guest.
// An address is (VM id, service id), both GUIDs. A Linux guest's vsock port P is the service
// <P as 8 hex digits>-facb-11e6-bd58-64006a7986d3 (the "vsock service template"), so the guest agent's existing
// AF_VSOCK code (dial CID 2, port P) reaches a host listener bound to (the UVM's VM id, service(P)).
//
// Direction: the host listens, the guest dials (the UVM document's service table lets only SYSTEM and
// Administrators bind these services on the host). Hyper-V guarantees which VM a connection comes from, but
// anything inside that VM (a container too) can dial the host: every connection runs the same mutual handshake
// as vsock (handshake.ts, through the shared Authenticator), in the guest-dials-host direction, before a byte of
// ttrpc or 9P. The one exception is listenUnauthenticated, for the port the secret itself is handed out on.
import { Authenticator, type ListenOptions } from './authenticator.js';
import { Direction, dialerHandshake, type DialerAuth, type Purpose } from './handshake.js';
import { AUTH_TIMEOUT_MS, streamIo, type Conn, type Listener } from './transport.js';
import {
  AF_HYPERV,
  HV_PROTOCOL_RAW,
  INVALID_SOCKET,
  SOCK_STREAM,
  SOCKET_ERROR,
  SocketStream,
  WSA,
  WinsockError,
  loadWinsock,
  pollerFor,
  type Socket,
  type Winsock,
} from './winsock.js';

const GUID_RE = /^[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}$/;

/** Well-known VM ids (hvsocket.h HV_GUID_*). */
export const HV_GUID_ZERO = '00000000-0000-0000-0000-000000000000';
export const HV_GUID_WILDCARD = HV_GUID_ZERO;
export const HV_GUID_BROADCAST = 'ffffffff-ffff-ffff-ffff-ffffffffffff';
export const HV_GUID_CHILDREN = '90db8b89-0d35-4f79-8ce9-49ea0ac8b7cd';
export const HV_GUID_LOOPBACK = 'e0e16197-dd56-4a10-9195-5ee7a155a838';
export const HV_GUID_PARENT = 'a42e7cda-d03f-480c-9cc2-a4de20abb878';
/** The Linux vsock service template: Data1 is the vsock port. */
export const VSOCK_SERVICE_TEMPLATE = '00000000-facb-11e6-bd58-64006a7986d3';
/** sizeof(SOCKADDR_HV): ADDRESS_FAMILY Family, USHORT Reserved, GUID VmId, GUID ServiceId. */
export const SOCKADDR_HV_SIZE = 36;

/** Lower-case canonical form; throws on anything that is not a GUID (braces are accepted and dropped). */
export function normalizeGuid(g: string): string {
  const s = g
    .trim()
    .replace(/^\{(.*)\}$/, '$1')
    .toLowerCase();
  if (!GUID_RE.test(s)) throw new Error(`not a GUID: ${JSON.stringify(g)}`);
  return s;
}

/** The 16 bytes of a GUID struct: Data1 (u32), Data2, Data3 (u16) little-endian, Data4 as written. */
export function guidBytes(g: string): Buffer {
  const s = normalizeGuid(g);
  const b = Buffer.alloc(16);
  b.writeUInt32LE(parseInt(s.slice(0, 8), 16), 0);
  b.writeUInt16LE(parseInt(s.slice(9, 13), 16), 4);
  b.writeUInt16LE(parseInt(s.slice(14, 18), 16), 6);
  Buffer.from(s.slice(19, 23) + s.slice(24), 'hex').copy(b, 8);
  return b;
}

export function guidFromBytes(b: Buffer): string {
  if (b.length < 16) throw new Error('a GUID is 16 bytes');
  const h = (n: number, w: number): string => n.toString(16).padStart(w, '0');
  const d4 = b.subarray(8, 16).toString('hex');
  return `${h(b.readUInt32LE(0), 8)}-${h(b.readUInt16LE(4), 4)}-${h(b.readUInt16LE(6), 4)}-${d4.slice(0, 4)}-${d4.slice(4)}`;
}

/** The hvsock service id of Linux vsock port `port`. */
export function vsockServiceId(port: number): string {
  if (!Number.isInteger(port) || port < 0 || port > 0xffffffff) throw new RangeError(`invalid vsock port ${port}`);
  return port.toString(16).padStart(8, '0') + VSOCK_SERVICE_TEMPLATE.slice(8);
}

/** The vsock port of a service id made from the template, else undefined. */
export function vsockPortOf(serviceId: string): number | undefined {
  const s = normalizeGuid(serviceId);
  return s.slice(8) === VSOCK_SERVICE_TEMPLATE.slice(8) ? parseInt(s.slice(0, 8), 16) : undefined;
}

export function sockaddrHv(vmId: string, serviceId: string): Buffer {
  const b = Buffer.alloc(SOCKADDR_HV_SIZE);
  b.writeUInt16LE(AF_HYPERV, 0);
  guidBytes(vmId).copy(b, 4);
  guidBytes(serviceId).copy(b, 20);
  return b;
}

export interface HvsockAddress {
  vmId: string;
  serviceId: string;
}

export interface HvsockOptions {
  /** ws2_32.dll, or a fake with its exports (tests). */
  winsock?: Winsock;
}

/** An hvsock listener's options: the handshake's (secret, purposes admitted, deadlines) and the Winsock to use. */
export type HvsockListenOptions = ListenOptions & HvsockOptions;

function newHvSocket(ws: Winsock): Socket {
  const s = ws.socket(AF_HYPERV, SOCK_STREAM, HV_PROTOCOL_RAW);
  if (s === INVALID_SOCKET) throw new WinsockError('socket(AF_HYPERV)', ws.lastError());
  return s;
}

function streamConn(ws: Winsock, s: Socket): Conn {
  const stream = new SocketStream(ws, s);
  stream.on('error', () => undefined);
  return { stream, childHandle: Number(s), close: () => stream.destroy() };
}

/** A bound, listening, non-blocking AF_HYPERV socket and its accept loop: every accepted socket goes to `onAccept`. */
class AcceptLoop {
  private closed = false;

  private constructor(
    private readonly ws: Winsock,
    private readonly sock: Socket,
    private readonly onAccept: (conn: Conn) => void,
  ) {}

  static open(ws: Winsock, address: HvsockAddress, onAccept: (conn: Conn) => void): AcceptLoop {
    const s = newHvSocket(ws);
    const fail = (call: string): never => {
      const err = new WinsockError(`${call} hvsock ${address.vmId}:${address.serviceId}`, ws.lastError());
      ws.closesocket(s);
      throw err;
    };
    if (ws.bind(s, sockaddrHv(address.vmId, address.serviceId)) !== 0) fail('bind');
    if (ws.listen(s, 16) !== 0) fail('listen');
    if (ws.setNonBlocking(s) !== 0) fail('ioctlsocket(FIONBIO)');
    const loop = new AcceptLoop(ws, s, onAccept);
    loop.run();
    return loop;
  }

  private run(): void {
    while (!this.closed) {
      const c = this.ws.accept(this.sock);
      if (c === INVALID_SOCKET) {
        const e = this.ws.lastError();
        if (e === WSA.WSAEWOULDBLOCK) return pollerFor(this.ws).watch(this.sock, 'in', () => this.run());
        // WSAECONNRESET (the dialer gave up), WSAEMFILE...: try again a little later.
        setTimeout(() => this.run(), 50);
        return;
      }
      let conn: Conn;
      try {
        conn = streamConn(this.ws, c);
      } catch {
        continue;
      }
      this.onAccept(conn);
    }
  }

  /** Stops listening: connections queued but not yet accepted are reset by closesocket. */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    pollerFor(this.ws).unwatch(this.sock);
    this.ws.closesocket(this.sock);
  }
}

function canonical(address: HvsockAddress): HvsockAddress {
  return { vmId: normalizeGuid(address.vmId), serviceId: normalizeGuid(address.serviceId) };
}

/**
 * Listens on (VM id, service id) and hands out only connections whose dialer completed the handshake for a
 * purpose `admit` serves (default: the control channel only), in the guest-dials-host direction unless told
 * otherwise: the same Authenticator as vsock and tcp+token.
 */
export class HvsockListener implements Listener {
  readonly address: HvsockAddress;
  private readonly auth: Authenticator;
  private readonly loop: AcceptLoop;

  private constructor(address: HvsockAddress, opts: HvsockListenOptions) {
    this.address = canonical(address);
    this.auth = new Authenticator(opts, Direction.guestToHost);
    this.loop = AcceptLoop.open(opts.winsock ?? loadWinsock(), this.address, (conn) =>
      this.auth.accept(conn, streamIo(conn.stream)),
    );
  }

  static listen(address: HvsockAddress, opts: HvsockListenOptions): HvsockListener {
    return new HvsockListener(address, opts);
  }

  /**
   * A listener WITHOUT the handshake that hands out exactly one connection and stops listening before doing so.
   * Only for the port the per-UVM secret itself is handed out on (Hyper-V has no fw_cfg): the handshake needs
   * that secret, so this one exchange cannot run it. Why that is safe:
   *  - hvsock, not a network: the listener is bound to one UVM's VM id, so only that VM can reach it, and the
   *    UVM document's service table lets no unprivileged host process bind or dial the service;
   *  - it is opened before the VM starts and the guest agent dials it first thing, when nothing but the guest's
   *    init runs in the VM (containers exist only once the agent has connected with the secret);
   *  - one connection, then it is closed: a container started later finds nobody listening;
   *  - a guest process that raced the agent to it would hold its own UVM's secret, which opens only that UVM's
   *    own control and 9P listeners, and the agent, finding no secret, never connects: the boot fails.
   * See docs/windows.md and docs/security.md.
   */
  static listenUnauthenticated(address: HvsockAddress, opts: HvsockOptions = {}): OneShotHvsockListener {
    return new OneShotHvsockListener(canonical(address), opts.winsock ?? loadWinsock());
  }

  get url(): string {
    return `hvsock://${this.address.vmId}/${this.address.serviceId}`;
  }

  /** Connections refused so far (bad or missing proof, purpose not served, timeout): for tests and logs. */
  get rejected(): number {
    return this.auth.rejected;
  }

  onConnection(cb: (conn: Conn, purpose: Purpose) => void): void {
    this.auth.onConnection(cb);
  }

  async close(): Promise<void> {
    this.loop.close();
    this.auth.closePending();
  }
}

/** listenUnauthenticated's listener: the first connection, then nothing (see there why this is safe). */
export class OneShotHvsockListener {
  private cb: ((conn: Conn) => void) | undefined;
  private first: Conn | undefined;
  private done = false;
  private readonly loop: AcceptLoop;

  constructor(
    readonly address: HvsockAddress,
    ws: Winsock,
  ) {
    this.loop = AcceptLoop.open(ws, address, (conn) => this.accepted(conn));
  }

  private accepted(conn: Conn): void {
    if (this.done) return conn.close();
    this.done = true;
    // Stop listening before the connection gets a byte: a second dialer is refused by Hyper-V itself.
    this.loop.close();
    if (this.cb) this.cb(conn);
    else this.first = conn;
  }

  /** `cb` gets the one connection (also one accepted before it was registered). */
  onConnection(cb: (conn: Conn) => void): void {
    this.cb = cb;
    const c = this.first;
    this.first = undefined;
    if (c) cb(c);
  }

  /** True once the one connection came (or close() was called): nobody listens any more. */
  get finished(): boolean {
    return this.done;
  }

  async close(): Promise<void> {
    this.done = true;
    this.loop.close();
    this.first?.close();
    this.first = undefined;
  }
}

/**
 * Connects to (VM id, service id) and runs the dialer side of the handshake (guest dials host unless told
 * otherwise), as dialVsock does. Non-blocking connect: completion (or failure) is reported by WSAPoll, the
 * outcome read from SO_ERROR on the main thread. `timeoutMs` bounds the connect and the handshake each. Rejects
 * with PeerProofError if the listener fails its proof.
 */
export async function dialHvsock(
  address: HvsockAddress,
  auth: Omit<DialerAuth, 'direction'> & { direction?: DialerAuth['direction'] },
  opts: HvsockOptions & { timeoutMs?: number } = {},
): Promise<Conn> {
  const ws = opts.winsock ?? loadWinsock();
  const s = newHvSocket(ws);
  const what = `hvsock ${normalizeGuid(address.vmId)}:${normalizeGuid(address.serviceId)}`;
  try {
    if (ws.setNonBlocking(s) !== 0) throw new WinsockError('ioctlsocket(FIONBIO)', ws.lastError());
    if (ws.connect(s, sockaddrHv(address.vmId, address.serviceId)) === SOCKET_ERROR) {
      const e = ws.lastError();
      if (e !== WSA.WSAEWOULDBLOCK) throw new WinsockError(`connect ${what}`, e);
      await new Promise<void>((resolve, reject) => {
        const timer = setTimeout(() => {
          pollerFor(ws).unwatch(s);
          reject(new WinsockError(`connect ${what}`, WSA.WSAETIMEDOUT));
        }, opts.timeoutMs ?? 10_000);
        pollerFor(ws).watch(s, 'out', () => {
          clearTimeout(timer);
          const err = ws.socketError(s);
          if (err) reject(new WinsockError(`connect ${what}`, err));
          else resolve();
        });
      });
    }
  } catch (err) {
    ws.closesocket(s);
    throw err;
  }
  const conn = streamConn(ws, s);
  try {
    await dialerHandshake(
      streamIo(conn.stream),
      { ...auth, direction: auth.direction ?? Direction.guestToHost },
      opts.timeoutMs ?? AUTH_TIMEOUT_MS,
    );
  } catch (err) {
    conn.close();
    throw err;
  }
  return conn;
}
