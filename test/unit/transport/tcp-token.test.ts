// tcp+token over real loopback sockets: only a dialer that proves it knows the per-UVM secret is handed out, the
// dialer accepts only a listener that proved it first, and a local process in the middle (a squatter holding the
// port the shim dials, a recorder replaying a good session, a silent or slow peer) learns nothing and gets nowhere.
// No VM.
import assert from 'node:assert/strict';
import { closeSync, readSync, writeSync } from 'node:fs';
import { connect, createServer, type Server, type Socket } from 'node:net';
import {
  CHALLENGE_LENGTH,
  Direction,
  PeerProofError,
  TcpTokenListener,
  decodeHello,
  dial,
  dialTcpToken,
  encodeChallenge,
  encodeHello,
  encodeProof,
  fixedSecret,
  newSecret,
  parseTransportUrl,
  readExactly,
  type Conn,
  type ListenOptions,
  type Purpose,
} from '../../../src/transport/index.js';
import { dialRawFd } from '../../../src/transport/rawfd.js';

const control: Purpose = { kind: 'control' };

/** Resolves once the peer closed `s` (end or close), with whatever bytes it sent first. */
function closedByPeer(s: Socket, ms = 5000): Promise<Buffer> {
  return new Promise((resolve, reject) => {
    const got: Buffer[] = [];
    const t = setTimeout(() => reject(new Error('the listener did not close the connection')), ms);
    s.on('data', (d: Buffer) => got.push(d));
    s.on('error', () => undefined);
    s.once('close', () => {
      clearTimeout(t);
      resolve(Buffer.concat(got));
    });
  });
}

function rawConnect(port: number): Promise<Socket> {
  return new Promise((resolve, reject) => {
    const s = connect({ host: '127.0.0.1', port });
    s.once('connect', () => resolve(s));
    s.once('error', reject);
  });
}

const until = async (cond: () => boolean, ms = 5000): Promise<void> => {
  const end = Date.now() + ms;
  while (!cond()) {
    if (Date.now() > end) throw new Error('condition not met in time');
    await new Promise((r) => setTimeout(r, 10));
  }
};

const hello = (purpose: Purpose = control): Buffer =>
  encodeHello({ direction: Direction.hostToGuest, purpose, nonce: newSecret() });

