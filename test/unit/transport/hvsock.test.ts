// hvsock: the address facts (GUID byte layout, the vsock service template, SOCKADDR_HV) against the documented
// layouts, and the transport (listen/accept/dial with the transports' mutual handshake, purposes and share
// bindings, a wrong secret, a replayed session, the one-shot unauthenticated hand-out listener, a large transfer
// both ways) through the real koffi Winsock binding loaded on a FAKE ws2_32 (test/fakes/winsock-fake.c).
import assert from 'node:assert/strict';
import { randomBytes, randomUUID } from 'node:crypto';
import { mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { Duplex } from 'node:stream';
import {
  HV_GUID_PARENT,
  HvsockListener,
  SOCKADDR_HV_SIZE,
  dialHvsock,
  guidBytes,
  guidFromBytes,
  normalizeGuid,
  sockaddrHv,
  vsockPortOf,
  vsockServiceId,
} from '../../../src/transport/hvsock.js';
import {
  CHALLENGE_LENGTH,
  Direction,
  HandshakeIncompleteError,
  PeerProofError,
  dialerHandshake,
  encodeHello,
  fixedSecret,
  newSecret,
  streamIo,
  type Conn,
  type HandshakeIo,
  type Purpose,
} from '../../../src/transport/index.js';
import { SocketStream, WinsockError, loadWinsock, pollerFor, type Winsock } from '../../../src/transport/winsock.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';
import { fakeWinsock, fakesUnavailable, type FakeWinsockControl } from '../../helpers/win32-fakes.js';

describe('hvsock addressing', () => {
  it('lays a GUID out as the GUID struct (Data1..3 little-endian, Data4 as written)', () => {
    // go-winio HvsockGUIDParent: Data1 0xa42e7cda, Data2 0xd03f, Data3 0x480c, Data4 9c c2 a4 de 20 ab b8 78.
    assert.equal(guidBytes(HV_GUID_PARENT).toString('hex'), 'da7c2ea43fd00c489cc2a4de20abb878');
    assert.equal(guidFromBytes(guidBytes(HV_GUID_PARENT)), HV_GUID_PARENT);
    assert.equal(normalizeGuid('{A42E7CDA-D03F-480C-9CC2-A4DE20ABB878}'), HV_GUID_PARENT);
    assert.throws(() => normalizeGuid('a42e7cda-d03f-480c-9cc2'), /not a GUID/);
  });

  it('derives the service id of a vsock port from the template (port as Data1)', () => {
    // The ports hcsshim's LCOW documents list: 1 (entropy), 109 (logs), 0x40000000 (GCS), 2056.
    assert.equal(vsockServiceId(1), '00000001-facb-11e6-bd58-64006a7986d3');
    assert.equal(vsockServiceId(109), '0000006d-facb-11e6-bd58-64006a7986d3');
    assert.equal(vsockServiceId(0x40000000), '40000000-facb-11e6-bd58-64006a7986d3');
    assert.equal(vsockServiceId(0x808), '00000808-facb-11e6-bd58-64006a7986d3');
    assert.equal(vsockPortOf(vsockServiceId(1024)), 1024);
    assert.equal(vsockPortOf(HV_GUID_PARENT), undefined);
    assert.throws(() => vsockServiceId(-1), RangeError);
    assert.throws(() => vsockServiceId(2 ** 32), RangeError);
  });

  it('builds SOCKADDR_HV: Family 34, Reserved 0, VmId, ServiceId (36 bytes)', () => {
    const vm = '6f1a0d2e-1b3c-4d5e-8f90-a1b2c3d4e5f6';
    const svc = vsockServiceId(1024);
    const b = sockaddrHv(vm, svc);
    assert.equal(b.length, SOCKADDR_HV_SIZE);
    assert.equal(b.readUInt16LE(0), 34);
    assert.equal(b.readUInt16LE(2), 0);
    assert.equal(guidFromBytes(b.subarray(4, 20)), vm);
    assert.equal(guidFromBytes(b.subarray(20, 36)), svc);
    // Data1 of the service is the port, little-endian.
    assert.equal(b.readUInt32LE(20), 1024);
  });
});

function collect(stream: Duplex, n: number, timeoutMs = 10_000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const chunks: Buffer[] = [];
    let got = 0;
    const timer = setTimeout(() => reject(new Error(`only ${got} of ${n} bytes`)), timeoutMs);
    stream.on('data', (d: Buffer) => {
      chunks.push(d);
      got += d.length;
      if (got >= n) {
        clearTimeout(timer);
        resolve(Buffer.concat(chunks));
      }
    });
  });
}

