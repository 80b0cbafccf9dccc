// The metrics registry, its OpenTelemetry form, and the 9P metrics checked against a known workload: every
// request the client sends is counted once under its operation, and the bytes match what crossed the socket.
import assert from 'node:assert/strict';
import { MeterProvider, MetricReader, DataPointType, type HistogramMetricData } from '@opentelemetry/sdk-metrics';
import { MsgType } from '../../../src/p9/messages.js';
import net from 'node:net';
import { P9Client, P9ClientError } from '../../helpers/p9client.js';
import {
  histogramQuantile,
  MAX_SERIES,
  MetricsRegistry,
  type HistogramValue,
  type MetricsSnapshot,
} from '../../../src/telemetry/metrics.js';
import { registryProducer, toMetricData } from '../../../src/telemetry/otel-metrics.js';
import { CLOSED_SHARE, P9_METRICS, P9Metrics, p9OpName } from '../../../src/telemetry/p9-metrics.js';
import { Fixture, until } from '../p9/fixture.js';

class PullReader extends MetricReader {
  protected async onForceFlush(): Promise<void> {}
  protected async onShutdown(): Promise<void> {}
}

const points = (s: MetricsSnapshot, name: string) => s.metrics.find((m) => m.name === name)?.points ?? [];

describe('telemetry/metrics', () => {
  it('counters and histograms per attribute set; bucket bounds are inclusive upper bounds', () => {
    const r = new MetricsRegistry();
    const c = r.counter('c', 'a counter');
    c.add(2, { a: 'x' });
    c.bind({ a: 'x' }).add(3);
    c.add(1, { a: 'y' });
    const h = r.histogram('h', 'a histogram', 's', [1, 2, 5]);
    for (const v of [0.5, 1, 1.5, 2, 5, 7]) h.record(v, { op: 'read' });
    const s = r.snapshot();
    assert.deepEqual(
      points(s, 'c').map((p) => [p.attributes.a, p.value]),
      [
        ['x', 5],
        ['y', 1],
      ],
    );
    const hv = points(s, 'h')[0]!.value as HistogramValue;
    assert.deepEqual(hv.counts, [2, 2, 1, 1]);
    assert.equal(hv.count, 6);
    assert.equal(hv.sum, 17);
    assert.equal(hv.min, 0.5);
    assert.equal(hv.max, 7);
    assert.equal(histogramQuantile(hv, 0.5), 2);
    assert.equal(histogramQuantile(hv, 1), 7);
  });

  it('gauges are observed at collection; a removed observer stops reporting', () => {
    const r = new MetricsRegistry();
    let n = 3;
    const off = r.gauge('g', 'a gauge', '1', () => [{ value: n }]);
    assert.equal(points(r.snapshot(), 'g')[0]!.value, 3);
    n = 4;
    assert.equal(points(r.snapshot(), 'g')[0]!.value, 4);
    off();
    assert.deepEqual(points(r.snapshot(), 'g'), []);
  });

  it('a metric holds at most MAX_SERIES attribute sets (the rest share an overflow series)', () => {
    const r = new MetricsRegistry();
    const c = r.counter('c', 'x');
    for (let i = 0; i < MAX_SERIES + 50; i++) c.add(1, { id: String(i) });
    const ps = points(r.snapshot(), 'c');
    assert.equal(ps.length, MAX_SERIES + 1);
    assert.equal(ps.find((p) => p.attributes['otel.metric.overflow'] === 'true')?.value, 50);
  });

  it('reads as OpenTelemetry metrics through an SDK reader (cumulative sums, histograms, gauges)', async () => {
    const r = new MetricsRegistry();
    r.counter('lcow.c', 'c', 'By').add(10, { k: 'v' });
    r.histogram('lcow.h', 'h', 's', [0.1, 1]).record(0.5, { op: 'x' });
    r.gauge('lcow.g', 'g', '1', () => [{ value: 2 }]);
    const reader = new PullReader({ metricProducers: [registryProducer(r)] });
    const provider = new MeterProvider({ readers: [reader] });
    try {
      const { resourceMetrics } = await reader.collect();
      const ours = resourceMetrics.scopeMetrics.find((s) => s.scope.name === 'containerd-shim-lcow');
      assert.ok(ours);
      const byName = new Map(ours.metrics.map((m) => [m.descriptor.name, m]));
      assert.equal(byName.get('lcow.c')?.dataPointType, DataPointType.SUM);
      assert.equal(byName.get('lcow.c')?.dataPoints[0]?.value, 10);
      assert.equal(byName.get('lcow.c')?.descriptor.unit, 'By');
      const h = byName.get('lcow.h') as HistogramMetricData;
      assert.equal(h.dataPointType, DataPointType.HISTOGRAM);
      assert.deepEqual(h.dataPoints[0]!.value.buckets, { boundaries: [0.1, 1], counts: [0, 1, 0] });
      assert.equal(h.dataPoints[0]!.attributes.op, 'x');
      assert.equal(byName.get('lcow.g')?.dataPointType, DataPointType.GAUGE);
    } finally {
      await provider.shutdown();
    }
    assert.equal(toMetricData(r.snapshot()).length, 3);
  });

  it("9P: a closed share's series are folded into share=(closed) and dropped; totals stay", () => {
    const registry = new MetricsRegistry();
    const ev = (type: number, error = false) => ({
      type,
      seconds: 0.001,
      bytesIn: 10,
      bytesOut: 20,
      error,
      session: 1,
      fids: 1,
    });
    const live = new P9Metrics({ share: 'live', path: '/l' }, registry);
    live.request(ev(MsgType.Tread));
    for (const id of ['c1', 'c2']) {
      const m = new P9Metrics({ share: id, path: `/${id}` }, registry);
      m.request(ev(MsgType.Tread));
      m.request(ev(MsgType.Twalk, true));
      m.serverClosed();
    }
    const s = registry.snapshot();
    const shares = (name: string) => [...new Set(points(s, name).map((p) => p.attributes.share))].sort();
    assert.deepEqual(shares(P9_METRICS.duration), [CLOSED_SHARE.share, 'live']);
    assert.deepEqual(shares(P9_METRICS.errors), [CLOSED_SHARE.share, 'live']);
    assert.deepEqual(shares(P9_METRICS.bytes), [CLOSED_SHARE.share, 'live']);
    const closed = (name: string, op: string, direction?: string) =>
      points(s, name).find(
        (p) =>
          p.attributes.share === CLOSED_SHARE.share &&
          p.attributes.op === op &&
          (direction === undefined || p.attributes.direction === direction),
      )?.value;
    assert.equal((closed(P9_METRICS.duration, 'read') as HistogramValue).count, 2);
    assert.equal((closed(P9_METRICS.duration, 'walk') as HistogramValue).count, 2);
    assert.equal(closed(P9_METRICS.errors, 'walk'), 2);
    assert.equal(closed(P9_METRICS.bytes, 'read', 'in'), 20);
    assert.equal(closed(P9_METRICS.bytes, 'read', 'out'), 40);
  });

  it('9P: a known workload gives exact per-operation counts, errors, bytes, and fids per connection', async () => {
    const registry = new MetricsRegistry();
    const observer = new P9Metrics({ share: 's1', path: '/x' }, registry);
    const fx = await Fixture.start({ observer });
    try {
      fx.file('dir/a.txt', 'hello world');
      const sent = { n: 0 };
      const received = { n: 0 };
      // The client's socket counts what crosses it.
      const sock = net.connect({ port: fx.port, host: '127.0.0.1' });
      await new Promise<void>((res, rej) => sock.once('connect', res).once('error', rej));
      const write = sock.write.bind(sock) as (b: Buffer) => boolean;
      (sock as unknown as { write: (b: Buffer) => boolean }).write = (b: Buffer) => ((sent.n += b.length), write(b));
      sock.on('data', (d: Buffer) => (received.n += d.length));
      const c = new P9Client(sock);
      fx.clients.push(c);
      await c.version(65536);
      const root = (await c.attach('test')).fid;
      // 1 version, 1 attach, then: 3 walks (one fails), 1 lopen, 2 reads, 1 getattr, 2 clunks.
      const { fid: dir } = await c.walk(root, ['dir']);
      const { fid: file } = await c.walk(dir, ['a.txt']);
      await assert.rejects(c.walk(dir, ['missing']), P9ClientError);
      await c.lopen(file, 0);
      assert.equal((await c.read(file, 0, 5)).toString(), 'hello');
      assert.equal((await c.read(file, 5, 100)).toString(), ' world');
      await c.getattr(file);
      // Fids held now: root, dir, file.
      let s = registry.snapshot();
      assert.deepEqual(
        points(s, P9_METRICS.fids).map((p) => p.value),
        [3],
      );
      await c.clunk(file);
      await c.clunk(dir);
      s = registry.snapshot();
      const count = (op: string): number =>
        (points(s, P9_METRICS.duration).find((p) => p.attributes.op === op)?.value as HistogramValue | undefined)
          ?.count ?? 0;
      assert.deepEqual(
        Object.fromEntries(
          ['version', 'attach', 'walk', 'lopen', 'read', 'getattr', 'clunk'].map((op) => [op, count(op)]),
        ),
        { version: 1, attach: 1, walk: 3, lopen: 1, read: 2, getattr: 1, clunk: 2 },
      );
      assert.equal(
        points(s, P9_METRICS.duration).reduce((n, p) => n + (p.value as HistogramValue).count, 0),
        11,
        'no other operation counted',
      );
      assert.deepEqual(
        points(s, P9_METRICS.errors)
          .filter((p) => (p.value as number) > 0)
          .map((p) => [p.attributes.op, p.value]),
        [['walk', 1]],
      );
      const total = (dir: string): number =>
        points(s, P9_METRICS.bytes)
          .filter((p) => p.attributes.direction === dir)
          .reduce((n, p) => n + (p.value as number), 0);
      assert.equal(total('in'), sent.n, 'bytes in = bytes the client sent');
      assert.equal(total('out'), received.n, 'bytes out = bytes the client received');
      const readOut = points(s, P9_METRICS.bytes).find(
        (p) => p.attributes.op === 'read' && p.attributes.direction === 'out',
      );
      // Rread: size[4] type[1] tag[2] count[4] data, twice (5 and 6 bytes of data).
      assert.equal(readOut?.value, 2 * 11 + 11);
      assert.deepEqual(
        points(s, P9_METRICS.fids).map((p) => [p.attributes.share, p.attributes.path, p.value]),
        [['s1', '/x', 1]],
      );
      // Disconnect: the connection's gauge goes; counters stay.
      c.close();
      await until(() => points(registry.snapshot(), P9_METRICS.fids).length === 0);
      assert.equal(count('walk'), 3);
    } finally {
      await fx.stop();
    }
    assert.deepEqual(points(registry.snapshot(), P9_METRICS.fids), [], 'server closed: no gauge');
  });

  it('names every 9P2000.L request type', () => {
    assert.equal(p9OpName(MsgType.Twalk), 'walk');
    assert.equal(p9OpName(MsgType.Tlopen), 'lopen');
    assert.equal(p9OpName(MsgType.Treaddir), 'readdir');
    assert.equal(p9OpName(255), 'unknown-255');
  });
});
