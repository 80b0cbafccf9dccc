// Linux's own 9P client (Debian guest kernel in QEMU) against our server and against diod, serving the same
// directory with the same mount options, one guest, one job after the other. Metrics come from `p9battery bench`
// (test/p9-battery/bench.c): sequential 1 MiB write/read, 4 KiB random reads, create/stat/unlink, and a
// small-file tree (create, then read back).
//
// The guest uses plain QEMU user networking here: guestfwd (restrict=on) moves guest-to-host data at about
// 1.4 MiB/s under TCG, which would measure slirp instead of the servers.
import { chmodSync, mkdtempSync, rmSync, existsSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { BenchRow, BenchSuite } from './harness.js';
import {
  buildGuestAssets,
  describeRun,
  guestUnavailable,
  probeAccel,
  runGuest,
  type Trans,
} from '../helpers/qemu-guest.js';
import {
  diodUnavailable,
  ourServerPath,
  startDiod,
  startOurServer,
  type RunningServer,
} from '../helpers/p9-servers.js';

const MSIZE = Number(process.env.P9BENCH_MSIZE ?? 262144);
const TRANS: Trans = process.env.P9BENCH_TRANS === 'tcp' ? 'tcp' : 'fd';
const BENCH_ARGS = (process.env.P9BENCH_ARGS ?? '--seq-mib,256,--rand-secs,5,--meta,1000,--tree,2000').split(',');

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
      const options = (aname: string): string =>
        `version=9p2000.L,msize=${MSIZE},cache=none,access=client,uname=root,aname=${aname}`;
      const run = await runGuest({
        assets,
        accel,
        network: 'open',
        timeoutMs: 30 * 60_000,
        benchArgs: BENCH_ARGS,
        jobs: [
          { name: 'ours', trans: TRANS, hostPort: ours.port, action: 'bench', options: options(ours.aname) },
          { name: 'diod', trans: TRANS, hostPort: diod.port, action: 'bench', options: options(diod.aname) },
        ],
      });
      const job = (name: string) => {
        const j = run.jobs.find((x) => x.name === name);
        if (!j || !j.lines.some((l) => l === 'bench-done'))
          throw new Error(`bench job ${name} did not finish:\n${j?.lines.join('\n') ?? ''}\n${describeRun(run)}`);
        return j;
      };
      const o = job('ours');
      const d = job('diod');
      const setting = `${accel}, trans=${TRANS}, msize=${MSIZE}, cache=none`;
      return Object.entries(o.bench).map(([metric, { value, unit }]) => {
        const ref = d.bench[metric]?.value ?? NaN;
        return {
          suite: 'p9-kernel',
          name: `${metric} (${setting})`,
          value,
          unit,
          extra: { diod: ref, 'ours/diod': value / ref },
        };
      });
    } finally {
      await Promise.all(servers.map((s) => s.stop()));
      rmSync(dir, { recursive: true, force: true });
    }
  },
};
