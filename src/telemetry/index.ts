// OpenTelemetry for the shim and the agent: every RPC served is a SERVER span continuing the caller's W3C
// trace context from ttrpc metadata (`traceparent`, `tracestate`), and outgoing agent calls carry the active
// span's context further. Off by default and free when off: nothing here touches the SDK (it is imported
// only when the standard OTEL_* variables ask for export), and the wrappers return the plain call when no
// tracer is installed.
//
//   OTEL_TRACES_EXPORTER=otlp|console|none (comma list)   OTEL_EXPORTER_OTLP_[TRACES_]ENDPOINT=...
//   OTEL_SDK_DISABLED=true wins over everything.
import { createRequire } from 'node:module';
import type { ContextManager, SpanContext, Tracer, TracerProvider } from '@opentelemetry/api';

// The API itself (~40 ms of module loading) is loaded only when tracing is installed.
type Api = typeof import('@opentelemetry/api');
let api: Api | undefined;
const loadApi = (): Api => (api ??= createRequire(import.meta.url)('@opentelemetry/api') as Api);
const SPAN_KIND_SERVER = 1; // SpanKind.SERVER
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

/** Sets tracing up from OTEL_* (no-op unless asked for). Loads the SDK and exporters only then. */
export async function setupTelemetry(serviceName: string, env: NodeJS.ProcessEnv = process.env): Promise<void> {
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
  if (!env.OTEL_SERVICE_NAME) process.env.OTEL_SERVICE_NAME = serviceName;
  installTracing(new sdk.TracerProvider({ spanProcessors: processors }), new AsyncLocalStorageContextManager());
}

/**
 * Makes `provider` the source of our spans; `cm` (an async-hooks context manager) lets the active span
 * follow async calls so that outgoing calls can carry it. Used by setupTelemetry and by tests.
 */
export function installTracing(provider: TracerProvider & Flushable, cm?: ContextManager): void {
  if (cm) {
    cm.enable();
    loadApi().context.setGlobalContextManager(cm);
    contextManager = cm;
  }
  loadApi();
  installed = provider;
  tracer = provider.getTracer('containerd-shim-lcow');
}

/** Flushes and stops tracing (shim / agent exit, tests). */
export async function shutdownTelemetry(): Promise<void> {
  const p = installed;
  tracer = undefined;
  installed = undefined;
  if (contextManager) {
    api?.context.disable();
    contextManager = undefined;
  }
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

/**
 * Runs a served RPC in a SERVER span `<service>/<method>`, child of the caller's trace context when the
 * metadata carries one. Without tracing: just `fn()`.
 */
export function withRpcSpan<T>(info: RpcInfo, fn: () => Promise<T> | T): Promise<T> | T {
  const t = tracer;
  if (!t || !api) return fn();
  const { trace, ROOT_CONTEXT } = api;
  const md = info.metadata;
  const tracestate = md.get('tracestate');
  const parent = parseTraceparent(md.getFirst('traceparent'), tracestate.length ? tracestate.join(',') : undefined);
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
      }
    },
  );
}

/** Wraps every method of a ttrpc service implementation (the call context is each method's last argument). */
export function traceServiceImpl<I extends object>(impl: I): I {
  const out: Record<string, unknown> = {};
  for (const [k, fn] of Object.entries(impl)) {
    if (typeof fn !== 'function') continue;
    out[k] = (...args: unknown[]) => withRpcSpan(args[args.length - 1] as RpcInfo, () => fn(...args));
  }
  return out as I;
}

/** The active span's context as ttrpc metadata for an outgoing call; undefined when not tracing. */
export function outgoingTraceMetadata(): Record<string, string> | undefined {
  if (!tracer) return undefined;
  const sc = api?.trace.getActiveSpan()?.spanContext();
  if (!sc || !isValid(sc)) return undefined;
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
