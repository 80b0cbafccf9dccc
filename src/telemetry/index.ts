// OpenTelemetry for the shim and the agent: every RPC served is a SERVER span continuing the caller's W3C
// trace context from ttrpc metadata (`traceparent`, `tracestate`), and outgoing agent calls carry the active
// span's context further. Off by default and free when off: nothing here touches the SDK (it is imported
// only when the standard OTEL_* variables ask for export), and the wrappers return the plain call when no
// tracer is installed.
//
//   OTEL_TRACES_EXPORTER=otlp|console|none (comma list)   OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT=...
//   OTEL_SDK_DISABLED=true wins over everything.
//
// The guest agent never reads OTEL_*: it traces only while the shim reads its spans (guest-spans.ts), and the
// shim hands those spans to its own exporters (exportForeignSpans).
import { createRequire } from 'node:module';
import type { Attributes, ContextManager, Span, SpanContext, Tracer, TracerProvider } from '@opentelemetry/api';
import type { ReadableSpan, SpanProcessor } from '@opentelemetry/sdk-trace';
import { setLogContext } from '../util/log.js';

// The API itself (~40 ms of module loading) is loaded only when tracing is installed.
type Api = typeof import('@opentelemetry/api');
let api: Api | undefined;
const loadApi = (): Api => (api ??= createRequire(import.meta.url)('@opentelemetry/api') as Api);
const SPAN_KIND_SERVER = 1; // SpanKind.SERVER
const SPAN_KIND_CLIENT = 2; // SpanKind.CLIENT
const STATUS_ERROR = 2; // SpanStatusCode.ERROR
const isValid = (sc: SpanContext): boolean =>
  /^[0-9a-f]{32}$/.test(sc.traceId) &&
  !/^0+$/.test(sc.traceId) &&
  /^[0-9a-f]{16}$/.test(sc.spanId) &&
  !/^0+$/.test(sc.spanId);

/** What the RPC wrappers need from a ttrpc CallContext (metadata is read only when tracing). */
export interface RpcInfo {
  readonly service: string;
  readonly method: string;
  readonly metadata: { getFirst(key: string): string | undefined; get(key: string): readonly string[] };
}

interface Flushable {
  forceFlush?(): Promise<void>;
  shutdown?(): Promise<void>;
}

let tracer: Tracer | undefined;
let installed: (TracerProvider & Flushable) | undefined;
let contextManager: ContextManager | undefined;
/** Where spans recorded elsewhere (the guest agent's) are delivered: the installed provider's processors. */
let foreignSinks: readonly SpanProcessor[] = [];

export function tracingEnabled(): boolean {
  return tracer !== undefined;
}

/** Whether the environment asks for traces to be exported. */
export function tracingRequested(env: NodeJS.ProcessEnv = process.env): boolean {
  if ((env.OTEL_SDK_DISABLED ?? '').trim().toLowerCase() === 'true') return false;
  const exporters = (env.OTEL_TRACES_EXPORTER ?? '').trim().toLowerCase();
  if (exporters === 'none') return false;
  if (exporters !== '') return true;
  return Boolean(env.OTEL_EXPORTER_OTLP_TRACES_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT);
}

/** Whether the environment asks for metrics to be exported (the same rule as for traces). */
export function metricsRequested(env: NodeJS.ProcessEnv = process.env): boolean {
  if ((env.OTEL_SDK_DISABLED ?? '').trim().toLowerCase() === 'true') return false;
  const exporters = (env.OTEL_METRICS_EXPORTER ?? '').trim().toLowerCase();
  if (exporters === 'none') return false;
  if (exporters !== '') return true;
  return Boolean(env.OTEL_EXPORTER_OTLP_METRICS_ENDPOINT || env.OTEL_EXPORTER_OTLP_ENDPOINT);
}

let metricsExport: { forceFlush(): Promise<void>; shutdown(): Promise<void> } | undefined;

/**
 * Sets up from OTEL_* (no-op unless asked for): tracing, and the export of the process's metrics registry
 * (metrics.ts; it counts whether exported or not). Loads the SDK and exporters only then.
 */
