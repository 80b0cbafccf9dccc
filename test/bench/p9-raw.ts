// Raw 9P side by side: our server (`lcowctl 9p serve`) and Debian's diod serving one directory, driven by the same
// C load generator (test/bench/p9load.c, built here with gcc) over loopback TCP. Each workload runs at 1
// connection x 1 outstanding request and at 4 connections x 8 outstanding; rows report ops/s, p50/p99 latency
// and the server's CPU time per op (utime+stime of the server process from /proc/PID/stat over exactly the
// measured window, read by the client), ours over diod. The client reports its own CPU too, to show it is not
// the bottleneck.
//
// The host is shared (other agents' VMs): every row runs P9RAW_ROUNDS rounds, alternating which server goes
// first, and reports medians; ratios are medians of the per-round ratios (ours and diod back to back). CPU per op
// is the steadier figure. msize 65536 for both (diod's maximum), so a "64 KiB" read or write carries msize - 24 =
// 65512 bytes, what the Linux client sends at that msize. The 1 MiB rows are ours at msize 1 MiB + 24; diod
// cannot negotiate that msize, so its figures there are its best (65512-byte ops at msize 65536), in MB/s, for
// reference.
// P9RAW_BASELINE=path/to/lcowctl.js adds a third server (another build) to every row.
import { execFile } from 'node:child_process';
import {
  chmodSync,
  existsSync,
  mkdirSync,
  mkdtempSync,
  rmSync,
  writeFileSync,
  openSync,
  closeSync,
  writeSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { promisify } from 'node:util';
import type { BenchRow, BenchSuite } from './harness.js';
import { repoRoot } from '../helpers/qemu-guest.js';
import {
  diodUnavailable,
  ourServerPath,
  startDiod,
  startOurServer,
  type RunningServer,
} from '../helpers/p9-servers.js';

const execFileP = promisify(execFile);

const ROUNDS = Math.max(1, Number(process.env.P9RAW_ROUNDS ?? 7));
const SECS = Number(process.env.P9RAW_SECS ?? 1);
const BASELINE = process.env.P9RAW_BASELINE;
const ONLY = process.env.P9RAW_ONLY?.split(',');
const MSIZE = 65536;
const IO = MSIZE - 24;
const BIG_MSIZE = 1024 * 1024 + 24;
const FILE_SIZE = 64 * 1024 * 1024;
const SOURCE = join(repoRoot, 'test/bench/p9load.c');
const BINARY = join(repoRoot, 'build/bench/p9load');

interface Workload {
  /** Row name. */
  name: string;
  op: 'getattr' | 'walk' | 'read' | 'write' | 'create' | 'readdir' | 'mix';
  conns: number;
  depth: number;
  bytes?: number;
  /** msize ours is asked for (diod always gets MSIZE, its maximum). */
  oursMsize?: number;
  /** Compare MB/s instead of ops/s (the servers move different sizes per op). */
  throughput?: boolean;
}

const SHAPES: Array<[number, number]> = [
  [1, 1],
  [4, 8],
];

function workloads(): Workload[] {
  const base: Array<Omit<Workload, 'conns' | 'depth'>> = [
    { name: 'getattr', op: 'getattr' },
    { name: 'walk + clunk', op: 'walk' },
    { name: `read ${IO} B`, op: 'read', bytes: IO },
    { name: `write ${IO} B`, op: 'write', bytes: IO },
    { name: 'create (walk, lcreate, clunk, walk, remove)', op: 'create' },
    { name: 'readdir of 1000 entries (walk, lopen, readdir x2, clunk)', op: 'readdir' },
    // What a guest's lookup + stat and a file's life look like: request types alternate, as from a real client.
    { name: 'mixed: walk, getattr, clunk + the create chain', op: 'mix' },
    { name: 'read 1 MiB (ours msize 1 MiB; diod 65512 B at msize 65536)', op: 'read', throughput: true },
    { name: 'write 1 MiB (ours msize 1 MiB; diod 65512 B at msize 65536)', op: 'write', throughput: true },
  ];
  const out: Workload[] = [];
  for (const w of base) {
    if (ONLY && !ONLY.includes(w.op)) continue;
    for (const [conns, depth] of SHAPES) {
      if (w.throughput) out.push({ ...w, conns, depth, bytes: 1024 * 1024, oursMsize: BIG_MSIZE });
      else out.push({ ...w, conns, depth });
    }
  }
  return out;
}

interface LoadResult {
  ops: number;
  requests: number;
  secs: number;
  opsPerSec: number;
  p50us: number;
  p99us: number;
  clientCpu: number;
  serverCpu: number;
  bytes: number;
  msize: number;
}

async function buildClient(): Promise<void> {
  mkdirSync(join(repoRoot, 'build/bench'), { recursive: true });
  await execFileP('gcc', ['-O2', '-Wall', '-o', BINARY, SOURCE, '-lm']);
}

function makeExport(): string {
  const dir = mkdtempSync(join(tmpdir(), 'p9raw-'));
  chmodSync(dir, 0o755);
  writeFileSync(join(dir, 'small'), 'x');
  const chunk = Buffer.alloc(1 << 20);
  for (let i = 0; i < chunk.length; i++) chunk[i] = (i * 131 + 7) & 0xff;
  for (const name of ['data', 'wdata']) {
    const fd = openSync(join(dir, name), 'w');
    try {
      for (let off = 0; off < FILE_SIZE; off += chunk.length) writeSync(fd, chunk);
    } finally {
      closeSync(fd);
    }
  }
  mkdirSync(join(dir, 'dir1000'));
  for (let i = 0; i < 1000; i++) writeFileSync(join(dir, 'dir1000', `entry-${String(i).padStart(4, '0')}`), '');
  return dir;
}

async function load(server: RunningServer, w: Workload, kind: 'ours' | 'diod'): Promise<LoadResult> {
  const big = kind === 'ours' && w.oursMsize !== undefined;
  const msize = big ? w.oursMsize! : MSIZE;
  const bytes = w.bytes === undefined ? IO : big ? w.bytes : IO;
  const args = [
    '--port',
    String(server.port),
    '--aname',
    server.aname,
    '--op',
    w.op,
    '--conns',
    String(w.conns),
    '--depth',
    String(w.depth),
    '--secs',
    String(SECS),
    '--msize',
    String(msize),
    '--bytes',
    String(bytes),
    '--file-size',
    String(FILE_SIZE),
    '--server-pid',
    String(server.pid),
  ];
  const { stdout } = await execFileP(BINARY, args, { timeout: 120_000 });
  const r = JSON.parse(stdout.trim()) as LoadResult;
  if (r.msize !== msize) throw new Error(`${kind}: msize ${r.msize} negotiated, wanted ${msize}`);
  return r;
}

function median(xs: number[]): number {
  const v = [...xs].sort((a, b) => a - b);
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

interface Summary {
  rate: number;
  p50: number;
  p99: number;
  cpuPerOp: number;
  clientCpuShare: number;
}

/** Throughput of one run: ops/s, or MB/s for the throughput rows. */
function rateOf(r: LoadResult, throughput: boolean): number {
  return throughput ? (r.opsPerSec * r.bytes) / 1e6 : r.opsPerSec;
}

/** Server CPU per op (µs), or per MB for the throughput rows (the servers move different sizes per op). */
function cpuOf(r: LoadResult, throughput: boolean): number {
  return (r.serverCpu / (throughput ? (r.ops * r.bytes) / 1e6 : r.ops)) * 1e6;
}

function summarize(rs: LoadResult[], throughput: boolean): Summary {
  return {
    rate: median(rs.map((r) => rateOf(r, throughput))),
    p50: median(rs.map((r) => r.p50us)),
    p99: median(rs.map((r) => r.p99us)),
    cpuPerOp: median(rs.map((r) => cpuOf(r, throughput))),
    clientCpuShare: Math.max(...rs.map((r) => r.clientCpu / r.secs)),
  };
}

/**
 * Median over rounds of ours/other in the same round: the two ran back to back, so a round's ratio sees the
 * host's load alike on both sides (steadier than the ratio of the two medians).
 */
function pairedRatio(a: LoadResult[], b: LoadResult[], f: (r: LoadResult) => number): number {
  return median(a.map((r, i) => f(r) / f(b[i]!)));
}

export const suite: BenchSuite = {
  name: 'p9-raw',
  unavailable: async () => {
    const d = await diodUnavailable();
    if (d) return d;
    if (!existsSync(ourServerPath())) return `${ourServerPath()} is not built (make build)`;
    try {
      await execFileP('gcc', ['--version']);
    } catch {
      return 'gcc is not installed (the load generator is built at bench time)';
    }
    return undefined;
  },
  run: async (): Promise<BenchRow[]> => {
    await buildClient();
    const dir = makeExport();
    const servers: RunningServer[] = [];
    const rows: BenchRow[] = [];
    try {
      const ours = await startOurServer({ exportDir: dir });
      servers.push(ours);
      const diod = await startDiod({ exportDir: dir });
      servers.push(diod);
      const base = BASELINE ? await startOurServer({ exportDir: dir, cli: BASELINE }) : undefined;
      if (base) servers.push(base);
      for (const w of workloads()) {
        const got = new Map<string, LoadResult[]>();
        for (let r = 0; r < ROUNDS; r++) {
          const order: Array<['ours' | 'diod' | 'base', RunningServer]> = [
            ['ours', ours],
            ['diod', diod],
          ];
          if (base) order.push(['base', base]);
          if (r % 2 === 1) order.reverse();
          for (const [name, srv] of order) {
            const res = await load(srv, w, name === 'diod' ? 'diod' : 'ours');
            got.set(name, [...(got.get(name) ?? []), res]);
          }
        }
        const tp = w.throughput ?? false;
        const [ro, rd, rb] = [got.get('ours')!, got.get('diod')!, got.get('base')];
        const o = summarize(ro, tp);
        const d = summarize(rd, tp);
        const rateRatio = pairedRatio(ro, rd, (r) => rateOf(r, tp));
        const cpuRatio = pairedRatio(ro, rd, (r) => cpuOf(r, tp));
        const cpuUnit = tp ? 'µs/MB' : 'µs/op';
        rows.push({
          suite: 'p9-raw',
          name: `${w.name}, ${w.conns}x${w.depth} (median of ${ROUNDS})`,
          value: o.rate,
          unit: tp ? 'MB/s' : 'ops/s',
          extra: {
            diod: d.rate,
            'ours/diod': rateRatio,
            'p50 µs ours/diod': `${o.p50.toFixed(0)}/${d.p50.toFixed(0)}`,
            'p99 µs ours/diod': `${o.p99.toFixed(0)}/${d.p99.toFixed(0)}`,
            'server cpu ours/diod': `${o.cpuPerOp.toFixed(1)}/${d.cpuPerOp.toFixed(1)} ${cpuUnit}`,
            'cpu ratio': cpuRatio,
            'client cpu max': `${(Math.max(o.clientCpuShare, d.clientCpuShare) * 100).toFixed(0)}%`,
            ...(rb
              ? {
                  baseline: summarize(rb, tp).rate,
                  'ours/baseline': pairedRatio(ro, rb, (r) => rateOf(r, tp)),
                  'baseline/diod': pairedRatio(rb, rd, (r) => rateOf(r, tp)),
                  'baseline cpu ratio': pairedRatio(rb, rd, (r) => cpuOf(r, tp)),
                }
              : {}),
          },
        });
        process.stderr.write(
          `p9-raw: ${rows[rows.length - 1]!.name}: ours/diod ${rateRatio.toFixed(2)}, cpu ${cpuRatio.toFixed(2)}\n`,
        );
      }
      for (const s of servers) if (!s.running()) throw new Error(`${s.kind} server exited during the run:\n${s.log()}`);
    } finally {
      await Promise.all(servers.map((s) => s.stop()));
      rmSync(dir, { recursive: true, force: true });
    }
    return rows;
  },
};
