// The shim's metrics: counters, histograms and observed gauges kept by us, read two ways:
//  - snapshot(): plain JSON, what `lcowctl stats` shows through the admin endpoint (always on);
//  - as OpenTelemetry metrics: otel-metrics.ts hands the same data to the OpenTelemetry SDK as a MetricProducer
//    when OTEL_METRICS_EXPORTER asks for export.
// Why not OpenTelemetry's own instruments on the hot path: a Histogram.record() with attributes measured about
// 2.5 µs here (attribute hashing, storage lookup), a fifth of what our 9P server spends on a small request; a
// bound series below is an array index and a few additions. The data model is OpenTelemetry's (cumulative sums,
// explicit-bucket histograms with inclusive upper bounds, gauges observed at collection).

export type Attributes = Readonly<Record<string, string>>;

export type MetricKind = 'counter' | 'histogram' | 'gauge';

export interface MetricInfo {
  name: string;
  description: string;
  unit: string;
}

export interface HistogramValue {
  count: number;
  sum: number;
  min: number;
  max: number;
  /** Inclusive upper bounds; counts has one more entry (values above the last bound). */
  bounds: readonly number[];
  counts: number[];
}

export type PointValue = number | HistogramValue;

export interface MetricPoint {
  attributes: Attributes;
  value: PointValue;
}

export interface MetricSnapshot extends MetricInfo {
  kind: MetricKind;
  points: MetricPoint[];
}

/** What `lcowctl stats` receives (JSON). */
export interface MetricsSnapshot {
  /** Start of the cumulative period (the registry's creation). */
  startTime: string;
  time: string;
  metrics: MetricSnapshot[];
}

/** Seconds: from 50 µs (a cached 9P getattr) to 60 s (a UVM boot under TCG). */
export const DURATION_BOUNDS_S: readonly number[] = [
  0.00005, 0.0001, 0.00025, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60,
];

/** Most series per metric: beyond, new attribute sets share one overflow series (a hostile peer cannot grow it). */
export const MAX_SERIES = 2000;
const OVERFLOW: Attributes = { 'otel.metric.overflow': 'true' };

function keyOf(attrs: Attributes): string {
  const keys = Object.keys(attrs);
  if (keys.length === 1) return `${keys[0]}=${attrs[keys[0]!]}`;
  return keys
    .sort()
    .map((k) => `${k}=${attrs[k]}`)
    .join('\u0000');
}

abstract class SeriesMetric<S> {
  protected readonly series = new Map<string, { attributes: Attributes; s: S }>();
  constructor(readonly info: MetricInfo) {}

  protected abstract fresh(): S;

  /** The series for `attrs` (created on first use); keep it to record without a lookup. */
  protected get(attrs: Attributes): S {
    const key = keyOf(attrs);
    let e = this.series.get(key);
    if (!e) {
      if (this.series.size >= MAX_SERIES && attrs !== OVERFLOW) return this.get(OVERFLOW);
      e = { attributes: { ...attrs }, s: this.fresh() };
      this.series.set(key, e);
    }
    return e.s;
  }

  /** Forgets a series (a closed connection's gauge-like counters). */
  drop(attrs: Attributes): void {
    this.series.delete(keyOf(attrs));
  }
}

export class CounterSeries {
  value = 0;
  add(n = 1): void {
    this.value += n;
  }
}

export class Counter extends SeriesMetric<CounterSeries> {
  protected fresh(): CounterSeries {
    return new CounterSeries();
  }
  bind(attrs: Attributes = {}): CounterSeries {
    return this.get(attrs);
  }
  add(n: number, attrs: Attributes = {}): void {
    this.get(attrs).value += n;
  }
  points(): MetricPoint[] {
    return [...this.series.values()].map((e) => ({ attributes: e.attributes, value: e.s.value }));
  }
}