export async function setupTelemetry(serviceName: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
  if (metricsRequested(env) && !metricsExport) {
    const [{ startMetricsExport }, { metrics }] = await Promise.all([
      import('./otel-metrics.js'),
      import('./metrics.js'),
    ]);
    metricsExport = await startMetricsExport(metrics, serviceName, env);
  }
  if (!tracingRequested(env) || tracer) return;
  const sdk = await import('@opentelemetry/sdk-trace');
  const { AsyncLocalStorageContextManager } = await import('@opentelemetry/context-async-hooks');
  const processors = [];
  const names = (env.OTEL_TRACES_EXPORTER || 'otlp').split(',').map((s) => s.trim().toLowerCase());
  for (const name of names) {
    if (name === 'otlp') {
      const { OTLPTraceExporter } = await import('@opentelemetry/exporter-trace-otlp-http');
      processors.push(new sdk.BatchSpanProcessor({ exporter: new OTLPTraceExporter() }));
    } else if (name === 'console')
      processors.push(new sdk.SimpleSpanProcessor({ exporter: new sdk.ConsoleSpanExporter() }));
  }
  if (processors.length === 0) return;
  // service.name: OTEL_SERVICE_NAME, else ours; OTEL_RESOURCE_ATTRIBUTES adds to it.
  const { defaultResource, detectResources, envDetector, resourceFromAttributes } =
    await import('@opentelemetry/resources');
  const resource = defaultResource()
    .merge(resourceFromAttributes({ 'service.name': serviceName }))
    .merge(detectResources({ detectors: [envDetector] }));
  installTracing(
    new sdk.TracerProvider({ spanProcessors: processors, resource }),
    new AsyncLocalStorageContextManager(),
    processors,
  );
}

/**
 * Makes `provider` the source of our spans; `cm` (an async-hooks context manager) lets the active span
 * follow async calls so that outgoing calls can carry it; `sinks` (the provider's span processors) receive
 * spans recorded elsewhere (exportForeignSpans). Used by setupTelemetry, the agent and tests.
 */
export function installTracing(
  provider: TracerProvider & Flushable,
  cm?: ContextManager,
  sinks: readonly SpanProcessor[] = [],
): void {
  if (cm) {
    cm.enable();
    loadApi().context.setGlobalContextManager(cm);
    contextManager = cm;
  }
  loadApi();
  installed = provider;
  foreignSinks = sinks;
  tracer = provider.getTracer('containerd-shim-lcow');
  // Log lines written inside a span carry its ids.
  setLogContext(() => {
    const sc = api?.trace.getActiveSpan()?.spanContext();
    return sc && isValid(sc) ? { trace_id: sc.traceId, span_id: sc.spanId } : undefined;
  });
}

/** Flushes and stops tracing (shim / agent exit, tests). */
export async function shutdownTelemetry(): Promise<void> {
  const m = metricsExport;
  metricsExport = undefined;
  // Best effort at exit (this module has no logger): the OTLP exporters report failed exports through OTel's
  // own diagnostics, and a collector that is down must not keep the process from exiting.
  await m?.shutdown().catch(() => undefined);
  const p = installed;
  tracer = undefined;
  installed = undefined;
  foreignSinks = [];
  recentTraces.clear();
  setLogContext(undefined);
  if (contextManager) {
    api?.context.disable();
    contextManager = undefined;
  }
  // As above: best effort at exit.
  await p?.forceFlush?.().catch(() => undefined);
  await p?.shutdown?.().catch(() => undefined);
}

const TRACEPARENT_RE = /^([0-9a-f]{2})-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})(-.*)?$/;

/** W3C trace-context `traceparent` (+ `tracestate`) -> a remote SpanContext, or undefined when invalid. */
export function parseTraceparent(traceparent: string | undefined, tracestate?: string): SpanContext | undefined {
  if (!traceparent) return undefined;
  const m = TRACEPARENT_RE.exec(traceparent.trim());
  if (!m) return undefined;
  const [, version, traceId, spanId, flags, rest] = m;
  if (version === 'ff' || (version === '00' && rest)) return undefined;
  const sc: SpanContext = { traceId: traceId!, spanId: spanId!, traceFlags: parseInt(flags!, 16), isRemote: true };
  if (!isValid(sc)) return undefined;
  if (tracestate) sc.traceState = loadApi().createTraceState(tracestate);
  return sc;
}

export function formatTraceparent(sc: SpanContext): string {
  return `00-${sc.traceId}-${sc.spanId}-${(sc.traceFlags & 0xff).toString(16).padStart(2, '0')}`;
}

export interface RpcSpanOptions {
  /** Trace only calls whose caller sent a trace context (the agent: no orphan traces of its own). */
  requireParent?: boolean;
  /** The parent when the metadata carries none (e.g. from the container's annotations); gets the call's arguments. */
  fallbackParent?: (
    info: RpcInfo,
    args: readonly unknown[],
  ) => SpanContext | undefined | Promise<SpanContext | undefined>;
  /** Awaited after the span ended, before the reply goes out (the agent sends the call's spans first). */
  afterEnd?: () => Promise<void>;
}

/**
 * Runs a served RPC in a SERVER span `<service>/<method>`, child of the caller's trace context when the
 * metadata carries one. Without tracing: just `fn()`.
 */
