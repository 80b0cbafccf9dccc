// PostgreSQL 15 in a QEMU UVM with its data directory on a host bind mount (9P): a cluster (the image's
// template, see hack/apps/images/postgres.image), pgbench -i and a
// short pgbench run plus a table of known rows, clean stop; a NEW pod on the same directory reads it all
// back; then that UVM is SIGKILLed while a client inserts, and a third pod recovers without losing any
// transaction the client saw committed. Three UVM boots in all.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppHarness, appImage, appsUnavailable, crashMidWrite } from '../../helpers/apps.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';

const BIN = '/usr/lib/postgresql/15/bin';
const PG = (cmd: string): string => `runuser -u postgres -- ${BIN}/${cmd}`;
const START = PG(`pg_ctl -D /data/pg -l /data/pg/server.log -o "-c listen_addresses='' -k /tmp" -w -t 300 start`);
const STOP = PG('pg_ctl -D /data/pg -m fast -w -t 300 stop');
const SQL = (q: string): string => `${BIN}/psql -h /tmp -U postgres -qAt -v ON_ERROR_STOP=1 -c "${q}"`;
// The known data set: 500 rows whose digest both pods compute.
const KNOWN_DIGEST = "select count(*) || ':' || md5(string_agg(v, ',' order by k)) from known";

describe('apps: PostgreSQL 15 with its data directory on a 9P bind mount', function () {
  this.timeout(900_000);
  const h = new AppHarness('pg');
  let image = '';
  let dir = '';
  let expected = '';
  let second = '';

  before(async function () {
    requirePrerequisite(this, appsUnavailable());
    dir = mkdtempSync(join(tmpdir(), 'lcow-apps-pg-'));
    chmodSync(dir, 0o755); // mkdtemp makes it 0700: the postgres user must reach /data/pg
    await h.start();
    image = await h.time('image', () => appImage(h.cd, 'postgres'));
  });

  after(async function () {
    if (appsUnavailable()) return;
    try {
      await h.close();
    } finally {
      if (dir) rmSync(dir, { recursive: true, force: true });
    }
  });

  const pod = (): Promise<string> =>
    h.time('pod start', () => h.startPod(image, [{ src: dir, dst: '/data' }], { tmpfs: ['/tmp'] }));

  it('cluster unpacked, pgbench -i, pgbench -t 50 -c 2, known rows; clean stop; files on the host', async function () {
    const p = await pod();
    // The image's template cluster (initdb at image build time; initdb on the bind mount itself takes 2-3 min
    // under TCG and runs in make e2e-apps: test/e2e-apps/postgres-initdb.test.ts).
    await h.time('unpack cluster', () =>
      h.sh(p, 'mkdir /data/pg && tar -C /data/pg -xf /var/lib/postgresql/template.tar && chmod 700 /data/pg'),
    );
    await h.time('start', () => h.sh(p, START));
    await h.time('pgbench -i', () => h.sh(p, `${BIN}/pgbench -h /tmp -U postgres -i -s 1 -q postgres 2>&1`));
    const bench = await h.time('pgbench run', () =>
      h.sh(p, `${BIN}/pgbench -h /tmp -U postgres -c 2 -t 50 -n postgres 2>&1`),
    );
    process.stderr.write(`      pg: ${/tps = [\d.]+[^\n]*/.exec(bench)?.[0] ?? bench}\n`);
    await h.sh(
      p,
      SQL(
        'create table known(k int primary key, v text); insert into known select g, md5(g::text) from generate_series(1,500) g',
      ),
    );
    expected = (await h.sh(p, SQL(KNOWN_DIGEST))).trim();
    assert.match(expected, /^500:[0-9a-f]{32}$/);
    await h.time('stop', () => h.sh(p, STOP));
    await h.removePod(p);
    // On the host: a PostgreSQL 15 cluster, cleanly shut down.
    assert.equal(readFileSync(join(dir, 'pg/PG_VERSION'), 'utf8').trim(), '15');
    assert.ok(statSync(join(dir, 'pg/global/pg_control')).size > 0);
    assert.ok(existsSync(join(dir, 'pg/base/5')), 'database postgres (oid 5) has files');
    assert.match(readFileSync(join(dir, 'pg/server.log'), 'utf8'), /database system is shut down/);
  });

  it('a new pod on the same directory reads everything back', async function () {
    assert.ok(expected, 'the first test did not write the data set');
    const p = await pod();
    await h.time('start (2nd pod)', () => h.sh(p, START));
    const out = await h.sh(
      p,
      [
        SQL('select count(*) from pgbench_accounts'),
        SQL('select count(*) from pgbench_history'),
        SQL('select (select sum(abalance) from pgbench_accounts) = (select sum(delta) from pgbench_history)'),
        SQL(KNOWN_DIGEST),
      ].join(' && '),
    );
    assert.deepEqual(out.trim().split('\n'), ['100000', '100', 't', expected]);
    second = p; // the crash test below writes in this pod
  });

  it('QEMU SIGKILL mid-write: a new pod recovers with every acknowledged commit', async function () {
    assert.ok(second, 'the second pod did not start');
    const p = second;
    await h.sh(p, SQL('create table acked(i int primary key)'));
    // One psql per insert: its exit (status 0) is the acknowledgement, printed only after COMMIT returned.
    const acked = await h.time('writes until kill', () =>
      crashMidWrite(
        h,
        p,
        `i=0; while :; do i=$((i+1)); ${SQL('insert into acked values ($i)')} && echo "ack $i" || exit 1; done`,
        10,
      ),
    );
    await h.removePod(p);
    const q = await pod();
    await h.time('start after crash (recovery)', () => h.sh(q, START));
    const rows = (await h.sh(q, SQL('select i from acked order by i'))).trim().split('\n').map(Number);
    const missing = acked.filter((i) => !rows.includes(i));
    assert.deepEqual(missing, [], `acknowledged commits lost (have ${rows.length} rows)`);
    assert.match(
      readFileSync(join(dir, 'pg/server.log'), 'utf8'),
      /database system was interrupted|not properly shut down/,
      'PostgreSQL did not run crash recovery',
    );
    assert.equal((await h.sh(q, SQL(KNOWN_DIGEST))).trim(), expected);
    await h.sh(q, STOP);
    await h.removePod(q);
  });
});