function closed(stream: Duplex, timeoutMs = 5000): Promise<boolean> {
  return new Promise((resolve) => {
    const t = setTimeout(() => resolve(false), timeoutMs);
    const done = (): void => {
      clearTimeout(t);
      resolve(true);
    };
    stream.once('close', done);
    stream.once('end', done);
    stream.resume();
  });
}

/** Resolves once the peer closed `stream`, with every byte it sent first; rejects if it stays open. */
function closedByPeer(stream: Duplex, timeoutMs = 5000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    const t = setTimeout(() => reject(new Error('the listener did not close the connection')), timeoutMs);
    stream.on('data', (d: Buffer) => got.push(d));
    stream.on('error', () => undefined);
    stream.once('close', () => {
      clearTimeout(t);
      resolve(Buffer.concat(got));
    });
  });
}

const control: Purpose = { kind: 'control' };
const until = async (cond: () => boolean, ms = 5000): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
};

describe('hvsock transport (FAKE ws2_32)', function () {
  this.timeout(20_000);
  let ctl: FakeWinsockControl;
  let ws: Winsock;
  let dir: string;
  let baseline: number;
  const saved = process.env.LCOW_FAKE_HVSOCK_DIR;
  const listeners: Array<{ close(): Promise<void> }> = [];
  const conns: Conn[] = [];
  const streams: Duplex[] = [];

  before(function () {
    requirePrerequisite(this, fakesUnavailable());
    ctl = fakeWinsock();
    ws = loadWinsock(ctl.path);
  });
  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), `hvs-${process.pid}-`));
    process.env.LCOW_FAKE_HVSOCK_DIR = dir;
    baseline = ctl.openSockets();
  });
  afterEach(async () => {
    for (const c of conns.splice(0)) c.close();
    for (const s of streams.splice(0)) s.destroy();
    for (const l of listeners.splice(0)) await l.close();
    // Give destroyed streams a turn to close their sockets, then check nothing leaked.
    await new Promise((r) => setTimeout(r, 20));
    pollerFor(ws).close();
    assert.equal(ctl.openSockets(), baseline, 'sockets left open');
    process.env.LCOW_FAKE_HVSOCK_DIR = saved;
    rmSync(dir, { recursive: true, force: true });
  });

  const newAddr = (port = 1024): { vmId: string; serviceId: string } => ({
    vmId: randomUUID(),
    serviceId: vsockServiceId(port),
  });

  /** An authenticated listener; `got` collects what it hands out. */
  function listen(
    addr: { vmId: string; serviceId: string },
    secret: Buffer,
    opts: Partial<Parameters<typeof HvsockListener.listen>[1]> = {},
  ): { l: HvsockListener; got: Array<{ c: Conn; p: Purpose }> } {
    const l = HvsockListener.listen(addr, { secret: fixedSecret(secret), winsock: ws, ...opts });
    listeners.push(l);
    const got: Array<{ c: Conn; p: Purpose }> = [];
    l.onConnection((c, p) => {
      got.push({ c, p });
      conns.push(c);
    });
    return { l, got };
  }

  /** A connected socket with no handshake at all (what any process in the guest can open). */
  function rawConnect(addr: { vmId: string; serviceId: string }): SocketStream {
    const raw = ws.socket(34, 1, 1);
    assert.equal(ws.connect(raw, sockaddrHv(addr.vmId, addr.serviceId)), 0);
    const s = new SocketStream(ws, raw);
    s.on('error', () => undefined);
    streams.push(s);
    return s;
  }

  it('hands out a dialer that proved the secret, with its purpose; bytes flow both ways (1 MiB), none swallowed', async () => {
    const secret = newSecret();
    const addr = newAddr();
    const { l, got } = listen(addr, secret);
    assert.equal(l.url, `hvsock://${addr.vmId}/${addr.serviceId}`);
    const client = await dialHvsock(addr, { secret: fixedSecret(secret), purpose: control }, { winsock: ws });
    conns.push(client);
    const up = randomBytes(1 << 20);
    const down = randomBytes(1 << 20);
    // The dialer writes at once after its PROOF: the listener must leave those bytes for the protocol.
    client.stream.write(up);
    await until(() => got.length === 1);
    const server = got[0]!.c;
    assert.deepEqual(got[0]!.p, control);
    const gotUp = collect(server.stream, up.length);
    const gotDown = collect(client.stream, down.length);
    server.stream.write(down);
    assert.ok((await gotUp).equals(up));
    assert.ok((await gotDown).equals(down));
    // EOF propagates: the client ends, the server sees the end.
    const serverEnded = closed(server.stream);
    client.stream.end();
    assert.equal(await serverEnded, true);
    assert.equal(l.rejected, 0);
  });

  it('a wrong secret: the dialer refuses the listener (PeerProofError), the listener hands nothing out', async () => {
    const secret = newSecret();
    const addr = newAddr();
    const { l, got } = listen(addr, secret);
    await assert.rejects(
      dialHvsock(addr, { secret: fixedSecret(newSecret()), purpose: control }, { winsock: ws }),
      PeerProofError,
    );
    await until(() => l.rejected === 1);
    // The right one is still served.
    conns.push(await dialHvsock(addr, { secret: fixedSecret(secret), purpose: control }, { winsock: ws }));
    await until(() => got.length === 1);
    assert.equal(l.rejected, 1);
  });

  it('the old raw-secret check, junk, silence or a partial HELLO: closed without a byte of answer', async () => {
    const secret = newSecret();
    const addr = newAddr(564);
    const { l, got } = listen(addr, secret, { authTimeoutMs: 300 });
    // The protocol this transport used before the handshake: the dialer sends the raw secret.
    const old = rawConnect(addr);
    const oldClosed = closedByPeer(old);
    old.write(secret);
    assert.equal((await oldClosed).length, 0);
    const junk = rawConnect(addr);
    const junkClosed = closedByPeer(junk);
    junk.write(Buffer.alloc(200, 0x41));
    assert.equal((await junkClosed).length, 0);
    // Silent after part of a HELLO: closed at the auth deadline.
    const partial = rawConnect(addr);
    const partialClosed = closedByPeer(partial);
    partial.write(
      encodeHello({ direction: Direction.guestToHost, purpose: control, nonce: newSecret() }).subarray(0, 8),
    );
    assert.equal((await partialClosed).length, 0);
    await until(() => l.rejected === 3);
    assert.equal(got.length, 0);
  });

  it('purposes: admit decides; a wrong share id is closed unanswered, a wrong share token fails the proof', async () => {
    const secret = newSecret();
    const token = randomBytes(16);
    const addr = newAddr(564);
    const { l, got } = listen(addr, secret, {
      admit: (p) => (p.kind === 'p9' && p.shareId === 's1' ? { binding: token } : undefined),
      authTimeoutMs: 1000,
    });
    const share = (shareId: string, binding: Buffer): Promise<Conn> =>
      dialHvsock(addr, { secret: fixedSecret(secret), purpose: { kind: 'p9', shareId }, binding }, { winsock: ws });
    conns.push(await share('s1', token));
    await until(() => got.length === 1);
    assert.deepEqual(got[0]!.p, { kind: 'p9', shareId: 's1' });
    await assert.rejects(share('s2', token), HandshakeIncompleteError);
    await assert.rejects(share('s1', randomBytes(16)), PeerProofError);
    // This listener does not serve the control channel; nor the other direction.
    await assert.rejects(
      dialHvsock(addr, { secret: fixedSecret(secret), purpose: control }, { winsock: ws }),
      HandshakeIncompleteError,
    );
    await assert.rejects(
      dialHvsock(
        addr,
        {
          secret: fixedSecret(secret),
          purpose: { kind: 'p9', shareId: 's1' },
          binding: token,
          direction: Direction.hostToGuest,
        },
        { winsock: ws },
      ),
      HandshakeIncompleteError,
    );
    await until(() => l.rejected === 4);
    assert.equal(got.length, 1);
  });

  it('a recorded good session replayed to the listener: a fresh CHALLENGE, then closed at the stale PROOF', async () => {
    const secret = newSecret();
    const addr = newAddr();
    const { l, got } = listen(addr, secret);
    // A good handshake over a raw connection, recording what the dialer sent.
    const s = rawConnect(addr);
    const io = streamIo(s);
    const sent: Buffer[] = [];
    const recording: HandshakeIo = {
      read: (n, t) => io.read(n, t),
      write: (b) => {
        sent.push(Buffer.from(b));
        return io.write(b);
      },
    };
    await dialerHandshake(
      recording,
      { secret: fixedSecret(secret), direction: Direction.guestToHost, purpose: control },
      5000,
    );
    await until(() => got.length === 1);
    const transcript = Buffer.concat(sent);
    assert.equal(transcript.indexOf(secret), -1, 'the secret never crosses the wire');
    const replay = rawConnect(addr);
    const replayClosed = closedByPeer(replay);
    replay.write(transcript);
    assert.equal((await replayClosed).length, CHALLENGE_LENGTH);
    await until(() => l.rejected === 1);
    assert.equal(got.length, 1);
  });

  it('listenUnauthenticated: one connection, and it stops listening before handing it over', async () => {
    const addr = newAddr(1025);
    const once = HvsockListener.listenUnauthenticated(addr, { winsock: ws });
    listeners.push(once);
    const handed: Conn[] = [];
    once.onConnection((c) => {
      handed.push(c);
      c.stream.end(Buffer.from('payload'), () => c.close());
    });
    const first = rawConnect(addr);
    assert.equal((await closedByPeer(first)).toString(), 'payload');
    assert.equal(handed.length, 1);
    assert.equal(once.finished, true);
    // Nobody listens any more: a second dialer is refused at connect.
    await assert.rejects(
      dialHvsock(addr, { secret: fixedSecret(newSecret()), purpose: control }, { winsock: ws }),
      (e: unknown) => e instanceof WinsockError && e.code === 'WSAECONNREFUSED',
    );
  });

  it('reports a dial to a service nobody listens on as WSAECONNREFUSED', async () => {
    await assert.rejects(
      dialHvsock(newAddr(7), { secret: fixedSecret(newSecret()), purpose: control }, { winsock: ws }),
      (e: unknown) => e instanceof WinsockError && e.code === 'WSAECONNREFUSED',
    );
  });

  it('fails to listen twice on one (VM id, service id)', async () => {
    const addr = newAddr(1025);
    listen(addr, newSecret());
    assert.throws(
      () => HvsockListener.listen(addr, { secret: fixedSecret(newSecret()), winsock: ws }),
      (e: unknown) => e instanceof WinsockError && e.code === 'WSAEADDRINUSE',
    );
  });

  it('close() stops listening and drops connections still authenticating', async () => {
    const secret = newSecret();
    const addr = newAddr();
    const { l, got } = listen(addr, secret);
    const pending = rawConnect(addr);
    const pendingClosed = closedByPeer(pending);
    pending.write(
      encodeHello({ direction: Direction.guestToHost, purpose: control, nonce: newSecret() }).subarray(0, 4),
    );
    await new Promise((r) => setTimeout(r, 50));
    await l.close();
    assert.equal((await pendingClosed).length, 0);
    await assert.rejects(
      dialHvsock(addr, { secret: fixedSecret(secret), purpose: control }, { winsock: ws }),
      (e: unknown) => e instanceof WinsockError && e.code === 'WSAECONNREFUSED',
    );
    assert.equal(got.length, 0);
  });
});
