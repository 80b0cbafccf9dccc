// The guest agent's spans reach the collector through the shim: the guest has no network of its own to it.
//
// Guest: while the shim reads Agent.StreamSpans, the agent has a tracer whose only processor is a bounded
// buffer (GuestSpanBuffer); serveSpanStream sends its contents in batches, the first one (empty) as soon as
// tracing is on. When the stream ends, tracing in the guest stops.
// Host: relayGuestSpans reads the stream, checks every span (the guest is hostile: sizes bounded, and only
// traces this shim sent into the guest are accepted), moves guest times onto the host's clock, and hands the
// spans to the shim's own exporters as the resource `lcow-agent`.
import type { Attributes, HrTime, SpanContext } from '@opentelemetry/api';
import type { ReadableSpan, SpanProcessor } from '@opentelemetry/sdk-trace';
import type { MessageInitShape } from '@bufbuild/protobuf';
import type {
  Span as WireSpan,
  SpanAttribute,
  SpanAttributeSchema,
  SpanBatch,
  SpanBatchSchema,
  SpanSchema,
} from '../gen/agent/v1/agent_pb.js';
import type { Logger } from '../util/log.js';
import { exportForeignSpans, installTracing, shutdownTelemetry, tracePropagated, tracingEnabled } from './index.js';

/** Bounds on what crosses the channel (both sides apply them; the host re-checks). */
export const SPAN_LIMITS = {
  batch: 512,
  buffer: 4096,
  attributes: 32,
  events: 8,
  nameLength: 128,
  keyLength: 128,
  valueLength: 1024,
} as const;

const nowUnixNano = (): bigint => BigInt(Math.round((performance.timeOrigin + performance.now()) * 1e6));
const hrToNano = (t: HrTime): bigint => BigInt(t[0]) * 1_000_000_000n + BigInt(t[1]);
const nanoToHr = (n: bigint): HrTime => [Number(n / 1_000_000_000n), Number(n % 1_000_000_000n)];
const hex = (b: Uint8Array): string => Buffer.from(b).toString('hex');
const clip = (s: string, n: number): string => (s.length > n ? s.slice(0, n) : s);

type WireAttribute = MessageInitShape<typeof SpanAttributeSchema>;

function wireAttributes(attrs: Attributes | undefined): WireAttribute[] {
  const out: WireAttribute[] = [];
  for (const [key, v] of Object.entries(attrs ?? {})) {
    if (out.length >= SPAN_LIMITS.attributes) break;
    const k = clip(key, SPAN_LIMITS.keyLength);
    if (typeof v === 'string')
      out.push({ key: k, value: { case: 'stringValue', value: clip(v, SPAN_LIMITS.valueLength) } });
    else if (typeof v === 'boolean') out.push({ key: k, value: { case: 'boolValue', value: v } });
    else if (typeof v === 'number')
      out.push(
        Number.isInteger(v)
          ? { key: k, value: { case: 'intValue', value: BigInt(v) } }
          : { key: k, value: { case: 'doubleValue', value: v } },
      );
    else if (Array.isArray(v))
      out.push({ key: k, value: { case: 'stringValue', value: clip(JSON.stringify(v), SPAN_LIMITS.valueLength) } });
  }
  return out;
}

function readAttributes(attrs: readonly SpanAttribute[]): Attributes {
  const out: Attributes = {};
  let n = 0;
  for (const a of attrs) {
    if (n++ >= SPAN_LIMITS.attributes) break;
    const k = clip(a.key, SPAN_LIMITS.keyLength);
    switch (a.value.case) {
      case 'stringValue':
        out[k] = clip(a.value.value, SPAN_LIMITS.valueLength);
        break;
      case 'intValue':
        out[k] = Number(a.value.value);
        break;
      case 'doubleValue':
      case 'boolValue':
        out[k] = a.value.value;
        break;
    }
  }
  return out;
}

