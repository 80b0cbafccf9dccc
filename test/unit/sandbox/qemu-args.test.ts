// The QEMU command line of the tcp+token transport: user networking with restrict=on, the agent's two
// listeners forwarded from the host's loopback only (hostfwd), no guestfwd (the guest reaches nothing on the
// host), no socat, and the secret only by file (fw_cfg). No QEMU.
import assert from 'node:assert/strict';
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { withoutEnv } from '../../helpers/env.js';
import { testKernelCmdline, testQemuArgs } from '../../helpers/qemu-cmdline.js';
import { join } from 'node:path';
import {
  agentJitOn,
  defaultKernel,
  GUEST_ADDR,
  GUEST_CONTROL_PORT,
  GUEST_P9_PORT,
  qemuConfig,
} from '../../../src/sandbox/qemu/config.js';

describe('sandbox/qemu: command line (tcp+token over hostfwd)', () => {
  const args = testQemuArgs(qemuConfig({}, {}));
  const after = (flag: string): string => args[args.indexOf(flag) + 1]!;

  it('netdev: user, restrict=on, exactly two hostfwd rules bound to 127.0.0.1, no guestfwd', () => {
    const netdev = after('-netdev').split(',');
    assert.equal(netdev[0], 'user');
    assert.ok(netdev.includes('restrict=on'));
    assert.deepEqual(
      netdev.filter((p) => p.startsWith('hostfwd=')),
      [`hostfwd=tcp:127.0.0.1:40001-:${GUEST_CONTROL_PORT}`, `hostfwd=tcp:127.0.0.1:40002-:${GUEST_P9_PORT}`],
    );
    assert.ok(!args.join(' ').includes('guestfwd'));
    assert.ok(!args.join(' ').includes('socat'));
  });

  it('the agent listens on its eth0 address; the secret is only referenced by fw_cfg file', () => {
    const append = after('-append');
    assert.match(
      append,
      new RegExp(`lcow\\.accept=tcp\\+token://${GUEST_ADDR.replace(/\./g, '\\.')}:${GUEST_CONTROL_PORT}`),
    );
    assert.match(
      append,
      new RegExp(`lcow\\.p9accept=tcp\\+token://${GUEST_ADDR.replace(/\./g, '\\.')}:${GUEST_P9_PORT}`),
    );
    assert.ok(!append.includes('lcow.dial'));
    assert.equal(after('-fw_cfg'), 'name=opt/lcow/token,file=/run/x/token');
  });
});

describe('sandbox/qemu: 9P share security models from the runtime config', () => {
  it('defaults: rootfs snapshots passthrough-existing, other host directories mapped', () => {
    const cfg = qemuConfig({}, {});
    assert.equal(cfg.rootfsShareSecurity, 'passthrough-existing');
    assert.equal(cfg.hostShareSecurity, 'mapped');
  });

  it('both are switchable (top level or [qemu]); an unknown model is refused', () => {
    const cfg = qemuConfig({ rootfs_share_security: 'mapped', qemu: { host_share_security: 'mapped' } }, {});
    assert.equal(cfg.rootfsShareSecurity, 'mapped');
    assert.equal(cfg.hostShareSecurity, 'mapped');
    assert.throws(() => qemuConfig({ host_share_security: 'passthrough' }, {}), /share security must be one of/);
  });
});

describe('sandbox/qemu: the default kernel', () => {
  it('boots the uncompressed vmlinux (PVH) when the image has one, else the bzImage; `kernel` wins', () => {
    const dir = mkdtempSync(join(tmpdir(), 'lcow-guest-'));
    try {
      writeFileSync(join(dir, 'vmlinuz'), 'bzImage');
      assert.equal(defaultKernel(dir), join(dir, 'vmlinuz'));
      assert.equal(qemuConfig({ guest_dir: dir }, {}).kernel, join(dir, 'vmlinuz'));
      writeFileSync(join(dir, 'vmlinux'), 'ELF');
      assert.equal(defaultKernel(dir), join(dir, 'vmlinux'));
      assert.equal(qemuConfig({ guest_dir: dir }, {}).kernel, join(dir, 'vmlinux'));
      assert.equal(qemuConfig({ guest_dir: dir, kernel: '/k/vmlinuz' }, {}).kernel, '/k/vmlinuz');
    } finally {
      rmSync(dir, { recursive: true, force: true });
    }
  });
});

describe('sandbox/qemu: agent_jit', () => {
  withoutEnv('LCOW_AGENT_JIT');
  const append = (runtime: Record<string, unknown>, accel: 'tcg' | 'kvm', template = false): string =>
    testKernelCmdline(
      qemuConfig(runtime, {}),
      accel,
      template ? { ramFile: { path: '/dev/shm/t/ram', shared: true } } : {},
    );

  it('auto: the agent runs jitless in a cold TCG boot only (not in templates and clones, nor with KVM)', () => {
    assert.match(append({}, 'tcg'), /(^| )lcow\.jitless=1( |$)/);
    assert.doesNotMatch(append({}, 'kvm'), /lcow\.jitless/);
    assert.doesNotMatch(append({}, 'tcg', true), /lcow\.jitless/, 'a template (and its clones): JIT');
    assert.match(append({ agent_jit: 'off' }, 'tcg', true), /lcow\.jitless=1/);
    assert.doesNotMatch(append({ agent_jit: 'on' }, 'tcg'), /lcow\.jitless/);
    assert.match(append({ agent_jit: 'off' }, 'kvm'), /lcow\.jitless=1/);
    assert.equal(agentJitOn('auto', 'kvm', false), true);
    assert.equal(agentJitOn('auto', 'tcg', false), false);
    assert.equal(agentJitOn('auto', 'tcg', true), true);
  });

  it('refuses anything else, naming the key', () => {
    assert.throws(() => qemuConfig({ agent_jit: 'fast' }, {}), /agent_jit = "fast": want one of auto, on, off/);
    assert.throws(() => qemuConfig({ agent_jit: true }, {}), /agent_jit/);
  });
});
