// WordPress (Debian's package: Apache + mod_php + MariaDB) in ONE container in a QEMU UVM (pod networking is
// not there yet, so the test drives it from inside with curl and php-cli against localhost), with MariaDB's
// datadir and wp-content on a host bind mount (9P): install through the web installer, a post and an upload;
// a NEW pod serves them back.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readFileSync, rmSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppHarness, appImage, appsUnavailable } from '../helpers/apps.js';
import { requirePrerequisite } from '../helpers/prerequisite.js';
import { WP_DATABASE, WP_INIT, WP_START as START, WP_STOP as STOP, WP_WEB_INSTALL } from '../helpers/app-scripts.js';

const TITLE = 'Written in a utility VM';
// php-cli with WordPress loaded, as the web server's user (hack/apps/images/wordpress/wp-cli.php).
const WP = (args: string): string => `runuser -u www-data -- php /usr/local/lib/lcow/wp-cli.php ${args}`;

describe('apps: WordPress (Apache + PHP + MariaDB, one container) with its data on a 9P bind mount', function () {
  this.timeout(1_800_000);
  const h = new AppHarness('wordpress');
  let image = '';
  let dir = '';
  let postId = '';
  let upload = '';

  before(async function () {
    requirePrerequisite(this, appsUnavailable());
    dir = mkdtempSync(join(tmpdir(), 'lcow-apps-wordpress-'));
    chmodSync(dir, 0o755);
    await h.start();
    image = await h.time('image', () => appImage(h.cd, 'wordpress'));
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
    h.time('pod start', () => h.startPod(image, [{ src: dir, dst: '/data' }], { memoryMiB: 1536 }));

  it('web install, a post and an upload; clean stop; the data is on the host', async function () {
    const p = await pod();
    await h.time('database', () => h.sh(p, WP_INIT));
    await h.time('start', () => h.sh(p, START));
    await h.sh(p, WP_DATABASE);
    const install = await h.time('web install', () => h.sh(p, WP_WEB_INSTALL));
    assert.equal(install.trim(), '200');
    const out = await h.time('post + upload', () => h.sh(p, WP(`post '${TITLE}' 'Stored on a 9P bind mount.'`)));
    [postId, upload] = out.trim().split(' ') as [string, string];
    assert.match(postId, /^\d+$/);
    const page = await h.sh(
      p,
      `curl -sSL -w '\\nHTTP %{http_code} %{url_effective}\\n' 'http://localhost/?p=${postId}'`,
    );
    assert.ok(page.includes(TITLE), page.slice(-2000));
    await h.time('stop', () => h.sh(p, STOP));
    await h.removePod(p);
    const rel = upload.replace('http://localhost/wp-content/', '');
    assert.equal(readFileSync(join(dir, 'wp-content', rel), 'utf8'), 'uploaded through 9P\n');
    assert.ok(existsSync(join(dir, 'mysql/wordpress/wp_posts.ibd')), 'no wp_posts table on the host');
  });

  it('a new pod serves the site, the post and the upload', async function () {
    assert.ok(postId, 'the first test did not post');
    const p = await pod();
    await h.time('start (2nd pod)', () => h.sh(p, START));
    const page = await h.sh(
      p,
      `curl -sSL -w '\\nHTTP %{http_code} %{url_effective}\\n' 'http://localhost/?p=${postId}'`,
    );
    assert.ok(page.includes(TITLE), page.slice(-2000));
    assert.equal(await h.sh(p, `curl -fsS '${upload}'`), 'uploaded through 9P\n');
    assert.equal((await h.sh(p, WP('option blogname'))).trim(), 'LCOW');
    await h.sh(p, STOP);
    await h.removePod(p);
  });
});
