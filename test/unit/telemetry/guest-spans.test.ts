// The guest's spans on their way to the shim's exporters: the wire form, the host's checks (the guest is
// hostile), the clock offset, and the guest's bounded buffer.
import assert from 'node:assert/strict';
import { create } from '@bufbuild/protobuf';
import { AsyncLocalStorageContextManager } from '@opentelemetry/context-async-hooks';
import { resourceFromAttributes } from '@opentelemetry/resources';
import { InMemorySpanExporter, SimpleSpanProcessor, TracerProvider, type ReadableSpan } from '@opentelemetry/sdk-trace';
import { SpanBatchSchema, SpanSchema, type SpanBatch } from '../../../src/gen/agent/v1/agent_pb.js';
import {
  GuestSpanBuffer,
  relayGuestSpans,
  SPAN_LIMITS,
  spanFromWire,
  spanToWire,
} from '../../../src/telemetry/guest-spans.js';
import {
  installTracing,
  outgoingTraceMetadata,
  shutdownTelemetry,
  withRpcSpan,
  withSpan,
} from '../../../src/telemetry/index.js';
import { Metadata } from '../../../src/ttrpc/index.js';
import { silentLogger } from '../../../src/util/log.js';

const TRACE = '4bf92f3577b34da6a3ce929d0e0e4736';

/** Spans recorded by a real SDK tracer (what the guest's buffer receives). */
async function recordGuestSpans(): Promise<ReadableSpan[]> {
  const exporter = new InMemorySpanExporter();
  installTracing(
    new TracerProvider({ spanProcessors: [new SimpleSpanProcessor({ exporter })] }),
    new AsyncLocalStorageContextManager(),
  );
  await withRpcSpan(
    {
      service: 'lcow.agent.v1.Agent',
      method: 'CreateContainer',
      metadata: new Metadata({ traceparent: `00-${TRACE}-00f067aa0ba902b7-01` }),
    },
    () => withSpan('runc create', { 'runc.container': 'c1', n: 3, ok: true, ratio: 0.5 }, async () => undefined),
  );
  const spans = exporter.getFinishedSpans();
  await shutdownTelemetry();
  return spans;
}

