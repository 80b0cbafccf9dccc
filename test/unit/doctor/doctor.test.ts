// `lcowctl doctor` with injected probes: a healthy host, a host like this one (TCG, no vhost-vsock, no lcow
// runtime in containerd's config, oom_score_adj restricted), a broken one; statuses, fixes, exit codes, the human
// and JSON renderings, and usage errors. The same command on the real host: test/integration/doctor.
import assert from 'node:assert/strict';
import { main } from '../../../src/doctor/cli.js';
import { EXIT, runDoctor, type FileFacts, type HostProbes, type Report } from '../../../src/doctor/doctor.js';
import { withoutEnv } from '../../helpers/env.js';

const GUEST = '/opt/lcow/guest';
const file = (size = 1000): FileFacts => ({
  isFile: true,
  isDirectory: false,
  isSymlink: false,
  size,
  mode: 0o100644,
  uid: 0,
});
const dir = (mode = 0o40700, uid = 0): FileFacts => ({
  isFile: false,
  isDirectory: true,
  isSymlink: false,
  size: 4096,
  mode,
  uid,
});

interface Host {
  files: Record<string, FileFacts>;
  contents: Record<string, string>;
  commands: Record<string, { code: number; output: string }>;
  kvm: string | undefined;
  kvmOpen: string | undefined;
  path: string[];
  node: string;
}

const healthy = (): Host => ({
  files: {
    '/dev/kvm': { ...file(0), isFile: false },
    '/dev/vhost-vsock': { ...file(0), isFile: false },
    [`${GUEST}/vmlinuz`]: file(8 << 20),
    [`${GUEST}/initrd.img`]: file(100 << 20),
    '/run/lcow': dir(),
  },
  contents: {
    [`${GUEST}/kernel-version`]: '6.1.0-57-amd64\n',
    '/etc/containerd/config.toml': [
      'version = 2',
      '[plugins."io.containerd.grpc.v1.cri".containerd.runtimes.lcow]',
      '  runtime_type = "io.containerd.lcow.v1"',
      '  [plugins."io.containerd.grpc.v1.cri".containerd.runtimes.lcow.options]',
      '    ConfigPath = "/etc/containerd/lcow.toml"',
    ].join('\n'),
    '/etc/containerd/lcow.toml': `guest_dir = "${GUEST}"\nmemory_mb = 512\n`,
  },
  commands: {
    'qemu-system-x86_64 --version': { code: 0, output: 'QEMU emulator version 7.2.22 (Debian)\nCopyright...\n' },
    'runc --version': { code: 0, output: 'runc version 1.1.5\ncommit: x\n' },
    'sh -c echo -1000 > /proc/self/oom_score_adj': { code: 0, output: '' },
  },
  kvm: undefined,
  kvmOpen: undefined,
  path: ['/usr/local/bin/containerd-shim-lcow-v1'],
  node: '20.19.1',
});

function probes(h: Host): HostProbes & { kvmProbed: number } {
  const p = {
    kvmProbed: 0,
    stat: (path: string) =>
      h.files[path] ?? (h.contents[path] !== undefined ? file(h.contents[path]!.length) : undefined),
    openReadWrite: (path: string) => (h.files[path] ? h.kvmOpen : 'ENOENT'),
    readFile: (path: string) => h.contents[path],
    run: async (cmd: string, args: string[]) => h.commands[[cmd, ...args].join(' ')],
    which: (name: string) => h.path.find((x) => x.endsWith(`/${name}`)),
    kvmRunsGuest: async () => {
      p.kvmProbed++;
      return h.kvm;
    },
    nodeVersion: h.node,
  };
  return p;
}

const status = (r: Report): Record<string, string> => {
  const out: Record<string, string> = {};
  for (const c of r.checks) out[c.id] = out[c.id] && out[c.id] !== 'ok' ? out[c.id]! : c.status;
  return out;
};
const find = (r: Report, id: string, st?: string) => r.checks.find((c) => c.id === id && (!st || c.status === st))!;

