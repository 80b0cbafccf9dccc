// Our metrics registry as OpenTelemetry metrics: a MetricProducer that the SDK's readers collect from, so the
// standard exporters (OTLP, console) and any reader (tests use an in-memory one) see cumulative sums,
// explicit-bucket histograms and gauges. Loaded only when metrics are exported (or by tests).
//
//   OTEL_METRICS_EXPORTER=otlp|console|none   OTEL_EXPORTER_OTLP_[METRICS_]ENDPOINT=...
//   OTEL_METRIC_EXPORT_INTERVAL=ms (default 60000)
import type { HrTime } from '@opentelemetry/api';
import {
  defaultResource,
  detectResources,
  emptyResource,
  envDetector,
  resourceFromAttributes,
} from '@opentelemetry/resources';
import {
  AggregationTemporality,
  ConsoleMetricExporter,
  DataPointType,
  MeterProvider,
  PeriodicExportingMetricReader,
  type CollectionResult,
  type MetricData,
  type MetricProducer,
  type PushMetricExporter,
} from '@opentelemetry/sdk-metrics';
import type { HistogramValue, MetricsRegistry, MetricsSnapshot } from './metrics.js';

const VALUE_TYPE_DOUBLE = 1; // api ValueType.DOUBLE

function hrTime(iso: string): HrTime {
  const ms = Date.parse(iso);
  return [Math.floor(ms / 1000), (ms % 1000) * 1e6];
}

/** A snapshot in OpenTelemetry's data model (cumulative temporality). */
export function toMetricData(snap: MetricsSnapshot): MetricData[] {
  const startTime = hrTime(snap.startTime);
  const endTime = hrTime(snap.time);
  const out: MetricData[] = [];
  for (const m of snap.metrics) {
    const descriptor = { name: m.name, description: m.description, unit: m.unit, valueType: VALUE_TYPE_DOUBLE };
    const base = { descriptor, aggregationTemporality: AggregationTemporality.CUMULATIVE };
    if (m.kind === 'histogram') {
      out.push({
        ...base,
        dataPointType: DataPointType.HISTOGRAM,
        dataPoints: m.points.map((p) => {
          const h = p.value as HistogramValue;
          return {
            startTime,
            endTime,
            attributes: p.attributes,
            value: {
              buckets: { boundaries: [...h.bounds], counts: [...h.counts] },
              count: h.count,
              sum: h.sum,
              min: h.count ? h.min : undefined,
              max: h.count ? h.max : undefined,
            },
          };
        }),
      });
    } else if (m.kind === 'counter') {
      out.push({
        ...base,
        dataPointType: DataPointType.SUM,
        isMonotonic: true,
        dataPoints: m.points.map((p) => ({ startTime, endTime, attributes: p.attributes, value: p.value as number })),
      });
    } else {
      out.push({
        ...base,
        dataPointType: DataPointType.GAUGE,
        dataPoints: m.points.map((p) => ({
          startTime: endTime,
          endTime,
          attributes: p.attributes,
          value: p.value as number,
        })),
      });
    }
  }
  return out;
}

/** The registry as a source for the SDK's readers (`metricProducers`). */
export function registryProducer(registry: MetricsRegistry, scope = 'containerd-shim-lcow'): MetricProducer {
  return {
    async collect(): Promise<CollectionResult> {
      return {
        // Readers replace a producer's resource with their provider's.
        resourceMetrics: {
          resource: emptyResource(),
          scopeMetrics: [{ scope: { name: scope }, metrics: toMetricData(registry.snapshot()) }],
        },
        errors: [],
      };
    },
  };
}

export interface MetricsExport {
  forceFlush(): Promise<void>;
  shutdown(): Promise<void>;
}

/** Periodic export of `registry` to the exporters OTEL_METRICS_EXPORTER names; undefined when none. */
export async function startMetricsExport(
  registry: MetricsRegistry,
  serviceName: string,
  env: NodeJS.ProcessEnv = process.env,
): Promise<MetricsExport | undefined> {
  const names = (env.OTEL_METRICS_EXPORTER || 'otlp').split(',').map((s) => s.trim().toLowerCase());
  const interval = Number(env.OTEL_METRIC_EXPORT_INTERVAL) > 0 ? Number(env.OTEL_METRIC_EXPORT_INTERVAL) : 60_000;
  const readers: PeriodicExportingMetricReader[] = [];
  for (const name of names) {
    let exporter: PushMetricExporter | undefined;
    if (name === 'otlp') {
      const { OTLPMetricExporter } = await import('@opentelemetry/exporter-metrics-otlp-http');
      exporter = new OTLPMetricExporter();
    } else if (name === 'console') exporter = new ConsoleMetricExporter();
    if (exporter)
      readers.push(
        new PeriodicExportingMetricReader({
          exporter,
          exportIntervalMillis: interval,
          exportTimeoutMillis: Math.min(30_000, interval),
          metricProducers: [registryProducer(registry)],
        }),
      );
  }
  if (readers.length === 0) return undefined;
  const provider = new MeterProvider({
    resource: defaultResource()
      .merge(resourceFromAttributes({ 'service.name': serviceName }))
      .merge(detectResources({ detectors: [envDetector] })),
    readers,
  });
  return {
    forceFlush: () => provider.forceFlush(),
    shutdown: () => provider.shutdown(),
  };
}
