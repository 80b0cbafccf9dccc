// The real Linux 9P client (Debian's guest kernel, in QEMU) against our 9P server: the POSIX battery over
// trans=tcp and trans=fd, and a read-only export. One `it` per battery check, so failures are named.
//
// P9TEST_SERVER=diod points the same suite at Debian's diod (to validate the harness; diod fails some checks).
// The two guests run in parallel (each is mostly waiting on round trips under TCG).
import assert from 'node:assert/strict';
import {
  lstatSync,
  type Stats,
  mkdirSync,
  mkdtempSync,
  readFileSync,
  rmSync,
  symlinkSync,
  writeFileSync,
  chmodSync,
  readdirSync,
} from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import {
  buildGuestAssets,
  describeRun,
  guestUnavailable,
  probeAccel,
  repoRoot,
  runGuest,
  type GuestRunResult,
  type JobResult,
  type Trans,
} from '../../helpers/qemu-guest.js';
import {
  diodUnavailable,
  startDiod,
  startOurServer,
  type RunningServer,
  type ServerOptions,
} from '../../helpers/p9-servers.js';
import { hostPrivileges, hostXattr } from '../../helpers/host-privileges.js';

const target = process.env.P9TEST_SERVER === 'diod' ? 'diod' : 'ours';
const MSIZE = 262144;