/** A finished guest span as it crosses the channel. */
export function spanToWire(s: ReadableSpan): MessageInitShape<typeof SpanSchema> {
  const sc = s.spanContext();
  const parent = s.parentSpanContext;
  return {
    traceId: Buffer.from(sc.traceId, 'hex'),
    spanId: Buffer.from(sc.spanId, 'hex'),
    parentSpanId: parent ? Buffer.from(parent.spanId, 'hex') : new Uint8Array(),
    name: clip(s.name, SPAN_LIMITS.nameLength),
    kind: s.kind,
    startUnixNano: hrToNano(s.startTime),
    endUnixNano: hrToNano(s.endTime),
    attributes: wireAttributes(s.attributes),
    statusCode: s.status.code,
    statusMessage: clip(s.status.message ?? '', SPAN_LIMITS.valueLength),
    traceFlags: sc.traceFlags,
    traceState: clip(sc.traceState?.serialize() ?? '', SPAN_LIMITS.valueLength),
    events: s.events.slice(0, SPAN_LIMITS.events).map((e) => ({
      name: clip(e.name, SPAN_LIMITS.nameLength),
      timeUnixNano: hrToNano(e.time),
      attributes: wireAttributes(e.attributes),
    })),
  };
}

// ---- guest side ----

/** The guest tracer's processor: finished spans wait here (bounded) for the shim's stream. */
export class GuestSpanBuffer implements SpanProcessor {
  private spans: ReadableSpan[] = [];
  private dropped = 0;
  private wake: (() => void) | undefined;

  constructor(private readonly batchSize: number = 64) {}

  onStart(): void {}

  onEnd(span: ReadableSpan): void {
    if (!(span.spanContext().traceFlags & 1)) return;
    if (this.spans.length >= SPAN_LIMITS.buffer) {
      this.dropped++;
      return;
    }
    this.spans.push(span);
    if (this.spans.length >= this.batchSize) this.wake?.();
  }

  async forceFlush(): Promise<void> {
    this.wake?.();
  }

  async shutdown(): Promise<void> {
    this.wake?.();
  }

  /** Resolves when a batch is full, after `ms`, or when `signal` aborts. */
  wait(ms: number, signal: AbortSignal): Promise<void> {
    return new Promise((resolve) => {
      const done = (): void => {
        clearTimeout(timer);
        signal.removeEventListener('abort', done);
        this.wake = undefined;
        resolve();
      };
      const timer = setTimeout(done, ms);
      signal.addEventListener('abort', done);
      this.wake = done;
    });
  }

  take(max: number): { spans: ReadableSpan[]; dropped: number } {
    const spans = this.spans.splice(0, max);
    const dropped = this.dropped;
    this.dropped = 0;
    return { spans, dropped };
  }

  get pending(): number {
    return this.spans.length;
  }
}

let streaming = false;
/** Sends what the buffer holds now (set while a stream is open). */
let flushNow: (() => Promise<void>) | undefined;

/**
 * Sends the guest's finished spans right away (a traced RPC's, before its reply: replies and stream frames
 * share the connection in order, so the shim has a call's spans by the time it has its answer).
 */
export function flushGuestSpans(): Promise<void> {
  return flushNow?.() ?? Promise.resolve();
}

/**
 * Agent.StreamSpans: turns tracing on in the guest for as long as the shim reads. Sends an empty batch once
 * tracing is on, then batches every `intervalMs` (or sooner when full).
 */
export async function serveSpanStream(
  maxBatch: number,
  out: { send(b: MessageInitShape<typeof SpanBatchSchema>): Promise<void>; signal: AbortSignal },
  log: Logger,
  intervalMs = 200,
): Promise<void> {
  if (streaming) throw new Error('a span stream is already open');
  streaming = true;
  const batch = Math.max(1, Math.min(maxBatch || 256, SPAN_LIMITS.batch));
  const buffer = new GuestSpanBuffer(batch);
  try {
    const [sdk, { AsyncLocalStorageContextManager }] = await Promise.all([
      import('@opentelemetry/sdk-trace'),
      import('@opentelemetry/context-async-hooks'),
    ]);
    if (!tracingEnabled())
      installTracing(new sdk.TracerProvider({ spanProcessors: [buffer] }), new AsyncLocalStorageContextManager());
    log.info('tracing on: spans go to the shim');
    await out.send({ spans: [], sentUnixNano: nowUnixNano(), dropped: 0 });
    const send = async (): Promise<void> => {
      while (buffer.pending > 0 && !out.signal.aborted) {
        const { spans, dropped } = buffer.take(batch);
        await out.send({ spans: spans.map(spanToWire), sentUnixNano: nowUnixNano(), dropped });
      }
    };
    flushNow = send;
    while (!out.signal.aborted) {
      await buffer.wait(intervalMs, out.signal);
      await send();
    }
  } finally {
    streaming = false;
    flushNow = undefined;
    await shutdownTelemetry();
    log.info('tracing off');
  }
}

