// hvsock: Hyper-V sockets (AF_HYPERV) on the Windows host, the peer of AF_VSOCK over hv_sock in a Linux guest.
// An address is (VM id, service id), both GUIDs. A Linux guest's vsock port P is the service
// <P as 8 hex digits>-facb-11e6-bd58-64006a7986d3 (the "vsock service template"), so the guest agent's existing
// AF_VSOCK code (dial CID 2, port P) reaches a host listener bound to (the UVM's VM id, service(P)).
//
// Direction: the host listens, the guest dials (the UVM document's service table lets only SYSTEM and
// Administrators bind these services on the host). Hyper-V guarantees which VM a connection comes from, but
// anything inside that VM (a container too) can dial the host: every connection still presents the per-UVM
// secret first, checked by the same handshake as vsock (transport.ts acceptSecret / dialer writes the secret).
// The byte stream is a Duplex like vsock's, so the handshake can change in one place for both.
import { checkSecret } from './tcp-token.js';
import { timingSafeEqual } from 'node:crypto';
import type { Duplex } from 'node:stream';
import { AUTH_TIMEOUT_MS, SECRET_LENGTH, readExactly, type Conn, type Listener } from './transport.js';
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
  /** How long an accepted connection may take to present the secret. */
  authTimeoutMs?: number;
}

/**
 * The listener side of the transports' dialer-speaks-first check as vsock does it at this branch's base: the
 * first SECRET_LENGTH bytes must be the per-UVM secret (constant-time compare). The one place hvsock
 * authenticates: when the challenge-response handshake replaces it for vsock, it replaces it here too (the
 * listener takes any `authenticate(stream)`).
 */
export async function acceptSecret(stream: Duplex, secret: Buffer, timeoutMs = AUTH_TIMEOUT_MS): Promise<void> {
  const got = await readExactly(stream, SECRET_LENGTH, timeoutMs);
  if (secret.length !== SECRET_LENGTH || !timingSafeEqual(got, secret)) throw new Error('wrong transport secret');
}

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

/** Listens on (VM id, service id); hands out connections that presented the secret. */
export class HvsockListener implements Listener {
  private readonly callbacks: Array<(c: Conn) => void> = [];
  private closed = false;
  /** Connections refused (wrong secret, silence...): for tests and logs. */
  rejected = 0;

  private constructor(
    private readonly ws: Winsock,
    private readonly sock: Socket,
    readonly address: HvsockAddress,
    private readonly authenticate: ((stream: Duplex) => Promise<void>) | undefined,
  ) {
    this.acceptLoop();
  }

  static listen(address: HvsockAddress, secret: Buffer, opts: HvsockOptions = {}): HvsockListener {
    checkSecret(secret);
    const copy = Buffer.from(secret);
    return HvsockListener.bind(address, opts, (stream) => acceptSecret(stream, copy, opts.authTimeoutMs));
  }

  /**
   * A listener that hands out connections as they come, without the secret. Only for the port the secret itself
   * is handed out on, which the guest dials once at boot, before anything else runs in it.
   */
  static listenUnauthenticated(address: HvsockAddress, opts: HvsockOptions = {}): HvsockListener {
    return HvsockListener.bind(address, opts, undefined);
  }

  private static bind(
    address: HvsockAddress,
    opts: HvsockOptions,
    authenticate: ((stream: Duplex) => Promise<void>) | undefined,
  ): HvsockListener {
    const ws = opts.winsock ?? loadWinsock();
    const addr = { vmId: normalizeGuid(address.vmId), serviceId: normalizeGuid(address.serviceId) };
    const s = newHvSocket(ws);
    const fail = (call: string): never => {
      const err = new WinsockError(`${call} hvsock ${addr.vmId}:${addr.serviceId}`, ws.lastError());
      ws.closesocket(s);
      throw err;
    };
    if (ws.bind(s, sockaddrHv(addr.vmId, addr.serviceId)) !== 0) fail('bind');
    if (ws.listen(s, 16) !== 0) fail('listen');
    if (ws.setNonBlocking(s) !== 0) fail('ioctlsocket(FIONBIO)');
    return new HvsockListener(ws, s, addr, authenticate);
  }

  get url(): string {
    return `hvsock://${this.address.vmId}/${this.address.serviceId}`;
  }

  onConnection(cb: (conn: Conn) => void): void {
    this.callbacks.push(cb);
  }

  private acceptLoop(): void {
    while (!this.closed) {
      const c = this.ws.accept(this.sock);
      if (c === INVALID_SOCKET) {
        const e = this.ws.lastError();
        if (e === WSA.WSAEWOULDBLOCK) return pollerFor(this.ws).watch(this.sock, 'in', () => this.acceptLoop());
        // WSAECONNRESET (the dialer gave up), WSAEMFILE...: try again a little later.
        setTimeout(() => this.acceptLoop(), 50);
        return;
      }
      let conn: Conn;
      try {
        conn = streamConn(this.ws, c);
      } catch {
        continue;
      }
      (this.authenticate ? this.authenticate(conn.stream) : Promise.resolve()).then(
        () => {
          if (this.closed || this.callbacks.length === 0) return conn.close();
          for (const cb of this.callbacks) cb(conn);
        },
        () => {
          this.rejected++;
          conn.close();
        },
      );
    }
  }

  async close(): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    pollerFor(this.ws).unwatch(this.sock);
    this.ws.closesocket(this.sock);
  }
}

/**
 * Connects to (VM id, service id) within `timeoutMs` and presents the secret. Non-blocking connect: completion
 * (or failure) is reported by WSAPoll, the outcome read from SO_ERROR on the main thread.
 */
export async function dialHvsock(
  address: HvsockAddress,
  secret: Buffer,
  opts: HvsockOptions & { timeoutMs?: number } = {},
): Promise<Conn> {
  checkSecret(secret);
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
  conn.stream.write(secret);
  return conn;
}
