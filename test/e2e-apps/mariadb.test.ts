// MariaDB (Debian's MySQL) in a QEMU UVM with its datadir on a host bind mount (9P): mariadb-install-db,
// an InnoDB table of known rows, clean shutdown; a NEW pod reads it back; then that UVM is SIGKILLed while a
// client commits, and a third pod runs InnoDB crash recovery without losing an acknowledged commit.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppHarness, appImage, appsUnavailable, crashMidWrite } from '../helpers/apps.js';
import { requirePrerequisite } from '../helpers/prerequisite.js';

const SOCK = '/run/mysqld/mysqld.sock';
// Native AIO (io_uring/libaio) is for block devices; on 9P InnoDB uses its simulated AIO (see docs).
const START =
  `mkdir -p /run/mysqld && chown mysql:mysql /run/mysqld && ` +
  `setsid mariadbd --user=mysql --datadir=/data/mysql --socket=${SOCK} --skip-networking ` +
  `--innodb-use-native-aio=0 --log-error=/data/mysql/error.log </dev/null >/dev/null 2>&1 & ` +
  `for i in $(seq 600); do mariadb-admin --socket=${SOCK} ping >/dev/null 2>&1 && exit 0; sleep 0.5; done; ` +
  `cat /data/mysql/error.log; exit 1`;
const STOP = `mariadb-admin --socket=${SOCK} shutdown && while [ -e /data/mysql/*.pid ]; do sleep 0.2; done`;
const SQL = (q: string): string => `mariadb --socket=${SOCK} -N -B -e "${q}"`;
const DIGEST = 'select count(*), md5(group_concat(v order by id)) from app.t';

describe('apps: MariaDB (InnoDB) with its datadir on a 9P bind mount', function () {
  this.timeout(1_200_000);
  const h = new AppHarness('mariadb');
  let image = '';
  let dir = '';
  let expected = '';
  let second = '';

  before(async function () {
    requirePrerequisite(this, appsUnavailable());
    dir = mkdtempSync(join(tmpdir(), 'lcow-apps-mariadb-'));
    chmodSync(dir, 0o755);
    await h.start();
    image = await h.time('image', () => appImage(h.cd, 'mariadb'));
  });

  after(async function () {
    if (appsUnavailable()) return;
    try {
      await h.close();
    } finally {
      if (dir) rmSync(dir, { recursive: true, force: true });
    }
  });

  const pod = (): Promise<string> => h.time('pod start', () => h.startPod(image, [{ src: dir, dst: '/data' }]));

  it('install-db, start, an InnoDB table of known rows, clean shutdown; files on the host', async function () {
    const p = await pod();
    await h.time('install-db', () =>
      h.sh(
        p,
        'mkdir -p /data/mysql && chown mysql:mysql /data/mysql && ' +
          'mariadb-install-db --user=mysql --datadir=/data/mysql --skip-test-db --auth-root-authentication-method=socket >/dev/null',
      ),
    );
    await h.time('start', () => h.sh(p, START));
    await h.time('write', () =>
      h.sh(
        p,
        SQL(
          'create database app; use app; create table t (id int primary key, v char(32)) engine=InnoDB; ' +
            'insert into t select seq, md5(seq) from seq_1_to_1000',
        ),
      ),
    );
    expected = (await h.sh(p, SQL(DIGEST))).trim();
    assert.match(expected, /^1000\t[0-9a-f]{32}$/);
    await h.time('stop', () => h.sh(p, STOP));
    await h.removePod(p);
    assert.ok(existsSync(join(dir, 'mysql/ibdata1')), 'no ibdata1 on the host');
    assert.ok(existsSync(join(dir, 'mysql/app/t.ibd')), 'no app/t.ibd on the host');
    assert.match(readFileSync(join(dir, 'mysql/error.log'), 'utf8'), /Shutdown complete/);
  });

  it('a new pod reads the table back', async function () {
    assert.ok(expected, 'the first test did not write the data set');
    const p = await pod();
    await h.time('start (2nd pod)', () => h.sh(p, START));
    assert.equal((await h.sh(p, SQL(DIGEST))).trim(), expected);
    assert.equal(
      (await h.sh(p, SQL("select engine from information_schema.tables where table_name='t'"))).trim(),
      'InnoDB',
    );
    second = p;
  });

  it('QEMU SIGKILL mid-write: InnoDB recovers every acknowledged commit in a new pod', async function () {
    assert.ok(second, 'the second pod did not start');
    await h.sh(second, SQL('create table app.acked (i int primary key) engine=InnoDB'));
    const acked = await h.time('writes until kill', () =>
      crashMidWrite(
        h,
        second,
        `i=0; while :; do i=$((i+1)); ${SQL('insert into app.acked values ($i)')} && echo "ack $i" || exit 1; done`,
        20,
      ),
    );
    await h.removePod(second);
    const q = await pod();
    await h.time('start after crash (recovery)', () => h.sh(q, START));
    const have = new Set((await h.sh(q, SQL('select i from app.acked'))).trim().split('\n').map(Number));
    assert.deepEqual(
      acked.filter((i) => !have.has(i)),
      [],
      `acknowledged commits lost (have ${have.size})`,
    );
    assert.match(readFileSync(join(dir, 'mysql/error.log'), 'utf8'), /crash recovery/i, 'no InnoDB crash recovery');
    assert.equal((await h.sh(q, SQL(DIGEST))).trim(), expected);
    await h.sh(q, STOP);
    await h.removePod(q);
  });
});
