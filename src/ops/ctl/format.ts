// Human output for lcowctl: aligned tables, durations, sizes.

/** Columns padded to the widest cell; the last column is not padded. */
export function table(header: string[], rows: string[][]): string {
  const widths = header.map((h, i) => Math.max(h.length, ...rows.map((r) => (r[i] ?? '').length)));
  const line = (cells: string[]): string =>
    cells
      .map((c, i) => (i === cells.length - 1 ? c : c.padEnd(widths[i]!)))
      .join('  ')
      .trimEnd();
  return [line(header), ...rows.map(line)].join('\n') + '\n';
}

/** 3d4h, 2h5m, 4m3s, 12s. */
export function duration(ms: number): string {
  if (!Number.isFinite(ms) || ms < 0) return '-';
  const s = Math.floor(ms / 1000);
  const d = Math.floor(s / 86400);
  const h = Math.floor((s % 86400) / 3600);
  const m = Math.floor((s % 3600) / 60);
  if (d > 0) return `${d}d${h}h`;
  if (h > 0) return `${h}h${m}m`;
  if (m > 0) return `${m}m${s % 60}s`;
  return `${s}s`;
}

/** Seconds as µs, ms or s with 3 significant digits. */
export function seconds(v: number): string {
  if (!Number.isFinite(v)) return '-';
  if (v === 0) return '0';
  if (v < 0.001) return `${(v * 1e6).toPrecision(3)}µs`;
  if (v < 1) return `${(v * 1e3).toPrecision(3)}ms`;
  return `${v.toPrecision(3)}s`;
}

export function bytes(n: number | bigint): string {
  let v = Number(n);
  const units = ['B', 'KiB', 'MiB', 'GiB', 'TiB'];
  let u = 0;
  while (v >= 1024 && u < units.length - 1) {
    v /= 1024;
    u++;
  }
  return u === 0 ? `${v}B` : `${v.toFixed(v < 10 ? 1 : 0)}${units[u]}`;
}
