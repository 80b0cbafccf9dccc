// PostgreSQL 15's initdb run on the bind mount itself (the CI suite, test/e2e/apps/postgres.test.ts, copies
// a cluster initdb made at image build time, because initdb alone takes 2-3 min under TCG): initdb with its
// final fsync of every file, start, a table, clean stop, and a NEW pod reads it back.
import assert from 'node:assert/strict';
import { chmodSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppHarness, appImage, appsUnavailable } from '../helpers/apps.js';
import { requirePrerequisite } from '../helpers/prerequisite.js';

const BIN = '/usr/lib/postgresql/15/bin';
const PG = (cmd: string): string => `runuser -u postgres -- ${BIN}/${cmd}`;
const START = PG(`pg_ctl -D /data/pg -l /data/pg/server.log -o "-c listen_addresses='' -k /tmp" -w -t 300 start`);
const STOP = PG('pg_ctl -D /data/pg -m fast -w -t 300 stop');
const SQL = (q: string): string => `${BIN}/psql -h /tmp -U postgres -qAt -v ON_ERROR_STOP=1 -c "${q}"`;

describe('apps: PostgreSQL 15 initdb on a 9P bind mount', function () {
  this.timeout(1_200_000);
  const h = new AppHarness('pginit');
  let image = '';
  let dir = '';
  let wrote = false;

  before(async function () {
    requirePrerequisite(this, appsUnavailable());
    dir = mkdtempSync(join(tmpdir(), 'lcow-apps-pginit-'));
    chmodSync(dir, 0o755);
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

  it('initdb on the bind mount, start, a table, clean stop', async function () {
    const p = await pod();
    await h.time('initdb', () =>
      h.sh(
        p,
        'mkdir -p /data/pg && chown postgres:postgres /data/pg && chmod 700 /data/pg && ' +
          PG('initdb -D /data/pg -U postgres --auth=trust -E UTF8 --locale=C --no-instructions >/dev/null'),
        900_000,
      ),
    );
    await h.time('start', () => h.sh(p, START));
    await h.sh(p, SQL('create table t as select g as k, md5(g::text) as v from generate_series(1, 1000) g'));
    await h.sh(p, STOP);
    await h.removePod(p);
    assert.equal(readFileSync(join(dir, 'pg/PG_VERSION'), 'utf8').trim(), '15');
    wrote = true;
  });

  it('a new pod reads it back', async function () {
    assert.ok(wrote, 'the first test did not write');
    const p = await pod();
    await h.sh(p, START);
    assert.equal((await h.sh(p, SQL('select count(*), count(distinct v) from t'))).trim(), '1000|1000');
    await h.sh(p, STOP);
    await h.removePod(p);
  });
});
