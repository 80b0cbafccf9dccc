// `lcowctl stats POD`: the pod's metrics from its shim (the same registry the OpenTelemetry export reads):
// boot phases, containers, share setup, 9P per share and operation, fids per connection, agent RPC latency.
import {
  histogramQuantile,
  type HistogramValue,
  type MetricSnapshot,
  type MetricsSnapshot,
} from '../../telemetry/metrics.js';
import { P9_METRICS } from '../../telemetry/p9-metrics.js';
import { AGENT_RPC_DURATION } from '../../telemetry/client.js';
import { BOOT_PHASES, BOOT_PHASE_METRIC, SHARE_SETUP_METRIC } from '../../sandbox/qemu/boot-phases.js';
import { POD_METRICS } from '../pod-ops.js';
import { EXIT, parseArgs, usageError } from './args.js';
import { resolvePod, withAdmin } from './discover.js';
import { bytes, seconds, table } from './format.js';
import type { Output } from './main.js';

const find = (s: MetricsSnapshot, name: string): MetricSnapshot | undefined => s.metrics.find((m) => m.name === name);
const hist = (v: unknown): HistogramValue => v as HistogramValue;

/** The human report of a snapshot. */
export function formatStats(pod: string, s: MetricsSnapshot): string {
  const parts: string[] = [`pod ${pod}   metrics since ${s.startTime}\n`];
  const gauge = (name: string): number =>
    (find(s, name)?.points ?? []).reduce((n, p) => n + (typeof p.value === 'number' ? p.value : 0), 0);
  parts.push(`containers running: ${gauge(POD_METRICS.containers)}\n`);

  const boot = find(s, BOOT_PHASE_METRIC)?.points ?? [];
  if (boot.length) {
    const byPhase = new Map(boot.map((p) => [p.attributes.phase ?? '', hist(p.value)]));
    const order = [...BOOT_PHASES, 'total'].filter((p) => byPhase.has(p));
    parts.push(
      '\nUVM boot\n' +
        table(
          ['PHASE', 'TIME'],
          order.map((p) => {
            const h = byPhase.get(p)!;
            return [p, seconds(h.sum / Math.max(1, h.count))];
          }),
        ),
    );
  }

  const shares = find(s, SHARE_SETUP_METRIC)?.points ?? [];
  if (shares.length) {
    const rows = shares.map((p) => {
      const h = hist(p.value);
      return [
        p.attributes.read_only === 'true' ? 'read-only' : 'read-write',
        String(h.count),
        seconds(histogramQuantile(h, 0.5)),
        seconds(h.max),
      ];
    });
    parts.push('\nshare setup\n' + table(['KIND', 'COUNT', 'P50', 'MAX'], rows));
  }

  const dur = find(s, P9_METRICS.duration)?.points ?? [];
  if (dur.length) {
    const errors = find(s, P9_METRICS.errors)?.points ?? [];
    const byteP = find(s, P9_METRICS.bytes)?.points ?? [];
    const key = (a: Record<string, string>): string => `${a.share}\u0000${a.op}`;
    const errBy = new Map(errors.map((p) => [key(p.attributes), p.value as number]));
    const inBy = new Map(
      byteP.filter((p) => p.attributes.direction === 'in').map((p) => [key(p.attributes), p.value as number]),
    );
    const outBy = new Map(
      byteP.filter((p) => p.attributes.direction === 'out').map((p) => [key(p.attributes), p.value as number]),
    );
    const shareIds = [...new Set(dur.map((p) => p.attributes.share ?? ''))].sort();
    for (const share of shareIds) {
      const pts = dur
        .filter((p) => p.attributes.share === share)
        .sort((a, b) => hist(b.value).count - hist(a.value).count);
      const rows = pts.map((p) => {
        const h = hist(p.value);
        const k = key(p.attributes);
        return [
          p.attributes.op ?? '',
          String(h.count),
          String(errBy.get(k) ?? 0),
          seconds(histogramQuantile(h, 0.5)),
          seconds(histogramQuantile(h, 0.99)),
          seconds(h.max),
          bytes(inBy.get(k) ?? 0),
          bytes(outBy.get(k) ?? 0),
        ];
      });
      parts.push(
        `\n9P share ${share} (${pts[0]?.attributes.path ?? ''})\n` +
          table(['OP', 'COUNT', 'ERRORS', 'P50', 'P99', 'MAX', 'IN', 'OUT'], rows),
      );
    }
  }
  const fids = find(s, P9_METRICS.fids)?.points ?? [];
  if (fids.length)
    parts.push(
      '\n9P fids per connection\n' +
        table(
          ['SHARE', 'CONNECTION', 'FIDS'],
          fids.map((p) => [p.attributes.share ?? '', p.attributes.connection ?? '', String(p.value)]),
        ),
    );

  const rpc = find(s, AGENT_RPC_DURATION)?.points ?? [];
  if (rpc.length) {
    const methods = [...new Set(rpc.map((p) => p.attributes.method ?? ''))].sort();
    const rows = methods.map((m) => {
      const ok = rpc.find((p) => p.attributes.method === m && p.attributes.outcome === 'ok');
      const bad = rpc.find((p) => p.attributes.method === m && p.attributes.outcome === 'error');
      const h = ok ? hist(ok.value) : undefined;
      return [
        m,
        String((h?.count ?? 0) + (bad ? hist(bad.value).count : 0)),
        String(bad ? hist(bad.value).count : 0),
        h ? seconds(histogramQuantile(h, 0.5)) : '-',
        h ? seconds(histogramQuantile(h, 0.99)) : '-',
        h ? seconds(h.max) : '-',
      ];
    });
    parts.push('\nagent RPCs\n' + table(['METHOD', 'COUNT', 'ERRORS', 'P50', 'P99', 'MAX'], rows));
  }
  return parts.join('');
}

export async function statsCommand(argv: string[], out: Output): Promise<number> {
  const { common, positional } = parseArgs(argv);
  if (positional.length !== 1) throw usageError('usage: lcowctl stats POD');
  const pod = await resolvePod(common, positional[0], { stopped: false });
  const r = await withAdmin(pod, (a) => a.stats({}, { timeoutMs: 10_000 }));
  const snap = JSON.parse(Buffer.from(r.snapshotJson).toString('utf8')) as MetricsSnapshot;
  if (common.json) out.stdout(JSON.stringify(snap, null, 2) + '\n');
  else out.stdout(formatStats(`${pod.namespace}/${pod.id}`, snap));
  return EXIT.ok;
}
