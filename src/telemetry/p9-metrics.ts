// 9P metrics for one share's server: the P9Observer the shim gives each P9Server. Per operation: a latency
// histogram (its count is the operation count), errors, bytes in and out; per connection: fids held.
import { MsgType } from '../p9/messages.js';
import type { P9Observer, P9RequestEvent } from '../p9/observer.js';
import {
  metrics as processMetrics,
  type CounterSeries,
  type HistogramSeries,
  type MetricsRegistry,
} from './metrics.js';

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

  private series(type: number): OpSeries {
    let s = this.ops[type];
    if (!s) {
      const r = this.registry;
      const op = { ...this.share, op: p9OpName(type) };
      s = {
        duration: r.histogram(P9_METRICS.duration, '9P request latency, arrival to reply', 's').bind(op),
        errors: r.counter(P9_METRICS.errors, '9P requests answered with Rlerror').bind(op),
        bytesIn: r.counter(P9_METRICS.bytes, '9P bytes received and sent', 'By').bind({ ...op, direction: 'in' }),
        bytesOut: r.counter(P9_METRICS.bytes, '9P bytes received and sent', 'By').bind({ ...op, direction: 'out' }),
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

  /** The share's server closed: its connections' gauge goes (its counters stay: they are cumulative). */
  serverClosed(): void {
    this.fids.clear();
    this.unobserve();
  }
}
