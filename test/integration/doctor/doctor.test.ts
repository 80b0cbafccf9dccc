// `lcowctl doctor` on this very host, through the real launcher: each answer is compared with what the host shows
// by other means (the device nodes, `qemu-system-x86_64 --version`, `runc --version`, the built guest image), and
// the exit code with the statuses. No expectation is hard-coded for KVM: the doctor boots the same probe guest the
// QEMU backend does and reports ok or a warning with the reason.
import assert from 'node:assert/strict';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { Report } from '../../../src/doctor/doctor.js';
import { requirePrerequisite } from '../../helpers/prerequisite.js';

const ROOT = resolve(fileURLToPath(new URL('.', import.meta.url)), '../../../..');
const LCOWCTL = join(ROOT, 'bin/lcowctl');

function lcowctl(args: string[]): { code: number | null; stdout: string; stderr: string } {
  const r = spawnSync(LCOWCTL, args, { encoding: 'utf8', timeout: 60_000 });
  return { code: r.status, stdout: r.stdout, stderr: r.stderr };
}

const firstLine = (cmd: string, args: string[]): string =>
  execFileSync(cmd, args, { encoding: 'utf8' }).split('\n')[0]!.trim();

describe('lcowctl doctor on this host', function () {
  this.timeout(120_000);
  before(function () {
    requirePrerequisite(
      this,
      !existsSync(LCOWCTL)
        ? 'no bin/lcowctl (make build)'
        : !existsSync('/usr/bin/qemu-system-x86_64')
          ? 'no QEMU'
          : undefined,
    );
  });

  it('--json: every check answered, matching the host; the exit code follows the statuses; human output agrees', () => {
    const j = lcowctl(['doctor', '--json']);
    const r = JSON.parse(j.stdout) as Report;
    const by = (id: string) => r.checks.find((c) => c.id === id)!;
    assert.deepEqual(
      [...new Set(r.checks.map((c) => c.id))],
      [
        'node',
        'runtime-config',
        'guest-image',
        'qemu',
        'kvm',
        'vhost-vsock',
        'runc',
        'shim-binary',
        'containerd-config',
        'state-dir',
      ],
    );
    assert.equal(by('node').status, 'ok');
    assert.equal(by('qemu').status, 'ok');
    assert.equal(by('qemu').detail, firstLine('qemu-system-x86_64', ['--version']));
    assert.equal(by('runc').status, 'ok');
    assert.ok(by('runc').detail.startsWith(firstLine('runc', ['--version'])));
    const imageBuilt =
      existsSync(join(ROOT, 'build/guest/vmlinuz')) && existsSync(join(ROOT, 'build/guest/initrd.img'));
    assert.equal(by('guest-image').status, imageBuilt ? 'ok' : 'fail');
    assert.equal(by('vhost-vsock').status, existsSync('/dev/vhost-vsock') ? 'ok' : 'info');
    if (!existsSync('/dev/kvm')) assert.match(by('kvm').detail, /no \/dev\/kvm/);
    if (by('kvm').status === 'warn') assert.match(by('kvm').detail, /TCG/);
    else assert.equal(by('kvm').status, 'ok');
    const worst = r.summary.fail ? 1 : r.summary.warn ? 3 : 0;
    assert.equal(r.exitCode, worst);
    assert.equal(j.code, worst);

    const h = lcowctl(['doctor']);
    assert.equal(h.code, worst);
    for (const c of r.checks) assert.ok(h.stdout.includes(c.title), `${c.title} missing from:\n${h.stdout}`);
    assert.match(h.stdout, new RegExp(`${r.summary.ok} ok, ${r.summary.info} info, ${r.summary.warn} warning`));
  });

  it('a usage error exits 2; lcowctl --help lists doctor', () => {
    assert.equal(lcowctl(['doctor', '--nope']).code, 2);
    assert.match(lcowctl(['--help']).stdout, /doctor/);
  });
});
