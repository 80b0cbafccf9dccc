// Linux's own 9P client (Debian guest kernel in QEMU) against our server and against diod, serving the same
// directory with the same mount options, in one guest. Metrics come from `p9battery bench`
// (test/p9-battery/bench.c): sequential 1 MiB write/read, 4 KiB random reads, create/stat/unlink, and a
// small-file tree (create, then read back). P9BENCH_ROUNDS rounds (default 3) of (ours, diod), alternating which
// goes first; each row is the median over rounds with the range, because the host is shared and single runs
// vary by 2x.
//
// The guest uses plain QEMU user networking here ('open'), which measures the servers, not the forwarding.
// The second suite, p9-transport, runs the same guest benchmark through our server (in this process) over
// each user-networking forwarding option (see GuestNetwork in test/helpers/qemu-guest.ts).
import { chmodSync, mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { basename, join } from 'node:path';
import type { BenchRow, BenchSuite } from './harness.js';
import net from 'node:net';
import {
  buildGuestAssets,
  describeRun,
  dialHostfwd,
  guestUnavailable,
  probeAccel,
  runGuest,
  type Accel,
  type GuestAssets,
  type GuestJob,
  type GuestNetwork,
  type Trans,
} from '../helpers/qemu-guest.js';
import { P9Server } from '../../src/p9/server.js';
import {
  diodUnavailable,
  freePort,
  ourServerPath,
  processCpuSeconds,
  startDiod,
  startOurServer,
  type RunningServer,
} from '../helpers/p9-servers.js';

const MSIZE = Number(process.env.P9BENCH_MSIZE ?? 262144);
const TRANS: Trans = process.env.P9BENCH_TRANS === 'tcp' ? 'tcp' : 'fd';
/** Another build's dist/shim/lcowctl.js, benchmarked in the same guest as a third server ('baseline'). */
const BASELINE = process.env.P9BENCH_BASELINE;
/** Rounds of (ours, diod) in one guest; the order alternates per round. */
const ROUNDS = Math.max(1, Number(process.env.P9BENCH_ROUNDS ?? 3));
const BENCH_ARGS = (process.env.P9BENCH_ARGS ?? '--seq-mib,256,--rand-secs,5,--meta,1000,--tree,2000').split(',');

function median(xs: number[]): number {
  const v = [...xs].sort((a, b) => a - b);
  const m = v.length >> 1;
  return v.length % 2 ? v[m]! : (v[m - 1]! + v[m]!) / 2;
}

export const suite: BenchSuite = {
  name: 'p9-kernel',
  unavailable: async () => {
    const q = await guestUnavailable();
    if (q) return q;
    const d = await diodUnavailable();
    if (d) return d;
    if (!existsSync(ourServerPath())) return `${ourServerPath()} is not built (make build)`;
    return undefined;
  },
  run: async (): Promise<BenchRow[]> => {
    const assets = await buildGuestAssets();
    const accel = await probeAccel(assets);
    const dir = mkdtempSync(join(tmpdir(), 'p9bench-'));
    chmodSync(dir, 0o755);
    const servers: RunningServer[] = [];
    try {
      const ours = await startOurServer({ exportDir: dir, msize: MSIZE });
      servers.push(ours);
      const diod = await startDiod({ exportDir: dir });
      servers.push(diod);
      const base = BASELINE ? await startOurServer({ exportDir: dir, msize: MSIZE, cli: BASELINE }) : undefined;
      if (base) servers.push(base);
      const options = (aname: string): string =>
        `version=9p2000.L,msize=${MSIZE},cache=none,access=client,uname=root,aname=${aname}`;
      // Rounds alternate the order (ours first, then diod first...) so neither server always runs on a guest
      // and host that have just warmed up; each metric reports the median over rounds and the spread.
      const jobs: GuestJob[] = [];
      for (let r = 1; r <= ROUNDS; r++) {
        const pair: GuestJob[] = [
          { name: `ours${r}`, trans: TRANS, hostPort: ours.port, action: 'bench', options: options(ours.aname) },
          { name: `diod${r}`, trans: TRANS, hostPort: diod.port, action: 'bench', options: options(diod.aname) },
        ];
        if (base)
          pair.splice(1, 0, {
            name: `base${r}`,
            trans: TRANS,
            hostPort: base.port,
            action: 'bench',
            options: options(base.aname),
          });
        jobs.push(...(r % 2 === 1 ? pair : pair.reverse()));
      }
      // Server CPU over the whole run: each server only works during its own jobs, which are the same for both.
      const cpu0 = servers.map((s) => processCpuSeconds(s.pid));
      const run = await runGuest({
        assets,
        accel,
        network: 'open',
        timeoutMs: 30 * 60_000 * ROUNDS,
        benchArgs: BENCH_ARGS,
        jobs,
      });
      const cpu = servers.map((s, i) => processCpuSeconds(s.pid) - cpu0[i]!);
      const results = (kind: string): Array<Record<string, { value: number; unit: string }>> =>
        jobs
          .filter((j) => j.name.startsWith(kind))
          .map((j) => {
            const r = run.jobs.find((x) => x.name === j.name);
            if (!r || !r.lines.some((l) => l === 'bench-done'))
              throw new Error(`bench job ${j.name} did not finish:\n${r?.lines.join('\n') ?? ''}\n${describeRun(run)}`);
            return r.bench;
          });
      const o = results('ours');
      const d = results('diod');
      const b = base ? results('base') : undefined;
      const setting = `${accel}, trans=${TRANS}, msize=${MSIZE}, cache=none, median of ${ROUNDS}`;
      const rows: BenchRow[] = Object.entries(o[0]!).map(([metric, { unit }]) => {
        const ov = o.map((b) => b[metric]?.value ?? NaN);
        const dv = d.map((b) => b[metric]?.value ?? NaN);
        const value = median(ov);
        const ref = median(dv);
        return {
          suite: 'p9-kernel',
          name: `${metric} (${setting})`,
          value,
          unit,
          extra: {
            diod: ref,
            'ours/diod': value / ref,
            'ours range': `${Math.min(...ov).toFixed(0)}-${Math.max(...ov).toFixed(0)}`,
            'diod range': `${Math.min(...dv).toFixed(0)}-${Math.max(...dv).toFixed(0)}`,
            ...(b
              ? (() => {
                  const bv = median(b.map((x) => x[metric]?.value ?? NaN));
                  return { baseline: bv, 'ours/baseline': value / bv, 'baseline/diod': bv / ref };
                })()
              : {}),
          },
        };
      });
      // servers: ours, diod[, base]
      rows.push({
        suite: 'p9-kernel',
        name: `server CPU per benchmark round, all metrics (${setting})`,
        value: cpu[0]! / ROUNDS,
        unit: 's',
        extra: {
          diod: cpu[1]! / ROUNDS,
          'cpu ratio': cpu[0]! / cpu[1]!,
          ...(base ? { baseline: cpu[2]! / ROUNDS, 'baseline cpu ratio': cpu[2]! / cpu[1]! } : {}),
        },
      });
      return rows;
    } finally {
      await Promise.all(servers.map((s) => s.stop()));
      rmSync(dir, { recursive: true, force: true });
    }
  },
};

// Transport comparison: the same guest benchmark through our server (in this process, as the shim would run
// it) over each QEMU user-networking forwarding option. `restrict=on` everywhere but 'open'.
const TRANSPORTS: GuestNetwork[] = (
  process.env.P9BENCH_NETWORKS ??
  'open,restricted,guestfwd-nodelay,guestfwd-unix,guestfwd-cmd,guestfwd-cmd-nodelay,hostfwd'
).split(',') as GuestNetwork[];
const TRANSPORT_ROUNDS = Math.max(1, Number(process.env.P9BENCH_TRANSPORT_ROUNDS ?? 2));
const TRANSPORT_BENCH_ARGS = (
  process.env.P9BENCH_TRANSPORT_ARGS ?? '--seq-mib,64,--rand-secs,3,--meta,200,--tree,300'
).split(',');

async function transportRun(
  assets: GuestAssets,
  accel: Accel,
  network: GuestNetwork,
  dir: string,
): Promise<Record<string, { value: number; unit: string }>> {
  const server = new P9Server({ exports: [{ name: 'bench', path: dir }], msize: MSIZE });
  const sockets = new Set<net.Socket>();
  const track = (sock: net.Socket): void => {
    sockets.add(sock);
    sock.once('close', () => sockets.delete(sock));
    server.handleConnection(sock);
  };
  let listener: net.Server | undefined;
  let stopDial: (() => void) | undefined;
  let port: number;
  let hostSocket: string | undefined;
  if (network === 'hostfwd') {
    port = await freePort();
    stopDial = dialHostfwd(port, track);
  } else {
    listener = net.createServer({ noDelay: true }, track);
    if (network === 'guestfwd-unix') hostSocket = join(dir, '..', `${basename(dir)}.sock`);
    port = await new Promise<number>((res, rej) => {
      listener!.once('error', rej);
      if (hostSocket) listener!.listen(hostSocket, () => res(0));
      else listener!.listen(0, '127.0.0.1', () => res((listener!.address() as net.AddressInfo).port));
    });
  }
  try {
    const run = await runGuest({
      assets,
      accel,
      network,
      timeoutMs: 20 * 60_000,
      benchArgs: TRANSPORT_BENCH_ARGS,
      jobs: [
        {
          name: 'ours',
          trans: 'fd',
          hostPort: port,
          ...(hostSocket ? { hostSocket } : {}),
          action: 'bench',
          options: `version=9p2000.L,msize=${MSIZE},cache=none,access=client,uname=root,aname=bench`,
        },
      ],
    });
    const j = run.jobs.find((x) => x.name === 'ours');
    if (!j || !j.lines.some((l) => l === 'bench-done'))
      throw new Error(`transport ${network}: bench did not finish:\n${j?.lines.join('\n') ?? ''}\n${describeRun(run)}`);
    return j.bench;
  } finally {
    stopDial?.();
    listener?.close();
    for (const s of sockets) s.destroy();
    server.close();
  }
}

export const transportSuite: BenchSuite = {
  name: 'p9-transport',
  unavailable: guestUnavailable,
  run: async (): Promise<BenchRow[]> => {
    const assets = await buildGuestAssets();
    const accel = await probeAccel(assets);
    const rows: BenchRow[] = [];
    // One guest per (round, network); rounds run the networks in alternating order, rows are medians.
    const got = new Map<GuestNetwork, Array<Record<string, { value: number; unit: string }>>>();
    for (let r = 0; r < TRANSPORT_ROUNDS; r++) {
      for (const network of r % 2 === 0 ? TRANSPORTS : [...TRANSPORTS].reverse()) {
        const dir = mkdtempSync(join(tmpdir(), 'p9transport-'));
        chmodSync(dir, 0o755);
        try {
          const bench = await transportRun(assets, accel, network, dir);
          got.set(network, [...(got.get(network) ?? []), bench]);
        } catch (err) {
          process.stderr.write(`p9-transport ${network}: ${(err as Error).message}\n`);
        } finally {
          rmSync(dir, { recursive: true, force: true });
        }
      }
    }
    for (const network of TRANSPORTS) {
      const runs = got.get(network) ?? [];
      if (runs.length === 0) continue;
      for (const [metric, { unit }] of Object.entries(runs[0]!)) {
        const vs = runs.map((b) => b[metric]?.value ?? NaN);
        rows.push({
          suite: 'p9-transport',
          name: `${network}: ${metric} (${accel}, msize=${MSIZE}, median of ${runs.length})`,
          value: median(vs),
          unit,
          extra: { range: `${Math.min(...vs).toFixed(1)}-${Math.max(...vs).toFixed(1)}` },
        });
      }
    }
    return rows;
  },
};
