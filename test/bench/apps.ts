// Application bench: what the 9P share costs a database. pgbench (scale 1, 2 clients, 30 s) and a SQLite
// insert loop (one transaction per insert, WAL, synchronous=FULL) in our UVM with the data directory on a
// host bind mount (9P, cache=mmap) vs on the guest's tmpfs (the same UVM, no share: the cost of the share)
// vs runc on the host (io.containerd.runc.v2, same image, the data on a host directory). Ratios against
// runc. The shim's 9P metrics (`lcowctl stats POD --json`) give the 9P requests per transaction and the server's
// time for them, by message type: the rest of a transaction's time is the guest and the transport.
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppHarness, appImage, appsUnavailable, type OpStat } from '../helpers/apps.js';
import type { BenchRow, BenchSuite } from './harness.js';

const SECONDS = Number(process.env.LCOW_BENCH_PGBENCH_SECONDS ?? 30);
const INSERTS = Number(process.env.LCOW_BENCH_SQLITE_INSERTS ?? 300);
const BIN = '/usr/lib/postgresql/15/bin';
const PG = (cmd: string): string => `runuser -u postgres -- ${BIN}/${cmd}`;

/** Shell steps for a data directory D: setup, measured run, teardown. */
const pgSetup = (d: string): string =>
  `mkdir -p ${d}/pg && tar -C ${d}/pg -xf /var/lib/postgresql/template.tar && chmod 700 ${d}/pg && ` +
  PG(`pg_ctl -D ${d}/pg -l ${d}/pg/server.log -o "-c listen_addresses='' -k /tmp" -w -t 300 start >/dev/null`) +
  ` && ${BIN}/pgbench -h /tmp -U postgres -i -s 1 -q postgres >/dev/null 2>&1`;
const pgRun = `${BIN}/pgbench -h /tmp -U postgres -c 2 -j 2 -T ${SECONDS} -n postgres 2>&1`;
const pgStop = (d: string): string => PG(`pg_ctl -D ${d}/pg -m fast -w -t 300 stop >/dev/null`);
const sqSetup = (d: string): string =>
  `mkdir -p ${d} && sqlite3 ${d}/bench.db "pragma journal_mode=wal; create table t(i integer primary key, b blob);" >/dev/null`;
/** INSERTS transactions from one sqlite3 process; prints the seconds they took. */
const sqRun = (d: string): string =>
  `i=0; while [ $i -lt ${INSERTS} ]; do i=$((i+1)); echo "insert into t values($i, randomblob(200));"; done > /tmp/ins.sql; ` +
  `t0=$(date +%s.%N); sqlite3 -cmd 'pragma synchronous=full' ${d}/bench.db < /tmp/ins.sql; t1=$(date +%s.%N); ` +
  `echo "seconds $(echo "$t1 $t0" | awk '{print $1 - $2}')"`;

const tps = (out: string): { tps: number; tx: number } => {
  const t = /tps = ([\d.]+)/.exec(out);
  const n = /number of transactions actually processed: (\d+)/.exec(out);
  assert.ok(t && n, `pgbench said: ${out}`);
  return { tps: Number(t[1]), tx: Number(n[1]) };
};
const insertsPerSecond = (out: string): number => {
  const m = /seconds ([\d.]+)/.exec(out);
  assert.ok(m, out);
  return INSERTS / Number(m[1]);
};

type Ops = Record<string, OpStat>;
function delta(after: Ops, before: Ops): Ops {
  const out: Ops = {};
  for (const [k, v] of Object.entries(after)) {
    const b = before[k] ?? { count: 0, micros: 0 };
    if (v.count > b.count) out[k] = { count: v.count - b.count, micros: v.micros - b.micros };
  }
  return out;
}

/** Rows for the 9P requests of one measured run: total per transaction, and the top types. */
function opRows(what: string, ops: Ops, transactions: number): BenchRow[] {
  const total = Object.values(ops).reduce((a, o) => a + o.count, 0);
  const micros = Object.values(ops).reduce((a, o) => a + o.micros, 0);
  const top = Object.entries(ops)
    .sort((a, b) => b[1].count - a[1].count)
    .slice(0, 6)
    .map(([k, o]) => `${k} ${(o.count / transactions).toFixed(1)} (${Math.round(o.micros / o.count)} us)`)
    .join(', ');
  return [
    {
      suite: 'apps',
      name: `${what}: 9P requests per transaction (bind mount)`,
      value: total / transactions,
      unit: 'req/tx',
      extra: { 'server us/tx': Math.round(micros / transactions), top: top },
    },
  ];
}

