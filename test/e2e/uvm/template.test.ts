// End to end, UVM templates (src/sandbox/qemu/template.ts) through a real containerd, with a private template
// dir: the first pod finds no template (boots cold while the template is built in the background), later
// pods are clones; two clones are different machines (secret, boot_id, /dev/urandom, clock); a damaged
// template is rebuilt, never used; with templates off, pods boot cold.
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { leftovers, startContainerd, type PrivateContainerd } from '../../helpers/containerd.js';
import { importTestImage } from '../../helpers/image.js';
import { lcowctl } from '../../helpers/lcowctl.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';
import { pidsWhere, waitFor } from '../../helpers/host-state.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../..');
const RUNTIME = 'io.containerd.lcow.v1';
const NS = `lcow-e2e-tpl-${process.pid}`;
const pod = (name: string): string => `tpl-${name}-${process.pid}`;

const unavailable = ((): string | undefined => {
  if (!existsSync(join(ROOT, 'build/guest/initrd.img'))) return 'no guest image (make guest)';
  if (!existsSync('/usr/bin/qemu-system-x86_64')) return 'no qemu-system-x86_64';
  if (process.getuid?.() !== 0) return 'needs root';
  return undefined;
})();

/** QEMU processes this suite started: its pods, and template builds into its own template dir. */
const ourQemus = (tplDir: string): number[] =>
  pidsWhere(
    (a) =>
      a[0]?.startsWith('qemu-system') === true && a.some((x) => x.includes(String(process.pid)) || x.includes(tplDir)),
  );

const templates = (dir: string): string[] =>
  existsSync(dir)
    ? readdirSync(dir).filter((n) => /^[0-9a-f]{32}$/.test(n) && existsSync(join(dir, n, 'meta.json')))
    : [];

