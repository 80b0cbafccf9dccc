// Backend selection. On Linux the default is `qemu` (one utility VM per pod). The process backend is never a
// default: it runs containers on the host without a VM boundary, so it must be asked for explicitly
// (LCOW_SANDBOX=process or `sandbox = "process"`).
import type { Sandbox, SandboxOptions, SandboxRecord } from './sandbox.js';
import { SandboxUnavailableError } from './sandbox.js';
import { ProcessSandbox, cleanupProcessSandbox } from './process/process.js';
import { QemuSandbox, cleanupQemuSandbox } from './qemu/qemu.js';

export * from './sandbox.js';

export function createSandbox(backend: string | undefined, opts: SandboxOptions): Sandbox {
  switch (backend) {
    case 'process':
      return new ProcessSandbox(opts);
    case undefined:
    case '':
    case 'qemu':
      if (process.platform !== 'linux')
        throw new SandboxUnavailableError(`the qemu sandbox backend needs Linux (this is ${process.platform})`);
      return new QemuSandbox(opts);
    default:
      throw new SandboxUnavailableError(`unknown sandbox backend ${JSON.stringify(backend)}`);
  }
}

/** Best-effort teardown from a record (the owning shim is dead). */
export async function cleanupSandboxRecord(rec: SandboxRecord): Promise<void> {
  switch (rec.backend) {
    case 'process':
      return cleanupProcessSandbox(rec);
    case 'qemu':
      return cleanupQemuSandbox(rec);
    default:
      throw new Error(`cannot clean up sandbox backend ${rec.backend}`);
  }
}
