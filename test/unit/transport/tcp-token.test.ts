// tcp+token: only a connection that presents the per-UVM secret in time is handed out; everything else is
// closed. Loopback only. No VM.
import assert from 'node:assert/strict';
import { connect, createServer, type Server, type Socket } from 'node:net';
import {
  ACK,
  COMMIT,
  SECRET_LENGTH,
  TcpTokenListener,
  dial,
  dialTcpToken,
  dialTcpTokenAck,
  newSecret,
  parseTransportUrl,
  readExactly,
  type Conn,
} from '../../../src/transport/index.js';

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

describe('transport: tcp+token', function () {
  this.timeout(20_000);
  let listener: TcpTokenListener | undefined;
  const conns: Conn[] = [];
  const sockets: Socket[] = [];

  afterEach(async () => {
    for (const c of conns.splice(0)) c.close();
    for (const s of sockets.splice(0)) s.destroy();
    await listener?.close();
    listener = undefined;
  });

  const listen = async (secret: Buffer, authTimeoutMs?: number): Promise<{ l: TcpTokenListener; got: Conn[] }> => {
    const l = await TcpTokenListener.listen(secret, { authTimeoutMs });
    listener = l;
    const got: Conn[] = [];
    l.onConnection((c) => {
      got.push(c);
      conns.push(c);
    });
    return { l, got };
  };

  const until = async (cond: () => boolean, ms = 5000): Promise<void> => {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error('condition not met in time');
      await new Promise((r) => setTimeout(r, 10));
    }
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

  it('the right secret: the connection is handed out and bytes flow both ways', async () => {
    const secret = newSecret();
    const { l, got } = await listen(secret);
    const guest = await dialTcpToken('127.0.0.1', l.port, secret);
    conns.push(guest);
    await until(() => got.length === 1);
    const host = got[0]!;
    guest.stream.write(Buffer.from('from guest'));
    assert.equal((await readExactly(host.stream, 10, 5000)).toString(), 'from guest');
    const big = Buffer.alloc(1 << 20, 7);
    host.stream.write(big);
    assert.ok((await readExactly(guest.stream, big.length, 10_000)).equals(big));
    assert.equal(l.rejected, 0);
  });

  it('dial(url) presents the secret too', async () => {
    const secret = newSecret();
    const { l, got } = await listen(secret);
    conns.push(await dial(l.url, secret));
    await until(() => got.length === 1);
  });

  it('secret bytes past the preamble stay for the protocol (nothing swallowed)', async () => {
    const secret = newSecret();
    const { l, got } = await listen(secret);
    const s = await rawConnect(l.port);
    sockets.push(s);
    s.write(Buffer.concat([secret, Buffer.from('payload')]));
    await until(() => got.length === 1);
    assert.equal((await readExactly(got[0]!.stream, 7, 5000)).toString(), 'payload');
  });

  it('a wrong secret: closed, never handed out', async () => {
    const { l, got } = await listen(newSecret());
    const s = await rawConnect(l.port);
    sockets.push(s);
    const closed = closedByPeer(s);
    s.write(newSecret());
    assert.equal((await closed).length, 0, 'the listener must not answer');
    assert.equal(got.length, 0);
    assert.equal(l.rejected, 1);
  });

  it('a short secret then EOF: closed, never handed out', async () => {
    const { l, got } = await listen(newSecret());
    const s = await rawConnect(l.port);
    sockets.push(s);
    const closed = closedByPeer(s);
    s.end(Buffer.alloc(SECRET_LENGTH - 1, 1));
    await closed;
    assert.equal(got.length, 0);
    await until(() => l.rejected === 1);
  });

  it('a short secret and silence: closed at the auth deadline', async () => {
    const { l, got } = await listen(newSecret(), 300);
    const s = await rawConnect(l.port);
    sockets.push(s);
    const t0 = Date.now();
    const closed = closedByPeer(s);
    s.write(Buffer.alloc(5, 1));
    await closed;
    assert.ok(Date.now() - t0 >= 250, `closed too early (${Date.now() - t0} ms)`);
    assert.equal(got.length, 0);
    assert.equal(l.rejected, 1);
  });

  it('silence: closed at the auth deadline', async () => {
    const { l, got } = await listen(newSecret(), 300);
    const s = await rawConnect(l.port);
    sockets.push(s);
    await closedByPeer(s);
    assert.equal(got.length, 0);
    assert.equal(l.rejected, 1);
  });

  it('refuses a secret of the wrong length at listen and dial time', async () => {
    await assert.rejects(TcpTokenListener.listen(Buffer.alloc(16)), /32 bytes/);
    await assert.rejects(dialTcpToken('127.0.0.1', 1, Buffer.alloc(31)), /32 bytes/);
  });

  it('close() stops listening and drops connections still authenticating', async () => {
    const { l } = await listen(newSecret());
    const s = await rawConnect(l.port);
    sockets.push(s);
    const closed = closedByPeer(s);
    await until(() => (l as unknown as { pending: Set<unknown> }).pending.size === 1);
    await l.close();
    await closed;
    await assert.rejects(rawConnect(l.port));
  });
});

