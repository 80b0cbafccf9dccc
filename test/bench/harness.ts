// Benchmark harness: each suite returns rows; the runner prints them as a table and writes JSON.

export interface BenchRow {
  suite: string;
  /** What was measured, e.g. "unary round trips, 64 callers". */
  name: string;
  value: number;
  unit: string;
  /** Extra figures for the same row (p50, p99, ratio against a reference...). */
  extra?: Record<string, number | string>;
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