// ---- host side ----

/** A checked guest span as a ReadableSpan on the host's clock; undefined when it must be dropped. */
export function spanFromWire(
  w: WireSpan,
  offsetNs: bigint,
  resource: ReadableSpan['resource'],
  accept: (traceId: string) => boolean = tracePropagated,
): ReadableSpan | undefined {
  if (w.traceId.length !== 16 || w.spanId.length !== 8) return undefined;
  if (w.parentSpanId.length !== 0 && w.parentSpanId.length !== 8) return undefined;
  const traceId = hex(w.traceId);
  if (/^0+$/.test(traceId) || !accept(traceId)) return undefined;
  if (w.endUnixNano < w.startUnixNano || w.kind > 4 || w.statusCode > 2) return undefined;
  const start = nanoToHr(w.startUnixNano + offsetNs);
  const end = nanoToHr(w.endUnixNano + offsetNs);
  const duration = nanoToHr(w.endUnixNano - w.startUnixNano);
  const sc: SpanContext = { traceId, spanId: hex(w.spanId), traceFlags: w.traceFlags & 0xff };
  const parent: SpanContext | undefined = w.parentSpanId.length
    ? { traceId, spanId: hex(w.parentSpanId), traceFlags: w.traceFlags & 0xff, isRemote: true }
    : undefined;
  return {
    name: clip(w.name, SPAN_LIMITS.nameLength),
    kind: w.kind,
    spanContext: () => sc,
    parentSpanContext: parent,
    startTime: start,
    endTime: end,
    duration,
    status: { code: w.statusCode, message: clip(w.statusMessage, SPAN_LIMITS.valueLength) || undefined },
    attributes: readAttributes(w.attributes),
    links: [],
    events: w.events.slice(0, SPAN_LIMITS.events).map((e) => ({
      name: clip(e.name, SPAN_LIMITS.nameLength),
      time: nanoToHr(e.timeUnixNano + offsetNs),
      attributes: readAttributes(e.attributes),
    })),
    ended: true,
    resource,
    instrumentationScope: { name: 'lcow-agent' },
    droppedAttributesCount: 0,
    droppedEventsCount: 0,
    droppedLinksCount: 0,
  };
}

/**
 * Reads the agent's span stream and exports what it carries. Resolves once the guest said tracing is on (its
 * first batch), or after `firstBatchTimeoutMs`; the relay goes on in the background until the stream ends.
 */
export async function relayGuestSpans(
  stream: AsyncIterable<SpanBatch>,
  opts: { pod: string; log: Logger; firstBatchTimeoutMs?: number },
): Promise<void> {
  const { resourceFromAttributes } = await import('@opentelemetry/resources');
  const resource = resourceFromAttributes({ 'service.name': 'lcow-agent', 'lcow.pod': opts.pod });
  let offset: bigint | undefined;
  let dropped = 0;
  let rejected = 0;
  let firstSeen!: () => void;
  const first = new Promise<void>((r) => (firstSeen = r));
  void (async () => {
    try {
      for await (const b of stream) {
        // Guest time + offset = host time. The smallest (receive - sent) seen is the best estimate: it has the
        // least transit delay in it.
        const d = nowUnixNano() - b.sentUnixNano;
        if (offset === undefined || d < offset) offset = d;
        firstSeen();
        dropped += b.dropped;
        const spans: ReadableSpan[] = [];
        for (const w of b.spans.slice(0, SPAN_LIMITS.batch)) {
          const s = spanFromWire(w, offset, resource);
          if (s) spans.push(s);
          else rejected++;
        }
        rejected += Math.max(0, b.spans.length - SPAN_LIMITS.batch);
        exportForeignSpans(spans);
      }
    } catch (err) {
      opts.log.debug('guest span stream ended', { error: err });
    } finally {
      firstSeen();
      if (dropped || rejected) opts.log.warn('guest spans lost', { droppedInGuest: dropped, rejected });
    }
  })();
  let timer: NodeJS.Timeout | undefined;
  await Promise.race([first, new Promise<void>((r) => (timer = setTimeout(r, opts.firstBatchTimeoutMs ?? 10_000)))]);
  clearTimeout(timer);
}
