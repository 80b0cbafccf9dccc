// The guest's OCI runtime (config `guest_runtime`): validated in the runtime config, carried on the kernel
// command line (so a template is built per runtime, and in its own template family), and parsed by the agent.
import assert from 'node:assert/strict';
import {
  DEFAULT_GUEST_RUNTIME,
  GUEST_RUNTIMES,
  qemuConfig,
  type QemuConfig,
} from '../../../src/sandbox/qemu/config.js';
import { templateKey } from '../../../src/sandbox/qemu/template.js';
import { parseAgentArgs } from '../../../src/agent/main.js';
import { withoutEnv } from '../../helpers/env.js';
import { testKernelCmdline } from '../../helpers/qemu-cmdline.js';
import { bootFault } from '../../../src/sandbox/qemu/guest-faults.js';

const append = (cfg: QemuConfig): string => testKernelCmdline(cfg);

describe('sandbox/qemu: guest_runtime (the OCI runtime in the UVM)', () => {
  withoutEnv('LCOW_GUEST_RUNTIME');

  it('defaults to DEFAULT_GUEST_RUNTIME (runc), one of the runtimes the image carries', () => {
    assert.equal(DEFAULT_GUEST_RUNTIME, 'runc');
    assert.ok(GUEST_RUNTIMES.includes(DEFAULT_GUEST_RUNTIME));
    assert.equal(qemuConfig({}, {}).guestRuntime, 'runc');
    assert.equal(qemuConfig({ guest_runtime: '' }, {}).guestRuntime, 'runc');
  });

  it('runc or crun, at the top level or in [qemu]; LCOW_GUEST_RUNTIME wins', () => {
    assert.equal(qemuConfig({ guest_runtime: 'crun' }, {}).guestRuntime, 'crun');
    assert.equal(qemuConfig({ qemu: { guest_runtime: 'crun' } }, {}).guestRuntime, 'crun');
    process.env.LCOW_GUEST_RUNTIME = 'crun';
    try {
      assert.equal(qemuConfig({ guest_runtime: 'runc' }, {}).guestRuntime, 'crun');
    } finally {
      delete process.env.LCOW_GUEST_RUNTIME;
    }
  });

  it('anything else is refused with the accepted values named', () => {
    for (const bad of ['youki', 'RUNC', 'runc ', 'crun;reboot', 1, true, ['crun']])
      assert.throws(() => qemuConfig({ guest_runtime: bad }, {}), /guest_runtime must be one of runc, crun/);
  });

  it('goes on the kernel command line as lcow.runtime=', () => {
    assert.match(append(qemuConfig({}, {})), / lcow\.runtime=runc( |$)/);
    assert.match(append(qemuConfig({ guest_runtime: 'crun' }, {})), / lcow\.runtime=crun( |$)/);
    // A config object built elsewhere with a bad value never reaches the command line.
    const forged = { ...qemuConfig({}, {}), guestRuntime: 'x y' as QemuConfig['guestRuntime'] };
    assert.throws(() => append(forged), /invalid guest runtime/);
  });

  it('templates: another runtime is another key and another family (both kept on one host)', () => {
    const spec = (rt: string) => ({ cfg: qemuConfig({ guest_runtime: rt }, {}), accel: 'tcg' as const, cpus: 1 });
    const runc = templateKey(spec('runc'));
    const crun = templateKey(spec('crun'));
    assert.notEqual(runc.key, crun.key);
    assert.notEqual(runc.family, crun.family);
    assert.match(crun.family, /-crun-/);
  });

  it('the agent takes --oci-runtime runc|crun and refuses anything else', () => {
    const base = ['--state-dir', '/run/lcow', '--accept', 'tcp+token://10.0.2.15:1024', '--token-file', '/t'];
    assert.equal(parseAgentArgs(base).ociRuntime, undefined);
    assert.equal(parseAgentArgs([...base, '--oci-runtime', 'crun']).ociRuntime, 'crun');
    assert.equal(parseAgentArgs([...base, '--oci-runtime=runc']).ociRuntime, 'runc');
    assert.throws(() => parseAgentArgs([...base, '--oci-runtime', '/bin/sh']), /--oci-runtime must be one of/);
  });
});

describe('sandbox/qemu: a guest image without the chosen runtime', () => {
  it("init's complaint fails the boot at once, quoting it", () => {
    const line = 'LCOW fatal OCI runtime crun is not in the guest image (rebuild it: make guest)';
    assert.match(bootFault(line, 1024) ?? '', /init failed: "LCOW fatal OCI runtime crun is not in the guest image/);
  });
});
