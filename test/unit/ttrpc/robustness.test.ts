import { strict as assert } from 'node:assert';
import { decodeResponse, encodeRequestFrame } from '../../../src/ttrpc/envelope.js';
import { decodeStatus } from '../../../src/ttrpc/errors.js';
import { encodeFrame, FrameType, MAX_DATA_LENGTH } from '../../../src/ttrpc/frame.js';
import { Code, TtrpcError } from '../../../src/ttrpc/index.js';
import { bytes, collectFrames, sleep, startServer, text, type Fixture } from './fixtures.js';

function request(id: number, method = 'Echo', payload = bytes('hi')): Buffer {
  const f = encodeRequestFrame(id, 0, { service: 'test.Echo', method, payload });
  return f.tail ? Buffer.concat([f.head, f.tail]) : f.head;
}

function statusOf(frame: { type: number; data: Buffer }): { code: number; message: string } {
  assert.equal(frame.type, FrameType.RESPONSE);
  const resp = decodeResponse(frame.data);
  if (!resp.status) return { code: 0, message: '' };
  const st = decodeStatus(resp.status);
  return { code: st.code, message: st.message };
}

describe('ttrpc server robustness (untrusted peers)', () => {
  let fx: Fixture;
  let releaseSlow: () => void = () => undefined;
  let slowRunning = false;

  /** Waits for a handler to be running: a fixed sleep races with a loaded machine. */
  async function until(cond: () => boolean, what: string): Promise<void> {
    for (let i = 0; i < 1000 && !cond(); i++) await sleep(5);
    assert.ok(cond(), what);
  }

  beforeEach(async () => {
    slowRunning = false;
    fx = await startServer(
      (s) => {
        s.register('test.Echo', 'Echo', async (p) => p);
        s.register('test.Echo', 'Slow', async () => {
          slowRunning = true;
          await new Promise<void>((resolve) => (releaseSlow = resolve));
          return bytes('slow done');
        });
      },
      { maxInFlightPerConnection: 4 },
    );
  });
  afterEach(() => fx.teardown());

  it('answers an oversized frame with ResourceExhausted on that stream; the connection keeps working', async () => {
    const sock = await fx.raw();
    const frames = collectFrames(sock, 2, 5000);
    const big = MAX_DATA_LENGTH + 1;
    const header = Buffer.alloc(10);
    header.writeUInt32BE(big, 0);
    header.writeUInt32BE(1, 4);
    header[8] = FrameType.REQUEST;
    sock.write(header);
    // The body goes out in pieces; the server must skip it, not hold it.
    for (let off = 0; off < big; off += 1 << 20) sock.write(Buffer.alloc(Math.min(1 << 20, big - off)));
    sock.write(request(3));
    const [first, second] = await frames;
    assert.equal(first!.streamId, 1);
    assert.deepEqual(statusOf(first!), {
      code: Code.RESOURCE_EXHAUSTED,
      message: `message length ${big} exceed maximum message size of ${MAX_DATA_LENGTH}`,
    });
    assert.equal(second!.streamId, 3);
    assert.equal(text(decodeResponse(second!.data).payload), 'hi');
  });

  it('client: an oversized payload is refused locally with ResourceExhausted', async () => {
    const client = await fx.connect();
    await assert.rejects(client.call('test.Echo', 'Echo', new Uint8Array(MAX_DATA_LENGTH + 1)), {
      code: Code.RESOURCE_EXHAUSTED,
    });
    assert.equal(text(await client.call('test.Echo', 'Echo', bytes('still fine'))), 'still fine');
  });

  it('server: a response too large to send becomes ResourceExhausted instead of a hang', async () => {
    fx.server.register('test.Echo', 'Huge', async () => new Uint8Array(MAX_DATA_LENGTH + 10));
    const client = await fx.connect();
    await assert.rejects(client.call('test.Echo', 'Huge', new Uint8Array(0)), { code: Code.RESOURCE_EXHAUSTED });
  });

  it('answers a malformed Request envelope with InvalidArgument', async () => {
    const sock = await fx.raw();
    const frames = collectFrames(sock, 2);
    sock.write(encodeFrame(1, FrameType.REQUEST, 0, Buffer.from('0a05ab', 'hex')));
    sock.write(request(3));
    const [bad, good] = await frames;
    assert.equal(bad!.streamId, 1);
    const st = statusOf(bad!);
    assert.equal(st.code, Code.INVALID_ARGUMENT);
    assert.match(st.message, /^unmarshal request error/);
    assert.equal(statusOf(good!).code, Code.OK);
  });

  it('enforces odd, increasing client stream ids like Go ttrpc', async () => {
    const sock = await fx.raw();
    const frames = collectFrames(sock, 4);
    sock.write(request(2));
    sock.write(request(5));
    sock.write(request(3));
    sock.write(encodeFrame(99, FrameType.DATA, 0, bytes('x')));
    const got = await frames;
    assert.deepEqual(
      got.map((f) => [f.streamId, statusOf(f).code, statusOf(f).message]).sort((a, b) => Number(a[0]) - Number(b[0])),
      [
        [2, Code.INVALID_ARGUMENT, 'StreamID must be odd for client initiated streams'],
        [3, Code.INVALID_ARGUMENT, 'StreamID cannot be re-used and must increment'],
        [5, Code.OK, ''],
        [99, Code.INVALID_ARGUMENT, 'StreamID is no longer active'],
      ],
    );
  });

  it('closes a connection that sends garbage, while another client keeps being served', async () => {
    const good = await fx.connect();
    const sock = await fx.raw();
    const closed = new Promise<void>((resolve) => sock.on('close', () => resolve()));
    sock.on('error', () => undefined);
    sock.write('GET / HTTP/1.1\r\nHost: x\r\n\r\n');
    await closed;
    assert.equal(text(await good.call('test.Echo', 'Echo', bytes('alive'))), 'alive');
    // And a brand-new connection is accepted too.
    const fresh = await fx.connect();
    assert.equal(text(await fresh.call('test.Echo', 'Echo', bytes('new'))), 'new');
  });

  it('survives random bytes on many connections', async () => {
    for (let i = 0; i < 30; i++) {
      const sock = await fx.raw();
      sock.on('error', () => undefined);
      const junk = Buffer.from(Array.from({ length: 5 + i * 13 }, () => Math.floor(Math.random() * 256)));
      sock.end(junk);
    }
    await sleep(50);
    const client = await fx.connect();
    assert.equal(text(await client.call('test.Echo', 'Echo', bytes('ok'))), 'ok');
  });

  it('bounds calls in flight per connection by pausing reads, then serves the rest', async () => {
    const client = await fx.connect();
    let started = 0;
    let release: Array<() => void> = [];
    fx.server.register('test.Echo', 'Gate', async () => {
      started++;
      await new Promise<void>((resolve) => release.push(resolve));
      return bytes('g');
    });
    const calls = Array.from({ length: 10 }, () => client.call('test.Echo', 'Gate', new Uint8Array(0)));
    await sleep(100);
    assert.equal(started, 4, 'only maxInFlightPerConnection handlers run at once');
    while (started < 10 || release.length > 0) {
      const r = release;
      release = [];
      r.forEach((f) => f());
      await sleep(10);
    }
    assert.deepEqual((await Promise.all(calls)).map(text), Array(10).fill('g'));
  });

  it('graceful shutdown waits for the call in flight, refuses new ones, then closes', async () => {
    const client = await fx.connect();
    const slow = client.call('test.Echo', 'Slow', new Uint8Array(0));
    await until(() => slowRunning, 'the slow handler is running');
    let shutDown = false;
    const shutdown = fx.server.shutdown().then(() => (shutDown = true));
    await sleep(50);
    assert.equal(shutDown, false, 'shutdown must wait for the call in flight');
    await assert.rejects(client.call('test.Echo', 'Echo', bytes('late')), { code: Code.UNAVAILABLE });
    // New connections are refused.
    const refused = await fx.connect().then(
      (c) =>
        c.call('test.Echo', 'Echo', bytes('x')).then(
          () => 'served',
          () => 'refused',
        ),
      () => 'refused',
    );
    assert.equal(refused, 'refused');
    releaseSlow();
    assert.equal(text(await slow), 'slow done');
    await shutdown;
    assert.equal(shutDown, true);
    assert.equal(fx.server.connectionCount, 0);
    await sleep(10);
    assert.ok(client.closed, 'the idle connection was closed');
  });

  it('force close aborts handlers and rejects the client', async () => {
    let aborted: unknown;
    let waiting = false;
    fx.server.register('test.Echo', 'Wait', async (_p, ctx) => {
      waiting = true;
      await new Promise((resolve) => ctx.signal.addEventListener('abort', resolve));
      aborted = ctx.signal.reason;
      return new Uint8Array(0);
    });
    const client = await fx.connect();
    const p = client.call('test.Echo', 'Wait', new Uint8Array(0));
    await until(() => waiting, 'the waiting handler is running');
    await fx.server.close();
    await assert.rejects(p, { code: Code.UNAVAILABLE });
    await sleep(10);
    assert.ok(aborted instanceof TtrpcError && aborted.code === Code.UNAVAILABLE);
  });

  it('graceful shutdown with a timeout force-closes a connection whose call never ends', async () => {
    const client = await fx.connect();
    const slow = client.call('test.Echo', 'Slow', new Uint8Array(0));
    await until(() => slowRunning, 'the slow handler is running');
    const started = Date.now();
    await fx.server.shutdown({ timeoutMs: 100 });
    // Not before the timeout; that it force-closed is what the rejection says.
    const took = Date.now() - started;
    assert.ok(took >= 95, `took ${took} ms`);
    await assert.rejects(slow, { code: Code.UNAVAILABLE });
    releaseSlow();
  });
});
