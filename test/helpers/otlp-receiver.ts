// An in-memory OpenTelemetry collector for tests: an OTLP/HTTP (JSON) receiver on 127.0.0.1 that keeps every
// span and metric it is sent. Point a shim at it with otlpEnv(); read back with spans() / trace().
import http from 'node:http';

export interface ReceivedSpan {
  traceId: string;
  spanId: string;
  parentSpanId: string;
  name: string;
  kind: number;
  startMs: number;
  endMs: number;
  service: string;
  attributes: Record<string, unknown>;
}

type AnyValue = { stringValue?: string; intValue?: string | number; doubleValue?: number; boolValue?: boolean };
type KeyValue = { key: string; value: AnyValue };

const value = (v: AnyValue): unknown =>
  v.stringValue ?? (v.intValue !== undefined ? Number(v.intValue) : (v.doubleValue ?? v.boolValue));
const attrs = (kvs: KeyValue[] | undefined): Record<string, unknown> =>
  Object.fromEntries((kvs ?? []).map((kv) => [kv.key, value(kv.value)]));
/** OTLP/JSON ids are hex; some exporters send base64: accept both. */
const id = (s: string | undefined): string =>
  !s ? '' : /^[0-9a-f]+$/i.test(s) ? s.toLowerCase() : Buffer.from(s, 'base64').toString('hex');
const ms = (nanos: string | number): number => Number(BigInt(nanos) / 1000n) / 1000;

export class OtlpReceiver {
  private readonly received: ReceivedSpan[] = [];
  /** Metric names seen in metric exports (with their resource's service.name). */
  readonly metricNames = new Set<string>();
  private constructor(
    private readonly server: http.Server,
    readonly port: number,
  ) {}

  static async start(): Promise<OtlpReceiver> {
    const ref: { self?: OtlpReceiver } = {};
    const server = http.createServer((req, res) => {
      const chunks: Buffer[] = [];
      req.on('data', (d: Buffer) => chunks.push(d));
      req.on('end', () => {
        try {
          const body = JSON.parse(Buffer.concat(chunks).toString('utf8') || '{}') as Record<string, unknown>;
          if (req.url === '/v1/traces') ref.self?.addTraces(body);
          else if (req.url === '/v1/metrics') ref.self?.addMetrics(body);
          res.writeHead(200, { 'content-type': 'application/json' }).end('{}');
        } catch (err) {
          res.writeHead(400).end(String(err));
        }
      });
    });
    await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
    ref.self = new OtlpReceiver(server, (server.address() as { port: number }).port);
    return ref.self;
  }

  private addTraces(body: Record<string, unknown>): void {
    type RS = {
      resource?: { attributes?: KeyValue[] };
      scopeSpans?: Array<{ spans?: Array<Record<string, unknown>> }>;
    };
    for (const rs of (body.resourceSpans ?? []) as RS[]) {
      const service = String(attrs(rs.resource?.attributes)['service.name'] ?? '');
      for (const ss of rs.scopeSpans ?? [])
        for (const s of ss.spans ?? [])
          this.received.push({
            traceId: id(s.traceId as string),
            spanId: id(s.spanId as string),
            parentSpanId: id(s.parentSpanId as string | undefined),
            name: String(s.name),
            kind: Number(s.kind ?? 0),
            startMs: ms(s.startTimeUnixNano as string),
            endMs: ms(s.endTimeUnixNano as string),
            service,
            attributes: attrs(s.attributes as KeyValue[]),
          });
    }
  }

  private addMetrics(body: Record<string, unknown>): void {
    type RM = { scopeMetrics?: Array<{ metrics?: Array<{ name: string }> }> };
    for (const rm of (body.resourceMetrics ?? []) as RM[])
      for (const sm of rm.scopeMetrics ?? []) for (const m of sm.metrics ?? []) this.metricNames.add(m.name);
  }

  /** Environment for a process whose traces (and metrics) should come here. */
  env(): Record<string, string> {
    return {
      OTEL_TRACES_EXPORTER: 'otlp',
      OTEL_METRICS_EXPORTER: 'otlp',
      OTEL_EXPORTER_OTLP_PROTOCOL: 'http/json',
      OTEL_EXPORTER_OTLP_ENDPOINT: `http://127.0.0.1:${this.port}`,
      OTEL_BSP_SCHEDULE_DELAY: '200',
      OTEL_METRIC_EXPORT_INTERVAL: '1000',
    };
  }

  spans(): ReceivedSpan[] {
    return [...this.received];
  }

  trace(traceId: string): ReceivedSpan[] {
    return this.received.filter((s) => s.traceId === traceId);
  }

  async close(): Promise<void> {
    this.server.closeAllConnections();
    await new Promise<void>((r) => this.server.close(() => r()));
  }
}

/**
 * The trace as an indented tree with durations and start offsets (for reports and failure messages), and
 * whether it is connected: every span's parent is in the trace except the root's (the caller's span).
 */
export function traceTree(spans: ReceivedSpan[]): { text: string; roots: ReceivedSpan[] } {
  const byId = new Map(spans.map((s) => [s.spanId, s]));
  const roots = spans.filter((s) => !byId.has(s.parentSpanId));
  const t0 = Math.min(...spans.map((s) => s.startMs));
  const lines: string[] = [];
  const walk = (s: ReceivedSpan, depth: number): void => {
    lines.push(
      `${'  '.repeat(depth)}${s.name} [${s.service}] ${(s.endMs - s.startMs).toFixed(1)} ms (at +${(s.startMs - t0).toFixed(1)} ms)`,
    );
    for (const c of spans.filter((x) => x.parentSpanId === s.spanId).sort((a, b) => a.startMs - b.startMs))
      walk(c, depth + 1);
  };
  for (const r of roots.sort((a, b) => a.startMs - b.startMs)) walk(r, 0);
  return { text: lines.join('\n'), roots };
}
