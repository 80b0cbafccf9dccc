// The QEMU argv and kernel command line of a test UVM (tcp+token, fixed per-VM values), for unit tests of what
// the QEMU backend puts on them. No QEMU.
import { qemuArgs, type Accel, type CommandLineInputs, type QemuConfig } from '../../src/sandbox/qemu/config.js';

/** qemuArgs for `cfg` with fixed names, sockets and ports; `extra` overrides or adds inputs (e.g. a RAM file). */
export function testQemuArgs(cfg: QemuConfig, accel: Accel = 'tcg', extra: Partial<CommandLineInputs> = {}): string[] {
  return qemuArgs({
    cfg,
    accel,
    cpus: 1,
    name: 'lcow-test',
    qmpSocket: '/run/x/qmp.sock',
    tokenFile: '/run/x/token',
    controlPort: 40001,
    p9Port: 40002,
    ...extra,
  });
}

/** The kernel command line (-append) of testQemuArgs. */
export function testKernelCmdline(
  cfg: QemuConfig,
  accel: Accel = 'tcg',
  extra: Partial<CommandLineInputs> = {},
): string {
  const args = testQemuArgs(cfg, accel, extra);
  return args[args.indexOf('-append') + 1]!;
}
