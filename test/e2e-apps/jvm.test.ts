// A Jenkins-like JVM workload (openjdk-17-jre-headless; hack/apps/images/jvm/Workload.java) in a QEMU UVM
// with its home directory on a host bind mount (9P): an exclusive FileChannel lock checked from a second JVM,
// AtomicFileWriter-style renames, many small files, a WatchService on the home seeing another process's
// changes, a manifest of SHA-256 sums; a NEW pod verifies every file, and the host has them.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppHarness, appImage, appsUnavailable } from '../helpers/apps.js';
import { requirePrerequisite } from '../helpers/prerequisite.js';

const JOBS = 40;
const BUILDS = 5;
// Client VM flags: under TCG the C2 compiler's warm-up costs more than it gives in a short run.
const JAVA = 'java -XX:TieredStopAtLevel=1 -Xshare:auto -cp /opt/lcow Workload';

describe('apps: a Jenkins-like JVM workload with its home on a 9P bind mount', function () {
  this.timeout(1_200_000);
  const h = new AppHarness('jvm');
  let image = '';
  let dir = '';
  let files = 0;

  before(async function () {
    requirePrerequisite(this, appsUnavailable());
    dir = mkdtempSync(join(tmpdir(), 'lcow-apps-jvm-'));
    chmodSync(dir, 0o755);
    await h.start();
    image = await h.time('image', () => appImage(h.cd, 'jvm'));
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

  it('locks, atomic renames, small files and a watch service on the home; files on the host', async function () {
    const p = await pod();
    const out = await h.time('workload', () => h.sh(p, `${JAVA} write /data/home ${JOBS} ${BUILDS}`, 900_000));
    // The second JVM could not take the home's lock while the first held it, and could after.
    assert.match(out, /^lock probe held-elsewhere$/m, out);
    assert.match(out, /^watch ok \d+$/m, out);
    assert.match(out, /^after-unlock probe free$/m, out);
    files = Number(/^wrote (\d+)$/m.exec(out)?.[1]);
    assert.equal(files, JOBS * (2 + BUILDS * 2) + 2);
    await h.removePod(p);
    // On the host: the last atomic write won, no temp file is left, the manifest lists every file.
    const job = join(dir, 'home/jobs/job-7');
    assert.match(readFileSync(join(job, 'config.xml'), 'utf8'), /<rev>3<\/rev>/);
    assert.deepEqual(
      readdirSync(job).filter((f) => f.endsWith('.tmp')),
      [],
    );
    assert.equal(readFileSync(join(dir, 'home/manifest.sha256'), 'utf8').trim().split('\n').length, files);
    assert.ok(existsSync(join(dir, 'home/plugins')) && existsSync(join(dir, 'home/external.xml')));
  });

  it('a new pod verifies every file and finds the lock free', async function () {
    assert.ok(files, 'the first test did not write');
    const p = await pod();
    const out = await h.time('verify', () => h.sh(p, `${JAVA} verify /data/home && ${JAVA} probe /data/home`));
    assert.deepEqual(out.trim().split('\n'), [`verified ${files}`, 'probe free']);
    await h.removePod(p);
  });
});
