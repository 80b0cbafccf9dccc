// QmpClient against a fake QMP server on a unix socket: greeting, capabilities negotiation, command/response
// matching by id (out of order too), events, error responses, timeouts and a closing server. No QEMU.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeSync } from 'node:fs';
import { createServer, type Server, type Socket } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { QmpClient, QmpError } from '../../../src/sandbox/qemu/qmp.js';

type Msg = { execute: string; arguments?: Record<string, unknown>; id?: string };

interface Fake {
  path: string;
  server: Server;
  received: Msg[];
  sockets: Socket[];
}

/**
 * A QMP server: sends the greeting (unless `greet` is false), answers qmp_capabilities, then hands every
 * other command to `handle` (which writes whatever it likes to the socket).
 */
async function fakeQmp(
  dir: string,
  handle: (m: Msg, s: Socket) => void,
  opts: { greet?: boolean; capsError?: boolean } = {},
): Promise<Fake> {
  const path = join(dir, `qmp-${Math.random().toString(16).slice(2)}.sock`);
  const received: Msg[] = [];
  const sockets: Socket[] = [];
  const server = createServer((s) => {
    sockets.push(s);
    s.on('error', () => undefined);
    if (opts.greet !== false)
      s.write(
        JSON.stringify({ QMP: { version: { qemu: { major: 7, minor: 2, micro: 0 } }, capabilities: [] } }) + '\r\n',
      );
    let buf = '';
    s.setEncoding('utf8');
    s.on('data', (d: string) => {
      buf += d;
      let nl: number;
      while ((nl = buf.indexOf('\n')) >= 0) {
        const m = JSON.parse(buf.slice(0, nl)) as Msg;
        buf = buf.slice(nl + 1);
        received.push(m);
        if (m.execute === 'qmp_capabilities') {
          if (opts.capsError)
            s.write(JSON.stringify({ error: { class: 'CommandNotFound', desc: 'nope' }, id: m.id }) + '\r\n');
          else s.write(JSON.stringify({ return: {}, id: m.id }) + '\r\n');
        } else handle(m, s);
      }
    });
  });
  await new Promise<void>((r) => server.listen(path, r));
  return { path, server, received, sockets };
}