export function withRpcSpan<T>(
  info: RpcInfo,
  fn: () => Promise<T> | T,
  opts?: RpcSpanOptions,
  args: readonly unknown[] = [],
): Promise<T> | T {
  if (!tracer || !api) return fn();
  const md = info.metadata;
  const tracestate = md.get('tracestate');
  const parent = parseTraceparent(md.getFirst('traceparent'), tracestate.length ? tracestate.join(',') : undefined);
  if (parent) return runRpcSpan(info, parent, fn, opts?.afterEnd);
  if (opts?.fallbackParent)
    return Promise.resolve(opts.fallbackParent(info, args)).then((p) =>
      p || !opts.requireParent ? runRpcSpan(info, p, fn, opts.afterEnd) : fn(),
    );
  if (opts?.requireParent) return fn();
  return runRpcSpan(info, undefined, fn, opts?.afterEnd);
}

function runRpcSpan<T>(
  info: RpcInfo,
  parent: SpanContext | undefined,
  fn: () => Promise<T> | T,
  afterEnd?: () => Promise<void>,
): Promise<T> | T {
  const t = tracer;
  if (!t || !api) return fn();
  const { trace, ROOT_CONTEXT } = api;
  const parentCtx = parent ? trace.setSpanContext(ROOT_CONTEXT, parent) : ROOT_CONTEXT;
  const name = `${info.service}/${info.method}`;
  return t.startActiveSpan(
    name,
    {
      kind: SPAN_KIND_SERVER,
      attributes: { 'rpc.system': 'ttrpc', 'rpc.service': info.service, 'rpc.method': info.method },
    },
    parentCtx,
    async (span) => {
      try {
        return await fn();
      } catch (err) {
        span.recordException(err as Error);
        span.setStatus({ code: STATUS_ERROR, message: err instanceof Error ? err.message : String(err) });
        throw err;
      } finally {
        span.end();
        // afterEnd only ships spans (flushGuestSpans): losing them must not fail the RPC whose reply waits here.
        if (afterEnd) await afterEnd().catch(() => undefined);
      }
    },
  );
}

/**
 * Wraps every method of a ttrpc service implementation (the call context is each method's last argument).
 * Methods named in `untraced` are left as they are.
 */
export function traceServiceImpl<I extends object>(impl: I, opts?: RpcSpanOptions, untraced: string[] = []): I {
  const out: Record<string, unknown> = {};
  for (const [k, fn] of Object.entries(impl)) {
    if (typeof fn !== 'function') continue;
    out[k] = untraced.includes(k)
      ? fn
      : (...args: unknown[]) => withRpcSpan(args[args.length - 1] as RpcInfo, () => fn(...args), opts, args);
  }
  return out as I;
}

/**
 * Trace ids this process sent to the guest recently: the only traces the guest's spans may join (a hostile
 * guest cannot write into other traces). Bounded.
 */
const recentTraces = new Set<string>();
const RECENT_TRACES_MAX = 4096;

function rememberTrace(traceId: string): void {
  if (recentTraces.has(traceId)) return;
  if (recentTraces.size >= RECENT_TRACES_MAX) recentTraces.delete(recentTraces.values().next().value!);
  recentTraces.add(traceId);
}

/** Whether this process propagated `traceId` (to the guest) recently. */
export function tracePropagated(traceId: string): boolean {
  return recentTraces.has(traceId);
}

/** The active span's context as ttrpc metadata for an outgoing call; undefined when not tracing. */
export function outgoingTraceMetadata(): Record<string, string> | undefined {
  if (!tracer) return undefined;
  const sc = api?.trace.getActiveSpan()?.spanContext();
  if (!sc || !isValid(sc)) return undefined;
  rememberTrace(sc.traceId);
  const md: Record<string, string> = { traceparent: formatTraceparent(sc) };
  const state = sc.traceState?.serialize();
  if (state) md.tracestate = state;
  return md;
}

/**
 * A typed ttrpc client whose calls carry the active trace context (metadata `traceparent`/`tracestate`).
 * Returns the client itself when tracing is off. Unary and server-streaming methods take (request, opts);
 * client-streaming ones take (opts).
 */
export function tracedClient<C extends object>(client: C): C {
  if (!tracer) return client;
  return new Proxy(client, {
    get(target, key, receiver) {
      const fn = Reflect.get(target, key, receiver) as unknown;
      if (typeof fn !== 'function') return fn;
      return (...args: unknown[]) => {
        const md = outgoingTraceMetadata();
        if (md) {
          const i = fn.length >= 2 ? 1 : 0;
          const opts = (args[i] ?? {}) as { metadata?: unknown };
          const base = opts.metadata;
          if (base === undefined || (typeof base === 'object' && base !== null && base.constructor === Object))
            args[i] = { ...opts, metadata: { ...(base as Record<string, string> | undefined), ...md } };
        }
        return (fn as (...a: unknown[]) => unknown).apply(target, args);
      };
    },
  });
}

