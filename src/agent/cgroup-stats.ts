// A container's stats read from its cgroup v2 directory, in the shape of runc's `events --stats` JSON (RuncStats),
// for OCI runtimes without that command (crun). The UVM mounts only cgroup v2 (uvm-init.sh).
import { readFile } from 'node:fs/promises';
import { join } from 'node:path';
import type { RuncStats } from './runc.js';

/** runc's "no limit" (2^64 - 1, which a JS number rounds to 2^64; stats.ts clamps it); cgroup v2 writes `max`. */
const NO_LIMIT = 2 ** 64;

/** `key value` lines (cpu.stat, memory.stat) as numbers. */
export function parseFlatKeyed(text: string): Record<string, number> {
  const out: Record<string, number> = {};
  for (const line of text.split('\n')) {
    const [k, v] = line.trim().split(/\s+/);
    if (k && v !== undefined && /^\d+$/.test(v)) out[k] = Number(v);
  }
  return out;
}

/** One value file: a number, `max` (no limit), or undefined when absent (controller off). */
export function parseSingle(text: string | undefined): number | undefined {
  const t = text?.trim();
  if (t === undefined || t === '') return undefined;
  if (t === 'max') return NO_LIMIT;
  return /^\d+$/.test(t) ? Number(t) : undefined;
}

/** Builds RuncStats from the files of one cgroup v2 directory (name -> content; absent files left out). */
export function statsFromCgroupFiles(files: Record<string, string | undefined>): RuncStats {
  const cpu = parseFlatKeyed(files['cpu.stat'] ?? '');
  const mem = parseFlatKeyed(files['memory.stat'] ?? '');
  const us2ns = (v: number | undefined): number | undefined => (v === undefined ? undefined : v * 1000);
  return {
    cpu: {
      usage: { total: us2ns(cpu.usage_usec), user: us2ns(cpu.user_usec), kernel: us2ns(cpu.system_usec) },
      throttling: {
        periods: cpu.nr_periods,
        throttledPeriods: cpu.nr_throttled,
        throttledTime: us2ns(cpu.throttled_usec),
      },
    },
    memory: {
      usage: {
        usage: parseSingle(files['memory.current']),
        limit: parseSingle(files['memory.max']),
        max: parseSingle(files['memory.peak']),
      },
      swap: { usage: parseSingle(files['memory.swap.current']), limit: parseSingle(files['memory.swap.max']) },
      raw: mem,
    },
    pids: { current: parseSingle(files['pids.current']), limit: parseSingle(files['pids.max']) },
  };
}

const FILES = [
  'cpu.stat',
  'memory.stat',
  'memory.current',
  'memory.max',
  'memory.peak',
  'memory.swap.current',
  'memory.swap.max',
  'pids.current',
  'pids.max',
];

/** Reads the stats of cgroup v2 directory `dir`; throws when the directory is gone. */
export async function cgroupV2Stats(dir: string): Promise<RuncStats> {
  const files: Record<string, string | undefined> = {};
  await Promise.all(
    FILES.map(async (f) => {
      files[f] = await readFile(join(dir, f), 'utf8').catch((err: NodeJS.ErrnoException) => {
        if (f === 'cpu.stat') throw new Error(`cgroup ${dir}: ${err.message}`);
        return undefined;
      });
    }),
  );
  return statsFromCgroupFiles(files);
}