export class HistogramSeries {
  count = 0;
  sum = 0;
  min = Infinity;
  max = -Infinity;
  readonly counts: number[];
  constructor(readonly bounds: readonly number[]) {
    this.counts = new Array<number>(bounds.length + 1).fill(0);
  }
  /** Adds another series' observations (same bounds: both series of one histogram). */
  merge(o: HistogramSeries): void {
    this.count += o.count;
    this.sum += o.sum;
    if (o.min < this.min) this.min = o.min;
    if (o.max > this.max) this.max = o.max;
    for (let i = 0; i < this.counts.length; i++) this.counts[i]! += o.counts[i] ?? 0;
  }
  record(v: number): void {
    this.count++;
    this.sum += v;
    if (v < this.min) this.min = v;
    if (v > this.max) this.max = v;
    const b = this.bounds;
    let i = 0;
    // Linear: ~20 bounds, most values land in the first few.
    while (i < b.length && v > b[i]!) i++;
    this.counts[i]!++;
  }
  value(): HistogramValue {
    return {
      count: this.count,
      sum: this.sum,
      min: this.count ? this.min : 0,
      max: this.count ? this.max : 0,
      bounds: this.bounds,
      counts: [...this.counts],
    };
  }
}

export class Histogram extends SeriesMetric<HistogramSeries> {
  constructor(
    info: MetricInfo,
    readonly bounds: readonly number[] = DURATION_BOUNDS_S,
  ) {
    super(info);
  }
  protected fresh(): HistogramSeries {
    return new HistogramSeries(this.bounds);
  }
  bind(attrs: Attributes = {}): HistogramSeries {
    return this.get(attrs);
  }
  record(v: number, attrs: Attributes = {}): void {
    this.get(attrs).record(v);
  }
  points(): MetricPoint[] {
    return [...this.series.values()].map((e) => ({ attributes: e.attributes, value: e.s.value() }));
  }
}

/** A gauge read at collection time. */
export type Observe = () => Array<{ attributes?: Attributes; value: number }>;

export class MetricsRegistry {
  readonly startTime = new Date();
  private readonly counters = new Map<string, Counter>();
  private readonly histograms = new Map<string, Histogram>();
  private readonly gauges = new Map<string, { info: MetricInfo; observers: Set<Observe> }>();

  counter(name: string, description: string, unit = '1'): Counter {
    let c = this.counters.get(name);
    if (!c) this.counters.set(name, (c = new Counter({ name, description, unit })));
    return c;
  }

  histogram(name: string, description: string, unit = 's', bounds?: readonly number[]): Histogram {
    let h = this.histograms.get(name);
    if (!h) this.histograms.set(name, (h = new Histogram({ name, description, unit }, bounds)));
    return h;
  }

  /** Adds an observer of gauge `name`; returns its removal. Several observers of one gauge add their points. */
  gauge(name: string, description: string, unit: string, observe: Observe): () => void {
    let g = this.gauges.get(name);
    if (!g) this.gauges.set(name, (g = { info: { name, description, unit }, observers: new Set() }));
    const observers = g.observers;
    observers.add(observe);
    return () => observers.delete(observe);
  }

  snapshot(now = new Date()): MetricsSnapshot {
    const metrics: MetricSnapshot[] = [];
    for (const c of this.counters.values()) metrics.push({ ...c.info, kind: 'counter', points: c.points() });
    for (const h of this.histograms.values()) metrics.push({ ...h.info, kind: 'histogram', points: h.points() });
    for (const g of this.gauges.values()) {
      const points: MetricPoint[] = [];
      for (const o of g.observers) {
        try {
          for (const p of o()) points.push({ attributes: p.attributes ?? {}, value: p.value });
        } catch {
          // An observer of something already gone: no points.
        }
      }
      metrics.push({ ...g.info, kind: 'gauge', points });
    }
    return { startTime: this.startTime.toISOString(), time: now.toISOString(), metrics };
  }
}

/** The process's registry: the shim has one pod, so its metrics are the pod's. */
export const metrics = new MetricsRegistry();

/** The value at quantile q (0..1) estimated from a histogram's buckets (upper bound of the bucket it falls in). */
export function histogramQuantile(h: HistogramValue, q: number): number {
  if (h.count === 0) return 0;
  const rank = Math.max(1, Math.ceil(q * h.count));
  let seen = 0;
  for (let i = 0; i < h.counts.length; i++) {
    seen += h.counts[i]!;
    if (seen >= rank) return Math.min(i < h.bounds.length ? h.bounds[i]! : h.max, h.max);
  }
  return h.max;
}