/**
 * Runs `fn` in an INTERNAL span `name`, child of the active span. Only inside a trace (no orphan root spans
 * from background work). Without tracing: just `fn()`.
 */
export function withSpan<T>(name: string, attributes: Attributes, fn: () => Promise<T>): Promise<T>;
export function withSpan<T>(name: string, attributes: Attributes, fn: () => T): T;
export function withSpan<T>(name: string, attributes: Attributes, fn: () => Promise<T> | T): Promise<T> | T {
  const t = tracer;
  if (!t || !api) return fn();
  if (!api.trace.getActiveSpan()) return fn();
  return t.startActiveSpan(name, { attributes }, (span) => {
    const end = (err?: unknown): void => {
      if (err !== undefined) {
        span.recordException(err as Error);
        span.setStatus({ code: STATUS_ERROR, message: err instanceof Error ? err.message : String(err) });
      }
      span.end();
    };
    let r: Promise<T> | T;
    try {
      r = fn();
    } catch (err) {
      end(err);
      throw err;
    }
    if (r instanceof Promise)
      return r.then(
        (v) => (end(), v),
        (err: unknown) => {
          end(err);
          throw err;
        },
      );
    end();
    return r;
  });
}

/**
 * A finished INTERNAL span with given start and end (ms since the epoch), child of `parent` or of the active
 * span (phases measured before their span could exist: the UVM's boot). Returns the span (for children).
 */
export function recordSpan(
  name: string,
  startMs: number,
  endMs: number,
  attributes: Attributes = {},
  parent?: Span,
): Span | undefined {
  const t = tracer;
  if (!t || !api) return undefined;
  const ctx = parent ? api.trace.setSpan(api.context.active(), parent) : api.context.active();
  if (!api.trace.getSpan(ctx)) return undefined;
  const span = t.startSpan(name, { attributes, startTime: startMs }, ctx);
  span.end(Math.max(startMs, endMs));
  return span;
}

/** Runs `fn` outside any trace (long-lived background calls must not hang off the request that began them). */
export function untraced<T>(fn: () => T): T {
  if (!tracer || !api) return fn();
  return api.context.with(api.ROOT_CONTEXT, fn);
}

/** The active span's trace id (logs, tests); undefined when not tracing. */
export function activeTraceId(): string | undefined {
  const sc = tracer ? api?.trace.getActiveSpan()?.spanContext() : undefined;
  return sc && isValid(sc) ? sc.traceId : undefined;
}

/** Hands finished spans recorded elsewhere (the guest's) to this process's exporters. */
export function exportForeignSpans(spans: readonly ReadableSpan[]): void {
  for (const s of spans) for (const p of foreignSinks) p.onEnd(s);
}

/** OCI annotations that carry a W3C trace context into a pod (containerd 1.6 sends none in ttrpc metadata). */
export const TRACEPARENT_ANNOTATION = 'lcow.traceparent';
export const TRACESTATE_ANNOTATION = 'lcow.tracestate';

/** The trace context named by a spec's annotations, or undefined. */
export function traceContextFromAnnotations(annotations: Record<string, unknown> | undefined): SpanContext | undefined {
  const tp = annotations?.[TRACEPARENT_ANNOTATION];
  if (typeof tp !== 'string' || !tracer) return undefined;
  const ts = annotations?.[TRACESTATE_ANNOTATION];
  return parseTraceparent(tp, typeof ts === 'string' ? ts : undefined);
}

/**
 * Runs an outgoing call `fn(metadata)` in a CLIENT span `name` whose context the metadata carries (the callee's
 * span becomes its child). Only inside a trace; without tracing: `fn(undefined)`.
 */
export function withClientSpan<T>(
  name: string,
  fn: (md: Record<string, string> | undefined) => Promise<T>,
): Promise<T> {
  const t = tracer;
  if (!t || !api || !api.trace.getActiveSpan()) return fn(undefined);
  return t.startActiveSpan(name, { kind: SPAN_KIND_CLIENT, attributes: { 'rpc.system': 'ttrpc' } }, async (span) => {
    try {
      return await fn(outgoingTraceMetadata());
    } catch (err) {
      span.recordException(err as Error);
      span.setStatus({ code: STATUS_ERROR, message: err instanceof Error ? err.message : String(err) });
      throw err;
    } finally {
      span.end();
    }
  });
}
