import { strict as assert } from 'node:assert';
import * as net from 'node:net';
import { join } from 'node:path';
import { setTimeout as delay } from 'node:timers/promises';
import { create, fromBinary, toBinary } from '@bufbuild/protobuf';
import { EmptySchema, timestampFromDate } from '@bufbuild/protobuf/wkt';
import {
  Events,
  ForwardRequestSchema,
  type ForwardRequest,
} from '../../../src/gen/containerd/services/events/ttrpc/v1/events_pb.js';
import {
  Code,
  createClient,
  Metadata,
  NAMESPACE_KEY,
  TtrpcClient,
  TtrpcError,
  type CallContext,
} from '../../../src/ttrpc/index.js';
import { decodeResponse, encodeRequestFrame, encodeResponseFrame } from '../../../src/ttrpc/envelope.js';
import { decodeStatus } from '../../../src/ttrpc/errors.js';
import { bytes, collectFrames, sleep, startServer, text, type Fixture } from './fixtures.js';

describe('ttrpc client <-> server (unix socket)', () => {
  let fx: Fixture;
  const seen: CallContext[] = [];
  const hangAborts: unknown[] = [];
  let delaysRunning = 0;
  let maxDelaysRunning = 0;

  before(async () => {
    fx = await startServer(
      (s) => {
        s.register('test.Echo', 'Echo', async (p) => p);
        // Answers after the number of milliseconds in the payload: later calls finish first.
        s.register('test.Echo', 'Delay', async (p, ctx) => {
          delaysRunning++;
          maxDelaysRunning = Math.max(maxDelaysRunning, delaysRunning);
          await sleep(Number(text(p)));
          delaysRunning--;
          seen.push(ctx);
          return bytes(`${text(p)}:${ctx.streamId}`);
        });
        s.register('test.Echo', 'Context', async (_p, ctx) =>
          bytes(
            JSON.stringify({
              ns: ctx.namespace ?? null,
              md: ctx.metadata.toJSON(),
              deadlineIn: ctx.deadline === undefined ? null : ctx.deadline - Date.now(),
            }),
          ),
        );
        s.register('test.Echo', 'Fail', async (p) => {
          const [code, msg] = text(p).split('|');
          throw new TtrpcError(Number(code), msg!);
        });
        s.register('test.Echo', 'Throw', async () => {
          throw new Error('plain failure');
        });
        s.register('test.Echo', 'ThrowSync', (() => {
          throw new RangeError('sync failure');
        }) as never);
        s.register('test.Echo', 'Domain', async () => {
          throw Object.assign(new Error('no such container'), { domain: 'notfound' });
        });
        // Ignores the deadline and its signal on purpose: the server must answer DeadlineExceeded itself.
        s.register('test.Echo', 'Hang', async (_p, ctx) => {
          try {
            await delay(3000, undefined, { signal: ctx.signal });
          } catch {
            hangAborts.push(ctx.signal.reason);
          }
          return bytes('late');
        });
      },
      {
        errorMapper: (err) =>
          (err as { domain?: string }).domain === 'notfound'
            ? new TtrpcError(Code.NOT_FOUND, (err as Error).message)
            : TtrpcError.from(err),
      },
    );
  });
  after(() => fx.teardown());

  it('answers many concurrent calls out of order, each with its own result', async () => {
    const client = await fx.connect();
    const delays = Array.from({ length: 50 }, (_, i) => (50 - i) % 17);
    const results = await Promise.all(delays.map((d) => client.call('test.Echo', 'Delay', bytes(String(d)))));
    for (let i = 0; i < delays.length; i++) {
      const [d, id] = text(results[i]!).split(':');
      assert.equal(Number(d), delays[i]);
      assert.equal(Number(id), 2 * i + 1, 'odd stream ids from 1, step 2');
    }
    // Concurrent, not serial: the handlers ran side by side (measured by the server, not by the clock).
    assert.ok(maxDelaysRunning > 1, `at most ${maxDelaysRunning} handler ran at a time`);
    // Completion order differed from issue order.
    const completionIds = seen.slice(-50).map((c) => c.streamId);
    assert.notDeepEqual(
      completionIds,
      [...completionIds].sort((a, b) => a - b),
    );
  });

  it('echoes payloads byte for byte, including empty and 1 MiB', async () => {
    const client = await fx.connect();
    assert.equal((await client.call('test.Echo', 'Echo', new Uint8Array(0))).length, 0);
    const big = new Uint8Array(1 << 20).map((_, i) => (i * 31) & 0xff);
    assert.deepEqual(Buffer.from(await client.call('test.Echo', 'Echo', big)), Buffer.from(big));
  });

  it('passes metadata (lower-cased, multi-valued), the namespace and the deadline', async () => {
    const client = await fx.connect();
    const md = new Metadata({ [NAMESPACE_KEY]: 'k8s.io', 'X-Multi': ['a', 'b'] });
    const out = JSON.parse(
      text(await client.call('test.Echo', 'Context', new Uint8Array(0), { metadata: md, timeoutMs: 5000 })),
    );
    assert.equal(out.ns, 'k8s.io');
    assert.deepEqual(out.md['x-multi'], ['a', 'b']);
    assert.ok(out.deadlineIn > 4000 && out.deadlineIn <= 5000, `deadline in ${out.deadlineIn} ms`);
    const none = JSON.parse(text(await client.call('test.Echo', 'Context', new Uint8Array(0))));
    assert.equal(none.ns, null);
    assert.equal(none.deadlineIn, null);
  });

  it('round-trips error codes and messages', async () => {
    const client = await fx.connect();
    for (const code of [
      Code.NOT_FOUND,
      Code.ALREADY_EXISTS,
      Code.FAILED_PRECONDITION,
      Code.UNAUTHENTICATED,
      Code.CANCELLED,
    ]) {
      await assert.rejects(client.call('test.Echo', 'Fail', bytes(`${code}|msg ${code}`)), (err: unknown) => {
        assert.ok(err instanceof TtrpcError);
        assert.equal(err.code, code);
        assert.equal(err.message, `msg ${code}`);
        return true;
      });
    }
    await assert.rejects(client.call('test.Echo', 'Throw', new Uint8Array(0)), {
      code: Code.UNKNOWN,
      message: 'plain failure',
    });
    await assert.rejects(client.call('test.Echo', 'ThrowSync', new Uint8Array(0)), {
      code: Code.UNKNOWN,
      message: 'sync failure',
    });
    await assert.rejects(client.call('test.Echo', 'Domain', new Uint8Array(0)), {
      code: Code.NOT_FOUND,
      message: 'no such container',
    });
    // The connection still serves after errors.
    assert.equal(text(await client.call('test.Echo', 'Echo', bytes('ok'))), 'ok');
  });

  it('answers Unimplemented for an unknown service or method', async () => {
    const client = await fx.connect();
    await assert.rejects(client.call('no.Such', 'Echo', new Uint8Array(0)), {
      code: Code.UNIMPLEMENTED,
      message: 'service no.Such',
    });
    await assert.rejects(client.call('test.Echo', 'Nope', new Uint8Array(0)), {
      code: Code.UNIMPLEMENTED,
      message: 'method Nope',
    });
  });

  it('honours timeout_nano: the server answers DeadlineExceeded and aborts the handler signal', async () => {
    // Raw frames, so that no client-side timer is involved: only the server can produce the answer.
    const sock = await fx.raw();
    const started = Date.now();
    const answer = collectFrames(sock, 1);
    const frame = encodeRequestFrame(1, 0, {
      service: 'test.Echo',
      method: 'Hang',
      payload: new Uint8Array(0),
      timeoutNano: 100e6,
    });
    sock.write(frame.head);
    const [resp] = await answer;
    // Not before the deadline; that the answer came from the server's timer is what the status says.
    const took = Date.now() - started;
    assert.ok(took >= 95, `took ${took} ms`);
    assert.equal(resp!.type, 2);
    const status = decodeStatus(decodeResponse(resp!.data).status!);
    assert.equal(status.code, Code.DEADLINE_EXCEEDED);
    await sleep(10);
    assert.equal(hangAborts.length, 1, `the handler saw its signal abort: ${String(hangAborts)}`);
    assert.ok(hangAborts[0] instanceof TtrpcError && hangAborts[0].code === Code.DEADLINE_EXCEEDED);
  });

  it('gives the same DeadlineExceeded through the client API', async () => {
    const client = await fx.connect();
    await assert.rejects(client.call('test.Echo', 'Hang', new Uint8Array(0), { timeoutMs: 50 }), {
      code: Code.DEADLINE_EXCEEDED,
    });
  });

  it('times out on the client when the server never answers in time, and drops the late answer', async () => {
    // A hand-driven peer: answers stream 1 only after 300 ms, and stream 3 at once.
    const path = join(fx.dir, 'slow.sock');
    const peer = net.createServer((sock) => {
      sock.on('data', (chunk: Buffer) => {
        for (let off = 0; off < chunk.length; off += 10 + chunk.readUInt32BE(off)) {
          const id = chunk.readUInt32BE(off + 4);
          const answer = encodeResponseFrame(id, undefined, bytes(`answer ${id}`)).head;
          if (id === 1) setTimeout(() => sock.write(answer), 300);
          else sock.write(answer);
        }
      });
    });
    await new Promise<void>((resolve) => peer.listen(path, resolve));
    try {
      const client = await TtrpcClient.connect(path);
      fx.clients.push(client);
      const started = Date.now();
      await assert.rejects(client.call('s', 'm', new Uint8Array(0), { timeoutMs: 50 }), {
        code: Code.DEADLINE_EXCEEDED,
      });
      // Rejected, not answered: the client's timer fired before the peer's 300 ms answer (no upper bound on the
      // clock, which a loaded host cannot promise).
      const took = Date.now() - started;
      assert.ok(took >= 45, `took ${took} ms`);
      await sleep(350); // the late answer for stream 1 arrives now and must be ignored
      assert.equal(text(await client.call('s', 'm', new Uint8Array(0))), 'answer 3');
      client.close();
    } finally {
      await new Promise((resolve) => peer.close(resolve));
    }
  });

  it('cancels a call with an AbortSignal', async () => {
    const client = await fx.connect();
    const ac = new AbortController();
    const p = client.call('test.Echo', 'Delay', bytes('300'), { signal: ac.signal });
    setTimeout(() => ac.abort(), 20);
    await assert.rejects(p, { code: Code.CANCELLED });
  });

  it('rejects pending calls with Unavailable when the client closes, and fires onClose', async () => {
    const client = await fx.connect();
    let closed = 0;
    client.onClose(() => closed++);
    const p = client.call('test.Echo', 'Delay', bytes('200'));
    client.close();
    await assert.rejects(p, { code: Code.UNAVAILABLE, message: 'ttrpc: closed' });
    await assert.rejects(client.call('test.Echo', 'Echo', bytes('x')), { code: Code.UNAVAILABLE });
    assert.equal(closed, 1);
  });

  it('notifies the client when the server goes away', async () => {
    const other = await startServer((s) => s.register('a.B', 'C', async () => new Uint8Array(0)));
    const client = await other.connect();
    const closed = new Promise<void>((resolve) => client.onClose(() => resolve()));
    await other.server.close();
    await closed;
    assert.ok(client.closed);
    await other.teardown();
  });

  it('binds a protoc-gen-es service (typed server and client)', async () => {
    const typed = await startServer((s) =>
      s.registerService(Events, {
        async forward(req: ForwardRequest, ctx: CallContext) {
          if (req.envelope?.topic !== '/tasks/exit')
            throw new TtrpcError(Code.INVALID_ARGUMENT, `topic ${req.envelope?.topic}`);
          assert.equal(ctx.namespace, 'default');
          return {};
        },
      }),
    );
    try {
      const events = createClient(Events, await typed.connect());
      const md = { [NAMESPACE_KEY]: 'default' };
      const reply = await events.forward(
        { envelope: { timestamp: timestampFromDate(new Date()), namespace: 'default', topic: '/tasks/exit' } },
        { metadata: md },
      );
      assert.equal(reply.$typeName, 'google.protobuf.Empty');
      await assert.rejects(events.forward({ envelope: { topic: '/x' } }, { metadata: md }), {
        code: Code.INVALID_ARGUMENT,
        message: 'topic /x',
      });
      // A malformed request payload is the caller's fault.
      const raw = await typed.connect();
      await assert.rejects(raw.call(Events.typeName, 'Forward', Uint8Array.of(0x0a, 0x05, 0x01)), {
        code: Code.INVALID_ARGUMENT,
      });
      // The typed client encodes exactly what the generated codec would.
      const bytesOut = toBinary(ForwardRequestSchema, create(ForwardRequestSchema, { envelope: { topic: '/a' } }));
      assert.equal(fromBinary(ForwardRequestSchema, bytesOut).envelope?.topic, '/a');
      assert.equal(toBinary(EmptySchema, create(EmptySchema)).length, 0);
    } finally {
      await typed.teardown();
    }
  });
});
