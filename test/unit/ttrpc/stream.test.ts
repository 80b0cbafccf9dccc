import { strict as assert } from 'node:assert';
import { Code, RECEIVE_QUEUE_HIGH_WATER, TtrpcError, type TtrpcStream } from '../../../src/ttrpc/index.js';
import { bytes, sleep, startServer, text, type Fixture } from './fixtures.js';

describe('ttrpc streaming', () => {
  let fx: Fixture;
  /** How many messages the slow-reader handler has received so far. */
  let slowReceived = 0;
  let releaseSlow: () => void = () => undefined;
  let fastSent = 0;

  before(async () => {
    fx = await startServer((s) => {
      // Client streaming: sum of all numbers sent, as the final response.
      s.registerStream(
        'test.Stream',
        'Sum',
        async (stream) => {
          let sum = 0;
          for await (const msg of stream) sum += Number(text(msg));
          return bytes(String(sum));
        },
        { streamingClient: true, streamingServer: false },
      );
      // Server streaming: the request says how many messages to send.
      s.registerStream(
        'test.Stream',
        'Count',
        async (stream) => {
          const first = await stream.recv();
          const n = Number(text(first!));
          for (let i = 0; i < n; i++) await stream.send(bytes(String(i)));
        },
        { streamingClient: false, streamingServer: true },
      );
      // Bidi: echo each message upper-cased, then end.
      s.registerStream('test.Stream', 'Upper', async (stream) => {
        for await (const msg of stream) await stream.send(bytes(text(msg).toUpperCase()));
      });
      // Bidi that fails halfway.
      s.registerStream('test.Stream', 'FailAfterOne', async (stream) => {
        await stream.recv();
        await stream.send(bytes('one'));
        throw new TtrpcError(Code.ABORTED, 'stopped');
      });
      // Reads nothing until released: the client's sends must block instead of piling up.
      s.registerStream(
        'test.Stream',
        'SlowReader',
        async (stream) => {
          await new Promise<void>((resolve) => (releaseSlow = resolve));
          for await (const _ of stream) slowReceived++;
          return bytes(String(slowReceived));
        },
        { streamingClient: true, streamingServer: false },
      );
      // Writes as fast as the socket allows, 64 KiB per message.
      s.registerStream(
        'test.Stream',
        'Firehose',
        async (stream) => {
          const chunk = new Uint8Array(64 * 1024);
          for (let i = 0; i < 400; i++) {
            await stream.send(chunk);
            fastSent++;
          }
        },
        { streamingClient: false, streamingServer: true },
      );
    });
  });
  after(() => fx.teardown());

  it('client streaming: many messages in, one response out', async () => {
    const client = await fx.connect();
    const s = client.stream('test.Stream', 'Sum');
    for (let i = 1; i <= 100; i++) await s.send(bytes(String(i)));
    await s.closeSend();
    assert.equal(text(await s.response), '5050');
    await assert.rejects(s.send(bytes('1')));
  });

  it('server streaming: one request in, messages out, then end', async () => {
    const client = await fx.connect();
    const s = client.stream('test.Stream', 'Count', { streamingClient: false, request: bytes('250') });
    const got: string[] = [];
    for await (const msg of s) got.push(text(msg));
    assert.equal(got.length, 250);
    assert.equal(got[249], '249');
    assert.equal((await s.response).length, 0);
    await assert.rejects(s.send(bytes('x')), { code: Code.FAILED_PRECONDITION });
  });

  it('bidi: interleaved send and receive', async () => {
    const client = await fx.connect();
    const s = client.stream('test.Stream', 'Upper');
    for (const word of ['ab', 'cd', 'ef']) {
      await s.send(bytes(word));
      assert.equal(text((await s.recv())!), word.toUpperCase());
    }
    await s.closeSend();
    assert.equal(await s.recv(), undefined);
    await s.response;
  });

  it('many streams share one connection', async () => {
    const client = await fx.connect();
    const runs = Array.from({ length: 20 }, async (_, i) => {
      const s = client.stream('test.Stream', 'Upper');
      const out: string[] = [];
      for (let j = 0; j < 10; j++) {
        await s.send(bytes(`s${i}m${j}`));
        out.push(text((await s.recv())!));
      }
      await s.closeSend();
      return out;
    });
    const results = await Promise.all(runs);
    results.forEach((out, i) =>
      assert.deepEqual(
        out,
        Array.from({ length: 10 }, (_, j) => `S${i}M${j}`),
      ),
    );
  });

  it('delivers an error after the messages sent before it', async () => {
    const client = await fx.connect();
    const s = client.stream('test.Stream', 'FailAfterOne');
    await s.send(bytes('x'));
    assert.equal(text((await s.recv())!), 'one');
    await assert.rejects(s.recv(), { code: Code.ABORTED, message: 'stopped' });
    await assert.rejects(s.response, { code: Code.ABORTED });
  });

  it('a slow server reader makes the client sender wait instead of buffering without bound', async () => {
    const client = await fx.connect();
    const s = client.stream('test.Stream', 'SlowReader');
    const chunk = new Uint8Array(64 * 1024);
    let sent = 0;
    let stop = false;
    const sender = (async () => {
      while (!stop && sent < 2000) {
        await s.send(chunk);
        sent++;
      }
    })();
    await sleep(300);
    const sentWhileStalled = sent;
    // 2000 x 64 KiB = 125 MiB would go through if nothing pushed back; the socket buffers and the server's
    // bounded receive queue hold only a few MiB.
    assert.ok(sentWhileStalled < 200, `sender got ${sentWhileStalled} messages out while the reader was stalled`);
    assert.ok(sentWhileStalled >= RECEIVE_QUEUE_HIGH_WATER, `only ${sentWhileStalled} sent: the queue was not used`);
    stop = true;
    releaseSlow();
    await sender;
    await s.closeSend();
    assert.equal(Number(text(await s.response)), sent);
  });

  it('a slow client reader makes the server sender wait', async () => {
    const client = await fx.connect();
    fastSent = 0;
    const s = client.stream('test.Stream', 'Firehose', { streamingClient: false, request: new Uint8Array(0) });
    await sleep(300);
    assert.ok(fastSent < 200, `server sent ${fastSent} x 64 KiB to a client that reads nothing`);
    assert.ok(fastSent > 0);
    let received = 0;
    for await (const msg of s) {
      assert.equal(msg.length, 64 * 1024);
      received++;
    }
    assert.equal(received, 400);
  });

  it('a stream closed by the connection fails with Unavailable on both sides', async () => {
    let serverStream: TtrpcStream | undefined;
    const local = await startServer((s) =>
      s.registerStream('t.S', 'Hold', async (stream) => {
        serverStream = stream;
        await new Promise((resolve) => stream.signal.addEventListener('abort', resolve));
      }),
    );
    try {
      const client = await local.connect();
      const s = client.stream('t.S', 'Hold');
      await s.send(bytes('x'));
      while (!serverStream) await sleep(5);
      client.close();
      await assert.rejects(s.recv(), { code: Code.UNAVAILABLE });
      await assert.rejects(s.response, { code: Code.UNAVAILABLE });
      await sleep(20);
      assert.ok(serverStream.signal.aborted);
      await assert.rejects(serverStream.send(bytes('y')), { code: Code.UNAVAILABLE });
    } finally {
      await local.teardown();
    }
  });
});
