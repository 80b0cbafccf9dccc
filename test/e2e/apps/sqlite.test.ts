// SQLite 3 in WAL mode in a QEMU UVM with the database on a host bind mount (9P). WAL needs a shared
// writable mmap of the -shm file, which the guest's v9fs gives only with cache=mmap (our default for
// shares); cache=none (the OCI mount option x-lcow.cache=none) shows the failure Microsoft's LCOW has. Two
// writer processes insert at once; a NEW pod reads everything back; then the UVM is SIGKILLed while a
// client commits, and a third pod recovers every acknowledged commit. Three UVM boots in all.
import assert from 'node:assert/strict';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppHarness, appImage, appsUnavailable, crashMidWrite } from '../../helpers/apps.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';

const ROWS = 150; // per writer
const DB = '/data/wal/app.db';
const sqlite = (db: string, sql: string): string => `sqlite3 -batch -cmd '.timeout 120000' ${db} "${sql}"`;
/** One sqlite3 process running ROWS separate transactions (autocommit inserts), writer number $1. */
const WRITER = (db: string): string =>
  `w=$1; i=0; while [ $i -lt ${ROWS} ]; do i=$((i+1)); echo "insert into t values($w, $i, randomblob(200));"; done` +
  ` | sqlite3 -batch -cmd '.timeout 120000' ${db}`;
const CHECK = (db: string): string =>
  sqlite(
    db,
    'pragma journal_mode; pragma integrity_check; select w, count(*), count(distinct i) from t group by w order by w;',
  );

describe('apps: SQLite 3 WAL with its database on a 9P bind mount', function () {
  this.timeout(900_000);
  const h = new AppHarness('sqlite');
  let image = '';
  let dir = '';
  let second = '';
  let wrote = false;

  before(async function () {
    requirePrerequisite(this, appsUnavailable());
    dir = mkdtempSync(join(tmpdir(), 'lcow-apps-sqlite-'));
    mkdirSync(join(dir, 'wal'));
    mkdirSync(join(dir, 'nommap'));
    await h.start();
    image = await h.time('image', () => appImage(h.cd, 'sqlite'));
  });

  after(async function () {
    if (appsUnavailable()) return;
    try {
      await h.close();
    } finally {
      if (dir) rmSync(dir, { recursive: true, force: true });
    }
  });

  // /data: the default cache mode (mmap); /nommap: the same host tree's subdirectory with cache=none.
  const pod = (): Promise<string> =>
    h.time('pod start', () =>
      h.startPod(image, [
        { src: dir, dst: '/data' },
        { src: join(dir, 'nommap'), dst: '/nommap', extra: ['x-lcow.cache=none'] },
      ]),
    );

  it('the guest mounts bind mounts with cache=mmap by default, cache=none when the mount asks for it', async function () {
    const p = await pod();
    second = p; // reused by the next test (one boot less)
    const mounts = await h.sh(p, 'cat /proc/mounts');
    const opts = (dst: string): string =>
      mounts
        .split('\n')
        .find((l) => l.split(' ')[1] === dst)
        ?.split(' ')[3] ?? '';
    assert.match(opts('/data'), /(^|,)mmap(,|$)/, mounts);
    assert.doesNotMatch(opts('/nommap'), /(^|,)(mmap|loose|fscache)(,|$)/, mounts);
    // Without the shared mmap SQLite's WAL cannot work: the failure LCOW users see on Microsoft's 9P shares.
    const r = await h.exec(
      p,
      sqlite('/nommap/x.db', 'pragma journal_mode=wal; create table t(x); insert into t values(1);'),
    );
    assert.notEqual(r.code, 0, r.stdout);
    assert.match(r.stderr, /disk I\/O error/);
  });

  it('WAL: two writer processes insert at once; integrity holds; the host has the database', async function () {
    const p = second;
    assert.ok(p, 'no pod');
    await h.sh(p, sqlite(DB, 'pragma journal_mode=wal; create table t(w int, i int, b blob, primary key(w, i));'));
    // Both writers run at the same time: WAL locks (9P POSIX locks) and the -shm index (shared mmap).
    const both = await h.time('two writers', () =>
      h.sh(
        p,
        `writer() { ${WRITER(DB)}; }; writer 1 & a=$!; writer 2 & b=$!; ` +
          `for k in $(seq 150); do ls /data/wal | grep -q shm && break; sleep 0.2; done; ls /data/wal > /data/wal/during.txt; ` +
          'wait $a && wait $b && echo both-done',
      ),
    );
    assert.match(both, /both-done/);
    // While they ran, the -wal and -shm files existed (WAL mode really was in use).
    assert.match(readFileSync(join(dir, 'wal/during.txt'), 'utf8'), /app\.db-shm/);
    const out = await h.sh(p, CHECK(DB));
    assert.deepEqual(out.trim().split('\n'), ['wal', 'ok', `1|${ROWS}|${ROWS}`, `2|${ROWS}|${ROWS}`]);
    wrote = true;
    // The last connection closed: SQLite checkpointed into the database file and removed -wal and -shm.
    const header = readFileSync(join(dir, 'wal/app.db')).subarray(0, 20);
    assert.equal(header.subarray(0, 16).toString('latin1'), 'SQLite format 3\0');
    assert.deepEqual([header[18], header[19]], [2, 2], 'file format 2: a WAL database');
    assert.ok(!existsSync(join(dir, 'wal/app.db-wal')), 'the -wal file was left after a clean close');
    await h.removePod(p);
    second = '';
  });

  it('a new pod reads everything back; QEMU SIGKILL mid-write loses no acknowledged commit', async function () {
    assert.ok(wrote, 'the data set was not written');
    const p = await pod();
    const out = await h.sh(p, CHECK(DB));
    assert.deepEqual(out.trim().split('\n'), ['wal', 'ok', `1|${ROWS}|${ROWS}`, `2|${ROWS}|${ROWS}`]);
    await h.sh(p, sqlite(DB, 'create table acked(i integer primary key);'));
    // One sqlite3 per commit: `ack N` only after it exited 0 (the COMMIT returned). A second writer keeps
    // the WAL busy from another process meanwhile.
    const acked = await h.time('writes until kill', () =>
      crashMidWrite(
        h,
        p,
        `(i=0; while :; do i=$((i+1)); ${sqlite(DB, 'insert into t values(3, $i, randomblob(100));')} >/dev/null; done) & ` +
          `i=0; while :; do i=$((i+1)); ${sqlite(DB, 'insert into acked values($i);')} && echo "ack $i" || exit 1; done`,
        15,
      ),
    );
    await h.removePod(p);
    const q = await pod();
    const after = await h.sh(q, sqlite(DB, 'pragma integrity_check; select i from acked order by i;'));
    const [integrity, ...rows] = after.trim().split('\n');
    assert.equal(integrity, 'ok');
    const have = new Set(rows.map(Number));
    assert.deepEqual(
      acked.filter((i) => !have.has(i)),
      [],
      `acknowledged commits lost (have ${have.size})`,
    );
    assert.deepEqual((await h.sh(q, CHECK(DB))).trim().split('\n').slice(0, 4), [
      'wal',
      'ok',
      `1|${ROWS}|${ROWS}`,
      `2|${ROWS}|${ROWS}`,
    ]);
    await h.removePod(q);
  });
});