describe('telemetry/guest-spans', () => {
  afterEach(() => shutdownTelemetry());

  it('a span crosses the channel intact, moved onto the host clock', async () => {
    const [runc, rpc] = await recordGuestSpans();
    assert.equal(runc!.name, 'runc create');
    const wire = create(SpanSchema, spanToWire(runc!));
    const resource = resourceFromAttributes({ 'service.name': 'lcow-agent' });
    const offsetNs = 1_500_000_000n; // the guest's clock 1.5 s behind
    const back = spanFromWire(wire, offsetNs, resource, () => true)!;
    assert.ok(back);
    assert.equal(back.name, 'runc create');
    assert.equal(back.spanContext().traceId, TRACE);
    assert.equal(back.spanContext().spanId, runc!.spanContext().spanId);
    assert.equal(back.parentSpanContext?.spanId, rpc!.spanContext().spanId, 'parent kept');
    assert.deepEqual(back.attributes, { 'runc.container': 'c1', n: 3, ok: true, ratio: 0.5 });
    const ms = (t: [number, number]): number => t[0] * 1000 + t[1] / 1e6;
    assert.ok(Math.abs(ms(back.startTime) - ms(runc!.startTime) - 1500) < 0.01, 'start shifted by the offset');
    assert.ok(Math.abs(ms(back.duration) - ms(runc!.duration)) < 0.01, 'duration unchanged');
    assert.equal(back.resource.attributes['service.name'], 'lcow-agent');
  });

  it('the host drops what it must not trust: unknown traces, bad ids, bad times; sizes are cut', () => {
    const resource = resourceFromAttributes({});
    const ok = {
      traceId: Buffer.from(TRACE, 'hex'),
      spanId: Buffer.alloc(8, 1),
      name: 'x'.repeat(10_000),
      startUnixNano: 10n,
      endUnixNano: 20n,
      traceFlags: 1,
      attributes: Array.from({ length: 100 }, (_, i) => ({
        key: `k${i}`,
        value: { case: 'stringValue' as const, value: 'v'.repeat(5000) },
      })),
    };
    const accepted = spanFromWire(create(SpanSchema, ok), 0n, resource, (t) => t === TRACE)!;
    assert.equal(accepted.name.length, SPAN_LIMITS.nameLength);
    assert.equal(Object.keys(accepted.attributes).length, SPAN_LIMITS.attributes);
    assert.equal(String(accepted.attributes.k0).length, SPAN_LIMITS.valueLength);
    const bad = (patch: object): ReadableSpan | undefined =>
      spanFromWire(create(SpanSchema, { ...ok, ...patch }), 0n, resource, (t) => t === TRACE);
    assert.equal(bad({ traceId: Buffer.alloc(16, 7) }), undefined, 'a trace the shim never sent');
    assert.equal(bad({ traceId: Buffer.alloc(15, 7) }), undefined);
    assert.equal(bad({ spanId: Buffer.alloc(4) }), undefined);
    assert.equal(bad({ parentSpanId: Buffer.alloc(3) }), undefined);
    assert.equal(bad({ endUnixNano: 5n }), undefined, 'ends before it starts');
    assert.equal(bad({ kind: 9 }), undefined);
  });

  it('relay: spans of traces this shim propagated reach its exporters; the rest are dropped', async () => {
    const exporter = new InMemorySpanExporter();
    const processor = new SimpleSpanProcessor({ exporter });
    installTracing(new TracerProvider({ spanProcessors: [processor] }), new AsyncLocalStorageContextManager(), [
      processor,
    ]);
    // The shim sends TRACE into the guest (an outgoing call inside a span of that trace).
    let traceId = '';
    await withRpcSpan(
      { service: 's', method: 'm', metadata: new Metadata({ traceparent: `00-${TRACE}-00f067aa0ba902b7-01` }) },
      () => {
        traceId = outgoingTraceMetadata()!.traceparent!.split('-')[1]!;
      },
    );
    assert.equal(traceId, TRACE);
    exporter.reset();
    const guestNow = BigInt(Date.now()) * 1_000_000n - 2_000_000_000n; // guest clock 2 s behind
    const span = (trace: string, name: string) =>
      create(SpanSchema, {
        traceId: Buffer.from(trace, 'hex'),
        spanId: Buffer.alloc(8, 2),
        name,
        startUnixNano: guestNow - 1_000_000n,
        endUnixNano: guestNow,
        traceFlags: 1,
      });
    const batches: SpanBatch[] = [
      create(SpanBatchSchema, { sentUnixNano: guestNow }),
      create(SpanBatchSchema, {
        sentUnixNano: guestNow,
        spans: [span(TRACE, 'runc create'), span('1'.repeat(32), 'intruder')],
      }),
    ];
    async function* stream(): AsyncGenerator<SpanBatch> {
      for (const b of batches) yield b;
    }
    await relayGuestSpans(stream(), { pod: 'p1', log: silentLogger, firstBatchTimeoutMs: 1000 });
    await new Promise((r) => setTimeout(r, 20));
    const got = exporter.getFinishedSpans();
    assert.deepEqual(
      got.map((s) => s.name),
      ['runc create'],
    );
    const endMs = got[0]!.endTime[0] * 1000 + got[0]!.endTime[1] / 1e6;
    assert.ok(
      Math.abs(endMs - Date.now()) < 1000,
      `guest time moved onto the host clock (${Date.now() - endMs} ms off)`,
    );
    assert.equal(got[0]!.resource.attributes['lcow.pod'], 'p1');
  });

  it("the guest's buffer is bounded and wakes the stream when a batch is full", async () => {
    const buf = new GuestSpanBuffer(2);
    const [a] = await recordGuestSpans();
    const ac = new AbortController();
    const woke = buf.wait(10_000, ac.signal);
    buf.onEnd(a!);
    buf.onEnd(a!);
    await woke;
    for (let i = 0; i < SPAN_LIMITS.buffer + 10; i++) buf.onEnd(a!);
    const { spans, dropped } = buf.take(SPAN_LIMITS.batch);
    assert.equal(spans.length, SPAN_LIMITS.batch);
    assert.equal(dropped, 12);
    assert.equal(buf.pending, SPAN_LIMITS.buffer - SPAN_LIMITS.batch);
  });
});