// The hostfwd direction: the guest listens (ack mode), the host dials in and presents the secret first; the
// listener answers ACK only to the right secret, and hands the connection out only after the dialer's COMMIT.
describe('transport: tcp+token, listener acks (host dials in through hostfwd)', function () {
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

  const listen = async (secret: Buffer, authTimeoutMs?: number): Promise<{ l: TcpTokenListener; got: Conn[] }> => {
    const l = await TcpTokenListener.listen(secret, { authTimeoutMs, ack: true });
    listener = l;
    const got: Conn[] = [];
    l.onConnection((c) => {
      got.push(c);
      conns.push(c);
    });
    return { l, got };
  };

  const until = async (cond: () => boolean, ms = 5000): Promise<void> => {
    const end = Date.now() + ms;
    while (!cond()) {
      if (Date.now() > end) throw new Error('condition not met in time');
      await new Promise((r) => setTimeout(r, 10));
    }
  };

  it('the right secret: ACK, then after COMMIT the connection is handed out; bytes flow both ways', async () => {
    const secret = newSecret();
    const { l, got } = await listen(secret);
    const s = await rawConnect(l.port);
    sockets.push(s);
    s.write(secret);
    assert.deepEqual([...(await readExactly(s, 1, 5000))], [ACK]);
    await new Promise((r) => setTimeout(r, 50));
    assert.equal(got.length, 0, 'handed out before COMMIT');
    s.write(Buffer.concat([Buffer.from([COMMIT]), Buffer.from('hello')]));
    await until(() => got.length === 1);
    assert.equal((await readExactly(got[0]!.stream, 5, 5000)).toString(), 'hello');
    got[0]!.stream.write('back');
    assert.equal((await readExactly(s, 4, 5000)).toString(), 'back');
    assert.equal(l.rejected, 0);
  });

  it('dialTcpTokenAck: ACK + COMMIT, the connection is ready for the protocol at once', async () => {
    const secret = newSecret();
    const { l, got } = await listen(secret);
    const c = await dialTcpTokenAck('127.0.0.1', l.port, secret, { timeoutMs: 5000 });
    conns.push(c);
    c.stream.write('ping');
    await until(() => got.length === 1);
    assert.equal((await readExactly(got[0]!.stream, 4, 5000)).toString(), 'ping');
  });

  it('a wrong secret: closed without a byte of answer, never handed out', async () => {
    const { l, got } = await listen(newSecret());
    const s = await rawConnect(l.port);
    sockets.push(s);
    const closed = closedByPeer(s);
    s.write(newSecret());
    assert.equal((await closed).length, 0, 'the listener must not answer');
    assert.equal(got.length, 0);
    assert.equal(l.rejected, 1);
  });

  it('a short secret then EOF: closed without an answer', async () => {
    const { l, got } = await listen(newSecret());
    const s = await rawConnect(l.port);
    sockets.push(s);
    const closed = closedByPeer(s);
    s.end(Buffer.alloc(SECRET_LENGTH - 1, 1));
    assert.equal((await closed).length, 0);
    assert.equal(got.length, 0);
    await until(() => l.rejected === 1);
  });

  it('a slow secret: closed at the auth deadline without an answer', async () => {
    const secret = newSecret();
    const { l, got } = await listen(secret, 300);
    const s = await rawConnect(l.port);
    sockets.push(s);
    const t0 = Date.now();
    const closed = closedByPeer(s);
    s.write(secret.subarray(0, 10));
    setTimeout(() => s.destroyed || s.write(secret.subarray(10)), 600);
    assert.equal((await closed).length, 0);
    assert.ok(Date.now() - t0 >= 250, `closed too early (${Date.now() - t0} ms)`);
    assert.equal(got.length, 0);
    assert.equal(l.rejected, 1);
  });

  it('ACK but no COMMIT (the dialer gave up): closed, never handed out', async () => {
    const secret = newSecret();
    const { l, got } = await listen(secret, 300);
    const s = await rawConnect(l.port);
    sockets.push(s);
    const closed = closedByPeer(s);
    s.write(secret);
    assert.deepEqual([...(await closed)], [ACK]);
    assert.equal(got.length, 0);
    // and a dialer closing right after the ACK is not handed out either
    const s2 = await rawConnect(l.port);
    s2.write(secret);
    await readExactly(s2, 1, 5000);
    s2.destroy();
    await new Promise((r) => setTimeout(r, 100));
    assert.equal(got.length, 0);
  });

  it('dialTcpTokenAck retries while connections are accepted then dropped (slirp before the guest listens)', async () => {
    const secret = newSecret();
    const { l, got } = await listen(secret);
    // A front that accepts every connection; the first three are dropped at once, the fourth silently held
    // (no ACK: the attempt times out), the rest piped to the real listener.
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
    const c = await dialTcpTokenAck('127.0.0.1', port, secret, { timeoutMs: 10_000, attemptTimeoutMs: 300 });
    conns.push(c);
    assert.equal(n, 5);
    assert.ok(Date.now() - t0 >= 300, 'the held attempt must have timed out');
    c.stream.write('ok');
    await until(() => got.length === 1);
    assert.equal((await readExactly(got[0]!.stream, 2, 5000)).toString(), 'ok');
  });

  it('dialTcpTokenAck gives up at the deadline (wrong secret: never acked) and when aborted', async () => {
    const { l } = await listen(newSecret());
    const t0 = Date.now();
    await assert.rejects(dialTcpTokenAck('127.0.0.1', l.port, newSecret(), { timeoutMs: 500 }), /no ACK within 500/);
    assert.ok(Date.now() - t0 < 3000);
    assert.ok(l.rejected >= 1);
    let calls = 0;
    await assert.rejects(
      dialTcpTokenAck('127.0.0.1', l.port, newSecret(), {
        timeoutMs: 10_000,
        abort: () => (++calls > 2 ? 'QEMU exited' : undefined),
      }),
      /QEMU exited/,
    );
    // nothing listening at all: refused connections are retried too, until the deadline
    const srv = createServer();
    await new Promise<void>((r) => srv.listen(0, '127.0.0.1', r));
    const dead = (srv.address() as { port: number }).port;
    await new Promise<void>((r) => srv.close(() => r()));
    await assert.rejects(dialTcpTokenAck('127.0.0.1', dead, newSecret(), { timeoutMs: 300 }), /no ACK within 300/);
  });

  it('a secret source is read at every handshake (a UVM clone gets a new secret after restore)', async () => {
    let current = newSecret();
    const old = current;
    const l = await TcpTokenListener.listen(() => current, { ack: true });
    listener = l;
    const got: Conn[] = [];
    l.onConnection((c) => {
      got.push(c);
      conns.push(c);
    });
    const first = await dialTcpTokenAck('127.0.0.1', l.port, old, { timeoutMs: 5000 });
    conns.push(first);
    current = newSecret();
    await assert.rejects(
      dialTcpTokenAck('127.0.0.1', l.port, old, { timeoutMs: 500, attemptTimeoutMs: 200 }),
      /no ACK/,
    );
    const second = await dialTcpTokenAck('127.0.0.1', l.port, current, { timeoutMs: 5000 });
    conns.push(second);
    await until(() => got.length === 2);
    assert.ok(l.rejected >= 1);
  });

  it('listens on the given host; the URL says so', async () => {
    const l = await TcpTokenListener.listen(newSecret(), { host: '127.0.0.1', ack: true });
    listener = l;
    assert.equal(l.url, `tcp+token://127.0.0.1:${l.port}`);
  });
});
