// An instrumented ttrpc service client: every unary call's latency goes to the metrics registry
// (lcow.<service>.rpc.duration by method and outcome), and when tracing, the call is a CLIENT span whose
// context travels in the request's metadata (traceparent), so the callee's span hangs under it. Streaming
// methods pass through untouched: they live as long as a process's output, and must not hang off the request
// that opened them.
import type { GenService, GenServiceMethods } from '@bufbuild/protobuf/codegenv2';
import type { CallOptions, ServiceClient } from '../ttrpc/index.js';
import { withClientSpan } from './index.js';
import { metrics as processMetrics, type HistogramSeries, type MetricsRegistry } from './metrics.js';

export const AGENT_RPC_DURATION = 'lcow.agent.rpc.duration';

type Unary = (req: unknown, opts?: CallOptions) => Promise<unknown>;

export function instrumentClient<S extends GenServiceMethods>(
  desc: GenService<S>,
  client: ServiceClient<S>,
  opts: {
    metric?: string;
    registry?: MetricsRegistry;
    /** Unary methods that wait for something long (a process's exit): neither timed nor traced. */
    background?: readonly string[];
  } = {},
): ServiceClient<S> {
  const registry = opts.registry ?? processMetrics;
  const histogram = registry.histogram(opts.metric ?? AGENT_RPC_DURATION, `${desc.typeName} call latency`, 's');
  const out: Record<string, unknown> = {};
  for (const method of desc.methods) {
    const call = (client as Record<string, unknown>)[method.localName];
    if (method.methodKind !== 'unary' || opts.background?.includes(method.name)) {
      out[method.localName] = call;
      continue;
    }
    const fn = call as Unary;
    // Bound on first use: only methods called show up.
    let ok: HistogramSeries | undefined;
    let failed: HistogramSeries | undefined;
    const spanName = `${desc.typeName}/${method.name}`;
    out[method.localName] = (req: unknown, callOpts?: CallOptions): Promise<unknown> =>
      withClientSpan(spanName, async (md) => {
        const t0 = performance.now();
        try {
          const r = await fn(req, md ? withMetadata(callOpts, md) : callOpts);
          (ok ??= histogram.bind({ method: method.name, outcome: 'ok' })).record((performance.now() - t0) / 1000);
          return r;
        } catch (err) {
          (failed ??= histogram.bind({ method: method.name, outcome: 'error' })).record(
            (performance.now() - t0) / 1000,
          );
          throw err;
        }
      });
  }
  return out as ServiceClient<S>;
}

function withMetadata(opts: CallOptions | undefined, md: Record<string, string>): CallOptions {
  const base = opts?.metadata;
  if (base !== undefined && (typeof base !== 'object' || base === null || base.constructor !== Object)) return opts!;
  return { ...opts, metadata: { ...(base as Record<string, string> | undefined), ...md } };
}