export const suite: BenchSuite = {
  name: 'apps',
  unavailable: async () => appsUnavailable(),
  async run(): Promise<BenchRow[]> {
    const rows: BenchRow[] = [];
    const h = new AppHarness('bench');
    const dir = mkdtempSync(join(tmpdir(), 'lcow-bench-apps-'));
    chmodSync(dir, 0o755);
    try {
      await h.start();
      const pg = await appImage(h.cd, 'postgres');
      const sq = await appImage(h.cd, 'sqlite');
      const dataShare = async (pod: string): Promise<Ops> =>
        (await h.p9Stats(pod)).find((s) => s.hostPath === dir)?.ops ?? {};

      // runc on the host: the same images, the data on a host directory, /tmp a tmpfs.
      const runc = async (image: string, script: string): Promise<string> => {
        const r = await h.cd.ctr(
          [
            'run',
            '--rm',
            '--runtime',
            'io.containerd.runc.v2',
            '--mount',
            `type=bind,src=${dir},dst=/data,options=rbind:rw`,
            '--mount',
            'type=tmpfs,src=tmpfs,dst=/tmp,options=mode=1777',
            image,
            `bench-runc-${process.pid}`,
            'sh',
            '-c',
            script,
          ],
          { timeoutMs: 600_000 },
        );
        assert.equal(r.code, 0, r.stderr + r.stdout);
        return r.stdout;
      };
      const pgRunc = tps(await runc(pg, `${pgSetup('/data/runc')} && ${pgRun} && ${pgStop('/data/runc')}`));
      const sqRunc = insertsPerSecond(await runc(sq, `${sqSetup('/data/runc-sq')} && ${sqRun('/data/runc-sq')}`));

      // One UVM: the PostgreSQL image (sqlite3 is not in it: a second pod for SQLite).
      const p = await h.startPod(pg, [{ src: dir, dst: '/data' }], { tmpfs: ['/tmp'] });
      await h.sh(p, pgSetup('/data/uvm'), 900_000);
      const before = await dataShare(p);
      const pgBind = tps(await h.sh(p, pgRun, 900_000));
      const pgOps = delta(await dataShare(p), before);
      await h.sh(p, pgStop('/data/uvm'));
      await h.sh(p, pgSetup('/tmp/uvm'), 900_000);
      const pgTmpfs = tps(await h.sh(p, pgRun, 900_000));
      await h.sh(p, pgStop('/tmp/uvm'));
      await h.removePod(p);

      const s = await h.startPod(sq, [{ src: dir, dst: '/data' }], { tmpfs: ['/tmp'] });
      await h.sh(s, sqSetup('/data/uvm-sq'));
      const sqBefore = await dataShare(s);
      const sqBind = insertsPerSecond(await h.sh(s, sqRun('/data/uvm-sq'), 900_000));
      const sqOps = delta(await dataShare(s), sqBefore);
      await h.sh(s, sqSetup('/tmp/uvm-sq'));
      const sqTmpfs = insertsPerSecond(await h.sh(s, sqRun('/tmp/uvm-sq'), 900_000));
      await h.removePod(s);

      const row = (name: string, value: number, unit: string, runcValue: number, tmpfsValue?: number): BenchRow => ({
        suite: 'apps',
        name,
        value,
        unit,
        extra: {
          'vs runc': value / runcValue,
          ...(tmpfsValue !== undefined ? { 'vs guest tmpfs': value / tmpfsValue } : {}),
        },
      });
      rows.push(
        row(
          `pgbench (s=1, 2 clients, ${SECONDS} s): UVM, data on bind mount`,
          pgBind.tps,
          'tps',
          pgRunc.tps,
          pgTmpfs.tps,
        ),
        row(`pgbench: UVM, data on guest tmpfs`, pgTmpfs.tps, 'tps', pgRunc.tps),
        row(`pgbench: runc on the host`, pgRunc.tps, 'tps', pgRunc.tps),
        ...opRows('pgbench', pgOps, pgBind.tx),
        row(`SQLite WAL inserts (1 tx each): UVM, bind mount`, sqBind, 'tx/s', sqRunc, sqTmpfs),
        row(`SQLite WAL inserts: UVM, guest tmpfs`, sqTmpfs, 'tx/s', sqRunc),
        row(`SQLite WAL inserts: runc on the host`, sqRunc, 'tx/s', sqRunc),
        ...opRows('SQLite insert', sqOps, INSERTS),
      );
    } finally {
      await h.close();
      rmSync(dir, { recursive: true, force: true });
    }
    return rows;
  },
};