/** Check names in the battery's own tables, so that a check the guest never reported fails by name. */
function checkNames(file: string, table: string): string[] {
  const src = readFileSync(join(repoRoot, 'test/p9-battery', file), 'utf8');
  const body = src.slice(src.indexOf(`const struct check ${table}[] = {`));
  return [...body.slice(0, body.indexOf('};')).matchAll(/\{"([a-z0-9_]+)",/g)].map((m) => m[1]!);
}
const POSIX_CHECKS = checkNames('checks.c', 'posix_checks');
const RO_CHECKS = checkNames('rochecks.c', 'ro_checks');

function mountOptions(aname: string): string {
  return `version=9p2000.L,msize=${MSIZE},cache=none,access=client,uname=root,aname=${aname}`;
}

async function start(opts: ServerOptions): Promise<RunningServer> {
  return target === 'diod' ? startDiod(opts) : startOurServer(opts);
}

function prepareReadOnlyExport(dir: string): void {
  writeFileSync(join(dir, 'file'), 'read-only\n', { mode: 0o644 });
  chmodSync(join(dir, 'file'), 0o644);
  mkdirSync(join(dir, 'dir'));
  writeFileSync(join(dir, 'dir/inner'), 'inner\n');
  mkdirSync(join(dir, 'empty'));
  symlinkSync('file', join(dir, 'link'));
}

describe(`9P kernel client: Linux v9fs in a QEMU guest against ${target === 'ours' ? 'our server' : 'diod'}`, function () {
  this.timeout(20 * 60_000);

  const tmp: string[] = [];
  const servers: RunningServer[] = [];
  const runs = new Map<Trans, GuestRunResult>();
  let setupError: Error | undefined;
  let unavailable: string | undefined;
  const dirs: Record<string, string> = {};

  before(async function () {
    unavailable = (await guestUnavailable()) ?? (target === 'diod' ? await diodUnavailable() : undefined);
    if (unavailable) return;
    try {
      const assets = await buildGuestAssets();
      const accel = await probeAccel(assets);
      for (const name of ['tcp', 'fd', 'ro']) {
        const d = mkdtempSync(join(tmpdir(), `p9kernel-${name}-`));
        chmodSync(d, 0o755); // the battery's non-root checks must be able to traverse the root
        tmp.push(d);
        dirs[name] = d;
      }
      prepareReadOnlyExport(dirs.ro!);
      // Both share security models: tcp serves the bind-mount default (mapped), fd the rootfs one.
      const rw = {
        tcp: await start({ exportDir: dirs.tcp!, security: 'mapped' }),
        fd: await start({ exportDir: dirs.fd!, security: 'passthrough-existing' }),
      };
      const ro = await start({ exportDir: dirs.ro!, readOnly: true });
      servers.push(rw.tcp, rw.fd, ro);
      const one = (trans: Trans): Promise<GuestRunResult> =>
        runGuest({
          assets,
          accel,
          network: 'restricted',
          timeoutMs: 12 * 60_000,
          jobs: [
            {
              name: trans,
              trans,
              hostPort: rw[trans].port,
              peerHostPort: rw[trans].port,
              action: 'battery',
              options: mountOptions(rw[trans].aname),
            },
            ...(trans === 'tcp'
              ? [{ name: 'ro', trans, hostPort: ro.port, action: 'ro' as const, options: mountOptions(ro.aname) }]
              : []),
          ],
        });
      const [tcp, fd] = await Promise.all([one('tcp'), one('fd')]);
      runs.set('tcp', tcp);
      runs.set('fd', fd);
      // The guests' raw reports (notes, timings) for whoever looks at a failure.
      const logDir = join(repoRoot, 'build/test-results/p9-kernel');
      mkdirSync(logDir, { recursive: true });
      for (const [trans, r] of runs) {
        writeFileSync(join(logDir, `${target}-${trans}.results.log`), r.results);
        writeFileSync(join(logDir, `${target}-${trans}.console.log`), r.console);
        process.stderr.write(
          `      [p9-kernel] trans=${trans}: accel=${r.accel} boot ${r.bootSeconds}s, guest done at ${r.doneSeconds}s, ` +
            `wall ${r.wallSeconds.toFixed(1)}s\n`,
        );
      }
    } catch (err) {
      setupError = err as Error;
    }
  });

  after(async function () {
    await Promise.all(servers.map((s) => s.stop()));
    for (const d of tmp) rmSync(d, { recursive: true, force: true });
  });

  function requireJob(trans: Trans, jobName: string): { run: GuestRunResult; job: JobResult } {
    if (unavailable) throw new Error(`cannot run: ${unavailable}`);
    if (setupError) throw setupError;
    const run = runs.get(trans);
    assert.ok(run, `no guest run for trans=${trans}`);
    const job = run.jobs.find((j) => j.name === jobName);
    assert.ok(job, `guest never started job ${jobName}\n${describeRun(run)}`);
    return { run, job };
  }

  function serverHealth(): string {
    return servers
      .map((s) => `--- ${s.kind} :${s.port} log tail ---\n${s.log().split('\n').slice(-15).join('\n')}`)
      .join('\n');
  }

  function checkSuite(trans: Trans, jobName: string, names: string[]): void {
    describe(
      jobName === 'ro' ? 'read-only export (mutations fail with EROFS)' : `battery over trans=${trans}`,
      function () {
        it('the guest mounts the export and runs to completion', function () {
          const { run, job } = requireJob(trans, jobName);
          assert.ok(job.mounted, `mount failed: ${job.errors.join('; ')}\n${describeRun(run)}\n${serverHealth()}`);
          assert.ok(
            job.summary,
            `no summary: the battery died\n${job.lines.slice(-5).join('\n')}\n${describeRun(run)}`,
          );
          assert.ok(run.done, `guest did not finish\n${describeRun(run)}`);
          assert.deepEqual(job.errors, [], 'guest-side errors (umount...)');
        });
        for (const name of names) {
          it(name, function () {
            const { run, job } = requireJob(trans, jobName);
            const c = job.checks.find((x) => x.name === name);
            assert.ok(c, `${name} was not reported (battery crashed or timed out?)\n${describeRun(run)}`);
            if (c.status === 'skip') assert.fail(`skipped in the guest: ${c.detail}`);
            if (c.status === 'not ok') assert.fail(c.detail);
          });
        }
        it('reports no check the test does not know', function () {
          const { job } = requireJob(trans, jobName);
          const unknown = job.checks.map((c) => c.name).filter((n) => !names.includes(n));
          assert.deepEqual(unknown, []);
        });
      },
    );
  }

  checkSuite('tcp', 'tcp', POSIX_CHECKS);
  checkSuite('fd', 'fd', POSIX_CHECKS);
  checkSuite('tcp', 'ro', RO_CHECKS);

  describe('host view', function () {
    it('guest writes reach the host directory', function () {
      requireJob('fd', 'fd');
      for (const trans of ['tcp', 'fd']) {
        const d = join(dirs[trans]!, 'battery');
        assert.equal(readFileSync(join(d, 'open_rdwr/f'), 'utf8'), 'aXYdef', `${trans}: open_rdwr/f on the host`);
        assert.equal(readFileSync(join(d, 'hardlink_shared_content/g'), 'utf8'), 'onetwo');
      }
    });
    // Our share security model only: diod (run with P9TEST_SERVER=diod to validate the harness) creates real ones.
    if (target === 'ours')
      it('guest-made devices, FIFOs, sockets, setuid bits and privileged xattrs are plain objects on the host', function () {
        requireJob('fd', 'fd');
        for (const trans of ['tcp', 'fd']) {
          const d = join(dirs[trans]!, 'battery');
          assert.deepEqual(hostPrivileges(d), [], `${trans}: privileged objects on the host`);
          const sp = (n: string): Stats => lstatSync(join(d, 'mapped_special_files', n));
          for (const n of ['blk', 'chr', 'fifo2', 'sock']) assert.ok(sp(n).isFile(), `${trans}: ${n} is a plain file`);
          assert.equal(sp('blk').rdev, 0);
          assert.equal(sp('blk').mode & 0o077, 0, `${trans}: blk (guest 0666) is not accessible to other host users`);
          assert.equal(sp('blk').nlink, 2, 'the hard link is a link of the placeholder');
          const su = (n: string): Stats => lstatSync(join(d, 'mapped_setuid', n));
          for (const n of ['suid', 'sgid', 'mine']) assert.equal(su(n).mode & 0o6000, 0, `${trans}: ${n} mode`);
          // mapped: owners the guest sets stay in its view; passthrough-existing: they are the host's.
          assert.equal(su('mine').uid, trans === 'tcp' ? 0 : 1000, `${trans}: host owner of a file chowned to 1000`);
          const xa = join(d, 'mapped_privileged_xattrs');
          assert.equal(hostXattr(join(xa, 'capbin'), 'security.capability'), undefined);
          assert.equal(hostXattr(join(xa, 'opaque'), 'trusted.overlay.opaque'), undefined);
        }
      });
    it('the read-only export is unchanged on the host', function () {
      requireJob('tcp', 'ro');
      assert.deepEqual(readdirSync(dirs.ro!).sort(), ['dir', 'empty', 'file', 'link']);
      assert.equal(readFileSync(join(dirs.ro!, 'file'), 'utf8'), 'read-only\n');
    });
    it('the servers are still running', function () {
      requireJob('tcp', 'tcp');
      for (const s of servers) assert.ok(s.running(), `${s.kind} server on port ${s.port} exited\n${s.log()}`);
    });
  });
});