describe('lcowctl doctor (injected probes)', () => {
  withoutEnv('LCOW_QEMU_TRANSPORT');
  it('a healthy host: every check ok (vsock present), exit 0; the runtime config is the one containerd names', async () => {
    const h = healthy();
    const p = probes(h);
    const r = await runDoctor(p);
    assert.deepEqual(status(r), {
      node: 'ok',
      'runtime-config': 'ok',
      'guest-image': 'ok',
      qemu: 'ok',
      kvm: 'ok',
      'vhost-vsock': 'ok',
      runc: 'ok',
      'shim-binary': 'ok',
      'containerd-config': 'ok',
      'state-dir': 'ok',
    });
    assert.equal(r.exitCode, EXIT.ok);
    assert.equal(p.kvmProbed, 1);
    assert.match(find(r, 'runtime-config').detail, /\/etc\/containerd\/lcow\.toml: 512 MiB/);
    assert.match(find(r, 'guest-image').detail, /guest kernel 6\.1\.0-57-amd64/);
    assert.match(find(r, 'qemu').detail, /7\.2\.22/);
    assert.match(find(r, 'runc').detail, /1\.1\.5/);
  });

  it('a host like this one: TCG, no vhost-vsock, no lcow CRI runtime, oom_score_adj restricted: warnings, exit 3', async () => {
    const h = healthy();
    delete h.files['/dev/vhost-vsock'];
    h.kvm = 'a KVM guest printed nothing in 6000 ms';
    h.contents['/etc/containerd/config.toml'] =
      'version = 2\n[plugins."io.containerd.grpc.v1.cri".cni]\n  bin_dir = "/usr/lib/cni"\n';
    h.commands['sh -c echo -1000 > /proc/self/oom_score_adj'] = { code: 1, output: 'Permission denied' };
    const r = await runDoctor(probes(h), { configPath: '/etc/containerd/lcow.toml' });
    assert.equal(find(r, 'kvm').status, 'warn');
    assert.match(find(r, 'kvm').detail, /TCG/);
    assert.match(find(r, 'kvm').fix!, /nested virtualization/);
    assert.equal(find(r, 'vhost-vsock').status, 'info');
    assert.match(find(r, 'vhost-vsock').detail, /tcp\+token/);
    assert.match(find(r, 'containerd-config', 'warn').fix!, /runtime_type = "io\.containerd\.lcow\.v1"/);
    assert.ok(r.checks.some((c) => c.id === 'containerd-config' && /restrict_oom_score_adj = true/.test(c.fix ?? '')));
    assert.equal(r.summary.fail, 0);
    assert.equal(r.exitCode, EXIT.warn);
  });

  it('transport: vsock forced without /dev/vhost-vsock fails with the fix; tcp forced is only noted', async () => {
    const h = healthy();
    delete h.files['/dev/vhost-vsock'];
    h.contents['/etc/containerd/lcow.toml'] += 'transport = "vsock"\n';
    const r = await runDoctor(probes(h), { configPath: '/etc/containerd/lcow.toml' });
    assert.equal(find(r, 'vhost-vsock').status, 'fail');
    assert.match(find(r, 'vhost-vsock').detail, /transport = "vsock" but there is no \/dev\/vhost-vsock/);
    assert.match(find(r, 'vhost-vsock').fix!, /modprobe vhost_vsock, or set transport = "tcp"/);
    const t = healthy();
    t.contents['/etc/containerd/lcow.toml'] += 'transport = "tcp"\n';
    const rt = await runDoctor(probes(t), { configPath: '/etc/containerd/lcow.toml' });
    assert.equal(find(rt, 'vhost-vsock').status, 'info');
    assert.match(find(rt, 'vhost-vsock').detail, /^transport = "tcp": .*tcp\+token.*\(\/dev\/vhost-vsock present\)$/);
  });

  it('no /dev/kvm or /dev/kvm not openable: TCG without booting a probe guest; a forced accelerator is only noted', async () => {
    const h = healthy();
    delete h.files['/dev/kvm'];
    let p = probes(h);
    let r = await runDoctor(p);
    assert.match(find(r, 'kvm').detail, /no \/dev\/kvm/);
    assert.equal(p.kvmProbed, 0);
    const h2 = healthy();
    h2.kvmOpen = 'EACCES';
    p = probes(h2);
    r = await runDoctor(p);
    assert.match(find(r, 'kvm').detail, /cannot be opened \(EACCES\)/);
    assert.equal(p.kvmProbed, 0);
    h2.contents['/etc/containerd/lcow.toml'] += 'accel = "tcg"\n';
    r = await runDoctor(probes(h2));
    assert.equal(find(r, 'kvm').status, 'info');
  });

  it('a configured erofs root image is part of the guest image: missing, it fails with the fix', async () => {
    const h = healthy();
    h.contents['/etc/containerd/lcow.toml'] += `rootfs = "${GUEST}/rootfs.erofs"\n`;
    assert.equal(find(await runDoctor(probes(h)), 'guest-image').status, 'fail');
    h.files[`${GUEST}/rootfs.erofs`] = file(100 << 20);
    const ok = find(await runDoctor(probes(h)), 'guest-image');
    assert.equal(ok.status, 'ok');
    assert.match(ok.detail, /rootfs\.erofs/);
  });

  it('a broken host: no QEMU, no guest image, a ConfigPath that does not exist: failures with fixes, exit 1', async () => {
    const h = healthy();
    delete h.commands['qemu-system-x86_64 --version'];
    delete h.files[`${GUEST}/initrd.img`];
    h.path = [];
    const r = await runDoctor(probes(h));
    assert.equal(find(r, 'qemu').status, 'fail');
    assert.match(find(r, 'qemu').fix!, /apt-get install qemu-system-x86/);
    assert.equal(find(r, 'guest-image').status, 'fail');
    assert.match(find(r, 'guest-image').fix!, /make guest/);
    assert.equal(find(r, 'shim-binary').status, 'warn');
    assert.equal(r.exitCode, EXIT.fail);

    const h2 = healthy();
    h2.contents['/etc/containerd/config.toml'] = h2.contents['/etc/containerd/config.toml']!.replace(
      'lcow.toml',
      'nope.toml',
    );
    const r2 = await runDoctor(probes(h2));
    assert.ok(
      r2.checks.some((c) => c.id === 'containerd-config' && c.status === 'fail' && /nope\.toml/.test(c.detail)),
    );
    assert.equal(find(r2, 'runtime-config').status, 'fail');
    assert.equal(r2.exitCode, EXIT.fail);
  });

  it('QEMU older than 5.1 fails (free page reporting), unless the config turns that off; bad TOML fails', async () => {
    const h = healthy();
    h.commands['qemu-system-x86_64 --version'] = { code: 0, output: 'QEMU emulator version 5.0.1\n' };
    assert.equal(find(await runDoctor(probes(h)), 'qemu').status, 'fail');
    h.contents['/etc/containerd/lcow.toml'] += 'free_page_reporting = false\n';
    assert.equal(find(await runDoctor(probes(h)), 'qemu').status, 'ok');
    h.contents['/etc/containerd/config.toml'] = 'version = 2\n[plugins\n';
    const r = await runDoctor(probes(h));
    assert.equal(find(r, 'containerd-config').status, 'fail');
    assert.match(find(r, 'containerd-config').detail, /not valid TOML/);
  });

  it('/run/lcow readable by others is a warning; a symlink there is a failure', async () => {
    const h = healthy();
    h.files['/run/lcow'] = dir(0o40755);
    assert.equal(find(await runDoctor(probes(h)), 'state-dir').status, 'warn');
    h.files['/run/lcow'] = { ...dir(), isDirectory: false, isSymlink: true };
    assert.equal(find(await runDoctor(probes(h)), 'state-dir').status, 'fail');
  });

  it('the CLI: human rows with fixes, --json with the same report, exit codes, usage errors exit 2', async () => {
    const h = healthy();
    h.kvm = 'nope';
    let out = '';
    let err = '';
    const w = (s: string): void => void (out += s);
    const e = (s: string): void => void (err += s);
    assert.equal(await main([], probes(h), w, e), EXIT.warn);
    const rows = out.split('\n');
    assert.ok(
      rows.some((l) => /^WARN\s+KVM\s+\/dev\/kvm exists but a guest does not run under it \(nope\)/.test(l)),
      out,
    );
    assert.ok(
      rows.some((l) => /^\s+fix: enable VT-x/.test(l)),
      out,
    );
    assert.match(out, /9 ok, 0 info, 1 warning\(s\), 0 failure\(s\)/);
    out = '';
    assert.equal(await main(['--json'], probes(h), w, e), EXIT.warn);
    const j = JSON.parse(out) as Report;
    assert.equal(j.exitCode, EXIT.warn);
    assert.equal(j.checks.length, 10);
    assert.deepEqual(j.summary, { ok: 9, info: 0, warn: 1, fail: 0 });
    assert.equal(await main(['--bogus'], probes(h), w, e), EXIT.usage);
    assert.match(err, /unknown argument "--bogus"/);
    assert.equal(await main(['--config'], probes(h), w, e), EXIT.usage);
    out = '';
    assert.equal(await main(['--help'], probes(h), w, e), EXIT.ok);
    assert.match(out, /Exit codes: 0 healthy, 1 at least one failure, 2 usage error, 3 warnings only/);
  });
});