describe('transport: tcp+token (mutual handshake over loopback)', function () {
  this.timeout(20_000);
  let listener: TcpTokenListener | undefined;
  const conns: Conn[] = [];
  const sockets: Socket[] = [];
  const servers: Server[] = [];

  afterEach(async () => {
    for (const c of conns.splice(0)) c.close();
    for (const s of sockets.splice(0)) s.destroy();
    for (const s of servers.splice(0)) s.close();
    await listener?.close();
    listener = undefined;
  });

  const listen = async (
    secret: Buffer,
    opts: Partial<ListenOptions> = {},
  ): Promise<{ l: TcpTokenListener; got: Array<{ c: Conn; p: Purpose }> }> => {
    const l = await TcpTokenListener.listen({ secret: fixedSecret(secret), ...opts });
    listener = l;
    const got: Array<{ c: Conn; p: Purpose }> = [];
    l.onConnection((c, p) => {
      got.push({ c, p });
      conns.push(c);
    });
    return { l, got };
  };

  /** A TCP server on 127.0.0.1 answering each connection with `answer` (recording what it received). */
  const fakePeer = async (
    answer: (s: Socket, received: Buffer[]) => void,
  ): Promise<{ port: number; received: Buffer[][]; connections: () => number }> => {
    const received: Buffer[][] = [];
    const srv = createServer((s) => {
      const mine: Buffer[] = [];
      received.push(mine);
      s.on('error', () => undefined);
      s.on('data', (d: Buffer) => mine.push(d));
      sockets.push(s);
      answer(s, mine);
    });
    servers.push(srv);
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    return { port: (srv.address() as { port: number }).port, received, connections: () => received.length };
  };

  it('listens on 127.0.0.1 only, and its URL says so', async () => {
    const { l } = await listen(newSecret());
    const addr = (l as unknown as { server: { address(): { address: string; family: string } } }).server.address();
    assert.equal(addr.address, '127.0.0.1');
    assert.equal(addr.family, 'IPv4');
    assert.equal(l.url, `tcp+token://127.0.0.1:${l.port}`);
    assert.deepEqual(parseTransportUrl(l.url), { scheme: 'tcp+token', host: '127.0.0.1', port: l.port });
    // Not reachable through another local address family (IPv6 loopback), if this host has one.
    const v6 = await new Promise<string>((resolve) => {
      const s = connect({ host: '::1', port: l.port });
      s.once('connect', () => {
        s.destroy();
        resolve('connected');
      });
      s.once('error', (e: NodeJS.ErrnoException) => resolve(e.code ?? 'error'));
    });
    assert.notEqual(v6, 'connected');
  });

  it('the right secret: handed out with its purpose; bytes after the handshake flow both ways, none swallowed', async () => {
    const secret = newSecret();
    const { l, got } = await listen(secret);
    const c = await dialTcpToken('127.0.0.1', l.port, {
      secret: fixedSecret(secret),
      purpose: control,
      timeoutMs: 5000,
    });
    conns.push(c);
    c.stream.write('from host');
    await until(() => got.length === 1);
    assert.deepEqual(got[0]!.p, control);
    const guest = got[0]!.c;
    assert.equal((await readExactly(guest.stream, 9, 5000)).toString(), 'from host');
    const big = Buffer.alloc(1 << 20, 7);
    guest.stream.write(big);
    assert.ok((await readExactly(c.stream, big.length, 10_000)).equals(big));
    assert.equal(l.rejected, 0);
    // dial(url) does the same
    conns.push(await dial(l.url, { secret: fixedSecret(secret) }));
    await until(() => got.length === 2);
  });

  it('a dialer without the secret: fails with PeerProofError at once (no retry), nothing handed out', async () => {
    const { l, got } = await listen(newSecret());
    const t0 = Date.now();
    await assert.rejects(
      dialTcpToken('127.0.0.1', l.port, { secret: fixedSecret(newSecret()), purpose: control, timeoutMs: 10_000 }),
      PeerProofError,
    );
    assert.ok(Date.now() - t0 < 5000);
    await until(() => l.rejected === 1);
    assert.equal(got.length, 0);
  });

  it('a raw client that knows the format but not the secret: a CHALLENGE, then closed at its bad PROOF', async () => {
    const { l, got } = await listen(newSecret());
    const s = await rawConnect(l.port);
    sockets.push(s);
    s.write(hello());
    const challenge = await readExactly(s, CHALLENGE_LENGTH, 5000);
    const closed = closedByPeer(s);
    s.write(encodeProof(challenge.subarray(38))); // its own MAC reflected
    assert.equal((await closed).length, 0);
    assert.equal(got.length, 0);
    assert.equal(l.rejected, 1);
  });

  it('the old protocol (the raw secret first) or junk: closed without a byte of answer', async () => {
    const secret = newSecret();
    const { l, got } = await listen(secret);
    for (const bytes of [
      secret,
      Buffer.from('GET / HTTP/1.0\r\n\r\n'),
      Buffer.from([0x4c, 0x43, 0x41, 0x55, 1, 1, 1, 1, 200]),
    ]) {
      const s = await rawConnect(l.port);
      sockets.push(s);
      const closed = closedByPeer(s);
      s.write(Buffer.concat([bytes, Buffer.alloc(200)]));
      assert.equal((await closed).length, 0, 'the listener must not answer');
    }
    assert.equal(got.length, 0);
    assert.equal(l.rejected, 3);
  });

  it('silence, a short HELLO, or a slow PROOF: closed at the auth deadline, nothing handed out', async () => {
    const secret = newSecret();
    const { l, got } = await listen(secret, { authTimeoutMs: 300 });
    const silent = await rawConnect(l.port);
    const short = await rawConnect(l.port);
    sockets.push(silent, short);
    const t0 = Date.now();
    const c1 = closedByPeer(silent);
    const c2 = closedByPeer(short);
    short.write(hello().subarray(0, 20));
    assert.equal((await c1).length, 0);
    assert.equal((await c2).length, 0);
    assert.ok(Date.now() - t0 >= 250, `closed too early (${Date.now() - t0} ms)`);
    // a dialer that got its CHALLENGE and never proved (gave up): not handed out either
    const slow = await rawConnect(l.port);
    sockets.push(slow);
    slow.write(hello());
    await readExactly(slow, CHALLENGE_LENGTH, 5000);
    await closedByPeer(slow);
    assert.equal(got.length, 0);
    assert.equal(l.rejected, 3);
  });

  it('handshakes in progress are bounded: past the cap a connection is closed at once', async () => {
    const { l } = await listen(newSecret(), { maxPending: 2 });
    const a = await rawConnect(l.port);
    const b = await rawConnect(l.port);
    sockets.push(a, b);
    await until(() => l.pendingCount === 2);
    const c = await rawConnect(l.port);
    sockets.push(c);
    assert.equal((await closedByPeer(c, 2000)).length, 0);
    assert.equal(l.pendingCount, 2);
  });

  it('purposes: a share is admitted only as the listener says, with its token bound in', async () => {
    const secret = newSecret();
    const token = Buffer.alloc(16, 9);
    const { l, got } = await listen(secret, {
      admit: (p) => (p.kind === 'p9' && p.shareId === 's1' ? { binding: token } : undefined),
    });
    const share = (shareId: string, binding: Buffer, timeoutMs = 5000): Promise<Conn> =>
      dialTcpToken('127.0.0.1', l.port, {
        secret: fixedSecret(secret),
        purpose: { kind: 'p9', shareId },
        binding,
        timeoutMs,
      });
    conns.push(await share('s1', token));
    await until(() => got.length === 1);
    assert.deepEqual(got[0]!.p, { kind: 'p9', shareId: 's1' });
    // a wrong token: the listener's proof does not verify for this dialer
    await assert.rejects(share('s1', Buffer.alloc(16, 8)), PeerProofError);
    // an unknown share: closed without an answer, retried until the deadline
    await assert.rejects(share('s2', token, 400), /no handshake within 400 ms/);
    // control is not served by this listener
    await assert.rejects(
      dialTcpToken('127.0.0.1', l.port, { secret: fixedSecret(secret), purpose: control, timeoutMs: 300 }),
      /no handshake within/,
    );
    assert.equal(got.length, 1);
  });

  it('the secret is asked for at every handshake (a listener follows a changed secret without a restart)', async () => {
    const a = newSecret();
    const b = newSecret();
    let current = a;
    let calls = 0;
    const { l, got } = await listen(a, {
      secret: () => {
        calls++;
        return current;
      },
    });
    conns.push(await dialTcpToken('127.0.0.1', l.port, { secret: fixedSecret(a), purpose: control, timeoutMs: 5000 }));
    current = b;
    await assert.rejects(
      dialTcpToken('127.0.0.1', l.port, { secret: fixedSecret(a), purpose: control, timeoutMs: 5000 }),
      PeerProofError,
    );
    conns.push(await dialTcpToken('127.0.0.1', l.port, { secret: fixedSecret(b), purpose: control, timeoutMs: 5000 }));
    await until(() => got.length === 2);
    assert.equal(calls, 3);
  });

  it('a squatter holding the port (answers without the secret): the dialer refuses it at once and it learns nothing', async () => {
    const secret = newSecret();
    // The fake agent answers any HELLO with a well-formed CHALLENGE whose MAC it had to guess.
    const squatter = await fakePeer((s) =>
      s.once('data', () => s.write(encodeChallenge({ nonce: newSecret(), mac: newSecret() }))),
    );
    await assert.rejects(
      dialTcpToken('127.0.0.1', squatter.port, { secret: fixedSecret(secret), purpose: control, timeoutMs: 10_000 }),
      (err: unknown) => err instanceof PeerProofError && /bad listener MAC/.test(err.message),
    );
    await until(() => squatter.received[0]!.length > 0);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(squatter.connections(), 1, 'a proof failure is not retried');
    const got = Buffer.concat(squatter.received[0]!);
    // All it received is one HELLO: a fresh random nonce and the purpose. No secret, no MAC.
    assert.equal(got.length, 41);
    const h = decodeHello(got);
    assert.deepEqual(h.purpose, control);
    assert.equal(got.indexOf(secret), -1);
    // Useless elsewhere: replayed to the real listener (same secret), it earns a CHALLENGE but the squatter has no
    // PROOF to give; the connection is refused and nothing handed out.
    const { l, got: handed } = await listen(secret);
    const s = await rawConnect(l.port);
    sockets.push(s);
    s.write(got);
    const challenge = await readExactly(s, CHALLENGE_LENGTH, 5000);
    const closed = closedByPeer(s);
    s.write(encodeProof(challenge.subarray(6, 38)));
    await closed;
    assert.equal(handed.length, 0);
    assert.equal(l.rejected, 1);
  });

  it('a squatter that answers garbage (not our protocol at all) is refused the same way', async () => {
    const squatter = await fakePeer((s) => s.once('data', () => s.write(Buffer.alloc(70, 0x41))));
    await assert.rejects(
      dialTcpToken('127.0.0.1', squatter.port, { secret: fixedSecret(newSecret()), purpose: control, timeoutMs: 5000 }),
      (err: unknown) => err instanceof PeerProofError && /not an lcow endpoint/.test(err.message),
    );
  });

  it('a recorded good session replayed either way fails: to the listener (dialer side) and to a dialer (listener side)', async () => {
    const secret = newSecret();
    const { l, got } = await listen(secret);
    // A recording relay in front of the real listener.
    const fromDialer: Buffer[] = [];
    const fromListener: Buffer[] = [];
    const relay = await fakePeer((s, mine) => {
      const back = connect({ host: '127.0.0.1', port: l.port });
      back.on('error', () => undefined);
      sockets.push(back);
      s.on('data', (d: Buffer) => back.write(d));
      back.on('data', (d: Buffer) => {
        fromListener.push(d);
        s.write(d);
      });
      void mine;
    });
    const c = await dialTcpToken('127.0.0.1', relay.port, {
      secret: fixedSecret(secret),
      purpose: control,
      timeoutMs: 5000,
    });
    conns.push(c);
    await until(() => got.length === 1);
    fromDialer.push(...relay.received[0]!);
    const dialerBytes = Buffer.concat(fromDialer);
    const listenerBytes = Buffer.concat(fromListener);
    assert.equal(dialerBytes.length, 41 + 38);
    assert.equal(listenerBytes.length, CHALLENGE_LENGTH);
    assert.equal(Buffer.concat([dialerBytes, listenerBytes]).indexOf(secret), -1);
    // (a) the dialer's bytes replayed to the listener: refused (its nonce is fresh), nothing more handed out
    const s = await rawConnect(l.port);
    sockets.push(s);
    const closed = closedByPeer(s);
    s.write(dialerBytes);
    assert.equal((await closed).length, CHALLENGE_LENGTH, 'a CHALLENGE, then closed at the stale PROOF');
    assert.equal(got.length, 1);
    assert.equal(l.rejected, 1);
    // (b) the listener's bytes replayed to a dialer: PeerProofError (the dialer's nonce is fresh)
    const replayer = await fakePeer((r) => r.once('data', () => r.write(listenerBytes)));
    await assert.rejects(
      dialTcpToken('127.0.0.1', replayer.port, { secret: fixedSecret(secret), purpose: control, timeoutMs: 5000 }),
      PeerProofError,
    );
  });

  it('retries while connections are accepted then dropped or held (slirp before the guest listens)', async () => {
    const secret = newSecret();
    const { l, got } = await listen(secret);
    // A front that accepts every connection; the first three are dropped at once, the fourth silently held
    // (no CHALLENGE: the attempt times out), the rest piped to the real listener.
    let n = 0;
    const front = createServer((s) => {
      n++;
      s.on('error', () => undefined);
      if (n <= 3) return void s.destroy();
      if (n === 4) return void sockets.push(s);
      const back = connect({ host: '127.0.0.1', port: l.port });
      back.on('error', () => undefined);
      s.pipe(back).pipe(s);
      sockets.push(s, back);
    });
    servers.push(front);
    await new Promise<void>((r) => front.listen(0, '127.0.0.1', r));
    const port = (front.address() as { port: number }).port;
    const t0 = Date.now();
    const c = await dialTcpToken('127.0.0.1', port, {
      secret: fixedSecret(secret),
      purpose: control,
      timeoutMs: 10_000,
      attemptTimeoutMs: 300,
    });
    conns.push(c);
    assert.equal(n, 5);
    assert.ok(Date.now() - t0 >= 300, 'the held attempt must have timed out');
    c.stream.write('ok');
    await until(() => got.length === 1);
    assert.equal((await readExactly(got[0]!.c.stream, 2, 5000)).toString(), 'ok');
  });

  it('gives up at the deadline and when aborted', async () => {
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const dead = (srv.address() as { port: number }).port;
    await new Promise<void>((r) => srv.close(() => r()));
    const t0 = Date.now();
    await assert.rejects(
      dialTcpToken('127.0.0.1', dead, { secret: fixedSecret(newSecret()), purpose: control, timeoutMs: 300 }),
      /no handshake within 300/,
    );
    assert.ok(Date.now() - t0 < 3000);
    let calls = 0;
    await assert.rejects(
      dialTcpToken('127.0.0.1', dead, {
        secret: fixedSecret(newSecret()),
        purpose: control,
        timeoutMs: 10_000,
        abort: () => (++calls > 2 ? 'QEMU exited' : undefined),
      }),
      /QEMU exited/,
    );
  });

  it('dialRawFd (the fd a 9P mount hands to the kernel): the handshake on the bare fd, no protocol byte read', async () => {
    const secret = newSecret();
    const token = Buffer.alloc(16, 5);
    const { l, got } = await listen(secret, {
      admit: (p) => (p.kind === 'p9' && p.shareId === 'rootfs' ? { binding: token } : undefined),
    });
    const auth = { secret: fixedSecret(secret), direction: Direction.hostToGuest, binding: token };
    const fd = await dialRawFd(l.url, { ...auth, purpose: { kind: 'p9', shareId: 'rootfs' } });
    try {
      await until(() => got.length === 1);
      // the listener's first protocol bytes are still in the socket for the fd's next owner
      await new Promise((r) => got[0]!.c.stream.write('Rversion', r));
      const buf = Buffer.alloc(8);
      let n = 0;
      while (n < 8) n += readSync(fd, buf, n, 8 - n, null);
      assert.equal(buf.toString(), 'Rversion');
      writeSync(fd, Buffer.from('Tversion'));
      assert.equal((await readExactly(got[0]!.c.stream, 8, 5000)).toString(), 'Tversion');
    } finally {
      closeSync(fd);
    }
    await assert.rejects(
      dialRawFd(l.url, { ...auth, secret: fixedSecret(newSecret()), purpose: { kind: 'p9', shareId: 'rootfs' } }),
      PeerProofError,
    );
    await assert.rejects(
      dialRawFd(l.url, { ...auth, purpose: { kind: 'p9', shareId: 'other' } }, 500),
      /closed after 0 of 70/,
    );
  });

  it('close() stops listening and drops connections still authenticating', async () => {
    const { l } = await listen(newSecret());
    const s = await rawConnect(l.port);
    sockets.push(s);
    const closed = closedByPeer(s);
    await until(() => l.pendingCount === 1);
    await l.close();
    await closed;
    await assert.rejects(rawConnect(l.port));
  });
});
