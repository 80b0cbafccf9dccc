// Benchmark harness: each suite returns rows; the runner prints them as a table and writes JSON.

export interface BenchRow {
  suite: string;
  /** What was measured, e.g. "unary round trips, 64 callers". */
  name: string;
  value: number;
  unit: string;
  /** Extra figures for the same row (p50, p99, ratio against a reference...). */
  extra?: Record<string, number | string>;
  /** A target this row is judged against, and the figure measured before the work on it ("today"). */
  target?: { today: string; goal: string; met: boolean };
}

export interface BenchSuite {
  name: string;
  /** Why the suite cannot run here, or undefined when it can. */
  unavailable?: () => Promise<string | undefined>;
  run: () => Promise<BenchRow[]>;
}

export function percentile(sortedAscending: number[], p: number): number {
  if (sortedAscending.length === 0) return NaN;
  const idx = Math.min(sortedAscending.length - 1, Math.max(0, Math.ceil((p / 100) * sortedAscending.length) - 1));
  return sortedAscending[idx]!;
}

export function formatTable(rows: BenchRow[]): string {
  const extraKeys = [...new Set(rows.flatMap((r) => Object.keys(r.extra ?? {})))];
  const header = ['suite', 'benchmark', 'value', 'unit', ...extraKeys];
  const fmt = (v: number | string | undefined): string =>
    v === undefined ? '' : typeof v === 'number' ? (Number.isInteger(v) ? String(v) : v.toFixed(2)) : v;
  const body = rows.map((r) => [r.suite, r.name, fmt(r.value), r.unit, ...extraKeys.map((k) => fmt(r.extra?.[k]))]);
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((row) => row[i]!.length)));
  const line = (cells: string[]) => '| ' + cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ') + ' |';
  return [line(header), '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|', ...body.map(line)].join('\n');
}

/** The targets table: measure | today | now | target | met. */
export function formatTargets(rows: BenchRow[]): string {
  const t = rows.filter((r) => r.target);
  if (t.length === 0) return '';
  const fmt = (r: BenchRow): string =>
    `${Number.isInteger(r.value) ? r.value : r.value.toFixed(r.unit === 'x' ? 2 : 1)} ${r.unit === 'x' ? '×' : r.unit}`;
  const body = t.map((r) => [r.name, r.target!.today, fmt(r), r.target!.goal, r.target!.met ? 'yes' : 'NO']);
  const header = ['measure', 'today', 'now', 'target', 'met'];
  const widths = header.map((h, i) => Math.max(h.length, ...body.map((b) => b[i]!.length)));
  const line = (cells: string[]) => '| ' + cells.map((c, i) => c.padEnd(widths[i]!)).join(' | ') + ' |';
  return [line(header), '|' + widths.map((w) => '-'.repeat(w + 2)).join('|') + '|', ...body.map(line)].join('\n');
}
