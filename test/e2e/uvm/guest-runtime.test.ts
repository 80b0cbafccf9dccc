// End to end, `guest_runtime = "crun"` (the OCI runtime in the UVM) through a real containerd with a private
// template dir: containers run under crun in the guest (its state file, not runc's), their stats come from the
// cgroup files (crun has no `events`), exit codes pass through, and a pod restored from a template built for crun
// (template family `...-crun-...`) runs one too. (uvm.test.ts and the CRI suite run with either runtime:
// LCOW_GUEST_RUNTIME=crun.)
import assert from 'node:assert/strict';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { leftovers, startContainerd, type PrivateContainerd } from '../../helpers/containerd.js';
import { importTestImage } from '../../helpers/image.js';
import { lcowctl } from '../../helpers/lcowctl.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';
import { pidsWhere, waitFor } from '../../helpers/host-state.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../..');
const RUNTIME = 'io.containerd.lcow.v1';
const NS = `lcow-e2e-crun-${process.pid}`;
const pod = (name: string): string => `crun-${name}-${process.pid}`;

const unavailable = ((): string | undefined => {
  if (!existsSync(join(ROOT, 'build/guest/rootfs.erofs'))) return 'no guest image (make guest)';
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

const templateMetas = (dir: string): Array<{ family: string }> =>
  existsSync(dir)
    ? readdirSync(dir)
        .filter((n) => /^[0-9a-f]{32}$/.test(n) && existsSync(join(dir, n, 'meta.json')))
        .map((n) => JSON.parse(readFileSync(join(dir, n, 'meta.json'), 'utf8')) as { family: string })
    : [];

describe('e2e: guest_runtime = "crun"', function () {
  this.timeout(600_000);
  let cd: PrivateContainerd;
  let image: string;
  let tplDir: string;
  let cfgDir: string;
  let config: string;
  const running: string[] = [];

  const remove = async (id: string): Promise<void> => {
    await cd.ctr(['task', 'kill', '-s', 'KILL', id]);
    await waitFor(async () => {
      const r = await cd.ctr(['task', 'delete', id]);
      return r.code === 0 || /not found/.test(r.stderr);
    }, 60_000);
    await cd.ctr(['container', 'rm', id]);
    running.splice(running.indexOf(id), 1);
  };
  const podLog = (id: string): string =>
    cd
      .log()
      .split('\n')
      .filter((l) => l.includes(id))
      .join('\n');

  before(async function () {
    requirePrerequisite(this, unavailable);
    tplDir = mkdtempSync('/dev/shm/lcow-e2e-crun-templates-');
    cfgDir = mkdtempSync(join(tmpdir(), 'lcow-e2e-crun-'));
    config = join(cfgDir, 'lcow.toml');
    writeFileSync(config, 'guest_runtime = "crun"\nallow_uvm_exec = true\n');
    cd = await startContainerd({
      extraPath: [join(ROOT, 'bin')],
      logLevel: 'info',
      namespace: NS,
      // LCOW_GUEST_RUNTIME would win over the config file: this suite names its runtime itself.
      env: { LCOW_TEMPLATE_DIR: tplDir, LCOW_QEMU_TRANSPORT: 'tcp', LCOW_GUEST_RUNTIME: '' },
    });
    image = await importTestImage(cd.address, cd.namespace);
  });

  after(async function () {
    if (!cd) return;
    for (const id of [...running]) await remove(id).catch(() => undefined);
    await cd.stop();
    assert.ok(await waitFor(() => ourQemus(tplDir).length === 0, 60_000), `QEMU left: ${ourQemus(tplDir)}`);
    rmSync(tplDir, { recursive: true, force: true });
    rmSync(cfgDir, { recursive: true, force: true });
    rmSync(`/var/log/lcow/${NS}`, { recursive: true, force: true });
    assert.deepEqual(leftovers(), []);
    const stateRoot = `/run/lcow/${NS}`;
    if (existsSync(stateRoot)) {
      assert.deepEqual(readdirSync(stateRoot), [], 'pod state left behind');
      rmSync(stateRoot, { recursive: true });
    }
  });

  it('a container runs under crun in the UVM; its stats come from its cgroup', async () => {
    const id = pod('a');
    const r = await cd.ctr(
      ['run', '-d', '--runtime', RUNTIME, '--runtime-config-path', config].concat([
        '--annotation',
        `io.kubernetes.cri.sandbox-id=${id}`,
        image,
        id,
        'sleep',
        '600',
      ]),
      { timeoutMs: 300_000 },
    );
    assert.equal(r.code, 0, `${r.stderr}\n${cd.log().slice(-3000)}`);
    running.push(id);
    // crun keeps `status` in its state dir; runc would keep `state.json` there.
    const state = await lcowctl(['exec', id, '-n', NS, '--', 'ls', `/run/lcow/runc/${id}`]);
    assert.equal(state.code, 0, state.stderr);
    assert.match(state.stdout, /^status$/m, state.stdout);
    assert.doesNotMatch(state.stdout, /state\.json/);
    const metrics = await cd.ctr(['task', 'metrics', '--format', 'json', id]);
    assert.equal(metrics.code, 0, metrics.stderr);
    // v1- or v2-shaped (the shim picks what containerd expects): memory usage is a number or {usage, limit, max}.
    const m = JSON.parse(metrics.stdout) as {
      pids?: { current?: number };
      memory?: { usage?: number | { usage?: number } };
    };
    const mem = m.memory?.usage;
    assert.ok((m.pids?.current ?? 0) >= 1, metrics.stdout);
    assert.ok((typeof mem === 'object' ? (mem.usage ?? 0) : (mem ?? 0)) > 0, metrics.stdout);
  });

  it('a pod restored from a template built for crun runs its container under crun; exit codes pass through', async () => {
    assert.ok(
      await waitFor(() => templateMetas(tplDir).length === 1, 300_000),
      `no template: ${existsSync(join(tplDir, 'build.log')) ? readFileSync(join(tplDir, 'build.log'), 'utf8').slice(-2000) : ''}`,
    );
    assert.match(templateMetas(tplDir)[0]!.family, /-crun-/);
    const id = pod('b');
    const r = await cd.ctr(
      ['run', '--rm', '--runtime', RUNTIME, '--runtime-config-path', config]
        .concat(['--annotation', `io.kubernetes.cri.sandbox-id=${id}`, image, id])
        .concat(['sh', '-c', 'echo hi; exit 7']),
      { timeoutMs: 120_000 },
    );
    assert.equal(r.stdout.trim(), 'hi', r.stderr);
    assert.equal(r.code, 7, r.stderr);
    assert.match(podLog(id), /UVM restored from a template/);
  });
});