describe('e2e: UVM templates', function () {
  this.timeout(600_000);
  let cd: PrivateContainerd;
  let image: string;
  let tplDir: string;
  const running: string[] = [];

  const runDetached = async (id: string): Promise<void> => {
    const r = await cd.ctr(
      [
        'run',
        '-d',
        '--runtime',
        RUNTIME,
        '--annotation',
        `io.kubernetes.cri.sandbox-id=${id}`,
        image,
        id,
        'sleep',
        '600',
      ],
      { timeoutMs: 300_000 },
    );
    assert.equal(r.code, 0, `${r.stderr}\n${cd.log().slice(-3000)}`);
    running.push(id);
  };
  const exec = async (id: string, script: string): Promise<string> => {
    const r = await cd.ctr(['task', 'exec', '--exec-id', `x${Date.now()}`, id, 'sh', '-c', script], {
      timeoutMs: 60_000,
    });
    assert.equal(r.code, 0, r.stderr);
    return r.stdout;
  };
  const remove = async (id: string): Promise<void> => {
    await cd.ctr(['task', 'kill', '-s', 'KILL', id]);
    await waitFor(async () => {
      const r = await cd.ctr(['task', 'delete', id]);
      return r.code === 0 || /not found/.test(r.stderr);
    }, 60_000);
    await cd.ctr(['container', 'rm', id]);
    running.splice(running.indexOf(id), 1);
  };
  /** The shim's log lines for one pod (the shim logs to containerd's log through the bundle's fifo). */
  const podLog = (id: string): string =>
    cd
      .log()
      .split('\n')
      .filter((l) => l.includes(id))
      .join('\n');

  before(async function () {
    requirePrerequisite(this, unavailable);
    tplDir = mkdtempSync('/dev/shm/lcow-e2e-templates-');
    cd = await startContainerd({
      extraPath: [join(ROOT, 'bin')],
      logLevel: 'info',
      namespace: NS,
      // templates are a tcp+token feature (docs/templates.md): pinned, whatever the host has
      env: { LCOW_TEMPLATE_DIR: tplDir, LCOW_QEMU_TRANSPORT: 'tcp' },
    });
    image = await importTestImage(cd.address, cd.namespace);
  });

  after(async function () {
    if (!cd) return;
    for (const id of [...running]) await remove(id).catch(() => undefined);
    await cd.stop();
    // The background builder may still run if a test failed early: it is ours, end it.
    assert.ok(await waitFor(() => ourQemus(tplDir).length === 0, 60_000), `QEMU left: ${ourQemus(tplDir)}`);
    rmSync(tplDir, { recursive: true, force: true });
    rmSync(`/var/log/lcow/${NS}`, { recursive: true, force: true });
    assert.deepEqual(leftovers(), []);
    const stateRoot = `/run/lcow/${NS}`;
    if (existsSync(stateRoot)) {
      assert.deepEqual(readdirSync(stateRoot), [], 'pod state left behind');
      rmSync(stateRoot, { recursive: true });
    }
  });

  it('the first pod boots cold and starts a background build; later pods are clones of the template', async () => {
    await runDetached(pod('a'));
    assert.match(podLog(pod('a')), /building it in the background/);
    assert.ok(await waitFor(() => templates(tplDir).length === 1, 300_000), readTail(join(tplDir, 'build.log')));
    await runDetached(pod('b'));
    assert.match(podLog(pod('b')), /UVM restored from a template/);
    // Operators see a clone's start for what it is: restore phases (no kernel, no init), and a console line.
    const stats = await lcowctl(['stats', pod('b'), '-n', NS]);
    assert.equal(stats.code, 0, stats.stderr);
    for (const phase of ['qemu start', 'restore', 'agent start', 'agent ready', 'total'])
      assert.match(stats.stdout, new RegExp(`^${phase}\\s+\\d`, 'm'), `boot phase ${phase}:\n${stats.stdout}`);
    assert.doesNotMatch(stats.stdout, /^(kernel|init)\s/m, stats.stdout);
    assert.match((await lcowctl(['console', pod('b'), '-n', NS])).stdout, /restored from UVM template [0-9a-f]{32}/);
    const r = await cd.ctr(
      [
        'run',
        '--rm',
        '--runtime',
        RUNTIME,
        '--annotation',
        `io.kubernetes.cri.sandbox-id=${pod('c')}`,
        image,
        pod('c'),
        'echo',
        'hi',
      ],
      { timeoutMs: 120_000 },
    );
    assert.equal(r.code, 0, r.stderr);
    assert.equal(r.stdout.trim(), 'hi');
    assert.match(podLog(pod('c')), /UVM restored from a template/);
  });

  it('two clones are different machines: secret, boot_id, /dev/urandom, clock', async () => {
    await runDetached(pod('d'));
    assert.match(podLog(pod('d')), /UVM restored from a template/);
    const probe =
      'cat /proc/sys/kernel/random/boot_id; head -c 32 /dev/urandom | od -An -tx1 | tr -d " \\n"; echo; date +%s';
    const [b, d] = [await exec(pod('b'), probe), await exec(pod('d'), probe)].map((o) => o.trim().split('\n'));
    assert.equal(b!.length, 3, String(b));
    assert.notEqual(b![0], d![0], 'boot_id');
    assert.notEqual(b![1], d![1], '/dev/urandom');
    for (const clock of [b![2], d![2]])
      assert.ok(Math.abs(Number(clock) - Date.now() / 1000) < 30, `guest clock ${clock}`);
    // Each clone's agent took only its own fresh secret (the template's was never reused: it is deleted).
    const secret = (id: string): Buffer => readFileSync(join('/run/lcow', NS, id, 'token'));
    assert.equal(secret(pod('b')).length, 32);
    assert.notDeepEqual(secret(pod('b')), secret(pod('d')));
    const key = templates(tplDir)[0]!;
    assert.ok(!existsSync(join(tplDir, key, 'token')), 'the template build secret is gone');
  });

  it('a damaged template is detected and rebuilt, never used', async () => {
    const key = templates(tplDir)[0]!;
    const builtAt = (): string | undefined => {
      try {
        return (JSON.parse(readFileSync(join(tplDir, key, 'meta.json'), 'utf8')) as { builtAt?: string }).builtAt;
      } catch {
        return undefined;
      }
    };
    const before = builtAt();
    const state = join(tplDir, key, 'state');
    const bytes = readFileSync(state);
    bytes[bytes.length >> 1] ^= 0xff;
    writeFileSync(state, bytes);
    await runDetached(pod('e'));
    const log = podLog(pod('e'));
    assert.doesNotMatch(log, /UVM restored from a template/);
    assert.match(log, /building it in the background/);
    // Rebuilt under the same key (same inputs), then used again.
    assert.ok(await waitFor(() => builtAt() !== undefined && builtAt() !== before, 300_000));
    await remove(pod('e'));
    await runDetached(pod('f'));
    assert.match(podLog(pod('f')), /UVM restored from a template/);
  });

  it('with templates off (LCOW_TEMPLATES=0), pods boot cold', async () => {
    const cold = await startContainerd({
      extraPath: [join(ROOT, 'bin')],
      logLevel: 'info',
      namespace: NS,
      env: { LCOW_TEMPLATE_DIR: tplDir, LCOW_TEMPLATES: '0', LCOW_QEMU_TRANSPORT: 'tcp' },
    });
    try {
      const img = await importTestImage(cold.address, cold.namespace);
      const id = pod('cold');
      const r = await cold.ctr(
        [
          'run',
          '--rm',
          '--runtime',
          RUNTIME,
          '--annotation',
          `io.kubernetes.cri.sandbox-id=${id}`,
          img,
          id,
          'echo',
          'cold',
        ],
        { timeoutMs: 300_000 },
      );
      assert.equal(r.code, 0, r.stderr);
      assert.equal(r.stdout.trim(), 'cold');
      const log = cold.log();
      assert.match(log, /UVM ready/);
      assert.doesNotMatch(log, /restored from a template|building it in the background/);
    } finally {
      await cold.stop();
    }
  });
});

function readTail(path: string): string {
  try {
    return readFileSync(path, 'utf8').slice(-3000);
  } catch {
    return `(no ${path})`;
  }
}
