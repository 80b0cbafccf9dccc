// 9P metrics for one share's server: the P9Observer the shim gives each P9Server. Per operation: a latency
// histogram (its count is the operation count), errors, bytes in and out; per connection: fids held.
import { MsgType } from '../p9/messages.js';
import type { P9Observer, P9RequestEvent } from '../p9/observer.js';
import {
  metrics as processMetrics,
  type Counter,
  type CounterSeries,
  type Histogram,
  type HistogramSeries,
  type MetricsRegistry,
} from './metrics.js';

/** The attributes closed shares' operations are summed under. */
export const CLOSED_SHARE = { share: '(closed)', path: '' } as const;

export const P9_METRICS = {
  duration: 'lcow.p9.request.duration',
  errors: 'lcow.p9.request.errors',
  bytes: 'lcow.p9.bytes',
  fids: 'lcow.p9.fids',
} as const;

/** "walk" for Twalk (110), "unknown-N" for a type we have no name for. */
export function p9OpName(type: number): string {
  return opNames[type] ?? `unknown-${type}`;
}

const opNames: Record<number, string> = {};
for (const [name, n] of Object.entries(MsgType)) if (name.startsWith('T')) opNames[n] = name.slice(1).toLowerCase();

interface OpSeries {
  duration: HistogramSeries;
  errors: CounterSeries;
  bytesIn: CounterSeries;
  bytesOut: CounterSeries;
}

export class P9Metrics implements P9Observer {
  /** Series by T-message type: recording is an array index, no attribute lookup. */
  private readonly ops: Array<OpSeries | undefined> = new Array(256);
  /** Fids per open connection (the latest count each reply reported). */
  private readonly fids = new Map<number, number>();
  private readonly unobserve: () => void;

  constructor(
    /** The share's attributes: id and host path. */
    private readonly share: { share: string; path: string },
    private readonly registry: MetricsRegistry = processMetrics,
  ) {
    this.unobserve = registry.gauge(P9_METRICS.fids, 'Fids held per 9P connection', '{fid}', () =>
      [...this.fids].map(([session, value]) => ({ attributes: { ...share, connection: String(session) }, value })),
    );
  }

  private metrics(): { duration: Histogram; errors: Counter; bytes: Counter } {
    const r = this.registry;
    return {
      duration: r.histogram(P9_METRICS.duration, '9P request latency, arrival to reply', 's'),
      errors: r.counter(P9_METRICS.errors, '9P requests answered with Rlerror'),
      bytes: r.counter(P9_METRICS.bytes, '9P bytes received and sent', 'By'),
    };
  }

  private series(type: number): OpSeries {
    let s = this.ops[type];
    if (!s) {
      const m = this.metrics();
      const op = { ...this.share, op: p9OpName(type) };
      s = {
        duration: m.duration.bind(op),
        errors: m.errors.bind(op),
        bytesIn: m.bytes.bind({ ...op, direction: 'in' }),
        bytesOut: m.bytes.bind({ ...op, direction: 'out' }),
      };
      this.ops[type] = s;
    }
    return s;
  }

  request(e: P9RequestEvent): void {
    const s = this.series(e.type & 0xff);
    s.duration.record(e.seconds);
    s.bytesIn.value += e.bytesIn;
    s.bytesOut.value += e.bytesOut;
    if (e.error) s.errors.value++;
    this.fids.set(e.session, e.fids);
  }

  sessionClosed(session: number): void {
    this.fids.delete(session);
  }

  /**
   * The share's server closed: its connections' gauge goes, and its per-operation series are folded into the
   * series of closed shares (share="(closed)") and dropped. Totals stay cumulative while the series stay bounded
   * by the live shares: a long-lived pod has had one rootfs share per container it ever ran (measured before:
   * 36 series and ~20 KB of shim heap kept per container).
   */
  serverClosed(): void {
    this.fids.clear();
    this.unobserve();
    const m = this.metrics();
    for (let type = 0; type < this.ops.length; type++) {
      const s = this.ops[type];
      if (!s) continue;
      const op = { ...this.share, op: p9OpName(type) };
      const closed = { ...CLOSED_SHARE, op: p9OpName(type) };
      m.duration.bind(closed).merge(s.duration);
      m.errors.bind(closed).value += s.errors.value;
      m.bytes.bind({ ...closed, direction: 'in' }).value += s.bytesIn.value;
      m.bytes.bind({ ...closed, direction: 'out' }).value += s.bytesOut.value;
      m.duration.drop(op);
      m.errors.drop(op);
      m.bytes.drop({ ...op, direction: 'in' });
      m.bytes.drop({ ...op, direction: 'out' });
      this.ops[type] = undefined;
    }
  }
}