describe('sandbox/qemu: QMP client', function () {
  this.timeout(20_000);
  let dir: string;
  const fakes: Fake[] = [];
  const clients: QmpClient[] = [];

  beforeEach(() => {
    dir = mkdtempSync(join(tmpdir(), 'lcow-qmp-'));
  });
  afterEach(async () => {
    for (const c of clients.splice(0)) c.close();
    for (const f of fakes.splice(0)) {
      for (const s of f.sockets) s.destroy();
      await new Promise((r) => f.server.close(r));
    }
    rmSync(dir, { recursive: true, force: true });
  });

  const start = async (handle: (m: Msg, s: Socket) => void, opts?: { greet?: boolean; capsError?: boolean }) => {
    const f = await fakeQmp(dir, handle, opts);
    fakes.push(f);
    return f;
  };
  const connect = async (path: string, timeoutMs?: number): Promise<QmpClient> => {
    const c = await QmpClient.connect(path, timeoutMs);
    clients.push(c);
    return c;
  };

  it('waits for the greeting, negotiates capabilities first, then runs commands', async () => {
    const f = await start((m, s) => {
      if (m.execute === 'query-status')
        s.write(JSON.stringify({ return: { status: 'running', running: true }, id: m.id }) + '\r\n');
    });
    const c = await connect(f.path);
    assert.equal(f.received[0]?.execute, 'qmp_capabilities');
    assert.deepEqual(await c.status(), { status: 'running', running: true });
    assert.deepEqual(
      f.received.map((m) => m.execute),
      ['qmp_capabilities', 'query-status'],
    );
    // Every command carries a distinct id.
    assert.notEqual(f.received[0]?.id, f.received[1]?.id);
  });

  it('executeWithFd: the command goes out through the fd-passing writer (a partial send is completed)', async () => {
    const f = await start((m, s) => {
      if (m.execute === 'getfd') s.write(JSON.stringify({ return: {}, id: m.id }) + '\r\n');
    });
    const c = await connect(f.path);
    const sent: Array<{ fd: number; bytes: string }> = [];
    // As sendmsg(2) may: the first 5 bytes go with the fd, the client writes the rest itself.
    const r = await c.executeWithFd('getfd', { fdname: 'podnet0' }, (sockFd, bytes) => {
      sent.push({ fd: sockFd, bytes: bytes.toString() });
      return writeSync(sockFd, bytes.subarray(0, 5));
    });
    assert.deepEqual(r, {});
    assert.equal(sent.length, 1);
    assert.ok(sent[0]!.fd > 2, 'the QMP socket fd');
    assert.deepEqual(f.received.at(-1), {
      execute: 'getfd',
      arguments: { fdname: 'podnet0' },
      id: f.received.at(-1)?.id,
    });
    // A writer that throws rejects the command and leaves the client usable.
    await assert.rejects(
      c.executeWithFd('getfd', { fdname: 'x' }, () => {
        throw new Error('sendmsg: EBADF');
      }),
      /EBADF/,
    );
  });

  it('retries while the socket does not exist yet', async () => {
    const late = join(dir, 'late.sock');
    const p = QmpClient.connect(late, 5000);
    await new Promise((r) => setTimeout(r, 300));
    const server = createServer((s) => {
      s.on('error', () => undefined);
      s.write('{"QMP": {"version": {}, "capabilities": []}}\r\n');
      s.on('data', (d) => {
        const m = JSON.parse(d.toString()) as Msg;
        s.write(JSON.stringify({ return: {}, id: m.id }) + '\r\n');
      });
      fakes.push({ path: late, server, received: [], sockets: [s] });
    });
    await new Promise<void>((r) => server.listen(late, r));
    const c = await p;
    clients.push(c);
    if (!fakes.some((f) => f.server === server)) fakes.push({ path: late, server, received: [], sockets: [] });
  });

  it('matches responses to commands by id, also out of order, and passes arguments', async () => {
    const held: Array<[Msg, Socket]> = [];
    const f = await start((m, s) => {
      held.push([m, s]);
      if (held.length === 2) {
        // Answer the second first.
        for (const [hm, hs] of [...held].reverse())
          hs.write(JSON.stringify({ return: { echo: hm.arguments?.['n'] }, id: hm.id }) + '\r\n');
      }
    });
    const c = await connect(f.path);
    const [a, b] = await Promise.all([c.execute('echo', { n: 1 }), c.execute('echo', { n: 2 })]);
    assert.deepEqual(a, { echo: 1 });
    assert.deepEqual(b, { echo: 2 });
  });

  it('collects events interleaved with responses (split across writes too)', async () => {
    const f = await start((m, s) => {
      const ev = JSON.stringify({ event: 'STOP', timestamp: { seconds: 1, microseconds: 2 } });
      const reply = JSON.stringify({ return: {}, id: m.id });
      const all = `${ev}\r\n${JSON.stringify({ event: 'SHUTDOWN', data: { guest: true, reason: 'guest-shutdown' } })}\r\n${reply}\r\n`;
      s.write(all.slice(0, 17));
      setTimeout(() => s.write(all.slice(17)), 20);
    });
    const c = await connect(f.path);
    await c.execute('system_powerdown');
    assert.deepEqual(
      c.events.map((e) => e.event),
      ['STOP', 'SHUTDOWN'],
    );
    assert.deepEqual(c.events[1]?.data, { guest: true, reason: 'guest-shutdown' });
  });

  it('an error response rejects with QmpError carrying class and description', async () => {
    const f = await start((m, s) =>
      s.write(JSON.stringify({ error: { class: 'GenericError', desc: 'no such thing' }, id: m.id }) + '\r\n'),
    );
    const c = await connect(f.path);
    await assert.rejects(
      c.execute('bogus'),
      (e: Error) => e instanceof QmpError && /GenericError: no such thing/.test(e.message),
    );
  });

  it('ignores garbage lines and responses with unknown ids', async () => {
    const f = await start((m, s) => {
      s.write('not json\r\n');
      s.write(JSON.stringify({ return: { wrong: true }, id: 'nope' }) + '\r\n');
      s.write(JSON.stringify({ return: { right: true }, id: m.id }) + '\r\n');
    });
    const c = await connect(f.path);
    assert.deepEqual(await c.execute('x'), { right: true });
  });

  it('a command with no answer times out', async () => {
    const f = await start(() => undefined);
    const c = await connect(f.path);
    await assert.rejects(c.execute('quit', undefined, 200), /timed out/);
  });

  it('the server closing rejects pending and later commands', async () => {
    const f = await start((_m, s) => s.destroy());
    const c = await connect(f.path);
    await assert.rejects(c.execute('quit'), /closed/);
    await assert.rejects(c.execute('query-status'), /closed/);
  });

  it('a capabilities error fails connect', async () => {
    const f = await start(() => undefined, { capsError: true });
    await assert.rejects(QmpClient.connect(f.path, 200), /CommandNotFound/);
  });

  it('no greeting fails connect', async () => {
    const f = await start(() => undefined, { greet: false });
    await assert.rejects(QmpClient.connect(f.path, 100), /no QMP greeting/);
  });
});
