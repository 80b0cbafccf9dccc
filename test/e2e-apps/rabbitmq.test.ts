// RabbitMQ (Erlang) in a QEMU UVM with its Mnesia and message store on a host bind mount (9P): a durable
// queue of persistent messages (publisher confirms), clean stop; a NEW pod finds them all; then that UVM is
// SIGKILLed while a client publishes, and a third pod has every message the broker had confirmed.
import assert from 'node:assert/strict';
import { chmodSync, existsSync, mkdtempSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { AppHarness, appImage, appsUnavailable, crashMidWrite } from '../helpers/apps.js';
import { requirePrerequisite } from '../helpers/prerequisite.js';
import { RABBITMQ_START, RABBITMQ_STOP } from '../helpers/app-scripts.js';

const KNOWN = 500;
/** Seconds a broker start may take (under TCG; docs/applications.md has the measured figures). */
const START_WAIT_S = 1800;
const START = RABBITMQ_START(START_WAIT_S);
const STOP = RABBITMQ_STOP;

describe('apps: RabbitMQ with its message store on a 9P bind mount', function () {
  this.timeout(3_600_000);
  const h = new AppHarness('rabbitmq');
  let image = '';
  let dir = '';
  /** The runtime config of its pods: the rootfs with cache=loose (docs/applications.md: the start needs it under TCG). */
  let config = '';
  let wrote = false;
  let second = '';

  before(async function () {
    requirePrerequisite(this, appsUnavailable());
    dir = mkdtempSync(join(tmpdir(), 'lcow-apps-rabbitmq-'));
    chmodSync(dir, 0o755);
    config = join(mkdtempSync(join(tmpdir(), 'lcow-apps-rabbitmq-config-')), 'runtime.toml');
    writeFileSync(config, 'rootfs_share_cache = "loose"\n');
    await h.start();
    image = await h.time('image', () => appImage(h.cd, 'rabbitmq'));
  });

  after(async function () {
    if (appsUnavailable()) return;
    try {
      await h.close();
    } finally {
      if (dir) rmSync(dir, { recursive: true, force: true });
      if (config) rmSync(join(config, '..'), { recursive: true, force: true });
    }
  });

  const pod = (): Promise<string> =>
    h.time('pod start', () =>
      h.startPod(image, [{ src: dir, dst: '/data' }], { memoryMiB: 1536, runtimeConfigPath: config }),
    );

  it('a durable queue with persistent, confirmed messages; clean stop; the store is on the host', async function () {
    const p = await pod();
    await h.time('start', () => h.sh(p, START, (START_WAIT_S + 100) * 1000));
    // What the start cost on the container's rootfs share (Erlang loads its modules from it), for the docs.
    for (const s of await h.p9Stats(p)) {
      const ops = Object.values(s.ops);
      const n = ops.reduce((a, o) => a + o.count, 0);
      const ms = ops.reduce((a, o) => a + o.micros, 0) / 1000;
      const walks = s.ops.Twalk?.count ?? 0;
      process.stderr.write(
        `      rabbitmq: ${s.hostPath}: ${n} 9P requests (${walks} Twalk), server ${ms.toFixed(0)} ms\n`,
      );
    }
    await h.time('publish', () => h.sh(p, `amqp-client publish known ${KNOWN}`));
    assert.equal((await h.sh(p, 'amqp-client count known')).trim(), String(KNOWN));
    await h.time('stop', () => h.sh(p, STOP));
    await h.removePod(p);
    wrote = true;
    const mnesia = join(dir, 'rabbitmq/mnesia/rabbit@localhost');
    assert.ok(existsSync(mnesia), 'no Mnesia directory on the host');
    assert.ok(
      readdirSync(mnesia).some((f) => f.startsWith('msg_stores')),
      'no message store on the host',
    );
  });

  it('a new pod has every message', async function () {
    assert.ok(wrote, 'the first test did not publish');
    const p = await pod();
    await h.time('start (2nd pod)', () => h.sh(p, START, (START_WAIT_S + 100) * 1000));
    assert.equal((await h.sh(p, 'amqp-client count known')).trim(), String(KNOWN));
    second = p;
  });

  it('QEMU SIGKILL while publishing: every confirmed message is there after restart', async function () {
    assert.ok(second, 'the second pod did not start');
    const acked = await h.time('publish until kill', () =>
      crashMidWrite(h, second, 'exec amqp-client publish-acks acked', 50),
    );
    await h.removePod(second);
    const q = await pod();
    await h.time('start after crash (recovery)', () => h.sh(q, START, (START_WAIT_S + 100) * 1000));
    const got = (await h.sh(q, 'amqp-client drain acked')).trim().split('\n');
    assert.equal(got.pop(), 'end');
    const have = new Set(got.map((m) => Number(m.replace('msg-', ''))));
    assert.deepEqual(
      acked.filter((i) => !have.has(i)),
      [],
      `confirmed messages lost (have ${have.size})`,
    );
    assert.equal((await h.sh(q, 'amqp-client count known')).trim(), String(KNOWN));
    await h.sh(q, STOP);
    await h.removePod(q);
  });
});
